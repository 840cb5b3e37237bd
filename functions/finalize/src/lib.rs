//! `finalize`: Writes the HLS and DASH manifests of a video whose jobs are all done (finalize queue).
#![forbid(unsafe_code)]

use async_trait::async_trait;
use common::catalog::Videos;
use common::events::{Event, EventError, EventHandler, Trigger};
use common::pipeline::{FinalizeJob, decode, live_video};
use common::platform::Ports;

pub struct Handler {
    videos: Videos,
}

impl Handler {
    pub fn new(ports: &Ports) -> Self {
        Self {
            videos: Videos::new(ports.store.clone()),
        }
    }
}

#[async_trait]
impl EventHandler for Handler {
    fn trigger(&self) -> Trigger {
        Trigger::Queue
    }

    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let Event::Message(message) = event else {
            return Err(EventError::malformed("finalize takes queue messages"));
        };
        let job: FinalizeJob = decode(&message.body)?;
        match live_video(&self.videos, &job.video_id).await? {
            None => Ok(()),
            Some(_) => Err(EventError::retryable("packaging is not available in this build")),
        }
    }
}
