//! `transcode` over the embedded adapters with real ffmpeg: every job of a plan writes its CMAF segments,
//! the chunks' segments join into one continuous stream per rendition, a job delivered twice writes the
//! same bytes, and the set sends `finalize` once.

use std::process::Command;

use common::blobs::Blobs;
use common::catalog::{VideoStatus, Videos};
use common::events::{Event, EventHandler, Message};
use common::pipeline::{Jobs, Plan, TranscodeJob};
use common::platform::Ports;
use streamgate_testing::{planned_video, planned_video_stated, served_ports, transcode_job};

struct Setup {
    handler: transcode::Handler,
    ports: Ports,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, ports) = served_ports(dir.path(), &[("STREAMGATE_X264_PRESET", "ultrafast")]).await;
    Setup {
        handler: transcode::Handler::new(&config, &ports),
        ports,
        dir,
    }
}

impl Setup {
    async fn planned(&self, seconds: u32, chunk: u32) -> Plan {
        planned_video(&self.ports, self.dir.path(), seconds, chunk).await
    }

    async fn run(&self, plan: &Plan, job: &str) {
        transcode_job(&self.handler, plan, job).await;
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

/// A file whose header states less than it holds: its sound is encoded no further than the plan says.
#[tokio::test]
async fn the_sound_stops_at_the_planned_duration() {
    let setup = setup().await;
    // Ten seconds of sound in a file whose header says four.
    let dir = setup.dir.path().join("stated");
    std::fs::create_dir_all(&dir).expect("dir");
    let plan = planned_video_stated(&setup.ports, &dir, 10, 4.0, 4).await;
    assert_eq!(plan.jobs, ["video-0", "audio"]);
    setup.run(&plan, "audio").await;
    let playlist = setup
        .object(&format!("videos/{}/audio/chunk-00000.m3u8", plan.video_id))
        .await;
    let seconds: f64 = String::from_utf8_lossy(&playlist)
        .lines()
        .filter_map(|line| line.strip_prefix("#EXTINF:"))
        .filter_map(|rest| rest.trim_end_matches(',').parse::<f64>().ok())
        .sum();
    assert!((3.9..4.1).contains(&seconds), "{seconds} s of sound");
}

#[tokio::test]
async fn a_job_whose_last_delivery_cannot_store_fails_the_video() {
    let setup = setup().await;
    let plan = setup.planned(4, 4).await;
    // What the job writes cannot be stored: a file stands where the video's folder would be.
    let media = setup.ports.local.as_ref().expect("local").media.clone();
    let videos_dir = setup
        .dir
        .path()
        .join("data/blobs")
        .join(media.bucket())
        .join("videos.d");
    std::fs::create_dir_all(&videos_dir).expect("dir");
    std::fs::write(videos_dir.join(format!("{}.d", plan.video_id)), b"").expect("block");
    let delivery = |receive_count: u32| {
        let job = TranscodeJob {
            video_id: plan.video_id.clone(),
            job: "video-0".into(),
        };
        Event::Message(Message {
            id: "m-video-0".into(),
            body: serde_json::to_string(&job).expect("json"),
            receive_count,
        })
    };
    let videos = Videos::new(setup.ports.store.clone());
    let status = || async { videos.get(&plan.video_id).await.expect("store").expect("video") };

    setup.handler.handle(delivery(1)).await.expect_err("not stored");
    assert_eq!(status().await.status, VideoStatus::Processing, "tried again");
    setup.handler.handle(delivery(100)).await.expect_err("not stored");
    let video = status().await;
    assert_eq!(video.status, VideoStatus::Failed, "the last delivery fails the video");
    let error = video.error.expect("error");
    assert_eq!(error.code, "transcode_failed");
    // What failed, not the store's or ffmpeg's own words.
    assert!(error.detail.contains("video-0"), "{}", error.detail);
    assert!(
        !error.detail.contains("os error") && !error.detail.contains('/'),
        "{}",
        error.detail
    );
}

/// A delivery that stopped between marking its job done and counting it (a crash, a timeout): the
/// count misses that job, yet the last job completes the set, and the stopped delivery, made again, does
/// not send `finalize` twice.
#[tokio::test]
async fn a_job_marked_done_but_never_counted_still_completes_the_set() {
    let setup = setup().await;
    let plan = setup.planned(8, 4).await;
    assert_eq!(plan.jobs, ["video-0", "video-1", "audio"]);
    let jobs = Jobs::new(setup.ports.store.clone());
    assert!(jobs.mark_done(&plan.video_id, "video-0").await.expect("store"));
    setup.run(&plan, "video-1").await;
    assert_eq!(setup.finalize_messages().await, 0, "one job is pending");
    setup.run(&plan, "audio").await;
    assert_eq!(
        jobs.done(&plan.video_id).await.expect("store"),
        2,
        "one job was never counted"
    );
    assert_eq!(setup.finalize_messages().await, 1, "the records say the set is done");
    setup.run(&plan, "video-0").await;
    assert_eq!(setup.finalize_messages().await, 1, "sent once");
}

/// The same, when the stopped delivery is made again before the other jobs are done: the last of them
/// completes the set, although the count stays one short.
#[tokio::test]
async fn a_job_never_counted_and_made_again_early_still_completes_the_set() {
    let setup = setup().await;
    let plan = setup.planned(8, 4).await;
    let jobs = Jobs::new(setup.ports.store.clone());
    assert!(jobs.mark_done(&plan.video_id, "video-0").await.expect("store"));
    setup.run(&plan, "video-0").await;
    assert_eq!(setup.finalize_messages().await, 0, "two jobs are pending");
    setup.run(&plan, "video-1").await;
    assert_eq!(setup.finalize_messages().await, 0, "one job is pending");
    setup.run(&plan, "audio").await;
    assert_eq!(
        jobs.done(&plan.video_id).await.expect("store"),
        2,
        "the count is one short"
    );
    assert_eq!(setup.finalize_messages().await, 1);
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
