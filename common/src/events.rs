//! Events that start work: storage notifications, queue messages and schedules. A handler sees the same
//! [`Event`] whether it runs on Lambda (S3, SQS and EventBridge payloads), on Knative (CloudEvents) or in
//! the local server (its own dispatcher), and says by its [`EventError`] whether a failure may be retried.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// What starts an event function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Objects created in a bucket (S3 notifications, directly or through a queue).
    Storage,
    /// Messages of a queue.
    Queue,
    /// A timer.
    Schedule,
}

/// An object that was written, as a storage notification reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// A queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub body: String,
    /// Deliveries so far, this one included (1 where the transport does not count).
    pub receive_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ObjectCreated(ObjectCreated),
    Message(Message),
    Schedule { time: DateTime<Utc> },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The event can never succeed: retrying will not help, it belongs in the dead-letter queue.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A transient failure: deliver the event again later.
    #[error("{0}")]
    Retryable(String),
}

impl EventError {
    pub fn malformed(detail: impl std::fmt::Display) -> Self {
        Self::Malformed(detail.to_string())
    }

    pub fn retryable(detail: impl std::fmt::Display) -> Self {
        Self::Retryable(detail.to_string())
    }
}

/// An event function's logic.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    fn trigger(&self) -> Trigger;
    async fn handle(&self, event: Event) -> Result<(), EventError>;
}

/// The parts of an S3 notification record that StreamGate reads. Parsed leniently: S3 sends more
/// fields, and other emitters (S3-compatible stores, event sources, emulators) send fewer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Record {
    #[serde(default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Debug, Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Debug, Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Object {
    key: String,
    size: Option<u64>,
    e_tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct S3Notification {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

/// Reads an S3 notification document (`{"Records": [...]}`, or one record alone) and returns the
/// objects it reports created. S3's `s3:TestEvent`, sent when a notification is configured, yields none.
pub fn parse_s3_notification(value: Value) -> Result<Vec<ObjectCreated>, EventError> {
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let records = if value.get("Records").is_some() {
        serde_json::from_value::<S3Notification>(value)
            .map_err(EventError::malformed)?
            .records
    } else if value.get("s3").is_some() {
        vec![serde_json::from_value::<S3Record>(value).map_err(EventError::malformed)?]
    } else {
        return Err(EventError::malformed("not an S3 notification: no Records"));
    };
    Ok(records
        .into_iter()
        .filter(|record| record.event_name.starts_with("ObjectCreated:"))
        .map(|record| ObjectCreated {
            bucket: record.s3.bucket.name,
            // Keys arrive form-encoded (spaces as `+`).
            key: url::form_urlencoded::parse(format!("k={}", record.s3.object.key).as_bytes())
                .next()
                .map_or(record.s3.object.key, |(_, key)| key.into_owned()),
            size: record.s3.object.size,
            etag: record.s3.object.e_tag,
        })
        .collect())
}

/// The events one queue message body stands for: for a storage handler, the S3 notification it carries
/// (S3 → SQS); for a queue handler, the message itself.
pub fn events_from_message(trigger: Trigger, message: Message) -> Result<Vec<Event>, EventError> {
    match trigger {
        Trigger::Queue => Ok(vec![Event::Message(message)]),
        Trigger::Storage => {
            let value: Value = serde_json::from_str(&message.body).map_err(EventError::malformed)?;
            Ok(parse_s3_notification(value)?
                .into_iter()
                .map(Event::ObjectCreated)
                .collect())
        }
        Trigger::Schedule => Ok(vec![Event::Schedule { time: Utc::now() }]),
    }
}

/// Runs every event in order, stopping at the first failure.
pub async fn handle_all(handler: &dyn EventHandler, events: Vec<Event>) -> Result<(), EventError> {
    for event in events {
        handler.handle(event).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_s3_notifications_and_decodes_keys() {
        let value = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-01-01T00:00:00.000Z", "eventName": "ObjectCreated:CompleteMultipartUpload",
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "src", "arn": "arn:aws:s3:::src"},
                   "object": {"key": "sources/my+video%21", "size": 42, "eTag": "abc"}}
        }, {
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
            "s3": {"bucket": {"name": "src"}, "object": {"key": "gone"}}
        }]});
        let objects = parse_s3_notification(value).expect("parses");
        assert_eq!(
            objects,
            vec![ObjectCreated {
                bucket: "src".into(),
                key: "sources/my video!".into(),
                size: Some(42),
                etag: Some("abc".into())
            }]
        );
    }

    #[test]
    fn test_events_yield_nothing_and_garbage_is_malformed() {
        let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "src"});
        assert_eq!(parse_s3_notification(test_event), Ok(vec![]));
        assert!(matches!(
            parse_s3_notification(json!({"hello": 1})),
            Err(EventError::Malformed(_))
        ));
        let message = Message {
            id: "1".into(),
            body: "{not json".into(),
            receive_count: 1,
        };
        assert!(matches!(
            events_from_message(Trigger::Storage, message),
            Err(EventError::Malformed(_))
        ));
    }
}
