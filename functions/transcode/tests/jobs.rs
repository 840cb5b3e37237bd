//! `transcode` over the embedded adapters with real ffmpeg: every job of a plan writes its CMAF segments,
//! the chunks' segments join into one continuous stream per rendition, a job delivered twice writes the
//! same bytes, and the set sends `finalize` once.

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

struct Setup {
    handler: transcode::Handler,
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

    async fn finalize_messages(&self) -> usize {
        self.ports
            .local
            .as_ref()
            .expect("local")
            .finalize
            .depth()
            .await
            .expect("depth") as usize
    }

    async fn object(&self, key: &str) -> Vec<u8> {
        self.ports.media.get(key).await.expect(key).to_vec()
    }
}

#[tokio::test]
async fn chunks_join_into_one_stream_and_finalize_is_sent_once() {
    let setup = setup().await;
    let plan = setup.planned(10, 4).await;
    assert_eq!(plan.jobs, ["video-0", "video-1", "video-2", "audio"]);
    for job in &plan.jobs {
        assert_eq!(setup.finalize_messages().await, 0, "not before the last job");
        setup.run(&plan, job).await;
    }
    assert_eq!(setup.finalize_messages().await, 1);
    let video = Videos::new(setup.ports.store.clone())
        .get(&plan.video_id)
        .await
        .expect("store")
        .expect("video");
    assert_eq!(video.progress, 99, "100 once finalized");

    let prefix = format!("videos/{}/", plan.video_id);
    for rendition in ["360p", "240p", "audio"] {
        let keys: Vec<String> = setup
            .ports
            .media
            .list(&format!("{prefix}{rendition}/"))
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        assert!(keys.contains(&"init.mp4".to_owned()), "{rendition}: {keys:?}");
        let segments = keys.iter().filter(|k| k.ends_with(".m4s")).count();
        assert_eq!(segments, 3, "{rendition}: {keys:?}");
    }

    // The 360p segments of the three chunks, after the one init segment, play as one 10-second stream with
    // timestamps that only grow.
    let joined = setup.dir.path().join("joined.mp4");
    let mut bytes = setup.object(&format!("{prefix}360p/init.mp4")).await;
    for n in 0..3 {
        bytes.extend(setup.object(&format!("{prefix}360p/seg-{n:05}.m4s")).await);
    }
    std::fs::write(&joined, bytes).expect("write");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(&joined)
        .output()
        .expect("ffprobe");
    let mut times: Vec<f64> = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert_eq!(times.len(), 300, "every frame of 10 s at 30 fps");
    times.sort_by(f64::total_cmp);
    assert!(times.windows(2).all(|w| w[1] > w[0]), "no repeated timestamps");
    assert!(
        times[0].abs() < 0.05 && (times[299] - 9.967).abs() < 0.05,
        "{} .. {}",
        times[0],
        times[299]
    );
}

#[tokio::test]
async fn a_job_delivered_twice_writes_the_same_bytes() {
    let setup = setup().await;
    let plan = setup.planned(8, 4).await;
    setup.run(&plan, "video-1").await;
    let key = format!("videos/{}/360p/seg-00001.m4s", plan.video_id);
    let first = setup.object(&key).await;
    let init = setup.object(&format!("videos/{}/360p/init.mp4", plan.video_id)).await;
    setup.run(&plan, "video-1").await;
    assert!(
        setup.object(&key).await == first,
        "a second delivery changed the segment"
    );
    setup.run(&plan, "video-0").await;
    assert!(
        setup.object(&format!("videos/{}/360p/init.mp4", plan.video_id)).await == init,
        "chunks write the same init segment"
    );
    setup.run(&plan, "audio").await;
    assert_eq!(setup.finalize_messages().await, 1);
    // A late duplicate of a finished set sends nothing more.
    setup.run(&plan, "video-0").await;
    assert_eq!(setup.finalize_messages().await, 1);
}
