use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde_json::{Map, Value};

use super::db::LocalDb;
use crate::store::{Condition, Cursor, Item, Page, Query, Store, StoreError, now_unix};

/// The `Store` port on SQLite.
#[derive(Clone)]
pub struct LocalStore {
    db: LocalDb,
}

impl LocalStore {
    pub fn new(db: LocalDb) -> Self {
        Self { db }
    }

    /// Deletes expired items; readers already ignore them, this reclaims their space.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        self.db
            .call(|conn| {
                Ok(conn.execute(
                    "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                    [now_unix()],
                )?)
            })
            .await
    }
}

fn sqlite(err: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {err}"))
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        sqlite(err)
    }
}

const COLUMNS: &str = "pk, sk, attrs, gsi1pk, gsi1sk, expires_at";

fn read_item(row: &Row<'_>) -> rusqlite::Result<Item> {
    let attrs: String = row.get(2)?;
    let attrs: Map<String, Value> = serde_json::from_str(&attrs)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?;
    let index = match (row.get::<_, Option<String>>(3)?, row.get::<_, Option<String>>(4)?) {
        (Some(pk), Some(sk)) => Some((pk, sk)),
        _ => None,
    };
    Ok(Item {
        pk: row.get(0)?,
        sk: row.get(1)?,
        index,
        expires_at: row.get(5)?,
        attrs: Arc::new(attrs.into()),
    })
}

fn current(conn: &rusqlite::Connection, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
    let item = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"))?
        .query_row(params![pk, sk], read_item)
        .optional()?;
    Ok(item.filter(|item| !item.is_expired(now_unix())))
}

fn check(condition: Option<&Condition>, existing: Option<&Item>) -> Result<(), StoreError> {
    let holds = match condition {
        None => true,
        Some(Condition::NotExists) => existing.is_none(),
        Some(Condition::Exists) => existing.is_some(),
        Some(Condition::Equals(name, value)) => existing.and_then(|item| item.attrs.get(name)) == Some(value),
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::ConditionFailed)
    }
}

fn write(tx: &Transaction<'_>, item: &Item) -> Result<(), StoreError> {
    let attrs = serde_json::to_string(&item.attrs).map_err(|e| StoreError::InvalidItem(e.to_string()))?;
    let (ipk, isk) = item.index.clone().unzip();
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO items ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![item.pk, item.sk, attrs, ipk, isk, item.expires_at])?;
    Ok(())
}

/// The smallest string greater than every string that starts with `prefix` and goes on with any
/// character below U+10FFFF (SQLite compares text bytewise).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl LocalStore {
    /// Runs a write of `pk`/`sk`, keeping the read cache (if any) exact.
    async fn writing<T>(
        &self,
        pk: &str,
        sk: &str,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = write.await;
        if let Some(cache) = self.db.read_cache() {
            cache.written(pk, sk).await;
        }
        result
    }

    async fn put_now(&self, item: Item, condition: Option<Condition>) -> Result<(), StoreError> {
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if condition.is_some() {
                    check(condition.as_ref(), current(&tx, &item.pk, &item.sk)?.as_ref())?;
                }
                write(&tx, &item)?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn delete_now(&self, pk: &str, sk: &str, condition: Option<Condition>) -> Result<(), StoreError> {
        let (pk, sk) = (pk.to_owned(), sk.to_owned());
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if condition.is_some() {
                    check(condition.as_ref(), current(&tx, &pk, &sk)?.as_ref())?;
                }
                tx.execute("DELETE FROM items WHERE pk = ?1 AND sk = ?2", params![pk, sk])?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn write_batch_now(&self, puts: Vec<Item>, deletes: Vec<(String, String)>) -> Result<(), StoreError> {
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                for item in &puts {
                    write(&tx, item)?;
                }
                {
                    let mut delete = tx.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")?;
                    for (pk, sk) in &deletes {
                        delete.execute(params![pk, sk])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn increment_now(
        &self,
        pk: &str,
        sk: &str,
        attr: &str,
        by: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut item = Item::new(pk, sk).with(attr, 0);
        item.expires_at = expires_at;
        item.validate()?;
        let attr = attr.to_owned();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if let Some(existing) = current(&tx, &item.pk, &item.sk)? {
                    // An item without an expiry takes the one given, as in DynamoDB.
                    let expires_at = existing.expires_at.or(item.expires_at);
                    item = existing;
                    item.expires_at = expires_at;
                }
                let value = match item.attrs.get(&attr) {
                    None => 0,
                    Some(value) => value
                        .as_i64()
                        .ok_or_else(|| StoreError::InvalidItem(format!("attribute {attr:?} is not an integer")))?,
                };
                let value = value
                    .checked_add(by)
                    .ok_or_else(|| StoreError::InvalidItem(format!("attribute {attr:?} would overflow")))?;
                item.set(&attr, value);
                write(&tx, &item)?;
                tx.commit()?;
                Ok(value)
            })
            .await
    }

    async fn query_now(&self, pk: &str, query: Query) -> Result<Page, StoreError> {
        let pk = pk.to_owned();
        self.db
            .read(move |conn| {
                let prefix = query.sk_prefix.clone().unwrap_or_default();
                let (cmp, order) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
                let after = query.cursor.as_ref().map(|c| c.sk.clone());
                let sql = format!(
                    "SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk >= ?2 AND sk < ?3 \
                     AND (expires_at IS NULL OR expires_at > ?4) AND (?5 IS NULL OR sk {cmp} ?5) \
                     ORDER BY sk {order} LIMIT ?6"
                );
                let limit = query.effective_limit();
                let mut statement = conn.prepare_cached(&sql)?;
                let items = statement
                    .query_map(
                        params![pk, prefix, prefix_end(&prefix), now_unix(), after, limit],
                        read_item,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(page(items, limit, false))
            })
            .await
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let cache = self.db.read_cache();
        if let Some(cache) = cache
            && let Some(known) = cache.item(pk, sk)
        {
            return Ok(known.map(Arc::unwrap_or_clone));
        }
        let ticket = cache.map(|c| c.ticket());
        let item = self.db.read(|conn| current(conn, pk, sk)).await?;
        match (cache, ticket) {
            (Some(cache), Some(ticket)) => {
                let item = item.map(Arc::new);
                cache.keep_item(ticket, pk, sk, &item).await;
                Ok(item.map(Arc::unwrap_or_clone))
            }
            _ => Ok(item),
        }
    }

    /// Reads the database directly, one statement per partition: batches serve lookups of many keys,
    /// which would only churn the read cache.
    async fn get_batch(&self, keys: Vec<(String, String)>) -> Result<Vec<Item>, StoreError> {
        let mut by_partition: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        for (pk, sk) in keys {
            by_partition.entry(pk).or_default().push(sk);
        }
        self.db
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk IN (SELECT value FROM json_each(?2)) \
                     AND (expires_at IS NULL OR expires_at > ?3)"
                ))?;
                let mut items = Vec::new();
                for (pk, sks) in &by_partition {
                    let sks = serde_json::to_string(sks).map_err(StoreError::backend)?;
                    for item in statement.query_map(params![pk, sks, now_unix()], read_item)? {
                        items.push(item?);
                    }
                }
                Ok(items)
            })
            .await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> Result<(), StoreError> {
        item.validate()?;
        let (pk, sk) = (item.pk.clone(), item.sk.clone());
        self.writing(&pk, &sk, self.put_now(item, condition)).await
    }

    async fn delete(&self, pk: &str, sk: &str, condition: Option<Condition>) -> Result<(), StoreError> {
        self.writing(pk, sk, self.delete_now(pk, sk, condition)).await
    }

    async fn write_batch(&self, puts: Vec<Item>, deletes: Vec<(String, String)>) -> Result<(), StoreError> {
        for item in &puts {
            item.validate()?;
        }
        let keys: Vec<(String, String)> = puts
            .iter()
            .map(|item| (item.pk.clone(), item.sk.clone()))
            .chain(deletes.iter().cloned())
            .collect();
        let result = self.write_batch_now(puts, deletes).await;
        if let Some(cache) = self.db.read_cache() {
            cache.written_many(&keys).await;
        }
        result
    }

    async fn increment(
        &self,
        pk: &str,
        sk: &str,
        attr: &str,
        by: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, StoreError> {
        self.writing(pk, sk, self.increment_now(pk, sk, attr, by, expires_at))
            .await
    }

    async fn query(&self, pk: &str, query: Query) -> Result<Page, StoreError> {
        let cache = self.db.read_cache();
        if let Some(cache) = cache
            && let Some(page) = cache.page(pk, &query)
        {
            return Ok(Arc::unwrap_or_clone(page));
        }
        let ticket = cache.map(|c| c.ticket());
        let page = self.query_now(pk, query.clone()).await?;
        match (cache, ticket) {
            (Some(cache), Some(ticket)) => {
                let page = Arc::new(page);
                cache.keep_page(ticket, pk, &query, &page).await;
                Ok(Arc::unwrap_or_clone(page))
            }
            _ => Ok(page),
        }
    }

    fn get_kept(&self, pk: &str, sk: &str) -> Option<Option<Arc<Item>>> {
        self.db.read_cache()?.item(pk, sk)
    }

    fn query_kept(&self, pk: &str, query: &Query) -> Option<Arc<Page>> {
        self.db.read_cache()?.page(pk, query)
    }

    async fn query_index(&self, index_pk: &str, query: Query) -> Result<Page, StoreError> {
        let index_pk = index_pk.to_owned();
        let after = match &query.cursor {
            None => None,
            Some(Cursor {
                pk,
                sk,
                index: Some((_, isk)),
            }) => Some((isk.clone(), pk.clone(), sk.clone())),
            Some(_) => return Err(StoreError::InvalidCursor),
        };
        self.db
            .read(move |conn| {
                let prefix = query.sk_prefix.clone().unwrap_or_default();
                let (cmp, order) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
                let (a_isk, a_pk, a_sk) = after.unzip3();
                let sql = format!(
                    "SELECT {COLUMNS} FROM items WHERE gsi1pk = ?1 AND gsi1sk >= ?2 AND gsi1sk < ?3 \
                     AND (expires_at IS NULL OR expires_at > ?4) \
                     AND (?5 IS NULL OR (gsi1sk, pk, sk) {cmp} (?5, ?6, ?7)) \
                     ORDER BY gsi1sk {order}, pk {order}, sk {order} LIMIT ?8"
                );
                let limit = query.effective_limit();
                let mut statement = conn.prepare_cached(&sql)?;
                let items = statement
                    .query_map(
                        params![
                            index_pk,
                            prefix,
                            prefix_end(&prefix),
                            now_unix(),
                            a_isk,
                            a_pk,
                            a_sk,
                            limit
                        ],
                        read_item,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(page(items, limit, true))
            })
            .await
    }
}

fn page(items: Vec<Item>, limit: u32, on_index: bool) -> Page {
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|item| Cursor::of(item, on_index)))
        .flatten();
    Page { items, next }
}

trait Unzip3<A, B, C> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>);
}

impl<A, B, C> Unzip3<A, B, C> for Option<(A, B, C)> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>) {
        match self {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        }
    }
}
