use std::collections::HashSet;
use std::sync::Arc;

use common::store::{Condition, Item, Query, Store, StoreError, now_unix};
use serde_json::json;

fn unique(prefix: &str) -> String {
    format!("{prefix}#{}", uuid::Uuid::new_v4().simple())
}

pub async fn contract(store: Arc<dyn Store>) {
    round_trip(store.as_ref()).await;
    conditions(store.as_ref()).await;
    counters(store.clone()).await;
    exactly_one_creator(store.clone()).await;
    queries(store.as_ref()).await;
    index(store.as_ref()).await;
    expiry(store.as_ref()).await;
    batches(store.as_ref()).await;
}

/// A batch larger than one DynamoDB request writes and deletes every item it names, index keys included.
async fn batches(store: &dyn Store) {
    let pk = unique("search");
    let index = unique("owner");
    let puts: Vec<Item> = (0..60)
        .map(|n| {
            Item::new(&pk, format!("{n:03}"))
                .with("n", n)
                .indexed(&index, format!("{n:03}"))
        })
        .collect();
    store.write_batch(puts, Vec::new()).await.expect("batch of puts");
    let page = store.query(&pk, Query::default()).await.expect("query");
    assert_eq!(page.items.len(), 60);
    assert_eq!(page.items[59].attrs["n"], 59);
    let page = store.query_index(&index, Query::default()).await.expect("query index");
    assert_eq!(page.items.len(), 60);

    let replaced = vec![Item::new(&pk, "000").with("n", 1000)];
    let deletes: Vec<(String, String)> = (1..60).map(|n| (pk.clone(), format!("{n:03}"))).collect();
    store.write_batch(replaced, deletes).await.expect("mixed batch");
    let page = store.query(&pk, Query::default()).await.expect("query");
    assert_eq!(page.items.len(), 1, "the deletes of a batch all happened");
    assert_eq!(page.items[0].attrs["n"], 1000, "a put of a batch replaces the item");
    assert!(page.items[0].index.is_none());

    let invalid = vec![Item::new(&pk, "bad").with("gsi1pk", "x")];
    assert!(matches!(
        store.write_batch(invalid, Vec::new()).await,
        Err(StoreError::InvalidItem(_))
    ));
    store.write_batch(Vec::new(), Vec::new()).await.expect("an empty batch");

    // Batched reads: more keys than one DynamoDB request takes, over two partitions, some missing, one
    // expired.
    let other = unique("search");
    let puts: Vec<Item> = (0..150)
        .map(|n| Item::new(if n % 2 == 0 { &pk } else { &other }, format!("k{n:03}")).with("n", n))
        .chain(std::iter::once(Item::new(&other, "old").expiring_at(now_unix() - 5)))
        .collect();
    store.write_batch(puts, Vec::new()).await.expect("puts");
    let keys: Vec<(String, String)> = (0..150)
        .map(|n| (if n % 2 == 0 { pk.clone() } else { other.clone() }, format!("k{n:03}")))
        .chain((0..30).map(|n| (other.clone(), format!("missing{n}"))))
        .chain(std::iter::once((other.clone(), "old".to_owned())))
        .collect();
    let mut found: Vec<i64> = store
        .get_batch(keys)
        .await
        .expect("get_batch")
        .iter()
        .map(|item| item.attrs["n"].as_i64().expect("n"))
        .collect();
    found.sort_unstable();
    assert_eq!(found, (0..150).collect::<Vec<i64>>());
    assert!(store.get_batch(Vec::new()).await.expect("no keys").is_empty());
}

async fn round_trip(store: &dyn Store) {
    let pk = unique("video");
    assert!(store.get(&pk, "meta").await.expect("get").is_none());
    let item = Item::new(&pk, "meta")
        .with("title", "Ünïcode title")
        .with("size", 1_234_567_890_123i64)
        .with("ratio", 1.5)
        .with("ready", false)
        .with("cid", serde_json::Value::Null)
        .with("tags", json!(["a", "b"]))
        .with("access", json!({"type": "token", "chainId": 1, "tokenIds": ["1", "2"]}))
        .indexed("owner#0xabc", "2026-01-01T00:00:00Z")
        .expiring_at(now_unix() + 3600);
    store.put(item.clone(), None).await.expect("put");
    assert_eq!(store.get(&pk, "meta").await.expect("get"), Some(item.clone()));
    assert_eq!(
        store.get_shared(&pk, "meta").await.expect("get shared").as_deref(),
        Some(&item),
        "a shared read (from memory where the store keeps reads) answers as a read does"
    );

    assert!(matches!(
        store.put(Item::new(&pk, "meta").with("pk", "x"), None).await,
        Err(StoreError::InvalidItem(_))
    ));

    store.delete(&pk, "meta", None).await.expect("delete");
    assert!(store.get(&pk, "meta").await.expect("get").is_none());
    assert!(store.get_shared(&pk, "meta").await.expect("get shared").is_none());
    store
        .delete(&pk, "meta", None)
        .await
        .expect("deleting a missing item succeeds");
}

async fn conditions(store: &dyn Store) {
    let pk = unique("nonce");
    let item = Item::new(&pk, "n").with("state", "issued");
    store
        .put(item.clone(), Some(Condition::NotExists))
        .await
        .expect("create");
    assert!(matches!(
        store.put(item.clone(), Some(Condition::NotExists)).await,
        Err(StoreError::ConditionFailed)
    ));
    assert!(matches!(
        store.put(Item::new(unique("x"), "n"), Some(Condition::Exists)).await,
        Err(StoreError::ConditionFailed)
    ));

    let used = Item::new(&pk, "n").with("state", "used");
    let expect_issued = Condition::Equals("state".into(), json!("issued"));
    store
        .put(used.clone(), Some(expect_issued.clone()))
        .await
        .expect("issued → used");
    assert!(matches!(
        store.put(used, Some(expect_issued.clone())).await,
        Err(StoreError::ConditionFailed)
    ));

    assert!(matches!(
        store.delete(&pk, "n", Some(expect_issued)).await,
        Err(StoreError::ConditionFailed)
    ));
    store
        .delete(&pk, "n", Some(Condition::Equals("state".into(), json!("used"))))
        .await
        .expect("conditional delete");
    assert!(matches!(
        store.delete(&pk, "n", Some(Condition::Exists)).await,
        Err(StoreError::ConditionFailed)
    ));
}

async fn counters(store: Arc<dyn Store>) {
    let pk = unique("jobs");
    assert_eq!(
        store.increment(&pk, "progress", "done", 1, None).await.expect("create"),
        1
    );
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let pk = pk.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                store
                    .increment(&pk, "progress", "done", 2, None)
                    .await
                    .expect("increment");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(
        store.increment(&pk, "progress", "done", 0, None).await.expect("read"),
        101
    );
    assert_eq!(
        store
            .increment(&pk, "progress", "done", -1, None)
            .await
            .expect("decrement"),
        100
    );
    let item = store.get(&pk, "progress").await.expect("get").expect("exists");
    assert_eq!(item.attrs["done"], json!(100));
    assert_eq!(item.expires_at, None);

    // A counter created with an expiry keeps the first one it was given, and is gone after it.
    let window = unique("limit");
    let at = now_unix() + 600;
    assert_eq!(
        store
            .increment(&window, "w", "count", 1, Some(at))
            .await
            .expect("create"),
        1
    );
    assert_eq!(
        store
            .increment(&window, "w", "count", 1, Some(at + 60))
            .await
            .expect("count"),
        2
    );
    let item = store.get(&window, "w").await.expect("get").expect("exists");
    assert_eq!(item.expires_at, Some(at));
    // One without an expiry takes the one given.
    store
        .increment(&pk, "progress", "done", 1, Some(at))
        .await
        .expect("count on");
    let item = store.get(&pk, "progress").await.expect("get").expect("exists");
    assert_eq!(item.expires_at, Some(at));
    let past = unique("limit");
    store
        .increment(&past, "w", "count", 1, Some(now_unix() - 1))
        .await
        .expect("create expired");
    assert_eq!(store.get(&past, "w").await.expect("get"), None);
}

async fn exactly_one_creator(store: Arc<dyn Store>) {
    let pk = unique("upload");
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let pk = pk.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put(
                    Item::new(&pk, "lock").with("writer", writer),
                    Some(Condition::NotExists),
                )
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => wins += 1,
            Err(StoreError::ConditionFailed) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn queries(store: &dyn Store) {
    let pk = unique("video");
    for i in (0..25).rev() {
        store
            .put(Item::new(&pk, format!("job#{i:03}")).with("i", i), None)
            .await
            .expect("put");
    }
    store.put(Item::new(&pk, "meta"), None).await.expect("put meta");
    store
        .put(Item::new(&pk, "job").with("i", -1), None)
        .await
        .expect("put bare");

    let all = store.query(&pk, Query::prefix("job#")).await.expect("query");
    let order: Vec<i64> = all
        .items
        .iter()
        .map(|item| item.attrs["i"].as_i64().expect("i"))
        .collect();
    assert_eq!(order, (0..25).collect::<Vec<_>>());
    let shared = store
        .query_shared(&pk, Query::prefix("job#"))
        .await
        .expect("query shared");
    assert_eq!(shared.items, all.items, "a shared query answers as a query does");

    // Pages of 10 visit every item once, in order.
    let mut seen = Vec::new();
    let mut query = Query {
        limit: Some(10),
        ..Query::prefix("job#")
    };
    loop {
        let page = store.query(&pk, query.clone()).await.expect("page");
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|item| item.sk.clone()));
        match page.next {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).map(|i| format!("job#{i:03}")).collect::<Vec<_>>());

    let newest = store
        .query(
            &pk,
            Query {
                limit: Some(3),
                descending: true,
                ..Query::prefix("job#")
            },
        )
        .await
        .expect("desc");
    let keys: Vec<&str> = newest.items.iter().map(|item| item.sk.as_str()).collect();
    assert_eq!(keys, ["job#024", "job#023", "job#022"]);
    assert!(newest.next.is_some());

    let everything = store.query(&pk, Query::default()).await.expect("whole partition");
    assert_eq!(everything.items.len(), 27);
}

async fn index(store: &dyn Store) {
    let owner = unique("owner");
    let mut expected = Vec::new();
    for i in 0..12 {
        let pk = unique("video");
        let at = format!("2026-01-{:02}T00:00:00Z", i + 1);
        store
            .put(Item::new(&pk, "meta").with("n", i).indexed(&owner, &at), None)
            .await
            .expect("put");
        expected.push(pk);
    }
    store
        .put(
            Item::new(unique("video"), "meta").indexed(unique("owner"), "2026"),
            None,
        )
        .await
        .expect("other owner");
    store
        .put(Item::new(unique("video"), "meta"), None)
        .await
        .expect("unindexed");

    let mut seen = Vec::new();
    let mut query = Query {
        limit: Some(5),
        descending: true,
        ..Query::default()
    };
    loop {
        let page = store.query_index(&owner, query.clone()).await.expect("index page");
        seen.extend(page.items.iter().map(|item| item.pk.clone()));
        match page.next {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    expected.reverse();
    assert_eq!(seen, expected, "newest first, every item once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 12);

    let january_1x = store
        .query_index(&owner, Query::prefix("2026-01-1"))
        .await
        .expect("prefix");
    assert_eq!(january_1x.items.len(), 3);
}

async fn expiry(store: &dyn Store) {
    let pk = unique("session");
    store
        .put(Item::new(&pk, "s").with("v", 1).expiring_at(now_unix() - 1), None)
        .await
        .expect("put expired");
    assert!(
        store.get(&pk, "s").await.expect("get").is_none(),
        "expired items are gone for readers"
    );
    assert!(
        store
            .query(&pk, Query::default())
            .await
            .expect("query")
            .items
            .is_empty()
    );
    store
        .put(Item::new(&pk, "s").with("v", 2), Some(Condition::NotExists))
        .await
        .expect("an expired item counts as absent");
    assert_eq!(
        store.get(&pk, "s").await.expect("get").expect("live").attrs["v"],
        json!(2)
    );

    // Expired items not yet deleted, more than a page holds, before a live one: the first page still
    // finds the live one, not an empty page that readers would take for the end.
    let pk = unique("expired-first");
    for sk in ["a1", "a2", "a3", "a4", "a5"] {
        let item = Item::new(&pk, sk).with("v", 0).expiring_at(now_unix() - 1);
        store.put(item, None).await.expect("put expired");
    }
    store
        .put(Item::new(&pk, "b").with("v", 1), None)
        .await
        .expect("put live");
    let query = Query {
        limit: Some(2),
        ..Query::default()
    };
    let page = store.query(&pk, query).await.expect("query");
    let found: Vec<&str> = page.items.iter().map(|item| item.sk.as_str()).collect();
    assert_eq!(found, ["b"]);
}
