//! The running SHA-256 of an upload, from one request to the next.
//!
//! Each request hashes the bytes it receives on a thread of its own, beside receiving and storing them
//! (see `writer`). Where the process lives on after answering (the servers), a request answers as soon as
//! its bytes are stored and lets its hashing finish behind the answer: the state it ends in is held here,
//! under a reference the upload's record names (`running_digest`), and the next request of the upload
//! continues from it. Hashing one chunk then overlaps with the client sending the next, rather than
//! adding to every request's time. On Lambda, which freezes the process between invocations, a request
//! waits for its hashing and saves the state in the record (`hash_state`). A request that carries a
//! checksum, or that completes the upload, waits either way.
//!
//! A request that finds neither (the server holding the state restarted, or another server of the
//! installation received the chunk before) cannot continue the digest. The upload goes on without one,
//! and on-upload reads the digest from the finished object, as for direct uploads.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::ids::VideoId;
use common::problem::ApiError;
use common::uploads::Upload;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sha2::Digest;
use sha2::digest::common::hazmat::SerializableState;

/// A running SHA-256 as it becomes known; `None` once it is lost (its hashing stopped).
pub(super) type State = Shared<BoxFuture<'static, Option<sha2::Sha256>>>;

/// A state known now.
pub(super) fn known(hasher: sha2::Sha256) -> State {
    futures::future::ready(Some(hasher)).boxed().shared()
}

/// A state as the record keeps it (base64).
pub(super) fn save_hash(hasher: &sha2::Sha256) -> String {
    STANDARD.encode(hasher.serialize().as_slice())
}

fn restore_hash(saved: &str) -> Result<sha2::Sha256, ApiError> {
    let corrupt = |_| ApiError::internal(&"an upload's saved digest state is corrupt");
    let bytes = STANDARD.decode(saved).map_err(|e| corrupt(e.to_string()))?;
    let state = bytes.as_slice().try_into().map_err(|_| corrupt(String::new()))?;
    sha2::Sha256::deserialize(state).map_err(|e| corrupt(e.to_string()))
}

/// At most this many states are held; past it the oldest is dropped, and its upload's digest read back.
/// A state is taken by the upload's next request, so only uploads left unfinished (or continued on
/// another server) keep one here.
const MAX_HELD: usize = 10_000;

/// The states this process holds for the next request of each upload.
pub(crate) struct RunningDigests {
    /// Whether a request may answer before its hashing is done.
    behind: bool,
    held: Mutex<Holds>,
}

#[derive(Default)]
struct Holds {
    by_upload: HashMap<VideoId, Held>,
    /// Counts the states held so far, to tell the oldest.
    count: u64,
}

struct Held {
    reference: String,
    state: State,
    /// The count when it was held.
    serial: u64,
}

impl RunningDigests {
    /// With `behind`, requests answer before their hashing is done; only where the process goes on
    /// running after it answers.
    pub(crate) fn new(behind: bool) -> Self {
        Self {
            behind,
            held: Mutex::default(),
        }
    }

    pub(super) fn behind(&self) -> bool {
        self.behind
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Holds> {
        // The map stays whole whatever a thread holding the lock did.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the digest of `upload`'s committed bytes stands, for the request that holds its lease:
    /// `None` when it is known nowhere.
    pub(super) fn take(&self, upload: &Upload) -> Result<Option<State>, ApiError> {
        if let Some(reference) = &upload.running_digest {
            let held = self.held().by_upload.remove(&upload.id);
            let state = held.filter(|held| &held.reference == reference).map(|held| held.state);
            if state.is_none() {
                tracing::info!(video_id = %upload.id, "the upload's running digest is not held here; it will be read back");
            }
            return Ok(state);
        }
        match upload.hash_state.as_deref() {
            Some(saved) => restore_hash(saved).map(|hasher| Some(known(hasher))),
            None if upload.offset == 0 => Ok(Some(known(sha2::Sha256::new()))),
            None => Ok(None),
        }
    }

    /// Holds `state` for the next request of upload `id`; returns the reference for its record.
    pub(super) fn hold(&self, id: &VideoId, state: State) -> String {
        let reference = uuid::Uuid::new_v4().simple().to_string();
        self.put(id, reference.clone(), state);
        reference
    }

    /// Holds `state` again under `reference`, which the record of upload `id` still names.
    pub(super) fn put(&self, id: &VideoId, reference: String, state: State) {
        let mut holds = self.held();
        let held = &mut holds.by_upload;
        if held.len() >= MAX_HELD && !held.contains_key(id) {
            let oldest = held
                .iter()
                .min_by_key(|(_, held)| held.serial)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                held.remove(&oldest);
            }
        }
        holds.count += 1;
        let serial = holds.count;
        holds.by_upload.insert(
            id.clone(),
            Held {
                reference,
                state,
                serial,
            },
        );
    }

    /// Drops what is held for upload `id` under `reference`.
    pub(super) fn forget(&self, id: &VideoId, reference: &str) {
        let held = &mut self.held().by_upload;
        if held.get(id).is_some_and(|held| held.reference == reference) {
            held.remove(id);
        }
    }

    /// Drops whatever is held for upload `id`.
    pub(crate) fn forget_upload(&self, id: &VideoId) {
        self.held().by_upload.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use common::uploads::{UploadKind, UploadState};

    fn upload(offset: u64) -> Upload {
        let now = Utc::now();
        Upload {
            id: VideoId::generate(),
            account: "a".into(),
            kind: UploadKind::Tus,
            state: UploadState::Open,
            length: 100,
            offset,
            metadata: None,
            filename: None,
            content_type: None,
            part_size: 10,
            multipart_id: None,
            parts: 0,
            tail: None,
            hash_state: None,
            running_digest: None,
            sha256: None,
            version: 1,
            lease: None,
            created_at: now,
            expires_at: now,
        }
    }

    fn hashed(bytes: &[u8]) -> sha2::Sha256 {
        let mut hasher = sha2::Sha256::new();
        hasher.update(bytes);
        hasher
    }

    fn digest_of(state: Option<State>) -> Option<String> {
        let hasher = state?.now_or_never().expect("known")?;
        Some(hex::encode(hasher.finalize()))
    }

    #[test]
    fn a_state_is_found_in_memory_under_the_record_s_reference_once() {
        let digests = RunningDigests::new(true);
        let mut record = upload(3);
        record.running_digest = Some(digests.hold(&record.id, known(hashed(b"abc"))));
        let expected = Some(hex::encode(sha2::Sha256::digest(b"abc")));
        assert_eq!(digest_of(digests.take(&record).expect("take")), expected);
        // Taken: a second request finds nothing (its record would name another reference by then).
        assert_eq!(digest_of(digests.take(&record).expect("take")), None);
    }

    #[test]
    fn a_state_under_another_reference_is_not_used() {
        let digests = RunningDigests::new(true);
        let mut record = upload(3);
        digests.hold(&record.id, known(hashed(b"abc")));
        record.running_digest = Some("written-by-another-server".into());
        assert!(digests.take(&record).expect("take").is_none());
        // The stale state went with the look-up.
        assert!(digests.held().by_upload.is_empty());
    }

    #[test]
    fn the_record_s_state_or_a_fresh_one_or_none() {
        let digests = RunningDigests::new(false);
        let mut record = upload(3);
        record.hash_state = Some(save_hash(&hashed(b"abc")));
        let expected = Some(hex::encode(sha2::Sha256::digest(b"abc")));
        assert_eq!(digest_of(digests.take(&record).expect("take")), expected);

        let empty = Some(hex::encode(sha2::Sha256::digest(b"")));
        assert_eq!(digest_of(digests.take(&upload(0)).expect("take")), empty);
        // Bytes committed, and their state neither saved nor held: lost.
        assert!(digests.take(&upload(3)).expect("take").is_none());

        record.hash_state = Some("not a state".into());
        assert!(digests.take(&record).is_err());
    }

    #[test]
    fn forgetting_needs_the_reference_it_was_held_under() {
        let digests = RunningDigests::new(true);
        let id = VideoId::generate();
        let reference = digests.hold(&id, known(hashed(b"abc")));
        digests.forget(&id, "another");
        assert_eq!(digests.held().by_upload.len(), 1);
        digests.forget(&id, &reference);
        assert!(digests.held().by_upload.is_empty());
    }

    #[test]
    fn the_oldest_state_makes_room() {
        let digests = RunningDigests::new(true);
        let first = VideoId::generate();
        digests.hold(&first, known(hashed(b"first")));
        for _ in 1..MAX_HELD {
            digests.hold(&VideoId::generate(), known(hashed(b"more")));
        }
        assert!(digests.held().by_upload.contains_key(&first));
        digests.hold(&VideoId::generate(), known(hashed(b"one too many")));
        assert_eq!(digests.held().by_upload.len(), MAX_HELD);
        assert!(!digests.held().by_upload.contains_key(&first));
    }
}
