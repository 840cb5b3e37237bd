//! `on-upload` over the embedded adapters with real ffmpeg and ffprobe: sources made with ffmpeg's lavfi
//! are probed through the signed URLs of a blob server on loopback; good ones are planned and their jobs
//! queued, broken ones end `failed` with their code.

use common::catalog::{Source, Video, VideoStatus, Videos};
use common::events::{Event, EventHandler, ObjectCreated};
use common::ids::VideoId;
use common::pipeline::{Jobs, TranscodeJob};
use common::platform::Ports;
use streamgate_testing::{clip, ffmpeg, served_ports, video_with_source};

struct Setup {
    handler: on_upload::Handler,
    ports: Ports,
    dir: tempfile::TempDir,
}

async fn setup(vars: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, ports) = served_ports(dir.path(), vars).await;
    Setup {
        handler: on_upload::Handler::new(&config, &ports),
        ports,
        dir,
    }
}

impl Setup {
    /// Stores `bytes` as a new video's source and hands its storage event to on-upload.
    async fn upload(&self, bytes: Vec<u8>) -> Video {
        let id = video_with_source(&self.ports, VideoStatus::Processing, bytes).await;
        self.deliver(&id).await
    }

    /// Hands the storage event of video `id`'s source to on-upload; the video after it.
    async fn deliver(&self, id: &VideoId) -> Video {
        let event = Event::ObjectCreated(ObjectCreated {
            bucket: "sources".into(),
            key: format!("sources/{id}"),
            size: None,
            etag: None,
        });
        self.handler.handle(event).await.expect("handled");
        Videos::new(self.ports.store.clone())
            .get(id)
            .await
            .expect("get")
            .expect("video")
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
    setup.deliver(&video.id).await;
    assert_eq!(setup.queued().await.len(), 4);
}

#[tokio::test]
async fn a_redelivered_event_records_the_plan_and_never_moves_a_video_back() {
    let setup = setup(&[("STREAMGATE_CHUNK_SECONDS", "4")]).await;
    let bytes = clip(setup.dir.path(), "640x360", 30, 6, &[]);
    let video = setup.upload(bytes).await;
    assert_eq!(video.status, VideoStatus::Processing, "{:?}", video.error);
    let videos = Videos::new(setup.ports.store.clone());
    let set = |status: VideoStatus, planned: bool| {
        let videos = videos.clone();
        let id = video.id.clone();
        async move {
            videos
                .update(&id, |video| {
                    video.status = status;
                    if !planned {
                        (video.duration_seconds, video.width, video.height) = (None, None, None);
                    }
                    true
                })
                .await
                .expect("store")
                .expect("video");
        }
    };

    // The first delivery stopped after planning, before the video learnt of the plan.
    set(VideoStatus::Uploading, false).await;
    let again = setup.deliver(&video.id).await;
    assert_eq!(again.status, VideoStatus::Processing);
    assert_eq!((again.width, again.height), (Some(640), Some(360)));
    assert!(again.duration_seconds.is_some());

    // Once the video is ready, a late copy of the event leaves it so.
    set(VideoStatus::Ready, true).await;
    assert_eq!(setup.deliver(&video.id).await.status, VideoStatus::Ready);
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

    // A good file, but not of the size its upload recorded.
    let id = video_with_source(&setup.ports, VideoStatus::Processing, good.clone()).await;
    let videos = Videos::new(setup.ports.store.clone());
    let recorded = Source {
        filename: None,
        content_type: None,
        size: good.len() as u64 - 1,
        sha256: None,
    };
    videos
        .update(&id, |video| {
            video.source = Some(recorded.clone());
            true
        })
        .await
        .expect("store");
    let video = setup.deliver(&id).await;
    assert_eq!(video.status, VideoStatus::Failed);
    assert_eq!(code(&video), "size_mismatch", "{:?}", video.error);

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

/// Sources whose bytes did not all pass through api-upload's running digest (direct uploads; tus uploads
/// whose digest was lost between servers) get it here, whatever the probe concludes; a digest already
/// recorded is left alone.
#[tokio::test]
async fn sources_without_a_digest_get_one() {
    use sha2::Digest;

    let setup = setup(&[]).await;
    let videos = Videos::new(setup.ports.store.clone());
    let good = clip(setup.dir.path(), "320x240", 25, 4, &[]);
    let digest = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
    let source = |size: usize, sha256: Option<&str>| Source {
        filename: Some("talk.mp4".into()),
        content_type: Some("video/mp4".into()),
        size: size as u64,
        sha256: sha256.map(str::to_owned),
    };
    let with_source = |bytes: Vec<u8>, source: Source| {
        let ports = &setup.ports;
        let videos = videos.clone();
        async move {
            let id = video_with_source(ports, VideoStatus::Processing, bytes).await;
            videos
                .update(&id, |video| {
                    video.source = Some(source.clone());
                    true
                })
                .await
                .expect("store")
                .expect("video");
            id
        }
    };

    // A direct upload: the source is recorded without its digest, which is read here.
    let id = with_source(good.clone(), source(good.len(), None)).await;
    let video = setup.deliver(&id).await;
    assert_eq!(video.status, VideoStatus::Processing, "{:?}", video.error);
    assert_eq!(video.source, Some(source(good.len(), Some(&digest(&good)))));

    // A refused file gets its digest too.
    let words = b"not a video at all\n".repeat(100);
    let id = with_source(words.clone(), source(words.len(), None)).await;
    let video = setup.deliver(&id).await;
    assert_eq!(video.status, VideoStatus::Failed);
    assert_eq!(video.source.and_then(|s| s.sha256), Some(digest(&words)));

    // The object landed before its upload recorded a source (the completion's answer was lost).
    let video = setup.upload(good.clone()).await;
    let source_seen = video.source.expect("a source");
    assert_eq!(
        (source_seen.size, source_seen.sha256),
        (good.len() as u64, Some(digest(&good)))
    );

    // A digest api-upload computed is the file's: not read again, not replaced.
    let known = "0".repeat(64);
    let id = with_source(good.clone(), source(good.len(), Some(&known))).await;
    let video = setup.deliver(&id).await;
    assert_eq!(video.source.and_then(|s| s.sha256), Some(known));
}
