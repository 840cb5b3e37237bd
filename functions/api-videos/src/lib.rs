//! `api-videos`: video metadata, search and owner-only edits (`/v1/videos`).
#![forbid(unsafe_code)]

use std::str::FromStr;

use axum::extract::{FromRef, Path, State};
use axum::routing::get;
use axum::{Json, Router};
use common::catalog::{Video, Videos};
use common::config::Config;
use common::identity::Authenticated;
use common::identity::accounts::Accounts;
use common::identity::sessions::{SessionKeys, Sessions};
use common::ids::VideoId;
use common::platform::Ports;
use common::problem::ApiError;

/// What the handlers of `api-videos` use.
#[derive(Clone)]
pub struct AppState {
    sessions: Sessions,
    videos: Videos,
    accounts: Accounts,
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
            sessions: Sessions::new(keys, ports.store.clone(), ttl),
            videos: Videos::new(ports.store.clone()),
            accounts: Accounts::new(ports.store.clone()),
        })
    }
}

/// The routes of `api-videos`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new().route("/v1/videos/{id}", get(video)).with_state(state)
}

/// `GET /v1/videos/{id}`: the video; its source file's details only for its owner.
async fn video(
    State(state): State<AppState>,
    viewer: Option<Authenticated>,
    Path(id): Path<String>,
) -> Result<Json<Video>, ApiError> {
    let id = VideoId::from_str(&id).map_err(|_| ApiError::not_found("no such video"))?;
    let mut video = state
        .videos
        .get(&id)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .ok_or_else(|| ApiError::not_found("no such video"))?;
    let is_owner = match viewer {
        Some(viewer) => owns(&state.accounts, &viewer, &video).await?,
        None => false,
    };
    if !is_owner {
        video.source = None;
    }
    Ok(Json(video))
}

/// Whether the viewer's account is the one the video's owner wallet belongs to: any wallet linked to the
/// account counts, not only the one that uploaded.
async fn owns(accounts: &Accounts, viewer: &Authenticated, video: &Video) -> Result<bool, ApiError> {
    let Ok(owner) = video.owner.parse() else {
        return Ok(false);
    };
    let account = accounts
        .account_of(&owner)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    Ok(account.as_ref() == Some(viewer.account()))
}
