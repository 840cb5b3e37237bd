//! Messages between the pipeline's stages: `on-upload` sends a [`TranscodeJob`] per chunk (and one for
//! audio) to the jobs queue; whichever job completes the set sends a [`FinalizeJob`].

use serde::{Deserialize, Serialize};

use crate::events::EventError;
use crate::ids::VideoId;

/// One unit of transcoding work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TranscodeJob {
    pub video_id: VideoId,
    /// The job's key among its video's jobs (`audio`, or `video-{index}`).
    pub job: String,
}

/// Packaging of a video whose jobs are all done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinalizeJob {
    pub video_id: VideoId,
}

/// Reads a message body as `T`; a body that is not a `T` is malformed and never retried.
pub fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, EventError> {
    let name = std::any::type_name::<T>().rsplit("::").next().unwrap_or("message");
    serde_json::from_str(body).map_err(|e| EventError::malformed(format!("not a valid {name}: {e}")))
}

/// The video a job is for, or `None` (logged) when it was deleted since: a job for a video that no longer
/// exists is dropped, not retried.
pub async fn live_video(
    videos: &crate::catalog::Videos,
    id: &VideoId,
) -> Result<Option<crate::catalog::Video>, EventError> {
    let video = videos.get(id).await.map_err(EventError::retryable)?;
    if video.is_none() {
        tracing::info!(video_id = %id, "the video no longer exists; dropping its job");
    }
    Ok(video)
}

/// The video id of a source object key (`sources/{videoId}`), if it is one.
pub fn source_video_id(key: &str) -> Option<VideoId> {
    key.strip_prefix("sources/")?.parse().ok()
}

/// The key of a video's source object.
pub fn source_key(id: &VideoId) -> String {
    format!("sources/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_refuse_strangers() {
        let job = TranscodeJob {
            video_id: VideoId::generate(),
            job: "video-0".into(),
        };
        let body = serde_json::to_string(&job).expect("serialize");
        assert_eq!(decode::<TranscodeJob>(&body), Ok(job));
        for bad in ["", "{", "[]", r#"{"videoId":"x","job":"audio"}"#, r#"{"job":"audio"}"#] {
            assert!(
                matches!(decode::<TranscodeJob>(bad), Err(EventError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
