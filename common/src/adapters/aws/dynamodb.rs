use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, ReturnValue, WriteRequest,
};
use serde_json::{Map, Value};

use super::describe;
use crate::store::{Condition, Cursor, Item, Page, Query, Store, StoreError, now_unix};

/// Name of the table's one global secondary index (keys `gsi1pk`, `gsi1sk`).
pub const GSI1: &str = "gsi1";

/// The `Store` port on one DynamoDB table with string keys `pk`/`sk`, a GSI `gsi1` on `gsi1pk`/`gsi1sk`
/// and TTL on `ttl`. DynamoDB deletes expired items only eventually, so reads and conditions treat an item
/// whose `ttl` has passed as absent.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

type Attributes = HashMap<String, AttributeValue>;

impl DynamoStore {
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn backend(err: impl std::error::Error) -> StoreError {
    StoreError::Backend(describe(err))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn key(pk: &str, sk: &str) -> Attributes {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn to_attributes(item: &Item) -> Result<Attributes, StoreError> {
    let mut attributes: Attributes =
        serde_dynamo::to_item(&item.attrs).map_err(|e| StoreError::InvalidItem(e.to_string()))?;
    attributes.extend(key(&item.pk, &item.sk));
    if let Some((ipk, isk)) = &item.index {
        attributes.insert("gsi1pk".into(), s(ipk));
        attributes.insert("gsi1sk".into(), s(isk));
    }
    if let Some(at) = item.expires_at {
        attributes.insert("ttl".into(), AttributeValue::N(at.to_string()));
    }
    Ok(attributes)
}

fn string(attributes: &mut Attributes, name: &str) -> Option<String> {
    match attributes.remove(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}

fn from_attributes(mut attributes: Attributes) -> Result<Item, StoreError> {
    let missing = || StoreError::Backend("an item without string keys pk and sk".into());
    let pk = string(&mut attributes, "pk").ok_or_else(missing)?;
    let sk = string(&mut attributes, "sk").ok_or_else(missing)?;
    let index = match (string(&mut attributes, "gsi1pk"), string(&mut attributes, "gsi1sk")) {
        (Some(ipk), Some(isk)) => Some((ipk, isk)),
        _ => None,
    };
    let expires_at = match attributes.remove("ttl") {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    };
    let attrs: Map<String, Value> =
        serde_dynamo::from_item(attributes).map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(Item {
        pk,
        sk,
        index,
        expires_at,
        attrs: std::sync::Arc::new(attrs.into()),
    })
}

/// A condition expression that also treats expired items as absent, with its names and values.
fn condition_expression(condition: &Condition) -> Result<(String, HashMap<String, String>, Attributes), StoreError> {
    let mut names = HashMap::from([("#ttl".to_owned(), "ttl".to_owned())]);
    let mut values = HashMap::from([(":now".to_owned(), AttributeValue::N(now_unix().to_string()))]);
    let live = "(attribute_not_exists(#ttl) OR #ttl > :now)";
    let expression = match condition {
        Condition::NotExists => "attribute_not_exists(pk) OR #ttl <= :now".to_owned(),
        Condition::Exists => format!("attribute_exists(pk) AND {live}"),
        Condition::Equals(name, value) => {
            names.insert("#a".into(), name.clone());
            let value = serde_dynamo::to_attribute_value(value).map_err(|e| StoreError::InvalidItem(e.to_string()))?;
            values.insert(":v".into(), value);
            format!("#a = :v AND {live}")
        }
    };
    Ok((expression, names, values))
}

fn cursor_key(cursor: &Cursor) -> Attributes {
    let mut start = key(&cursor.pk, &cursor.sk);
    if let Some((ipk, isk)) = &cursor.index {
        start.insert("gsi1pk".into(), s(ipk));
        start.insert("gsi1sk".into(), s(isk));
    }
    start
}

fn cursor_of(mut last: Attributes, on_index: bool) -> Option<Cursor> {
    let pk = string(&mut last, "pk")?;
    let sk = string(&mut last, "sk")?;
    let index = if on_index {
        Some((string(&mut last, "gsi1pk")?, string(&mut last, "gsi1sk")?))
    } else {
        None
    };
    Some(Cursor { pk, sk, index })
}

impl DynamoStore {
    async fn run_query(&self, index: Option<&str>, pk: &str, query: Query) -> Result<Page, StoreError> {
        let (pk_name, sk_name) = if index.is_some() {
            ("gsi1pk", "gsi1sk")
        } else {
            ("pk", "sk")
        };
        let mut names = HashMap::from([
            ("#pk".to_owned(), pk_name.to_owned()),
            ("#ttl".to_owned(), "ttl".to_owned()),
        ]);
        let mut values = HashMap::from([
            (":pk".to_owned(), s(pk)),
            (":now".to_owned(), AttributeValue::N(now_unix().to_string())),
        ]);
        let mut key_condition = "#pk = :pk".to_owned();
        if let Some(prefix) = query.sk_prefix.as_deref().filter(|p| !p.is_empty()) {
            names.insert("#sk".into(), sk_name.into());
            values.insert(":prefix".into(), s(prefix));
            key_condition.push_str(" AND begins_with(#sk, :prefix)");
        }
        if let Some(cursor) = &query.cursor
            && index.is_some() != cursor.index.is_some()
        {
            return Err(StoreError::InvalidCursor);
        }
        let request = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            // As the embedded store reads: a query of the table sees every write before it (the parts an
            // upload recorded just before it completes, say). An index cannot be read that way.
            .consistent_read(index.is_none())
            .key_condition_expression(key_condition)
            .filter_expression("attribute_not_exists(#ttl) OR #ttl > :now")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(!query.descending)
            .limit(i32::try_from(query.effective_limit()).unwrap_or(100));
        let mut start = query.cursor.as_ref().map(cursor_key);
        loop {
            let output = request
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            let items = output
                .items
                .unwrap_or_default()
                .into_iter()
                .map(from_attributes)
                .collect::<Result<Vec<_>, _>>()?;
            // DynamoDB applies the limit before the filter: a page of expired items it has yet to delete
            // comes back empty with more to read. Read on, so that an empty page means the end, as it
            // does in the embedded store (and readers that stop at one stop at the end).
            match output.last_evaluated_key {
                Some(last) if items.is_empty() => start = Some(last),
                last => {
                    let next = last.and_then(|last| cursor_of(last, index.is_some()));
                    return Ok(Page { items, next });
                }
            }
        }
    }
}

/// Keys a `BatchGetItem` request may carry.
const BATCH_KEYS: usize = 100;
/// Items a `BatchWriteItem` request may carry.
const BATCH_ITEMS: usize = 25;
/// Batch requests of one `write_batch` in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// Rounds of resending what DynamoDB left unprocessed (throttled) before giving up.
const BATCH_ROUNDS: u32 = 8;

impl DynamoStore {
    /// Sends one batch of at most [`BATCH_ITEMS`] requests, resending what comes back unprocessed with a
    /// growing pause.
    async fn send_batch(&self, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for round in 0..BATCH_ROUNDS {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(backend)?;
            requests = output
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(25 << round.min(5))).await;
        }
        Err(StoreError::Backend(format!(
            "{} writes of a batch were still unprocessed after {BATCH_ROUNDS} rounds",
            requests.len()
        )))
    }
}

impl DynamoStore {
    /// Reads one batch of at most [`BATCH_KEYS`] keys (consistently), asking again for what comes back
    /// unprocessed.
    async fn read_batch(&self, keys: Vec<Attributes>) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::with_capacity(keys.len());
        let mut keys = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(backend)?,
        );
        for round in 0..BATCH_ROUNDS {
            let Some(request) = keys.take() else {
                return Ok(items);
            };
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(backend)?;
            let now = now_unix();
            for attributes in output
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default()
            {
                let item = from_attributes(attributes)?;
                if !item.is_expired(now) {
                    items.push(item);
                }
            }
            keys = output
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.table))
                .filter(|left| !left.keys().is_empty());
            if keys.is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(25 << round.min(5))).await;
            }
        }
        match keys {
            None => Ok(items),
            Some(_) => Err(StoreError::Backend(format!(
                "reads of a batch were still unprocessed after {BATCH_ROUNDS} rounds"
            ))),
        }
    }
}

fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        match output.item {
            None => Ok(None),
            Some(attributes) => Ok(Some(from_attributes(attributes)?).filter(|item| !item.is_expired(now_unix()))),
        }
    }

    async fn get_batch(&self, keys: Vec<(String, String)>) -> Result<Vec<Item>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        let keys: Vec<Attributes> = keys.iter().map(|(pk, sk)| key(pk, sk)).collect();
        let batches: Vec<Vec<Attributes>> = keys.chunks(BATCH_KEYS).map(<[_]>::to_vec).collect();
        let found: Vec<Vec<Item>> = futures::stream::iter(batches)
            .map(|batch| self.read_batch(batch))
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> Result<(), StoreError> {
        item.validate()?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_attributes(&item)?));
        if let Some(condition) = &condition {
            let (expression, names, values) = condition_expression(condition)?;
            request = request
                .condition_expression(expression)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Err(StoreError::ConditionFailed),
            Err(err) => Err(backend(err)),
        }
    }

    async fn delete(&self, pk: &str, sk: &str, condition: Option<Condition>) -> Result<(), StoreError> {
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)));
        if let Some(condition) = &condition {
            let (expression, names, values) = condition_expression(condition)?;
            request = request
                .condition_expression(expression)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Err(StoreError::ConditionFailed),
            Err(err) => Err(backend(err)),
        }
    }

    async fn write_batch(&self, puts: Vec<Item>, deletes: Vec<(String, String)>) -> Result<(), StoreError> {
        use futures::{StreamExt, TryStreamExt};
        let mut requests = Vec::with_capacity(puts.len() + deletes.len());
        for item in &puts {
            item.validate()?;
            let put = PutRequest::builder()
                .set_item(Some(to_attributes(item)?))
                .build()
                .map_err(backend)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for (pk, sk) in &deletes {
            let delete = DeleteRequest::builder()
                .set_key(Some(key(pk, sk)))
                .build()
                .map_err(backend)?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        let batches: Vec<Vec<WriteRequest>> = requests.chunks(BATCH_ITEMS).map(<[_]>::to_vec).collect();
        futures::stream::iter(batches)
            .map(|batch| self.send_batch(batch))
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn increment(
        &self,
        pk: &str,
        sk: &str,
        attr: &str,
        by: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, StoreError> {
        Item::new(pk, sk).with(attr, 0).validate()?;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .expression_attribute_names("#a", attr)
            .expression_attribute_values(":by", AttributeValue::N(by.to_string()))
            .return_values(ReturnValue::AllNew);
        update = match expires_at {
            None => update.update_expression("ADD #a :by"),
            Some(at) => update
                .update_expression("ADD #a :by SET #ttl = if_not_exists(#ttl, :ttl)")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":ttl", AttributeValue::N(at.to_string())),
        };
        let output = update.send().await.map_err(backend)?;
        match output.attributes.and_then(|mut a| a.remove(attr)) {
            Some(AttributeValue::N(n)) => n
                .parse()
                .map_err(|_| StoreError::Backend(format!("counter {attr:?} is {n}"))),
            _ => Err(StoreError::Backend(format!("counter {attr:?} missing from the answer"))),
        }
    }

    async fn query(&self, pk: &str, query: Query) -> Result<Page, StoreError> {
        self.run_query(None, pk, query).await
    }

    async fn query_index(&self, index_pk: &str, query: Query) -> Result<Page, StoreError> {
        self.run_query(Some(GSI1), index_pk, query).await
    }
}
