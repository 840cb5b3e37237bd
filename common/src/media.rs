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
            "-format_whitelist",
            SOURCE_FORMATS,
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
        if transport_failure(&stderr) {
            return Err(ProbeError::Tool(first_line(&stderr)));
        }
        return Err(classify_failure(&stderr).into());
    }
    parse(&output.stdout).map_err(ProbeError::Tool)
}

/// Whether ffmpeg's complaint is about reaching the input (storage, the network, the signed URL), not
/// about the file: worth another try, never the file's fault.
fn transport_failure(stderr: &str) -> bool {
    const SIGNS: [&str; 9] = [
        "http error",
        "server returned",
        "connection refused",
        "connection reset",
        "connection timed out",
        "timed out",
        "failed to resolve hostname",
        "network is unreachable",
        "broken pipe",
    ];
    let lower = stderr.to_ascii_lowercase();
    SIGNS.iter().any(|sign| lower.contains(sign))
}

fn first_line(text: &str) -> String {
    without_queries(text.lines().next().unwrap_or_default())
        .chars()
        .take(200)
        .collect()
}

/// `text` with the query of every URL in it left out: ffmpeg names its input in its complaints, and the
/// query of a signed URL is its signature, which must reach neither logs nor a video's error.
fn without_queries(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| match (word.find("://"), word.find('?')) {
            (Some(scheme), Some(query)) if scheme < query => {
                let rest = &word[query..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let colon = if rest[..end].ends_with(':') { ":" } else { "" };
                format!("{}?…{colon}{}", &word[..query], &rest[end..])
            }
            _ => word.to_owned(),
        })
        .collect()
}

/// Whether ffmpeg decodes the last moments of `input`: a file cut short whose index came first probes
/// well and fails here.
pub async fn decodes_to_the_end(input: &str, duration: f64, timeout: Duration) -> Result<bool, ProbeError> {
    let start = (duration - 1.0).max(0.0);
    let mut command = tokio::process::Command::new(ffmpeg_sidecar::paths::ffmpeg_path());
    command
        .args(["-v", "error", "-xerror", "-rw_timeout", NETWORK_TIMEOUT_US])
        .args(["-format_whitelist", SOURCE_FORMATS])
        .args(["-ss", &format!("{start:.3}"), "-i", input])
        // Two seconds from a second before the stated end: a file that goes on far past it (a false
        // duration) is not decoded to its real end.
        .args(["-t", "2", "-map", "0:v:0", "-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(ProbeError::Tool(format!("cannot run ffmpeg: {err}"))),
        Err(_) => return Err(ProbeError::Tool(format!("no answer within {} s", timeout.as_secs()))),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if transport_failure(&stderr) {
        return Err(ProbeError::Tool(first_line(&stderr)));
    }
    Ok(output.status.success() && stderr.is_empty())
}

/// The longest one ffmpeg run may take: a minute less than a job's whole time on Lambda (900 s), so that
/// a run stopped for taking too long (an input that stalls, a hostile file) still fails its job in
/// order: tried again, and on the last delivery the video fails.
pub const FFMPEG_TIMEOUT: Duration = Duration::from_secs(840);

/// How long ffmpeg waits on one network read or write of its input (`-rw_timeout`, microseconds).
const NETWORK_TIMEOUT_US: &str = "30000000";

/// The containers a source may be in (ffmpeg's demuxer names, `-format_whitelist`). Playlists and lists
/// of files (HLS, DASH, concat) are not among them: read as a source, they would make ffmpeg fetch
/// media from wherever they point, other hosts included, and what it read could change between the
/// probe and the transcode.
pub const SOURCE_FORMATS: &str = "mov,mp4,matroska,webm,avi,mpegts,flv,ogg,mpeg,mpegvideo,asf,mxf,dv,m4v,h264,hevc,\
    ivf,nut,obu,gif,yuv4mpegpipe,rm,mjpeg,mp3,wav,flac,aac";

/// Runs ffmpeg with `args` for at most [`FFMPEG_TIMEOUT`]; the error carries the last messages ffmpeg
/// logged as errors.
pub async fn run_ffmpeg(args: Vec<String>) -> Result<(), String> {
    run_ffmpeg_within(args, FFMPEG_TIMEOUT).await
}

/// Runs ffmpeg with `args` for at most `timeout`. ffmpeg is killed when the run takes longer, and when
/// the future is dropped (a request timeout): it never runs on unseen, writing into a directory being
/// removed. Network inputs (`-i http…`) give up on a read that stalls.
pub async fn run_ffmpeg_within(args: Vec<String>, timeout: Duration) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;

    let mut command = tokio::process::Command::new(ffmpeg_sidecar::paths::ffmpeg_path());
    command
        .args(["-hide_banner", "-nostdin", "-nostats", "-y", "-loglevel", "error"])
        .args(with_network_timeouts(args))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let stderr = child.stderr.take();
    let run = async {
        let mut errors = std::collections::VecDeque::with_capacity(5);
        if let Some(stderr) = stderr {
            // Read to the end, whatever the bytes: a pipe left unread would stop ffmpeg once full.
            let mut lines = tokio::io::BufReader::new(stderr).split(b'\n');
            while let Ok(Some(line)) = lines.next_segment().await {
                if errors.len() == 5 {
                    errors.pop_front();
                }
                let line = String::from_utf8_lossy(&line);
                errors.push_back(without_queries(&line).chars().take(500).collect::<String>());
            }
        }
        (child.wait().await, errors)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), errors)) => Err(format!("ffmpeg failed ({status}): {}", Vec::from(errors).join(" / "))),
        Ok((Err(err), _)) => Err(format!("ffmpeg did not finish: {err}")),
        // `child` is dropped on return, which kills ffmpeg.
        Err(_) => Err(format!("ffmpeg did not finish within {} s; stopped", timeout.as_secs())),
    }
}

/// `args` with a read timeout and the source containers ([`SOURCE_FORMATS`]) before each network
/// input: sources are read through signed URLs.
fn with_network_timeouts(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg == "-i" && args.peek().is_some_and(|input| input.starts_with("http")) {
            let options = ["-rw_timeout", NETWORK_TIMEOUT_US, "-format_whitelist", SOURCE_FORMATS];
            out.extend(options.map(str::to_owned));
        }
        out.push(arg);
    }
    out
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

    #[test]
    fn failures_to_reach_the_input_are_not_the_file_s() {
        for stderr in [
            "[tcp @ 0x55] Connection to tcp://127.0.0.1:9 failed: Connection refused",
            "http://h/x: Server returned 503 Service Unavailable",
            "[tls @ 0x1] Error in the pull function. Connection reset by peer",
            "[tcp @ 0x2] Connection to tcp://10.0.0.1:443 failed: Connection timed out",
            "[tcp @ 0x3] Failed to resolve hostname storage: Temporary failure in name resolution",
        ] {
            assert!(transport_failure(stderr), "{stderr}");
        }
        for stderr in [
            "x.mp4: moov atom not found",
            "[h264 @ 0x4] error while decoding MB 10 20, bytestream -5",
            "",
        ] {
            assert!(!transport_failure(stderr), "{stderr}");
        }
    }

    #[test]
    fn signatures_are_left_out_of_complaints() {
        let line =
            "https://s.example/blobs/sources/v1?expires=1700000000&signature=c2VjcmV0: Server returned 403 Forbidden";
        assert_eq!(
            without_queries(line),
            "https://s.example/blobs/sources/v1?…: Server returned 403 Forbidden"
        );
        let two = "from http://a/x?sig=1 and http://b/y?sig=2\tend";
        assert_eq!(without_queries(two), "from http://a/x?… and http://b/y?…\tend");
        let plain = "[h264 @ 0x1] error while decoding MB 10 20? yes";
        assert_eq!(without_queries(plain), plain);
        assert!(!first_line(line).contains("signature"));
    }

    #[test]
    fn network_inputs_get_a_read_timeout() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            with_network_timeouts(args(&["-ss", "4", "-i", "https://s/x?sig=1", "-t", "2", "out.mp4"])),
            args(&[
                "-ss",
                "4",
                "-rw_timeout",
                NETWORK_TIMEOUT_US,
                "-format_whitelist",
                SOURCE_FORMATS,
                "-i",
                "https://s/x?sig=1",
                "-t",
                "2",
                "out.mp4"
            ])
        );
        let local = args(&["-i", "/tmp/x.mp4", "-f", "null", "-"]);
        assert_eq!(with_network_timeouts(local.clone()), local);
    }

    #[tokio::test]
    async fn a_playlist_is_refused_without_fetching_what_it_names() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A source stored as an HLS playlist with its media type (S3 serves what the upload declared),
        // naming a segment on another server.
        let fetched = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let playlist = format!("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n{base}/inside.ts\n#EXT-X-ENDLIST\n");
        let counter = fetched.clone();
        let app = axum::Router::new()
            .route(
                "/source",
                axum::routing::get(
                    move || async move { ([("content-type", "application/vnd.apple.mpegurl")], playlist) },
                ),
            )
            .route(
                "/inside.ts",
                axum::routing::get(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NOT_FOUND
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });

        let probed = probe(&format!("{base}/source"), Duration::from_secs(30)).await;
        match probed {
            Err(ProbeError::Refused(refusal)) => assert_eq!(refusal.code, "unsupported_media"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fetched.load(Ordering::SeqCst),
            0,
            "ffprobe fetched what the playlist names"
        );
    }

    /// The processes whose command line holds `marker`.
    fn running_with(marker: &str) -> usize {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| {
                std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
            })
            .count()
    }

    #[tokio::test]
    async fn ffmpeg_past_its_time_is_stopped_and_killed() {
        let marker = format!("streamgate-test-{}", uuid::Uuid::new_v4().simple());
        // Silence made at real speed, without end.
        let args = [
            "-re",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=8000",
            "-metadata",
            &format!("comment={marker}"),
        ]
        .into_iter()
        .chain(["-f", "null", "-"])
        .map(str::to_owned)
        .collect();
        let started = std::time::Instant::now();
        let run = run_ffmpeg_within(args, Duration::from_secs(1)).await;
        let err = run.expect_err("stopped");
        assert!(err.contains("did not finish within 1 s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
        // Killed, not left running: wait for the kill to land.
        let mut left = running_with(&marker);
        for _ in 0..50 {
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = running_with(&marker);
        }
        assert_eq!(left, 0, "ffmpeg still runs");
    }

    #[tokio::test]
    async fn ffmpeg_s_errors_are_reported() {
        let args = ["-i", "/nonexistent/streamgate.mp4", "-f", "null", "-"]
            .map(str::to_owned)
            .to_vec();
        let err = run_ffmpeg_within(args, Duration::from_secs(60))
            .await
            .expect_err("no such input");
        assert!(err.contains("No such file or directory"), "{err}");
    }
}
