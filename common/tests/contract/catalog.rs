//! The catalog over a `Store`: listings and search as the API serves them, and the index kept in step
//! with every write. Run on each adapter.

use std::collections::HashSet;
use std::sync::Arc;

use common::catalog::text::{query_terms, terms};
use common::catalog::{ListError, Listing, Video, VideoStatus, Videos};
use common::ids::VideoId;
use common::store::{Query, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALICE: &str = "0x00000000000000000000000000000000000A11cE";
const BOB: &str = "0x0000000000000000000000000000000000000B0b";
const CAROL: &str = "0x00000000000000000000000000000000000CA401";

fn video(owner: &str, title: &str, tags: &[&str], description: &str, status: VideoStatus) -> Video {
    let mut video = Video::new(VideoId::generate(), owner);
    video.title = title.to_owned();
    video.description = description.to_owned();
    video.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    video.status = status;
    video.progress = if status == VideoStatus::Ready { 100 } else { 0 };
    video
}

async fn add(videos: &Videos, title: &str, tags: &[&str], description: &str) -> VideoId {
    let video = video(ALICE, title, tags, description, VideoStatus::Ready);
    videos.create(&video).await.expect("create");
    video.id
}

fn search(q: &str, limit: usize) -> Listing {
    Listing {
        terms: query_terms(q).expect("query"),
        limit,
        ..Listing::default()
    }
}

/// Every page of a listing, in order.
async fn all_pages(videos: &Videos, mut listing: Listing) -> Vec<VideoId> {
    let mut ids = Vec::new();
    loop {
        let page = videos.list(&listing).await.expect("list");
        assert!(page.items.len() <= listing.limit);
        ids.extend(page.items.into_iter().map(|v| v.id));
        match page.next_cursor {
            Some(cursor) => listing.cursor = Some(cursor),
            None => return ids,
        }
    }
}

async fn found(videos: &Videos, q: &str) -> Vec<VideoId> {
    all_pages(videos, search(q, 20)).await
}

/// How much of the randomised comparison to run: the emulator answers each call in milliseconds.
pub struct Scale {
    pub videos: usize,
    pub rounds: usize,
}

/// `store` may be shared; `empty` must hold no video, as the randomised comparison scans all it holds.
pub async fn contract(store: Arc<dyn Store>, empty: Arc<dyn Store>, scale: Scale) {
    words_and_ranking(store.clone()).await;
    owners(store.clone()).await;
    lists_that_start_alike(store.clone()).await;
    entries_left_behind_never_end_a_listing(store).await;
    agrees_with_a_plain_scan(empty, 0x5eed, scale).await;
}

/// Index entries of videos whose records are gone (a delete that raced an edit once left them) are read
/// past: every page is full, and the last one ends the listing.
async fn entries_left_behind_never_end_a_listing(store: Arc<dyn Store>) {
    let videos = Videos::new(store.clone());
    let mut kept = Vec::new();
    for n in 0..5 {
        kept.push(add(&videos, &format!("heron number {n}"), &[], "").await);
    }
    // Newer than all of them, so first in every list.
    for _ in 0..3 {
        let gone = add(&videos, "heron", &[], "").await;
        store
            .delete(&format!("video#{gone}"), "meta", None)
            .await
            .expect("delete the record alone");
    }
    kept.reverse();
    assert_eq!(all_pages(&videos, search("heron", 2)).await, kept);
    let page = videos.list(&search("heron", 2)).await.expect("list");
    assert_eq!(page.items.len(), 2);
    assert!(page.next_cursor.is_some());
}

async fn words_and_ranking(store: Arc<dyn Store>) {
    let videos = Videos::new(store.clone());
    let funny = add(&videos, "Funny cat compilation", &["cats"], "The best of 2026").await;
    let latte = add(&videos, "Café au lait tutorial", &[], "How to make coffee").await;
    let tokyo = add(&videos, "Cat CAFÉ in Tokyo", &["travel"], "").await;
    let dogs = add(&videos, "Dog training", &[], "Not a feline in sight").await;
    let hidden = video(ALICE, "Cat secrets", &[], "", VideoStatus::Processing);
    videos.create(&hidden).await.expect("create");

    assert_eq!(
        found(&videos, "cafe").await,
        [tokyo.clone(), latte.clone()],
        "accents and case fold"
    );
    assert_eq!(found(&videos, "CAFÉ").await, [tokyo.clone(), latte.clone()]);
    assert_eq!(
        found(&videos, "ca").await,
        [tokyo.clone(), latte.clone(), funny.clone()],
        "the last word is a prefix"
    );
    assert_eq!(
        found(&videos, "cat ").await,
        [tokyo.clone(), funny.clone()],
        "a finished word is whole"
    );
    assert_eq!(
        found(&videos, "cat caf").await,
        [tokyo.clone(), latte.clone(), funny.clone()],
        "both words first, then one, newest first"
    );
    assert_eq!(
        found(&videos, "feline").await,
        vec![dogs.clone()],
        "descriptions are searched"
    );
    assert_eq!(found(&videos, "travel").await, vec![tokyo.clone()], "tags are searched");
    assert!(found(&videos, "zebra").await.is_empty());
    assert_eq!(
        all_pages(
            &videos,
            Listing {
                limit: 3,
                ..Listing::default()
            }
        )
        .await,
        [dogs.clone(), tokyo.clone(), latte.clone(), funny.clone()],
        "without words: every ready video, newest first"
    );

    // Pages go on where they stopped, even as videos are added between them.
    let mut listing = search("ca", 2);
    let first = videos.list(&listing).await.expect("page 1");
    assert_eq!(
        first.items.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        [tokyo.clone(), latte.clone()]
    );
    add(&videos, "Caterpillars up close", &[], "").await;
    listing.cursor = first.next_cursor.clone();
    let second = videos.list(&listing).await.expect("page 2");
    assert_eq!(
        second.items.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        vec![funny.clone()]
    );
    assert!(second.next_cursor.is_none());

    // A cursor belongs to its listing.
    let mut other = search("dog", 2);
    other.cursor = first.next_cursor.clone();
    assert!(matches!(videos.list(&other).await, Err(ListError::InvalidCursor)));
    other.cursor = Some("garbage".into());
    assert!(matches!(videos.list(&other).await, Err(ListError::InvalidCursor)));

    // Edits move the index with the record.
    videos
        .update(&dogs, |v| {
            v.title = "Cat training".into();
            true
        })
        .await
        .expect("edit");
    assert!(found(&videos, "dog").await.is_empty(), "the old title's words are gone");
    assert_eq!(found(&videos, "cat ").await[0], dogs, "the new title's words are found");
    let count = store
        .query("search#w:dog", Query::default())
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(count, 0, "the old entries were taken off their lists");

    // A video that stops being ready leaves the lists; so does a deleted one, with all its records.
    videos
        .update(&tokyo, |v| {
            v.status = VideoStatus::Failed;
            true
        })
        .await
        .expect("fail");
    assert!(found(&videos, "tokyo").await.is_empty());
    store
        .put(
            common::store::Item::new(format!("video#{funny}"), "key").with("key", "00"),
            None,
        )
        .await
        .expect("key item");
    videos.delete(&funny).await.expect("delete");
    assert!(videos.get(&funny).await.expect("get").is_none());
    assert!(!found(&videos, "funny").await.contains(&funny));
    let left = store
        .query(&format!("video#{funny}"), Query::default())
        .await
        .expect("query");
    assert!(left.items.is_empty(), "every item of the video's partition is gone");
    videos.delete(&funny).await.expect("deleting again succeeds");
}

async fn owners(store: Arc<dyn Store>) {
    let videos = Videos::new(store);
    let mut alices = Vec::new();
    for n in 0..5 {
        let status = if n == 2 {
            VideoStatus::Processing
        } else {
            VideoStatus::Ready
        };
        let v = video(CAROL, &format!("Owner walk {n}"), &["walk"], "", status);
        videos.create(&v).await.expect("create");
        alices.push(v.id);
    }
    let bobs = video(BOB, "Owner walk of Bob", &[], "", VideoStatus::Ready);
    videos.create(&bobs).await.expect("create");
    let by = |everything: bool, q: Option<&str>| Listing {
        owner: Some(CAROL.to_owned()),
        everything,
        terms: q.and_then(|q| query_terms(q).expect("q")),
        limit: 2,
        cursor: None,
    };
    let newest_first: Vec<VideoId> = alices.iter().rev().cloned().collect();
    assert_eq!(
        all_pages(&videos, by(true, None)).await,
        newest_first,
        "the owner sees everything"
    );
    let ready: Vec<VideoId> = newest_first.iter().filter(|id| **id != alices[2]).cloned().collect();
    assert_eq!(
        all_pages(&videos, by(false, None)).await,
        ready,
        "others see ready videos"
    );
    assert_eq!(
        all_pages(&videos, by(false, Some("owner walk 3"))).await[0],
        alices[3],
        "owner and words together rank by matches"
    );
    assert_eq!(all_pages(&videos, by(false, Some("owner walk"))).await, ready);
    assert!(all_pages(&videos, by(false, Some("bob"))).await.is_empty());
}

/// Two words whose lists begin with the same videos for longer than one read: the videos holding only one
/// of them come after, however many hold both.
async fn lists_that_start_alike(store: Arc<dyn Store>) {
    let videos = Videos::new(store);
    let mut only_one = Vec::new();
    for n in 0..3 {
        only_one.push(add(&videos, &format!("Quokka {n}"), &[], "").await);
    }
    let mut both = Vec::new();
    for n in 0..70 {
        both.push(add(&videos, &format!("Quokka wombat {n}"), &[], "").await);
    }
    let expected: Vec<VideoId> = both.iter().rev().chain(only_one.iter().rev()).cloned().collect();
    assert_eq!(all_pages(&videos, search("quokka wombat ", 100)).await, expected);
    assert_eq!(
        all_pages(&videos, search("quokka wombat ", 7)).await,
        expected,
        "in pages of 7"
    );
}

/// Random catalogs and queries: every page of every listing matches a plain scan of the catalog scored
/// by the same terms, while videos are added between pages.
async fn agrees_with_a_plain_scan(store: Arc<dyn Store>, seed: u64, scale: Scale) {
    const VOCABULARY: [&str; 10] = [
        "alpha", "alps", "beta", "bet", "gamma", "game", "delta", "echo", "eco", "fox",
    ];
    let videos = Videos::new(store);
    let mut rng = StdRng::seed_from_u64(seed);
    let prefix = format!("z{}", rng.random_range(1000..9999));
    let mut catalog: Vec<Video> = Vec::new();
    let text = |rng: &mut StdRng, words: usize| -> String {
        (0..rng.random_range(1..=words))
            .map(|_| VOCABULARY[rng.random_range(0..VOCABULARY.len())])
            .chain(std::iter::once(prefix.as_str()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for _ in 0..scale.videos {
        let status = if rng.random_bool(0.9) {
            VideoStatus::Ready
        } else {
            VideoStatus::Processing
        };
        let v = video(ALICE, &text(&mut rng, 3), &[], &text(&mut rng, 4), status);
        videos.create(&v).await.expect("create");
        catalog.push(v);
    }
    for round in 0..scale.rounds {
        let q = format!(
            "{} {} {}",
            prefix,
            VOCABULARY[rng.random_range(0..VOCABULARY.len())],
            &VOCABULARY[rng.random_range(0..VOCABULARY.len())][..rng.random_range(1..=3)]
        );
        let q = if round % 3 == 0 {
            q.split_once(' ').map(|(_, rest)| rest.to_owned()).unwrap_or(q)
        } else {
            q
        };
        let query = query_terms(&q).expect("q").expect("words");
        let mut expected: Vec<(usize, VideoId)> = catalog
            .iter()
            .filter(|v| v.status == VideoStatus::Ready)
            .map(|v| {
                let own = terms(&v.title, &v.tags, &v.description);
                (query.iter().filter(|t| own.contains(*t)).count(), v.id.clone())
            })
            .filter(|(score, _)| *score > 0)
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        let expected: Vec<VideoId> = expected.into_iter().map(|(_, id)| id).collect();

        let originals = catalog.len();
        let mut listing = search(&q, rng.random_range(1..=25));
        let mut got = Vec::new();
        loop {
            let page = videos.list(&listing).await.expect("list");
            got.extend(page.items.into_iter().map(|v| v.id));
            // Videos added mid-listing: they may or may not show, but nothing shown repeats or goes missing.
            let v = video(ALICE, &text(&mut rng, 3), &[], "", VideoStatus::Ready);
            videos.create(&v).await.expect("create");
            catalog.push(v);
            match page.next_cursor {
                Some(cursor) => listing.cursor = Some(cursor),
                None => break,
            }
        }
        let added: HashSet<VideoId> = catalog[originals..].iter().map(|v| v.id.clone()).collect();
        let got: Vec<VideoId> = got.into_iter().filter(|id| !added.contains(id)).collect();
        assert_eq!(got, expected, "query {q:?}");
    }
}
