//! Direct-to-storage multipart uploads (`/v1/uploads/multipart`): the client PUTs each part to a
//! presigned URL (S3 presigning in the cloud, HMAC-signed URLs served by the local server), so the bytes
//! never pass through a function; `complete` joins the parts at `sources/{videoId}`.

use std::str::FromStr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use chrono::{DateTime, Utc};
use common::blobs::CompletedPart;
use common::catalog::{Video, VideoError, VideoStatus};
use common::identity::Authenticated;
use common::ids::VideoId;
use common::problem::{ApiError, Json, Path};
use common::uploads::{Upload, UploadKind, UploadState, part_size_for};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AppState, blob_error, gone, metadata, new_video, store_error, upload_error};

/// Direct parts are larger than tus ones: fewer URLs and requests for the files this path is for.
const MIN_PART_SIZE: u64 = 8 * common::config::MIB;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/uploads/multipart", post(create))
        .route("/v1/uploads/multipart/{id}", delete(abort))
        .route("/v1/uploads/multipart/{id}/complete", post(complete))
        .layer(axum::extract::DefaultBodyLimit::max(2 * 1024 * 1024))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Create {
    filename: Option<String>,
    size: u64,
    content_type: Option<String>,
    title: Option<String>,
    description: Option<String>,
    access: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PartUrl {
    part_number: u32,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    video_id: VideoId,
    part_size: u64,
    parts: Vec<PartUrl>,
    expires_at: DateTime<Utc>,
}

/// `POST /v1/uploads/multipart`: creates the video and a multipart upload, and signs a URL per part.
async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    Json(request): Json<Create>,
) -> Result<Response, ApiError> {
    if request.size == 0 {
        return Err(ApiError::bad_request("empty_upload", "size must be at least 1 byte"));
    }
    if request.size > state.limits.max_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!("uploads are at most {} bytes", state.limits.max_size),
        ));
    }
    let details = metadata::Fields {
        filename: request.filename,
        content_type: request.content_type,
        title: request.title,
        description: request.description,
        access: request.access,
    }
    .validate(&state.chains)?;

    let id = VideoId::generate();
    let key = common::pipeline::source_key(&id);
    let multipart_id = state
        .sources
        .create_multipart(&key, details.content_type.as_deref())
        .await
        .map_err(blob_error)?;
    let part_size = part_size_for(request.size, MIN_PART_SIZE);
    let count = u32::try_from(request.size.div_ceil(part_size)).map_err(|e| ApiError::internal(&e))?;
    let now = Utc::now();
    // The URLs live no longer than the upload may.
    let url_ttl = state.limits.url_ttl.min(state.limits.max_age);
    let urls_expire = now + chrono::Duration::from_std(url_ttl).unwrap_or(chrono::Duration::hours(1));
    let expiry = chrono::Duration::from_std(state.limits.expiry).unwrap_or(chrono::Duration::days(1));
    let upload = Upload {
        id: id.clone(),
        account: auth.account().0.clone(),
        kind: UploadKind::Direct,
        state: UploadState::Open,
        length: request.size,
        offset: 0,
        metadata: None,
        filename: details.filename.clone(),
        content_type: details.content_type.clone(),
        part_size,
        multipart_id: Some(multipart_id.clone()),
        parts: 0,
        tail: None,
        hash_state: None,
        running_digest: None,
        sha256: None,
        version: 0,
        lease: None,
        created_at: now,
        // The upload lives at least as long as its URLs, which end within its maximum age.
        expires_at: (now + expiry)
            .max(urls_expire)
            .min(crate::tus::end_of_life(&state, now)),
    };
    state.start(&upload, &new_video(id.clone(), &auth, details)).await?;

    let mut parts = Vec::with_capacity(count as usize);
    for part_number in 1..=count {
        let signed = state
            .sources
            .signed_part_url(&key, &multipart_id, part_number, url_ttl)
            .await
            .map_err(blob_error)?;
        parts.push(PartUrl {
            part_number,
            url: signed.url,
        });
    }
    metrics::counter!("streamgate_uploads_created_total", "kind" => "direct").increment(1);
    tracing::info!(video_id = %id, size = request.size, parts = count, "direct upload created");
    let created = Created {
        video_id: id,
        part_size,
        parts,
        expires_at: urls_expire,
    };
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn direct_upload(state: &AppState, auth: &Authenticated, id: &str) -> Result<Upload, ApiError> {
    let id = VideoId::from_str(id).map_err(|_| ApiError::not_found("no such upload"))?;
    let upload = state.owned_upload(auth, &id).await?;
    if upload.kind != UploadKind::Direct {
        return Err(ApiError::conflict(
            "not_a_direct_upload",
            "this upload is a tus upload; use /v1/uploads/{id}",
        ));
    }
    match upload.state {
        UploadState::Open if !upload.is_expired(Utc::now()) => Ok(upload),
        UploadState::Complete => Err(ApiError::conflict("upload_complete", "the upload is already complete")),
        _ => Err(gone(&upload)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    parts: Vec<CompletedPart>,
}

/// `POST /v1/uploads/multipart/{id}/complete`: joins the parts; the object lands at `sources/{id}` and
/// its storage event starts processing. Answers with the video.
async fn complete(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    Json(request): Json<Complete>,
) -> Result<axum::Json<Video>, ApiError> {
    let upload = direct_upload(&state, &auth, &id).await?;
    let expected = u32::try_from(upload.length.div_ceil(upload.part_size)).map_err(|e| ApiError::internal(&e))?;
    if !request.parts.iter().map(|p| p.part_number).eq(1..=expected) {
        return Err(ApiError::bad_request(
            "invalid_parts",
            format!("list parts 1 to {expected} in order, each with the ETag its upload returned"),
        ));
    }
    let leased = state
        .uploads
        .lease(&upload, chrono::Duration::minutes(15))
        .await
        .map_err(upload_error)?;
    let key = leased.key();
    let multipart = leased.multipart_id.clone().unwrap_or_default();
    let release = async |leased: &Upload| {
        if let Err(err) = state.uploads.release(leased).await {
            tracing::warn!(video_id = %leased.id, error = %err, "could not release an upload's lease");
        }
    };
    if let Err(err) = state.hand_over(&leased, leased.length, None).await {
        release(&leased).await;
        return Err(err);
    }
    let object = match state.complete_source(&key, &multipart, &request.parts).await {
        Ok(object) => object,
        Err(err) => {
            // Let the client fix its list and try again; the video waits for it as before.
            release(&leased).await;
            state.take_back(&leased.id).await?;
            return Err(err);
        }
    };
    if object.size != leased.length {
        return Err(refuse_size(&state, &leased, object.size).await);
    }
    // The bytes did not pass through here: on-upload reads them once for the digest, as its storage
    // event starts processing. Reading a large file back here would outlast the request's time limit.
    let mut done = leased.clone();
    done.state = UploadState::Complete;
    done.lease = None;
    done.parts = expected;
    done.offset = object.size;
    if let Err(err) = state.uploads.save(&leased, done).await {
        release(&leased).await;
        return Err(upload_error(err));
    }
    let video = state
        .videos
        .get(&leased.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("the video was deleted"))?;
    metrics::counter!("streamgate_uploads_completed_total", "kind" => "direct").increment(1);
    tracing::info!(video_id = %leased.id, size = object.size, "direct upload complete");
    Ok(axum::Json(video))
}

/// Ends an upload whose parts held another number of bytes than it was created for: a part URL takes a
/// body of any length, so the object may even be past the size limit. The object is deleted (its storage
/// event finds it gone, or the video's recorded size differing from it), the upload ends and its video
/// fails with `size_mismatch`, which the answer names too.
async fn refuse_size(state: &AppState, leased: &Upload, size: u64) -> ApiError {
    let detail = format!(
        "the parts hold {size} bytes, but the upload was created for {} bytes",
        leased.length
    );
    tracing::info!(video_id = %leased.id, size, declared = leased.length, "direct upload of another size refused");
    if let Err(err) = state.sources.delete(&leased.key()).await {
        tracing::warn!(video_id = %leased.id, error = %err, "could not delete a refused source");
    }
    let mut ended = leased.clone();
    ended.state = UploadState::Terminated;
    ended.lease = None;
    if let Err(err) = state.uploads.save(leased, ended).await {
        tracing::warn!(video_id = %leased.id, error = %err, "could not end a refused upload");
    }
    let failed = state
        .videos
        .update(&leased.id, |video| {
            video.status = VideoStatus::Failed;
            video.progress = 0;
            video.error = Some(VideoError {
                code: "size_mismatch".into(),
                detail: detail.clone(),
            });
            true
        })
        .await;
    if let Err(err) = failed {
        tracing::warn!(video_id = %leased.id, error = %err, "could not mark a refused upload's video failed");
    }
    ApiError::bad_request("size_mismatch", detail)
}

/// `DELETE /v1/uploads/multipart/{id}`: aborts the upload and deletes its video.
async fn abort(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let upload = direct_upload(&state, &auth, &id).await?;
    state.terminate(&upload).await?;
    tracing::info!(video_id = %upload.id, "direct upload aborted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
