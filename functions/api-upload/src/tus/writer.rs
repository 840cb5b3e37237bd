//! The write path of a tus PATCH: a chunk of known length is planned into whole parts, each written to
//! storage as its bytes arrive by a task of its own while the upload's running SHA-256 is computed on a
//! thread of its own (and, where the process lives on after answering, finishes behind the answer: see
//! `digest`); other chunks are gathered in memory and what does not fill a part becomes the tail.
//! Everything runs under the upload's lease and is committed in one conditional write.

use axum::body::Body;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::Utc;
use common::blobs::Blobs;
use common::problem::ApiError;
use common::uploads::{Part, Tail, Upload, UploadState};
use futures::{FutureExt, StreamExt};
use sha2::Digest;

use super::digest::{State, save_hash};
use super::{
    CHECKSUM_ALGORITHMS, LEASE_TTL, UPLOAD_CHECKSUM, beyond_length, checksum_mismatch, chunk_too_large, end_of_life,
    expires_at,
};
use crate::{AppState, blob_error, store_error, upload_error};

/// `Upload-Checksum: <algorithm> <base64 digest>`.
pub(super) enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

#[derive(Clone)]
enum ChunkDigest {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Checksum {
    pub(super) fn parse(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get(&UPLOAD_CHECKSUM) else {
            return Ok(None);
        };
        let invalid = || ApiError::bad_request("invalid_header", "Upload-Checksum is `<algorithm> <base64 digest>`");
        let text = value.to_str().map_err(|_| invalid())?;
        let (algorithm, digest) = text.trim().split_once(' ').ok_or_else(invalid)?;
        let digest = STANDARD.decode(digest.trim()).map_err(|_| invalid())?;
        let (checksum, size) = match algorithm {
            "sha1" => (Self::Sha1(digest.clone()), 20),
            "sha256" => (Self::Sha256(digest.clone()), 32),
            other => {
                return Err(ApiError::bad_request(
                    "checksum_algorithm_unsupported",
                    format!("{other:?} is not one of {CHECKSUM_ALGORITHMS}"),
                ));
            }
        };
        if digest.len() != size {
            return Err(invalid());
        }
        Ok(Some(checksum))
    }

    fn digest(&self) -> ChunkDigest {
        match self {
            Self::Sha1(_) => ChunkDigest::Sha1(sha1::Sha1::new()),
            Self::Sha256(_) => ChunkDigest::Sha256(sha2::Sha256::new()),
        }
    }

    fn matches(&self, digest: ChunkDigest) -> bool {
        match (self, digest) {
            (Self::Sha1(expected), ChunkDigest::Sha1(d)) => d.finalize().as_slice() == expected.as_slice(),
            (Self::Sha256(expected), ChunkDigest::Sha256(d)) => d.finalize().as_slice() == expected.as_slice(),
            _ => false,
        }
    }
}

impl ChunkDigest {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(d) => d.update(bytes),
            Self::Sha256(d) => d.update(bytes),
        }
    }
}

/// The sizes of the parts that a request of `declared` bytes fills, after `tail` bytes already waiting,
/// when it fills at least one: every part is at least `part_size`, the last one takes the remainder. `None`
/// when the bytes only make a longer tail (or there are none).
fn plan_parts(tail: u64, declared: u64, is_last: bool, part_size: u64) -> Option<Vec<u64>> {
    let total = tail + declared;
    if total == 0 || (!is_last && total < part_size) {
        return None;
    }
    let count = (total / part_size).max(1);
    let mut sizes = vec![part_size; usize::try_from(count).ok()?];
    if let Some(last) = sizes.last_mut() {
        *last = total - part_size * (count - 1);
    }
    Some(sizes)
}

/// Takes the lease, writes the chunk and commits it, in a task of its own so that it finishes even when
/// the client goes away.
pub(super) async fn receive(
    state: &AppState,
    upload: &Upload,
    offset: u64,
    body: Body,
    declared: Option<u64>,
    checksum: Option<Checksum>,
) -> Result<Upload, ApiError> {
    let leased = state.uploads.lease(upload, LEASE_TTL).await.map_err(upload_error)?;
    let state = state.clone();
    let task = tokio::spawn(async move {
        let start_digest = match state.digests.take(&leased) {
            Ok(digest) => digest,
            Err(err) => {
                release(&state, &leased, None).await;
                return Err(err);
            }
        };
        let mut writer = Writer {
            state: &state,
            previous_tail: leased.tail.clone(),
            saved: leased.clone(),
            upload: leased,
            start_digest,
            kept: None,
            asked_completion: false,
        };
        let tail = writer.upload.tail.as_ref().map_or(0, Tail::size);
        let plan = declared.and_then(|declared| {
            let is_last = offset + declared == writer.upload.length;
            plan_parts(tail, declared, is_last, writer.upload.part_size)
        });
        let result = match plan {
            Some(sizes) => writer.write_parts(offset, body, sizes, checksum).await,
            None => {
                // A declared request that fills no part adds a piece to the tail; one of unknown length
                // may fill parts, and starts from the tail's bytes.
                let pieces = writer.upload.tail.as_ref().map_or(0, |t| t.pieces().len());
                let append = declared.filter(|_| pieces < MAX_TAIL_PIECES);
                writer.write_buffered(offset, body, checksum, append).await
            }
        };
        let failed = match result {
            Ok(()) => return writer.commit().await,
            Err(err) => err,
        };
        match writer.landed_before().await {
            Ok(true) => writer.commit().await,
            landed => {
                if let Err(err) = landed {
                    tracing::warn!(video_id = %writer.saved.id, error = %err, "could not look for an upload's landed source");
                }
                release(&state, &writer.saved, writer.start_digest).await;
                Err(failed)
            }
        }
    });
    task.await.map_err(|e| ApiError::internal(&e))?
}

/// Gives the lease back after a request that failed; the upload's running digest, taken from memory as
/// the request started, is held again for the next.
async fn release(state: &AppState, leased: &Upload, start_digest: Option<State>) {
    match state.uploads.release(leased).await {
        Ok(released) => {
            if let (Some(reference), Some(digest)) = (released.running_digest, start_digest) {
                state.digests.put(&released.id, reference, digest);
            }
        }
        Err(err) => {
            tracing::warn!(video_id = %leased.id, error = %err, "could not release an upload's lease");
        }
    }
}

/// A tail has at most this many pieces: the request that would add one more rewrites them as one
/// instead. This bounds the record's size and the reads that turn a tail into a part, while an upload in
/// small chunks writes most bytes once.
const MAX_TAIL_PIECES: usize = 16;

/// How many tail pieces are read at once when a part is made of them.
const TAIL_READS: usize = 4;

/// Pieces are handed between tasks in batches of about this many bytes, not frame by frame; small enough
/// that the hashing and writing threads finish soon after a body's last byte (512 KiB left them a
/// longer tail: 1 GiB in 5 MiB PATCHes went 2-3 % slower).
const BATCH_BYTES: usize = 128 * 1024;

/// Pieces gathered for one hand-over.
#[derive(Default)]
struct Batch {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Batch {
    /// Adds a piece; the batch when it is full.
    fn add(&mut self, piece: Bytes) -> Option<Vec<Bytes>> {
        self.len += piece.len();
        self.pieces.push(piece);
        (self.len >= BATCH_BYTES).then(|| self.take())
    }

    fn take(&mut self) -> Vec<Bytes> {
        self.len = 0;
        std::mem::take(&mut self.pieces)
    }
}

/// A part being written as its bytes arrive, by a task of its own, so that storing one piece overlaps
/// with receiving and hashing the next.
struct PartSink {
    pieces: tokio::sync::mpsc::Sender<Result<Vec<Bytes>, common::blobs::BlobError>>,
    batch: Batch,
    task: tokio::task::JoinHandle<Result<String, common::blobs::BlobError>>,
}

impl PartSink {
    fn open(sources: std::sync::Arc<dyn Blobs>, upload: &Upload, number: u32, len: u64) -> Result<Self, ApiError> {
        let multipart = upload
            .multipart_id
            .clone()
            .ok_or_else(|| ApiError::internal(&"a non-empty upload without a multipart upload"))?;
        let key = upload.key();
        let (pieces, received) = tokio::sync::mpsc::channel::<Result<Vec<Bytes>, common::blobs::BlobError>>(8);
        let batches = futures::stream::unfold(received, |mut received| async move {
            received.recv().await.map(|batch| (batch, received))
        });
        let stream = batches.flat_map(|batch| {
            let pieces: Vec<Result<Bytes, common::blobs::BlobError>> = match batch {
                Ok(pieces) => pieces.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            };
            futures::stream::iter(pieces)
        });
        let task = tokio::spawn(async move {
            sources
                .upload_part_stream(&key, &multipart, number, len, Box::pin(stream))
                .await
        });
        Ok(Self {
            pieces,
            batch: Batch::default(),
            task,
        })
    }

    /// Hands on a piece; false when the writing task has already stopped.
    async fn send(&mut self, piece: Bytes) -> bool {
        match self.batch.add(piece) {
            Some(batch) => self.pieces.send(Ok(batch)).await.is_ok(),
            None => true,
        }
    }

    /// Waits for the part to be stored; its ETag.
    async fn finish(mut self) -> Result<String, ApiError> {
        let rest = self.batch.take();
        if !rest.is_empty() {
            // A send that fails means the task stopped; its own error follows.
            let _ = self.pieces.send(Ok(rest)).await;
        }
        drop(self.pieces);
        self.task.await.map_err(|e| ApiError::internal(&e))?.map_err(blob_error)
    }

    /// Stops writing: the part is not stored.
    async fn abandon(self) {
        let stop = common::blobs::BlobError::Backend("the request ended before the part was whole".into());
        let _ = self.pieces.send(Err(stop)).await;
        drop(self.pieces);
        let _ = self.task.await;
    }
}

/// What the hashing thread is given.
enum ToHash {
    Pieces(Vec<Bytes>),
    /// Keep the running state at this point.
    Mark,
}

/// A request's hashing: the upload's running SHA-256 (and the chunk's checksum digest) computed on a
/// thread of its own, so that hashing one piece overlaps with receiving and storing the next.
struct Hashing {
    pieces: tokio::sync::mpsc::Sender<ToHash>,
    batch: Batch,
    task: tokio::task::JoinHandle<Hashed>,
}

/// Where a request's hashing ended.
#[derive(Clone)]
struct Hashed {
    /// The running state at the request's start; `None` when it was lost, and so are the others.
    start: Option<sha2::Sha256>,
    /// The running state at each mark, in order.
    marks: Vec<sha2::Sha256>,
    /// The running state after all the request's bytes.
    end: Option<sha2::Sha256>,
    /// The chunk's checksum digest.
    chunk: Option<ChunkDigest>,
}

/// Which running state of a request the upload keeps.
#[derive(Clone, Copy)]
enum Keep {
    /// The one at the `n`th mark (whole parts); 0 is the request's start.
    Mark(usize),
    /// The one after all the request's bytes.
    All,
}

impl Hashed {
    fn kept(&self, keep: Keep) -> Option<sha2::Sha256> {
        match keep {
            Keep::Mark(0) => self.start.clone(),
            Keep::Mark(n) => self.marks.get(n - 1).cloned(),
            Keep::All => self.end.clone(),
        }
    }
}

impl Hashing {
    /// Starts hashing after `start`, the running state the upload's committed bytes end in (which the
    /// thread waits for, if the request before is still computing it); `None` when it is lost.
    fn start(start: Option<State>, chunk: Option<ChunkDigest>) -> Self {
        let (pieces, mut received) = tokio::sync::mpsc::channel(8);
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let start = start.and_then(|state| runtime.block_on(state));
            let mut hashed = Hashed {
                start: start.clone(),
                marks: Vec::new(),
                end: start,
                chunk,
            };
            while let Some(input) = received.blocking_recv() {
                match input {
                    ToHash::Pieces(pieces) => {
                        for piece in pieces {
                            if let Some(hasher) = &mut hashed.end {
                                hasher.update(&piece);
                            }
                            if let Some(chunk) = &mut hashed.chunk {
                                chunk.update(&piece);
                            }
                        }
                    }
                    ToHash::Mark => {
                        if let Some(hasher) = &hashed.end {
                            hashed.marks.push(hasher.clone());
                        }
                    }
                }
            }
            hashed
        });
        Self {
            pieces,
            batch: Batch::default(),
            task,
        }
    }

    async fn hand_over(&self, input: ToHash) -> Result<(), ApiError> {
        self.pieces
            .send(input)
            .await
            .map_err(|_| ApiError::internal(&"the hashing thread stopped"))
    }

    async fn add(&mut self, piece: Bytes) -> Result<(), ApiError> {
        match self.batch.add(piece) {
            Some(batch) => self.hand_over(ToHash::Pieces(batch)).await,
            None => Ok(()),
        }
    }

    /// Keeps the running state after the pieces added so far.
    async fn mark(&mut self) -> Result<(), ApiError> {
        let rest = self.batch.take();
        self.hand_over(ToHash::Pieces(rest)).await?;
        self.hand_over(ToHash::Mark).await
    }

    /// Hands on the last pieces; the thread ends once it has hashed them.
    async fn close(mut self) -> Result<tokio::task::JoinHandle<Hashed>, ApiError> {
        let rest = self.batch.take();
        self.hand_over(ToHash::Pieces(rest)).await?;
        drop(self.pieces);
        Ok(self.task)
    }
}

/// The running state an upload keeps after a request.
enum Kept {
    /// Known now, and saved in the record; `None` when it is lost.
    Known(Option<sha2::Sha256>),
    /// Known when the request's hashing ends, behind the answer: held in memory, named in the record.
    Behind(State),
}

impl Kept {
    /// The SHA-256 of the whole file, when this is its state.
    fn digest(&self) -> Option<String> {
        match self {
            Self::Known(Some(hasher)) => Some(hex::encode(hasher.clone().finalize())),
            _ => None,
        }
    }
}

/// One request's writing to a leased upload.
struct Writer<'a> {
    state: &'a AppState,
    /// The record as last written; its lease is ours. A request that fails gives the lease back on it,
    /// so that none of its changes is written.
    saved: Upload,
    /// The record the request writes when it commits: `saved` with the request's changes.
    upload: Upload,
    /// The tail the request started from, removed once the commit no longer refers to it.
    previous_tail: Option<Tail>,
    /// The running SHA-256 of the bytes committed before the request; `None` when it is lost.
    start_digest: Option<State>,
    /// The running state the upload keeps, once the request changed it.
    kept: Option<Kept>,
    /// Whether the request asked storage to complete the upload: `upload.sha256` is then the file's.
    asked_completion: bool,
}

impl Writer<'_> {
    fn sources(&self) -> &dyn Blobs {
        self.state.sources.as_ref()
    }

    /// Checks one more piece of the body against the limits.
    fn admit(&self, offset: u64, received: u64) -> Result<(), ApiError> {
        if received > self.state.limits.max_chunk {
            return Err(chunk_too_large(self.state));
        }
        if offset + received > self.upload.length {
            return Err(beyond_length(&self.upload));
        }
        Ok(())
    }

    /// Writes a body of known length that fills the parts `sizes`, each as its bytes arrive (after the
    /// tail's, for the first). A body cut short keeps the parts it filled and drops the rest.
    async fn write_parts(
        &mut self,
        offset: u64,
        body: Body,
        sizes: Vec<u64>,
        checksum: Option<Checksum>,
    ) -> Result<(), ApiError> {
        let start = self.upload.clone();
        let mut hashing = Hashing::start(self.start_digest.clone(), checksum.as_ref().map(Checksum::digest));
        let mut part = 0usize;
        let mut filled = 0u64;
        let mut sink = Some(PartSink::open(
            self.state.sources.clone(),
            &start,
            start.parts + 1,
            sizes[0],
        )?);
        if let Some(tail) = &start.tail {
            let mut pieces = self.tail_pieces(tail);
            while let Some(bytes) = pieces.next().await {
                let bytes = bytes?;
                filled += bytes.len() as u64;
                let mut current = sink_of(&mut sink);
                if !current.send(bytes).await {
                    return Err(self.stopped(current).await);
                }
                sink = Some(current);
            }
        }
        let mut received = 0u64;
        let mut interrupted = false;
        let mut stream = body.into_data_stream();
        'body: while let Some(frame) = next_frame(&mut stream).await {
            let mut bytes = match frame {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::info!(video_id = %start.id, received, error = %err, "the client stopped mid-chunk");
                    interrupted = true;
                    break;
                }
            };
            received += bytes.len() as u64;
            // Kept while a slow part streams: were it lost, a writer taking over could store its own
            // bytes as the part this one is still writing, and be overwritten by them.
            let admitted = match self.admit(offset, received) {
                Ok(()) => self.renew_lease().await,
                Err(err) => Err(err),
            };
            if let Err(err) = admitted {
                if let Some(sink) = sink.take() {
                    sink.abandon().await;
                }
                return Err(err);
            }
            while !bytes.is_empty() {
                let Some(current) = &mut sink else {
                    // More bytes than the declared length: hyper stops such bodies; refuse if one gets here.
                    interrupted = true;
                    break 'body;
                };
                let room = sizes[part] - filled;
                let piece = bytes.split_to(bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX)));
                hashing.add(piece.clone()).await?;
                filled += piece.len() as u64;
                if !current.send(piece).await {
                    return Err(self.stopped(sink_of(&mut sink)).await);
                }
                if filled == sizes[part] {
                    hashing.mark().await?;
                    let etag = sink_of(&mut sink).finish().await?;
                    let number = start.parts + 1 + part as u32;
                    self.record_part(number, etag, sizes[part]).await?;
                    part += 1;
                    filled = 0;
                    if let Some(&size) = sizes.get(part) {
                        sink = Some(PartSink::open(self.state.sources.clone(), &start, number + 1, size)?);
                    }
                }
            }
        }
        metrics::counter!("streamgate_upload_bytes_total").increment(received);
        let whole = !interrupted && part == sizes.len();
        if let Some(sink) = sink.take() {
            sink.abandon().await;
        }
        // The parts filled are kept; bytes after the last of them are dropped.
        let tail = start.tail.as_ref().map_or(0, Tail::size);
        let end = start.offset - tail + sizes[..part].iter().sum::<u64>();
        let completes = part > 0 && end == start.length;
        let (kept, chunk) = self
            .settle(hashing, Keep::Mark(part), checksum.is_some() || completes)
            .await?;
        check_chunk(checksum, chunk, whole)?;
        if part == 0 {
            return Ok(());
        }
        let next = &mut self.upload;
        next.offset = end;
        next.parts = start.parts + part as u32;
        next.tail = None;
        if completes {
            next.sha256 = kept.digest();
            self.kept = Some(kept);
            self.finish().await?;
        } else {
            next.expires_at = expires_at(self.state, next.created_at);
            self.kept = Some(kept);
        }
        Ok(())
    }

    /// What the upload keeps of a request's hashing, and the chunk's checksum digest when the request
    /// waited for it: it waits when it must (a checksum to check, the file's last bytes, or no life
    /// after the answer), else the hashing finishes behind the answer.
    async fn settle(&self, hashing: Hashing, keep: Keep, wait: bool) -> Result<(Kept, Option<ChunkDigest>), ApiError> {
        let task = hashing.close().await?;
        if self.start_digest.is_none() && !wait {
            // Nothing to wait for: the digest was lost before this request.
            return Ok((Kept::Known(None), None));
        }
        if wait || !self.state.digests.behind() {
            let hashed = task.await.map_err(|e| ApiError::internal(&e))?;
            return Ok((Kept::Known(hashed.kept(keep)), hashed.chunk));
        }
        let state = async move { task.await.ok().and_then(|hashed| hashed.kept(keep)) };
        Ok((Kept::Behind(state.boxed().shared()), None))
    }

    /// The error of a part whose writing task stopped early.
    async fn stopped(&self, sink: PartSink) -> ApiError {
        match sink.finish().await {
            Err(err) => err,
            Ok(_) => ApiError::internal(&"a part was stored before all its bytes were sent"),
        }
    }

    /// Reads the pieces of `tail`, in order.
    fn tail_pieces<'t>(&'t self, tail: &'t Tail) -> impl futures::Stream<Item = Result<Bytes, ApiError>> + Unpin + 't {
        let sources = self.sources();
        futures::stream::iter(tail.pieces())
            .map(move |piece| async move { sources.get(&piece.key).await.map_err(blob_error) })
            .buffered(TAIL_READS)
    }

    /// Writes a request that fills no part on its own, or one of unknown length. With `append` (the
    /// request's declared length), its bytes become one more piece of the tail. Without, the tail's bytes
    /// and the request's are gathered in memory: the parts they fill are stored as they fill, and what is
    /// left after them becomes a tail of one piece.
    async fn write_buffered(
        &mut self,
        offset: u64,
        body: Body,
        checksum: Option<Checksum>,
        append: Option<u64>,
    ) -> Result<(), ApiError> {
        let start = self.upload.clone();
        let mut hashing = Hashing::start(self.start_digest.clone(), checksum.as_ref().map(Checksum::digest));
        let tail = start.tail.as_ref().map_or(0, Tail::size);
        let capacity = match append {
            Some(declared) => declared.min(start.part_size),
            None => start.part_size.min(start.length - offset + tail),
        };
        let mut buffer = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0) + 64 * 1024);
        if let (None, Some(tail)) = (append, &start.tail) {
            let mut pieces = self.tail_pieces(tail);
            while let Some(bytes) = pieces.next().await {
                buffer.extend_from_slice(&bytes?);
            }
        }
        let mut received = 0u64;
        let mut pending = start.parts;
        let mut stream = body.into_data_stream();
        let mut interrupted = false;
        while let Some(frame) = next_frame(&mut stream).await {
            let bytes = match frame {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::info!(video_id = %start.id, received, error = %err, "the client stopped mid-chunk");
                    interrupted = true;
                    break;
                }
            };
            received += bytes.len() as u64;
            self.admit(offset, received)?;
            self.renew_lease().await?;
            if append.is_some_and(|declared| received > declared) {
                // Hyper stops a body at its declared length; were one longer, the bytes past it would
                // belong to a part that does not start with the tail.
                return Err(ApiError::internal(&"a body longer than its declared length"));
            }
            buffer.extend_from_slice(&bytes);
            hashing.add(bytes).await?;
            if buffer.len() as u64 >= start.part_size {
                pending += 1;
                let fresh = Vec::with_capacity(buffer.capacity());
                self.store_part(pending, std::mem::replace(&mut buffer, fresh)).await?;
            }
        }
        metrics::counter!("streamgate_upload_bytes_total").increment(received);
        let completes = offset + received == start.length;
        let (kept, chunk) = self.settle(hashing, Keep::All, checksum.is_some() || completes).await?;
        check_chunk(checksum, chunk, !interrupted)?;

        let next = &mut self.upload;
        next.parts = pending;
        next.offset = offset + received;
        if completes {
            next.sha256 = kept.digest();
        }
        self.kept = Some(kept);
        if completes {
            if !buffer.is_empty() || (pending == 0 && start.length > 0) {
                pending += 1;
                self.store_part(pending, buffer).await?;
                self.upload.parts = pending;
            }
            self.upload.tail = None;
            self.finish().await?;
        } else if received > 0 {
            let before = append.and(start.tail.as_ref());
            self.upload.tail = if buffer.is_empty() {
                before.cloned()
            } else {
                let key = format!("{}tail-{}", start.scratch_prefix(), start.version + 1);
                let size = buffer.len() as u64;
                self.sources()
                    .put(&key, Bytes::from(buffer), None)
                    .await
                    .map_err(blob_error)?;
                Some(match before {
                    Some(tail) => tail.and(key, size),
                    None => Tail::new(key, size),
                })
            };
            self.upload.expires_at = expires_at(self.state, self.upload.created_at);
        }
        Ok(())
    }

    /// Renews the lease when less than three quarters of it is left (called as each piece of the body
    /// arrives, and before a part is recorded): a writer that lost its lease stops before it can
    /// overwrite the parts of the writer that took over. A lease with most of its time left cannot have
    /// been taken over, and it outlasts [`IDLE_TIMEOUT`], after which a silent body ends the request.
    async fn renew_lease(&mut self) -> Result<(), ApiError> {
        let now = Utc::now();
        if self
            .saved
            .lease
            .as_ref()
            .is_some_and(|lease| lease.until - now >= LEASE_TTL * 3 / 4)
        {
            return Ok(());
        }
        // Only the lease changes: what the request changed is written when it commits.
        let mut renewed = self.saved.clone();
        if let Some(lease) = &mut renewed.lease {
            lease.until = now + LEASE_TTL;
        }
        self.saved = self
            .state
            .uploads
            .save(&self.saved, renewed)
            .await
            .map_err(upload_error)?;
        self.upload.version = self.saved.version;
        self.upload.lease = self.saved.lease.clone();
        Ok(())
    }

    /// Records a stored part, under a lease still held.
    async fn record_part(&mut self, number: u32, etag: String, size: u64) -> Result<(), ApiError> {
        self.renew_lease().await?;
        let part = Part {
            part_number: number,
            etag,
            size,
        };
        self.state
            .uploads
            .put_part(&self.upload.id, &part, end_of_life(self.state, self.upload.created_at))
            .await
            .map_err(store_error)
    }

    /// Stores part `number` from memory.
    async fn store_part(&mut self, number: u32, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.renew_lease().await?;
        let multipart = self
            .upload
            .multipart_id
            .clone()
            .ok_or_else(|| ApiError::internal(&"a non-empty upload without a multipart upload"))?;
        let size = bytes.len() as u64;
        let etag = self
            .sources()
            .upload_part(&self.upload.key(), &multipart, number, Bytes::from(bytes))
            .await
            .map_err(blob_error)?;
        self.record_part(number, etag, size).await
    }

    /// The last byte arrived: the video learns its source, then the object lands at `sources/{id}`.
    async fn finish(&mut self) -> Result<(), ApiError> {
        self.asked_completion = true;
        let upload = &self.upload;
        self.state
            .hand_over(upload, upload.length, upload.sha256.clone())
            .await?;
        let key = upload.key();
        let landed = match &upload.multipart_id {
            None => self
                .sources()
                .put(&key, Bytes::new(), upload.content_type.as_deref())
                .await
                .map(drop)
                .map_err(blob_error),
            Some(multipart) => match self.state.uploads.parts(upload).await {
                Ok(parts) => self.state.complete_source(&key, multipart, &parts).await.map(drop),
                Err(err) => Err(store_error(err)),
            },
        };
        if let Err(err) = landed {
            // The request fails and the upload stays where it was: so does its video.
            self.state.take_back(&upload.id).await?;
            return Err(err);
        }
        self.complete().await;
        Ok(())
    }

    /// Finishes a request that failed although the upload's source has landed. Storage answered a
    /// completion with an error (a timeout, say) after carrying it out, and the look right after found
    /// nothing yet: this request's own completion, or an earlier one's, in which case this request (the
    /// client's last bytes sent again) found the multipart upload gone. The source is the file: the
    /// upload is complete, and the answer says so. False when no source of the upload's length is there.
    async fn landed_before(&mut self) -> Result<bool, ApiError> {
        let saved = &self.saved;
        if saved.state != UploadState::Open || saved.multipart_id.is_none() {
            return Ok(false);
        }
        match self.sources().head(&saved.key()).await.map_err(blob_error)? {
            Some(object) if object.size == saved.length => {}
            Some(object) => {
                tracing::warn!(video_id = %saved.id, size = object.size, length = saved.length, "an open upload's source has another length");
                return Ok(false);
            }
            None => return Ok(false),
        }
        tracing::info!(video_id = %saved.id, "the upload's source landed before; completing it");
        let mut upload = saved.clone();
        upload.offset = upload.length;
        upload.tail = None;
        // This request's digest is the file's when its own completion landed it; else the file is
        // read back for it.
        upload.sha256 = self.upload.sha256.clone().filter(|_| self.asked_completion);
        self.state
            .hand_over(&upload, upload.length, upload.sha256.clone())
            .await?;
        self.upload = upload;
        self.kept = Some(Kept::Known(None));
        self.complete().await;
        Ok(true)
    }

    /// The source landed: the upload is complete. When its running digest was lost on the way (see
    /// `digest`), on-upload reads the file for it.
    async fn complete(&mut self) {
        let size = self.upload.length;
        if self.upload.sha256.is_none() {
            tracing::info!(video_id = %self.upload.id, "the upload's digest is left to on-upload");
        }
        metrics::counter!("streamgate_uploads_completed_total", "kind" => "tus").increment(1);
        tracing::info!(video_id = %self.upload.id, size, "upload complete");
        self.upload.state = UploadState::Complete;
    }

    /// Writes the new state and releases the lease; then removes the scratch objects it no longer needs.
    async fn commit(self) -> Result<Upload, ApiError> {
        let Writer {
            state,
            saved,
            upload,
            previous_tail,
            start_digest,
            kept,
            asked_completion: _,
        } = self;
        let kept = match kept {
            Some(kept) => kept,
            None => unchanged(state.digests.behind(), start_digest).await,
        };
        let mut next = upload.clone();
        next.lease = None;
        let held = match kept {
            Kept::Known(hasher) => {
                next.hash_state = hasher.as_ref().map(save_hash);
                next.running_digest = None;
                None
            }
            Kept::Behind(digest) => {
                let reference = state.digests.hold(&upload.id, digest);
                next.hash_state = None;
                next.running_digest = Some(reference.clone());
                Some(reference)
            }
        };
        let committed = match state.uploads.save(&saved, next).await {
            Ok(committed) => committed,
            Err(err) => {
                if let Some(reference) = held {
                    state.digests.forget(&upload.id, &reference);
                }
                return Err(upload_error(err));
            }
        };
        let stale: Vec<String> = if committed.state == UploadState::Complete {
            // Everything under the scratch prefix, tails of failed requests included.
            match state.sources.list(&committed.scratch_prefix()).await {
                Ok(objects) => objects.into_iter().map(|o| o.key).collect(),
                Err(err) => {
                    tracing::warn!(video_id = %committed.id, error = %err, "could not list an upload's scratch objects");
                    Vec::new()
                }
            }
        } else {
            // The pieces the committed tail no longer has: all of them once it was rewritten or filled
            // a part, none when a piece was added.
            let kept = committed.tail.as_ref().map_or(&[][..], Tail::pieces);
            previous_tail
                .iter()
                .flat_map(Tail::pieces)
                .filter(|piece| !kept.contains(piece))
                .map(|piece| piece.key.clone())
                .collect()
        };
        for key in stale {
            if let Err(err) = state.sources.delete(&key).await {
                tracing::warn!(%key, error = %err, "could not delete an upload's scratch object");
            }
        }
        Ok(committed)
    }
}

/// The running state after a request that committed no bytes: the one it started from.
async fn unchanged(behind: bool, start: Option<State>) -> Kept {
    let Some(state) = start else {
        return Kept::Known(None);
    };
    match state.clone().now_or_never() {
        Some(hasher) => Kept::Known(hasher),
        None if behind => Kept::Behind(state),
        None => Kept::Known(state.await),
    }
}

/// The verdict on a chunk sent with `Upload-Checksum`: it must have arrived whole and match.
fn check_chunk(checksum: Option<Checksum>, digest: Option<ChunkDigest>, whole: bool) -> Result<(), ApiError> {
    let Some(checksum) = checksum else {
        return Ok(());
    };
    if !whole {
        return Err(ApiError::bad_request(
            "upload_interrupted",
            "the chunk did not arrive whole, so its checksum cannot be checked; it was dropped",
        ));
    }
    if digest.is_none_or(|digest| !checksum.matches(digest)) {
        return Err(checksum_mismatch());
    }
    Ok(())
}

/// How long a request may send nothing before it counts as cut off, so that a stalled client cannot
/// hold an upload's lease.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

// A lease left unrenewed (more than three quarters of it left) outlasts a silent body.
const _: () = assert!(IDLE_TIMEOUT.as_secs() as i64 * 4 < LEASE_TTL.num_seconds() * 3);

/// The next piece of a request body; a body silent for [`IDLE_TIMEOUT`] ends in an error.
async fn next_frame(stream: &mut axum::body::BodyDataStream) -> Option<Result<Bytes, axum::Error>> {
    match tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
        Ok(frame) => frame,
        Err(_) => Some(Err(axum::Error::new(format!(
            "no bytes for {} seconds",
            IDLE_TIMEOUT.as_secs()
        )))),
    }
}

/// The sink a part is being written to; only called while there is one.
fn sink_of(sink: &mut Option<PartSink>) -> PartSink {
    match sink.take() {
        Some(sink) => sink,
        None => unreachable!("a part sink is open while its part is being filled"),
    }
}

#[cfg(test)]
mod tests {
    use super::plan_parts;

    const P: u64 = 5;

    #[test]
    fn requests_fill_whole_parts_and_leave_small_ones_as_tails() {
        assert_eq!(plan_parts(0, 5, false, P), Some(vec![5]));
        assert_eq!(plan_parts(0, 4, false, P), None);
        assert_eq!(plan_parts(3, 4, false, P), Some(vec![7]));
        assert_eq!(plan_parts(0, 12, false, P), Some(vec![5, 7]));
        assert_eq!(plan_parts(0, 3, true, P), Some(vec![3]));
        assert_eq!(plan_parts(2, 11, true, P), Some(vec![5, 8]));
        assert_eq!(plan_parts(0, 0, true, P), None);
    }
}
