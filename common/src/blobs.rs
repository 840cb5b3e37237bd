//! The `Blobs` port: one bucket of objects (sources or media), with signed URLs and multipart uploads.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An object's bytes as they are read.
pub type ByteChunks = futures::stream::BoxStream<'static, Result<Bytes, BlobError>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no object at {0}")]
    NotFound(String),
    #[error("invalid object key {0:?}: {1}")]
    InvalidKey(String, &'static str),
    #[error("unknown or finished multipart upload {0}")]
    NoSuchUpload(String),
    #[error("multipart upload rejected: {0}")]
    InvalidParts(String),
    #[error("object storage failed: {0}")]
    Backend(String),
}

impl BlobError {
    pub fn backend(err: impl std::fmt::Display) -> Self {
        Self::Backend(err.to_string())
    }
}

/// What storage knows of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// A URL that grants one operation on one object until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A part the client uploaded, as it reports it back for completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

/// One bucket of objects. Keys are `/`-separated paths without empty, `.` or `..` segments.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// The bucket's name, as storage events report it.
    fn bucket(&self) -> &str;
    async fn put(&self, key: &str, body: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, BlobError>;
    /// Stores a local file without reading it into memory.
    async fn put_file(&self, key: &str, path: &Path, content_type: Option<&str>) -> Result<ObjectMeta, BlobError>;
    async fn get(&self, key: &str) -> Result<Bytes, BlobError>;
    /// Reads an object as a stream of chunks, without holding it whole in memory.
    async fn get_stream(&self, key: &str) -> Result<ByteChunks, BlobError>;
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BlobError>;
    /// Deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BlobError>;
    async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError>;
    async fn signed_put_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError>;

    /// Starts a multipart upload and returns its id.
    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, BlobError>;
    /// Uploads one part (numbered from 1) and returns its ETag.
    async fn upload_part(&self, key: &str, upload_id: &str, part_number: u32, body: Bytes)
    -> Result<String, BlobError>;
    /// Uploads one part of exactly `len` bytes from a stream, and returns its ETag. A stream that fails or
    /// ends early stores nothing. This default collects the part in memory and calls
    /// [`Blobs::upload_part`]; adapters that can write as the bytes arrive do so.
    async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        len: u64,
        mut body: ByteChunks,
    ) -> Result<String, BlobError> {
        use futures::StreamExt;
        let mut part = bytes::BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
        while let Some(chunk) = body.next().await {
            part.extend_from_slice(&chunk?);
            if part.len() as u64 > len {
                break;
            }
        }
        if part.len() as u64 != len {
            return Err(BlobError::InvalidParts(format!(
                "part {part_number} was to hold {len} bytes, not {}",
                part.len()
            )));
        }
        self.upload_part(key, upload_id, part_number, part.freeze()).await
    }
    async fn signed_part_url(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        ttl: Duration,
    ) -> Result<SignedUrl, BlobError>;
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), BlobError>;
}

/// Deletes every object whose key starts with `prefix`, a few at a time. Deleting none succeeds.
pub async fn delete_under(blobs: &dyn Blobs, prefix: &str) -> Result<(), BlobError> {
    use futures::{StreamExt, TryStreamExt};
    /// Deletes in flight at once.
    const IN_FLIGHT: usize = 16;
    let objects = blobs.list(prefix).await?;
    futures::stream::iter(objects)
        .map(|object| async move { blobs.delete(&object.key).await })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Checks an object key: 1 to 1024 bytes, `/`-separated, no empty, `.` or `..` segment, no control
/// characters or backslashes. Both adapters apply it so that a key valid here is valid everywhere.
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    let invalid = |why| Err(BlobError::InvalidKey(key.chars().take(80).collect(), why));
    if key.is_empty() || key.len() > 1024 {
        return invalid("length must be 1 to 1024 bytes");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return invalid("control characters and backslashes are not allowed");
    }
    if key
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return invalid("empty, `.` and `..` segments are not allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_their_bucket() {
        for bad in ["", "/abs", "a//b", "a/../b", "..", "a/.", "a\\b", "a\0b", "trailing/"] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["sources/01J9", "media/v/720p/seg-00001.m4s", "a.b/c..d"] {
            assert!(validate_key(good).is_ok(), "{good:?} refused");
        }
    }
}
