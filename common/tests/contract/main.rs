//! The adapter contract: one suite per port, run against the embedded adapters and against the AWS
//! adapters on an emulator (moto server) that this test starts on loopback.
//!
//! The AWS half needs `moto_server`: `tests/setup` installs it into `.venv`; `MOTO_SERVER` may name
//! another. Without it the AWS tests fail, saying so.

mod blobs;
mod catalog;
mod moto;
mod queue;
mod store;

use std::sync::Arc;
use std::time::Duration;

use common::adapters::{aws, local};
use common::blobs::Blobs;
use common::queue::Queue;
use common::signing::UrlSigner;
use common::store::Store;

/// The embedded adapters on a fresh data dir, with the blob routes served on a loopback port.
struct Local {
    _dir: tempfile::TempDir,
    db: local::LocalDb,
    blobs: local::LocalBlobs,
}

async fn local() -> Local {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = local::LocalDb::open(&dir.path().join("streamgate.db")).expect("db");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let url = url::Url::parse(&format!("http://{addr}/")).expect("url");
    let blobs = local::LocalBlobs::open(dir.path(), "contract", UrlSigner::new([9; 32]), url).expect("blobs");
    let app = local::blob_routes([blobs.clone()]);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Local { _dir: dir, db, blobs }
}

#[tokio::test]
async fn local_blobs_meet_the_contract() {
    let local = local().await;
    blobs::contract(&local.blobs, blobs::Fidelity::Exact).await;
}

#[tokio::test]
async fn local_store_meets_the_contract() {
    let local = local().await;
    store::contract(Arc::new(local::LocalStore::new(local.db.clone()))).await;
}

/// The same, with reads cached in memory as in the local server, which owns its database.
#[tokio::test]
async fn local_store_with_cached_reads_meets_the_contract() {
    let local = local().await;
    local.db.cache_reads();
    store::contract(Arc::new(local::LocalStore::new(local.db.clone()))).await;
}

/// Reads racing writes never leave an old value cached: once a write returns, every read sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_reads_never_outlive_a_write() {
    use common::store::{Item, Query, Store};
    let local = local().await;
    local.db.cache_reads();
    let store = Arc::new(local::LocalStore::new(local.db.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.get("race", "item").await.expect("get");
                    store.query("race", Query::default()).await.expect("query");
                    // Cache hits never wait: give way, so a failing test can end.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for value in 0..300 {
        store
            .put(Item::new("race", "item").with("v", value), None)
            .await
            .expect("put");
        let item = store.get("race", "item").await.expect("get").expect("written");
        assert_eq!(
            item.attrs["v"], value,
            "a read after the write returned saw an older value"
        );
        let page = store.query("race", Query::default()).await.expect("query");
        assert_eq!(
            page.items[0].attrs["v"], value,
            "a page after the write returned was older"
        );
        // The shared reads answer from memory once a read has kept the item: the same values.
        let kept = store
            .get_kept("race", "item")
            .expect("kept after a read")
            .expect("written");
        assert_eq!(kept.attrs["v"], value, "a kept item after the write returned was older");
        let kept = store.query_kept("race", &Query::default()).expect("kept after a query");
        assert_eq!(
            kept.items[0].attrs["v"], value,
            "a kept page after the write returned was older"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader");
    }
}

const LOCAL_SCALE: catalog::Scale = catalog::Scale {
    videos: 200,
    rounds: 15,
};

#[tokio::test]
async fn local_catalog_meets_the_contract() {
    let (shared, empty) = (local().await, local().await);
    catalog::contract(
        Arc::new(local::LocalStore::new(shared.db.clone())),
        Arc::new(local::LocalStore::new(empty.db.clone())),
        LOCAL_SCALE,
    )
    .await;
}

#[tokio::test]
async fn local_catalog_with_cached_reads_meets_the_contract() {
    let (shared, empty) = (local().await, local().await);
    shared.db.cache_reads();
    empty.db.cache_reads();
    catalog::contract(
        Arc::new(local::LocalStore::new(shared.db.clone())),
        Arc::new(local::LocalStore::new(empty.db.clone())),
        LOCAL_SCALE,
    )
    .await;
}

#[tokio::test]
async fn dynamodb_catalog_meets_the_contract() {
    let moto = moto::Moto::shared().await;
    let (shared, empty) = (moto.table().await, moto.table().await);
    let scale = catalog::Scale { videos: 40, rounds: 4 };
    catalog::contract(
        Arc::new(aws::DynamoStore::new(&moto.sdk, shared)),
        Arc::new(aws::DynamoStore::new(&moto.sdk, empty)),
        scale,
    )
    .await;
}

#[tokio::test]
async fn local_queue_meets_the_contract() {
    let local = local().await;
    let queue = local::LocalQueue::new(local.db.clone(), "contract").with_dead_letter("contract-dlq", 2);
    let dead = local::LocalQueue::new(local.db.clone(), "contract-dlq");
    queue::contract(&queue, &dead).await;
}

#[tokio::test]
async fn s3_blobs_meet_the_contract() {
    let moto = moto::Moto::shared().await;
    let bucket = moto.bucket().await;
    blobs::contract(&aws::S3Blobs::new(&moto.sdk, bucket, true), blobs::Fidelity::Emulated).await;
}

#[tokio::test]
async fn dynamodb_store_meets_the_contract() {
    let moto = moto::Moto::shared().await;
    let table = moto.table().await;
    store::contract(Arc::new(aws::DynamoStore::new(&moto.sdk, table))).await;
}

#[tokio::test]
async fn sqs_queue_meets_the_contract() {
    let moto = moto::Moto::shared().await;
    let (url, dlq_url) = moto.queue_with_dead_letter(2).await;
    queue::contract(
        &aws::SqsQueue::new(&moto.sdk, url),
        &aws::SqsQueue::new(&moto.sdk, dlq_url),
    )
    .await;
}

/// Polls `receive` until it yields at least one message or `within` passes.
async fn receive_within(queue: &dyn Queue, visibility: Duration, within: Duration) -> Vec<common::queue::Received> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = queue
            .receive(10, visibility, Duration::from_secs(1))
            .await
            .expect("receive");
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            return got;
        }
    }
}

fn _assert_object_safe(_: &dyn Blobs, _: &dyn Store, _: &dyn Queue) {}
