//! `api-videos`: video metadata, listings and search, and owner-only edits (`/v1/videos`).
#![forbid(unsafe_code)]

mod edit;

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use common::access::Rule;
use common::blobs::{Blobs, delete_under};
use common::catalog::text::query_terms;
use common::catalog::{ListError, Listing, Video, VideoStatus, Videos};
use common::chains::Chains;
use common::config::Config;
use common::identity::Authenticated;
use common::identity::accounts::Accounts;
use common::identity::sessions::{SessionKeys, Sessions};
use common::ids::VideoId;
use common::pipeline::{FinalizeJob, media_prefix, source_key};
use common::platform::Ports;
use common::problem::{ApiError, Path};
use common::queue::Queue;
use common::store::StoreError;
use common::uploads::{UploadError, UploadState, Uploads};
use serde::{Deserialize, Serialize};

pub use edit::Edit;

/// Videos a listing page holds unless `limit` says otherwise, and at most.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;
/// How long a deleting request holds an unfinished upload while it discards its bytes.
const UPLOAD_LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// What the handlers of `api-videos` use.
#[derive(Clone)]
pub struct AppState {
    sessions: Sessions,
    videos: Videos,
    accounts: Accounts,
    uploads: Uploads,
    sources: Arc<dyn Blobs>,
    media: Arc<dyn Blobs>,
    finalize: Arc<dyn Queue>,
    /// The chains access rules may name.
    chains: Chains,
}

impl FromRef<AppState> for Sessions {
    fn from_ref(state: &AppState) -> Sessions {
        state.sessions.clone()
    }
}

impl AppState {
    pub fn new(config: &Config, ports: &Ports) -> Result<Self, String> {
        let keys = SessionKeys::from_config(config).map_err(|e| e.to_string())?;
        let ttl = chrono::Duration::from_std(config.session_ttl).unwrap_or(chrono::Duration::hours(1));
        Ok(Self {
            sessions: Sessions::new(keys, ports.store.clone(), ttl).limited(config.limits.per_account),
            videos: Videos::new(ports.store.clone()),
            accounts: Accounts::new(ports.store.clone()),
            uploads: Uploads::new(ports.store.clone()),
            sources: ports.sources.clone(),
            media: ports.media.clone(),
            finalize: ports.finalize.clone(),
            chains: config.chains.clone(),
        })
    }

    /// The video `id` for its owner: 404 if unknown, 403 if the viewer's account does not own it.
    async fn owned_video(&self, viewer: &Authenticated, id: &VideoId) -> Result<Video, ApiError> {
        let video = self
            .videos
            .get(id)
            .await
            .map_err(store_error)?
            .ok_or_else(no_such_video)?;
        if !owns(&self.accounts, viewer, &video.owner).await? {
            return Err(ApiError::forbidden("not_owner", "only the video's owner may change it"));
        }
        Ok(video)
    }
}

/// The routes of `api-videos`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/videos", get(list))
        .route("/v1/videos/{id}", get(video).patch(patch).delete(delete))
        .with_state(state)
}

fn store_error(err: StoreError) -> ApiError {
    ApiError::unavailable(&err)
}

fn no_such_video() -> ApiError {
    ApiError::not_found("no such video")
}

/// A video id from a path, checked before anything is looked up.
fn video_id(text: &str) -> Result<VideoId, ApiError> {
    VideoId::from_str(text).map_err(|err| ApiError::bad_request("invalid_id", err.to_string()))
}

/// The query of `GET /v1/videos`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    owner: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody {
    items: Vec<Video>,
    next_cursor: Option<String>,
}

/// `GET /v1/videos?owner=&q=&limit=&cursor=`: videos by owner, by words, or both, or every ready video,
/// newest first. Words rank by how many of them a video holds. An owner listing their own videos sees
/// those not yet ready too.
async fn list(
    State(state): State<AppState>,
    viewer: Option<Authenticated>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListBody>, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
    let owner = match &params.owner {
        None => None,
        Some(text) => Some(
            alloy_primitives::Address::from_str(text.trim())
                .map_err(|_| ApiError::bad_request("invalid_owner", "owner must be a 0x-prefixed 20-byte address"))?,
        ),
    };
    let terms = match &params.q {
        None => None,
        Some(q) => query_terms(q).map_err(|fault| ApiError::bad_request("invalid_query", fault.to_string()))?,
    };
    let limit = match &params.limit {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_request("invalid_limit", format!("limit must be 1 to {MAX_LIMIT}")))?,
    };
    let everything = match (&owner, &viewer) {
        (Some(owner), Some(viewer)) => owns(&state.accounts, viewer, &owner.to_checksum(None)).await?,
        _ => false,
    };
    let listing = Listing {
        owner: owner.map(|owner| owner.to_checksum(None)),
        terms,
        everything,
        limit,
        cursor: params.cursor.filter(|c| !c.is_empty()),
    };
    let page = state.videos.list(&listing).await.map_err(|err| match err {
        ListError::InvalidCursor => ApiError::bad_request(
            "invalid_cursor",
            "cursor is not one this listing gave; start again without it",
        ),
        ListError::Store(err) => store_error(err),
    })?;
    let items = page
        .items
        .into_iter()
        .map(|mut video| {
            if !everything {
                video.source = None;
            }
            video
        })
        .collect();
    Ok(Json(ListBody {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /v1/videos/{id}`: the video; its source file's details, and what went wrong in its own words,
/// only for its owner.
async fn video(
    State(state): State<AppState>,
    viewer: Option<Authenticated>,
    Path(id): Path<String>,
) -> Result<Json<Video>, ApiError> {
    let id = video_id(&id)?;
    let mut video = state
        .videos
        .get(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(no_such_video)?;
    let is_owner = match viewer {
        Some(viewer) => owns(&state.accounts, &viewer, &video.owner).await?,
        None => false,
    };
    if !is_owner {
        video.source = None;
        // The detail may quote the tools that read the file; others learn the stable code alone.
        if let Some(error) = &mut video.error {
            error.detail = "the video could not be processed".to_owned();
        }
    }
    Ok(Json(video))
}

/// `PATCH /v1/videos/{id}` (owner only): title, description, tags and access. A ready video that becomes
/// gated gets its encrypted HLS copy made by `finalize`.
async fn patch(
    State(state): State<AppState>,
    viewer: Authenticated,
    Path(id): Path<String>,
    common::problem::Json(edit): common::problem::Json<Edit>,
) -> Result<Json<Video>, ApiError> {
    let id = video_id(&id)?;
    let edit = edit.validate()?;
    let access = match &edit.access {
        None => None,
        Some(access) => Some(
            Rule::parse(access, &state.chains)
                .map_err(|fault| ApiError::bad_request("invalid_access", fault.to_string()))?
                .to_json(),
        ),
    };
    state.owned_video(&viewer, &id).await?;
    let video = state
        .videos
        .update(&id, |video| edit.apply(video, access.as_ref()))
        .await
        .map_err(store_error)?
        .ok_or_else(no_such_video)?;
    if video.status == VideoStatus::Ready && !video.is_public() && !video.encrypted_hls {
        let job = serde_json::to_string(&FinalizeJob { video_id: id.clone() }).map_err(|e| ApiError::internal(&e))?;
        state.finalize.send(job).await.map_err(|e| ApiError::unavailable(&e))?;
        tracing::info!(video_id = %id, "the video became gated; its encrypted copy is on its way");
    }
    tracing::info!(video_id = %id, "video edited");
    Ok(Json(video))
}

/// `DELETE /v1/videos/{id}` (owner only): an unfinished upload is ended, then the media, the source, the
/// search entries and every record of the video go; the video then answers 404. A delete cut short can
/// be made again.
async fn delete(
    State(state): State<AppState>,
    viewer: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = video_id(&id)?;
    state.owned_video(&viewer, &id).await?;
    end_upload(&state, &id).await?;
    delete_under(state.media.as_ref(), &media_prefix(&id))
        .await
        .map_err(ApiError::from)?;
    state.sources.delete(&source_key(&id)).await.map_err(ApiError::from)?;
    state.videos.delete(&id).await.map_err(store_error)?;
    // Once more, now that the video is gone: a job that stored files after the first listing finds the
    // video there still, and leaves them. One that stores later finds it gone and removes its own.
    if let Err(err) = delete_under(state.media.as_ref(), &media_prefix(&id)).await {
        // Left to a job of the video still to come, if one is (`remove_remains`); else they stay.
        tracing::warn!(video_id = %id, error = %err, "could not remove a deleted video's late media");
    }
    tracing::info!(video_id = %id, "video deleted");
    metrics::counter!("streamgate_videos_deleted_total").increment(1);
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the video's upload if it is still open: its bytes are discarded and it answers as terminated.
async fn end_upload(state: &AppState, id: &VideoId) -> Result<(), ApiError> {
    let Some(upload) = state.uploads.get(id).await.map_err(store_error)? else {
        return Ok(());
    };
    if upload.state != UploadState::Open {
        return Ok(());
    }
    let busy = || {
        ApiError::conflict("upload_busy", "the upload is receiving bytes; try again in a moment").with_header(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        )
    };
    let upload_error = |err: UploadError| match err {
        UploadError::Busy => busy(),
        UploadError::Store(err) => store_error(err),
        UploadError::Blob(err) => ApiError::from(err),
    };
    let leased = state.uploads.lease(&upload, UPLOAD_LEASE).await.map_err(upload_error)?;
    state
        .uploads
        .discard_bytes(&leased, state.sources.as_ref())
        .await
        .map_err(ApiError::from)?;
    let mut ended = leased.clone();
    ended.state = UploadState::Terminated;
    ended.lease = None;
    ended.tail = None;
    state.uploads.save(&leased, ended).await.map_err(upload_error)?;
    Ok(())
}

/// Whether the viewer's account is the one `owner` (a wallet address) belongs to: any wallet linked to
/// the account counts, not only the one that uploaded.
async fn owns(accounts: &Accounts, viewer: &Authenticated, owner: &str) -> Result<bool, ApiError> {
    let account = accounts.account_of_text(owner).await.map_err(store_error)?;
    Ok(account.as_ref() == Some(viewer.account()))
}
