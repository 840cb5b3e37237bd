//! Videos and their records in `Store`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::VideoId;
use crate::store::{Item, Store, StoreError};

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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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
        self.store.put(item, Some(crate::store::Condition::NotExists)).await
    }
}
