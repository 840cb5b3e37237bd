//! Catalog search over 100,000 videos on the embedded store, as `streamgate-local` runs it: the cost of
//! indexing one video, then search latency (p50, p90, p99, max) for queries typed as a viewer types them.
//!
//!     cargo bench -p common --bench search
//!
//! The corpus is made once, deterministically, under `target/search-bench/` (or
//! `STREAMGATE_BENCH_DIR`) and reused by later runs; `SEARCH_BENCH_VIDEOS` changes its size (a new size
//! makes a new corpus).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::adapters::local::{LocalDb, LocalStore};
use common::catalog::text::query_terms;
use common::catalog::{Listing, Video, VideoStatus, Videos};
use common::ids::VideoId;
use common::store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ber", "dan", "fel", "gor", "han", "jul", "mar", "nor", "pé",
    "qua", "rï", "sto", "tun", "ve", "wil", "zo",
];

/// A vocabulary of made-up words (some accented), most frequent first.
fn vocabulary(rng: &mut StdRng, size: usize) -> Vec<String> {
    let mut words = std::collections::BTreeSet::new();
    let mut ordered = Vec::with_capacity(size);
    while ordered.len() < size {
        let syllables = rng.random_range(1..=4);
        let word: String = (0..syllables)
            .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
            .collect();
        if words.insert(word.clone()) {
            ordered.push(word);
        }
    }
    ordered
}

/// Draws word ranks with Zipf frequencies (exponent 1), as words come in real text.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self { cumulative }
    }

    fn draw(&self, rng: &mut StdRng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let target = rng.random_range(0.0..total);
        self.cumulative.partition_point(|c| *c < target)
    }
}

struct Corpus {
    words: Vec<String>,
    zipf: Zipf,
}

impl Corpus {
    fn phrase(&self, rng: &mut StdRng, min: usize, max: usize) -> String {
        (0..rng.random_range(min..=max))
            .map(|_| self.words[self.zipf.draw(rng)].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn video(&self, rng: &mut StdRng, n: usize) -> Video {
        let mut title = self.phrase(rng, 3, 9);
        if let Some(first) = title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let mut video = Video::new(VideoId::generate(), format!("0x{:040x}", n % 1000));
        video.title = title;
        video.description = self.phrase(rng, 5, 40);
        video.tags = (0..rng.random_range(0..=5)).map(|_| self.phrase(rng, 1, 2)).collect();
        video.status = VideoStatus::Ready;
        video.progress = 100;
        video.duration_seconds = Some(60.0);
        video.width = Some(1280);
        video.height = Some(720);
        video
    }

    /// A query as typed: one to three words of a video's title or description, the last cut short.
    fn query(&self, rng: &mut StdRng, video: &Video) -> String {
        let text = if rng.random_bool(0.7) {
            &video.title
        } else {
            &video.description
        };
        let words: Vec<&str> = text.split(' ').collect();
        let count = rng.random_range(1..=3).min(words.len());
        let start = rng.random_range(0..=words.len() - count);
        let mut picked: Vec<String> = words[start..start + count].iter().map(|w| w.to_lowercase()).collect();
        if let Some(last) = picked.last_mut() {
            let chars: Vec<char> = last.chars().collect();
            let keep = rng.random_range(1..=chars.len());
            *last = chars[..keep].iter().collect();
        }
        picked.join(" ")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{name:<44} n={:<6} p50={:>9.3?} p90={:>9.3?} p99={:>9.3?} max={:>9.3?}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let count: usize = std::env::var("SEARCH_BENCH_VIDEOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::var_os("STREAMGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/search-bench"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(format!("catalog-{count}.db"));
    let mut rng = StdRng::seed_from_u64(7);
    let corpus = Corpus {
        words: vocabulary(&mut rng, 20_000),
        zipf: Zipf::new(20_000),
    };
    let fresh = !path.exists();
    let db = LocalDb::open(&path).expect("db");
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(db.clone()));
    let videos = Videos::new(store.clone());

    let mut samples: Vec<Video> = Vec::new();
    if fresh {
        println!("indexing {count} videos into {} (once)", path.display());
        let mut index_times = Vec::with_capacity(count);
        let mut entries = 0usize;
        let started = Instant::now();
        for n in 0..count {
            let video = corpus.video(&mut rng, n);
            entries += video.search_terms().len();
            let at = Instant::now();
            videos.create(&video).await.expect("create");
            index_times.push(at.elapsed());
            if n % 97 == 0 {
                samples.push(video);
            }
            if n > 0 && n % 10_000 == 0 {
                println!("  {n} videos, {:.0?}", started.elapsed());
            }
        }
        println!(
            "indexed {count} videos in {:.1?}: {:.1} list entries per video",
            started.elapsed(),
            entries as f64 / count as f64
        );
        report("write of one new ready video (record + entries)", index_times);
    } else {
        for n in 0..count {
            let video = corpus.video(&mut rng, n);
            if n % 97 == 0 {
                samples.push(video);
            }
        }
    }

    // Ids differ from run to run; look the sampled videos up by their title instead.
    let mut queries = Vec::new();
    let mut qrng = StdRng::seed_from_u64(11);
    for video in samples.iter().cycle().take(2000) {
        queries.push(corpus.query(&mut qrng, video));
    }

    for cached in [false, true] {
        let db = LocalDb::open(&path).expect("db");
        if cached {
            db.cache_reads();
        }
        let videos = Videos::new(Arc::new(LocalStore::new(db)));
        let label = if cached {
            "cached reads (streamgate-local)"
        } else {
            "uncached reads"
        };
        for (name, limit, second_page) in [("first page of 20", 20, false), ("second page of 20", 20, true)] {
            let mut times = Vec::with_capacity(queries.len());
            let mut slowest: Vec<(Duration, &str)> = Vec::new();
            let mut results = 0usize;
            for q in &queries {
                let mut listing = Listing {
                    terms: query_terms(q).expect("query"),
                    limit,
                    ..Listing::default()
                };
                if second_page {
                    let first = videos.list(&listing).await.expect("list");
                    let Some(cursor) = first.next_cursor else { continue };
                    listing.cursor = Some(cursor);
                }
                let at = Instant::now();
                let page = videos.list(&listing).await.expect("list");
                times.push(at.elapsed());
                slowest.push((at.elapsed(), q));
                results += page.items.len();
            }
            if std::env::var_os("SEARCH_BENCH_SLOWEST").is_some() {
                slowest.sort_by_key(|(time, _)| std::cmp::Reverse(*time));
                for (time, q) in slowest.iter().take(10) {
                    println!("    {time:>9.3?} {q:?}");
                }
            }
            println!(
                "{label}, {name}: {:.1} results a query",
                results as f64 / times.len() as f64
            );
            report(&format!("  search ({label}, {name})"), times);
        }
        let mut times = Vec::new();
        for n in 0..500 {
            let listing = Listing {
                owner: Some(format!("0x{:040x}", n % 1000)),
                limit: 20,
                ..Listing::default()
            };
            let at = Instant::now();
            videos.list(&listing).await.expect("list");
            times.push(at.elapsed());
        }
        report(&format!("  owner's videos ({label})"), times);
    }

    // The write cost of indexing one video whose text changes: the entries of its new words in, the old
    // ones out, and the record.
    let db = LocalDb::open(&path).expect("db");
    let videos = Videos::new(Arc::new(LocalStore::new(db)));
    let mut times = Vec::new();
    let mut edits = StdRng::seed_from_u64(13);
    for _ in 0..200 {
        let video = corpus.video(&mut edits, 0);
        videos.create(&video).await.expect("create");
        let title = corpus.phrase(&mut edits, 3, 9);
        let at = Instant::now();
        videos
            .update(&video.id, |v| {
                v.title = title.clone();
                true
            })
            .await
            .expect("edit");
        times.push(at.elapsed());
        videos.delete(&video.id).await.expect("delete");
    }
    report("edit of a ready video's title (reindex)", times);
}
