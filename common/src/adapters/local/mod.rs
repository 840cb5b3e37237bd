//! Embedded adapters: objects as files, items and messages in one SQLite database, all under the data dir.

mod blobs;
mod cache;
mod db;
mod multipart;
mod queue;
mod store;

pub use blobs::{BLOB_ROUTE_PREFIX, LocalBlobs, blob_routes};
pub use db::LocalDb;
pub use queue::LocalQueue;
pub use store::LocalStore;
