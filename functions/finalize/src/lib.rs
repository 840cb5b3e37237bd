//! `finalize` (finalize queue): once every job of a video is done, stitches each rendition's chunk
//! playlists into one media playlist, writes the HLS master (bandwidths measured from the segments,
//! codecs read from the init segments, frame rate, audio group) and a DASH MPD over the same segments,
//! takes a poster and thumbnails, and marks the video `ready` with progress 100. Idempotent: a second run
//! writes the same manifests.
#![forbid(unsafe_code)]

pub mod encryption;
pub mod manifests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::blobs::Blobs;
use common::catalog::{Rendition, VideoStatus, Videos};
use common::events::{Event, EventError, EventHandler, Trigger};
use common::ids::VideoId;
use common::pipeline::{FinalizeJob, Jobs, Plan, decode, live_video, media_prefix, remove_remains, source_key};
use common::platform::Ports;
use futures::{StreamExt, TryStreamExt};

use manifests::{Audio, Segment, Variant};

/// Thumbnails are taken at most this often, and at most this many per video.
const THUMBNAIL_SECONDS: f64 = 10.0;
const MAX_THUMBNAILS: f64 = 100.0;

pub struct Handler {
    videos: Videos,
    jobs: Jobs,
    sources: Arc<dyn Blobs>,
    media: Arc<dyn Blobs>,
    max_attempts: u32,
    /// Base of the key URIs written into encrypted playlists; without it they are absolute paths,
    /// resolved against wherever the playlist is served from.
    public_url: Option<url::Url>,
}

impl Handler {
    pub fn new(config: &common::config::Config, ports: &Ports) -> Self {
        Self {
            videos: Videos::new(ports.store.clone()),
            jobs: Jobs::new(ports.store.clone()),
            sources: ports.sources.clone(),
            media: ports.media.clone(),
            max_attempts: config.max_attempts,
            public_url: config.public_url.clone(),
        }
    }

    /// The last delivery failed too: the message goes to the dead-letter queue and the video fails.
    async fn fail(&self, id: &VideoId, why: &EventError) -> Result<(), EventError> {
        // The cause (ffmpeg's words, local paths) goes to the log, not to what the owner reads.
        tracing::warn!(video_id = %id, error = %why, "finalize failed for good");
        let error = common::catalog::VideoError {
            code: "finalize_failed".into(),
            detail: "the stream could not be packaged".to_owned(),
        };
        self.videos
            .fail_processing(id, error)
            .await
            .map_err(EventError::retryable)?;
        Ok(())
    }

    /// The segments of one folder (`360p`, `audio`) in order, from its chunk playlists, and the sizes of
    /// the objects in it.
    async fn segments(
        &self,
        id: &VideoId,
        folder: &str,
        chunks: usize,
    ) -> Result<(Vec<Segment>, HashMap<String, u64>), EventError> {
        let prefix = format!("{}{folder}/", media_prefix(id));
        let mut segments = Vec::new();
        for index in 0..chunks {
            let text = self
                .media
                .get(&format!("{prefix}chunk-{index:05}.m3u8"))
                .await
                .map_err(EventError::retryable)?;
            let text = String::from_utf8_lossy(&text);
            let listed = manifests::read_playlist(&text).map_err(EventError::malformed)?;
            // A chunk past the picture's last frame lists an empty segment, which plays nothing.
            segments.extend(listed.into_iter().filter(|segment| segment.duration > 0.0));
        }
        let sizes = self
            .media
            .list(&prefix)
            .await
            .map_err(EventError::retryable)?
            .into_iter()
            .map(|o| (o.key.trim_start_matches(&prefix).to_owned(), o.size))
            .collect();
        Ok((segments, sizes))
    }

    async fn put_text(&self, key: String, text: String, content_type: &str) -> Result<(), EventError> {
        self.media
            .put(&key, Bytes::from(text), Some(content_type))
            .await
            .map_err(EventError::retryable)?;
        Ok(())
    }

    /// Writes one folder's media playlist; its peak and average bits per second.
    async fn stitch(&self, id: &VideoId, folder: &str, chunks: usize) -> Result<(Vec<Segment>, u64, u64), EventError> {
        let (segments, sizes) = self.segments(id, folder, chunks).await?;
        if segments.is_empty() {
            return Err(EventError::malformed(format!("{folder} has no segments")));
        }
        let mut peak = 0f64;
        let (mut bits, mut seconds) = (0f64, 0f64);
        for segment in &segments {
            let size = *sizes
                .get(&segment.uri)
                .ok_or_else(|| EventError::retryable(format!("{folder}/{} is missing", segment.uri)))?
                as f64;
            if segment.duration > 0.0 {
                peak = peak.max(size * 8.0 / segment.duration);
            }
            bits += size * 8.0;
            seconds += segment.duration;
        }
        let playlist = manifests::media_playlist(&segments, None);
        self.put_text(
            format!("{}{folder}/index.m3u8", media_prefix(id)),
            playlist,
            "application/vnd.apple.mpegurl",
        )
        .await?;
        Ok((segments, peak.ceil() as u64, (bits / seconds.max(0.001)).ceil() as u64))
    }

    /// A poster (at a tenth of the way in) and thumbnails every ten seconds or so.
    async fn pictures(&self, plan: &Plan) -> Result<(), EventError> {
        let source = self
            .sources
            .signed_get_url(&source_key(&plan.video_id), Duration::from_secs(3600))
            .await
            .map_err(EventError::retryable)?
            .url;
        let dir = tempfile::tempdir().map_err(EventError::retryable)?;
        let poster = dir.path().join("poster.jpg");
        let at = format!("{:.3}", (plan.duration * 0.1).min(10.0));
        let scale = "scale=-2:'min(720,ih)'";
        ffmpeg_into(
            &["-ss", &at, "-i", &source, "-frames:v", "1", "-vf", scale, "-q:v", "3"],
            &poster,
        )
        .await?;
        let every = (plan.duration / MAX_THUMBNAILS).max(THUMBNAIL_SECONDS);
        let thumbs = dir.path().join("thumb-%03d.jpg");
        let filter = format!("fps=1/{every:.3},scale=320:-2");
        // Only key frames are decoded (each thumbnail is the key frame nearest its time), and no further
        // than the plan's duration: hours of 4K would otherwise be decoded whole, past a job's time.
        let duration = format!("{:.3}", plan.duration);
        ffmpeg_into(
            &[
                "-skip_frame",
                "nokey",
                "-i",
                &source,
                "-t",
                &duration,
                "-vf",
                &filter,
                "-q:v",
                "5",
            ],
            &thumbs,
        )
        .await?;
        let prefix = media_prefix(&plan.video_id);
        for entry in std::fs::read_dir(dir.path()).map_err(EventError::retryable)? {
            let path = entry.map_err(EventError::retryable)?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let key = if name == "poster.jpg" {
                format!("{prefix}poster.jpg")
            } else {
                format!("{prefix}thumbnails/{name}")
            };
            self.media
                .put_file(&key, &path, Some("image/jpeg"))
                .await
                .map_err(EventError::retryable)?;
        }
        Ok(())
    }

    /// The encrypted copy of the HLS stream under `aes/`: same playlists, segments encrypted, key URI
    /// `/v1/keys/{id}`.
    async fn encrypt(&self, id: &VideoId, folders: &[(&str, &[Segment])], master: &str) -> Result<(), EventError> {
        let key = self.videos.content_key(id).await.map_err(EventError::retryable)?;
        let key_uri = match &self.public_url {
            Some(base) => format!("{}/v1/keys/{id}", base.as_str().trim_end_matches('/')),
            None => format!("/v1/keys/{id}"),
        };
        let prefix = media_prefix(id);
        let sealed = format!("{prefix}{}/", encryption::FOLDER);
        for &(folder, segments) in folders {
            let init = self
                .media
                .get(&format!("{prefix}{folder}/init.mp4"))
                .await
                .map_err(EventError::retryable)?;
            self.media
                .put(&format!("{sealed}{folder}/init.mp4"), init, Some("video/mp4"))
                .await
                .map_err(EventError::retryable)?;
            let work: Vec<(u64, String, String)> = segments
                .iter()
                .enumerate()
                .map(|(sequence, segment)| {
                    let clear = format!("{prefix}{folder}/{}", segment.uri);
                    (sequence as u64, clear, format!("{sealed}{folder}/{}", segment.uri))
                })
                .collect();
            futures::stream::iter(work)
                .map(|(sequence, clear, target)| async move {
                    let bytes = self.media.get(&clear).await.map_err(EventError::retryable)?;
                    let encrypted = encryption::encrypt_segment(&key, sequence, &bytes);
                    self.media
                        .put(&target, Bytes::from(encrypted), Some("video/iso.segment"))
                        .await
                        .map(drop)
                        .map_err(EventError::retryable)
                })
                .buffer_unordered(4)
                .try_collect::<()>()
                .await?;
            let playlist = manifests::media_playlist(segments, Some(&key_uri));
            self.put_text(
                format!("{sealed}{folder}/index.m3u8"),
                playlist,
                "application/vnd.apple.mpegurl",
            )
            .await?;
        }
        self.put_text(
            format!("{sealed}master.m3u8"),
            master.to_owned(),
            "application/vnd.apple.mpegurl",
        )
        .await
    }

    async fn finalize(&self, plan: &Plan, gated: bool) -> Result<(), EventError> {
        let id = &plan.video_id;
        let prefix = media_prefix(id);
        let chunks = plan.jobs.iter().filter(|j| j.starts_with("video-")).count();
        let mut variants = Vec::new();
        for rendition in &plan.renditions {
            let (segments, peak, average) = self.stitch(id, &rendition.name, chunks).await?;
            let init = self
                .media
                .get(&format!("{prefix}{}/init.mp4", rendition.name))
                .await
                .map_err(EventError::retryable)?;
            let codecs = manifests::avc_codecs(&init)
                .ok_or_else(|| EventError::malformed(format!("{}/init.mp4 has no avcC box", rendition.name)))?;
            variants.push(Variant {
                name: rendition.name.clone(),
                width: rendition.width,
                height: rendition.height,
                peak,
                average,
                codecs,
                segments,
            });
        }
        let audio = if plan.has_audio {
            let (segments, peak, average) = self.stitch(id, "audio", 1).await?;
            Some(Audio {
                peak,
                average,
                segments,
            })
        } else {
            None
        };
        let master = manifests::master_playlist(&variants, audio.as_ref(), plan.frame_rate);
        let mpd = manifests::mpd(&variants, audio.as_ref(), plan.duration, plan.frame_rate);
        self.put_text(
            format!("{prefix}master.m3u8"),
            master.clone(),
            "application/vnd.apple.mpegurl",
        )
        .await?;
        self.put_text(format!("{prefix}manifest.mpd"), mpd, "application/dash+xml")
            .await?;
        let folders: Vec<(&str, &[Segment])> = variants
            .iter()
            .map(|v| (v.name.as_str(), &v.segments[..]))
            .chain(audio.as_ref().map(|a| ("audio", &a.segments[..])))
            .collect();
        if gated {
            self.encrypt(id, &folders, &master).await?;
        }
        self.pictures(plan).await?;
        let renditions: Vec<Rendition> = variants
            .iter()
            .map(|v| Rendition {
                name: v.name.clone(),
                width: v.width,
                height: v.height,
                bitrate: v.average,
                codecs: match &audio {
                    Some(_) => format!("{},mp4a.40.2", v.codecs),
                    None => v.codecs.clone(),
                },
            })
            .collect();
        let updated = self
            .videos
            .update(id, |video| {
                if video.status == VideoStatus::Failed {
                    return false;
                }
                video.status = VideoStatus::Ready;
                video.progress = 100;
                video.error = None;
                video.renditions = renditions.clone();
                video.encrypted_hls = gated;
                true
            })
            .await
            .map_err(EventError::retryable)?;
        let Some(video) = updated else {
            // Deleted while this ran: what it wrote would outlive the video.
            remove_remains(self.media.as_ref(), &self.videos, id).await?;
            tracing::info!(video_id = %id, "the video was deleted while it was finalized; its media are removed");
            return Ok(());
        };
        if video.status == VideoStatus::Ready && !video.is_public() && !video.encrypted_hls {
            // Gated by an edit while this ran, which asked for no encrypted copy as the video was not
            // ready yet: it is made now.
            self.encrypt(id, &folders, &master).await?;
            self.videos
                .update(id, |video| {
                    video.encrypted_hls = true;
                    true
                })
                .await
                .map_err(EventError::retryable)?;
            tracing::info!(video_id = %id, "the video was gated while it was finalized; its encrypted copy is made");
        }
        tracing::info!(video_id = %id, renditions = variants.len(), "video ready");
        metrics::counter!("streamgate_videos_ready_total").increment(1);
        Ok(())
    }
}

/// Runs ffmpeg with `args`, writing to `output`.
async fn ffmpeg_into(args: &[&str], output: &std::path::Path) -> Result<(), EventError> {
    let args = args
        .iter()
        .map(|a| (*a).to_owned())
        .chain([output.display().to_string()]);
    common::media::run_ffmpeg(args.collect())
        .await
        .map_err(EventError::retryable)
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
        let Some(video) = live_video(&self.videos, &job.video_id).await? else {
            // Deleted: a run cut short by the delete may have left media, and a content key made again.
            return remove_remains(self.media.as_ref(), &self.videos, &job.video_id).await;
        };
        if video.status == VideoStatus::Failed {
            tracing::info!(video_id = %job.video_id, "the video failed; not finalizing");
            return Ok(());
        }
        let Some(plan) = self.jobs.plan(&job.video_id).await.map_err(EventError::retryable)? else {
            return Err(EventError::malformed(format!("video {} has no plan", job.video_id)));
        };
        let gated = !video.is_public();
        let result = self.finalize(&plan, gated).await;
        if let Err(err) = &result
            && (matches!(err, EventError::Malformed(_)) || message.receive_count >= self.max_attempts)
        {
            self.fail(&job.video_id, err).await?;
        }
        result
    }
}
