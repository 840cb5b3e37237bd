use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::events::{EventError, EventHandler, Message, events_from_message, handle_all};
use crate::queue::{Queue, Received};

/// Exponential backoff for retryable failures: `base × 2^(attempt−1)`, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        }
    }
}

impl Retry {
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Feeds one queue's messages to an event handler, as an SQS event source mapping does on Lambda: a
/// success deletes the message; a retryable failure makes it visible again after a backoff; a malformed
/// one at once, so that it reaches the dead-letter queue after the queue's maximum deliveries. While a
/// handler runs, its message's visibility is extended, so long jobs are not delivered twice.
pub struct QueueWorker {
    pub name: String,
    pub queue: Arc<dyn Queue>,
    pub handler: Arc<dyn EventHandler>,
    pub visibility: Duration,
    pub retry: Retry,
}

impl QueueWorker {
    /// Receives and handles messages, at most as many at once as `permits` allows (shared between
    /// workers), until `shutdown` turns true; then waits for the handlers under way.
    ///
    /// A worker long-polls without holding a permit, so idle queues never starve busy ones; a received
    /// message is kept invisible while it waits for a permit.
    pub async fn run(self: Arc<Self>, permits: Arc<Semaphore>, mut shutdown: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            if *shutdown.borrow() {
                break;
            }
            let received = tokio::select! {
                received = self.queue.receive(1, self.visibility, Duration::from_secs(5)) => received,
                _ = shutdown.changed() => break,
            };
            let message = match received {
                Ok(messages) => match messages.into_iter().next() {
                    Some(message) => message,
                    None => continue,
                },
                Err(err) => {
                    tracing::warn!(worker = %self.name, error = %err, "receiving failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let heartbeat = self.keep_invisible(message.receipt.clone());
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.ok(),
                _ = shutdown.changed() => None,
            };
            match permit {
                Some(permit) => {
                    running.spawn(self.clone().process(message, heartbeat, permit));
                }
                None => {
                    // Stopping before it started: hand the message back at once.
                    heartbeat.abort();
                    drop(self.queue.extend(&message.receipt, Duration::ZERO).await);
                    break;
                }
            }
        }
        while running.join_next().await.is_some() {}
        tracing::info!(worker = %self.name, "stopped");
    }

    async fn process(self: Arc<Self>, received: Received, heartbeat: JoinHandle<()>, _permit: OwnedSemaphorePermit) {
        let span = tracing::info_span!("message", worker = %self.name, message_id = %received.id, receive_count = received.receive_count);
        let _entered = span.enter();
        let message = Message {
            id: received.id.clone(),
            body: received.body,
            receive_count: received.receive_count,
        };
        let result = match events_from_message(self.handler.trigger(), message) {
            Ok(events) => handle_all(self.handler.as_ref(), events).await,
            Err(err) => Err(err),
        };
        heartbeat.abort();
        let outcome = match &result {
            Ok(()) => self.queue.ack(&received.receipt).await,
            Err(err) => {
                tracing::warn!(error = %err, "message failed");
                metrics::counter!("streamgate_event_failures_total", "kind" => super::lambda::kind(err)).increment(1);
                let delay = match err {
                    EventError::Malformed(_) => Duration::ZERO,
                    EventError::Retryable(_) => self.retry.delay(received.receive_count),
                };
                self.queue.extend(&received.receipt, delay).await
            }
        };
        if let Err(err) = outcome {
            // The message comes back when its visibility ends; handlers are idempotent.
            tracing::warn!(error = %err, "settling the message failed");
        }
        metrics::counter!("streamgate_messages_total", "worker" => self.name.clone(), "outcome" => if result.is_ok() { "ok" } else { "failed" })
            .increment(1);
    }

    fn keep_invisible(&self, receipt: String) -> JoinHandle<()> {
        let queue = self.queue.clone();
        let visibility = self.visibility;
        tokio::spawn(async move {
            let every = (visibility / 2).max(Duration::from_secs(1));
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = queue.extend(&receipt, visibility).await {
                    tracing::warn!(error = %err, "extending visibility failed");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::{LocalDb, LocalQueue};
    use crate::events::{Event, Trigger};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counters {
        running: AtomicUsize,
        peak: AtomicUsize,
        done: AtomicUsize,
    }

    struct Slow(Arc<Counters>);

    #[async_trait::async_trait]
    impl EventHandler for Slow {
        fn trigger(&self) -> Trigger {
            Trigger::Queue
        }

        async fn handle(&self, _: Event) -> Result<(), EventError> {
            let now = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.0.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(40)).await;
            self.0.running.fetch_sub(1, Ordering::SeqCst);
            self.0.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn workers_share_one_concurrency_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = LocalDb::open(&dir.path().join("db")).expect("db");
        let counters = Arc::new(Counters::default());
        let permits = Arc::new(Semaphore::new(3));
        let (stop, stopped) = watch::channel(false);
        let mut workers = Vec::new();
        for name in ["a", "b"] {
            let queue = LocalQueue::new(db.clone(), name);
            queue
                .send_batch(&vec!["{}".to_owned(); 12], Duration::ZERO)
                .await
                .expect("send");
            let worker = Arc::new(QueueWorker {
                name: name.into(),
                queue: Arc::new(queue),
                handler: Arc::new(Slow(counters.clone())),
                visibility: Duration::from_secs(30),
                retry: Retry::default(),
            });
            workers.push(tokio::spawn(worker.run(permits.clone(), stopped.clone())));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while counters.done.load(Ordering::SeqCst) < 24 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of 24 handled",
                counters.done.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send_replace(true);
        for worker in workers {
            worker.await.expect("worker");
        }
        assert_eq!(
            counters.peak.load(Ordering::SeqCst),
            3,
            "the limit is reached and never passed"
        );
        assert_eq!(LocalQueue::new(db.clone(), "a").depth().await.expect("depth"), 0);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let retry = Retry {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=7).map(|n| retry.delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry.delay(u32::MAX), Duration::from_secs(60));
    }
}
