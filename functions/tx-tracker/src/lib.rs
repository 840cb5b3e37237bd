//! `tx-tracker`: on each run of its schedule, looks again at every registered deployment still pending,
//! until it is confirmed or failed at its chain's confirmation depth, or dropped.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use common::chains::rpc::RpcChains;
use common::chains::tracking::Tracker;
use common::config::Config;
use common::events::{Event, EventError, EventHandler, Trigger};
use common::platform::Ports;

pub struct Handler {
    tracker: Tracker,
}

impl Handler {
    pub fn new(config: &Config, ports: &Ports) -> Self {
        let rpc = RpcChains::new(&config.chains, config.rpc_timeout);
        Self {
            tracker: Tracker::new(ports.store.clone(), rpc, config.chains.clone()),
        }
    }
}

#[async_trait]
impl EventHandler for Handler {
    fn trigger(&self) -> Trigger {
        Trigger::Schedule
    }

    /// A transaction that could not be looked at this time is looked at on the next run; only a store
    /// that cannot list them fails the run.
    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let Event::Schedule { .. } = event else {
            return Err(EventError::malformed("tx-tracker takes schedule ticks"));
        };
        let run = self
            .tracker
            .run()
            .await
            .map_err(|e| EventError::retryable(format!("listing pending transactions failed: {e}")))?;
        metrics::counter!("streamgate_tracked_transactions_checked_total").increment(run.checked as u64);
        metrics::counter!("streamgate_tracked_transactions_finished_total").increment(run.finished as u64);
        if run.failed > 0 {
            metrics::counter!("streamgate_tracked_transactions_failed_checks_total").increment(run.failed as u64);
        }
        tracing::debug!(
            checked = run.checked,
            finished = run.finished,
            failed = run.failed,
            "tracked transactions"
        );
        Ok(())
    }
}
