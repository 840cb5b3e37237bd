//! Videos and their records in `Store`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::VideoId;
use crate::store::{Condition, Item, Store, StoreError};

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
    pub access: Value,
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
}

impl Video {
    /// Whether anyone may play the video, signed in or not (`access` is `{"type":"public"}`).
    pub fn is_public(&self) -> bool {
        self.access.get("type").and_then(Value::as_str) == Some("public")
    }
}

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
        format!("video#{id}")
    }

    pub async fn get(&self, id: &VideoId) -> Result<Option<Video>, StoreError> {
        match self.store.get(&Self::pk(id), "meta").await? {
            Some(item) => item.record().map(Some),
            None => Ok(None),
        }
    }

    /// Creates the record; fails with `ConditionFailed` if the id is taken.
    pub async fn create(&self, video: &Video) -> Result<(), StoreError> {
        let item = Item::from_record(Self::pk(&video.id), "meta", video)?;
        self.store.put(item, Some(Condition::NotExists)).await
    }

    /// Changes a video with `change`, which sees the current record and returns `false` to leave it as it
    /// is. The write is conditional on the record not having changed since it was read (its `updatedAt`),
    /// and is retried on a fresh read when it has, so concurrent updates never undo each other. Returns
    /// the record as written (or as left), `None` if there is no such video.
    pub async fn update(
        &self,
        id: &VideoId,
        mut change: impl FnMut(&mut Video) -> bool + Send,
    ) -> Result<Option<Video>, StoreError> {
        for _ in 0..16 {
            let Some(mut video) = self.get(id).await? else {
                return Ok(None);
            };
            let read_at = serde_json::to_value(video.updated_at).map_err(StoreError::backend)?;
            if !change(&mut video) {
                return Ok(Some(video));
            }
            // Timestamps in a record are never equal from one write to the next.
            video.updated_at = Utc::now().max(video.updated_at + chrono::Duration::microseconds(1));
            let item = Item::from_record(Self::pk(id), "meta", &video)?;
            match self
                .store
                .put(item, Some(Condition::Equals("updatedAt".into(), read_at)))
                .await
            {
                Ok(()) => return Ok(Some(video)),
                Err(StoreError::ConditionFailed) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Backend(format!("video {id} changed too often to update")))
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

    /// Deletes the record; deleting a missing video succeeds.
    pub async fn delete(&self, id: &VideoId) -> Result<(), StoreError> {
        self.store.delete(&Self::pk(id), "meta", None).await
    }
}
