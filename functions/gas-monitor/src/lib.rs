//! `gas-monitor`: Samples fee history on every configured chain. Runs on a schedule.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use common::events::{Event, EventError, EventHandler, Trigger};
use common::platform::Ports;

pub struct Handler;

impl Handler {
    pub fn new(_ports: &Ports) -> Self {
        Self
    }
}

#[async_trait]
impl EventHandler for Handler {
    fn trigger(&self) -> Trigger {
        Trigger::Schedule
    }

    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let Event::Schedule { time } = event else {
            return Err(EventError::malformed("gas-monitor takes schedule ticks"));
        };
        tracing::debug!(%time, "tick: no chains to follow yet");
        Ok(())
    }
}
