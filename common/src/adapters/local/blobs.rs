use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;
use url::Url;

use super::multipart::{self, Joined};
use crate::blobs::{BlobError, Blobs, ByteChunks, CompletedPart, ObjectMeta, SignedUrl, validate_key};
use crate::problem::{ApiError, Path as UrlPath, Query};
use crate::queue::Queue;
use crate::signing::{SignatureError, UrlSigner};

/// Where the local server serves signed blob URLs: `/blobs/{bucket}/{key}`.
pub const BLOB_ROUTE_PREFIX: &str = "/blobs";

/// S3's smallest part, other than the last, in a multipart upload; enforced here too so that code that
/// works locally works on S3.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest single PUT or part.
const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The `Blobs` port on the file system. Each object is a file under `{data}/blobs/{bucket}/`; directory
/// names end in `.d` and file names in `.f`, so that keys `a` and `a/b` can both exist. Writes go to a
/// temporary file that is synced and renamed into place: a reader sees a whole object or none.
#[derive(Clone)]
pub struct LocalBlobs {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    bucket: String,
    root: PathBuf,
    tmp: PathBuf,
    multipart: PathBuf,
    signer: UrlSigner,
    public_url: Url,
    /// Where notifications go, and the key prefix they are sent for.
    events: Option<(Arc<dyn Queue>, String)>,
    /// Whether objects reach the disk (fsync) before they become visible.
    sync: bool,
}

impl LocalBlobs {
    /// The bucket `bucket` under `data_dir`, whose signed URLs start with `public_url`.
    pub fn open(data_dir: &Path, bucket: &str, signer: UrlSigner, public_url: Url) -> std::io::Result<Self> {
        let base = data_dir.join("blobs");
        let inner = Inner {
            bucket: bucket.to_owned(),
            root: base.join(bucket),
            tmp: base.join(".tmp"),
            multipart: base.join(".multipart").join(bucket),
            signer,
            public_url,
            events: None,
            sync: true,
        };
        for dir in [&inner.root, &inner.tmp, &inner.multipart] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Sends an S3-shaped `ObjectCreated` notification to `queue` for every object written under
    /// `prefix`, as S3 does to its notification targets when their filter names a prefix.
    pub fn with_events(self, queue: Arc<dyn Queue>, prefix: &str) -> Self {
        let inner = Inner {
            events: Some((queue, prefix.to_owned())),
            ..(*self.inner).clone()
        };
        Self { inner: Arc::new(inner) }
    }

    /// With `false`, objects become visible once written to the page cache, without waiting for the
    /// disk: still whole or absent after a crash of this process, but not after one of the machine.
    pub fn with_sync(self, sync: bool) -> Self {
        let inner = Inner {
            sync,
            ..(*self.inner).clone()
        };
        Self { inner: Arc::new(inner) }
    }

    fn object_path(&self, key: &str) -> Result<PathBuf, BlobError> {
        validate_key(key)?;
        let mut path = self.inner.root.clone();
        let mut segments = key.split('/').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_some() {
                path.push(format!("{segment}.d"));
            } else {
                path.push(format!("{segment}.f"));
            }
        }
        Ok(path)
    }

    /// A multipart upload, written as this store writes objects (synced or not).
    fn upload(&self, upload_id: &str) -> Result<multipart::Upload, BlobError> {
        Ok(multipart::Upload::new(self.upload_dir(upload_id)?).with_sync(self.inner.sync))
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf, BlobError> {
        if upload_id.len() != 36 || !upload_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(BlobError::NoSuchUpload(upload_id.chars().take(40).collect()));
        }
        Ok(self.inner.multipart.join(upload_id))
    }

    /// Streams `body` into a temporary file (synced unless disabled); returns it with its size and
    /// SHA-256.
    async fn write_temp<S, E>(&self, mut body: S) -> Result<(tempfile::TempPath, u64, String), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let temp = tempfile::NamedTempFile::new_in(&self.inner.tmp).map_err(BlobError::backend)?;
        let (file, path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Backend(format!("reading the body failed: {e}")))?;
            size += chunk.len() as u64;
            if size > MAX_OBJECT_SIZE {
                return Err(BlobError::InvalidParts(format!(
                    "an object or part may hold at most {MAX_OBJECT_SIZE} bytes"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(BlobError::backend)?;
        }
        file.flush().await.map_err(BlobError::backend)?;
        if self.inner.sync {
            file.sync_all().await.map_err(BlobError::backend)?;
        }
        Ok((path, size, hex::encode(hasher.finalize())))
    }

    async fn commit(
        &self,
        staged: Joined,
        key: &str,
        size: u64,
        etag: String,
        event: &str,
    ) -> Result<ObjectMeta, BlobError> {
        let path = self.object_path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(BlobError::backend)?;
        }
        match staged {
            Joined::Temp(temp) => temp.persist(&path).map_err(|e| BlobError::backend(e.error))?,
            Joined::Assembly(file) => tokio::fs::rename(file, &path).await.map_err(BlobError::backend)?,
        }
        write_sidecar(&path, &etag).await?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag,
        };
        if let Some((queue, prefix)) = &self.inner.events
            && key.starts_with(prefix.as_str())
        {
            let notification = s3_notification(&self.inner.bucket, &meta, event);
            queue.send(notification.to_string()).await.map_err(BlobError::backend)?;
        }
        Ok(meta)
    }

    /// Stores a streamed body at `key` (the signed-PUT route uses it).
    pub async fn put_stream<S, E>(&self, key: &str, body: S) -> Result<ObjectMeta, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        validate_key(key)?;
        let (temp, size, hash) = self.write_temp(body).await?;
        self.commit(Joined::Temp(temp), key, size, quoted(&hash[..32]), "ObjectCreated:Put")
            .await
    }

    /// Stores a streamed part of a multipart upload and returns its ETag.
    pub async fn put_part_stream<S, E>(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        size: Option<u64>,
        body: S,
    ) -> Result<String, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display,
    {
        validate_key(key)?;
        if !(1..=10_000).contains(&part_number) {
            return Err(BlobError::InvalidParts(format!(
                "part number {part_number} is outside 1 to 10000"
            )));
        }
        self.upload(upload_id)?
            .put(
                key.to_owned(),
                part_number,
                size,
                body,
                &self.inner.tmp,
                MAX_OBJECT_SIZE,
            )
            .await
    }

    fn signed_url(
        &self,
        method: &Method,
        key: &str,
        extra: &[(&str, String)],
        ttl: Duration,
    ) -> Result<SignedUrl, BlobError> {
        validate_key(key)?;
        let expires_at = Utc::now() + chrono::Duration::from_std(ttl).map_err(BlobError::backend)?;
        let path = format!("{BLOB_ROUTE_PREFIX}/{}/{key}", self.inner.bucket);
        let resource = resource(&path, extra.iter().map(|(k, v)| (*k, v.as_str())));
        let signature = self.inner.signer.sign(method.as_str(), &resource, expires_at);
        let mut url = self
            .inner
            .public_url
            .join(path.trim_start_matches('/'))
            .map_err(BlobError::backend)?;
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in extra {
                query.append_pair(name, value);
            }
            query.append_pair("expires", &expires_at.timestamp().to_string());
            query.append_pair("signature", &signature);
        }
        Ok(SignedUrl {
            url: url.into(),
            expires_at,
        })
    }
}

/// The signed resource string: the path, then the parameters that the signature binds.
fn resource<'a>(path: &str, params: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut resource = path.to_owned();
    for (name, value) in params {
        resource.push_str(&format!("\n{name}={value}"));
    }
    resource
}

fn quoted(hex: &str) -> String {
    format!("\"{hex}\"")
}

pub(super) fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".etag");
    PathBuf::from(name)
}

async fn write_sidecar(path: &Path, etag: &str) -> Result<(), BlobError> {
    tokio::fs::write(sidecar(path), etag).await.map_err(BlobError::backend)
}

fn s3_notification(bucket: &str, object: &ObjectMeta, event: &str) -> serde_json::Value {
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "local",
            "eventTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "eventName": event,
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": {
                    "key": url::form_urlencoded::byte_serialize(object.key.as_bytes()).collect::<String>(),
                    "size": object.size,
                    "eTag": object.etag.trim_matches('"'),
                    "sequencer": format!("{:016X}", Utc::now().timestamp_nanos_opt().unwrap_or_default()),
                }
            }
        }]
    })
}

async fn meta_of(path: &Path, key: &str) -> Result<Option<ObjectMeta>, BlobError> {
    let metadata = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(BlobError::backend(err)),
    };
    if !metadata.is_file() {
        // Only files are objects; anything else at an object's path is not one.
        return Ok(None);
    }
    let etag = tokio::fs::read_to_string(sidecar(path)).await.unwrap_or_default();
    Ok(Some(ObjectMeta {
        key: key.to_owned(),
        size: metadata.len(),
        etag,
    }))
}

fn not_found(key: &str) -> BlobError {
    BlobError::NotFound(key.to_owned())
}

#[async_trait]
impl Blobs for LocalBlobs {
    fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    async fn put(&self, key: &str, body: Bytes, _content_type: Option<&str>) -> Result<ObjectMeta, BlobError> {
        self.put_stream(key, futures::stream::iter([Ok::<_, std::convert::Infallible>(body)]))
            .await
    }

    async fn put_file(&self, key: &str, path: &Path, _content_type: Option<&str>) -> Result<ObjectMeta, BlobError> {
        let file = tokio::fs::File::open(path).await.map_err(BlobError::backend)?;
        self.put_stream(key, tokio_util_stream(file)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        match tokio::fs::read(self.object_path(key)?).await {
            Ok(bytes) => Ok(bytes.into()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(not_found(key)),
            Err(err) => Err(BlobError::backend(err)),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<ByteChunks, BlobError> {
        match tokio::fs::File::open(self.object_path(key)?).await {
            Ok(file) => Ok(Box::pin(
                tokio_util_stream(file).map(|chunk| chunk.map_err(BlobError::backend)),
            )),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(not_found(key)),
            Err(err) => Err(BlobError::backend(err)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BlobError> {
        meta_of(&self.object_path(key)?, key).await
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.object_path(key)?;
        for path in [sidecar(&path), path] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(BlobError::backend(err)),
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BlobError> {
        // Walk only the directory the prefix's complete segments name.
        let (dir_key, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut root = self.inner.root.clone();
        let mut base = String::new();
        for segment in dir_key.split('/').filter(|s| !s.is_empty()) {
            if segment == "." || segment == ".." {
                return Ok(Vec::new());
            }
            root.push(format!("{segment}.d"));
            base.push_str(segment);
            base.push('/');
        }
        let keys = tokio::task::spawn_blocking(move || walk(&root, &base))
            .await
            .map_err(BlobError::backend)?
            .map_err(BlobError::backend)?;
        let mut objects = Vec::new();
        for (key, path) in keys.into_iter().filter(|(key, _)| key.starts_with(prefix)) {
            if let Some(meta) = meta_of(&path, &key).await? {
                objects.push(meta);
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError> {
        self.signed_url(&Method::GET, key, &[], ttl)
    }

    async fn signed_put_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError> {
        self.signed_url(&Method::PUT, key, &[], ttl)
    }

    async fn create_multipart(&self, key: &str, _content_type: Option<&str>) -> Result<String, BlobError> {
        validate_key(key)?;
        let upload_id = uuid::Uuid::new_v4().to_string();
        multipart::Upload::create(self.upload_dir(&upload_id)?, key).await?;
        Ok(upload_id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<String, BlobError> {
        let size = Some(body.len() as u64);
        self.put_part_stream(
            key,
            upload_id,
            part_number,
            size,
            futures::stream::iter([Ok::<_, std::convert::Infallible>(body)]),
        )
        .await
    }

    async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        len: u64,
        body: ByteChunks,
    ) -> Result<String, BlobError> {
        // Written as it arrives; a body of another length fails the stream, which stores nothing.
        let wrong = move |what: &str| BlobError::InvalidParts(format!("part {part_number} is {what} than {len} bytes"));
        let checked = futures::stream::unfold((body, 0u64, false), move |(mut body, seen, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > len {
                        Some((Err(wrong("longer")), (body, seen, true)))
                    } else {
                        Some((Ok(chunk), (body, seen, false)))
                    }
                }
                Some(Err(err)) => Some((Err(err), (body, seen, true))),
                None if seen == len => None,
                None => Some((Err(wrong("shorter")), (body, seen, true))),
            }
        });
        self.put_part_stream(key, upload_id, part_number, Some(len), Box::pin(checked))
            .await
    }

    async fn signed_part_url(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        ttl: Duration,
    ) -> Result<SignedUrl, BlobError> {
        let params = [
            ("partNumber", part_number.to_string()),
            ("uploadId", upload_id.to_owned()),
        ];
        self.signed_url(&Method::PUT, key, &params, ttl)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError> {
        let dir = self.upload_dir(upload_id)?;
        let upload = self.upload(upload_id)?;
        if !upload.is_of(key).await? {
            return Err(BlobError::NoSuchUpload(upload_id.to_owned()));
        }
        let (joined, size) = upload
            .join(parts.to_vec(), self.inner.tmp.clone(), MIN_PART_SIZE)
            .await?;
        let mut digest = Sha256::new();
        for part in parts {
            digest.update(part.etag.trim_matches('"').as_bytes());
        }
        let etag = quoted(&format!("{}-{}", &hex::encode(digest.finalize())[..32], parts.len()));
        let meta = self
            .commit(joined, key, size, etag, "ObjectCreated:CompleteMultipartUpload")
            .await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(BlobError::backend)?;
        Ok(meta)
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        let dir = self.upload_dir(upload_id)?;
        if !multipart::Upload::new(dir.clone()).is_of(key).await? {
            return Err(BlobError::NoSuchUpload(upload_id.to_owned()));
        }
        tokio::fs::remove_dir_all(&dir).await.map_err(BlobError::backend)
    }
}

fn tokio_util_stream(file: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
    futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 256 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(Bytes::from(buffer)), file))
            }
            Err(err) => Some((Err(err), file)),
        }
    })
    .boxed()
}

/// Every object below `dir` as (key, path).
fn walk(dir: &Path, prefix: &str) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(segment) = name.strip_suffix(".d") {
            found.extend(walk(&entry.path(), &format!("{prefix}{segment}/"))?);
        } else if let Some(segment) = name.strip_suffix(".f") {
            found.push((format!("{prefix}{segment}"), entry.path()));
        }
    }
    Ok(found)
}

#[derive(Deserialize)]
struct SignedQuery {
    expires: Option<String>,
    signature: Option<String>,
    #[serde(rename = "partNumber")]
    part_number: Option<u32>,
    #[serde(rename = "uploadId")]
    upload_id: Option<String>,
}

impl From<SignatureError> for ApiError {
    fn from(err: SignatureError) -> Self {
        match err {
            SignatureError::Missing => ApiError::forbidden("signature_missing", err.to_string()),
            SignatureError::Invalid => ApiError::forbidden("signature_invalid", err.to_string()),
            SignatureError::Expired => ApiError::forbidden("signature_expired", err.to_string()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(err: BlobError) -> Self {
        match err {
            BlobError::NotFound(_) => ApiError::not_found("no such object"),
            BlobError::InvalidKey(..) => ApiError::bad_request("invalid_key", err.to_string()),
            BlobError::NoSuchUpload(_) => ApiError::not_found("no such multipart upload"),
            BlobError::InvalidParts(_) => ApiError::bad_request("invalid_parts", err.to_string()),
            BlobError::Backend(_) => ApiError::unavailable(&err),
        }
    }
}

type Buckets = Arc<HashMap<String, LocalBlobs>>;

/// Routes that serve the local buckets' signed URLs: `GET`/`HEAD` (with ranges) and `PUT` of objects
/// and multipart parts under [`BLOB_ROUTE_PREFIX`].
pub fn blob_routes(buckets: impl IntoIterator<Item = LocalBlobs>) -> Router {
    let buckets: Buckets = Arc::new(buckets.into_iter().map(|b| (b.inner.bucket.clone(), b)).collect());
    Router::new()
        .route(
            &format!("{BLOB_ROUTE_PREFIX}/{{bucket}}/{{*key}}"),
            get(serve_object).head(serve_object).put(put_object),
        )
        .with_state(buckets)
}

fn verify(blobs: &LocalBlobs, method: &Method, key: &str, query: &SignedQuery) -> Result<(), ApiError> {
    let path = format!("{BLOB_ROUTE_PREFIX}/{}/{key}", blobs.inner.bucket);
    let part = query.part_number.map(|n| n.to_string());
    let params: Vec<(&str, &str)> = match (&part, &query.upload_id) {
        (Some(part), Some(upload)) => vec![("partNumber", part), ("uploadId", upload)],
        (None, None) => vec![],
        _ => {
            return Err(ApiError::bad_request(
                "invalid_parts",
                "partNumber and uploadId go together",
            ));
        }
    };
    // A GET signature also covers HEAD, as with S3.
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    blobs.inner.signer.verify(
        method.as_str(),
        &resource(&path, params.into_iter()),
        query.expires.as_deref(),
        query.signature.as_deref(),
    )?;
    Ok(())
}

fn bucket<'a>(buckets: &'a Buckets, name: &str) -> Result<&'a LocalBlobs, ApiError> {
    buckets.get(name).ok_or_else(|| ApiError::not_found("no such bucket"))
}

async fn serve_object(
    State(buckets): State<Buckets>,
    UrlPath((bucket_name, key)): UrlPath<(String, String)>,
    Query(query): Query<SignedQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let blobs = bucket(&buckets, &bucket_name)?;
    if query.upload_id.is_some() {
        return Err(crate::problem::method_not_allowed());
    }
    verify(blobs, request.method(), &key, &query)?;
    let path = blobs.object_path(&key)?;
    if tokio::fs::metadata(&path).await.is_err() {
        return Err(ApiError::not_found("no such object"));
    }
    let mime = mime_guess::from_path(&key).first_or_octet_stream();
    let mut response = tower_http::services::ServeFile::new_with_mime(path, &mime)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map(Body::new);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
    Ok(response)
}

async fn put_object(
    State(buckets): State<Buckets>,
    UrlPath((bucket_name, key)): UrlPath<(String, String)>,
    Query(query): Query<SignedQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let blobs = bucket(&buckets, &bucket_name)?;
    verify(blobs, &Method::PUT, &key, &query)?;
    let size = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = request.into_body().into_data_stream();
    let etag = match (query.part_number, &query.upload_id) {
        (Some(part), Some(upload_id)) => blobs.put_part_stream(&key, upload_id, part, size, body).await?,
        _ => blobs.put_stream(&key, body).await?.etag,
    };
    let etag = HeaderValue::from_str(&etag).map_err(|e| ApiError::internal(&e))?;
    Ok((StatusCode::OK, [(header::ETAG, etag)]).into_response())
}
