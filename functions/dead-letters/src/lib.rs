//! `dead-letters`: takes the messages the pipeline gave up on and fails their videos, so that none stays
//! `processing` for ever. A job or finalize message reaches its dead-letter queue after its last delivery;
//! a storage event that `on-upload` could not handle lands in the failed-events queue (Lambda), or any of
//! them in the Broker's dead-letter Channel (Knative). A handler that failed on its last delivery has
//! usually failed the video itself; these are the deliveries that never got that far: a function killed
//! for running out of time or memory, or a platform that gave up first.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use common::catalog::{VideoError, Videos};
use common::events::{Event, EventError, EventHandler, Message, Trigger, parse_s3_notification};
use common::ids::VideoId;
use common::pipeline::{FinalizeJob, TranscodeJob, source_video_id};
use common::platform::Ports;
use serde_json::Value;

/// How much of a letter that names no video goes to the log.
const LOGGED_CHARS: usize = 2048;

pub struct Handler {
    videos: Videos,
}

/// What a dead letter was, and so what its video failed at.
#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Transcode {
        job: String,
    },
    Finalize,
    /// The source's storage event: examining and planning it.
    Examine,
}

impl Stage {
    fn error(&self) -> VideoError {
        let (code, detail) = match self {
            Self::Transcode { job } => ("transcode_failed", format!("the {job} job did not finish")),
            Self::Finalize => ("finalize_failed", "the stream could not be packaged".to_owned()),
            Self::Examine => ("processing_failed", "the upload could not be examined".to_owned()),
        };
        VideoError {
            code: code.into(),
            detail,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Transcode { .. } => "transcode",
            Self::Finalize => "finalize",
            Self::Examine => "on-upload",
        }
    }
}

/// The videos a dead letter names, and the stage each failed at; empty for a letter that names none
/// (a test event, a stranger's message).
fn read(body: &str) -> Vec<(VideoId, Stage)> {
    if let Ok(job) = serde_json::from_str::<TranscodeJob>(body) {
        return vec![(job.video_id, Stage::Transcode { job: job.job })];
    }
    if let Ok(job) = serde_json::from_str::<FinalizeJob>(body) {
        return vec![(job.video_id, Stage::Finalize)];
    }
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    // A storage event: the embedded bucket's own (`{"bucket", "key"}`), or an S3 notification, as Lambda
    // keeps a failed invocation's payload or SQS relays it.
    let keys = match value.get("key").and_then(Value::as_str) {
        Some(key) => vec![key.to_owned()],
        None => match parse_s3_notification(value) {
            Ok(objects) => objects.into_iter().map(|object| object.key).collect(),
            Err(_) => Vec::new(),
        },
    };
    keys.iter()
        .filter_map(|key| source_video_id(key))
        .map(|id| (id, Stage::Examine))
        .collect()
}

impl Handler {
    pub fn new(ports: &Ports) -> Self {
        Self {
            videos: Videos::new(ports.store.clone()),
        }
    }

    async fn take(&self, message: &Message) -> Result<(), EventError> {
        let letters = read(&message.body);
        if letters.is_empty() {
            // Nothing to do for it (a failed schedule's event, a stranger's message): kept in the log,
            // never retried.
            let body: String = message.body.chars().take(LOGGED_CHARS).collect();
            tracing::warn!(message_id = %message.id, %body, "a dead letter that names no video");
            metrics::counter!("streamgate_dead_letters_total", "stage" => "unknown", "outcome" => "ignored")
                .increment(1);
            return Ok(());
        }
        for (id, stage) in letters {
            let failed = self
                .videos
                .fail_processing(&id, stage.error())
                .await
                .map_err(EventError::retryable)?;
            let outcome = if failed { "failed_video" } else { "no_change" };
            tracing::warn!(video_id = %id, stage = stage.name(), outcome, "dead letter");
            metrics::counter!("streamgate_dead_letters_total", "stage" => stage.name(), "outcome" => outcome)
                .increment(1);
        }
        Ok(())
    }
}

#[async_trait]
impl EventHandler for Handler {
    fn trigger(&self) -> Trigger {
        Trigger::Queue
    }

    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let Event::Message(message) = event else {
            return Err(EventError::malformed("dead-letters takes queue messages"));
        };
        self.take(&message).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::adapters::local::{LocalDb, LocalStore};
    use common::catalog::{Video, VideoStatus};
    use common::store::Store;

    use super::*;

    fn message(body: &str) -> Event {
        Event::Message(Message {
            id: "m-1".into(),
            body: body.to_owned(),
            receive_count: 1,
        })
    }

    fn s3_event(key: &str) -> String {
        serde_json::json!({"Records": [{
            "eventName": "ObjectCreated:CompleteMultipartUpload",
            "s3": {"bucket": {"name": "sources"}, "object": {"key": key, "size": 10}}
        }]})
        .to_string()
    }

    async fn video_in(videos: &Videos, status: VideoStatus) -> VideoId {
        let mut video = Video::new(VideoId::generate(), "0x0000000000000000000000000000000000000001");
        video.status = status;
        videos.create(&video).await.expect("create");
        video.id
    }

    #[tokio::test]
    async fn dead_letters_fail_processing_videos_and_leave_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(LocalDb::open(&dir.path().join("db")).expect("db")));
        let videos = Videos::new(store.clone());
        let handler = Handler {
            videos: Videos::new(store),
        };
        let (chunked, packaged, examined) = (
            video_in(&videos, VideoStatus::Processing).await,
            video_in(&videos, VideoStatus::Processing).await,
            video_in(&videos, VideoStatus::Processing).await,
        );
        let ready = video_in(&videos, VideoStatus::Ready).await;

        let job = format!(r#"{{"videoId":"{chunked}","job":"video-3"}}"#);
        handler.handle(message(&job)).await.expect("job");
        let finalize = format!(r#"{{"videoId":"{packaged}"}}"#);
        handler.handle(message(&finalize)).await.expect("finalize");
        handler
            .handle(message(&s3_event(&format!("sources/{examined}"))))
            .await
            .expect("storage");
        handler
            .handle(message(&format!(r#"{{"videoId":"{ready}"}}"#)))
            .await
            .expect("ready");
        // A video deleted meanwhile, a letter naming nothing of ours, and noise: taken, nothing changes.
        handler
            .handle(message(&format!(r#"{{"videoId":"{}"}}"#, VideoId::generate())))
            .await
            .expect("gone");
        handler
            .handle(message(&s3_event("uploads/x/part-1")))
            .await
            .expect("not a source");
        handler.handle(message("not json")).await.expect("noise");

        let error = |id: VideoId| {
            let videos = &videos;
            async move {
                let video = videos.get(&id).await.expect("get").expect("video");
                (video.status, video.error.map(|e| (e.code, e.detail)))
            }
        };
        let failed = |code: &str, detail: &str| (VideoStatus::Failed, Some((code.to_owned(), detail.to_owned())));
        assert_eq!(
            error(chunked).await,
            failed("transcode_failed", "the video-3 job did not finish")
        );
        assert_eq!(
            error(packaged).await,
            failed("finalize_failed", "the stream could not be packaged")
        );
        assert_eq!(
            error(examined).await,
            failed("processing_failed", "the upload could not be examined")
        );
        assert_eq!(error(ready).await, (VideoStatus::Ready, None));
    }

    #[test]
    fn letters_are_read_by_their_shape() {
        let id = VideoId::generate();
        assert_eq!(
            read(&format!(r#"{{"videoId":"{id}","job":"audio"}}"#)),
            [(id.clone(), Stage::Transcode { job: "audio".into() })]
        );
        assert_eq!(
            read(&format!(r#"{{"videoId":"{id}"}}"#)),
            [(id.clone(), Stage::Finalize)]
        );
        assert_eq!(
            read(&s3_event(&format!("sources/{id}"))),
            [(id.clone(), Stage::Examine)]
        );
        let embedded = format!(r#"{{"bucket":"sources","key":"sources/{id}","size":3}}"#);
        assert_eq!(read(&embedded), [(id, Stage::Examine)]);
        assert!(read(r#"{"videoId":"not-an-id"}"#).is_empty());
        assert!(read(r#"{"Event":"s3:TestEvent"}"#).is_empty());
        assert!(read("").is_empty());
    }
}
