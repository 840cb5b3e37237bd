//! `api-auth`: Sign-In with Ethereum (EIP-4361), sessions and linked wallets (`/v1/auth/*`, `/v1/wallets`).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::{Extension, FromRef, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json as AxumJson, Router};
use chrono::{DateTime, Utc};
use common::chains::address_in_path;
use common::chains::rpc::RpcChains;
use common::config::Config;
use common::identity::accounts::Accounts;
use common::identity::nonces::Nonces;
use common::identity::sessions::{SessionKeys, Sessions};
use common::identity::{AuthError, Authenticated, SignIn, SignedMessage};
use common::limits::{ClientAddress, SignInLimit};
use common::platform::Ports;
use common::problem::{ApiError, Json, Path};
use serde::Serialize;

#[derive(Clone)]
pub struct AppState {
    sign_in: SignIn,
    /// Sign-in calls per client address.
    attempts: SignInLimit,
}

impl FromRef<AppState> for Sessions {
    fn from_ref(state: &AppState) -> Sessions {
        state.sign_in.sessions.clone()
    }
}

impl AppState {
    /// The state for a service reached under `domain` (the Sign-In with Ethereum domain).
    pub fn new(config: &Config, ports: &Ports, domain: String) -> Result<Self, String> {
        let keys = SessionKeys::from_config(config).map_err(|e| e.to_string())?;
        let ttl = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1));
        let sign_in = SignIn {
            nonces: Nonces::new(ports.store.clone(), ttl(config.nonce_ttl)),
            accounts: Accounts::new(ports.store.clone()),
            sessions: Sessions::new(keys, ports.store.clone(), ttl(config.session_ttl))
                .limited(config.limits.per_account),
            domain,
            chains: config.chains.ids().collect(),
            contract_wallets: Arc::new(RpcChains::new(&config.chains, config.rpc_timeout)),
            skew: chrono::Duration::seconds(60),
        };
        let attempts = SignInLimit::new(ports.store.clone(), config.limits.sign_in);
        Ok(Self { sign_in, attempts })
    }
}

/// The routes of `api-auth`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/auth/nonce", post(issue_nonce))
        .route("/v1/auth/verify", post(verify))
        .route("/v1/auth/session", get(session))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/wallets", get(list_wallets).post(link_wallet))
        .route("/v1/wallets/{address}", delete(unlink_wallet))
        .layer(axum::extract::DefaultBodyLimit::max(32 * 1024))
        .with_state(state)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NonceIssued {
    nonce: String,
    expires_at: DateTime<Utc>,
}

/// The client address the edge resolved, when it knows one.
type Client = Option<Extension<ClientAddress>>;

async fn issue_nonce(State(state): State<AppState>, client: Client) -> Result<AxumJson<NonceIssued>, ApiError> {
    state.attempts.check(client.map(|c| c.0)).await?;
    let (nonce, expires_at) = state.sign_in.nonces.issue().await.map_err(AuthError::from)?;
    Ok(AxumJson(NonceIssued { nonce, expires_at }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Token {
    token: String,
    address: String,
    expires_at: DateTime<Utc>,
}

async fn verify(
    State(state): State<AppState>,
    client: Client,
    Json(signed): Json<SignedMessage>,
) -> Result<AxumJson<Token>, ApiError> {
    state.attempts.check(client.map(|c| c.0)).await?;
    let signed_in = state.sign_in.sign_in(&signed).await?;
    Ok(AxumJson(Token {
        token: signed_in.token,
        address: signed_in.address.to_checksum(None),
        expires_at: signed_in.expires_at,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    address: String,
    wallets: Vec<String>,
    expires_at: DateTime<Utc>,
}

/// The account's wallets as EIP-55 strings.
async fn wallets_of(state: &AppState, auth: &Authenticated) -> Result<Vec<String>, ApiError> {
    let wallets = state
        .sign_in
        .accounts
        .wallets(auth.account())
        .await
        .map_err(AuthError::from)?;
    Ok(wallets.into_iter().map(|a| a.to_checksum(None)).collect())
}

async fn session(State(state): State<AppState>, auth: Authenticated) -> Result<AxumJson<SessionView>, ApiError> {
    let wallets = wallets_of(&state, &auth).await?;
    Ok(AxumJson(SessionView {
        address: auth.0.address.to_checksum(None),
        wallets,
        expires_at: auth.0.expires_at,
    }))
}

async fn logout(State(state): State<AppState>, auth: Authenticated) -> Result<StatusCode, ApiError> {
    state.sign_in.sessions.revoke(&auth.0).await.map_err(AuthError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct WalletList {
    wallets: Vec<String>,
}

async fn list_wallets(State(state): State<AppState>, auth: Authenticated) -> Result<AxumJson<WalletList>, ApiError> {
    let wallets = wallets_of(&state, &auth).await?;
    Ok(AxumJson(WalletList { wallets }))
}

#[derive(Serialize)]
struct Linked {
    address: String,
    wallets: Vec<String>,
}

async fn link_wallet(
    State(state): State<AppState>,
    auth: Authenticated,
    client: Client,
    Json(signed): Json<SignedMessage>,
) -> Result<AxumJson<Linked>, ApiError> {
    state.attempts.check(client.map(|c| c.0)).await?;
    let address = state.sign_in.link(&auth.0, &signed).await?;
    let wallets = wallets_of(&state, &auth).await?;
    Ok(AxumJson(Linked {
        address: address.to_checksum(None),
        wallets,
    }))
}

async fn unlink_wallet(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(address): Path<String>,
) -> Result<StatusCode, ApiError> {
    let address = address_in_path(&address)?;
    state
        .sign_in
        .accounts
        .unlink(auth.account(), &address)
        .await
        .map_err(AuthError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
