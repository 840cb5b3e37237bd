use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;

use super::db::LocalDb;
use crate::queue::{Queue, QueueError, Received, check_size};
use crate::store::now_unix_ms;

/// The `Queue` port on SQLite: messages survive a killed process, and a delivery that was never
/// acknowledged becomes visible again when its visibility timeout ends.
#[derive(Clone)]
pub struct LocalQueue {
    db: LocalDb,
    name: String,
    dead_letter: Option<(String, u32)>,
}

impl From<rusqlite::Error> for QueueError {
    fn from(err: rusqlite::Error) -> Self {
        QueueError::Backend(format!("sqlite: {err}"))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

impl LocalQueue {
    /// The queue `name` in `db`, without dead-lettering.
    pub fn new(db: LocalDb, name: impl Into<String>) -> Self {
        Self {
            db,
            name: name.into(),
            dead_letter: None,
        }
    }

    /// Moves a message to the queue `dead_letter` instead of delivering it a time more than
    /// `max_receives`.
    pub fn with_dead_letter(mut self, dead_letter: impl Into<String>, max_receives: u32) -> Self {
        self.dead_letter = Some((dead_letter.into(), max_receives.max(1)));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes every delivery of this queue visible now. The local server calls it at start: deliveries
    /// still in flight belonged to a process that is gone.
    pub async fn release_in_flight(&self) -> Result<usize, QueueError> {
        let name = self.name.clone();
        let released = self
            .db
            .call(move |conn| {
                Ok::<_, QueueError>(conn.execute(
                    "UPDATE messages SET visible_at = ?2, receipt = NULL WHERE queue = ?1 AND receipt IS NOT NULL",
                    params![name, now_unix_ms()],
                )?)
            })
            .await?;
        if released > 0 {
            self.db.wakeup(&self.name).notify_waiters();
        }
        Ok(released)
    }

    /// Messages waiting or in flight.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let name = self.name.clone();
        self.db
            .call(move |conn| {
                let count: i64 = conn.query_row("SELECT COUNT(*) FROM messages WHERE queue = ?1", [name], |row| {
                    row.get(0)
                })?;
                Ok(u64::try_from(count).unwrap_or(0))
            })
            .await
    }

    async fn receive_now(&self, max: u32, visibility: Duration) -> Result<(Vec<Received>, Option<i64>), QueueError> {
        let name = self.name.clone();
        let dead_letter = self.dead_letter.clone();
        let moved_to = dead_letter.as_ref().map(|(name, _)| name.clone());
        let result = self
            .db
            .call(move |conn| {
                let now = now_unix_ms();
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut delivered = Vec::new();
                let mut moved = 0usize;
                {
                    let mut select = tx.prepare_cached(
                        "SELECT seq, id, body, receive_count FROM messages WHERE queue = ?1 AND visible_at <= ?2 \
                         ORDER BY visible_at, seq LIMIT ?3",
                    )?;
                    let ready = select
                        .query_map(params![name, now, max], |row| {
                            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, u32>(3)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    for (seq, id, body, count) in ready {
                        if let Some((dlq, max_receives)) = &dead_letter
                            && count >= *max_receives
                        {
                            tx.execute(
                                "UPDATE messages SET queue = ?2, receive_count = 0, receipt = NULL, visible_at = ?3 WHERE seq = ?1",
                                params![seq, dlq, now],
                            )?;
                            moved += 1;
                            continue;
                        }
                        let receipt = uuid::Uuid::new_v4().to_string();
                        tx.execute(
                            "UPDATE messages SET receive_count = receive_count + 1, receipt = ?2, visible_at = ?3 WHERE seq = ?1",
                            params![seq, receipt, now + millis(visibility)],
                        )?;
                        delivered.push(Received { id, receipt, body, receive_count: count + 1 });
                    }
                }
                let next_visible: Option<i64> =
                    tx.query_row("SELECT MIN(visible_at) FROM messages WHERE queue = ?1", [&name], |row| row.get(0))?;
                tx.commit()?;
                Ok::<_, QueueError>((delivered, next_visible, moved))
            })
            .await?;
        let (delivered, next_visible, moved) = result;
        if moved > 0 {
            tracing::warn!(queue = %self.name, moved, "messages moved to the dead-letter queue");
            metrics::counter!("streamgate_dead_lettered_total", "queue" => self.name.clone()).increment(moved as u64);
            if let Some(dlq) = moved_to {
                self.db.wakeup(&dlq).notify_waiters();
            }
        }
        Ok((delivered, next_visible))
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send_batch(&self, bodies: &[String], delay: Duration) -> Result<(), QueueError> {
        check_size(bodies)?;
        let name = self.name.clone();
        let bodies = bodies.to_vec();
        self.db
            .call(move |conn| {
                let visible_at = now_unix_ms() + millis(delay);
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                for body in bodies {
                    tx.execute(
                        "INSERT INTO messages (id, queue, body, visible_at) VALUES (?1, ?2, ?3, ?4)",
                        params![uuid::Uuid::now_v7().to_string(), name, body, visible_at],
                    )?;
                }
                tx.commit()?;
                Ok::<_, QueueError>(())
            })
            .await?;
        self.db.wakeup(&self.name).notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let max = max.clamp(1, 10);
        let deadline = tokio::time::Instant::now() + wait;
        let wakeup = self.db.wakeup(&self.name);
        loop {
            // Register before looking, so that a send between the look and the wait still wakes us.
            let notified = wakeup.notified();
            let (messages, next_visible) = self.receive_now(max, visibility).await?;
            let now = tokio::time::Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let until_visible = next_visible
                .map(|at| Duration::from_millis(u64::try_from(at - now_unix_ms()).unwrap_or(0).max(5)))
                .unwrap_or(Duration::MAX);
            let sleep = until_visible.min(deadline - now);
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        let receipt = receipt.to_owned();
        let deleted = self
            .db
            .call(move |conn| Ok::<_, QueueError>(conn.execute("DELETE FROM messages WHERE receipt = ?1", [receipt])?))
            .await?;
        if deleted == 0 {
            Err(QueueError::InvalidReceipt)
        } else {
            Ok(())
        }
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        let receipt = receipt.to_owned();
        let updated = self
            .db
            .call(move |conn| {
                Ok::<_, QueueError>(conn.execute(
                    "UPDATE messages SET visible_at = ?2 WHERE receipt = ?1",
                    params![receipt, now_unix_ms() + millis(visibility)],
                )?)
            })
            .await?;
        if updated == 0 {
            return Err(QueueError::InvalidReceipt);
        }
        if visibility.is_zero() {
            self.db.wakeup(&self.name).notify_waiters();
        }
        Ok(())
    }
}
