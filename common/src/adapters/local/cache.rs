//! Items and partition pages of the embedded store recently read, kept in memory while one process owns
//! the database (`streamgate-local`, which locks its data dir): every write then passes through this
//! process, so every write can drop what it changes and the cache is never stale.
//!
//! A read that raced a write must not leave the old value behind, not even for a moment. Each write, once
//! committed, bumps a generation and drops what it changed; a reader notes the generation before it
//! reads the database and caches its answer only if the generation has not moved. The check and the
//! caching happen under the same gate as the bump and the dropping, so no old value is ever visible
//! once a write has returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{Item, Page, Query, now_unix};

/// Items (found or known to be missing) kept at once.
const ITEMS: usize = 50_000;
/// Partitions whose pages are kept at once.
const PARTITIONS: usize = 10_000;
/// Pages kept per partition (the latest read).
const PAGES_PER_PARTITION: usize = 16;
/// Pages of more items are not kept: copying one out of the cache costs about what reading it does.
const PAGE_ITEMS: usize = 32;

type ItemKey = (String, String);

/// An [`ItemKey`] to look up without copying its strings; hashes as the tuple does.
#[derive(Hash)]
struct ItemKeyRef<'a>(&'a str, &'a str);

impl quick_cache::Equivalent<ItemKey> for ItemKeyRef<'_> {
    fn equivalent(&self, key: &ItemKey) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}
/// The pages of one partition read so far, by the query that read them.
type Pages = Arc<Vec<(Query, Arc<Page>)>>;

/// The caches are quick_cache's: a lookup is a hash and a shard's read lock, with no bookkeeping queued
/// for later, which matters at several lookups per request.
pub(crate) struct StoreCache {
    items: quick_cache::sync::Cache<ItemKey, Option<Arc<Item>>>,
    pages: quick_cache::sync::Cache<String, Pages>,
    generation: AtomicU64,
    /// Held while a reader checks the generation and caches, and while a writer bumps and drops.
    gate: tokio::sync::Mutex<()>,
}

/// The generation a read started at.
pub(crate) struct ReadTicket(u64);

impl StoreCache {
    pub(crate) fn new() -> Self {
        Self {
            items: quick_cache::sync::Cache::new(ITEMS),
            pages: quick_cache::sync::Cache::new(PARTITIONS),
            generation: AtomicU64::new(0),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// The item as last read, if it is known (`Some(None)`: known missing, or expired since).
    pub(crate) fn item(&self, pk: &str, sk: &str) -> Option<Option<Arc<Item>>> {
        let cached = self.items.get(&ItemKeyRef(pk, sk))?;
        // The clock is read only for items that expire: most never do.
        Some(cached.filter(|item| item.expires_at.is_none() || !item.is_expired(now_unix())))
    }

    /// A page of the partition as last read, if none of its items has expired since (the database
    /// answers the same query without them).
    pub(crate) fn page(&self, pk: &str, query: &Query) -> Option<Arc<Page>> {
        let pages = self.pages.get(pk)?;
        let (_, page) = pages.iter().find(|(q, _)| q == query)?;
        let mut expiring = page.items.iter().filter(|item| item.expires_at.is_some()).peekable();
        if expiring.peek().is_some() {
            let now = now_unix();
            if expiring.any(|item| item.is_expired(now)) {
                return None;
            }
        }
        Some(page.clone())
    }

    pub(crate) fn ticket(&self) -> ReadTicket {
        ReadTicket(self.generation.load(Ordering::Acquire))
    }

    fn unchanged_since(&self, ticket: &ReadTicket) -> bool {
        self.generation.load(Ordering::Acquire) == ticket.0
    }

    pub(crate) async fn keep_item(&self, ticket: ReadTicket, pk: &str, sk: &str, item: &Option<Arc<Item>>) {
        let _gate = self.gate.lock().await;
        if self.unchanged_since(&ticket) {
            self.items.insert((pk.to_owned(), sk.to_owned()), item.clone());
        }
    }

    pub(crate) async fn keep_page(&self, ticket: ReadTicket, pk: &str, query: &Query, page: &Arc<Page>) {
        if page.items.len() > PAGE_ITEMS {
            return;
        }
        let _gate = self.gate.lock().await;
        if !self.unchanged_since(&ticket) {
            return;
        }
        let mut pages: Vec<(Query, Arc<Page>)> = match self.pages.get(pk) {
            Some(pages) => pages.iter().filter(|(q, _)| q != query).cloned().collect(),
            None => Vec::new(),
        };
        if pages.len() >= PAGES_PER_PARTITION {
            pages.remove(0);
        }
        pages.push((query.clone(), page.clone()));
        self.pages.insert(pk.to_owned(), Arc::new(pages));
    }

    /// Called once a write of `pk`/`sk` is committed (or failed), before it returns: reads under way will
    /// not cache what they read, and what it may have changed is dropped.
    pub(crate) async fn written(&self, pk: &str, sk: &str) {
        self.written_many(&[(pk.to_owned(), sk.to_owned())]).await;
    }

    /// [`StoreCache::written`] for every key a batch wrote.
    pub(crate) async fn written_many(&self, keys: &[(String, String)]) {
        let _gate = self.gate.lock().await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        for key in keys {
            self.items.remove(key);
            self.pages.remove(key.0.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_items_are_found_by_their_keys_until_written() {
        let cache = StoreCache::new();
        let item = Some(Arc::new(Item::new("video#1", "meta").with("title", "one")));
        cache.keep_item(cache.ticket(), "video#1", "meta", &item).await;
        cache.keep_item(cache.ticket(), "video#1", "gone", &None).await;
        assert_eq!(cache.item("video#1", "meta"), Some(item));
        assert_eq!(cache.item("video#1", "gone"), Some(None), "known missing");
        assert_eq!(cache.item("video#1", "other"), None, "never read");
        assert_eq!(cache.item("video#", "1meta"), None, "keys are not joined");
        cache.written("video#1", "meta").await;
        assert_eq!(cache.item("video#1", "meta"), None);
    }

    #[tokio::test]
    async fn kept_items_and_pages_go_once_an_item_expires() {
        let cache = StoreCache::new();
        let past = now_unix() - 1;
        let expired = Item::new("session#1", "s").expiring_at(past);
        cache
            .keep_item(cache.ticket(), "session#1", "s", &Some(Arc::new(expired.clone())))
            .await;
        assert_eq!(
            cache.item("session#1", "s"),
            Some(None),
            "an expired item is known missing"
        );

        let live = Item::new("session#2", "a").expiring_at(now_unix() + 3600);
        let query = Query::default();
        let page = |items| Arc::new(Page { items, next: None });
        cache
            .keep_page(cache.ticket(), "session#2", &query, &page(vec![live.clone()]))
            .await;
        assert_eq!(cache.page("session#2", &query).expect("kept").items, vec![live.clone()]);
        cache
            .keep_page(
                cache.ticket(),
                "session#2",
                &query,
                &page(vec![Item::new("session#2", "0"), live, expired]),
            )
            .await;
        assert!(
            cache.page("session#2", &query).is_none(),
            "read again, without the expired item"
        );
    }
}
