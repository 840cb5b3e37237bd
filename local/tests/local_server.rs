//! `streamgate-local` as a process: its queued work survives `kill -9`, storage writes reach `on-upload`,
//! it drains on SIGTERM, and two servers cannot share a data dir.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::adapters::local::{LocalDb, LocalQueue};
use common::config::Config;
use common::ids::VideoId;
use common::pipeline::TranscodeJob;
use common::platform::Ports;
use common::queue::Queue;

struct Server {
    child: Child,
    url: String,
}

fn start(data_dir: &Path, workers: usize) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate-local"))
        .env("STREAMGATE_DATA_DIR", data_dir)
        .env("STREAMGATE_ADDR", "127.0.0.1:0")
        .env("STREAMGATE_WORKERS", workers.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start streamgate-local");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the serving line");
    let url = line.trim().rsplit(' ').next().expect("url").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "unexpected first line {line:?}");
    Server { child, url }
}

fn terminate(mut server: Server) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(status.success());
    server.child.wait().expect("wait")
}

fn depth(db: &LocalDb, queue: &str, runtime: &tokio::runtime::Runtime) -> u64 {
    runtime
        .block_on(LocalQueue::new(db.clone(), queue).depth())
        .expect("depth")
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn queued_work_survives_kill_9() {
    const JOBS: u64 = 10_000;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = LocalDb::open(&dir.path().join("streamgate.db")).expect("db");
    // Jobs for videos that do not exist: each is handled by dropping it, so the queue drains.
    let bodies: Vec<String> = (0..JOBS)
        .map(|i| {
            serde_json::to_string(&TranscodeJob {
                video_id: VideoId::generate(),
                job: format!("video-{i}"),
            })
            .expect("json")
        })
        .collect();
    runtime
        .block_on(LocalQueue::new(db.clone(), "jobs").send_batch(&bodies, Duration::ZERO))
        .expect("enqueue");

    let mut server = start(dir.path(), 1);
    wait_for("some progress", Duration::from_secs(60), || {
        depth(&db, "jobs", &runtime) < JOBS - 50
    });
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reap");
    let left = depth(&db, "jobs", &runtime);
    assert!(
        left > 0 && left < JOBS,
        "the kill must interrupt the work ({left} of {JOBS} left)"
    );

    // The restarted server hands out what was in flight at once (not after the 300 s visibility timeout)
    // and finishes the rest; nothing is dead-lettered.
    let server = start(dir.path(), 2);
    wait_for("the queue to drain", Duration::from_secs(60), || {
        depth(&db, "jobs", &runtime) == 0
    });
    // (The dead-letter queue itself is drained by the dead-letters worker: its counters tell.)
    let out = Command::new("curl")
        .args(["-s", &format!("{}/metrics", server.url)])
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(metrics.contains("streamgate_messages_total{"), "metrics are served");
    assert!(
        !metrics.contains("streamgate_dead_lettered_total{") && !metrics.contains("streamgate_dead_letters_total{"),
        "nothing was dead-lettered: {metrics}"
    );
    assert!(terminate(server).success(), "SIGTERM drains and exits cleanly");
}

#[test]
fn storage_writes_are_dispatched_to_on_upload() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), 2);
    let config = Config::from_lookup(|name| match name {
        "STREAMGATE_DATA_DIR" => Some(dir.path().display().to_string()),
        "STREAMGATE_PUBLIC_URL" => Some(server.url.clone()),
        _ => None,
    })
    .expect("config");
    let ports = runtime.block_on(Ports::from_config(&config)).expect("ports");
    let local = ports.local.expect("local parts");
    let key = format!("sources/{}", VideoId::generate());
    let put = runtime
        .block_on(ports.sources.signed_put_url(&key, Duration::from_secs(60)))
        .expect("sign");

    // The upload goes through the server's signed URL, as a client's would.
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "--data-binary",
            "not a video",
            &put.url,
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "200");
    assert!(runtime.block_on(ports.sources.head(&key)).expect("head").is_some());

    // Its storage event is delivered to on-upload and settled.
    let metrics_url = format!("{}/metrics", server.url);
    wait_for("on-upload to take the event", Duration::from_secs(30), || {
        let out = Command::new("curl").args(["-s", &metrics_url]).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).lines().any(|line| {
            line.starts_with("streamgate_messages_total{")
                && line.contains("worker=\"on-upload\"")
                && line.contains("outcome=\"ok\"")
        })
    });
    assert_eq!(runtime.block_on(local.storage_events.depth()).expect("depth"), 0);
    assert!(terminate(server).success());
}

#[test]
fn a_data_dir_serves_one_server_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start(dir.path(), 1);
    let second = Command::new(env!("CARGO_BIN_EXE_streamgate-local"))
        .env("STREAMGATE_DATA_DIR", dir.path())
        .env("STREAMGATE_ADDR", "127.0.0.1:0")
        .output()
        .expect("run a second server");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another streamgate-local is using"));
    assert!(terminate(first).success());
}

#[test]
fn dead_letters_fail_the_video_they_name() {
    use common::catalog::{Video, VideoStatus, Videos};
    use common::platform::names;
    use common::store::Store;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), 1);
    let db = LocalDb::open(&dir.path().join("streamgate.db")).expect("db");
    let videos = |db: &LocalDb| {
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(common::adapters::local::LocalStore::new(db.clone()));
        Videos::new(store)
    };
    let mut video = Video::new(VideoId::generate(), "0x0000000000000000000000000000000000000001");
    video.status = VideoStatus::Processing;
    runtime.block_on(videos(&db).create(&video)).expect("create");

    // A job the transcode queue gave up on, as its last delivery left it.
    let job = serde_json::to_string(&TranscodeJob {
        video_id: video.id.clone(),
        job: "video-0".into(),
    })
    .expect("job");
    let dead = LocalQueue::new(db.clone(), names::dead_letter_queue(names::JOBS_QUEUE));
    runtime.block_on(dead.send(job)).expect("send");

    wait_for("the dead letter to fail its video", Duration::from_secs(30), || {
        // A fresh store each look: no read of an earlier look is served again.
        let fresh = LocalDb::open(&dir.path().join("streamgate.db")).expect("db");
        let seen = runtime
            .block_on(videos(&fresh).get(&video.id))
            .expect("get")
            .expect("video");
        seen.status == VideoStatus::Failed
    });
    let failed = runtime
        .block_on(videos(&db).get(&video.id))
        .expect("get")
        .expect("video");
    assert_eq!(failed.error.expect("error").code, "transcode_failed");
    assert_eq!(depth(&db, &names::dead_letter_queue(names::JOBS_QUEUE), &runtime), 0);
    assert!(terminate(server).success());
}
