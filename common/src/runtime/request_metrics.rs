//! The request metrics every HTTP surface keeps: `streamgate_http_requests_total` by function, route,
//! method and status, and `streamgate_http_request_duration_seconds` by function, route and method.
//!
//! They are counted one of two ways. **Directly**, each request adding to the recorder's counter and
//! histogram: on Lambda, whose recorder writes them out after every invocation. **Tallied**, where a
//! server answers many requests at once on several cores: each thread adds its requests up in memory of
//! its own and hands the tally to the recorder every [`TALLY_LIMIT`] requests, and whenever `/metrics` is
//! rendered ([`RequestMetrics::hand_over_all`]), so a scrape sees every request answered before it.
//! Counted directly, every request on every core would write to the same counter and histogram, whose
//! memory would then move between the cores' caches with each request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use axum::http::Method;
use metrics::{Counter, Histogram};

/// Requests a thread tallies before it hands them to the recorder.
const TALLY_LIMIT: usize = 512;

/// How requests are counted: see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counting {
    Directly,
    Tallied,
}

/// Counts requests and times them. The recorder's handles are registered once per label set and kept.
pub(crate) struct RequestMetrics {
    function: &'static str,
    /// By route (`unmatched` for none).
    routes: RwLock<HashMap<String, Vec<Handles>>>,
    /// The threads' tallies, when tallied.
    tallies: Option<Tallies>,
}

/// The metrics of one route, method and status.
struct Handles {
    method: Method,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

/// The tallies of the threads that counted requests for one [`RequestMetrics`].
struct Tallies {
    /// Tells this instance's tallies apart from others' in a thread's list.
    id: u64,
    threads: Mutex<Vec<Arc<Mutex<Tally>>>>,
}

static NEXT_TALLIES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's tallies, by the id of the [`Tallies`] they belong to (which keeps them alive).
    static THREAD_TALLIES: RefCell<Vec<(u64, Weak<Mutex<Tally>>)>> = const { RefCell::new(Vec::new()) };
}

/// Requests of one thread not yet handed to the recorder.
#[derive(Default)]
struct Tally {
    requests: usize,
    sets: Vec<LabelSet>,
}

/// Requests of one route, method and status not yet handed to the recorder.
struct LabelSet {
    route: String,
    method: Method,
    status: u16,
    count: u64,
    seconds: Vec<f64>,
}

impl Tally {
    fn add(&mut self, route: &str, method: &Method, status: u16, seconds: f64) {
        self.requests += 1;
        let at = match self
            .sets
            .iter()
            .position(|set| set.status == status && set.method == method && set.route == route)
        {
            Some(at) => at,
            None => {
                self.sets.push(LabelSet {
                    route: route.to_owned(),
                    method: method.clone(),
                    status,
                    count: 0,
                    seconds: Vec::new(),
                });
                self.sets.len() - 1
            }
        };
        let set = &mut self.sets[at];
        set.count += 1;
        set.seconds.push(seconds);
    }
}

impl RequestMetrics {
    pub(crate) fn new(function: &'static str, counting: Counting) -> Self {
        Self {
            function,
            routes: RwLock::new(HashMap::new()),
            tallies: (counting == Counting::Tallied).then(|| Tallies {
                id: NEXT_TALLIES.fetch_add(1, Ordering::Relaxed),
                threads: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let Some(tallies) = &self.tallies else {
            self.with_handles(route, method, status, |requests, duration| {
                requests.increment(1);
                duration.record(seconds);
            });
            return;
        };
        THREAD_TALLIES.with_borrow_mut(|mine| {
            let tally = match mine.iter().find(|(id, _)| *id == tallies.id) {
                Some((_, tally)) => tally.upgrade(),
                None => None,
            };
            let tally = tally.unwrap_or_else(|| {
                let tally = Arc::new(Mutex::new(Tally::default()));
                tallies
                    .threads
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(tally.clone());
                // Tallies of metrics dropped since go, and this one takes its place.
                mine.retain(|(id, tally)| *id != tallies.id && tally.strong_count() > 0);
                mine.push((tallies.id, Arc::downgrade(&tally)));
                tally
            });
            let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
            tally.add(route, method, status, seconds);
            if tally.requests >= TALLY_LIMIT {
                self.hand_over(&mut tally);
            }
        });
    }

    /// Hands every thread's tally to the recorder: before `/metrics` is rendered.
    pub(crate) fn hand_over_all(&self) {
        let Some(tallies) = &self.tallies else {
            return;
        };
        let threads: Vec<_> = tallies.threads.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for tally in threads {
            self.hand_over(&mut tally.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    fn hand_over(&self, tally: &mut Tally) {
        for set in tally.sets.iter_mut().filter(|set| set.count > 0) {
            self.with_handles(&set.route, &set.method, set.status, |requests, duration| {
                requests.increment(set.count);
                for seconds in set.seconds.drain(..) {
                    duration.record(seconds);
                }
            });
            set.count = 0;
        }
        tally.requests = 0;
    }

    fn with_handles(&self, route: &str, method: &Method, status: u16, count: impl FnOnce(&Counter, &Histogram)) {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let known = routes
            .get(route)
            .and_then(|handles| handles.iter().find(|h| h.method == method && h.status == status));
        match known {
            Some(handles) => count(&handles.requests, &handles.duration),
            None => {
                drop(routes);
                let (requests, duration) = self.register(route, method, status);
                count(&requests, &duration);
            }
        }
    }

    fn register(&self, route: &str, method: &Method, status: u16) -> (Counter, Histogram) {
        let labels = [
            ("function", self.function.to_owned()),
            ("route", route.to_owned()),
            ("method", method.as_str().to_owned()),
            ("status", status.to_string()),
        ];
        let requests = metrics::counter!("streamgate_http_requests_total", &labels);
        let duration = metrics::histogram!("streamgate_http_request_duration_seconds", &labels[..3]);
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        routes.entry(route.to_owned()).or_default().push(Handles {
            method: method.clone(),
            status,
            requests: requests.clone(),
            duration: duration.clone(),
        });
        (requests, duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, labels: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("streamgate_http_requests_total{{{labels}}} ")))
            .map(str::to_owned)
    }

    const GET_THINGS: &str = r#"function="api-test",route="/things",method="GET",status="200""#;

    #[test]
    fn tallies_reach_the_recorder_when_handed_over_and_at_the_limit() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let metrics = RequestMetrics::new("api-test", Counting::Tallied);
            for _ in 0..3 {
                metrics.record("/things", &Method::GET, 200, Duration::from_millis(2));
            }
            metrics.record("/things", &Method::GET, 404, Duration::from_millis(1));
            assert_eq!(count(&handle.render(), GET_THINGS), None, "still tallied");
            metrics.hand_over_all();
            let text = handle.render();
            assert_eq!(count(&text, GET_THINGS).as_deref(), Some("3"), "{text}");
            let not_found = GET_THINGS.replace("200", "404");
            assert_eq!(count(&text, &not_found).as_deref(), Some("1"), "{text}");
            assert!(
                text.contains(
                    r#"streamgate_http_request_duration_seconds_count{function="api-test",route="/things",method="GET"} 4"#
                ),
                "{text}"
            );

            // Handing over again adds nothing twice; a full tally is handed over by its thread.
            metrics.hand_over_all();
            for _ in 0..TALLY_LIMIT {
                metrics.record("/things", &Method::GET, 200, Duration::from_millis(2));
            }
            let expected = (3 + TALLY_LIMIT).to_string();
            assert_eq!(count(&handle.render(), GET_THINGS), Some(expected));
        });
    }

    #[test]
    fn every_threads_tally_is_handed_over() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let metrics = Arc::new(RequestMetrics::new("api-test", Counting::Tallied));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        metrics.record("/things", &Method::GET, 200, Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        // The threads have ended; what they tallied is still handed over.
        metrics::with_local_recorder(&recorder, || metrics.hand_over_all());
        assert_eq!(count(&handle.render(), GET_THINGS).as_deref(), Some("40"));
    }

    #[test]
    fn counted_directly_each_request_reaches_the_recorder() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let metrics = RequestMetrics::new("api-test", Counting::Directly);
            metrics.record("/things", &Method::GET, 200, Duration::from_millis(2));
            assert_eq!(count(&handle.render(), GET_THINGS).as_deref(), Some("1"));
        });
    }
}
