//! Adapters behind the ports: `local` (files and SQLite under the data dir) and `aws` (S3, DynamoDB, SQS).

pub mod aws;
pub mod local;
