//! Items and partition pages of the embedded store recently read, kept in memory while one process owns
//! the database (`streamgate-local`, which locks its data dir): every write then passes through this
//! process, so every write can drop what it changes and the cache is never stale.
//!
//! A read that raced a write must not leave the old value behind. Writers bump a generation before they
//! write and drop the keys after; a reader notes the generation before it reads the database, caches
//! the answer only if no write began meanwhile, and drops it again if one began while it was caching.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{Item, Page, Query, now_unix};

/// Items (found or known to be missing) kept at once.
const ITEMS: u64 = 50_000;
/// Partitions whose pages are kept at once.
const PARTITIONS: u64 = 10_000;

type ItemKey = (String, String);
/// The pages of one partition read so far, by the query that read them.
type Pages = Arc<Vec<(String, Page)>>;

pub(crate) struct StoreCache {
    items: moka::future::Cache<ItemKey, Option<Item>>,
    pages: moka::future::Cache<String, Pages>,
    generation: AtomicU64,
}

/// The generation a read started at.
pub(crate) struct ReadTicket(u64);

fn query_key(query: &Query) -> String {
    format!("{query:?}")
}

impl StoreCache {
    pub(crate) fn new() -> Self {
        Self {
            items: moka::future::Cache::new(ITEMS),
            pages: moka::future::Cache::new(PARTITIONS),
            generation: AtomicU64::new(0),
        }
    }

    /// The item as last read, if it is known and has not expired since (`Some(None)`: known missing).
    pub(crate) async fn item(&self, pk: &str, sk: &str) -> Option<Option<Item>> {
        let cached = self.items.get(&(pk.to_owned(), sk.to_owned())).await?;
        let now = now_unix();
        Some(cached.filter(|item| !item.is_expired(now)))
    }

    /// A page of the partition as last read, without items that expired since.
    pub(crate) async fn page(&self, pk: &str, query: &Query) -> Option<Page> {
        let pages = self.pages.get(pk).await?;
        let key = query_key(query);
        let (_, page) = pages.iter().find(|(k, _)| *k == key)?;
        let now = now_unix();
        let mut page = page.clone();
        page.items.retain(|item| !item.is_expired(now));
        Some(page)
    }

    pub(crate) fn ticket(&self) -> ReadTicket {
        ReadTicket(self.generation.load(Ordering::Acquire))
    }

    fn unchanged_since(&self, ticket: &ReadTicket) -> bool {
        self.generation.load(Ordering::Acquire) == ticket.0
    }

    pub(crate) async fn keep_item(&self, ticket: ReadTicket, pk: &str, sk: &str, item: &Option<Item>) {
        if !self.unchanged_since(&ticket) {
            return;
        }
        let key = (pk.to_owned(), sk.to_owned());
        self.items.insert(key.clone(), item.clone()).await;
        if !self.unchanged_since(&ticket) {
            self.items.invalidate(&key).await;
        }
    }

    pub(crate) async fn keep_page(&self, ticket: ReadTicket, pk: &str, query: &Query, page: &Page) {
        if !self.unchanged_since(&ticket) {
            return;
        }
        let key = query_key(query);
        let mut pages: Vec<(String, Page)> = match self.pages.get(pk).await {
            Some(pages) => pages.iter().filter(|(k, _)| *k != key).cloned().collect(),
            None => Vec::new(),
        };
        pages.push((key, page.clone()));
        self.pages.insert(pk.to_owned(), Arc::new(pages)).await;
        if !self.unchanged_since(&ticket) {
            self.pages.invalidate(pk).await;
        }
    }

    /// Called before a write of `pk`/`sk` starts: reads under way will not cache what they read.
    pub(crate) fn writing(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Called once a write of `pk`/`sk` is done (or failed): drops what it may have changed.
    pub(crate) async fn written(&self, pk: &str, sk: &str) {
        self.items.invalidate(&(pk.to_owned(), sk.to_owned())).await;
        self.pages.invalidate(pk).await;
    }
}
