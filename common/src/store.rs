//! The `Store` port: a single table of items keyed by partition (`pk`) and sort key (`sk`), with
//! conditional writes, atomic counters, prefix queries, one secondary index and expiry.
//!
//! Repositories (videos, uploads, jobs, nonces, sessions, ownership, audit) are written once over this
//! trait; DynamoDB and SQLite implement it and pass the same contract suite.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Attribute names the table itself uses; items cannot carry attributes of these names.
pub const RESERVED_ATTRIBUTES: [&str; 5] = ["pk", "sk", "gsi1pk", "gsi1sk", "ttl"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the write's condition did not hold")]
    ConditionFailed,
    #[error("invalid item: {0}")]
    InvalidItem(String),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("the store failed: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn backend(err: impl std::fmt::Display) -> Self {
        Self::Backend(err.to_string())
    }
}

/// One item: its keys, optional secondary-index keys, optional expiry and its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    /// Keys in the secondary index (`gsi1pk`, `gsi1sk`); items without them are not indexed.
    pub index: Option<(String, String)>,
    /// Unix seconds after which the item is gone for readers (`ttl` in DynamoDB).
    pub expires_at: Option<i64>,
    /// Shared, so that copies of an item (the local read cache hands out one per read) cost no more
    /// than its keys; a write through [`Item::set`] copies them first if they are shared.
    pub attrs: Arc<Attributes>,
}

/// An item's attributes (a JSON object), and the record [`Item::record_shared`] decoded from them, kept
/// for the next copy of the item that asks. Changing an attribute forgets the record.
#[derive(Default)]
pub struct Attributes {
    map: Map<String, Value>,
    decoded: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl From<Map<String, Value>> for Attributes {
    fn from(map: Map<String, Value>) -> Self {
        Self {
            map,
            decoded: OnceLock::new(),
        }
    }
}

impl Deref for Attributes {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl DerefMut for Attributes {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.decoded = OnceLock::new();
        &mut self.map
    }
}

impl Clone for Attributes {
    fn clone(&self) -> Self {
        self.map.clone().into()
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(serializer)
    }
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
            index: None,
            expires_at: None,
            attrs: Arc::default(),
        }
    }

    /// An item whose attributes are the fields of `value`, which must serialize to a JSON object.
    pub fn from_record(
        pk: impl Into<String>,
        sk: impl Into<String>,
        value: &impl Serialize,
    ) -> Result<Self, StoreError> {
        match serde_json::to_value(value).map_err(|e| StoreError::InvalidItem(e.to_string()))? {
            Value::Object(attrs) => Ok(Self {
                attrs: Arc::new(attrs.into()),
                ..Self::new(pk, sk)
            }),
            _ => Err(StoreError::InvalidItem("a record must serialize to an object".into())),
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets one attribute.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        Arc::make_mut(&mut self.attrs).insert(name.to_owned(), value.into());
    }

    pub fn indexed(mut self, gsi1pk: impl Into<String>, gsi1sk: impl Into<String>) -> Self {
        self.index = Some((gsi1pk.into(), gsi1sk.into()));
        self
    }

    pub fn expiring_at(mut self, unix_seconds: i64) -> Self {
        self.expires_at = Some(unix_seconds);
        self
    }

    /// The attributes as a typed record.
    pub fn record<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        T::deserialize(&self.attrs.map).map_err(|e| StoreError::InvalidItem(e.to_string()))
    }

    /// The attributes as a typed record, decoded once for all copies of this item: copies handed out
    /// by a read cache share it.
    pub fn record_shared<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Arc<T>, StoreError> {
        if let Some(decoded) = self.attrs.decoded.get()
            && let Ok(record) = decoded.clone().downcast::<T>()
        {
            return Ok(record);
        }
        let record = Arc::new(self.record::<T>()?);
        // Another type decoded first keeps its place; this one is decoded again next time.
        let _ = self.attrs.decoded.set(record.clone());
        Ok(record)
    }

    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_unix)
    }

    /// Checks what both adapters require of an item before writing it.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.pk.is_empty() || self.sk.is_empty() {
            return Err(StoreError::InvalidItem("pk and sk must not be empty".into()));
        }
        if let Some(name) = self
            .attrs
            .keys()
            .find(|name| RESERVED_ATTRIBUTES.contains(&name.as_str()))
        {
            return Err(StoreError::InvalidItem(format!("attribute name {name:?} is reserved")));
        }
        if let Some((ipk, isk)) = &self.index
            && (ipk.is_empty() || isk.is_empty())
        {
            return Err(StoreError::InvalidItem("index keys must not be empty".into()));
        }
        Ok(())
    }
}

/// A condition a write must meet, checked atomically with the write.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// No item with these keys exists (expired items count as absent).
    NotExists,
    /// An item with these keys exists.
    Exists,
    /// The item exists and its attribute equals the value.
    Equals(String, Value),
}

/// Options for a query: an optional sort-key prefix, a page size, a cursor and the order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub sk_prefix: Option<String>,
    /// At most this many items (1 to 1000; default 100).
    pub limit: Option<u32>,
    pub cursor: Option<Cursor>,
    pub descending: bool,
}

impl Query {
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            sk_prefix: Some(prefix.into()),
            ..Self::default()
        }
    }

    pub fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

/// Where the next page starts: the keys of the last item returned, opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub pk: String,
    pub sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<(String, String)>,
}

impl Cursor {
    pub fn of(item: &Item, on_index: bool) -> Self {
        Self {
            pk: item.pk.clone(),
            sk: item.sk.clone(),
            index: if on_index { item.index.clone() } else { None },
        }
    }

    /// A URL-safe token for API responses.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(token: &str) -> Result<Self, StoreError> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| StoreError::InvalidCursor)?;
        serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)
    }
}

/// One page of a query; `next` is set when more items may follow. A page is empty only when no item
/// is left to read.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<Cursor>,
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;
    /// The items that exist among `keys` (pairs of `pk`, `sk`), in no particular order: many reads for the
    /// price of few round trips. Missing and expired items are left out.
    async fn get_batch(&self, keys: Vec<(String, String)>) -> Result<Vec<Item>, StoreError>;
    /// Writes the whole item, replacing any other with the same keys, if `condition` holds.
    async fn put(&self, item: Item, condition: Option<Condition>) -> Result<(), StoreError>;
    /// Deletes the item if `condition` holds; deleting a missing item without a condition succeeds.
    async fn delete(&self, pk: &str, sk: &str, condition: Option<Condition>) -> Result<(), StoreError>;
    /// Writes `puts` and deletes `deletes` (pairs of `pk`, `sk`) without conditions: many items for the
    /// price of few round trips. Not atomic as a whole: on an error some of the writes may have been made,
    /// and doing the whole batch again is safe. A key must not appear twice in one batch.
    async fn write_batch(&self, puts: Vec<Item>, deletes: Vec<(String, String)>) -> Result<(), StoreError>;
    /// Adds `by` to a numeric attribute (created at 0, with the item if missing) and returns the new value.
    /// An item without an expiry takes `expires_at` (Unix seconds); one that has one keeps it. An item
    /// past its expiry that the backend has not removed yet may go on counting (DynamoDB), so counters
    /// that expire are keyed by their window.
    async fn increment(
        &self,
        pk: &str,
        sk: &str,
        attr: &str,
        by: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, StoreError>;
    /// Items of one partition in sort-key order, as every write made before the query left them.
    async fn query(&self, pk: &str, query: Query) -> Result<Page, StoreError>;
    /// Items whose `gsi1pk` is `index_pk`, in `gsi1sk` order. In the cloud an index lags the writes by
    /// a moment: a write just made may be missing.
    async fn query_index(&self, index_pk: &str, query: Query) -> Result<Page, StoreError>;

    /// What [`Store::get`] would answer, if this store holds it in memory and knows it to be current
    /// (`Some(None)`: known missing); `None` if only a read can tell. Answered without a future or a
    /// copy, for the read paths every request takes: `get_shared` (on `dyn Store`) asks here first.
    fn get_kept(&self, _pk: &str, _sk: &str) -> Option<Option<Arc<Item>>> {
        None
    }

    /// What [`Store::query`] would answer, if this store holds it in memory and knows it to be current.
    fn query_kept(&self, _pk: &str, _query: &Query) -> Option<Arc<Page>> {
        None
    }
}

impl dyn Store + '_ {
    /// [`Store::get`] for readers that keep the item as it is: answered from memory when the store can
    /// ([`Store::get_kept`]), without copying it.
    pub async fn get_shared(&self, pk: &str, sk: &str) -> Result<Option<Arc<Item>>, StoreError> {
        match self.get_kept(pk, sk) {
            Some(kept) => Ok(kept),
            None => Ok(self.get(pk, sk).await?.map(Arc::new)),
        }
    }

    /// [`Store::query`] for readers that keep the page as it is: answered from memory when the store can
    /// ([`Store::query_kept`]), without copying it.
    pub async fn query_shared(&self, pk: &str, query: Query) -> Result<Arc<Page>, StoreError> {
        match self.query_kept(pk, &query) {
            Some(kept) => Ok(kept),
            None => Ok(Arc::new(self.query(pk, query).await?)),
        }
    }
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    now_unix_ms().div_euclid(1000)
}

/// Unix milliseconds now, read from the clock without a calendar (cheaper than `Utc::now()` on paths
/// every request takes).
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let cursor = Cursor {
            pk: "video#1".into(),
            sk: "meta".into(),
            index: Some(("owner#a".into(), "2026".into())),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).expect("decode"), cursor);
        assert!(matches!(
            Cursor::decode("not a cursor!"),
            Err(StoreError::InvalidCursor)
        ));
        assert!(matches!(Cursor::decode("e30"), Err(StoreError::InvalidCursor)));
    }

    #[test]
    fn reserved_attributes_are_refused() {
        let item = Item::new("a", "b").with("ttl", 5);
        assert!(matches!(item.validate(), Err(StoreError::InvalidItem(_))));
        assert!(Item::new("a", "b").with("title", "x").validate().is_ok());
        assert!(Item::new("", "b").validate().is_err());
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Titled {
        title: String,
    }

    #[test]
    fn shared_records_are_decoded_once_per_version_of_the_attributes() {
        let item = Item::new("a", "b").with("title", "one");
        let copy = item.clone();
        let first = item.record_shared::<Titled>().expect("decodes");
        let again = copy.record_shared::<Titled>().expect("decodes");
        assert!(Arc::ptr_eq(&first, &again), "copies share the decoded record");
        assert_eq!(*first, Titled { title: "one".into() });

        // Another type is decoded on its own, without disturbing the kept one.
        let plain = item.record_shared::<Map<String, Value>>().expect("decodes");
        assert_eq!(plain["title"], "one");
        assert!(Arc::ptr_eq(&first, &item.record_shared::<Titled>().expect("decodes")));

        let mut changed = copy;
        changed.set("title", "two");
        assert_eq!(changed.record_shared::<Titled>().expect("decodes").title, "two");
        assert_eq!(
            item.record_shared::<Titled>().expect("decodes").title,
            "one",
            "the original is unchanged"
        );
        assert!(matches!(
            Item::new("a", "b").record_shared::<Titled>(),
            Err(StoreError::InvalidItem(_))
        ));
    }
}
