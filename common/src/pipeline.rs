//! Messages between the pipeline's stages: `on-upload` sends a [`TranscodeJob`] per chunk (and one for
//! audio) to the jobs queue; whichever job completes the set sends a [`FinalizeJob`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::EventError;
use crate::ids::VideoId;
use crate::ladder::Rendition;
use crate::store::{Condition, Item, Query, Store, StoreError};

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

/// Removes what workers wrote for a video deleted while they ran: its media, and any record one of them
/// made again (a content key). Called by a job that finds its video gone; a delete that listed the media
/// before a worker stored its files leaves them to this.
pub async fn remove_remains(
    media: &dyn crate::blobs::Blobs,
    videos: &crate::catalog::Videos,
    id: &VideoId,
) -> Result<(), EventError> {
    crate::blobs::delete_under(media, &media_prefix(id))
        .await
        .map_err(EventError::retryable)?;
    videos.remove_records(id).await.map_err(EventError::retryable)
}

/// The video id of a source object key (`sources/{videoId}`), if it is one.
pub fn source_video_id(key: &str) -> Option<VideoId> {
    key.strip_prefix("sources/")?.parse().ok()
}

/// Where a video's streams are kept in the media bucket: `videos/{id}/`.
pub fn media_prefix(id: &VideoId) -> String {
    format!("videos/{id}/")
}

/// The key of a video's source object.
pub fn source_key(id: &VideoId) -> String {
    format!("sources/{id}")
}

/// How a video is transcoded, decided once by `on-upload` from its probe (partition `video#{id}`, sort
/// key `plan`). Jobs are `video-{index}` for each chunk of `chunk_seconds` of the timeline, and `audio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub video_id: VideoId,
    pub duration: f64,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub has_audio: bool,
    pub segment_seconds: u32,
    pub chunk_seconds: u32,
    pub preset: String,
    pub renditions: Vec<Rendition>,
    pub jobs: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// The jobs of a timeline of `duration` seconds cut into chunks of `chunk_seconds`: one per chunk, and
/// one for the audio when there is any.
pub fn job_names(duration: f64, chunk_seconds: u32, has_audio: bool) -> Vec<String> {
    let chunks = (duration / f64::from(chunk_seconds)).ceil().max(1.0) as usize;
    let mut jobs: Vec<String> = (0..chunks).map(|i| format!("video-{i}")).collect();
    if has_audio {
        jobs.push("audio".into());
    }
    jobs
}

/// Whether a job is waiting or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub job: String,
    pub state: JobState,
}

/// Plans and job records of videos.
#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn Store>,
}

fn video_pk(id: &VideoId) -> String {
    format!("video#{id}")
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub async fn plan(&self, id: &VideoId) -> Result<Option<Plan>, StoreError> {
        match self.store.get(&video_pk(id), "plan").await? {
            Some(item) => item.record().map(Some),
            None => Ok(None),
        }
    }

    /// Records a plan and its pending jobs; `false` when the video already has a plan (a redelivered
    /// storage event), which is left as it is.
    pub async fn create(&self, plan: &Plan) -> Result<bool, StoreError> {
        let item = Item::from_record(video_pk(&plan.video_id), "plan", plan)?;
        match self.store.put(item, Some(Condition::NotExists)).await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed) => return Ok(false),
            Err(err) => return Err(err),
        }
        for job in &plan.jobs {
            let record = JobRecord {
                job: job.clone(),
                state: JobState::Pending,
            };
            let item = Item::from_record(video_pk(&plan.video_id), format!("job#{job}"), &record)?;
            match self.store.put(item, Some(Condition::NotExists)).await {
                Ok(()) | Err(StoreError::ConditionFailed) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// Records `job` as done; `true` for the delivery that did it, `false` when it was done already.
    pub async fn mark_done(&self, id: &VideoId, job: &str) -> Result<bool, StoreError> {
        let record = JobRecord {
            job: job.to_owned(),
            state: JobState::Done,
        };
        let item = Item::from_record(video_pk(id), format!("job#{job}"), &record)?;
        let pending = Condition::Equals("state".into(), serde_json::json!("pending"));
        match self.store.put(item, Some(pending)).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Counts one more job done; the count after it.
    pub async fn count_done(&self, id: &VideoId) -> Result<i64, StoreError> {
        self.store.increment(&video_pk(id), "progress", "done", 1, None).await
    }

    /// How many jobs are done.
    pub async fn done(&self, id: &VideoId) -> Result<i64, StoreError> {
        let item = self.store.get(&video_pk(id), "progress").await?;
        Ok(item
            .and_then(|item| item.attrs.get("done").and_then(serde_json::Value::as_i64))
            .unwrap_or(0))
    }

    /// Whether the finalize message of the video was sent.
    pub async fn finalize_sent(&self, id: &VideoId) -> Result<bool, StoreError> {
        Ok(self.store.get(&video_pk(id), "finalize").await?.is_some())
    }

    /// Notes that the finalize message was sent.
    pub async fn note_finalize_sent(&self, id: &VideoId) -> Result<(), StoreError> {
        let item = Item::new(video_pk(id), "finalize").with("sentAt", Utc::now().to_rfc3339());
        self.store.put(item, None).await
    }

    /// The video's job records.
    pub async fn records(&self, id: &VideoId) -> Result<Vec<JobRecord>, StoreError> {
        let mut records = Vec::new();
        let mut query = Query::prefix("job#");
        loop {
            let page = self.store.query(&video_pk(id), query.clone()).await?;
            for item in &page.items {
                records.push(item.record()?);
            }
            match page.next {
                Some(cursor) => query.cursor = Some(cursor),
                None => return Ok(records),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_is_cut_into_chunk_jobs() {
        assert_eq!(job_names(60.0, 32, true), ["video-0", "video-1", "audio"]);
        assert_eq!(job_names(64.0, 32, false), ["video-0", "video-1"]);
        assert_eq!(job_names(64.1, 32, false).len(), 3);
        assert_eq!(job_names(0.5, 32, false), ["video-0"]);
    }

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
