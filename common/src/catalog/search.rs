//! Finding videos by the terms of a query (see [`super::text`]) over the index kept in `Store`.
//!
//! Each term is a partition `search#{term}` holding one item per video (sort key: the video id, which
//! sorts by creation time), read newest first. A video's score is how many of the query's terms it holds;
//! results come by score, then newest first. Each score is read as its own level: the videos holding every
//! term by walking the sparsest term's list and probing the others, lower scores by merging every list.
//! A level is read only as deep as the page needs, and a position (score, last id) lets the next page
//! go on exactly where this one stopped.

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::ids::VideoId;
use crate::store::{Cursor, Query, Store, StoreError};

/// The partition of a term's list.
pub(crate) fn list_pk(term: &str) -> String {
    format!("search#{term}")
}

/// Where a listing stopped: the score level it was reading and the last video returned at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub score: usize,
    pub after: VideoId,
}

/// A video found, with how many of the query's terms it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub id: VideoId,
    pub score: usize,
}

/// Ids read in the first chunk of a list; each further chunk is twice the last, up to [`LAST_CHUNK`].
const FIRST_CHUNK: u32 = 64;
const LAST_CHUNK: u32 = 1000;
/// Membership probes in flight at once.
const PROBES: usize = 32;

/// One term's list of video ids, newest first, read a chunk at a time.
struct List<'a> {
    store: &'a dyn Store,
    pk: String,
    /// Ids read so far, newest first.
    ids: Vec<VideoId>,
    /// Where the next chunk starts (`None` with `started`: the list is read to its end).
    next: Option<Cursor>,
    started: bool,
    chunk: u32,
}

impl<'a> List<'a> {
    fn new(store: &'a dyn Store, term: &str, after: Option<&VideoId>) -> Self {
        let pk = list_pk(term);
        let next = after.map(|id| Cursor {
            pk: pk.clone(),
            sk: id.to_string(),
            index: None,
        });
        Self {
            store,
            pk,
            ids: Vec::new(),
            next,
            started: false,
            chunk: FIRST_CHUNK,
        }
    }

    fn exhausted(&self) -> bool {
        self.started && self.next.is_none()
    }

    /// Reads the next chunk; `false` once the list has no more.
    async fn fill(&mut self) -> Result<bool, StoreError> {
        if self.exhausted() {
            return Ok(false);
        }
        let query = Query {
            sk_prefix: None,
            limit: Some(self.chunk),
            cursor: self.next.take(),
            descending: true,
        };
        let page = self.store.query(&self.pk, query).await?;
        self.started = true;
        self.chunk = (self.chunk * 2).min(LAST_CHUNK);
        self.next = page.next;
        let before = self.ids.len();
        self.ids
            .extend(page.items.iter().filter_map(|item| item.sk.parse::<VideoId>().ok()));
        Ok(self.ids.len() > before || self.next.is_some())
    }

    /// Whether the list holds `id`, if what was read already tells.
    fn knows(&self, id: &VideoId) -> Option<bool> {
        let found = self.ids.binary_search_by(|probe| id.cmp(probe)).is_ok();
        let covered = self.exhausted() || self.ids.last().is_some_and(|oldest| oldest <= id);
        (found || covered).then_some(found)
    }
}

/// The videos holding exactly `score` of `terms` (every term when `score` is their number), newest first,
/// after `after`; at most `want`.
async fn level(
    store: &dyn Store,
    terms: &[String],
    score: usize,
    after: Option<&VideoId>,
    want: usize,
) -> Result<Vec<VideoId>, StoreError> {
    let mut lists: Vec<List<'_>> = terms.iter().map(|term| List::new(store, term, after)).collect();
    futures::future::try_join_all(lists.iter_mut().map(List::fill)).await?;
    if score == terms.len() && terms.len() > 1 {
        intersect(lists, want).await
    } else {
        merge(lists, score, want).await
    }
}

/// The sparsest list: a list read to its end with the fewest ids, else the one whose first chunk reaches
/// furthest back in time (every first chunk holds as many ids).
fn sparsest(lists: &[List<'_>]) -> usize {
    let ended = lists
        .iter()
        .enumerate()
        .filter(|(_, list)| list.exhausted())
        .min_by_key(|(_, list)| list.ids.len());
    if let Some((index, _)) = ended {
        return index;
    }
    lists
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| a.ids.last().cmp(&b.ids.last()))
        .map_or(0, |(index, _)| index)
}

/// Videos in every list: walks the sparsest and probes the others where their chunks read so far do not
/// tell.
async fn intersect(mut lists: Vec<List<'_>>, want: usize) -> Result<Vec<VideoId>, StoreError> {
    let driver = sparsest(&lists);
    let store = lists[driver].store;
    let mut found = Vec::new();
    let mut walked = 0;
    loop {
        if walked == lists[driver].ids.len() && !lists[driver].fill().await? {
            return Ok(found);
        }
        let batch: Vec<VideoId> = lists[driver].ids[walked..]
            .iter()
            .take((want - found.len()).max(16))
            .cloned()
            .collect();
        walked += batch.len();
        let mut probes = Vec::new();
        let candidates: Vec<(VideoId, Vec<usize>)> = batch
            .into_iter()
            .filter_map(|id| {
                let mut unknown = Vec::new();
                for (index, list) in lists.iter().enumerate().filter(|(index, _)| *index != driver) {
                    match list.knows(&id) {
                        Some(false) => return None,
                        Some(true) => {}
                        None => unknown.push(index),
                    }
                }
                Some((id, unknown))
            })
            .collect();
        for (id, unknown) in &candidates {
            for index in unknown {
                probes.push((lists[*index].pk.clone(), id.to_string()));
            }
        }
        let answers: std::collections::HashSet<(String, String)> = futures::stream::iter(probes)
            .map(|(pk, sk)| async move {
                let held = store.get(&pk, &sk).await?.is_some();
                Ok::<_, StoreError>(held.then_some((pk, sk)))
            })
            .buffered(PROBES)
            .try_filter_map(|held| async move { Ok(held) })
            .try_collect()
            .await?;
        for (id, unknown) in candidates {
            let sk = id.to_string();
            if unknown
                .iter()
                .all(|index| answers.contains(&(lists[*index].pk.clone(), sk.clone())))
            {
                found.push(id);
                if found.len() == want {
                    return Ok(found);
                }
            }
        }
    }
}

/// Videos in exactly `score` of the lists, merged newest first.
async fn merge(mut lists: Vec<List<'_>>, score: usize, want: usize) -> Result<Vec<VideoId>, StoreError> {
    let mut at = vec![0usize; lists.len()];
    let mut found = Vec::new();
    loop {
        // Every list shows its next id, or is read to its end (a chunk may come back empty).
        loop {
            let starved: Vec<_> = lists
                .iter_mut()
                .zip(&at)
                .filter(|(list, at)| **at == list.ids.len() && !list.exhausted())
                .map(|(list, _)| list.fill())
                .collect();
            if starved.is_empty() {
                break;
            }
            futures::future::try_join_all(starved).await?;
        }
        let Some(newest) = lists
            .iter()
            .zip(&at)
            .filter_map(|(list, at)| list.ids.get(*at))
            .max()
            .cloned()
        else {
            return Ok(found);
        };
        let mut holding = 0;
        for (list, at) in lists.iter().zip(at.iter_mut()) {
            if list.ids.get(*at) == Some(&newest) {
                holding += 1;
                *at += 1;
            }
        }
        if holding == score {
            found.push(newest);
            if found.len() == want {
                return Ok(found);
            }
        }
    }
}

/// Up to `want` videos holding any of `terms`, by score then newest first, from `from` on.
pub(crate) async fn find(
    store: &dyn Store,
    terms: &[String],
    from: Option<&Position>,
    want: usize,
) -> Result<Vec<Hit>, StoreError> {
    let top = from.map_or(terms.len(), |p| p.score.min(terms.len()));
    let mut hits = Vec::new();
    for score in (1..=top).rev() {
        if hits.len() == want {
            break;
        }
        let after = from.filter(|p| p.score == score).map(|p| &p.after);
        let ids = level(store, terms, score, after, want - hits.len()).await?;
        hits.extend(ids.into_iter().map(|id| Hit { id, score }));
    }
    Ok(hits)
}
