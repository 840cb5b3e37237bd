//! Reading sources with ffprobe (located by ffmpeg-sidecar, never downloaded), and deciding whether one can
//! become a good stream.

use std::time::Duration;

use serde::Deserialize;

/// What a source may be (`STREAMGATE_MAX_DURATION`, `STREAMGATE_MAX_DIMENSION`, `STREAMGATE_MAX_FRAME_RATE`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaLimits {
    /// Longest source, in seconds.
    pub max_duration: f64,
    /// Largest width or height, in pixels.
    pub max_dimension: u32,
    /// Fastest frame rate, in frames per second.
    pub max_frame_rate: f64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_duration: 6.0 * 3600.0,
            max_dimension: 7680,
            max_frame_rate: 120.0,
        }
    }
}

/// The smallest width or height taken.
const MIN_DIMENSION: u32 = 16;
/// The slowest frame rate taken.
const MIN_FRAME_RATE: f64 = 1.0;

/// What ffprobe tells of a source, as far as StreamGate reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub format: String,
    pub duration: Option<f64>,
    pub video: Option<VideoStream>,
    pub audio: Option<AudioStream>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoStream {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second (`avg_frame_rate`, else `r_frame_rate`).
    pub frame_rate: Option<f64>,
    /// Rotation from the display matrix, in degrees (phones record portrait video as rotated landscape).
    pub rotation: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioStream {
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
}

/// A source that cannot become a stream: a stable code and a sentence for its owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Refusal {
    pub code: &'static str,
    pub detail: String,
}

impl Refusal {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// ffprobe read the input and found no media it understands.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// ffprobe could not run, or did not finish: worth another try.
    #[error("ffprobe failed: {0}")]
    Tool(String),
}

/// A source that passed: its picture as displayed and its timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub duration: f64,
    /// Width and height as displayed (rotation applied).
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub has_audio: bool,
}

/// Checks that ffmpeg and ffprobe can run; the error names what is missing and how to get it.
pub fn check_tools() -> Result<(), String> {
    let missing = |tool: &str, err: &dyn std::fmt::Display| {
        format!("{tool} cannot run ({err}); install ffmpeg (on Debian: apt-get install ffmpeg) or put it on PATH")
    };
    ffmpeg_sidecar::version::ffmpeg_version().map_err(|e| missing("ffmpeg", &e))?;
    ffmpeg_sidecar::ffprobe::ffprobe_version().map_err(|e| missing("ffprobe", &e))?;
    Ok(())
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Format {
    #[serde(default)]
    format_name: String,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct Stream {
    #[serde(default)]
    codec_type: String,
    #[serde(default)]
    codec_name: String,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    channels: Option<u32>,
    sample_rate: Option<String>,
    #[serde(default)]
    disposition: Disposition,
    #[serde(default)]
    side_data_list: Vec<SideData>,
}

#[derive(Deserialize, Default)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

/// `30000/1001` → 29.97; `0/0` → none.
fn rate(text: Option<&str>) -> Option<f64> {
    let (num, den) = text?.split_once('/')?;
    let (num, den): (f64, f64) = (num.parse().ok()?, den.parse().ok()?);
    (num > 0.0 && den > 0.0).then(|| num / den)
}

/// Reads ffprobe's JSON.
pub fn parse(json: &[u8]) -> Result<Probe, String> {
    let output: Output = serde_json::from_slice(json).map_err(|e| format!("unreadable ffprobe output: {e}"))?;
    let format = output.format.ok_or("ffprobe reported no format")?;
    // A cover image is a video stream too; the picture that plays is the first real one.
    let video = output
        .streams
        .iter()
        .find(|s| s.codec_type == "video" && s.disposition.attached_pic == 0)
        .map(|s| VideoStream {
            codec: s.codec_name.clone(),
            width: s.width.unwrap_or(0),
            height: s.height.unwrap_or(0),
            frame_rate: rate(s.avg_frame_rate.as_deref()).or_else(|| rate(s.r_frame_rate.as_deref())),
            rotation: s
                .side_data_list
                .iter()
                .find_map(|d| d.rotation)
                .map_or(0, |r| r.round() as i32),
        });
    let audio = output
        .streams
        .iter()
        .find(|s| s.codec_type == "audio")
        .map(|s| AudioStream {
            codec: s.codec_name.clone(),
            channels: s.channels.unwrap_or(0),
            sample_rate: s.sample_rate.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0),
        });
    Ok(Probe {
        format: format.format_name,
        duration: format.duration.as_deref().and_then(|d| d.parse().ok()),
        video,
        audio,
    })
}

/// What ffprobe's complaint about an input means for its owner.
fn classify_failure(stderr: &str) -> Refusal {
    let lower = stderr.to_ascii_lowercase();
    let truncated = [
        "moov atom not found",
        "truncat",
        "end of file",
        "invalid nal",
        "error reading header",
    ];
    if truncated.iter().any(|sign| lower.contains(sign)) {
        Refusal::new(
            "corrupt_media",
            "the file is damaged or incomplete (was the upload cut short?)",
        )
    } else {
        Refusal::new(
            "unsupported_media",
            "the file is not a video format StreamGate can read",
        )
    }
}

/// Runs ffprobe on `input` (a URL or path), reading only what it needs (HTTP ranges for URLs).
pub async fn probe(input: &str, timeout: Duration) -> Result<Probe, ProbeError> {
    let mut command = tokio::process::Command::new(ffmpeg_sidecar::ffprobe::ffprobe_path());
    command
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-i",
            input,
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(ProbeError::Tool(format!("cannot run ffprobe: {err}"))),
        Err(_) => return Err(ProbeError::Tool(format!("no answer within {} s", timeout.as_secs()))),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // An HTTP failure is ours (storage, the signed URL), not the file's.
        if stderr.contains("HTTP error") || stderr.contains("Connection refused") || stderr.contains("Server returned")
        {
            return Err(ProbeError::Tool(first_line(&stderr)));
        }
        return Err(classify_failure(&stderr).into());
    }
    parse(&output.stdout).map_err(ProbeError::Tool)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().chars().take(200).collect()
}

/// Whether ffmpeg decodes the last moments of `input`: a file cut short whose index came first probes
/// well and fails here.
pub async fn decodes_to_the_end(input: &str, duration: f64, timeout: Duration) -> Result<bool, ProbeError> {
    let start = (duration - 1.0).max(0.0);
    let mut command = tokio::process::Command::new(ffmpeg_sidecar::paths::ffmpeg_path());
    command
        .args(["-v", "error", "-xerror", "-ss", &format!("{start:.3}"), "-i", input])
        .args(["-map", "0:v:0", "-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(ProbeError::Tool(format!("cannot run ffmpeg: {err}"))),
        Err(_) => return Err(ProbeError::Tool(format!("no answer within {} s", timeout.as_secs()))),
    };
    Ok(output.status.success() && output.stderr.is_empty())
}

/// Runs ffmpeg (through ffmpeg-sidecar) with `args` on a blocking thread; the error carries the last
/// messages ffmpeg logged as errors.
pub async fn run_ffmpeg(args: Vec<String>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let mut child = ffmpeg_sidecar::command::FfmpegCommand::new()
            .args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"])
            .args(&args)
            .spawn()
            .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
        let mut errors: Vec<String> = Vec::new();
        if let Ok(events) = child.iter() {
            for event in events {
                match event {
                    ffmpeg_sidecar::event::FfmpegEvent::Log(
                        ffmpeg_sidecar::event::LogLevel::Error | ffmpeg_sidecar::event::LogLevel::Fatal,
                        line,
                    )
                    | ffmpeg_sidecar::event::FfmpegEvent::Error(line) => {
                        if errors.len() == 5 {
                            errors.remove(0);
                        }
                        errors.push(line);
                    }
                    _ => {}
                }
            }
        }
        let status = child.wait().map_err(|e| format!("ffmpeg did not finish: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("ffmpeg failed ({status}): {}", errors.join(" / ")))
        }
    })
    .await
    .map_err(|e| format!("the ffmpeg task failed: {e}"))?
}

/// Decides whether a probed source can become a good stream.
pub fn judge(probe: &Probe, limits: &MediaLimits) -> Result<Accepted, Refusal> {
    let Some(video) = &probe.video else {
        return Err(if probe.audio.is_some() {
            Refusal::new("no_video_stream", "the file has sound but no picture")
        } else {
            Refusal::new("no_video_stream", "the file has no picture")
        });
    };
    let duration = match probe.duration {
        Some(d) if d.is_finite() && d > 0.0 => d,
        _ => {
            return Err(Refusal::new(
                "corrupt_media",
                "the file has no duration; it may be damaged",
            ));
        }
    };
    if duration > limits.max_duration {
        return Err(Refusal::new(
            "too_long",
            format!(
                "the video lasts {}, longer than the {} allowed",
                clock(duration),
                clock(limits.max_duration)
            ),
        ));
    }
    let (width, height) = if video.rotation.rem_euclid(180) == 90 {
        (video.height, video.width)
    } else {
        (video.width, video.height)
    };
    if width.max(height) > limits.max_dimension {
        return Err(Refusal::new(
            "too_large",
            format!(
                "the picture is {width}×{height}; at most {} pixels a side are taken",
                limits.max_dimension
            ),
        ));
    }
    if width.min(height) < MIN_DIMENSION {
        return Err(Refusal::new(
            "unsupported_media",
            format!("the picture is {width}×{height}; at least {MIN_DIMENSION} pixels a side are needed"),
        ));
    }
    let frame_rate = match video.frame_rate {
        Some(fps) if (MIN_FRAME_RATE..=limits.max_frame_rate).contains(&fps) => fps,
        Some(fps) => {
            return Err(Refusal::new(
                "unsupported_media",
                format!(
                    "the video runs at {fps:.2} frames per second; {MIN_FRAME_RATE} to {} are taken",
                    limits.max_frame_rate
                ),
            ));
        }
        None => {
            return Err(Refusal::new(
                "corrupt_media",
                "the video has no frame rate; it may be damaged",
            ));
        }
    };
    Ok(Accepted {
        duration,
        width,
        height,
        frame_rate,
        has_audio: probe.audio.is_some(),
    })
}

/// `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let total = seconds.round() as u64;
    format!("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_of(json: serde_json::Value) -> Probe {
        parse(json.to_string().as_bytes()).expect("parse")
    }

    fn clip(width: u32, height: u32, rate: &str, duration: &str) -> serde_json::Value {
        serde_json::json!({
            "streams": [
                {"codec_type": "video", "codec_name": "h264", "width": width, "height": height,
                 "avg_frame_rate": rate, "r_frame_rate": rate},
                {"codec_type": "audio", "codec_name": "aac", "channels": 2, "sample_rate": "48000"}
            ],
            "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": duration}
        })
    }

    #[test]
    fn reads_what_plays() {
        let probe = probe_of(clip(1920, 1080, "30000/1001", "60.06"));
        let accepted = judge(&probe, &MediaLimits::default()).expect("accepted");
        assert_eq!((accepted.width, accepted.height), (1920, 1080));
        assert!((accepted.frame_rate - 29.97).abs() < 0.01);
        assert!(accepted.has_audio);
        assert!((accepted.duration - 60.06).abs() < 1e-9);
    }

    #[test]
    fn rotation_and_cover_art_are_understood() {
        let mut json = clip(1920, 1080, "30/1", "10");
        json["streams"][0]["side_data_list"] = serde_json::json!([{"rotation": -90}]);
        json["streams"]
            .as_array_mut()
            .expect("streams")
            .insert(0, serde_json::json!({"codec_type": "video", "codec_name": "mjpeg", "width": 600, "height": 600, "disposition": {"attached_pic": 1}}));
        let accepted = judge(&probe_of(json), &MediaLimits::default()).expect("accepted");
        assert_eq!((accepted.width, accepted.height), (1080, 1920));
    }

    #[test]
    fn refuses_with_a_code() {
        let limits = MediaLimits {
            max_duration: 3600.0,
            ..MediaLimits::default()
        };
        let audio_only = serde_json::json!({
            "streams": [{"codec_type": "audio", "codec_name": "mp3", "channels": 2, "sample_rate": "44100"}],
            "format": {"format_name": "mp3", "duration": "30"}
        });
        for (json, code) in [
            (audio_only, "no_video_stream"),
            (clip(1920, 1080, "30/1", "3601"), "too_long"),
            (clip(16000, 9000, "30/1", "10"), "too_large"),
            (clip(8, 8, "30/1", "10"), "unsupported_media"),
            (clip(640, 360, "1000/1", "10"), "unsupported_media"),
            (clip(640, 360, "0/0", "10"), "corrupt_media"),
            (clip(640, 360, "30/1", "N/A"), "corrupt_media"),
        ] {
            let refusal = judge(&probe_of(json.clone()), &limits).expect_err("refused");
            assert_eq!(refusal.code, code, "{json}");
            assert!(!refusal.detail.is_empty());
        }
    }

    #[test]
    fn ffprobe_complaints_become_codes() {
        assert_eq!(classify_failure("x.mp4: moov atom not found").code, "corrupt_media");
        assert_eq!(
            classify_failure("x.mp4: Invalid data found when processing input").code,
            "unsupported_media"
        );
    }
}
