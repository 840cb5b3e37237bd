use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use cloudevents::{AttributesReader, Data};
use serde_json::Value;

use super::FunctionInfo;
use crate::events::{Event, EventError, EventHandler, Message, Trigger, handle_all, parse_s3_notification};
use crate::problem::ApiError;

/// The largest CloudEvent accepted: SQS's message limit plus room for the envelope.
const MAX_EVENT_BYTES: usize = 512 * 1024;

/// `POST /`: a CloudEvents sink in binary or structured mode, as Knative delivers events. Answers `202`
/// when handled, `400` for an event that can never succeed (the broker sends it to its dead-letter sink)
/// and `503` for a transient failure (the broker retries).
pub fn event_router(info: FunctionInfo, handler: Arc<dyn EventHandler>) -> Router {
    Router::new()
        .route("/", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_EVENT_BYTES))
        .with_state((info, handler))
}

async fn receive(
    State((info, handler)): State<(FunctionInfo, Arc<dyn EventHandler>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let event = ::cloudevents::binding::http::to_event(&headers, body.to_vec())
        .map_err(|e| ApiError::bad_request("malformed_event", format!("not a CloudEvent: {e}")))?;
    let span = tracing::info_span!("event", function = info.name, event_id = %event.id(), event_type = %event.ty());
    let _entered = span.enter();
    let result = match events_of(handler.trigger(), &event) {
        Ok(events) => handle_all(handler.as_ref(), events).await,
        Err(err) => Err(err),
    };
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
