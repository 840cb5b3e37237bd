//! Builds the adapters a function uses from its configuration (`STREAMGATE_BACKEND`).

use std::sync::Arc;

use crate::adapters::{aws, local};
use crate::blobs::Blobs;
use crate::config::{Backend, Config};
use crate::queue::Queue;
use crate::signing::UrlSigner;
use crate::store::Store;

/// Bucket and queue names of the embedded backend.
pub mod names {
    pub const SOURCES_BUCKET: &str = "sources";
    pub const MEDIA_BUCKET: &str = "media";
    pub const JOBS_QUEUE: &str = "jobs";
    pub const FINALIZE_QUEUE: &str = "finalize";
    /// Where the sources bucket's `ObjectCreated` notifications go, as S3 sends them to SQS.
    pub const STORAGE_EVENTS_QUEUE: &str = "storage-events";

    /// The queue a queue's messages go to after their last delivery.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}-dlq")
    }
}

/// The ports, backed by one backend. Each function takes the fields it needs.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub sources: Arc<dyn Blobs>,
    pub media: Arc<dyn Blobs>,
    pub jobs: Arc<dyn Queue>,
    pub finalize: Arc<dyn Queue>,
    /// Only with the embedded backend: what the local server needs beyond the ports.
    pub local: Option<LocalParts>,
}

/// The embedded backend's own pieces: the database, the buckets (for the routes serving their signed
/// URLs), the storage-event queue and the URL signer.
#[derive(Clone)]
pub struct LocalParts {
    pub db: local::LocalDb,
    pub sources: local::LocalBlobs,
    pub media: local::LocalBlobs,
    pub storage_events: local::LocalQueue,
    pub jobs: local::LocalQueue,
    pub finalize: local::LocalQueue,
    pub signer: UrlSigner,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PortsError(String);

impl Ports {
    pub async fn from_config(config: &Config) -> Result<Self, PortsError> {
        match (config.backend, &config.aws) {
            (Backend::Aws, Some(resources)) => {
                let sdk = aws::load_sdk_config().await;
                Ok(Self {
                    store: Arc::new(aws::DynamoStore::new(&sdk, &resources.table)),
                    sources: Arc::new(aws::S3Blobs::new(
                        &sdk,
                        &resources.sources_bucket,
                        resources.s3_path_style,
                    )),
                    media: Arc::new(aws::S3Blobs::new(
                        &sdk,
                        &resources.media_bucket,
                        resources.s3_path_style,
                    )),
                    jobs: Arc::new(aws::SqsQueue::new(&sdk, &resources.jobs_queue_url)),
                    finalize: Arc::new(aws::SqsQueue::new(&sdk, &resources.finalize_queue_url)),
                    local: None,
                })
            }
            (Backend::Aws, None) => Err(PortsError("the aws backend has no resources configured".into())),
            (Backend::Local, _) => Self::local(config),
        }
    }

    fn local(config: &Config) -> Result<Self, PortsError> {
        let dir = &config.data_dir;
        let fail =
            |what: &str, err: &dyn std::fmt::Display| PortsError(format!("{what} under {}: {err}", dir.display()));
        let db = local::LocalDb::open(&dir.join("streamgate.db")).map_err(|e| fail("cannot open the database", &e))?;
        let signer = UrlSigner::load_or_create(&dir.join("keys/url-signing.key"))
            .map_err(|e| fail("cannot read the URL signing key", &e))?;
        let queue = |name: &str| {
            local::LocalQueue::new(db.clone(), name)
                .with_dead_letter(names::dead_letter_queue(name), config.max_attempts)
        };
        let storage_events = queue(names::STORAGE_EVENTS_QUEUE);
        let jobs = queue(names::JOBS_QUEUE);
        let finalize = queue(names::FINALIZE_QUEUE);
        // Function binaries serve on $PORT; the local server sets `public_url` to what it serves.
        let public_url = config.public_url_for(std::net::SocketAddr::from(([127, 0, 0, 1], config.port)));
        let bucket = |name: &str| {
            local::LocalBlobs::open(dir, name, signer.clone(), public_url.clone())
                .map(|blobs| blobs.with_sync(config.sync_writes))
                .map_err(|e| fail("cannot open the blob store", &e))
        };
        let sources = bucket(names::SOURCES_BUCKET)?.with_events(Arc::new(storage_events.clone()), "sources/");
        let media = bucket(names::MEDIA_BUCKET)?;
        Ok(Self {
            store: Arc::new(local::LocalStore::new(db.clone())),
            sources: Arc::new(sources.clone()),
            media: Arc::new(media.clone()),
            jobs: Arc::new(jobs.clone()),
            finalize: Arc::new(finalize.clone()),
            local: Some(LocalParts {
                db,
                sources,
                media,
                storage_events,
                jobs,
                finalize,
                signer,
            }),
        })
    }
}
