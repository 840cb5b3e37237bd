//! The `Queue` port: at-least-once delivery with visibility timeouts and dead-lettering.

use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the receipt is unknown or expired")]
    InvalidReceipt,
    #[error("message too large: {0} bytes (at most {MAX_MESSAGE_BYTES})")]
    TooLarge(usize),
    #[error("the queue failed: {0}")]
    Backend(String),
}

impl QueueError {
    pub fn backend(err: impl std::fmt::Display) -> Self {
        Self::Backend(err.to_string())
    }
}

/// SQS's limit on one message body, applied by every adapter.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A delivered message; `receipt` acknowledges or extends this delivery only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// How many times the message has been delivered, this delivery included.
    pub receive_count: u32,
}

/// One queue. A message received and not acknowledged within its visibility timeout is delivered again;
/// after the queue's maximum number of deliveries it moves to the dead-letter queue instead.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends messages; they become visible after `delay`.
    async fn send_batch(&self, bodies: &[String], delay: Duration) -> Result<(), QueueError>;
    /// Receives up to `max` messages (1 to 10), waiting up to `wait` for the first.
    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<Received>, QueueError>;
    /// Deletes a delivered message.
    async fn ack(&self, receipt: &str) -> Result<(), QueueError>;
    /// Keeps a delivered message invisible for `visibility` from now (zero makes it visible at once).
    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError>;

    async fn send(&self, body: String) -> Result<(), QueueError> {
        self.send_batch(std::slice::from_ref(&body), Duration::ZERO).await
    }
}

pub(crate) fn check_size(bodies: &[String]) -> Result<(), QueueError> {
    match bodies.iter().find(|body| body.len() > MAX_MESSAGE_BYTES) {
        Some(body) => Err(QueueError::TooLarge(body.len())),
        None => Ok(()),
    }
}
