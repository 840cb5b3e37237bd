//! Finding videos by the terms of a query (see [`super::text`]) over the index kept in `Store`.
//!
//! Each term is a partition `search#{term}` holding one item per video (sort key: the video id, which
//! sorts by creation time), read newest first. A video's score is how many of the query's terms it holds;
//! results come by score, then newest first. Each score is read as its own level, driven by the sparsest
//! lists that every video of the level must appear in (the sparsest one for videos holding every term,
//! all of them for videos holding one), with the other lists looked up. A level is read only as deep as
//! the page needs, and a position (score, last id) lets the next page go on exactly where this one
//! stopped.

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

/// The creation time (Unix milliseconds) a UUIDv7 video id carries in its first 48 bits.
fn id_millis(id: &VideoId) -> u64 {
    u64::from_str_radix(&id.as_str()[..12], 16).unwrap_or(0)
}

/// The lists' indices, sparsest first: lists read to their end by length, then the others by how many
/// ids they hold per unit of time in what was read of them.
fn by_sparsity(lists: &[List<'_>], top: u64) -> Vec<usize> {
    let density = |list: &List<'_>| match list.ids.last() {
        Some(oldest) => list.ids.len() as f64 / (top.saturating_sub(id_millis(oldest)).max(1)) as f64,
        None => 0.0,
    };
    let mut order: Vec<usize> = (0..lists.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&lists[*a], &lists[*b]);
        match (a.exhausted(), b.exhausted()) {
            (true, true) => a.ids.len().cmp(&b.ids.len()),
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            (false, false) => density(a).total_cmp(&density(b)),
        }
    });
    order
}

/// The videos holding exactly `score` of the lists, newest first; at most `want`.
///
/// A video holding `score` of `n` lists is in at least one of any `n - score + 1` of them, so the level is
/// driven by merging the `n - score + 1` sparsest lists; whether a candidate is in the others is read
/// from what was read of them, or looked up. Every id of the drivers is a candidate, so nothing is missed.
async fn level(lists: &mut [List<'_>], score: usize, top: u64, want: usize) -> Result<Vec<VideoId>, StoreError> {
    let unstarted = lists.iter_mut().filter(|list| !list.started).map(List::fill);
    futures::future::try_join_all(unstarted).await?;
    let order = by_sparsity(lists, top);
    let (drivers, others) = order.split_at(lists.len() + 1 - score);
    let mut at = vec![0usize; lists.len()];
    let mut found = Vec::new();
    loop {
        // Every driver shows its next id, or is read to its end (a chunk may come back empty).
        loop {
            let starved: Vec<_> = lists
                .iter_mut()
                .enumerate()
                .filter(|(index, list)| drivers.contains(index) && at[*index] == list.ids.len() && !list.exhausted())
                .map(|(_, list)| list.fill())
                .collect();
            if starved.is_empty() {
                break;
            }
            futures::future::try_join_all(starved).await?;
        }
        // A batch of candidates, newest first, with how many drivers hold each; the batch stops where a
        // driver needs its next chunk.
        let mut candidates: Vec<(VideoId, usize)> = Vec::new();
        let batch = (want - found.len()).max(16);
        while candidates.len() < batch {
            let heads = drivers.iter().filter_map(|index| lists[*index].ids.get(at[*index]));
            let Some(newest) = heads.max().cloned() else {
                break;
            };
            let mut held = 0;
            for index in drivers {
                if lists[*index].ids.get(at[*index]) == Some(&newest) {
                    held += 1;
                    at[*index] += 1;
                }
            }
            if held <= score {
                candidates.push((newest, held));
            }
            if drivers
                .iter()
                .any(|index| at[*index] == lists[*index].ids.len() && !lists[*index].exhausted())
            {
                break;
            }
        }
        if candidates.is_empty() {
            let done = |index: &usize| at[*index] == lists[*index].ids.len() && lists[*index].exhausted();
            if drivers.iter().all(done) {
                return Ok(found);
            }
            continue;
        }
        for id in count_exactly(lists, others, candidates, score).await? {
            found.push(id);
            if found.len() == want {
                return Ok(found);
            }
        }
    }
}

/// The candidates (with how many drivers hold them) that `others` bring to exactly `score` lists, in order.
async fn count_exactly(
    lists: &[List<'_>],
    others: &[usize],
    candidates: Vec<(VideoId, usize)>,
    score: usize,
) -> Result<Vec<VideoId>, StoreError> {
    let Some(store) = lists.first().map(|list| list.store) else {
        return Ok(Vec::new());
    };
    // What was read already tells most; the rest is looked up.
    let mut probes: Vec<(String, String)> = Vec::new();
    let mut counted: Vec<(VideoId, usize, Vec<usize>)> = Vec::with_capacity(candidates.len());
    for (id, held) in candidates {
        let mut known = held;
        let mut unknown = Vec::new();
        for index in others {
            match lists[*index].knows(&id) {
                Some(true) => known += 1,
                Some(false) => {}
                None => unknown.push(*index),
            }
        }
        // Too many already, or too few even if every lookup finds it.
        if known > score || known + unknown.len() < score {
            continue;
        }
        probes.extend(unknown.iter().map(|index| (lists[*index].pk.clone(), id.to_string())));
        counted.push((id, known, unknown));
    }
    let answers: std::collections::HashSet<(String, String)> = if probes.is_empty() {
        std::collections::HashSet::new()
    } else {
        store
            .get_batch(probes)
            .await?
            .into_iter()
            .map(|item| (item.pk, item.sk))
            .collect()
    };
    Ok(counted
        .into_iter()
        .filter_map(|(id, known, unknown)| {
            let sk = id.to_string();
            let more = unknown
                .iter()
                .filter(|index| answers.contains(&(lists[**index].pk.clone(), sk.clone())))
                .count();
            (known + more == score).then_some(id)
        })
        .collect())
}

/// Up to `want` videos holding any of `terms`, by score then newest first, from `from` on.
pub(crate) async fn find(
    store: &dyn Store,
    terms: &[String],
    from: Option<&Position>,
    want: usize,
) -> Result<Vec<Hit>, StoreError> {
    let top_level = from.map_or(terms.len(), |p| p.score.min(terms.len()));
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    // Lists read from their newest entry serve every level read from the top.
    let mut from_top: Vec<List<'_>> = terms.iter().map(|term| List::new(store, term, None)).collect();
    let mut hits = Vec::new();
    for score in (1..=top_level).rev() {
        if hits.len() == want {
            break;
        }
        let need = want - hits.len();
        let ids = match from.filter(|p| p.score == score) {
            Some(position) => {
                let mut lists: Vec<List<'_>> = terms
                    .iter()
                    .map(|term| List::new(store, term, Some(&position.after)))
                    .collect();
                level(&mut lists, score, id_millis(&position.after), need).await?
            }
            None => level(&mut from_top, score, now, need).await?,
        };
        hits.extend(ids.into_iter().map(|id| Hit { id, score }));
    }
    Ok(hits)
}
