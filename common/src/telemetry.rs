//! Logs and metrics. Logs are `tracing` events, JSON in the cloud and readable locally. Metrics go through
//! the `metrics` facade: Prometheus text on Knative and in the local server, CloudWatch Embedded Metric
//! Format log lines on Lambda.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global log subscriber (`RUST_LOG` filters; default `info`). Later calls do nothing.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Lambda captures stdout and stderr alike; JSON lines carry the span fields (request_id, video_id, ...).
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .try_init(),
        LogFormat::Pretty => builder.compact().finish().try_init(),
    };
    drop(result);
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the Prometheus recorder's histograms are drained when nobody scrapes `/metrics`.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder once and returns its handle, which renders `/metrics`. When another
/// recorder is already installed (the EMF one on Lambda), the handle renders an empty page.
///
/// The recorder keeps every histogram sample (each request's duration) until they are drained into the
/// buckets, which a scrape does; a server nobody scrapes would grow by every request it answers. So a
/// thread of its own drains them every [`UPKEEP_INTERVAL`], as the exporter's own HTTP listener would.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            // From 100 µs: most API answers take well under a millisecond, which coarser buckets would
            // not tell apart.
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0, 300.0,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_ok() {
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "no metrics upkeep thread: histograms are drained by scrapes alone");
            }
        }
        handle
    })
}

/// Installs the CloudWatch Embedded Metric Format recorder for a Lambda function; the runtime flushes it
/// after every invocation.
pub fn cloudwatch_emf(function: &'static str) -> Result<&'static metrics_cloudwatch_embedded::Collector, String> {
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("StreamGate")
        .with_dimension("function", function)
        .lambda_cold_start_metric("ColdStart")
        .with_lambda_request_id("RequestId")
        .init()
        .map_err(|e| e.to_string())
}

/// A counter with fixed labels, registered with the global recorder the first time it counts and kept:
/// for counters on every request, where registering again each time (hashing the name and labels,
/// looking them up) would cost more than the count. Meant for statics; a recorder installed only for a
/// thread or a test does not see these counters once they are registered globally.
pub struct KeptCounter {
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    handle: OnceLock<metrics::Counter>,
}

impl KeptCounter {
    pub const fn new(name: &'static str, labels: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            name,
            labels,
            handle: OnceLock::new(),
        }
    }

    pub fn increment(&self, by: u64) {
        self.handle
            .get_or_init(|| metrics::counter!(self.name, self.labels))
            .increment(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_counters_count_under_their_labels() {
        static HITS: KeptCounter = KeptCounter::new("streamgate_test_hits_total", &[("from", "memory")]);
        let handle = prometheus();
        HITS.increment(2);
        HITS.increment(1);
        let text = handle.render();
        assert!(
            text.lines()
                .any(|line| line == r#"streamgate_test_hits_total{from="memory"} 3"#),
            "{text}"
        );
    }
}
