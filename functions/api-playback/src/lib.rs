//! `api-playback`: playback URLs (`/v1/videos/{id}/playback`) and the media behind them (`/v1/media/…`).
//!
//! A playback URL carries, in its path, a token that signs the video's media prefix until it expires:
//! `/v1/media/{expires}.{signature}/{videoId}/master.m3u8`. Players resolve the relative URIs of playlists
//! against it, so every playlist, manifest, init segment and segment they fetch carries the same token,
//! and any altered, missing or expired token is refused. Playlists and manifests are served from here;
//! segments too with the embedded backend, and with S3 by a redirect to a presigned URL that lives no
//! longer than the token. Whether a viewer may have the URLs at all is decided in [`authorize`]: public
//! videos for anyone, gated ones for their owner's account and accounts whose wallets satisfy the video's
//! access rule. Gated videos also have an AES-128 encrypted HLS copy, whose key `/v1/keys/{id}` answers
//! under the same check.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use common::access::Verdict;
use common::blobs::{BlobError, Blobs};
use common::catalog::{Video, VideoStatus, Videos};
use common::chains::Chains;
use common::chains::holdings::Holdings;
use common::chains::rpc::RpcChains;
use common::config::Config;
use common::identity::Authenticated;
use common::identity::accounts::Accounts;
use common::identity::sessions::{SessionKeys, Sessions};
use common::ids::VideoId;
use common::links::SentTo;
use common::pipeline::media_prefix;
use common::platform::Ports;
use common::problem::{ApiError, Path};
use common::signing::{SignatureError, UrlSigner};
use common::store::now_unix_ms;
use common::telemetry::KeptCounter;
use url::Url;

static GRANTS: KeptCounter = KeptCounter::new("streamgate_playback_grants_total", &[]);
static DENIALS: KeptCounter = KeptCounter::new("streamgate_playback_denials_total", &[]);
static KEYS_SERVED: KeptCounter = KeptCounter::new("streamgate_playback_keys_total", &[]);

/// What the handlers of `api-playback` use; shared, as axum clones a handler's state for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    sessions: Sessions,
    videos: Videos,
    accounts: Accounts,
    chains: Chains,
    holdings: Holdings,
    media: Arc<dyn Blobs>,
    signer: UrlSigner,
    ttl: Duration,
    public_url: Option<Url>,
    /// Whether segments are served from here (embedded storage) or by redirects to storage.
    serve_segments: bool,
}

impl FromRef<AppState> for Sessions {
    fn from_ref(state: &AppState) -> Sessions {
        state.sessions.clone()
    }
}

impl AppState {
    pub fn new(config: &Config, ports: &Ports) -> Result<Self, String> {
        let keys = SessionKeys::from_config(config).map_err(|e| e.to_string())?;
        let session_ttl = chrono::Duration::from_std(config.session_ttl).unwrap_or(chrono::Duration::hours(1));
        Ok(Self(Arc::new(Shared {
            sessions: Sessions::new(keys, ports.store.clone(), session_ttl).limited(config.limits.per_account),
            videos: Videos::new(ports.store.clone()),
            accounts: Accounts::new(ports.store.clone()),
            chains: config.chains.clone(),
            holdings: Holdings::new(
                RpcChains::new(&config.chains, config.rpc_timeout),
                ports.store.clone(),
                config.ownership_ttl,
            ),
            media: ports.media.clone(),
            signer: UrlSigner::from_config(config, ports)?,
            ttl: config.playback_ttl,
            public_url: config.public_url.clone(),
            serve_segments: ports.local.is_some(),
        })))
    }
}

/// The routes of `api-playback`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/videos/{id}/playback", get(playback))
        .route("/v1/media/{token}/{id}/{*path}", get(media))
        .route("/v1/keys/{id}", get(key))
        .with_state(state)
}

/// The resource a media token signs, in pieces: the video's media prefix.
fn signed_resource(id: &VideoId) -> [&str; 3] {
    ["/v1/media/", id.as_str(), "/"]
}

/// The base of a video's playback URLs: `{server}/v1/media/{expires}.{signature}/{id}`.
fn media_base(state: &AppState, sent_to: &SentTo, id: &VideoId, expires_at: DateTime<Utc>) -> String {
    let expires = expires_at.timestamp();
    let mut base = String::with_capacity(160);
    sent_to.write_base(state.public_url.as_ref(), &mut base);
    base.push_str("/v1/media/");
    // Writing to a String cannot fail.
    let _ = write!(base, "{expires}.");
    state.signer.sign_to("GET", &signed_resource(id), expires, &mut base);
    base.push('/');
    base.push_str(id.as_str());
    base
}

/// Whether the viewer may play the video: a public video anyone; any other its owner's account, and
/// accounts whose linked wallets together satisfy its access rule. When that cannot be known because a
/// chain did not answer, the answer is 503, never a grant.
async fn authorize(state: &AppState, video: &Video, viewer: Option<&Authenticated>) -> Result<(), ApiError> {
    let rule = video.rule(&state.chains);
    if rule.as_ref().is_ok_and(|rule| rule.is_public()) {
        return Ok(());
    }
    let Some(viewer) = viewer else {
        return Err(ApiError::unauthorized(
            "unauthenticated",
            "this video is gated: sign in with a wallet that satisfies its access rule",
        ));
    };
    let wallets = state
        .accounts
        .holders(viewer.account())
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    // The owner's wallet is linked to the owner's account, and to no other.
    if video
        .owner
        .parse::<Address>()
        .is_ok_and(|owner| wallets.iter().any(|wallet| wallet.address == owner))
    {
        return Ok(());
    }
    // A rule that no longer parses (its chain was removed from this installation) stops others only.
    let rule = rule.map_err(|fault| {
        tracing::error!(video = %video.id, %fault, "a stored access rule no longer holds here");
        chain_unavailable()
    })?;
    match state.holdings.evaluate(&rule, &wallets).await {
        Verdict::Granted => Ok(()),
        Verdict::Denied => {
            DENIALS.increment(1);
            Err(ApiError::forbidden(
                "access_denied",
                "no wallet linked to this account satisfies the video's access rule",
            ))
        }
        Verdict::Unknown(err) => {
            tracing::warn!(video = %video.id, error = %err, "access undecided: a chain did not answer");
            Err(chain_unavailable())
        }
    }
}

fn chain_unavailable() -> ApiError {
    ApiError::chain_unavailable("the chain this video's access rule reads is not answering; try again shortly")
}

/// The playback answer (`Playback` in the public contract): `hls`, `dash`, for gated videos
/// `hlsEncrypted` (the AES-128 encrypted HLS stream, its key at `/v1/keys/{id}`), and `expiresAt`, in
/// whole seconds as the URLs' token has it. Every URL is `base` and a fixed path, so `base` is escaped
/// once and the answer written in one buffer.
fn playback_json(base: &str, encrypted: bool, expires_at: DateTime<Utc>) -> Result<Vec<u8>, serde_json::Error> {
    // JSON escapes only quotes, backslashes and control characters, which a URL rarely has.
    let quoted;
    // Looked for without stopping early, which the compiler turns into a few vector compares.
    let plain = base
        .bytes()
        .fold(true, |plain, b| plain & (b != b'"') & (b != b'\\') & (b >= 0x20));
    let escaped = if !plain {
        quoted = serde_json::to_string(base)?;
        &quoted[1..quoted.len() - 1]
    } else {
        base
    };
    let urls = [
        ("hls", "/master.m3u8", true),
        ("dash", "/manifest.mpd", true),
        ("hlsEncrypted", "/aes/master.m3u8", encrypted),
    ];
    let mut body = Vec::with_capacity(3 * (escaped.len() + 32) + 64);
    body.push(b'{');
    for (name, path, _) in urls.into_iter().filter(|(_, _, shown)| *shown) {
        for piece in ["\"", name, "\":\"", escaped, path, "\","] {
            body.extend_from_slice(piece.as_bytes());
        }
    }
    body.extend_from_slice(b"\"expiresAt\":\"");
    body.extend_from_slice(expires_at.to_rfc3339_opts(SecondsFormat::Secs, true).as_bytes());
    body.extend_from_slice(b"\"}");
    Ok(body)
}

/// The video `id` names, once the viewer may play it.
async fn playable(state: &AppState, id: &str, viewer: Option<&Authenticated>) -> Result<Arc<Video>, ApiError> {
    let id = VideoId::from_str(id).map_err(|_| ApiError::not_found("no such video"))?;
    let video = state
        .videos
        .get_shared(&id)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .ok_or_else(|| ApiError::not_found("no such video"))?;
    authorize(state, &video, viewer).await?;
    if video.status != VideoStatus::Ready {
        return Err(ApiError::conflict(
            "not_ready",
            format!("the video is {:?}, not ready to play", video.status).to_lowercase(),
        ));
    }
    Ok(video)
}

/// When URLs issued now for `ttl` expire, in whole seconds as their token carries it; from the clock
/// in milliseconds ([`now_unix_ms`]), which costs less than reading it as a date.
fn expiry(ttl: Duration) -> DateTime<Utc> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let at = now_unix_ms().saturating_add(ttl_ms).div_euclid(1000);
    DateTime::from_timestamp(at, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `GET /v1/videos/{id}/playback`: signed, short-lived HLS and DASH URLs.
async fn playback(
    State(state): State<AppState>,
    viewer: Option<Authenticated>,
    Path(id): Path<String>,
    sent_to: SentTo,
) -> Result<Response, ApiError> {
    let video = playable(&state, &id, viewer.as_ref()).await?;
    let id = &video.id;
    let expires_at = expiry(state.ttl);
    let base = media_base(&state, &sent_to, id, expires_at);
    GRANTS.increment(1);
    let body = playback_json(&base, video.encrypted_hls, expires_at).map_err(|e| ApiError::internal(&e))?;
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    // Room for the headers every answer gets on its way out, made once.
    headers.reserve(12);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `GET /v1/keys/{id}`: the AES-128 key of a video's encrypted HLS stream, to viewers who may play it.
async fn key(
    State(state): State<AppState>,
    viewer: Option<Authenticated>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let video = playable(&state, &id, viewer.as_ref()).await?;
    let key = match video.encrypted_hls {
        true => state
            .videos
            .existing_content_key(&video.id)
            .await
            .map_err(|e| ApiError::unavailable(&e))?,
        false => None,
    };
    let key = key.ok_or_else(|| ApiError::not_found("this video has no encrypted stream"))?;
    KEYS_SERVED.increment(1);
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
        ],
        key.to_vec(),
    )
        .into_response())
}

fn signature_error(err: SignatureError) -> ApiError {
    match err {
        SignatureError::Missing => ApiError::forbidden("signature_missing", err.to_string()),
        SignatureError::Invalid => ApiError::forbidden("signature_invalid", err.to_string()),
        SignatureError::Expired => ApiError::forbidden("signature_expired", err.to_string()),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("jpg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// `GET /v1/media/{token}/{id}/{path}`: one file of a video's stream, under a valid token.
async fn media(
    State(state): State<AppState>,
    Path((token, id, path)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let id = VideoId::from_str(&id).map_err(|_| ApiError::not_found("no such video"))?;
    let (expires, signature) = token.split_once('.').unwrap_or((token.as_str(), ""));
    state
        .signer
        .verify(
            "GET",
            &signed_resource(&id).concat(),
            Some(expires).filter(|e| !e.is_empty()),
            Some(signature).filter(|s| !s.is_empty()),
        )
        .map_err(signature_error)?;
    let expires_at = expires
        .parse()
        .ok()
        .and_then(|e| Utc.timestamp_opt(e, 0).single())
        .unwrap_or_else(Utc::now);
    let key = format!("{}{path}", media_prefix(&id));
    common::blobs::validate_key(&key).map_err(|_| ApiError::not_found("no such file"))?;
    let kind = content_type(&path);
    let manifest = matches!(kind, "application/vnd.apple.mpegurl" | "application/dash+xml");
    let max_age = (expires_at - Utc::now()).num_seconds().clamp(0, 3600);
    let cache = HeaderValue::from_str(&format!("private, max-age={max_age}")).map_err(|e| ApiError::internal(&e))?;
    if !manifest && !state.serve_segments {
        // Storage serves the bytes, for no longer than the token lives.
        let ttl = Duration::from_secs(max_age.max(1) as u64);
        let signed = state.media.signed_get_url(&key, ttl).await.map_err(blob_error)?;
        let location = HeaderValue::from_str(&signed.url).map_err(|e| ApiError::internal(&e))?;
        return Ok((
            StatusCode::FOUND,
            [(header::LOCATION, location), (header::CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    let Some(meta) = state.media.head(&key).await.map_err(blob_error)? else {
        return Err(ApiError::not_found("no such file"));
    };
    let chunks = state.media.get_stream(&key).await.map_err(blob_error)?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CONTENT_LENGTH, HeaderValue::from(meta.size)),
            (header::CACHE_CONTROL, cache),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

fn blob_error(err: BlobError) -> ApiError {
    match err {
        BlobError::NotFound(_) | BlobError::InvalidKey(..) => ApiError::not_found("no such file"),
        other => ApiError::unavailable(&other),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::{expiry, playback_json};

    #[test]
    fn playback_answers_are_json_with_every_url_under_the_base() {
        let at = Utc.timestamp_opt(1_800_000_000, 0).single().expect("time");
        for (base, encrypted) in [
            ("http://127.0.0.1:8080/v1/media/t/v", true),
            ("http://a\"b\\c/v1/media/t/v", false),
            ("http://a\u{1}b/v1/media/t/v", true),
        ] {
            let body = playback_json(base, encrypted, at).expect("json");
            let mut expected = json!({
                "hls": format!("{base}/master.m3u8"),
                "dash": format!("{base}/manifest.mpd"),
                "expiresAt": at,
            });
            if encrypted {
                expected["hlsEncrypted"] = json!(format!("{base}/aes/master.m3u8"));
            }
            let answer: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(answer, expected);
            assert_eq!(answer["expiresAt"], "2027-01-15T08:00:00Z");
        }
    }

    #[test]
    fn urls_expire_a_ttl_from_now_in_whole_seconds() {
        let before = Utc::now().timestamp();
        let at = expiry(std::time::Duration::from_millis(300_900));
        let after = Utc::now().timestamp();
        assert_eq!(at.timestamp_subsec_nanos(), 0);
        // now + 300.9 s, rounded down: 300 or 301 s after the whole second it was read in.
        assert!(
            (before + 300..=after + 301).contains(&at.timestamp()),
            "{at} vs {before}..{after}"
        );
        assert_eq!(
            expiry(std::time::Duration::MAX),
            chrono::DateTime::<Utc>::MAX_UTC,
            "an absurd TTL does not wrap"
        );
    }
}
