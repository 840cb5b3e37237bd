//! `transcode`: encodes one job of a video's plan (jobs queue). A chunk job `video-{i}` encodes seconds
//! `[i·C, (i+1)·C)` of the source for every rung of the ladder in one ffmpeg pass (decoded once, split
//! and scaled per rung) into CMAF fMP4 segments of 4 s whose timestamps continue the source's, so the
//! chunks' segments join into one playlist with one init segment; the `audio` job encodes the whole
//! soundtrack once. Outputs go to deterministic keys under `videos/{id}/`, so a job delivered twice writes
//! the same objects. The delivery after which the job records show every job done sends `finalize`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::blobs::Blobs;
use common::catalog::{VideoError, VideoStatus, Videos};
use common::config::Config;
use common::events::{Event, EventError, EventHandler, Trigger};
use common::ids::VideoId;
use common::pipeline::{
    FinalizeJob, JobState, Jobs, Plan, TranscodeJob, decode, live_video, media_prefix, remove_remains, source_key,
};
use common::platform::Ports;
use common::queue::Queue;
use common::store::StoreError;

/// How long the source's signed URL lives: longer than any job.
const SOURCE_URL_TTL: Duration = Duration::from_secs(6 * 3600);

pub struct Handler {
    videos: Videos,
    jobs: Jobs,
    sources: Arc<dyn Blobs>,
    media: Arc<dyn Blobs>,
    finalize: Arc<dyn Queue>,
    max_attempts: u32,
}

impl Handler {
    pub fn new(config: &Config, ports: &Ports) -> Self {
        Self {
            videos: Videos::new(ports.store.clone()),
            jobs: Jobs::new(ports.store.clone()),
            sources: ports.sources.clone(),
            media: ports.media.clone(),
            finalize: ports.finalize.clone(),
            max_attempts: config.max_attempts,
        }
    }

    /// Encodes the job into `dir` (one folder per rendition, `audio` for the sound).
    async fn encode(&self, plan: &Plan, job: &str, dir: &Path) -> Result<(), String> {
        let source = self
            .sources
            .signed_get_url(&source_key(&plan.video_id), SOURCE_URL_TTL)
            .await
            .map_err(|e| e.to_string())?
            .url;
        let args = if job == "audio" {
            std::fs::create_dir_all(dir.join("audio")).map_err(|e| e.to_string())?;
            audio_args(plan, &source, dir)
        } else {
            let index: u32 = job
                .strip_prefix("video-")
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| format!("{job:?} is not a job of this plan"))?;
            for rendition in &plan.renditions {
                std::fs::create_dir_all(dir.join(&rendition.name)).map_err(|e| e.to_string())?;
            }
            chunk_args(plan, index, &source, dir)
        };
        common::media::run_ffmpeg(args).await
    }

    /// Stores every file the job wrote, under `videos/{id}/{rendition}/`.
    /// Stores what a job wrote under the video's media prefix; answers the keys written.
    async fn store(&self, id: &VideoId, dir: &Path) -> Result<Vec<String>, EventError> {
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(EventError::retryable)? {
            let folder = entry.map_err(EventError::retryable)?;
            let name = folder.file_name().to_string_lossy().into_owned();
            let frameless = !has_frames(&folder.path()).map_err(EventError::retryable)?;
            for file in std::fs::read_dir(folder.path()).map_err(EventError::retryable)? {
                let path: PathBuf = file.map_err(EventError::retryable)?.path();
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if frameless && !file_name.ends_with(".m3u8") {
                    // A chunk past the picture's last frame (the sound lasts a little longer): its
                    // playlist says so, and its init segment, unlike every other chunk's, is not stored
                    // over theirs.
                    continue;
                }
                let key = format!("{}{name}/{file_name}", media_prefix(id));
                let content_type = match path.extension().and_then(|e| e.to_str()) {
                    Some("m3u8") => "application/vnd.apple.mpegurl",
                    Some("m4s") => "video/iso.segment",
                    _ => "video/mp4",
                };
                self.media
                    .put_file(&key, &path, Some(content_type))
                    .await
                    .map_err(EventError::retryable)?;
                stored.push(key);
            }
        }
        Ok(stored)
    }

    /// Counts a finished job once (the count is the video's progress) and sends `finalize` when the job
    /// records say every job is done and it was not sent yet. The count only shows progress: it misses a
    /// job whose delivery stopped between marking it done and counting it, and counts one twice when a
    /// write retried after it had landed. A repeated delivery also sends `finalize` if that send never
    /// happened (it failed before it was noted), so a lost message cannot leave the video unfinished;
    /// finalize is idempotent.
    async fn finish(&self, plan: &Plan, job: &str) -> Result<(), EventError> {
        let id = &plan.video_id;
        let total = plan.jobs.len() as i64;
        if self.jobs.mark_done(id, job).await.map_err(EventError::retryable)? {
            let done = self.jobs.count_done(id).await.map_err(EventError::retryable)?;
            let progress = (done * 100 / total.max(1)).min(99) as u8;
            self.videos
                .update(id, |video| {
                    if video.status != VideoStatus::Processing || video.progress >= progress {
                        return false;
                    }
                    video.progress = progress;
                    true
                })
                .await
                .map_err(EventError::retryable)?;
        }
        let completes = self.all_done(plan).await.map_err(EventError::retryable)?
            && !self.jobs.finalize_sent(id).await.map_err(EventError::retryable)?;
        if completes {
            let message =
                serde_json::to_string(&FinalizeJob { video_id: id.clone() }).map_err(EventError::retryable)?;
            self.finalize.send(message).await.map_err(EventError::retryable)?;
            self.jobs.note_finalize_sent(id).await.map_err(EventError::retryable)?;
            tracing::info!(video_id = %id, jobs = total, "every job is done; finalizing");
        }
        Ok(())
    }

    /// Whether the records say every job of the plan is done.
    async fn all_done(&self, plan: &Plan) -> Result<bool, StoreError> {
        let records = self.jobs.records(&plan.video_id).await?;
        Ok(plan
            .jobs
            .iter()
            .all(|job| records.iter().any(|r| &r.job == job && r.state == JobState::Done)))
    }

    async fn fail(&self, id: &VideoId, detail: String) -> Result<(), EventError> {
        let error = VideoError {
            code: "transcode_failed".into(),
            detail,
        };
        self.videos
            .fail_processing(id, error)
            .await
            .map_err(EventError::retryable)?;
        Ok(())
    }
}

/// Whether the chunk playlist a job wrote in `folder` lists a segment that lasts: a chunk that starts
/// after the source's last frame lists one empty segment.
fn has_frames(folder: &Path) -> std::io::Result<bool> {
    for file in std::fs::read_dir(folder)? {
        let path = file?.path();
        if path.extension().is_some_and(|e| e == "m3u8") {
            let text = std::fs::read_to_string(&path)?;
            return Ok(text
                .lines()
                .filter_map(|line| line.strip_prefix("#EXTINF:"))
                .filter_map(|rest| rest.split(',').next()?.trim().parse::<f64>().ok())
                .any(|seconds| seconds > 0.0));
        }
    }
    Ok(true)
}

/// ffmpeg's arguments for chunk `index`: decode `[S, S+C)` once, split it per rendition, and write each
/// as fMP4 HLS segments numbered from `S / 4` with timestamps starting at `S` (`frag_discont` keeps the
/// true start time in every fragment, so every chunk writes the same init segment).
pub fn chunk_args(plan: &Plan, index: u32, source: &str, dir: &Path) -> Vec<String> {
    let segment = plan.segment_seconds;
    let start = index * plan.chunk_seconds;
    let gop = (plan.frame_rate * f64::from(segment)).round().max(1.0) as u32;
    let count = plan.renditions.len();
    let mut graph = format!(
        "[0:v]split={count}{}",
        (0..count).map(|k| format!("[s{k}]")).collect::<String>()
    );
    for (k, rendition) in plan.renditions.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{k}]scale={}:{},setsar=1[v{k}]",
            rendition.width, rendition.height
        ));
    }
    let mut args: Vec<String> = vec![
        "-ss".into(),
        start.to_string(),
        "-t".into(),
        plan.chunk_seconds.to_string(),
        "-i".into(),
        source.into(),
        "-filter_complex".into(),
        graph,
    ];
    for (k, rendition) in plan.renditions.iter().enumerate() {
        let folder = dir.join(&rendition.name);
        // With several outputs, encoder options apply to the next output only: every rendition gets all.
        args.extend(
            [
                "-map",
                &format!("[v{k}]"),
                "-an",
                "-c:v",
                "libx264",
                "-preset",
                &plan.preset,
                "-profile:v",
                "high",
                "-pix_fmt",
                "yuv420p",
                // Frame threads with VBV make x264's output depend on timing; slices over a fixed number of
                // threads make every delivery of a job write the same bytes on any machine.
                "-x264-params",
                "sliced-threads=1:threads=4",
                "-b:v",
                &rendition.bitrate.to_string(),
                "-maxrate",
                &rendition.maxrate.to_string(),
                "-bufsize",
                &rendition.bufsize.to_string(),
                "-g",
                &gop.to_string(),
                "-keyint_min",
                &gop.to_string(),
                "-sc_threshold",
                "0",
                "-force_key_frames",
                &format!("expr:gte(t,n_forced*{segment})"),
                "-output_ts_offset",
                &start.to_string(),
                "-avoid_negative_ts",
                "disabled",
                "-f",
                "hls",
                "-hls_time",
                &segment.to_string(),
                "-hls_playlist_type",
                "vod",
                "-hls_segment_type",
                "fmp4",
                "-hls_segment_options",
                "movflags=+frag_discont",
                "-hls_fmp4_init_filename",
                "init.mp4",
                "-start_number",
                &(start / segment).to_string(),
                "-hls_segment_filename",
                &folder.join("seg-%05d.m4s").display().to_string(),
            ]
            .map(str::to_owned),
        );
        args.push(folder.join(format!("chunk-{index:05}.m3u8")).display().to_string());
    }
    args
}

/// ffmpeg's arguments for the audio job: the whole soundtrack as AAC-LC stereo fMP4 segments.
pub fn audio_args(plan: &Plan, source: &str, dir: &Path) -> Vec<String> {
    let folder = dir.join("audio");
    let mut args: Vec<String> = [
        "-i", source, "-map", "0:a:0", "-vn", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(
        [
            "-ar",
            "48000",
            // No further than the plan's duration, which the chunks' pictures stop at too: a file whose
            // header states less than it holds is not encoded past it.
            "-t",
            &format!("{:.3}", plan.duration),
            "-f",
            "hls",
            "-hls_time",
            &plan.segment_seconds.to_string(),
            "-hls_playlist_type",
            "vod",
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
            "-start_number",
            "0",
            "-hls_segment_filename",
            &folder.join("seg-%05d.m4s").display().to_string(),
        ]
        .map(str::to_owned),
    );
    args.push(folder.join("chunk-00000.m3u8").display().to_string());
    args
}

#[async_trait]
impl EventHandler for Handler {
    fn trigger(&self) -> Trigger {
        Trigger::Queue
    }

    async fn handle(&self, event: Event) -> Result<(), EventError> {
        let Event::Message(message) = event else {
            return Err(EventError::malformed("transcode takes queue messages"));
        };
        let job: TranscodeJob = decode(&message.body)?;
        let id = job.video_id.clone();
        let Some(video) = live_video(&self.videos, &id).await? else {
            return remove_remains(self.media.as_ref(), &self.videos, &id).await;
        };
        if video.status == VideoStatus::Failed {
            tracing::info!(video_id = %id, job = %job.job, "the video failed; dropping its job");
            return Ok(());
        }
        let Some(plan) = self.jobs.plan(&id).await.map_err(EventError::retryable)? else {
            // It can never be encoded.
            self.fail(&id, "the video has no processing plan".into()).await?;
            return Err(EventError::malformed(format!("video {id} has no plan")));
        };
        if !plan.jobs.contains(&job.job) {
            return Err(EventError::malformed(format!(
                "{:?} is not a job of video {id}",
                job.job
            )));
        }
        let result = self.run(&plan, &job.job).await;
        if let Err(err) = &result {
            tracing::warn!(video_id = %id, job = %job.job, attempt = message.receive_count, error = %err, "job failed");
            if matches!(err, EventError::Malformed(_)) || message.receive_count >= self.max_attempts {
                // This delivery is the last: the message goes to the dead-letter queue, the video fails.
                // The cause (ffmpeg's words, local paths) is in the log above, not in what the owner reads.
                self.fail(
                    &id,
                    format!("the {} job failed after {} attempts", job.job, message.receive_count),
                )
                .await?;
            }
        }
        result
    }
}

impl Handler {
    /// Encodes job `job` of `plan`, stores what it wrote and counts it done.
    async fn run(&self, plan: &Plan, job: &str) -> Result<(), EventError> {
        let id = &plan.video_id;
        let dir = tempfile::tempdir().map_err(EventError::retryable)?;
        let started = std::time::Instant::now();
        self.encode(plan, job, dir.path())
            .await
            .map_err(|why| EventError::retryable(format!("encoding failed: {why}")))?;
        let files = self.store(id, dir.path()).await?;
        // Deleted while this job ran: what it wrote would outlive the video.
        if live_video(&self.videos, id).await?.is_none() {
            return remove_remains(self.media.as_ref(), &self.videos, id).await;
        }
        let files = files.len();
        metrics::histogram!("streamgate_transcode_seconds", "job" => if job == "audio" { "audio" } else { "video" })
            .record(started.elapsed().as_secs_f64());
        tracing::info!(video_id = %id, job, files, seconds = started.elapsed().as_secs_f64(), "job encoded");
        self.finish(plan, job).await
    }
}
