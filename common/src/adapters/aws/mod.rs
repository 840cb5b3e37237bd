//! Cloud adapters on the official AWS SDK: S3 for `Blobs`, DynamoDB for `Store`, SQS for `Queue`. The
//! standard SDK environment applies (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`), so an emulator on
//! loopback can stand in for AWS.

mod dynamodb;
mod s3;
mod sqs;

pub use dynamodb::{DynamoStore, GSI1};
pub use s3::S3Blobs;
pub use sqs::SqsQueue;

use aws_smithy_http_client::tls;

/// The SDK's HTTP client with rustls on ring as the TLS stack.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// Loads the SDK configuration from the environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`, ...).
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await
}

/// The message of an SDK error with its whole chain of causes, for logs and backend errors.
pub(crate) fn describe(err: impl std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
