//! The tus 1.0.0 protocol at `/v1/uploads`, with the `creation`, `creation-with-upload`, `termination`,
//! `checksum` (sha1, sha256) and `expiration` extensions.
//!
//! A PATCH goes into parts of the upload's multipart upload as they fill up; bytes that do not fill a part
//! wait in a tail object (`uploads/{id}/tail-{version}`) for the next request, as tusd's S3 store does, so
//! clients may send chunks smaller than S3's 5 MiB part minimum (and must, on Lambda). A request writes
//! only under its lease and commits its new offset in one conditional write; bytes it stored but did not
//! commit are never referenced. The work runs in its own task (see `writer`), so a client that disconnects
//! mid-chunk still has a consistent upload and the lease released: a chunk of declared length keeps the
//! whole parts it filled, one of unknown length keeps what arrived, and one with a checksum that can no
//! longer be checked keeps nothing.

use std::str::FromStr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use common::identity::Authenticated;
use common::ids::VideoId;
use common::problem::{ApiError, Path};
use common::uploads::{Upload, UploadKind, UploadState, part_size_for};

use crate::{AppState, blob_error, gone, metadata, new_video};

mod digest;
mod writer;

pub(crate) use digest::RunningDigests;
use writer::{Checksum, receive};

pub const TUS_VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The body type of PATCH requests.
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// The largest body one request may carry, in bytes; the server's own header, as tus defines none.
pub const MAX_CHUNK_HEADER: &str = "streamgate-max-chunk-size";
/// How long a writer holds an upload without showing progress; renewed with every part it stores.
pub const LEASE_TTL: chrono::Duration = chrono::Duration::seconds(60);
/// Parts are at least S3's minimum.
const MIN_PART_SIZE: u64 = 5 * common::config::MIB;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// The status tus gives a checksum mismatch.
fn checksum_mismatch() -> ApiError {
    let status = StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(
        status,
        "checksum_mismatch",
        "the chunk's checksum does not match Upload-Checksum; it was dropped",
    )
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/uploads", post(create).options(options))
        .route(
            "/v1/uploads/{id}",
            axum::routing::head(status)
                .patch(append)
                .delete(terminate)
                .post(overridden)
                .options(options),
        )
        .layer(middleware::from_fn(protocol))
}

/// Every response names the protocol version; every request but `OPTIONS` must speak it (412 otherwise).
async fn protocol(request: Request, next: Next) -> Response {
    let speaks = request.method() == Method::OPTIONS
        || request.headers().get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok()) == Some(TUS_VERSION);
    let mut response = if speaks {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_version_unsupported",
            format!("send `Tus-Resumable: {TUS_VERSION}`, the only version served"),
        )
        .with_header(
            HeaderName::from_static("tus-version"),
            HeaderValue::from_static(TUS_VERSION),
        )
        .into_response()
    };
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

/// `OPTIONS`: what this server supports.
async fn options(State(state): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    headers.insert("tus-checksum-algorithm", HeaderValue::from_static(CHECKSUM_ALGORITHMS));
    headers.insert("tus-max-size", HeaderValue::from(state.limits.max_size));
    headers.insert(MAX_CHUNK_HEADER, HeaderValue::from(state.limits.max_chunk));
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// A header that must be a non-negative decimal integer.
fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("invalid_header", format!("{name} must be a non-negative integer")))
}

fn http_date(time: DateTime<Utc>) -> HeaderValue {
    let text = time.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// The headers every answer about an upload carries.
fn upload_headers(upload: &Upload) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(upload.offset));
    if upload.state == UploadState::Open {
        headers.insert(UPLOAD_EXPIRES, http_date(upload.expires_at));
    }
    headers
}

/// Whether a request carries a body: by its `Content-Length` or `Transfer-Encoding`, or, where neither
/// was given (bodies built in process), by the bytes it is known to hold.
fn has_body(headers: &HeaderMap, body: &Body) -> bool {
    use axum::body::HttpBody;
    match number(headers, &header::CONTENT_LENGTH).ok().flatten() {
        Some(length) => length > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING) || body.size_hint().lower() > 0,
    }
}

fn require_octet_stream(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = content_type.map(|t| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    if essence.as_deref() == Some(OFFSET_OCTET_STREAM) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!("upload chunks are sent as `Content-Type: {OFFSET_OCTET_STREAM}`"),
        ))
    }
}

/// `POST /v1/uploads`: creates an upload and its video (`creation`), and takes a first chunk when the
/// request carries one (`creation-with-upload`).
async fn create(State(state): State<AppState>, auth: Authenticated, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "defer_length_unsupported",
            "declare the size with Upload-Length; creation-defer-length is not supported",
        ));
    }
    let length = number(headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| ApiError::bad_request("invalid_header", "Upload-Length is required"))?;
    if length > state.limits.max_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!("uploads are at most {} bytes (Tus-Max-Size)", state.limits.max_size),
        ));
    }
    let raw_metadata = match headers.get(&UPLOAD_METADATA) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("invalid_metadata", "Upload-Metadata is not ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let details = metadata::parse_header(raw_metadata.as_deref().unwrap_or_default())
        .map_err(|detail| ApiError::bad_request("invalid_metadata", detail))?
        .validate(&state.chains)?;
    let with_upload = has_body(headers, &body);
    let declared = number(headers, &header::CONTENT_LENGTH)?;
    let checksum = Checksum::parse(headers)?;
    if with_upload {
        require_octet_stream(headers)?;
        if declared.is_some_and(|n| n > state.limits.max_chunk) {
            return Err(chunk_too_large(&state));
        }
        if declared.is_some_and(|n| n > length) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_too_large",
                format!("the body is longer than the Upload-Length of {length}"),
            ));
        }
    }

    let id = VideoId::generate();
    let key = common::pipeline::source_key(&id);
    let multipart_id = if length > 0 {
        Some(
            state
                .sources
                .create_multipart(&key, details.content_type.as_deref())
                .await
                .map_err(blob_error)?,
        )
    } else {
        None
    };
    let now = Utc::now();
    let upload = Upload {
        id: id.clone(),
        account: auth.account().0.clone(),
        kind: UploadKind::Tus,
        state: UploadState::Open,
        length,
        offset: 0,
        metadata: raw_metadata,
        filename: details.filename.clone(),
        content_type: details.content_type.clone(),
        part_size: part_size_for(length, MIN_PART_SIZE),
        multipart_id,
        parts: 0,
        tail: None,
        hash_state: None,
        running_digest: None,
        sha256: None,
        version: 0,
        lease: None,
        created_at: now,
        expires_at: expires_at(&state, now),
    };
    state.start(&upload, &new_video(id.clone(), &auth, details)).await?;
    metrics::counter!("streamgate_uploads_created_total", "kind" => "tus").increment(1);
    tracing::info!(video_id = %id, length, "upload created");

    let location = state.url_of(headers, &format!("/v1/uploads/{id}"));
    let location = HeaderValue::from_str(&location).map_err(|e| ApiError::internal(&e))?;
    let upload = if length == 0 {
        // Nothing to wait for: the empty file is complete now.
        receive(&state, &upload, 0, Body::empty(), Some(0), None).await
    } else if with_upload {
        receive(&state, &upload, 0, body, declared, checksum).await
    } else {
        Ok(upload)
    };
    match upload {
        Ok(upload) => {
            let mut headers = upload_headers(&upload);
            headers.insert(header::LOCATION, location);
            Ok((StatusCode::CREATED, headers).into_response())
        }
        // The upload exists even if its first chunk was refused: say where, so that the client can resume.
        Err(err) => Err(err.with_header(header::LOCATION, location)),
    }
}

/// When an upload created at `created_at` and written to now expires: [`UploadLimits::expiry`] after
/// this write, and no later than its [`UploadLimits::max_age`].
///
/// [`UploadLimits::expiry`]: common::config::UploadLimits::expiry
/// [`UploadLimits::max_age`]: common::config::UploadLimits::max_age
pub(crate) fn expires_at(state: &AppState, created_at: DateTime<Utc>) -> DateTime<Utc> {
    let expiry = chrono::Duration::from_std(state.limits.expiry).unwrap_or(chrono::Duration::days(1));
    (Utc::now() + expiry).min(end_of_life(state, created_at))
}

/// The latest an upload created at `created_at` may still be written to ([`expires_at`]).
pub(crate) fn end_of_life(state: &AppState, created_at: DateTime<Utc>) -> DateTime<Utc> {
    let max_age = chrono::Duration::from_std(state.limits.max_age).unwrap_or(chrono::Duration::days(2));
    created_at + max_age
}

fn parse_id(id: &str) -> Result<VideoId, ApiError> {
    VideoId::from_str(id).map_err(|_| ApiError::not_found("no such upload"))
}

/// The upload as a client may write to or ask about it: 410 once it is terminated or expired.
async fn live_upload(state: &AppState, auth: &Authenticated, id: &str) -> Result<Upload, ApiError> {
    let upload = state.owned_upload(auth, &parse_id(id)?).await?;
    if upload.is_expired(Utc::now()) || upload.state == UploadState::Terminated {
        return Err(gone(&upload));
    }
    if upload.kind != UploadKind::Tus {
        return Err(ApiError::conflict(
            "not_a_tus_upload",
            "this upload is a direct multipart upload; use its part URLs",
        ));
    }
    Ok(upload)
}

/// `HEAD /v1/uploads/{id}`: how much has arrived.
async fn status(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let upload = live_upload(&state, &auth, &id).await?;
    let mut headers = upload_headers(&upload);
    headers.insert(UPLOAD_LENGTH, HeaderValue::from(upload.length));
    if let Some(metadata) = upload.metadata.as_deref().and_then(|m| HeaderValue::from_str(m).ok()) {
        headers.insert(UPLOAD_METADATA, metadata);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, headers).into_response())
}

/// `PATCH /v1/uploads/{id}`: appends a chunk at `Upload-Offset`.
async fn append(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    require_octet_stream(&parts.headers)?;
    let offset = number(&parts.headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::bad_request("invalid_header", "Upload-Offset is required"))?;
    let checksum = Checksum::parse(&parts.headers)?;
    let declared = number(&parts.headers, &header::CONTENT_LENGTH)?;
    if declared.is_some_and(|n| n > state.limits.max_chunk) {
        return Err(chunk_too_large(&state));
    }
    let upload = live_upload(&state, &auth, &id).await?;
    if upload.state == UploadState::Complete && offset == upload.length && declared == Some(0) {
        return Ok((StatusCode::NO_CONTENT, upload_headers(&upload)).into_response());
    }
    if offset != upload.offset || upload.state != UploadState::Open {
        return Err(ApiError::conflict(
            "upload_offset_mismatch",
            format!("the upload is at offset {}, not {offset}", upload.offset),
        )
        .with_header(UPLOAD_OFFSET, HeaderValue::from(upload.offset)));
    }
    if declared.is_some_and(|n| offset + n > upload.length) {
        return Err(beyond_length(&upload));
    }
    let upload = receive(&state, &upload, offset, body, declared, checksum).await?;
    Ok((StatusCode::NO_CONTENT, upload_headers(&upload)).into_response())
}

/// `POST` with `X-HTTP-Method-Override`, for clients that cannot send PATCH or DELETE.
async fn overridden(
    state: State<AppState>,
    auth: Authenticated,
    id: Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let method = request
        .headers()
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_uppercase);
    match method.as_deref() {
        Some("PATCH") => append(state, auth, id, request).await,
        Some("DELETE") => terminate(state, auth, id).await,
        _ => Err(common::problem::method_not_allowed()),
    }
}

/// `DELETE /v1/uploads/{id}` (`termination`).
async fn terminate(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let upload = live_upload(&state, &auth, &id).await?;
    state.terminate(&upload).await?;
    tracing::info!(video_id = %upload.id, "upload terminated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn chunk_too_large(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "chunk_too_large",
        format!(
            "one request may carry at most {} bytes (the Streamgate-Max-Chunk-Size header of OPTIONS)",
            state.limits.max_chunk
        ),
    )
}

fn beyond_length(upload: &Upload) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!(
            "the chunk would take the upload past its Upload-Length of {}",
            upload.length
        ),
    )
}
