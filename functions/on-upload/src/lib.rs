//! `on-upload`: takes the storage event of a finished upload (`sources/{videoId}`), probes the source
//! through a signed URL (ffprobe reads only what it needs), reads its digest when the upload could not,
//! refuses what cannot become a good stream with a stable code on the video, chooses the ladder and plans
//! the transcoding jobs, one queue message per chunk and one for the audio. On a schedule, it ends uploads
//! that were abandoned before they finished.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use common::blobs::Blobs;
use common::catalog::{Source, Video, VideoError, VideoStatus, Videos};
use common::config::{Config, SEGMENT_SECONDS, Transcoding};
use common::events::{Event, EventError, EventHandler, ObjectCreated, Trigger};
use common::ids::VideoId;
use common::media::{Accepted, MediaLimits, ProbeError, Refusal};
use common::pipeline::{Jobs, Plan, TranscodeJob, job_names, live_video, source_key, source_video_id};
use common::platform::Ports;
use common::queue::Queue;
use common::uploads::Uploads;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// How long ffprobe and the end-of-file check may take, and how long their signed URL lives.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Handler {
    videos: Videos,
    uploads: Uploads,
    jobs: Jobs,
    sources: Arc<dyn Blobs>,
    queue: Arc<dyn Queue>,
    limits: MediaLimits,
    transcoding: Transcoding,
}

impl Handler {
    pub fn new(config: &Config, ports: &Ports) -> Self {
        Self {
            videos: Videos::new(ports.store.clone()),
            uploads: Uploads::new(ports.store.clone()),
            jobs: Jobs::new(ports.store.clone()),
            sources: ports.sources.clone(),
            queue: ports.jobs.clone(),
            limits: config.media,
            transcoding: config.transcoding.clone(),
        }
    }

    /// Ends the uploads that expired unfinished.
    async fn sweep(&self, now: chrono::DateTime<Utc>) -> Result<(), EventError> {
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

    /// Marks the video failed with the refusal's code, unless it got further meanwhile.
    async fn refuse(&self, id: &VideoId, refusal: Refusal) -> Result<(), EventError> {
        tracing::info!(video_id = %id, code = refusal.code, detail = %refusal.detail, "source refused");
        metrics::counter!("streamgate_sources_refused_total", "code" => refusal.code).increment(1);
        self.videos
            .update(id, |video| {
                if !matches!(video.status, VideoStatus::Uploading | VideoStatus::Processing) {
                    return false;
                }
                video.status = VideoStatus::Failed;
                video.progress = 0;
                video.error = Some(VideoError {
                    code: refusal.code.to_owned(),
                    detail: refusal.detail.clone(),
                });
                true
            })
            .await
            .map_err(EventError::retryable)?;
        Ok(())
    }

    /// Records a plan's picture and duration on its video, and moves a video still `uploading` to
    /// `processing`. A video further on (processing under way, ready, failed) keeps its status.
    async fn record(&self, plan: &Plan) -> Result<(), EventError> {
        self.videos
            .update(&plan.video_id, |video| {
                let known = video.duration_seconds == Some(plan.duration)
                    && video.width == Some(plan.width)
                    && video.height == Some(plan.height);
                if known && video.status != VideoStatus::Uploading {
                    return false;
                }
                if video.status == VideoStatus::Uploading {
                    video.status = VideoStatus::Processing;
                    video.progress = 0;
                }
                video.duration_seconds = Some(plan.duration);
                video.width = Some(plan.width);
                video.height = Some(plan.height);
                true
            })
            .await
            .map_err(EventError::retryable)?;
        Ok(())
    }

    /// Sends the jobs not done yet: all of a new plan, or what a redelivered event finds pending.
    async fn send_jobs(&self, plan: &Plan) -> Result<(), EventError> {
        let records = self.jobs.records(&plan.video_id).await.map_err(EventError::retryable)?;
        for job in &plan.jobs {
            let done = records
                .iter()
                .any(|r| &r.job == job && r.state == common::pipeline::JobState::Done);
            if done {
                continue;
            }
            let message = TranscodeJob {
                video_id: plan.video_id.clone(),
                job: job.clone(),
            };
            let body = serde_json::to_string(&message).map_err(EventError::retryable)?;
            self.queue.send(body).await.map_err(EventError::retryable)?;
        }
        Ok(())
    }

    /// Whether the source can become a good stream: what ffprobe finds, judged by the media limits, and
    /// its end decoded. `Err` when the tools could not say.
    async fn examine(&self, url: &str) -> Result<Result<Accepted, Refusal>, EventError> {
        let probe = match common::media::probe(url, PROBE_TIMEOUT).await {
            Ok(probe) => probe,
            Err(ProbeError::Refused(refusal)) => return Ok(Err(refusal)),
            Err(ProbeError::Tool(why)) => return Err(EventError::retryable(why)),
        };
        let accepted = match common::media::judge(&probe, &self.limits) {
            Ok(accepted) => accepted,
            Err(refusal) => return Ok(Err(refusal)),
        };
        match common::media::decodes_to_the_end(url, accepted.duration, PROBE_TIMEOUT).await {
            Ok(true) => Ok(Ok(accepted)),
            Ok(false) => {
                let why = "the file ends before its stated length (was the upload cut short?)";
                Ok(Err(refusal("corrupt_media", why)))
            }
            Err(err) => Err(EventError::retryable(err)),
        }
    }

    /// Reads the source of video `id` once for its SHA-256 and records it on the video, unless a digest
    /// is there by then. For sources whose bytes did not all pass through api-upload's running digest: a
    /// direct upload, or a tus upload whose digest was lost between servers; a request could not read a
    /// large file back within its time limit. A source that is gone has nothing to digest.
    async fn digest(&self, id: &VideoId) -> Result<(), EventError> {
        let key = source_key(id);
        let Some(meta) = self.sources.head(&key).await.map_err(EventError::retryable)? else {
            return Ok(());
        };
        let mut chunks = self.sources.get_stream(&key).await.map_err(EventError::retryable)?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next().await {
            hasher.update(&chunk.map_err(EventError::retryable)?);
        }
        let sha256 = hex::encode(hasher.finalize());
        let mut recorded = false;
        self.videos
            .update(id, |video| {
                recorded = match &mut video.source {
                    Some(source) if source.sha256.is_some() => false,
                    Some(source) => {
                        source.sha256 = Some(sha256.clone());
                        true
                    }
                    // The object landed before its upload recorded it (the completion's answer was lost):
                    // the upload fills in the rest when it learns of it, and keeps the digest.
                    None => {
                        video.source = Some(Source {
                            filename: None,
                            content_type: None,
                            size: meta.size,
                            sha256: Some(sha256.clone()),
                        });
                        true
                    }
                };
                recorded
            })
            .await
            .map_err(EventError::retryable)?;
        if recorded {
            tracing::info!(video_id = %id, "source digest read");
        }
        Ok(())
    }

    async fn plan(&self, object: &ObjectCreated, video: Video) -> Result<(), EventError> {
        let id = video.id.clone();
        if let Some(plan) = self.jobs.plan(&id).await.map_err(EventError::retryable)? {
            tracing::info!(video_id = %id, "already planned; sending the jobs not done");
            // A delivery that stopped between planning and recording the plan on the video.
            self.record(&plan).await?;
            return self.send_jobs(&plan).await;
        }
        if matches!(video.status, VideoStatus::Ready | VideoStatus::Failed) {
            tracing::info!(video_id = %id, status = ?video.status, "the video is settled; nothing to plan");
            return Ok(());
        }
        let key = source_key(&id);
        let Some(meta) = self.sources.head(&key).await.map_err(EventError::retryable)? else {
            tracing::info!(video_id = %id, key = %object.key, "the source is gone; nothing to plan");
            return Ok(());
        };
        if meta.size == 0 {
            return self.refuse(&id, refusal("corrupt_media", "the file is empty")).await;
        }
        if let Some(declared) = video.source.as_ref().map(|source| source.size)
            && declared != meta.size
        {
            // Parts of another size than the upload's (a direct upload's part URLs take any body).
            let why = format!(
                "the stored file is {} bytes, but its upload was for {declared}",
                meta.size
            );
            return self.refuse(&id, refusal("size_mismatch", &why)).await;
        }
        let url = self
            .sources
            .signed_get_url(&key, PROBE_TIMEOUT * 2)
            .await
            .map_err(EventError::retryable)?
            .url;
        let accepted = match self.examine(&url).await? {
            Ok(accepted) => accepted,
            Err(refusal) => return self.refuse(&id, refusal).await,
        };

        let renditions = common::ladder::renditions(
            &self.transcoding.ladder,
            accepted.width,
            accepted.height,
            accepted.frame_rate,
        );
        let plan = Plan {
            video_id: id.clone(),
            duration: accepted.duration,
            width: accepted.width,
            height: accepted.height,
            frame_rate: accepted.frame_rate,
            has_audio: accepted.has_audio,
            segment_seconds: SEGMENT_SECONDS,
            chunk_seconds: self.transcoding.chunk_seconds,
            preset: self.transcoding.preset.clone(),
            jobs: job_names(accepted.duration, self.transcoding.chunk_seconds, accepted.has_audio),
            renditions,
            created_at: Utc::now(),
        };
        if !self.jobs.create(&plan).await.map_err(EventError::retryable)? {
            // Another delivery of the event planned it meanwhile (its probe was faster): its plan stands,
            // and the video may be further on already.
            tracing::info!(video_id = %id, "planned meanwhile by another delivery");
            return Ok(());
        }
        self.record(&plan).await?;
        tracing::info!(
            video_id = %id,
            duration = accepted.duration,
            width = accepted.width,
            height = accepted.height,
            renditions = plan.renditions.len(),
            jobs = plan.jobs.len(),
            "source accepted and planned"
        );
        self.send_jobs(&plan).await
    }
}

fn refusal(code: &'static str, detail: &str) -> Refusal {
    Refusal {
        code,
        detail: detail.to_owned(),
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
        let Some(video) = live_video(&self.videos, &video_id).await? else {
            return Ok(());
        };
        // The digest is read beside the probe and the plan, whatever they conclude; a delivery that
        // fails to read it is retried, and the retry plans nothing twice.
        let unknown_digest = video.source.as_ref().is_none_or(|source| source.sha256.is_none());
        let digest = async {
            match unknown_digest {
                true => self.digest(&video_id).await,
                false => Ok(()),
            }
        };
        let (planned, digested) = tokio::join!(self.plan(&object, video), digest);
        planned.and(digested)
    }
}
