//! What the pipeline functions' tests share: embedded ports whose signed URLs a blob
//! server on loopback answers, as the local server does, so ffmpeg and ffprobe read them over HTTP; sources
//! made by ffmpeg's lavfi; and a video record to hang them on.

use std::path::Path;
use std::process::Command;

use chrono::Utc;

use common::adapters::local::blob_routes;
use common::catalog::{Video, VideoStatus, Videos};
use common::config::Config;
use common::events::{Event, EventHandler, Message};
use common::ids::VideoId;
use common::pipeline::{Jobs, Plan, TranscodeJob, job_names};
use common::platform::Ports;

/// Embedded ports under `dir/data` with `vars` set, and a server on loopback for their signed URLs.
pub async fn served_ports(dir: &Path, vars: &[(&str, &str)]) -> (Config, Ports) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut env = vec![
        ("STREAMGATE_DATA_DIR".to_owned(), dir.join("data").display().to_string()),
        ("STREAMGATE_PUBLIC_URL".to_owned(), url),
    ];
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_vars(env).expect("config");
    let ports = Ports::from_config(&config).await.expect("ports");
    let local = ports.local.clone().expect("embedded ports");
    let app = blob_routes([local.sources.clone(), local.media.clone()]);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (config, ports)
}

/// Runs ffmpeg with `args` and returns the file it wrote at `dir/name`.
pub fn ffmpeg(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
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

/// An H.264/AAC MP4 test clip of `size` (`640x360`) at `rate` frames per second, with `extra` output
/// options.
pub fn clip(dir: &Path, size: &str, rate: u32, seconds: u32, extra: &[&str]) -> Vec<u8> {
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
    let name = format!(
        "clip-{size}-{rate}-{seconds}-{}.mp4",
        extra.join("").replace(['+', '/'], "")
    );
    ffmpeg(dir, &name, &args)
}

/// Records a public video in `status` and stores `source` as its source; returns its id.
pub async fn video_with_source(ports: &Ports, status: VideoStatus, source: Vec<u8>) -> VideoId {
    let id = VideoId::generate();
    let mut video = Video::new(id.clone(), "0x0000000000000000000000000000000000000001");
    video.title = "Test clip".into();
    video.status = status;
    Videos::new(ports.store.clone()).create(&video).await.expect("video");
    ports
        .sources
        .put(&common::pipeline::source_key(&id), source.into(), None)
        .await
        .expect("source");
    id
}

/// A processing video with a 640×360 30 fps source of `seconds` (with sound) and a plan for the 360p and
/// 240p renditions in chunks of `chunk_seconds`, as `on-upload` would record it.
pub async fn planned_video(ports: &Ports, dir: &Path, seconds: u32, chunk_seconds: u32) -> Plan {
    planned_video_stated(ports, dir, seconds, f64::from(seconds), chunk_seconds).await
}

/// [`planned_video`] whose plan states the source lasts `stated` seconds, as a file whose header lies
/// about its duration probes.
pub async fn planned_video_stated(ports: &Ports, dir: &Path, seconds: u32, stated: f64, chunk_seconds: u32) -> Plan {
    let source = clip(dir, "640x360", 30, seconds, &[]);
    let id = video_with_source(ports, VideoStatus::Processing, source).await;
    let ladder = common::ladder::parse_ladder("360p,240p").expect("ladder");
    let plan = Plan {
        video_id: id,
        duration: stated,
        width: 640,
        height: 360,
        frame_rate: 30.0,
        has_audio: true,
        segment_seconds: common::config::SEGMENT_SECONDS,
        chunk_seconds,
        preset: "ultrafast".into(),
        renditions: common::ladder::renditions(&ladder, 640, 360, 30.0),
        jobs: job_names(stated, chunk_seconds, true),
        created_at: Utc::now(),
    };
    assert!(Jobs::new(ports.store.clone()).create(&plan).await.expect("plan"));
    plan
}

/// The queue message of a job, as its first delivery.
pub fn message<T: serde::Serialize>(id: &str, body: &T) -> Event {
    Event::Message(Message {
        id: id.to_owned(),
        body: serde_json::to_string(body).expect("json"),
        receive_count: 1,
    })
}

/// Runs `job` of `plan` through a transcode handler.
pub async fn transcode_job(handler: &dyn EventHandler, plan: &Plan, job: &str) {
    let body = TranscodeJob {
        video_id: plan.video_id.clone(),
        job: job.into(),
    };
    handler
        .handle(message(&format!("m-{job}"), &body))
        .await
        .expect("job done");
}
