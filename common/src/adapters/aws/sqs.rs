use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};

use super::describe;
use crate::queue::{Queue, QueueError, Received, check_size};

/// The `Queue` port on one SQS queue; dead-lettering is the queue's redrive policy.
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(sdk: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            url: url.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

fn backend(err: impl std::error::Error) -> QueueError {
    QueueError::Backend(describe(err))
}

fn seconds(duration: Duration, max: u64) -> i32 {
    i32::try_from(duration.as_secs().min(max)).unwrap_or(0)
}

fn invalid_receipt<E: aws_sdk_sqs::error::ProvideErrorMetadata>(err: &E) -> bool {
    matches!(
        err.code(),
        Some("ReceiptHandleIsInvalid" | "InvalidParameterValue" | "MessageNotInflight")
    )
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, bodies: &[String], delay: Duration) -> Result<(), QueueError> {
        check_size(bodies)?;
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .delay_seconds(seconds(delay, 900))
                        .build()
                        .map_err(backend)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(backend)?;
            if let Some(failed) = output.failed.first() {
                return Err(QueueError::Backend(format!(
                    "SQS refused {} of {} messages: {}",
                    output.failed.len(),
                    chunk.len(),
                    failed.message.as_deref().unwrap_or(&failed.code)
                )));
            }
        }
        Ok(())
    }

    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(1))
            .visibility_timeout(seconds(visibility, 43_200))
            .wait_time_seconds(seconds(wait, 20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(backend)?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                let receive_count = message
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    id: message.message_id?,
                    receipt: message.receipt_handle?,
                    body: message.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        match self
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(invalid_receipt) => Err(QueueError::InvalidReceipt),
            Err(err) => Err(backend(err)),
        }
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        match self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds(visibility, 43_200))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(invalid_receipt) => Err(QueueError::InvalidReceipt),
            Err(err) => Err(backend(err)),
        }
    }
}
