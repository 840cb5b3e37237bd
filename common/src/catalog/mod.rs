//! Videos and their records in `Store`, with the index they are listed and searched by.
//!
//! A video's record is the item `video#{id}`/`meta`, in the secondary index under `owner#{address}`
//! (sort key: the id, which sorts by creation time). A ready video is also listed under every search
//! term of its text ([`text::terms`]); every write of a record keeps those lists in step (see
//! [`Videos::update`]).

pub mod search;
pub mod text;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::TryStreamExt;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::access::{AccessFault, Rule};
use crate::chains::Chains;
use crate::ids::VideoId;
use crate::store::{Condition, Cursor, Item, Query, Store, StoreError};
use search::{Hit, Position};

/// Characters a title may hold.
pub const MAX_TITLE_CHARS: usize = 200;
/// Characters a description may hold.
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
/// Tags a video may have.
pub const MAX_TAGS: usize = 20;
/// Characters a tag may hold.
pub const MAX_TAG_CHARS: usize = 40;

/// Where a video is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoStatus {
    Uploading,
    Processing,
    Ready,
    Failed,
}

/// Why processing failed, for the owner to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoError {
    pub code: String,
    pub detail: String,
}

/// One rung of the ladder as played.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate: u64,
    pub codecs: String,
}

/// The uploaded file a video was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub size: u64,
    /// Hex SHA-256 of the whole file, once known.
    pub sha256: Option<String>,
}

/// A video as the API shows it (`Video` in the public contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Video {
    pub id: VideoId,
    pub owner: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub status: VideoStatus,
    pub progress: u8,
    pub error: Option<VideoError>,
    pub duration_seconds: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub renditions: Vec<Rendition>,
    /// The access rule as stored (canonical JSON); see [`Video::access`] and [`Video::set_access`].
    access: Value,
    pub cid: Option<String>,
    /// Whether an AES-128 encrypted HLS copy exists beside the clear stream (gated videos), its key
    /// served at `/v1/keys/{id}` under the video's access rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted_hls: bool,
    /// The uploaded file, once the upload is complete.
    #[serde(default)]
    pub source: Option<Source>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `access` as a rule, once [`Video::rule`] has parsed it.
    #[serde(skip)]
    parsed_access: ParsedAccess,
}

/// A video's access rule as parsed. Copies of the cell start empty, [`Video::set_access`] empties it,
/// and it takes no part in comparing videos.
#[derive(Default)]
struct ParsedAccess(OnceLock<Result<Arc<Rule>, AccessFault>>);

impl Clone for ParsedAccess {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for ParsedAccess {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ParsedAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParsedAccess(..)")
    }
}

impl Video {
    /// A video just created for `owner` (a checksummed address): `uploading`, public, without text.
    pub fn new(id: VideoId, owner: impl Into<String>) -> Self {
        let now = Utc::now();
        Self {
            id,
            owner: owner.into(),
            title: String::new(),
            description: String::new(),
            tags: Vec::new(),
            status: VideoStatus::Uploading,
            progress: 0,
            error: None,
            duration_seconds: None,
            width: None,
            height: None,
            renditions: Vec::new(),
            access: serde_json::json!({"type": "public"}),
            cid: None,
            encrypted_hls: false,
            source: None,
            created_at: now,
            updated_at: now,
            parsed_access: ParsedAccess::default(),
        }
    }

    /// Whether anyone may play the video, signed in or not (`access` is `{"type":"public"}`).
    pub fn is_public(&self) -> bool {
        self.access.get("type").and_then(Value::as_str) == Some("public")
    }

    /// The access rule, as stored ([`Rule::parse_stored`] against `chains`, this installation's, which
    /// stay the same while it runs). Parsed once for all who share this record: the read cache hands the
    /// same shared record to every request for the video.
    pub fn rule(&self, chains: &Chains) -> Result<Arc<Rule>, AccessFault> {
        self.parsed_access
            .0
            .get_or_init(|| Rule::parse_stored(&self.access, chains).map(Arc::new))
            .clone()
    }

    /// The access rule as stored: canonical JSON (`Access` in the public contract).
    pub fn access(&self) -> &Value {
        &self.access
    }

    /// Gives the video a new access rule, in canonical form ([`Rule::to_json`]).
    pub fn set_access(&mut self, access: Value) {
        self.access = access;
        self.parsed_access = ParsedAccess::default();
    }

    /// The search terms the video is listed under: those of its text once it is ready, none before.
    pub fn search_terms(&self) -> BTreeSet<String> {
        if self.status == VideoStatus::Ready {
            text::terms(&self.title, &self.tags, &self.description)
        } else {
            BTreeSet::new()
        }
    }
}

/// What a listing asks for (`GET /v1/videos`).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Only this owner's videos (a checksummed address).
    pub owner: Option<String>,
    /// Only videos holding any of these terms ([`text::query_terms`]), by how many they hold.
    pub terms: Option<Vec<String>>,
    /// Whether videos that are not ready are listed too: only for their owner, with `owner` set.
    pub everything: bool,
    /// Videos per page (at least 1).
    pub limit: usize,
    /// Where the page starts: a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Video>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("the cursor is not one this listing gave")]
    InvalidCursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cursor: the position, and a digest of the listing it belongs to, so that it is refused elsewhere.
#[derive(Serialize, Deserialize)]
struct CursorToken {
    #[serde(rename = "s")]
    score: usize,
    #[serde(rename = "a")]
    after: VideoId,
    #[serde(rename = "l")]
    listing: String,
}

impl Listing {
    fn digest(&self) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(self.owner.as_deref().unwrap_or_default());
        hash.update([u8::from(self.everything)]);
        for term in self.terms.iter().flatten() {
            hash.update([0]);
            hash.update(term);
        }
        hex::encode(&hash.finalize()[..8])
    }

    fn position(&self) -> Result<Option<Position>, ListError> {
        let Some(token) = &self.cursor else {
            return Ok(None);
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| ListError::InvalidCursor)?;
        let token: CursorToken = serde_json::from_slice(&bytes).map_err(|_| ListError::InvalidCursor)?;
        if token.listing != self.digest() {
            return Err(ListError::InvalidCursor);
        }
        Ok(Some(Position {
            score: token.score,
            after: token.after,
        }))
    }

    fn cursor_at(&self, position: Position) -> String {
        let token = CursorToken {
            score: position.score,
            after: position.after,
            listing: self.digest(),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }

    /// The page of `found` (one more than the limit when another page follows).
    fn page(&self, mut found: Vec<(usize, Video)>) -> ListPage {
        let limit = self.limit.max(1);
        let next_cursor = (found.len() > limit).then(|| {
            let (score, last) = &found[limit - 1];
            self.cursor_at(Position {
                score: *score,
                after: last.id.clone(),
            })
        });
        found.truncate(limit);
        ListPage {
            items: found.into_iter().map(|(_, video)| video).collect(),
            next_cursor,
        }
    }
}

/// How many of `terms` a video's own terms hold.
fn score(own: &BTreeSet<String>, terms: &[String]) -> usize {
    terms.iter().filter(|term| own.contains(*term)).count()
}

/// Owner listings read this many records a page.
const OWNER_PAGE: u32 = 200;

/// Video records: partition `video#{id}`, sort key `meta`.
#[derive(Clone)]
pub struct Videos {
    store: Arc<dyn Store>,
}

impl Videos {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn pk(id: &VideoId) -> String {
        ["video#", id.as_str()].concat()
    }

    fn owner_pk(owner: &str) -> String {
        format!("owner#{owner}")
    }

    /// The record's item, in the secondary index under its owner.
    fn item(video: &Video) -> Result<Item, StoreError> {
        Ok(Item::from_record(Self::pk(&video.id), "meta", video)?
            .indexed(Self::owner_pk(&video.owner), video.id.to_string()))
    }

    /// Lists `id` under every term of `terms`.
    async fn list_under(&self, id: &VideoId, terms: &BTreeSet<String>) -> Result<(), StoreError> {
        let items = terms
            .iter()
            .map(|term| Item::new(search::list_pk(term), id.to_string()))
            .collect();
        self.store.write_batch(items, Vec::new()).await
    }

    /// Takes `id` off the lists of `terms`.
    async fn unlist(&self, id: &VideoId, terms: &BTreeSet<String>) -> Result<(), StoreError> {
        let keys = terms
            .iter()
            .map(|term| (search::list_pk(term), id.to_string()))
            .collect();
        self.store.write_batch(Vec::new(), keys).await
    }

    pub async fn get(&self, id: &VideoId) -> Result<Option<Video>, StoreError> {
        match self.store.get(&Self::pk(id), "meta").await? {
            Some(item) => item.record().map(Some),
            None => Ok(None),
        }
    }

    /// [`Videos::get`] for readers that do not change the record: reads of an unchanged record that
    /// the local read cache serves decode it once.
    pub async fn get_shared(&self, id: &VideoId) -> Result<Option<std::sync::Arc<Video>>, StoreError> {
        match self.store.get_shared(&Self::pk(id), "meta").await? {
            Some(item) => item.record_shared().map(Some),
            None => Ok(None),
        }
    }

    /// Creates the record (and lists it under its search terms, if it is ready); fails with
    /// `ConditionFailed` if the id is taken.
    pub async fn create(&self, video: &Video) -> Result<(), StoreError> {
        let terms = video.search_terms();
        if !terms.is_empty() {
            self.list_under(&video.id, &terms).await?;
        }
        self.store.put(Self::item(video)?, Some(Condition::NotExists)).await
    }

    /// Fails a video that is still processing with `error`; one that finished, failed or was deleted
    /// meanwhile is left as it is. Returns whether it failed it.
    pub async fn fail_processing(&self, id: &VideoId, error: VideoError) -> Result<bool, StoreError> {
        let mut failed = false;
        self.update(id, |video| {
            failed = video.status == VideoStatus::Processing;
            if failed {
                video.status = VideoStatus::Failed;
                video.error = Some(error.clone());
            }
            failed
        })
        .await?;
        Ok(failed)
    }

    /// Changes a video with `change`, which sees the current record and returns `false` to leave it as it
    /// is. The write is conditional on the record not having changed since it was read (its `updatedAt`),
    /// and is retried on a fresh read when it has, so concurrent updates never undo each other. Returns
    /// the record as written (or as left), `None` if there is no such video.
    ///
    /// When the change moves the video's search terms, the video is listed under its new ones before the
    /// record is written (so a ready record is always found by its terms) and taken off the old ones
    /// after. Entries an attempt added for terms the record did not keep (the write lost a race, or the
    /// video was deleted meanwhile) are taken off again. Listings check results against records and
    /// read past entries left behind anyway.
    pub async fn update(
        &self,
        id: &VideoId,
        mut change: impl FnMut(&mut Video) -> bool + Send,
    ) -> Result<Option<Video>, StoreError> {
        let mut added: BTreeSet<String> = BTreeSet::new();
        for _ in 0..16 {
            let Some(mut video) = self.get(id).await? else {
                self.take_off(id, added, &BTreeSet::new()).await;
                return Ok(None);
            };
            let read_at = serde_json::to_value(video.updated_at).map_err(StoreError::backend)?;
            let terms_before = video.search_terms();
            if !change(&mut video) {
                self.take_off(id, added, &terms_before).await;
                return Ok(Some(video));
            }
            // Timestamps in a record are never equal from one write to the next.
            video.updated_at = Utc::now().max(video.updated_at + chrono::Duration::microseconds(1));
            let terms = video.search_terms();
            let new: BTreeSet<String> = terms.difference(&terms_before).cloned().collect();
            if !new.is_empty() {
                self.list_under(id, &new).await?;
                added.extend(new);
            }
            match self
                .store
                .put(
                    Self::item(&video)?,
                    Some(Condition::Equals("updatedAt".into(), read_at)),
                )
                .await
            {
                Ok(()) => {
                    let gone = terms_before.difference(&terms).cloned().collect();
                    self.take_off(id, gone, &BTreeSet::new()).await;
                    self.take_off(id, added, &terms).await;
                    return Ok(Some(video));
                }
                Err(StoreError::ConditionFailed) => continue,
                // The write may have landed all the same: its entries stay.
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Backend(format!("video {id} changed too often to update")))
    }

    /// Takes the video off the lists of `terms` but those of `kept` (the terms of its record as
    /// written); best effort, as a listing reads past an entry left behind.
    async fn take_off(&self, id: &VideoId, terms: BTreeSet<String>, kept: &BTreeSet<String>) {
        let stale: BTreeSet<String> = terms.difference(kept).cloned().collect();
        if !stale.is_empty()
            && let Err(err) = self.unlist(id, &stale).await
        {
            tracing::warn!(video_id = %id, error = %err, "search entries left behind");
        }
    }

    /// The video's AES-128 content key, made on first use; a second call answers the same key.
    pub async fn content_key(&self, id: &VideoId) -> Result<[u8; 16], StoreError> {
        if let Some(key) = self.existing_content_key(id).await? {
            return Ok(key);
        }
        let mut key = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        let item = Item::new(Self::pk(id), "key").with("key", hex::encode(key));
        match self.store.put(item, Some(Condition::NotExists)).await {
            Ok(()) => Ok(key),
            // Made at the same time by another run: that one is the key.
            Err(StoreError::ConditionFailed) => self
                .existing_content_key(id)
                .await?
                .ok_or_else(|| StoreError::Backend(format!("the key of video {id} vanished"))),
            Err(err) => Err(err),
        }
    }

    /// The video's content key, if it has one.
    pub async fn existing_content_key(&self, id: &VideoId) -> Result<Option<[u8; 16]>, StoreError> {
        let Some(item) = self.store.get(&Self::pk(id), "key").await? else {
            return Ok(None);
        };
        let text = item.attrs.get("key").and_then(Value::as_str).unwrap_or_default();
        let mut key = [0u8; 16];
        hex::decode_to_slice(text, &mut key)
            .map_err(|_| StoreError::Backend(format!("the key of video {id} is unreadable")))?;
        Ok(Some(key))
    }

    /// Deletes the video's records: its search entries, every item of its partition (jobs, content key,
    /// pins) and, last, the record itself, so that a delete cut short can be done again. Deleting a missing
    /// video succeeds.
    pub async fn delete(&self, id: &VideoId) -> Result<(), StoreError> {
        let Some(video) = self.get(id).await? else {
            return Ok(());
        };
        let terms = video.search_terms();
        if !terms.is_empty() {
            self.unlist(id, &terms).await?;
        }
        self.remove_records(id).await
    }

    /// Deletes every item of the video's partition, its record last: what is left of a deleted video (a
    /// record a worker made again) goes too.
    pub async fn remove_records(&self, id: &VideoId) -> Result<(), StoreError> {
        let pk = Self::pk(id);
        loop {
            let query = Query {
                limit: Some(1000),
                ..Query::default()
            };
            let page = self.store.query(&pk, query).await?;
            let keys: Vec<(String, String)> = page
                .items
                .into_iter()
                .filter(|item| item.sk != "meta")
                .map(|item| (item.pk, item.sk))
                .collect();
            if keys.is_empty() {
                break;
            }
            self.store.write_batch(Vec::new(), keys).await?;
        }
        self.store.delete(&pk, "meta", None).await
    }

    /// One page of videos: by owner, by words, or both; or every ready video, newest first.
    pub async fn list(&self, listing: &Listing) -> Result<ListPage, ListError> {
        let from = listing.position()?;
        let want = listing.limit.max(1) + 1;
        let found = match (&listing.owner, &listing.terms) {
            (Some(owner), None) => self.owned(owner, listing.everything, from, want).await?,
            (Some(owner), Some(terms)) => {
                self.owned_matching(owner, listing.everything, terms, from, want)
                    .await?
            }
            (None, terms) => {
                let all = [text::ALL.to_owned()];
                let terms = terms.as_deref().unwrap_or(&all);
                // Entries left behind (a video deleted, or no longer holding a word) are left out once
                // read: read on past them, so that they never end a listing early.
                let mut found = Vec::with_capacity(want);
                let mut from = from;
                loop {
                    let need = want - found.len();
                    let hits = search::find(self.store.as_ref(), terms, from.as_ref(), need).await?;
                    let last = hits.last().map(|hit| Position {
                        score: hit.score,
                        after: hit.id.clone(),
                    });
                    let exhausted = hits.len() < need;
                    found.extend(self.load(hits, terms).await?);
                    match last {
                        Some(last) if !exhausted && found.len() < want => from = Some(last),
                        _ => break found,
                    }
                }
            }
        };
        Ok(listing.page(found))
    }

    /// The records of `hits`, leaving out any whose list entries were stale (the video changed, is no
    /// longer ready, or is gone).
    async fn load(&self, hits: Vec<Hit>, terms: &[String]) -> Result<Vec<(usize, Video)>, StoreError> {
        let videos = futures::stream::iter(hits)
            .map(|hit| async move { Ok::<_, StoreError>((hit.score, self.get(&hit.id).await?)) })
            .buffered(32)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(videos
            .into_iter()
            .filter_map(|(hit_score, video)| {
                let video = video?;
                (score(&video.search_terms(), terms) == hit_score).then_some((hit_score, video))
            })
            .collect())
    }

    /// An owner's videos, newest first (score 0 in positions).
    async fn owned(
        &self,
        owner: &str,
        everything: bool,
        from: Option<Position>,
        want: usize,
    ) -> Result<Vec<(usize, Video)>, StoreError> {
        let index = Self::owner_pk(owner);
        let mut cursor = from.map(|p| Cursor {
            pk: Self::pk(&p.after),
            sk: "meta".into(),
            index: Some((index.clone(), p.after.to_string())),
        });
        let mut found = Vec::new();
        loop {
            let query = Query {
                limit: Some(OWNER_PAGE),
                cursor,
                descending: true,
                ..Query::default()
            };
            let page = self.store.query_index(&index, query).await?;
            for item in &page.items {
                let video: Video = item.record()?;
                if everything || video.status == VideoStatus::Ready {
                    found.push((0, video));
                    if found.len() == want {
                        return Ok(found);
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(found),
            }
        }
    }

    /// An owner's videos holding any of `terms`, by score then newest first: the owner's records are
    /// read and scored here, so the cost follows the size of one catalog, not of every list.
    async fn owned_matching(
        &self,
        owner: &str,
        everything: bool,
        terms: &[String],
        from: Option<Position>,
        want: usize,
    ) -> Result<Vec<(usize, Video)>, StoreError> {
        let mut scored: Vec<(usize, Video)> = self
            .owned(owner, everything, None, usize::MAX)
            .await?
            .into_iter()
            .filter_map(|(_, video)| {
                let own = text::terms(&video.title, &video.tags, &video.description);
                let score = score(&own, terms);
                (score > 0).then_some((score, video))
            })
            .collect();
        scored.sort_by(|(sa, a), (sb, b)| sb.cmp(sa).then_with(|| b.id.cmp(&a.id)));
        let after = |(score, video): &(usize, Video)| match &from {
            None => true,
            Some(p) => *score < p.score || (*score == p.score && video.id < p.after),
        };
        Ok(scored.into_iter().filter(after).take(want).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_changed_access_rule_is_parsed_again() {
        let chains = Chains::from_vars([("STREAMGATE_RPC_31337", "http://127.0.0.1:8545")]).expect("chains");
        let mut video = Video::new(VideoId::generate(), "0x0000000000000000000000000000000000000001");
        assert!(video.rule(&chains).expect("public").is_public());
        let gated = json!({
            "type": "token",
            "chainId": 31337,
            "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "standard": "erc721",
            "minBalance": "1",
        });
        video.set_access(gated.clone());
        let rule = video.rule(&chains).expect("gated");
        assert!(!rule.is_public());
        assert_eq!(rule.to_json(), gated, "the rule of the new access");
        assert!(
            video.clone().rule(&chains).is_ok_and(|copy| copy == rule),
            "copies parse the same rule"
        );

        video.set_access(json!({"type": "token", "chainId": 1, "contract": gated["contract"], "standard": "erc721"}));
        assert!(video.rule(&chains).is_err(), "chain 1 is not configured here");
    }
}
