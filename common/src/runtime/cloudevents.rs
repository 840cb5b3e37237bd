use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use cloudevents::{AttributesReader, Data};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::FunctionInfo;
use crate::events::{Event, EventError, EventHandler, Message, Trigger, handle_all, parse_s3_notification};
use crate::problem::ApiError;
use crate::store::{Store, now_unix};

/// The largest CloudEvent accepted: SQS's message limit plus room for the envelope.
const MAX_EVENT_BYTES: usize = 512 * 1024;

/// `POST /`: a CloudEvents sink in binary or structured mode, as Knative delivers events. Answers `202`
/// when handled, `400` for an event that can never succeed (the broker sends it to its dead-letter sink)
/// and `503` for a transient failure (the broker retries).
pub fn event_router(info: FunctionInfo, handler: Arc<dyn EventHandler>, deliveries: Deliveries) -> Router {
    Router::new()
        .route("/", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_EVENT_BYTES))
        .with_state(Sink {
            info,
            handler,
            deliveries,
        })
}

#[derive(Clone)]
struct Sink {
    info: FunctionInfo,
    handler: Arc<dyn EventHandler>,
    deliveries: Deliveries,
}

/// How many times each queue message has been delivered, counted in the store by its CloudEvent id. A
/// broker retries an event with the same id and tells the function nothing of its earlier tries; the
/// count is what tells a handler its last delivery (`STREAMGATE_MAX_ATTEMPTS`), on which a job that
/// keeps failing fails its video rather than going to the dead letters unseen.
#[derive(Clone)]
pub struct Deliveries {
    store: Arc<dyn Store>,
}

/// How long a delivery count is kept: far longer than a broker's retries take.
const DELIVERY_COUNT_SECONDS: i64 = 86_400;

impl Deliveries {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Counts one more delivery of the event `id` to `function`; returns the deliveries so far.
    async fn count(&self, function: &str, id: &str) -> Result<u32, EventError> {
        // Ids are the sender's: hashed, any id makes a key of one size.
        let digest = hex::encode(Sha256::digest(id.as_bytes()));
        let pk = format!("delivery#{function}#{digest}");
        let expires = now_unix() + DELIVERY_COUNT_SECONDS;
        let count = self
            .store
            .increment(&pk, "count", "n", 1, Some(expires))
            .await
            .map_err(|e| EventError::Retryable(format!("the delivery could not be counted: {e}")))?;
        Ok(u32::try_from(count.max(1)).unwrap_or(u32::MAX))
    }
}

async fn receive(State(sink): State<Sink>, headers: HeaderMap, body: Bytes) -> Result<StatusCode, ApiError> {
    let Sink {
        info,
        handler,
        deliveries,
    } = sink;
    let event = ::cloudevents::binding::http::to_event(&headers, body.to_vec())
        .map_err(|e| ApiError::bad_request("malformed_event", format!("not a CloudEvent: {e}")))?;
    let span = tracing::info_span!("event", function = info.name, event_id = %event.id(), event_type = %event.ty());
    let _entered = span.enter();
    let result = async {
        let mut events = events_of(handler.trigger(), &event)?;
        if let [Event::Message(message)] = events.as_mut_slice() {
            message.receive_count = deliveries.count(info.name, event.id()).await?;
        }
        handle_all(handler.as_ref(), events).await
    }
    .await;
    match result {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(err) => {
            tracing::warn!(error = %err, "event failed");
            metrics::counter!("streamgate_event_failures_total", "kind" => super::lambda::kind(&err)).increment(1);
            match err {
                EventError::Malformed(detail) => Err(ApiError::bad_request("malformed_event", detail)),
                EventError::Retryable(_) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "retry_later",
                    "the event could not be handled now; deliver it again",
                )),
            }
        }
    }
}

fn data_json(event: &::cloudevents::Event) -> Result<Value, EventError> {
    match event.data() {
        Some(Data::Json(value)) => Ok(value.clone()),
        Some(Data::String(text)) => serde_json::from_str(text).map_err(EventError::malformed),
        Some(Data::Binary(bytes)) => serde_json::from_slice(bytes).map_err(EventError::malformed),
        None => Err(EventError::malformed("the event carries no data")),
    }
}

/// Whether a CloudEvent is a timer's tick: Knative's PingSource, or EventBridge's scheduled event.
fn is_timer(event: &::cloudevents::Event) -> bool {
    let ty = event.ty();
    ty == "dev.knative.sources.ping" || ty.ends_with(".schedule") || ty == "aws.events.scheduled"
}

/// The events one CloudEvent stands for, by what the handler takes.
fn events_of(trigger: Trigger, event: &::cloudevents::Event) -> Result<Vec<Event>, EventError> {
    match trigger {
        // A timer source (Knative's PingSource) starts a storage function's housekeeping.
        Trigger::Storage if is_timer(event) => Ok(vec![Event::Schedule {
            time: event.time().copied().unwrap_or_else(Utc::now),
        }]),
        Trigger::Storage => {
            let data = data_json(event)?;
            let objects = if data.get("Records").is_some() || data.get("s3").is_some() || data.get("Event").is_some() {
                parse_s3_notification(data)?
            } else {
                // StreamGate's own shape: {"bucket", "key", "size"?}.
                let field = |name: &str| data.get(name).and_then(Value::as_str).map(str::to_owned);
                let (Some(bucket), Some(key)) = (field("bucket"), field("key")) else {
                    return Err(EventError::malformed(
                        "a storage event needs an S3 notification or bucket and key",
                    ));
                };
                vec![crate::events::ObjectCreated {
                    bucket,
                    key,
                    size: data.get("size").and_then(Value::as_u64),
                    etag: field("etag"),
                }]
            };
            Ok(objects.into_iter().map(Event::ObjectCreated).collect())
        }
        Trigger::Queue => {
            let body = if event.ty().contains("sqs") {
                // A queue source relays the SQS message itself; its body is the job.
                let message = data_json(event)?;
                message
                    .get("Body")
                    .or_else(|| message.get("body"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| EventError::malformed("an SQS message without a body"))?
            } else {
                match event.data() {
                    Some(Data::Json(value)) => value.to_string(),
                    Some(Data::String(text)) => text.clone(),
                    Some(Data::Binary(bytes)) => String::from_utf8(bytes.clone()).map_err(EventError::malformed)?,
                    None => return Err(EventError::malformed("the event carries no data")),
                }
            };
            Ok(vec![Event::Message(Message {
                id: event.id().to_owned(),
                body,
                receive_count: 1,
            })])
        }
        Trigger::Schedule => Ok(vec![Event::Schedule {
            time: event.time().copied().unwrap_or_else(Utc::now),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::adapters::local::{LocalDb, LocalStore};

    /// Takes queue messages; remembers each one's delivery count, and fails the ones it is told to.
    struct Counting {
        seen: Mutex<Vec<(String, u32)>>,
    }

    #[async_trait::async_trait]
    impl EventHandler for Counting {
        fn trigger(&self) -> Trigger {
            Trigger::Queue
        }

        async fn handle(&self, event: Event) -> Result<(), EventError> {
            let Event::Message(message) = event else {
                return Err(EventError::malformed("not a message"));
            };
            self.seen
                .lock()
                .expect("lock")
                .push((message.id.clone(), message.receive_count));
            match message.body.contains("fail") {
                true => Err(EventError::retryable("failing on purpose")),
                false => Ok(()),
            }
        }
    }

    fn delivery(id: &str, body: &str) -> Request<Body> {
        Request::post("/")
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", "dev.streamgate.job")
            .header("ce-source", "/test")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    }

    #[tokio::test]
    async fn a_redelivered_event_is_told_how_many_times_it_came() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(LocalDb::open(&dir.path().join("db")).expect("db")));
        let handler = Arc::new(Counting {
            seen: Mutex::new(Vec::new()),
        });
        let info = FunctionInfo {
            name: "transcode",
            version: "1.0.0",
        };
        let router = event_router(info, handler.clone(), Deliveries::new(store.clone()));
        for _ in 0..3 {
            let answer = router
                .clone()
                .oneshot(delivery("job-1", r#"{"job":"fail"}"#))
                .await
                .expect("answer");
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let answer = router
            .clone()
            .oneshot(delivery("job-2", r#"{"job":"ok"}"#))
            .await
            .expect("answer");
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        // Another function counts its own deliveries of the same id.
        let other = event_router(
            FunctionInfo {
                name: "finalize",
                version: "1.0.0",
            },
            handler.clone(),
            Deliveries::new(store),
        );
        let answer = other
            .oneshot(delivery("job-1", r#"{"job":"ok"}"#))
            .await
            .expect("answer");
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        let seen = handler.seen.lock().expect("lock").clone();
        let expected = [("job-1", 1), ("job-1", 2), ("job-1", 3), ("job-2", 1), ("job-1", 1)];
        assert_eq!(seen, expected.map(|(id, n)| (id.to_owned(), n)));
    }
}
