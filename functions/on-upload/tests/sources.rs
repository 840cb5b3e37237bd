//! `on-upload` over the embedded adapters with real ffmpeg and ffprobe: sources made with ffmpeg's lavfi
//! are probed through the signed URLs of a blob server on loopback; good ones are planned and their jobs
//! queued, broken ones end `failed` with their code.

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use common::adapters::local::blob_routes;
use common::catalog::{Video, VideoStatus, Videos};
use common::config::Config;
use common::events::{Event, EventHandler, ObjectCreated};
use common::ids::VideoId;
use common::pipeline::{Jobs, TranscodeJob};
use common::platform::Ports;

struct Setup {
    handler: on_upload::Handler,
    ports: Ports,
    dir: tempfile::TempDir,
}

async fn setup(vars: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut env = vec![
        (
            "STREAMGATE_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        ("STREAMGATE_PUBLIC_URL".to_owned(), url),
    ];
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_vars(env).expect("config");
    let ports = Ports::from_config(&config).await.expect("ports");
    let local = ports.local.clone().expect("local");
    let app = blob_routes([local.sources.clone()]);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Setup {
        handler: on_upload::Handler::new(&config, &ports),
        ports,
        dir,
    }
}

/// Runs ffmpeg with `args` and returns the file it wrote.
fn ffmpeg(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
    std::fs::read(out).expect("output")
}

fn clip(dir: &Path, size: &str, rate: u32, seconds: u32, extra: &[&str]) -> Vec<u8> {
    let video = format!("testsrc2=size={size}:rate={rate}:duration={seconds}");
    let audio = format!("sine=frequency=440:duration={seconds}");
    let mut args = vec!["-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio];
    args.extend([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
    ]);
    args.extend(extra);
    ffmpeg(dir, &format!("clip-{size}-{rate}-{seconds}-{}.mp4", extra.len()), &args)
}

impl Setup {
    /// Stores `bytes` as a new video's source and hands its storage event to on-upload.
    async fn upload(&self, bytes: Vec<u8>) -> Video {
        let id = VideoId::generate();
        let now = Utc::now();
        let video = Video {
            id: id.clone(),
            owner: "0x0000000000000000000000000000000000000001".into(),
            title: "t".into(),
            description: String::new(),
            tags: vec![],
            status: VideoStatus::Processing,
            progress: 0,
            error: None,
            duration_seconds: None,
            width: None,
            height: None,
            renditions: vec![],
            access: serde_json::json!({"type": "public"}),
            cid: None,
            source: None,
            created_at: now,
            updated_at: now,
        };
        let videos = Videos::new(self.ports.store.clone());
        videos.create(&video).await.expect("create");
        let key = format!("sources/{id}");
        self.ports.sources.put(&key, bytes.into(), None).await.expect("put");
        let event = Event::ObjectCreated(ObjectCreated {
            bucket: "sources".into(),
            key,
            size: None,
            etag: None,
        });
        self.handler.handle(event).await.expect("handled");
        videos.get(&id).await.expect("get").expect("video")
    }

    async fn queued(&self) -> Vec<TranscodeJob> {
        let mut jobs = Vec::new();
        loop {
            let batch = self
                .ports
                .jobs
                .receive(10, std::time::Duration::from_secs(60), std::time::Duration::ZERO)
                .await
                .expect("receive");
            if batch.is_empty() {
                return jobs;
            }
            for message in batch {
                jobs.push(serde_json::from_str(&message.body).expect("a transcode job"));
                self.ports.jobs.ack(&message.receipt).await.expect("ack");
            }
        }
    }
}

fn code(video: &Video) -> &str {
    video.error.as_ref().map_or("", |e| e.code.as_str())
}

#[tokio::test]
async fn a_good_source_is_planned_and_its_jobs_queued() {
    let setup = setup(&[
        ("STREAMGATE_CHUNK_SECONDS", "4"),
        ("STREAMGATE_LADDER", "720p,360p,240p"),
    ])
    .await;
    let bytes = clip(setup.dir.path(), "640x360", 30, 10, &[]);
    let video = setup.upload(bytes).await;
    assert_eq!(video.status, VideoStatus::Processing, "{:?}", video.error);
    assert_eq!((video.width, video.height), (Some(640), Some(360)));
    assert!((video.duration_seconds.expect("duration") - 10.0).abs() < 0.2);

    let plan = Jobs::new(setup.ports.store.clone())
        .plan(&video.id)
        .await
        .expect("store")
        .expect("plan");
    // Never upscaled: 720p is left out.
    let names: Vec<&str> = plan.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["360p", "240p"]);
    assert_eq!(plan.jobs, ["video-0", "video-1", "video-2", "audio"]);
    let mut queued: Vec<String> = setup.queued().await.into_iter().map(|j| j.job).collect();
    queued.sort();
    assert_eq!(queued, ["audio", "video-0", "video-1", "video-2"]);

    // A redelivered event plans nothing new and sends the pending jobs again.
    let event = Event::ObjectCreated(ObjectCreated {
        bucket: "sources".into(),
        key: format!("sources/{}", video.id),
        size: None,
        etag: None,
    });
    setup.handler.handle(event).await.expect("handled");
    assert_eq!(setup.queued().await.len(), 4);
}

#[tokio::test]
async fn broken_sources_fail_with_their_code() {
    let setup = setup(&[]).await;
    let dir = setup.dir.path();
    let good = clip(dir, "320x240", 25, 6, &[]);
    let faststart = clip(dir, "320x240", 25, 6, &["-movflags", "+faststart"]);
    let audio_only = ffmpeg(
        dir,
        "tone.m4a",
        &["-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac"],
    );
    let fast = clip(dir, "64x64", 1000, 1, &[]);
    let tiny = clip(dir, "8x8", 25, 2, &[]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero bytes", Vec::new(), "corrupt_media"),
        (
            "text renamed .mp4",
            b"this is not a video, just some words\n".repeat(40),
            "unsupported_media",
        ),
        (
            "truncated, index at the end",
            good[..good.len() / 2].to_vec(),
            "corrupt_media",
        ),
        (
            "truncated, index first",
            faststart[..faststart.len() * 2 / 3].to_vec(),
            "corrupt_media",
        ),
        ("audio only", audio_only, "no_video_stream"),
        ("a thousand frames a second", fast, "unsupported_media"),
        ("eight pixels", tiny, "unsupported_media"),
    ];
    for (what, bytes, expected) in cases {
        let video = setup.upload(bytes).await;
        assert_eq!(video.status, VideoStatus::Failed, "{what}");
        assert_eq!(code(&video), expected, "{what}: {:?}", video.error);
        assert!(!video.error.as_ref().expect("error").detail.is_empty());
    }
    assert!(setup.queued().await.is_empty(), "nothing broken is transcoded");
}

#[tokio::test]
async fn limits_are_configurable() {
    let setup = setup(&[("STREAMGATE_MAX_DURATION", "5"), ("STREAMGATE_MAX_DIMENSION", "200")]).await;
    let long = clip(setup.dir.path(), "160x120", 25, 6, &[]);
    assert_eq!(code(&setup.upload(long).await), "too_long");
    let large = clip(setup.dir.path(), "320x240", 25, 2, &[]);
    assert_eq!(code(&setup.upload(large).await), "too_large");
}
