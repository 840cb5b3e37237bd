//! `finalize` over the embedded adapters with real ffmpeg: after every job of a plan is encoded, the HLS
//! master and media playlists and the DASH MPD over the same segments are written, and ffmpeg plays both
//! to the end; the video is `ready` with its renditions, a poster and thumbnails.

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use common::adapters::local::blob_routes;
use common::catalog::{Video, VideoStatus, Videos};
use common::config::Config;
use common::events::{Event, EventHandler, Message};
use common::ids::VideoId;
use common::pipeline::{FinalizeJob, Jobs, Plan, TranscodeJob, job_names};
use common::platform::Ports;

struct Setup {
    handler: transcode::Handler,
    finalize: finalize::Handler,
    ports: Ports,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let env = vec![
        (
            "STREAMGATE_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        ("STREAMGATE_PUBLIC_URL".to_owned(), url),
        ("STREAMGATE_X264_PRESET".to_owned(), "ultrafast".to_owned()),
    ];
    let config = Config::from_vars(env).expect("config");
    let ports = Ports::from_config(&config).await.expect("ports");
    let local = ports.local.clone().expect("local");
    let app = blob_routes([local.sources.clone(), local.media.clone()]);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Setup {
        handler: transcode::Handler::new(&config, &ports),
        finalize: finalize::Handler::new(&config, &ports),
        ports,
        dir,
    }
}

fn source(dir: &Path, seconds: u32) -> Vec<u8> {
    let out = dir.join("source.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=640x360:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    std::fs::read(out).expect("source")
}

impl Setup {
    /// A video with its source stored and a plan of chunks of `chunk` seconds.
    async fn planned(&self, seconds: u32, chunk: u32) -> Plan {
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
            duration_seconds: Some(f64::from(seconds)),
            width: Some(640),
            height: Some(360),
            renditions: vec![],
            access: serde_json::json!({"type": "public"}),
            cid: None,
            source: None,
            created_at: now,
            updated_at: now,
        };
        Videos::new(self.ports.store.clone())
            .create(&video)
            .await
            .expect("video");
        let bytes = source(self.dir.path(), seconds);
        self.ports
            .sources
            .put(&format!("sources/{id}"), bytes.into(), None)
            .await
            .expect("source");
        let ladder = common::ladder::parse_ladder("360p,240p").expect("ladder");
        let plan = Plan {
            video_id: id,
            duration: f64::from(seconds),
            width: 640,
            height: 360,
            frame_rate: 30.0,
            has_audio: true,
            segment_seconds: 4,
            chunk_seconds: chunk,
            preset: "ultrafast".into(),
            renditions: common::ladder::renditions(&ladder, 640, 360, 30.0),
            jobs: job_names(f64::from(seconds), chunk, true),
            created_at: Utc::now(),
        };
        assert!(Jobs::new(self.ports.store.clone()).create(&plan).await.expect("plan"));
        plan
    }

    async fn run(&self, plan: &Plan, job: &str) {
        let body = serde_json::to_string(&TranscodeJob {
            video_id: plan.video_id.clone(),
            job: job.into(),
        })
        .expect("json");
        let event = Event::Message(Message {
            id: format!("m-{job}"),
            body,
            receive_count: 1,
        });
        self.handler.handle(event).await.expect("job done");
    }
}

/// Copies every object under `prefix` into `dir`, keeping the layout.
async fn download(ports: &Ports, prefix: &str, dir: &Path) {
    for object in ports.media.list(prefix).await.expect("list") {
        let path = dir.join(object.key.trim_start_matches(prefix));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, ports.media.get(&object.key).await.expect("get")).expect("write");
    }
}

/// Decodes `input` to the end; the number of video frames ffmpeg decoded.
fn frames_played(input: &Path) -> usize {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(input)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "decoded with errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count()
}

#[tokio::test]
async fn a_finished_plan_becomes_a_ready_hls_and_dash_stream() {
    let setup = setup().await;
    let plan = setup.planned(10, 4).await;
    for job in &plan.jobs {
        setup.run(&plan, job).await;
    }
    let body = serde_json::to_string(&FinalizeJob {
        video_id: plan.video_id.clone(),
    })
    .expect("json");
    let event = |n: u32| {
        Event::Message(Message {
            id: format!("f{n}"),
            body: body.clone(),
            receive_count: 1,
        })
    };
    setup.finalize.handle(event(1)).await.expect("finalized");

    let video = Videos::new(setup.ports.store.clone())
        .get(&plan.video_id)
        .await
        .expect("store")
        .expect("video");
    assert_eq!(video.status, VideoStatus::Ready);
    assert_eq!(video.progress, 100);
    let names: Vec<&str> = video.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["360p", "240p"]);
    assert!(
        video
            .renditions
            .iter()
            .all(|r| r.codecs.starts_with("avc1.") && r.codecs.ends_with(",mp4a.40.2"))
    );

    let prefix = format!("videos/{}/", plan.video_id);
    let master = String::from_utf8(
        setup
            .ports
            .media
            .get(&format!("{prefix}master.m3u8"))
            .await
            .expect("master")
            .to_vec(),
    )
    .expect("utf8");
    for attribute in [
        "BANDWIDTH=",
        "AVERAGE-BANDWIDTH=",
        "RESOLUTION=640x360",
        "CODECS=\"avc1.",
        "FRAME-RATE=30.000",
        "AUDIO=\"aac\"",
    ] {
        assert!(master.contains(attribute), "{attribute} missing from\n{master}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    download(&setup.ports, &prefix, dir.path()).await;
    assert!(dir.path().join("poster.jpg").exists());
    assert!(dir.path().join("thumbnails/thumb-001.jpg").exists());
    // Both manifests play the whole 10 s at 30 fps.
    assert_eq!(frames_played(&dir.path().join("master.m3u8")), 300);
    assert_eq!(frames_played(&dir.path().join("manifest.mpd")), 300);

    // A second finalize writes the same manifests.
    setup.finalize.handle(event(2)).await.expect("finalized again");
    let again = setup
        .ports
        .media
        .get(&format!("{prefix}master.m3u8"))
        .await
        .expect("master");
    assert!(again.as_ref() == master.as_bytes());
}
