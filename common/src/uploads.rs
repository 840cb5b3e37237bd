//! Uploads in progress and their records in `Store`.
//!
//! An upload fills one multipart upload of the sources bucket at `sources/{videoId}`. Its state is one
//! item (partition `upload#{id}`, sort key `state`) changed only by conditional writes on its `version`:
//! a writer first takes a lease (one write), then puts its bytes into storage, then commits the new
//! offset and releases the lease (a second write). Each part it stored is an item of its own
//! (`part#{number}`), so a record never grows with the file. Whatever a writer stored beyond the last
//! commit is never referenced: the next writer overwrites those part numbers.
//!
//! Open uploads are indexed by expiry (`uploads#open`), so [`Uploads::sweep_expired`] finds the abandoned
//! ones without a scan.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, Blobs, CompletedPart};
use crate::catalog::{VideoError, VideoStatus, Videos};
use crate::ids::VideoId;
use crate::store::{Condition, Item, Query, Store, StoreError};

/// The index partition of open uploads, sorted by expiry.
const OPEN_INDEX: &str = "uploads#open";
/// How long a finished, terminated or expired upload's record is kept, so that clients asking about it
/// learn what became of it (`410 Gone`) rather than that it never existed.
const RECORD_GRACE_DAYS: i64 = 7;
/// How long the expiry sweep holds an upload while it discards its bytes.
const SWEEP_LEASE: Duration = Duration::minutes(5);

/// How an upload's bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    /// Through `api-upload`, by the tus protocol.
    Tus,
    /// Straight to storage, through presigned part URLs.
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Open,
    Complete,
    Terminated,
    Expired,
}

/// A writer's exclusive hold on an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub token: String,
    pub until: DateTime<Utc>,
}

/// Bytes received but not yet in a part, kept as objects of their own until a part fills up: one piece
/// per request that added to it, in order, so that a request below a part stores its own bytes only
/// rather than rewriting those before it (an upload in 64 KiB chunks would otherwise rewrite each 5 MiB
/// part 80 times over).
///
/// A tail of one piece is recorded as `{"key", "size"}`, the form every version reads; one of several
/// as a list of them, which versions that know only one piece fail to read (an error, where reading the
/// first piece alone would lose the others' bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TailRecord", into = "TailRecord")]
pub struct Tail {
    pieces: Vec<TailPiece>,
}

/// One object of a tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailPiece {
    pub key: String,
    pub size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TailRecord {
    One(TailPiece),
    Several(Vec<TailPiece>),
}

impl From<TailRecord> for Tail {
    fn from(record: TailRecord) -> Self {
        match record {
            TailRecord::One(piece) => Self { pieces: vec![piece] },
            TailRecord::Several(pieces) => Self { pieces },
        }
    }
}

impl From<Tail> for TailRecord {
    fn from(mut tail: Tail) -> Self {
        match tail.pieces.len() {
            1 => Self::One(tail.pieces.remove(0)),
            _ => Self::Several(tail.pieces),
        }
    }
}

impl Tail {
    /// A tail of one object.
    pub fn new(key: String, size: u64) -> Self {
        Self {
            pieces: vec![TailPiece { key, size }],
        }
    }

    /// This tail and then the object `key` of `size` bytes.
    pub fn and(&self, key: String, size: u64) -> Self {
        let mut pieces = self.pieces.clone();
        pieces.push(TailPiece { key, size });
        Self { pieces }
    }

    /// Its bytes, all pieces together.
    pub fn size(&self) -> u64 {
        self.pieces.iter().map(|piece| piece.size).sum()
    }

    /// Its objects, in the order of their bytes.
    pub fn pieces(&self) -> &[TailPiece] {
        &self.pieces
    }
}

/// One stored part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    pub id: VideoId,
    /// The account that created it; only it may write, read or end it.
    pub account: String,
    pub kind: UploadKind,
    pub state: UploadState,
    /// The declared size in bytes.
    pub length: u64,
    /// Bytes received and committed (tus).
    pub offset: u64,
    /// The `Upload-Metadata` header as the client sent it (tus).
    pub metadata: Option<String>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    /// Parts fill up to at least this many bytes (the last may be smaller).
    pub part_size: u64,
    /// The storage multipart upload, absent for an empty file.
    pub multipart_id: Option<String>,
    /// Parts committed: numbers `1..=parts`.
    pub parts: u32,
    pub tail: Option<Tail>,
    /// The SHA-256 state over the committed bytes (base64), so the digest of the whole file is known when
    /// the last byte arrives without reading it back.
    pub hash_state: Option<String>,
    /// Instead of `hash_state`: the state is still being computed by the server that received the last
    /// bytes, which holds it under this reference for the next request. A request that reaches another
    /// server, or that one after a restart, goes on without it, and the digest is read back from the
    /// finished object. Neither this nor `hash_state` past offset 0: read back likewise.
    #[serde(default)]
    pub running_digest: Option<String>,
    /// Hex SHA-256 of the whole file, once complete.
    pub sha256: Option<String>,
    pub version: u64,
    pub lease: Option<Lease>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Upload {
    /// The object the upload becomes.
    pub fn key(&self) -> String {
        crate::pipeline::source_key(&self.id)
    }

    /// Where the bytes of tail objects go: `uploads/{id}/`.
    pub fn scratch_prefix(&self) -> String {
        format!("uploads/{}/", self.id)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.state == UploadState::Expired || (self.state == UploadState::Open && self.expires_at <= now)
    }

    /// Whether another writer holds the upload now.
    pub fn is_leased(&self, now: DateTime<Utc>) -> bool {
        self.lease.as_ref().is_some_and(|lease| lease.until > now)
    }
}

/// The part size for a file of `length` bytes: at least `floor`, and large enough that the file fits in
/// S3's 10,000 parts, rounded up to whole mebibytes.
pub fn part_size_for(length: u64, floor: u64) -> u64 {
    const MAX_PARTS: u64 = 10_000;
    let needed = length.div_ceil(MAX_PARTS).next_multiple_of(crate::config::MIB);
    needed.max(floor)
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("another request is writing to this upload")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// Upload records.
#[derive(Clone)]
pub struct Uploads {
    store: Arc<dyn Store>,
}

fn pk(id: &VideoId) -> String {
    format!("upload#{id}")
}

fn part_sk(number: u32) -> String {
    format!("part#{number:05}")
}

impl Uploads {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn item(upload: &Upload) -> Result<Item, StoreError> {
        let mut item = Item::from_record(pk(&upload.id), "state", upload)?
            .expiring_at((upload.expires_at + Duration::days(RECORD_GRACE_DAYS)).timestamp());
        if upload.state == UploadState::Open {
            let sort = format!("{:012}#{}", upload.expires_at.timestamp().max(0), upload.id);
            item = item.indexed(OPEN_INDEX, sort);
        }
        Ok(item)
    }

    pub async fn get(&self, id: &VideoId) -> Result<Option<Upload>, StoreError> {
        match self.store.get(&pk(id), "state").await? {
            Some(item) => item.record().map(Some),
            None => Ok(None),
        }
    }

    /// Records a new upload; fails with `ConditionFailed` if the id is taken.
    pub async fn create(&self, upload: &Upload) -> Result<(), StoreError> {
        self.store.put(Self::item(upload)?, Some(Condition::NotExists)).await
    }

    /// Writes `upload` as the next version of the record read as `read`; `Busy` if it changed since.
    pub async fn save(&self, read: &Upload, mut upload: Upload) -> Result<Upload, UploadError> {
        upload.version = read.version + 1;
        let condition = Condition::Equals("version".into(), serde_json::json!(read.version));
        match self.store.put(Self::item(&upload)?, Some(condition)).await {
            Ok(()) => Ok(upload),
            Err(StoreError::ConditionFailed) => Err(UploadError::Busy),
            Err(err) => Err(err.into()),
        }
    }

    /// Takes the lease on `upload` for `ttl`; `Busy` when another writer holds it or took it first.
    pub async fn lease(&self, upload: &Upload, ttl: Duration) -> Result<Upload, UploadError> {
        let now = Utc::now();
        if upload.is_leased(now) {
            return Err(UploadError::Busy);
        }
        let mut leased = upload.clone();
        leased.lease = Some(Lease {
            token: uuid::Uuid::new_v4().simple().to_string(),
            until: now + ttl,
        });
        self.save(upload, leased).await
    }

    /// Gives the lease back without other changes.
    pub async fn release(&self, leased: &Upload) -> Result<Upload, UploadError> {
        let mut released = leased.clone();
        released.lease = None;
        self.save(leased, released).await
    }

    /// Records a stored part, kept until the upload's record is: `end_of_life` is the latest the upload
    /// may expire (its creation and the maximum age), so the record outlives every write to it.
    pub async fn put_part(&self, id: &VideoId, part: &Part, end_of_life: DateTime<Utc>) -> Result<(), StoreError> {
        let item = Item::from_record(pk(id), part_sk(part.part_number), part)?
            .expiring_at((end_of_life + Duration::days(RECORD_GRACE_DAYS)).timestamp());
        self.store.put(item, None).await
    }

    /// The committed parts `1..=upload.parts`, in order.
    pub async fn parts(&self, upload: &Upload) -> Result<Vec<CompletedPart>, StoreError> {
        let mut parts = Vec::with_capacity(upload.parts as usize);
        let mut query = Query::prefix("part#");
        query.limit = Some(1000);
        loop {
            let page = self.store.query(&pk(&upload.id), query.clone()).await?;
            for item in &page.items {
                let part: Part = item.record()?;
                if part.part_number <= upload.parts {
                    parts.push(CompletedPart {
                        part_number: part.part_number,
                        etag: part.etag,
                    });
                }
            }
            match page.next {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        let expected = 1..=upload.parts;
        if parts.len() != upload.parts as usize || !parts.iter().map(|p| p.part_number).eq(expected) {
            return Err(StoreError::Backend(format!(
                "upload {} records {} parts but {} were found",
                upload.id,
                upload.parts,
                parts.len()
            )));
        }
        Ok(parts)
    }

    /// Removes what an unfinished upload left in storage: its multipart upload and tail objects.
    pub async fn discard_bytes(&self, upload: &Upload, sources: &dyn Blobs) -> Result<(), BlobError> {
        if let Some(multipart) = &upload.multipart_id {
            match sources.abort_multipart(&upload.key(), multipart).await {
                Ok(()) | Err(BlobError::NoSuchUpload(_)) => {}
                Err(err) => return Err(err),
            }
        }
        crate::blobs::delete_under(sources, &upload.scratch_prefix()).await
    }

    /// Ends every open upload that expired before `now`: its bytes are discarded, its record says
    /// `expired`, and its video, still uploading, is marked failed with `upload_expired`. Returns how many
    /// were ended. Uploads another writer holds are left for the next sweep.
    pub async fn sweep_expired(
        &self,
        now: DateTime<Utc>,
        sources: &dyn Blobs,
        videos: &Videos,
    ) -> Result<usize, UploadError> {
        let mut swept = 0;
        loop {
            let query = Query {
                limit: Some(100),
                ..Query::default()
            };
            let page = self.store.query_index(OPEN_INDEX, query).await?;
            let mut expired: Vec<Upload> = Vec::new();
            for item in &page.items {
                let upload: Upload = item.record()?;
                if upload.expires_at > now {
                    break;
                }
                expired.push(upload);
            }
            if expired.is_empty() {
                return Ok(swept);
            }
            let mut progressed = false;
            for upload in expired {
                // Held while its bytes go, so that no writer adds to an upload whose bytes are gone.
                let leased = match self.lease(&upload, SWEEP_LEASE).await {
                    Ok(leased) => leased,
                    Err(UploadError::Busy) => continue,
                    Err(err) => return Err(err),
                };
                self.discard_bytes(&leased, sources).await?;
                let mut ended = leased.clone();
                ended.state = UploadState::Expired;
                ended.tail = None;
                ended.lease = None;
                self.save(&leased, ended).await?;
                videos
                    .update(&upload.id, |video| {
                        if video.status != VideoStatus::Uploading {
                            return false;
                        }
                        video.status = VideoStatus::Failed;
                        video.error = Some(VideoError {
                            code: "upload_expired".into(),
                            detail: "the upload was not finished before it expired".into(),
                        });
                        true
                    })
                    .await?;
                tracing::info!(video_id = %upload.id, "an abandoned upload expired");
                swept += 1;
                progressed = true;
            }
            if !progressed {
                // Everything left that expired is held by a writer.
                return Ok(swept);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MIB;

    #[test]
    fn parts_fit_in_ten_thousand() {
        assert_eq!(part_size_for(0, 5 * MIB), 5 * MIB);
        assert_eq!(part_size_for(1024 * MIB, 5 * MIB), 5 * MIB);
        let large = 100 * 1024 * MIB;
        let size = part_size_for(large, 5 * MIB);
        assert!(large.div_ceil(size) <= 10_000, "{size}");
        assert_eq!(size % MIB, 0);
    }

    #[test]
    fn a_tail_of_one_piece_keeps_the_record_form_of_one_object() {
        let one = Tail::new("uploads/x/tail-3".into(), 10);
        let json = serde_json::to_value(&one).expect("serialize");
        assert_eq!(json, serde_json::json!({"key": "uploads/x/tail-3", "size": 10}));
        assert_eq!(serde_json::from_value::<Tail>(json).expect("read"), one);

        let several = one.and("uploads/x/tail-4".into(), 5);
        assert_eq!(several.size(), 15);
        let json = serde_json::to_value(&several).expect("serialize");
        assert!(json.is_array(), "{json}");
        assert_eq!(serde_json::from_value::<Tail>(json.clone()).expect("read"), several);
        // A version that knows a single object only refuses it rather than reading its first piece.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct SingleObject {
            key: String,
            size: u64,
        }
        assert!(serde_json::from_value::<SingleObject>(json).is_err());
        let keys: Vec<&str> = several.pieces().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["uploads/x/tail-3", "uploads/x/tail-4"]);
    }
}
