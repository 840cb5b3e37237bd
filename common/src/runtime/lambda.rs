use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use serde_json::Value;

use crate::events::{
    Event, EventError, EventHandler, Message, Trigger, events_from_message, handle_all, parse_s3_notification,
};

/// Handles one Lambda invocation of an event function and returns the response document.
///
/// - SQS batches (a queue handler's messages, or S3 notifications through a queue for a storage handler):
///   each message is handled on its own and the failed ones are answered as `batchItemFailures`, so one
///   bad message never fails its neighbours; configure the event source mapping with
///   `ReportBatchItemFailures`.
/// - S3 notifications invoking the function directly: any failure fails the invocation (Lambda retries).
/// - EventBridge schedules: one tick.
///
/// A payload the function does not take is an error.
pub async fn handle_lambda_event(handler: &dyn EventHandler, payload: Value) -> Result<Value, EventError> {
    let source = payload
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|record| record.get("eventSource").or_else(|| record.get("EventSource")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (handler.trigger(), source.as_deref()) {
        (Trigger::Queue | Trigger::Storage, Some("aws:sqs")) => {
            let batch: SqsEvent = serde_json::from_value(payload).map_err(EventError::malformed)?;
            sqs_batch(handler, batch).await
        }
        (Trigger::Storage, Some("aws:s3")) => {
            let objects = parse_s3_notification(payload)?;
            handle_all(handler, objects.into_iter().map(Event::ObjectCreated).collect()).await?;
            Ok(Value::Null)
        }
        // Storage functions also take schedules, for their housekeeping.
        (Trigger::Schedule | Trigger::Storage, None) if payload.get("detail-type").is_some() => {
            let event: EventBridgeEvent = serde_json::from_value(payload).map_err(EventError::malformed)?;
            handler
                .handle(Event::Schedule {
                    time: event.time.unwrap_or_else(Utc::now),
                })
                .await?;
            Ok(Value::Null)
        }
        (trigger, source) => Err(EventError::malformed(format!(
            "this function takes {trigger:?} events, not a payload from {}",
            source.unwrap_or("an unknown source")
        ))),
    }
}

async fn sqs_batch(handler: &dyn EventHandler, batch: SqsEvent) -> Result<Value, EventError> {
    let mut failures = Vec::new();
    for record in batch.records {
        let Some(id) = record.message_id.clone() else {
            // Without an id the failure cannot be reported alone: fail the batch so that it is retried.
            return Err(EventError::malformed("an SQS record without a messageId"));
        };
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let message = Message {
            id: id.clone(),
            body: record.body.unwrap_or_default(),
            receive_count,
        };
        let span = tracing::info_span!("message", message_id = %id, receive_count);
        let _entered = span.enter();
        let result = match events_from_message(handler.trigger(), message) {
            Ok(events) => handle_all(handler, events).await,
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::warn!(message_id = %id, error = %err, "message failed");
            metrics::counter!("streamgate_event_failures_total", "kind" => kind(&err)).increment(1);
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failures.push(failure);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    serde_json::to_value(response).map_err(EventError::retryable)
}

pub(crate) fn kind(err: &EventError) -> &'static str {
    match err {
        EventError::Malformed(_) => "malformed",
        EventError::Retryable(_) => "retryable",
    }
}
