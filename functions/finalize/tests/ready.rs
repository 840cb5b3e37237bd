//! `finalize` over the embedded adapters with real ffmpeg: after every job of a plan is encoded, the HLS
//! master and media playlists and the DASH MPD over the same segments are written, and ffmpeg plays both
//! to the end; the video is `ready` with its renditions, a poster and thumbnails.

use std::path::Path;
use std::process::Command;

use common::catalog::{VideoStatus, Videos};
use common::events::EventHandler;
use common::pipeline::{FinalizeJob, Plan};
use common::platform::Ports;
use streamgate_testing::{message, planned_video, planned_video_stated, served_ports, transcode_job};

struct Setup {
    handler: transcode::Handler,
    finalize: finalize::Handler,
    ports: Ports,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, ports) = served_ports(dir.path(), &[("STREAMGATE_X264_PRESET", "ultrafast")]).await;
    Setup {
        handler: transcode::Handler::new(&config, &ports),
        finalize: finalize::Handler::new(&config, &ports),
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
    let job = FinalizeJob {
        video_id: plan.video_id.clone(),
    };
    let event = |n: u32| message(&format!("f{n}"), &job);
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

#[tokio::test]
async fn a_video_gated_while_it_is_finalized_gets_its_encrypted_copy() {
    let setup = setup().await;
    let plan = setup.planned(4, 4).await;
    for job in &plan.jobs {
        setup.run(&plan, job).await;
    }
    let videos = Videos::new(setup.ports.store.clone());
    let job = FinalizeJob {
        video_id: plan.video_id.clone(),
    };
    let prefix = format!("videos/{}/", plan.video_id);
    let master = format!("{prefix}master.m3u8");
    let rule = serde_json::json!({
        "type": "token",
        "chainId": 1,
        "contract": "0xBC4CA0EdA7647A8aB7C2061c2E118A18a936f13D",
        "standard": "erc721"
    });
    let finalizing = setup.finalize.handle(message("f1", &job));
    let gating = async {
        // The manifests are written after finalize has read the record and before it makes the video
        // ready (posters and thumbnails come between): the owner gates the video in between.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while setup.ports.media.head(&master).await.expect("head").is_none() {
            assert!(std::time::Instant::now() < deadline, "finalize wrote no manifest");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        videos
            .update(&plan.video_id, |video| {
                video.set_access(rule.clone());
                true
            })
            .await
            .expect("store")
            .expect("video")
    };
    let (finalized, gated) = tokio::join!(finalizing, gating);
    finalized.expect("finalized");
    if gated.status == VideoStatus::Ready {
        // The edit came after all: api-videos then asks for another finalize, which makes the copy.
        setup
            .finalize
            .handle(message("f2", &job))
            .await
            .expect("finalized again");
    }

    let video = videos.get(&plan.video_id).await.expect("store").expect("video");
    assert_eq!(video.status, VideoStatus::Ready);
    assert!(!video.is_public());
    assert!(video.encrypted_hls, "a gated video has its encrypted copy");
    let sealed = setup
        .ports
        .media
        .get(&format!("{prefix}aes/240p/index.m3u8"))
        .await
        .expect("encrypted playlist");
    let playlist = String::from_utf8_lossy(&sealed);
    assert!(playlist.contains("#EXT-X-KEY:METHOD=AES-128"), "{playlist}");
    let clear = setup
        .ports
        .media
        .get(&format!("{prefix}240p/seg-00000.m4s"))
        .await
        .expect("clear segment");
    let encrypted = setup
        .ports
        .media
        .get(&format!("{prefix}aes/240p/seg-00000.m4s"))
        .await
        .expect("encrypted segment");
    assert_ne!(clear, encrypted);
    assert_eq!(encrypted.len() % 16, 0, "whole AES blocks");
}

#[tokio::test]
async fn a_job_of_a_deleted_video_removes_what_was_left_of_it() {
    let setup = setup().await;
    let plan = setup.planned(4, 4).await;
    for job in &plan.jobs {
        setup.run(&plan, job).await;
    }
    let id = plan.video_id.clone();
    let videos = Videos::new(setup.ports.store.clone());
    videos.delete(&id).await.expect("delete");
    // A run cut short by the delete left a playlist and made the content key again.
    let prefix = format!("videos/{id}/");
    setup
        .ports
        .media
        .put(&format!("{prefix}master.m3u8"), "#EXTM3U\n".into(), None)
        .await
        .expect("put");
    videos.content_key(&id).await.expect("key");

    let job = FinalizeJob { video_id: id.clone() };
    setup.finalize.handle(message("m-late", &job)).await.expect("handled");
    assert!(setup.ports.media.list(&prefix).await.expect("list").is_empty());
    assert_eq!(videos.existing_content_key(&id).await.expect("store"), None);
}

#[tokio::test]
async fn a_chunk_past_the_last_frame_adds_nothing_to_the_stream() {
    let setup = setup().await;
    // The container lasts a little longer than the picture (its sound does): the last chunk of four
    // seconds starts at the picture's end.
    let plan = planned_video_stated(&setup.ports, setup.dir.path(), 8, 8.05, 4).await;
    assert_eq!(plan.jobs, ["video-0", "video-1", "video-2", "audio"]);
    let prefix = format!("videos/{}/", plan.video_id);
    setup.run(&plan, "video-0").await;
    let init = setup
        .ports
        .media
        .get(&format!("{prefix}360p/init.mp4"))
        .await
        .expect("init");
    for job in &plan.jobs[1..] {
        setup.run(&plan, job).await;
    }
    let after = setup
        .ports
        .media
        .get(&format!("{prefix}360p/init.mp4"))
        .await
        .expect("init");
    assert!(after == init, "the frameless chunk replaced the init segment");
    let job = FinalizeJob {
        video_id: plan.video_id.clone(),
    };
    setup
        .finalize
        .handle(message("m-finalize", &job))
        .await
        .expect("finalized");
    let index = setup
        .ports
        .media
        .get(&format!("{prefix}360p/index.m3u8"))
        .await
        .expect("index");
    let index = String::from_utf8_lossy(&index);
    let durations: Vec<f64> = index
        .lines()
        .filter_map(|line| line.strip_prefix("#EXTINF:"))
        .filter_map(|rest| rest.trim_end_matches(',').parse().ok())
        .collect();
    assert_eq!(durations.len(), 2, "{index}");
    assert!(durations.iter().all(|&d| d > 0.0), "{index}");

    let dir = setup.dir.path().join("played");
    download(&setup.ports, &prefix, &dir).await;
    assert_eq!(frames_played(&dir.join("360p/index.m3u8")), 8 * 30);
}
