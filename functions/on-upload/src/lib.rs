//! `on-upload`: takes the storage event of a finished upload (`sources/{videoId}`), probes the source and
//! plans its transcoding jobs. On a schedule, it ends uploads that were abandoned before they finished.
#![forbid(unsafe_code)]

use std::sync::Arc;

use async_trait::async_trait;
use common::blobs::Blobs;
use common::catalog::Videos;
use common::events::{Event, EventError, EventHandler, Trigger};
use common::pipeline::{live_video, source_video_id};
use common::platform::Ports;
use common::uploads::Uploads;

pub struct Handler {
    videos: Videos,
    uploads: Uploads,
    sources: Arc<dyn Blobs>,
}

impl Handler {
    pub fn new(ports: &Ports) -> Self {
        Self {
            videos: Videos::new(ports.store.clone()),
            uploads: Uploads::new(ports.store.clone()),
            sources: ports.sources.clone(),
        }
    }

    /// Ends the uploads that expired unfinished.
    async fn sweep(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), EventError> {
        let swept = self
            .uploads
            .sweep_expired(now, self.sources.as_ref(), &self.videos)
            .await
            .map_err(EventError::retryable)?;
        if swept > 0 {
            metrics::counter!("streamgate_uploads_expired_total").increment(swept as u64);
        }
        Ok(())
    }
}

#[async_trait]
impl EventHandler for Handler {
    fn trigger(&self) -> Trigger {
        Trigger::Storage
    }

    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let object = match event {
            Event::ObjectCreated(object) => object,
            Event::Schedule { time } => return self.sweep(time).await,
            Event::Message(_) => return Err(EventError::malformed("on-upload takes storage events and schedules")),
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
