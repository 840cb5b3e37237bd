//! `gas-monitor`: reads the fees of every chain with an RPC URL on each run of its schedule and keeps
//! them for `GET /v1/gas/{chainId}`, and as gauges for dashboards.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use common::chains::gas::GasPrices;
use common::chains::rpc::RpcChains;
use common::config::Config;
use common::events::{Event, EventError, EventHandler, Trigger};
use common::platform::Ports;
use futures::future::join_all;

pub struct Handler {
    gas: GasPrices,
    chains: Vec<u64>,
}

impl Handler {
    pub fn new(config: &Config, ports: &Ports) -> Self {
        let chains = config
            .chains
            .iter()
            .filter(|chain| !chain.rpc_urls.is_empty())
            .map(|chain| chain.chain_id)
            .collect();
        let rpc = RpcChains::new(&config.chains, config.rpc_timeout);
        Self {
            gas: GasPrices::new(ports.store.clone(), rpc),
            chains,
        }
    }
}

/// Wei as a gauge's gwei (a float: dashboards show it, nothing computes with it).
fn gauge_gwei(wei: u128) -> f64 {
    wei as f64 / 1e9
}

#[async_trait]
impl EventHandler for Handler {
    fn trigger(&self) -> Trigger {
        Trigger::Schedule
    }

    /// Reads every chain at once. One chain that does not answer does not hold up the others; the run
    /// fails (to be retried) only when none answered.
    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let Event::Schedule { .. } = event else {
            return Err(EventError::malformed("gas-monitor takes schedule ticks"));
        };
        let readings = join_all(self.chains.iter().map(|chain| self.gas.sample(*chain))).await;
        let mut failures = 0;
        for (chain, reading) in self.chains.iter().zip(readings) {
            let chain = chain.to_string();
            match reading {
                Ok(reading) => {
                    metrics::gauge!("streamgate_gas_base_fee_gwei", "chain" => chain.clone())
                        .set(gauge_gwei(reading.base_fee));
                    metrics::gauge!("streamgate_gas_priority_fee_gwei", "chain" => chain, "tier" => "standard")
                        .set(gauge_gwei(reading.priority_fee.standard));
                }
                Err(err) => {
                    failures += 1;
                    metrics::counter!("streamgate_gas_readings_failed_total", "chain" => chain.clone()).increment(1);
                    tracing::warn!(chain, error = %err, "reading gas prices failed");
                }
            }
        }
        if failures > 0 && failures == self.chains.len() {
            return Err(EventError::retryable(format!("no chain of {failures} answered")));
        }
        Ok(())
    }
}
