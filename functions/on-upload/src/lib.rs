//! `on-upload`: takes the storage event of a finished upload (`sources/{videoId}`), probes the source and
//! plans its transcoding jobs.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use common::catalog::Videos;
use common::events::{Event, EventError, EventHandler, Trigger};
use common::pipeline::{live_video, source_video_id};
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
        Trigger::Storage
    }

    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let Event::ObjectCreated(object) = event else {
            return Err(EventError::malformed("on-upload takes storage events"));
        };
        let Some(video_id) = source_video_id(&object.key) else {
            tracing::debug!(key = %object.key, "not a video source; ignored");
            return Ok(());
        };
        match live_video(&self.videos, &video_id).await? {
            None => Ok(()),
            Some(_) => Err(EventError::retryable("processing is not available in this build")),
        }
    }
}
