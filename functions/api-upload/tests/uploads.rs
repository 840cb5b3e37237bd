//! `api-upload` over the embedded adapters: the tus protocol's answers, every refusal, chunks smaller and
//! larger than a part, interrupted and concurrent requests, expiry, and direct multipart uploads.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use alloy_primitives::Address;
use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::adapters::local::blob_routes;
use common::blobs::{BlobError, Blobs, ByteChunks, CompletedPart, ObjectMeta, SignedUrl};
use common::catalog::{VideoStatus, Videos};
use common::config::{Config, MIB};
use common::identity::accounts::Accounts;
use common::identity::sessions::{SessionKeys, Sessions};
use common::ids::VideoId;
use common::platform::{LocalParts, Ports};
use common::uploads::{UploadState, Uploads};
use serde_json::{Value, json};
use sha2::Digest;
use tower::ServiceExt;

struct App {
    router: Router,
    config: Config,
    ports: Ports,
    local: LocalParts,
    alice: String,
    bob: String,
    _dir: tempfile::TempDir,
}

async fn app_with(vars: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = vec![("STREAMGATE_DATA_DIR".to_owned(), dir.path().display().to_string())];
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_vars(env).expect("config");
    let ports = Ports::from_config(&config).await.expect("ports");
    let local = ports.local.clone().expect("local parts");
    let state = api_upload::AppState::new(&config, &ports).expect("state");
    let router = api_upload::router(state).merge(blob_routes([local.sources.clone()]));
    let sessions = Sessions::new(
        SessionKeys::from_config(&config).expect("keys"),
        ports.store.clone(),
        chrono::Duration::hours(1),
    );
    let accounts = Accounts::new(ports.store.clone());
    let token = async |seed: u8| {
        let address = Address::repeat_byte(seed);
        let account = accounts.sign_in(&address).await.expect("sign in");
        let (token, _) = sessions.issue(&account, &address, &[address]).expect("token");
        token
    };
    App {
        router,
        config,
        alice: token(0xa1).await,
        bob: token(0xb0).await,
        ports,
        local,
        _dir: dir,
    }
}

async fn app() -> App {
    app_with(&[]).await
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

impl App {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, body }
    }

    fn tus(&self, method: &str, path: &str, token: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {token}"))
    }

    /// Creates an upload of `length` bytes as `token`; returns its path.
    async fn create(&self, token: &str, length: u64, metadata: &str) -> String {
        let answer = self
            .send(
                self.tus("POST", "/v1/uploads", token)
                    .header("upload-length", length.to_string())
                    .header("upload-metadata", metadata)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        let location = answer.header("location").expect("location");
        let path = location.trim_start_matches("http://127.0.0.1:8080").to_owned();
        assert!(path.starts_with("/v1/uploads/"), "{location}");
        path
    }

    /// A PATCH with `Content-Length`, as clients send them.
    async fn patch(&self, token: &str, path: &str, offset: u64, body: Vec<u8>) -> Answer {
        self.send(
            self.tus("PATCH", path, token)
                .header("upload-offset", offset.to_string())
                .header("content-type", "application/offset+octet-stream")
                .header("content-length", body.len().to_string())
                .body(Body::from(body))
                .expect("request"),
        )
        .await
    }

    /// Alice's PATCH from offset 0 declaring `length` bytes, whose `body` comes as the test sends it.
    fn declared_patch(&self, path: &str, length: usize, body: Body) -> Request<Body> {
        self.tus("PATCH", path, &self.alice)
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", length.to_string())
            .body(body)
            .expect("request")
    }

    /// A PATCH whose length is unknown until it ends (chunked transfer encoding).
    async fn patch_streamed(&self, token: &str, path: &str, offset: u64, body: Vec<u8>) -> Answer {
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        self.send(
            self.tus("PATCH", path, token)
                .header("upload-offset", offset.to_string())
                .header("content-type", "application/offset+octet-stream")
                .body(Body::from_stream(futures::stream::iter(pieces)))
                .expect("request"),
        )
        .await
    }

    /// A PATCH with `Content-Length`, or with `streamed`, of unknown length.
    async fn patch_either(&self, streamed: bool, token: &str, path: &str, offset: u64, body: Vec<u8>) -> Answer {
        if streamed {
            self.patch_streamed(token, path, offset, body).await
        } else {
            self.patch(token, path, offset, body).await
        }
    }

    /// Another server of the same installation: the same storage, its own memory.
    fn another_server(&self, behind: bool) -> App {
        let state = api_upload::AppState::new(&self.config, &self.ports)
            .expect("state")
            .with_hashing_behind_answers(behind);
        App {
            router: api_upload::router(state).merge(blob_routes([self.local.sources.clone()])),
            config: self.config.clone(),
            ports: self.ports.clone(),
            local: self.local.clone(),
            alice: self.alice.clone(),
            bob: self.bob.clone(),
            _dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A server of the same installation whose sources bucket is `sources`.
    fn over_sources(&self, sources: Arc<dyn Blobs>) -> App {
        let mut app = self.another_server(true);
        app.ports.sources = sources;
        let state = api_upload::AppState::new(&app.config, &app.ports).expect("state");
        app.router = api_upload::router(state).merge(blob_routes([self.local.sources.clone()]));
        app
    }

    /// The upload's record.
    async fn record(&self, path: &str) -> common::uploads::Upload {
        Uploads::new(self.ports.store.clone())
            .get(&Self::id(path))
            .await
            .expect("store")
            .expect("record")
    }

    async fn head(&self, token: &str, path: &str) -> Answer {
        self.send(self.tus("HEAD", path, token).body(Body::empty()).expect("request"))
            .await
    }

    fn id(path: &str) -> VideoId {
        path.rsplit('/').next().expect("id").parse().expect("video id")
    }

    /// The source object an upload became.
    async fn source(&self, path: &str) -> Bytes {
        self.ports
            .sources
            .get(&format!("sources/{}", Self::id(path)))
            .await
            .expect("source")
    }

    async fn video(&self, path: &str) -> Option<common::catalog::Video> {
        Videos::new(self.ports.store.clone())
            .get(&Self::id(path))
            .await
            .expect("store")
    }
}

/// A bucket whose answers go missing: it carries out the next `lost` completions but answers each with
/// an error, as a timeout or a reply lost on the way looks to its caller; the next `blind` looks (`head`)
/// fail.
struct LostAnswers {
    inner: Arc<dyn Blobs>,
    lost: AtomicUsize,
    blind: AtomicUsize,
    /// Objects read whole so far.
    reads: AtomicUsize,
}

impl LostAnswers {
    fn new(inner: Arc<dyn Blobs>, lost: usize, blind: usize) -> Arc<Self> {
        Arc::new(Self {
            inner,
            lost: AtomicUsize::new(lost),
            blind: AtomicUsize::new(blind),
            reads: AtomicUsize::new(0),
        })
    }

    /// Counts one off `counter`: true while there were some left.
    fn spend(counter: &AtomicUsize) -> bool {
        counter.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[async_trait::async_trait]
impl Blobs for LostAnswers {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn put(&self, key: &str, body: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, BlobError> {
        self.inner.put(key, body, content_type).await
    }
    async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, BlobError> {
        self.inner.put_file(key, path, content_type).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        self.inner.get(key).await
    }
    async fn get_stream(&self, key: &str) -> Result<ByteChunks, BlobError> {
        self.reads.fetch_add(1, SeqCst);
        self.inner.get_stream(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BlobError> {
        if Self::spend(&self.blind) {
            return Err(BlobError::Backend("the look timed out".into()));
        }
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BlobError> {
        self.inner.list(prefix).await
    }
    async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError> {
        self.inner.signed_get_url(key, ttl).await
    }
    async fn signed_put_url(&self, key: &str, ttl: Duration) -> Result<SignedUrl, BlobError> {
        self.inner.signed_put_url(key, ttl).await
    }
    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, BlobError> {
        self.inner.create_multipart(key, content_type).await
    }
    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, body: Bytes) -> Result<String, BlobError> {
        self.inner.upload_part(key, upload_id, number, body).await
    }
    async fn upload_part_stream(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        len: u64,
        body: ByteChunks,
    ) -> Result<String, BlobError> {
        self.inner.upload_part_stream(key, upload_id, number, len, body).await
    }
    async fn signed_part_url(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        ttl: Duration,
    ) -> Result<SignedUrl, BlobError> {
        self.inner.signed_part_url(key, upload_id, number, ttl).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError> {
        let object = self.inner.complete_multipart(key, upload_id, parts).await?;
        if Self::spend(&self.lost) {
            return Err(BlobError::Backend("the completion timed out".into()));
        }
        Ok(object)
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        self.inner.abort_multipart(key, upload_id).await
    }
}

fn bytes_of(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed as u64) as u8)
        .collect()
}

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

#[tokio::test]
async fn options_advertise_the_protocol() {
    let app = app().await;
    let answer = app
        .send(Request::options("/v1/uploads").body(Body::empty()).expect("request"))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.header("tus-version"), Some("1.0.0"));
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));
    let extensions: Vec<&str> = answer.header("tus-extension").expect("extensions").split(',').collect();
    for extension in [
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    ] {
        assert!(extensions.contains(&extension), "{extension}");
    }
    assert_eq!(answer.header("tus-checksum-algorithm"), Some("sha1,sha256"));
    assert_eq!(
        answer.header("tus-max-size"),
        Some((16 * 1024 * MIB).to_string().as_str())
    );
    assert_eq!(
        answer.header("streamgate-max-chunk-size"),
        Some((64 * MIB).to_string().as_str())
    );
}

#[tokio::test]
async fn the_protocol_version_and_a_token_are_required() {
    let app = app().await;
    let answer = app
        .send(
            Request::post("/v1/uploads")
                .header("upload-length", "10")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(answer.header("tus-version"), Some("1.0.0"));
    assert_eq!(answer.code(), "tus_version_unsupported");

    let answer = app
        .send(
            Request::post("/v1/uploads")
                .header("tus-resumable", "0.2.2")
                .header("upload-length", "10")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);

    let answer = app
        .send(
            Request::post("/v1/uploads")
                .header("tus-resumable", "1.0.0")
                .header("upload-length", "10")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "unauthenticated");
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));
}

#[tokio::test]
async fn creation_checks_length_and_metadata() {
    let app = app_with(&[("STREAMGATE_MAX_UPLOAD_SIZE", "1000")]).await;
    for (length, metadata, status, code) in [
        (None, String::new(), StatusCode::BAD_REQUEST, "invalid_header"),
        (Some("-1"), String::new(), StatusCode::BAD_REQUEST, "invalid_header"),
        (
            Some("1001"),
            String::new(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
        ),
        (
            Some("10"),
            "title !!".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
        ),
        (
            Some("10"),
            format!("access {}", b64("{\"type\":\"anyone\"}")),
            StatusCode::BAD_REQUEST,
            "invalid_access",
        ),
        (
            // A rule on a chain this installation cannot read.
            Some("10"),
            format!(
                "access {}",
                b64(
                    r#"{"type":"token","chainId":137,"contract":"0x5FbDB2315678afecb367f032d93F642f64180aa3","standard":"erc721"}"#
                )
            ),
            StatusCode::BAD_REQUEST,
            "invalid_access",
        ),
    ] {
        let mut request = app
            .tus("POST", "/v1/uploads", &app.alice)
            .header("upload-metadata", metadata);
        if let Some(length) = length {
            request = request.header("upload-length", length);
        }
        let answer = app.send(request.body(Body::empty()).expect("request")).await;
        assert_eq!(answer.status, status, "{length:?}: {:?}", answer.body);
        assert_eq!(answer.code(), code);
    }
}

#[tokio::test]
async fn an_upload_in_small_chunks_becomes_the_source() {
    let app = app().await;
    let data = bytes_of((12 * MIB + 12_345) as usize, 7);
    let metadata = format!(
        "filename {},filetype {},description {}",
        b64("beach.mp4"),
        b64("video/mp4"),
        b64("Waves")
    );
    let path = app.create(&app.alice, data.len() as u64, &metadata).await;
    let video = app.video(&path).await.expect("video created with the upload");
    assert_eq!(video.status, VideoStatus::Uploading);
    assert_eq!(video.title, "beach");
    assert_eq!(video.description, "Waves");
    assert_eq!(video.owner, Address::repeat_byte(0xa1).to_checksum(None));

    let head = app.head(&app.alice, &path).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("upload-offset"), Some("0"));
    assert_eq!(head.header("upload-length"), Some(data.len().to_string().as_str()));
    assert_eq!(head.header("upload-metadata"), Some(metadata.as_str()));
    assert_eq!(head.header("cache-control"), Some("no-store"));
    assert!(head.header("upload-expires").is_some_and(|d| d.ends_with(" GMT")));

    // 1 MiB chunks: five requests fill each 5 MiB part, the rest waits in a tail object.
    let mut offset = 0usize;
    for (i, chunk) in data.chunks(MIB as usize).enumerate() {
        let answer = app
            .patch_either(i % 3 == 0, &app.alice, &path, offset as u64, chunk.to_vec())
            .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
        offset += chunk.len();
        assert_eq!(answer.header("upload-offset"), Some(offset.to_string().as_str()));
    }
    let key = format!("sources/{}", App::id(&path));
    let stored = app.ports.sources.get(&key).await.expect("source object");
    assert!(
        stored.as_ref() == data.as_slice(),
        "the source differs from what was sent"
    );
    let scratch = app
        .ports
        .sources
        .list(&format!("uploads/{}/", App::id(&path)))
        .await
        .expect("list");
    assert!(scratch.is_empty(), "tail objects left behind: {scratch:?}");

    let video = app.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Processing);
    let source = video.source.expect("source recorded");
    assert_eq!(source.size, data.len() as u64);
    assert_eq!(source.sha256, Some(hex::encode(sha2::Sha256::digest(&data))));
    assert_eq!(source.content_type.as_deref(), Some("video/mp4"));
    // Its storage event waits for on-upload; the tail objects made none.
    assert_eq!(app.local.storage_events.depth().await.expect("depth"), 1);

    let head = app.head(&app.alice, &path).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("upload-offset"), Some(data.len().to_string().as_str()));
}

#[tokio::test]
async fn small_chunks_are_stored_once_as_tail_pieces() {
    let app = app().await;
    let data = bytes_of((5 * MIB + 70_000) as usize, 8);
    let path = app.create(&app.alice, data.len() as u64, "").await;
    let scratch = format!("uploads/{}/", App::id(&path));
    let mut keys_of_tail = Vec::new();
    let mut offset = 0usize;
    // 100 KiB chunks: 51 fill the first part, 16 pieces at most at a time.
    for (i, chunk) in data.chunks(100 * 1024).enumerate() {
        // The 21st is of unknown length, and rewrites the tail as one piece.
        let answer = app
            .patch_either(i == 20, &app.alice, &path, offset as u64, chunk.to_vec())
            .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
        offset += chunk.len();
        let record = app.record(&path).await;
        let Some(tail) = &record.tail else {
            assert!(
                record.parts > 0 || offset == data.len(),
                "bytes in neither a part nor a tail"
            );
            continue;
        };
        let pieces = tail.pieces();
        // Each declared chunk adds one piece; the 17th piece, and the chunk of unknown length, make one.
        let expected = match i {
            0..=15 => i + 1,
            16..=19 => i - 15,
            20..=35 => i - 19,
            36..=50 => i - 35,
            _ => unreachable!("the first part is full after 51 chunks"),
        };
        assert_eq!(pieces.len(), expected, "pieces after chunk {i}");
        assert_eq!(record.offset, offset as u64);
        assert_eq!(tail.size(), offset as u64 - u64::from(record.parts) * 5 * MIB);
        // Exactly the tail's pieces are stored: rewritten ones are deleted.
        let mut stored: Vec<String> = app
            .ports
            .sources
            .list(&scratch)
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        stored.sort();
        keys_of_tail = pieces.iter().map(|p| p.key.clone()).collect();
        let mut listed = keys_of_tail.clone();
        listed.sort();
        assert_eq!(stored, listed, "after chunk {i}");
    }
    assert!(!keys_of_tail.is_empty());
    assert!(
        app.source(&path).await.as_ref() == data.as_slice(),
        "the source differs from what was sent"
    );
    assert!(app.ports.sources.list(&scratch).await.expect("list").is_empty());
    let source = app.video(&path).await.expect("video").source.expect("source recorded");
    assert_eq!(source.sha256, Some(hex::encode(sha2::Sha256::digest(&data))));
}

/// A request whose bytes the store cannot take fails and changes nothing the client can see: the upload
/// stays at the offset before it, and the same chunk sent again goes on from there.
#[tokio::test]
async fn a_request_whose_bytes_cannot_be_stored_changes_nothing() {
    let app = app().await;
    let piece = 100 * 1024;
    let data = bytes_of(5 * MIB as usize + 2 * piece, 9);
    let path = app.create(&app.alice, data.len() as u64, "").await;
    let id = App::id(&path);
    // Where the embedded store keeps this upload's scratch objects, and where its source lands.
    let root = app._dir.path().join("blobs").join(app.local.sources.bucket());
    let scratch = root.join("uploads.d").join(format!("{id}.d"));
    let source = root.join("sources.d").join(format!("{id}.f"));
    let offset_of = |answer: &Answer| answer.header("upload-offset").map(str::to_owned);
    let send = |from: usize, to: usize| app.patch(&app.alice, &path, from as u64, data[from..to].to_vec());
    assert_eq!(send(0, piece).await.status, StatusCode::NO_CONTENT);

    // A tail piece cannot be stored: a file stands where its directory is.
    let aside = root.join("aside");
    std::fs::rename(&scratch, &aside).expect("move the scratch directory aside");
    std::fs::write(&scratch, b"").expect("block it");
    let failed = send(piece, 2 * piece).await;
    assert!(failed.status.is_server_error(), "{:?}", failed.body);
    let head = app.head(&app.alice, &path).await;
    assert_eq!(
        offset_of(&head),
        Some(piece.to_string()),
        "bytes never stored are not counted"
    );
    let record = app.record(&path).await;
    assert_eq!(
        (record.offset, record.state, record.lease.is_none()),
        (piece as u64, UploadState::Open, true)
    );
    std::fs::remove_file(&scratch).expect("unblock");
    std::fs::rename(&aside, &scratch).expect("move the scratch directory back");
    assert_eq!(send(piece, 2 * piece).await.status, StatusCode::NO_CONTENT);

    // The last chunk cannot land at `sources/{id}`: a directory is in the way.
    std::fs::create_dir_all(&source).expect("block the source");
    let failed = send(2 * piece, data.len()).await;
    assert!(failed.status.is_server_error(), "{:?}", failed.body);
    let head = app.head(&app.alice, &path).await;
    assert_eq!(
        offset_of(&head),
        Some((2 * piece).to_string()),
        "an upload that did not land is not complete"
    );
    let record = app.record(&path).await;
    assert_eq!((record.state, record.lease.is_none()), (UploadState::Open, true));
    let video = app.video(&path).await.expect("video");
    assert_eq!(
        (video.status, video.source),
        (VideoStatus::Uploading, None),
        "the video waits too"
    );
    std::fs::remove_dir(&source).expect("unblock the source");
    assert_eq!(send(2 * piece, data.len()).await.status, StatusCode::NO_CONTENT);

    assert!(
        app.source(&path).await.as_ref() == data.as_slice(),
        "the source differs from what was sent"
    );
    let video = app.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Processing);
    let sha256 = video.source.expect("source recorded").sha256;
    assert_eq!(sha256, Some(hex::encode(sha2::Sha256::digest(&data))));
}

#[tokio::test]
async fn a_completion_seen_landed_after_its_error_keeps_the_request_s_digest() {
    let app = app().await;
    // The completion lands but answers with an error, and the look right after it fails; the next
    // look, before the request gives up, finds the object.
    let answers = LostAnswers::new(app.ports.sources.clone(), 1, 1);
    let server = app.over_sources(answers.clone());
    let data = bytes_of(5 * MIB as usize + 100 * 1024, 6);
    let path = server.create(&server.alice, data.len() as u64, "").await;
    let answer = server.patch(&server.alice, &path, 0, data.clone()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert_eq!(answer.header("upload-offset"), Some(data.len().to_string().as_str()));
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    let record = server.record(&path).await;
    assert_eq!(
        (record.state, record.sha256.as_deref()),
        (UploadState::Complete, Some(sha256.as_str()))
    );
    let source = server.video(&path).await.expect("video").source.expect("source");
    assert_eq!(source.sha256, Some(sha256));
    assert_eq!(answers.reads.load(SeqCst), 0, "the file was not read back");
}

#[tokio::test]
async fn a_last_chunk_sent_again_after_a_completion_that_landed_unseen_completes_the_upload() {
    let app = app().await;
    // The completion lands but answers with an error, and both looks for its object fail: the one
    // after the completion and the one after the failed request.
    let server = app.over_sources(LostAnswers::new(app.ports.sources.clone(), 1, 2));
    let data = bytes_of(5 * MIB as usize + 100 * 1024, 4);
    let part = 5 * MIB as usize;
    let path = server.create(&server.alice, data.len() as u64, "").await;
    let send = |from: usize| server.patch(&server.alice, &path, from as u64, data[from..].to_vec());
    let first = server.patch(&server.alice, &path, 0, data[..part].to_vec()).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    let failed = send(part).await;
    assert!(failed.status.is_server_error(), "{:?}", failed.body);
    let head = server.head(&server.alice, &path).await;
    assert_eq!(head.header("upload-offset"), Some(part.to_string().as_str()));
    assert!(
        server.source(&path).await.as_ref() == data.as_slice(),
        "the source landed all the same"
    );

    // Its storage event went on meanwhile, and the video is already ready.
    Videos::new(app.ports.store.clone())
        .update(&App::id(&path), |video| {
            video.status = VideoStatus::Ready;
            true
        })
        .await
        .expect("store")
        .expect("video");

    // The client sends the last chunk again: its part cannot be stored, the multipart upload being gone,
    // and the landed source completes the upload.
    let answer = send(part).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert_eq!(answer.header("upload-offset"), Some(data.len().to_string().as_str()));
    let record = server.record(&path).await;
    assert_eq!((record.state, record.lease.is_none()), (UploadState::Complete, true));
    // The digest of the request that landed the file was lost with its answer: api-upload does not read
    // the file back, on-upload does (see its tests).
    assert_eq!(record.sha256, None);
    let video = server.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Ready, "a video further on stays there");
    let source = video.source.expect("source recorded");
    assert_eq!(source.size, data.len() as u64);
}

#[tokio::test]
async fn chunks_larger_than_a_part_and_creation_with_upload() {
    let app = app().await;
    let data = bytes_of((11 * MIB) as usize, 3);
    let answer = app
        .send(
            app.tus("POST", "/v1/uploads", &app.alice)
                .header("upload-length", data.len().to_string())
                .header("content-type", "application/offset+octet-stream")
                .body(Body::from(data[..(7 * MIB) as usize].to_vec()))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.header("upload-offset"), Some((7 * MIB).to_string().as_str()));
    let path = answer
        .header("location")
        .expect("location")
        .trim_start_matches("http://127.0.0.1:8080")
        .to_owned();
    let answer = app
        .patch(&app.alice, &path, 7 * MIB, data[(7 * MIB) as usize..].to_vec())
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    let stored = app.source(&path).await;
    assert!(stored.as_ref() == data.as_slice());
}

#[tokio::test]
async fn an_empty_file_is_complete_at_creation() {
    let app = app().await;
    let path = app.create(&app.alice, 0, "").await;
    let video = app.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Processing);
    let source = video.source.expect("source");
    assert_eq!(source.size, 0);
    assert_eq!(
        source.sha256.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

#[tokio::test]
async fn bad_patches_are_refused_and_change_nothing() {
    let app = app_with(&[("STREAMGATE_MAX_CHUNK_SIZE", "1000")]).await;
    let path = app.create(&app.alice, 100, "").await;
    let data = bytes_of(100, 1);

    let answer = app
        .send(
            app.tus("PATCH", &path, &app.alice)
                .header("upload-offset", "0")
                .header("content-type", "application/octet-stream")
                .body(Body::from(data.clone()))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_content_type");

    let answer = app.patch(&app.alice, &path, 5, data.clone()).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.code(), "upload_offset_mismatch");
    assert_eq!(answer.header("upload-offset"), Some("0"));

    let answer = app.patch(&app.alice, &path, 0, bytes_of(101, 1)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "upload_too_large");

    let big = app.create(&app.alice, 5000, "").await;
    let answer = app.patch(&app.alice, &big, 0, bytes_of(1001, 1)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "chunk_too_large");

    let answer = app.patch(&app.bob, &path, 0, data.clone()).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.code(), "not_upload_owner");
    assert_eq!(app.head(&app.bob, &path).await.status, StatusCode::FORBIDDEN);

    let unknown = format!("/v1/uploads/{}", VideoId::generate());
    assert_eq!(app.head(&app.alice, &unknown).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.head(&app.alice, "/v1/uploads/..%2F..%2Fetc").await.status,
        StatusCode::NOT_FOUND
    );

    let answer = app
        .send(
            app.tus("PATCH", &path, &app.alice)
                .header("upload-offset", "zero")
                .header("content-type", "application/offset+octet-stream")
                .body(Body::from(data.clone()))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    let head = app.head(&app.alice, &path).await;
    assert_eq!(
        head.header("upload-offset"),
        Some("0"),
        "a refused request wrote nothing"
    );
}

#[tokio::test]
async fn checksums_are_checked_per_chunk() {
    let app = app().await;
    let data = bytes_of(3000, 9);
    let path = app.create(&app.alice, 3000, "").await;
    let send = |offset: u64, chunk: Vec<u8>, checksum: String| {
        app.send(
            app.tus("PATCH", &path, &app.alice)
                .header("upload-offset", offset.to_string())
                .header("content-type", "application/offset+octet-stream")
                .header("upload-checksum", checksum)
                .body(Body::from(chunk))
                .expect("request"),
        )
    };
    let chunk = data[..1000].to_vec();
    let wrong = format!("sha256 {}", STANDARD.encode(sha2::Sha256::digest(b"something else")));
    let answer = send(0, chunk.clone(), wrong).await;
    assert_eq!(answer.status.as_u16(), 460);
    assert_eq!(answer.code(), "checksum_mismatch");
    assert_eq!(app.head(&app.alice, &path).await.header("upload-offset"), Some("0"));

    let answer = send(0, chunk.clone(), "md5 1B2M2Y8AsgTpgAmY7PhCfg==".into()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "checksum_algorithm_unsupported");

    let answer = send(0, chunk.clone(), "sha1 not-base64".into()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    let sha256 = format!("sha256 {}", STANDARD.encode(sha2::Sha256::digest(&chunk)));
    assert_eq!(send(0, chunk, sha256).await.status, StatusCode::NO_CONTENT);
    let chunk = data[1000..].to_vec();
    let sha1 = format!("sha1 {}", STANDARD.encode(<sha1::Sha1 as Digest>::digest(&chunk)));
    assert_eq!(send(1000, chunk, sha1).await.status, StatusCode::NO_CONTENT);
    let video = app.video(&path).await.expect("video");
    assert_eq!(
        video.source.and_then(|s| s.sha256),
        Some(hex::encode(sha2::Sha256::digest(&data)))
    );
}

/// A PATCH of `data[from..from + len]`, with an `Upload-Checksum` when one is given; it must succeed.
async fn send_chunk(app: &App, path: &str, data: &[u8], from: usize, len: usize, checksum: Option<String>) {
    let mut request = app
        .tus("PATCH", path, &app.alice)
        .header("upload-offset", from.to_string())
        .header("content-type", "application/offset+octet-stream")
        .header("content-length", len.to_string());
    if let Some(checksum) = checksum {
        request = request.header("upload-checksum", checksum);
    }
    let body = Body::from(data[from..from + len].to_vec());
    let answer = app.send(request.body(body).expect("request")).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert_eq!(answer.header("upload-offset"), Some((from + len).to_string().as_str()));
}

#[tokio::test]
async fn the_digest_is_the_file_s_whether_requests_wait_for_their_hashing_or_not() {
    let installation = app().await;
    for behind in [false, true] {
        let app = installation.another_server(behind);
        let data = bytes_of((17 * MIB + 321) as usize, 5);
        let path = app.create(&app.alice, data.len() as u64, "").await;
        let mib = MIB as usize;
        let sha1 = |from: usize, len: usize| {
            let digest = <sha1::Sha1 as Digest>::digest(&data[from..from + len]);
            Some(format!("sha1 {}", STANDARD.encode(digest)))
        };
        // (from, length, with a checksum): a part; two parts with a checksum; two chunks that only make a
        // tail; a part from that tail and a chunk; the last bytes.
        let chunks = [
            (0, 5 * mib, false),
            (5 * mib, 7 * mib, true),
            (12 * mib, mib, false),
            (13 * mib, mib, false),
            (14 * mib, 3 * mib, false),
            (17 * mib, 321, false),
        ];
        for (from, len, with_checksum) in chunks {
            let checksum = if with_checksum { sha1(from, len) } else { None };
            send_chunk(&app, &path, &data, from, len, checksum.clone()).await;
            let record = app.record(&path).await;
            if record.state == UploadState::Complete {
                break;
            }
            // Where requests answer before their hashing ends, the state is held in memory, unless the
            // request waited for it anyway to check its checksum.
            let held = behind && checksum.is_none();
            assert_eq!(
                record.running_digest.is_some(),
                held,
                "behind: {behind}, chunk at {from}"
            );
            assert_eq!(record.hash_state.is_some(), !held, "behind: {behind}, chunk at {from}");
        }
        let record = app.record(&path).await;
        assert_eq!(record.state, UploadState::Complete);
        let sha256 = hex::encode(sha2::Sha256::digest(&data));
        assert_eq!(record.sha256.as_deref(), Some(sha256.as_str()));
        let video = app.video(&path).await.expect("video");
        assert_eq!(video.source.and_then(|s| s.sha256), Some(sha256));
        assert!(app.source(&path).await.as_ref() == data.as_slice());
    }
}

#[tokio::test]
async fn a_digest_lost_between_servers_is_left_to_on_upload() {
    let one = app().await;
    let other = one.another_server(true);
    let data = bytes_of((15 * MIB + 7) as usize, 6);
    let path = one.create(&one.alice, data.len() as u64, "").await;
    let part = (5 * MIB) as usize;
    send_chunk(&one, &path, &data, 0, part, None).await;
    assert!(one.record(&path).await.running_digest.is_some());
    // The next chunk reaches another server (or this one restarted), which does not hold the state.
    send_chunk(&other, &path, &data, part, part, None).await;
    let record = one.record(&path).await;
    assert_eq!((record.hash_state, record.running_digest), (None, None));
    // Back at the first server, whose state is for bytes the upload has gone past.
    send_chunk(&one, &path, &data, 2 * part, data.len() - 2 * part, None).await;
    let record = one.record(&path).await;
    assert_eq!((record.state, record.sha256), (UploadState::Complete, None));
    assert!(one.source(&path).await.as_ref() == data.as_slice());
    // Left to on-upload, which reads the file for it as it starts processing (see its tests).
    let video = one.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Processing);
    assert_eq!(
        video.source.map(|s| (s.size, s.sha256)),
        Some((data.len() as u64, None))
    );
}

#[tokio::test]
async fn a_refused_request_leaves_the_running_digest_to_the_next() {
    let app = app().await;
    let data = bytes_of((11 * MIB) as usize, 8);
    let path = app.create(&app.alice, data.len() as u64, "").await;
    let part = (5 * MIB) as usize;
    send_chunk(&app, &path, &data, 0, part, None).await;
    let held = app.record(&path).await.running_digest.expect("held");

    let wrong = format!("sha256 {}", STANDARD.encode(sha2::Sha256::digest(b"other bytes")));
    let answer = app
        .send(
            app.tus("PATCH", &path, &app.alice)
                .header("upload-offset", part.to_string())
                .header("content-type", "application/offset+octet-stream")
                .header("upload-checksum", wrong)
                .body(Body::from(data[part..2 * part].to_vec()))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status.as_u16(), 460);
    let record = app.record(&path).await;
    assert_eq!(
        (record.offset, record.running_digest.as_deref()),
        (part as u64, Some(held.as_str()))
    );

    // The next request continues from the held state: it holds its own, where a lost one would leave
    // the record naming none.
    send_chunk(&app, &path, &data, part, part, None).await;
    let record = app.record(&path).await;
    assert!(record.running_digest.is_some_and(|next| next != held));
    send_chunk(&app, &path, &data, 2 * part, data.len() - 2 * part, None).await;
    let video = app.video(&path).await.expect("video");
    assert_eq!(
        video.source.and_then(|s| s.sha256),
        Some(hex::encode(sha2::Sha256::digest(&data)))
    );
}

/// A body that sends `first`, then waits for a signal, then ends with `rest` or with an error.
fn held_body(first: Vec<u8>, rest: Option<Vec<u8>>) -> (Body, tokio::sync::oneshot::Sender<()>) {
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let stream = futures::stream::unfold((Some(first), Some(wait), rest), |(first, wait, rest)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, std::io::Error>(Bytes::from(first)), (None, wait, rest)));
        }
        let wait = wait?;
        let _ = wait.await;
        match rest {
            Some(rest) => Some((Ok(Bytes::from(rest)), (None, None, None))),
            None => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "client went away",
                )),
                (None, None, None),
            )),
        }
    });
    (Body::from_stream(stream), go)
}

#[tokio::test]
async fn concurrent_patches_one_wins_the_other_gets_409() {
    let app = app().await;
    let data = bytes_of(2000, 5);
    let path = app.create(&app.alice, 2000, "").await;
    let (body, go) = held_body(data[..500].to_vec(), Some(data[500..1000].to_vec()));
    let first = tokio::spawn({
        let router = app.router.clone();
        let request = app
            .tus("PATCH", &path, &app.alice)
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body(body)
            .expect("request");
        async move { router.oneshot(request).await.expect("infallible") }
    });
    // Wait until the first request holds the upload.
    let uploads = Uploads::new(app.ports.store.clone());
    let id = App::id(&path);
    for _ in 0..200 {
        if uploads.get(&id).await.expect("store").and_then(|u| u.lease).is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let second = app.patch(&app.alice, &path, 0, data[..1000].to_vec()).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.code(), "upload_locked");
    go.send(()).expect("first still running");
    let first = first.await.expect("join");
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.head(&app.alice, &path).await.header("upload-offset"), Some("1000"));
    let answer = app.patch(&app.alice, &path, 1000, data[1000..].to_vec()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let stored = app.ports.sources.get(&format!("sources/{id}")).await.expect("source");
    assert!(stored.as_ref() == data.as_slice());
}

/// A part whose bytes come slowly keeps its writer's lease: it is renewed as they arrive, so that no
/// other request can take the upload over and write the same part meanwhile.
#[tokio::test]
async fn a_slow_part_keeps_its_lease() {
    let app = app().await;
    let data = bytes_of(5 * MIB as usize, 12);
    let path = app.create(&app.alice, data.len() as u64, "").await;
    let (pieces, wait) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let body = Body::from_stream(futures::stream::unfold(wait, |mut wait| async move {
        let piece = wait.recv().await?;
        Some((Ok::<_, std::io::Error>(Bytes::from(piece)), wait))
    }));
    let request = app.declared_patch(&path, data.len(), body);
    let router = app.router.clone();
    let writing = tokio::spawn(async move { router.oneshot(request).await.expect("infallible") });
    let mut chunks = data.chunks(MIB as usize);
    pieces.send(chunks.next().expect("first").to_vec()).await.expect("send");
    let lease = || async {
        let record = app.record(&path).await;
        record.lease.map(|lease| lease.until)
    };
    let mut taken = None;
    for _ in 0..400 {
        taken = lease().await;
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let taken = taken.expect("the request holds the upload");
    // A quarter of the lease goes by before the next bytes.
    tokio::time::sleep(
        (api_upload::tus::LEASE_TTL / 4).to_std().expect("duration") + std::time::Duration::from_secs(1),
    )
    .await;
    pieces
        .send(chunks.next().expect("second").to_vec())
        .await
        .expect("send");
    let mut renewed = None;
    for _ in 0..400 {
        renewed = lease().await.filter(|until| *until > taken);
        if renewed.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        renewed.is_some(),
        "the lease was renewed while the part was still streaming"
    );
    for chunk in chunks {
        pieces.send(chunk.to_vec()).await.expect("send");
    }
    drop(pieces);
    assert_eq!(writing.await.expect("join").status(), StatusCode::NO_CONTENT);
    assert!(app.source(&path).await.as_ref() == data.as_slice());
}

#[tokio::test]
async fn a_chunk_cut_off_keeps_what_arrived_unless_it_had_a_checksum() {
    let app = app().await;
    let data = bytes_of((6 * MIB) as usize, 11);
    let path = app.create(&app.alice, data.len() as u64, "").await;

    // Cut off after 5.5 MiB: a whole part and a tail arrived, and are kept.
    let cut = (5 * MIB + MIB / 2) as usize;
    let (body, go) = held_body(data[..cut].to_vec(), None);
    let request = app
        .tus("PATCH", &path, &app.alice)
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .expect("request");
    let pending = tokio::spawn(app.router.clone().oneshot(request));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(go);
    let _ = pending.await;
    let head = app.head(&app.alice, &path).await;
    assert_eq!(head.header("upload-offset"), Some(cut.to_string().as_str()));

    // With a checksum, what arrived cannot be checked and is dropped.
    let (body, go) = held_body(data[cut..cut + 1000].to_vec(), None);
    let checksum = format!("sha256 {}", STANDARD.encode(sha2::Sha256::digest(&data[cut..])));
    let request = app
        .tus("PATCH", &path, &app.alice)
        .header("upload-offset", cut.to_string())
        .header("content-type", "application/offset+octet-stream")
        .header("upload-checksum", checksum)
        .body(body)
        .expect("request");
    let pending = tokio::spawn(app.router.clone().oneshot(request));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(go);
    let _ = pending.await;
    let head = app.head(&app.alice, &path).await;
    assert_eq!(head.header("upload-offset"), Some(cut.to_string().as_str()));

    // The client resumes from the offset HEAD reports.
    let answer = app.patch(&app.alice, &path, cut as u64, data[cut..].to_vec()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    let stored = app.source(&path).await;
    assert!(stored.as_ref() == data.as_slice());
}

#[tokio::test]
async fn a_declared_chunk_cut_off_keeps_its_whole_parts() {
    let app = app().await;
    let data = bytes_of((12 * MIB) as usize, 12);
    let path = app.create(&app.alice, data.len() as u64, "").await;
    // Declares all 12 MiB (parts of 5 and 7 MiB), sends 6 MiB and goes away: the first part is kept.
    let (body, go) = held_body(data[..(6 * MIB) as usize].to_vec(), None);
    let request = app.declared_patch(&path, data.len(), body);
    let pending = tokio::spawn(app.router.clone().oneshot(request));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(go);
    let _ = pending.await;
    let head = app.head(&app.alice, &path).await;
    assert_eq!(head.header("upload-offset"), Some((5 * MIB).to_string().as_str()));

    // A tail, then a declared chunk that completes a part from it and finishes the upload.
    let answer = app
        .patch(
            &app.alice,
            &path,
            5 * MIB,
            data[(5 * MIB) as usize..(6 * MIB) as usize].to_vec(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let answer = app
        .patch(&app.alice, &path, 6 * MIB, data[(6 * MIB) as usize..].to_vec())
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    let stored = app.source(&path).await;
    assert!(stored.as_ref() == data.as_slice());
    let video = app.video(&path).await.expect("video");
    assert_eq!(
        video.source.and_then(|s| s.sha256),
        Some(hex::encode(sha2::Sha256::digest(&data)))
    );
}

#[tokio::test]
async fn termination_discards_the_upload_and_its_video() {
    let app = app().await;
    let path = app.create(&app.alice, 7 * MIB, "").await;
    let answer = app.patch(&app.alice, &path, 0, bytes_of((6 * MIB) as usize, 2)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);

    let answer = app
        .send(app.tus("DELETE", &path, &app.bob).body(Body::empty()).expect("request"))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = app
        .send(
            app.tus("DELETE", &path, &app.alice)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(app.head(&app.alice, &path).await.status, StatusCode::GONE);
    assert_eq!(
        app.patch(&app.alice, &path, 6 * MIB, vec![0u8; 10]).await.status,
        StatusCode::GONE
    );
    assert!(app.video(&path).await.is_none(), "the video went with its upload");
    let id = App::id(&path);
    assert!(
        app.ports
            .sources
            .list(&format!("uploads/{id}/"))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        app.ports
            .sources
            .head(&format!("sources/{id}"))
            .await
            .expect("head")
            .is_none()
    );

    // Through X-HTTP-Method-Override too.
    let other = app.create(&app.alice, 10, "").await;
    let answer = app
        .send(
            app.tus("POST", &other, &app.alice)
                .header("x-http-method-override", "DELETE")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

/// However often it is written to, an upload expires at its maximum age: in the cloud the bucket aborts
/// multipart uploads that old.
#[tokio::test]
async fn an_upload_expires_at_its_maximum_age_however_busy() {
    let app = app_with(&[("STREAMGATE_UPLOAD_MAX_AGE", "3600")]).await;
    let path = app.create(&app.alice, 1000, "").await;
    let record = app.record(&path).await;
    let end = record.created_at + chrono::Duration::hours(1);
    let near = |at: chrono::DateTime<chrono::Utc>| at <= end && end - at < chrono::Duration::seconds(1);
    assert!(near(record.expires_at), "{} vs {end}", record.expires_at);

    // A write a day's expiry would move past the maximum age leaves it there.
    let answer = app.patch(&app.alice, &path, 0, bytes_of(400, 2)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let record = app.record(&path).await;
    assert!(near(record.expires_at), "{} vs {end}", record.expires_at);
    let expires = record.expires_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    assert_eq!(answer.header("upload-expires"), Some(expires.as_str()));

    let uploads = Uploads::new(app.ports.store.clone());
    let videos = Videos::new(app.ports.store.clone());
    let swept = uploads
        .sweep_expired(end + chrono::Duration::seconds(1), app.ports.sources.as_ref(), &videos)
        .await
        .expect("sweep");
    assert_eq!(swept, 1);
    assert_eq!(app.head(&app.alice, &path).await.status, StatusCode::GONE);
}

#[tokio::test]
async fn abandoned_uploads_expire() {
    let app = app().await;
    let path = app.create(&app.alice, 8 * MIB, "").await;
    assert_eq!(
        app.patch(&app.alice, &path, 0, bytes_of((6 * MIB) as usize, 4))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let finished = app.create(&app.alice, 10, "").await;
    assert_eq!(
        app.patch(&app.alice, &finished, 0, bytes_of(10, 4)).await.status,
        StatusCode::NO_CONTENT
    );
    let uploads = Uploads::new(app.ports.store.clone());
    let videos = Videos::new(app.ports.store.clone());
    let sources: Arc<dyn Blobs> = app.ports.sources.clone();
    let now = chrono::Utc::now();
    assert_eq!(
        uploads
            .sweep_expired(now, sources.as_ref(), &videos)
            .await
            .expect("sweep"),
        0
    );
    let later = now + chrono::Duration::days(2);
    assert_eq!(
        uploads
            .sweep_expired(later, sources.as_ref(), &videos)
            .await
            .expect("sweep"),
        1
    );

    let id = App::id(&path);
    let upload = uploads.get(&id).await.expect("store").expect("record kept");
    assert_eq!(upload.state, UploadState::Expired);
    assert_eq!(app.head(&app.alice, &path).await.status, StatusCode::GONE);
    let video = app.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Failed);
    assert_eq!(video.error.map(|e| e.code).as_deref(), Some("upload_expired"));
    assert!(
        app.ports
            .sources
            .list(&format!("uploads/{id}/"))
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        app.video(&finished).await.expect("video").status,
        VideoStatus::Processing
    );
}

async fn direct_create(app: &App, token: &str, body: Value) -> Answer {
    app.send(
        Request::post("/v1/uploads/multipart")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request"),
    )
    .await
}

async fn direct_complete(app: &App, token: &str, id: &str, parts: Value) -> Answer {
    app.send(
        Request::post(format!("/v1/uploads/multipart/{id}/complete"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(json!({ "parts": parts }).to_string()))
            .expect("request"),
    )
    .await
}

/// PUTs `bodies` to the URLs of `parts` (as `create` answered them); the parts to complete with.
async fn put_parts(app: &App, parts: &[Value], bodies: impl IntoIterator<Item = Vec<u8>>) -> Vec<Value> {
    let mut etags = Vec::new();
    for (part, body) in parts.iter().zip(bodies) {
        let answer = put_part(app, part["url"].as_str().expect("url"), body).await;
        assert_eq!(answer.status, StatusCode::OK);
        etags.push(json!({"partNumber": part["partNumber"], "etag": answer.header("etag").expect("etag")}));
    }
    etags
}

async fn put_part(app: &App, url: &str, bytes: Vec<u8>) -> Answer {
    let path = url.trim_start_matches("http://127.0.0.1:8080");
    app.send(Request::put(path).body(Body::from(bytes)).expect("request"))
        .await
}

#[tokio::test]
async fn direct_multipart_uploads() {
    let app = app().await;
    let data = bytes_of((17 * MIB + 5) as usize, 6);
    let created = direct_create(
        &app,
        &app.alice,
        json!({"filename": "talk.mp4", "size": data.len(), "contentType": "video/mp4", "title": "Talk"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["videoId"].as_str().expect("video id").to_owned();
    let part_size = created.body["partSize"].as_u64().expect("part size") as usize;
    let parts = created.body["parts"].as_array().expect("parts").clone();
    assert_eq!(parts.len(), data.len().div_ceil(part_size));
    assert!(created.body["expiresAt"].is_string());

    // A forged URL is refused.
    let url = parts[0]["url"].as_str().expect("url");
    let forged = url.replace("partNumber=1", "partNumber=2");
    assert_eq!(
        put_part(&app, &forged, vec![1, 2, 3]).await.status,
        StatusCode::FORBIDDEN
    );
    let tampered = format!("{}0", url);
    assert_eq!(
        put_part(&app, &tampered, vec![1, 2, 3]).await.status,
        StatusCode::FORBIDDEN
    );

    let etags = put_parts(&app, &parts, data.chunks(part_size).map(<[u8]>::to_vec)).await;
    assert_eq!(
        direct_complete(&app, &app.bob, &id, json!(etags)).await.status,
        StatusCode::FORBIDDEN
    );
    let answer = direct_complete(&app, &app.alice, &id, json!(etags[..1])).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "invalid_parts");
    let mut wrong = etags.clone();
    wrong[1]["etag"] = json!("\"0000\"");
    let answer = direct_complete(&app, &app.alice, &id, json!(wrong)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.code(), "invalid_parts");

    let answer = direct_complete(&app, &app.alice, &id, json!(etags)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "processing");
    assert_eq!(answer.body["title"], "Talk");
    // The bytes did not pass through here: on-upload reads them for the digest.
    assert_eq!(answer.body["source"]["sha256"], Value::Null);
    assert_eq!(answer.body["source"]["size"], data.len());
    let stored = app.ports.sources.get(&format!("sources/{id}")).await.expect("source");
    assert!(stored.as_ref() == data.as_slice());
    assert_eq!(
        direct_complete(&app, &app.alice, &id, json!(etags)).await.code(),
        "upload_complete"
    );
}

/// Part URLs take bodies of any length: parts that add up to another size than the upload's end it.
#[tokio::test]
async fn direct_parts_of_another_size_are_refused_at_completion() {
    let app = app().await;
    let declared = 17 * MIB as usize;
    let created = direct_create(&app, &app.alice, json!({"filename": "a.mp4", "size": declared})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["videoId"].as_str().expect("video id").to_owned();
    let part_size = created.body["partSize"].as_u64().expect("part size") as usize;
    let parts = created.body["parts"].as_array().expect("parts").clone();
    assert!(parts.len() > 1);
    // The last part is 2 MiB longer than what is left of the declared size.
    let last = declared - part_size * (parts.len() - 1) + 2 * MIB as usize;
    let lengths = (1..parts.len()).map(|_| part_size).chain([last]);
    let etags = put_parts(&app, &parts, lengths.map(|len| bytes_of(len, 4))).await;
    let answer = direct_complete(&app, &app.alice, &id, json!(etags)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "size_mismatch");

    let path = format!("/v1/uploads/{id}");
    assert!(
        app.ports
            .sources
            .head(&format!("sources/{id}"))
            .await
            .expect("head")
            .is_none()
    );
    assert_eq!(app.record(&path).await.state, UploadState::Terminated);
    let video = app.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Failed);
    assert_eq!(video.error.map(|e| e.code).as_deref(), Some("size_mismatch"));
}

/// A `complete` sent again after a try that landed the object but whose answer was lost (a timeout, say)
/// finishes the upload rather than undoing it.
#[tokio::test]
async fn a_direct_upload_completed_by_a_lost_try_is_finished_by_the_next() {
    let app = app().await;
    let data = bytes_of(MIB as usize, 3);
    let created = direct_create(&app, &app.alice, json!({"filename": "a.mp4", "size": data.len()})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["videoId"].as_str().expect("video id").to_owned();
    let url = created.body["parts"][0]["url"].as_str().expect("url").to_owned();
    let answer = put_part(&app, &url, data.clone()).await;
    let etag = answer.header("etag").expect("etag").to_owned();
    let parts = json!([{"partNumber": 1, "etag": etag}]);

    // The lost try: the object landed, nothing else was recorded.
    let path = format!("/v1/uploads/{id}");
    let record = app.record(&path).await;
    let multipart = record.multipart_id.clone().expect("multipart upload");
    let landed = [common::blobs::CompletedPart { part_number: 1, etag }];
    app.ports
        .sources
        .complete_multipart(&format!("sources/{id}"), &multipart, &landed)
        .await
        .expect("completed by the lost try");
    // Its storage event came first: on-upload read the digest and recorded what it knew of the source.
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    Videos::new(app.ports.store.clone())
        .update(&App::id(&path), |video| {
            video.source = Some(common::catalog::Source {
                filename: None,
                content_type: None,
                size: data.len() as u64,
                sha256: Some(sha256.clone()),
            });
            true
        })
        .await
        .expect("store")
        .expect("video");

    let answer = direct_complete(&app, &app.alice, &id, parts).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(app.record(&path).await.state, UploadState::Complete);
    let video = app.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Processing);
    let source = video.source.expect("source recorded");
    // The upload's own knowledge of the file joins the digest, which stays.
    assert_eq!(source.filename.as_deref(), Some("a.mp4"));
    assert_eq!((source.size, source.sha256), (data.len() as u64, Some(sha256)));
}

#[tokio::test]
async fn a_direct_completion_answered_with_an_error_that_landed_succeeds() {
    let app = app().await;
    let answers = LostAnswers::new(app.ports.sources.clone(), 1, 0);
    let server = app.over_sources(answers.clone());
    let data = bytes_of(MIB as usize, 8);
    let created = direct_create(&server, &server.alice, json!({"filename": "a.mp4", "size": data.len()})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["videoId"].as_str().expect("video id").to_owned();
    let parts = created.body["parts"].as_array().expect("parts").clone();
    let parts = put_parts(&server, &parts, [data.clone()]).await;

    let answer = direct_complete(&server, &server.alice, &id, Value::from(parts)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let path = format!("/v1/uploads/{id}");
    assert_eq!(server.record(&path).await.state, UploadState::Complete);
    let video = server.video(&path).await.expect("video");
    assert_eq!(video.status, VideoStatus::Processing);
    let source = video.source.expect("source recorded");
    assert_eq!((source.size, source.sha256), (data.len() as u64, None));
    assert_eq!(answers.reads.load(SeqCst), 0, "the file was not read back");
}

#[tokio::test]
async fn direct_part_urls_live_no_longer_than_the_upload_may() {
    let app = app_with(&[
        ("STREAMGATE_UPLOAD_MAX_AGE", "600"),
        ("STREAMGATE_UPLOAD_URL_TTL", "7200"),
    ])
    .await;
    let before = chrono::Utc::now().timestamp();
    let created = direct_create(&app, &app.alice, json!({"filename": "a.mp4", "size": 6 * MIB})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let after = chrono::Utc::now().timestamp();
    let expires = created.body["expiresAt"].as_str().expect("expiresAt");
    let expires = chrono::DateTime::parse_from_rfc3339(expires)
        .expect("a time")
        .timestamp();
    assert!((before + 600..=after + 600).contains(&expires), "{expires}");
    for part in created.body["parts"].as_array().expect("parts") {
        let url = url::Url::parse(part["url"].as_str().expect("url")).expect("a URL");
        let signed_until: i64 = url
            .query_pairs()
            .find(|(name, _)| name == "expires")
            .expect("an expiry")
            .1
            .parse()
            .expect("seconds");
        assert!(signed_until <= after + 600, "{url}");
    }
    let id = created.body["videoId"].as_str().expect("video id");
    let record = app.record(&format!("/v1/uploads/{id}")).await;
    assert!(record.expires_at <= record.created_at + chrono::Duration::seconds(600));
}

#[tokio::test]
async fn direct_uploads_validate_and_abort() {
    let app = app_with(&[("STREAMGATE_MAX_UPLOAD_SIZE", "100000000")]).await;
    for (body, status, code) in [
        (json!({"size": 0}), StatusCode::BAD_REQUEST, "empty_upload"),
        (
            json!({"size": 100000001}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
        ),
        (
            json!({"size": 10, "owner": "me"}),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            json!({"size": 10, "contentType": "mp4"}),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
        ),
    ] {
        let answer = direct_create(&app, &app.alice, body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{body}");
    }
    let answer = app
        .send(
            Request::post("/v1/uploads/multipart")
                .header("content-type", "application/json")
                .body(Body::from(json!({"size": 10}).to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    let created = direct_create(&app, &app.alice, json!({"size": 10, "filename": "a.mp4"})).await;
    let id = created.body["videoId"].as_str().expect("id").to_owned();
    let abort = |token: &str| {
        app.send(
            Request::delete(format!("/v1/uploads/multipart/{id}"))
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request"),
        )
    };
    assert_eq!(abort(&app.bob).await.status, StatusCode::FORBIDDEN);
    assert_eq!(abort(&app.alice).await.status, StatusCode::NO_CONTENT);
    assert_eq!(abort(&app.alice).await.status, StatusCode::GONE);
    let url = created.body["parts"][0]["url"].as_str().expect("url").to_owned();
    assert_eq!(put_part(&app, &url, vec![0; 10]).await.status, StatusCode::NOT_FOUND);
}
