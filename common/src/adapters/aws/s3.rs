use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3Part};
use bytes::Bytes;
use chrono::Utc;

use super::describe;
use crate::blobs::{BlobError, Blobs, ByteChunks, CompletedPart, ObjectMeta, SignedUrl, validate_key};

/// The `Blobs` port on one S3 bucket. Signed URLs are SigV4 presigned URLs.
#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(sdk: &aws_config::SdkConfig, bucket: impl Into<String>, path_style: bool) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn put_body(
        &self,
        key: &str,
        body: ByteStream,
        size: u64,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, BlobError> {
        validate_key(key)?;
        let output = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_owned))
            .body(body)
            .send()
            .await
            .map_err(backend)?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: output.e_tag.unwrap_or_default(),
        })
    }
}

fn backend(err: impl std::error::Error) -> BlobError {
    BlobError::Backend(describe(err))
}

/// S3 numbers parts with an `i32`.
fn s3_part_number(part_number: u32) -> Result<i32, BlobError> {
    i32::try_from(part_number).map_err(|_| BlobError::InvalidParts("part number too large".into()))
}

fn presigning(ttl: Duration) -> Result<PresigningConfig, BlobError> {
    PresigningConfig::expires_in(ttl).map_err(backend)
}

fn signed(request: aws_sdk_s3::presigning::PresignedRequest, ttl: Duration) -> SignedUrl {
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    SignedUrl {
        url: request.uri().to_owned(),
        expires_at,
    }
}

fn is_no_such_upload<E: aws_sdk_s3::error::ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("NoSuchUpload")
}

#[async_trait]
impl Blobs for S3Blobs {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(&self, key: &str, body: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, BlobError> {
        let size = body.len() as u64;
        self.put_body(key, ByteStream::from(body), size, content_type).await
    }

    async fn put_file(&self, key: &str, path: &Path, content_type: Option<&str>) -> Result<ObjectMeta, BlobError> {
        validate_key(key)?;
        let size = tokio::fs::metadata(path).await.map_err(BlobError::backend)?.len();
        let body = ByteStream::from_path(path).await.map_err(backend)?;
        self.put_body(key, body, size, content_type).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        validate_key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => Ok(output.body.collect().await.map_err(backend)?.into_bytes()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                Err(BlobError::NotFound(key.to_owned()))
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<ByteChunks, BlobError> {
        validate_key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => {
                let chunks = futures::stream::unfold(output.body, |mut body| async move {
                    body.next().await.map(|chunk| (chunk.map_err(backend), body))
                });
                Ok(Box::pin(chunks))
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                Err(BlobError::NotFound(key.to_owned()))
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BlobError> {
        validate_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: output.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                etag: output.e_tag.unwrap_or_default(),
            })),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BlobError> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(backend)?;
            for object in page.contents.unwrap_or_default() {
                objects.push(ObjectMeta {
                    key: object.key.unwrap_or_default(),
                    size: object.size.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    etag: object.e_tag.unwrap_or_default(),
                });
            }
        }
        Ok(objects)
    }

    async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError> {
        validate_key(key)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning(ttl)?)
            .await
            .map_err(backend)?;
        Ok(signed(request, ttl))
    }

    async fn signed_put_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError> {
        validate_key(key)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning(ttl)?)
            .await
            .map_err(backend)?;
        Ok(signed(request, ttl))
    }

    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, BlobError> {
        validate_key(key)?;
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_owned))
            .send()
            .await
            .map_err(backend)?;
        output
            .upload_id
            .ok_or_else(|| BlobError::Backend("S3 returned no upload id".into()))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<String, BlobError> {
        validate_key(key)?;
        let part = s3_part_number(part_number)?;
        match self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part)
            .body(ByteStream::from(body))
            .send()
            .await
        {
            Ok(output) => output
                .e_tag
                .ok_or_else(|| BlobError::Backend("S3 returned no ETag".into())),
            Err(err) if err.as_service_error().is_some_and(is_no_such_upload) => {
                Err(BlobError::NoSuchUpload(upload_id.to_owned()))
            }
            Err(err) => Err(backend(err)),
        }
    }

    async fn signed_part_url(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        ttl: Duration,
    ) -> Result<SignedUrl, BlobError> {
        validate_key(key)?;
        let part = s3_part_number(part_number)?;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part)
            .presigned(presigning(ttl)?)
            .await
            .map_err(backend)?;
        Ok(signed(request, ttl))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError> {
        validate_key(key)?;
        let mut completed = Vec::with_capacity(parts.len());
        for part in parts {
            let number = s3_part_number(part.part_number)?;
            completed.push(S3Part::builder().part_number(number).e_tag(&part.etag).build());
        }
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await;
        match result {
            Ok(_) => self.head(key).await?.ok_or_else(|| BlobError::NotFound(key.to_owned())),
            Err(err) => match err
                .as_service_error()
                .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
            {
                Some("NoSuchUpload") => Err(BlobError::NoSuchUpload(upload_id.to_owned())),
                Some(code @ ("InvalidPart" | "InvalidPartOrder" | "EntityTooSmall" | "MalformedXML")) => {
                    Err(BlobError::InvalidParts(code.to_owned()))
                }
                _ => Err(backend(err)),
            },
        }
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_upload()) => {
                Err(BlobError::NoSuchUpload(upload_id.to_owned()))
            }
            Err(err) => Err(backend(err)),
        }
    }
}
