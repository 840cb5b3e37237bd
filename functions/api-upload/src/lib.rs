//! `api-upload`: resumable (tus 1.0.0) and direct multipart uploads (`/v1/uploads`).
//!
//! Either way the bytes end as one multipart upload of the sources bucket at `sources/{videoId}`, whose
//! storage event starts processing. See [`tus`] and [`direct`].
#![forbid(unsafe_code)]

pub mod direct;
mod metadata;
pub mod tus;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::HeaderMap;
use common::blobs::{BlobError, Blobs, CompletedPart, ObjectMeta};
use common::catalog::{Source, Video, VideoStatus, Videos};
use common::chains::Chains;
use common::config::{Config, UploadLimits};
use common::identity::Authenticated;
use common::identity::sessions::{SessionKeys, Sessions};
use common::ids::VideoId;
use common::links::SentTo;
use common::platform::Ports;
use common::problem::ApiError;
use common::store::StoreError;
use common::uploads::{Upload, UploadError, UploadState, Uploads};
use url::Url;

pub use metadata::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS};

/// What the handlers of `api-upload` use.
#[derive(Clone)]
pub struct AppState {
    sessions: Sessions,
    uploads: Uploads,
    videos: Videos,
    sources: Arc<dyn Blobs>,
    limits: UploadLimits,
    /// The chains access rules may name.
    chains: Chains,
    /// The base of the URLs handed out; when unset, the scheme and host the request came to.
    public_url: Option<Url>,
    /// The running digests of tus uploads that this process holds between requests.
    digests: Arc<tus::RunningDigests>,
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
            uploads: Uploads::new(ports.store.clone()),
            videos: Videos::new(ports.store.clone()),
            sources: ports.sources.clone(),
            limits: config.uploads,
            chains: config.chains.clone(),
            public_url: config.public_url.clone(),
            // Lambda freezes the process once it answers: no hashing can finish behind an answer there.
            digests: Arc::new(tus::RunningDigests::new(!common::runtime::on_lambda())),
        })
    }

    /// With `false`, every tus request waits for its hashing and saves the digest state in the upload's
    /// record, as on Lambda; with `true` (the default elsewhere) the hashing finishes behind the answer.
    pub fn with_hashing_behind_answers(mut self, behind: bool) -> Self {
        self.digests = Arc::new(tus::RunningDigests::new(behind));
        self
    }

    /// The absolute URL of `path` as the client reached this service.
    fn url_of(&self, headers: &HeaderMap, path: &str) -> String {
        SentTo::from_headers(headers).link(self.public_url.as_ref(), path)
    }

    /// The upload `id` for the signed-in account: 404 if unknown, 403 if another account's.
    async fn owned_upload(&self, auth: &Authenticated, id: &VideoId) -> Result<Upload, ApiError> {
        let upload = self
            .uploads
            .get(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("no such upload"))?;
        if upload.account != auth.account().0 {
            return Err(ApiError::forbidden(
                "not_upload_owner",
                "this upload belongs to another account",
            ));
        }
        Ok(upload)
    }

    /// Creates the video and the upload record of a new upload.
    async fn start(&self, upload: &Upload, video: &Video) -> Result<(), ApiError> {
        // The upload record first: it is indexed for the expiry sweep, which cleans up after a failure
        // between the writes.
        if let Err(err) = self.uploads.create(upload).await {
            // Nothing refers to the multipart upload then, so nothing else would end it.
            if let Some(multipart) = &upload.multipart_id
                && let Err(abort) = self.sources.abort_multipart(&upload.key(), multipart).await
            {
                tracing::warn!(video_id = %upload.id, error = %abort, "could not abort an unrecorded multipart upload");
            }
            return Err(store_error(err));
        }
        self.videos.create(video).await.map_err(store_error)
    }

    /// Ends an unfinished upload at the client's request: its bytes are discarded and its video deleted.
    async fn terminate(&self, upload: &Upload) -> Result<(), ApiError> {
        match upload.state {
            UploadState::Open => {}
            UploadState::Complete => {
                return Err(ApiError::conflict(
                    "upload_complete",
                    "the upload is complete; delete the video instead",
                ));
            }
            UploadState::Terminated | UploadState::Expired => return Err(gone(upload)),
        }
        let leased = self.uploads.lease(upload, tus::LEASE_TTL).await.map_err(upload_error)?;
        self.uploads
            .discard_bytes(&leased, self.sources.as_ref())
            .await
            .map_err(blob_error)?;
        let mut ended = leased.clone();
        ended.state = UploadState::Terminated;
        ended.lease = None;
        ended.tail = None;
        self.uploads.save(&leased, ended).await.map_err(upload_error)?;
        self.digests.forget_upload(&upload.id);
        self.videos.delete(&upload.id).await.map_err(store_error)?;
        metrics::counter!("streamgate_uploads_terminated_total").increment(1);
        Ok(())
    }

    /// Moves the video of a finished upload to `processing` and records its source, before the object
    /// lands and its storage event starts processing. A video past `uploading` keeps its status: at most
    /// it learns its source. 410 if the video was deleted meanwhile.
    async fn hand_over(&self, upload: &Upload, size: u64, sha256: Option<String>) -> Result<(), ApiError> {
        let source = Source {
            filename: upload.filename.clone(),
            content_type: upload.content_type.clone(),
            size,
            sha256,
        };
        let updated = self
            .videos
            .update(&upload.id, |video| {
                // on-upload may have read the landed file's digest first: it is kept.
                let known = video.source.as_ref();
                let next = Source {
                    sha256: source.sha256.clone().or_else(|| known.and_then(|k| k.sha256.clone())),
                    ..source.clone()
                };
                if video.status != VideoStatus::Uploading {
                    // Handed over already; or the object landed by a completion whose answer was lost,
                    // and its storage event moved the video on before the upload learnt of it.
                    if known == Some(&next) {
                        return false;
                    }
                    video.source = Some(next);
                    return true;
                }
                video.status = VideoStatus::Processing;
                video.progress = 0;
                video.error = None;
                video.source = Some(next);
                true
            })
            .await
            .map_err(store_error)?;
        match updated {
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                axum::http::StatusCode::GONE,
                "upload_gone",
                "the video of this upload was deleted",
            )),
        }
    }
}

impl AppState {
    /// Undoes [`AppState::hand_over`] when the object did not land after all: the video waits for its
    /// upload again, unless it got further meanwhile.
    async fn take_back(&self, id: &VideoId) -> Result<(), ApiError> {
        self.videos
            .update(id, |video| {
                if video.status != VideoStatus::Processing {
                    return false;
                }
                video.status = VideoStatus::Uploading;
                video.source = None;
                true
            })
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Completes the multipart upload of source `key`. Storage may carry out a completion and still
    /// answer with an error (a timeout, a reply lost on the way), and a completion sent again after
    /// one whose answer was lost finds the multipart upload gone: either way, the object found at `key`
    /// is the completed one, as nothing else writes there.
    async fn complete_source(
        &self,
        key: &str,
        multipart: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ApiError> {
        let err = match self.sources.complete_multipart(key, multipart, parts).await {
            Ok(object) => return Ok(object),
            Err(err) => err,
        };
        match self.sources.head(key).await {
            Ok(Some(object)) => {
                tracing::info!(%key, error = %err, "a completion answered with an error, but its object landed");
                Ok(object)
            }
            Ok(None) => Err(blob_error(err)),
            Err(head) => {
                tracing::warn!(%key, error = %head, "could not look for the object of a failed completion");
                Err(blob_error(err))
            }
        }
    }
}

/// A new video as an upload creates it.
fn new_video(id: VideoId, owner: &Authenticated, details: metadata::Details) -> Video {
    let mut video = Video::new(id, owner.0.address.to_checksum(None));
    video.title = details.title;
    video.description = details.description;
    if let Some(access) = details.access {
        video.set_access(access);
    }
    video
}

fn gone(upload: &Upload) -> ApiError {
    let why = match upload.state {
        UploadState::Terminated => "the upload was terminated",
        _ => "the upload expired before it was finished",
    };
    ApiError::new(axum::http::StatusCode::GONE, "upload_gone", why)
}

fn store_error(err: StoreError) -> ApiError {
    ApiError::unavailable(&err)
}

fn blob_error(err: BlobError) -> ApiError {
    ApiError::from(err)
}

fn upload_error(err: UploadError) -> ApiError {
    match err {
        UploadError::Busy => ApiError::conflict("upload_locked", "another request is writing to this upload"),
        UploadError::Store(err) => store_error(err),
        UploadError::Blob(err) => blob_error(err),
    }
}

/// The routes of `api-upload`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(tus::routes())
        .merge(direct::routes())
        .with_state(state)
}
