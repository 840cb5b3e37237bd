//! `api-chains`: the chains this installation knows, their gas prices, and deployments and transactions
//! followed to confirmation (`/v1/chains`, `/v1/gas`, `/v1/contracts`, `/v1/transactions`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use common::chains::gas::{GasPrices, GasReading, gwei};
use common::chains::rpc::RpcChains;
use common::chains::tracking::{MAX_NAME, TrackError, TrackedTx, Tracker, TxStatus};
use common::chains::{ChainInfo, Chains, address_in_path};
use common::config::Config;
use common::identity::Authenticated;
use common::identity::accounts::Accounts;
use common::identity::sessions::{SessionKeys, Sessions};
use common::platform::Ports;
use common::problem::{ApiError, Path};
use serde::{Deserialize, Serialize};

/// A pending transaction asked for is looked at again when its last look is older than this.
const RECHECK_AFTER: chrono::Duration = chrono::Duration::seconds(5);
/// After a chain failed to answer a request's own read, further requests do not ask it for this long:
/// they answer what is kept, at once, rather than each waiting out the RPC timeouts.
const BACK_OFF: Duration = Duration::from_secs(10);

/// Per chain, the reads requests make themselves: gas readings one at a time (the others then find its
/// result kept), and none for a while after one failed.
#[derive(Default)]
struct LiveReads {
    gas: tokio::sync::Mutex<()>,
    last_failure: std::sync::Mutex<Option<Instant>>,
}

impl LiveReads {
    fn backing_off(&self) -> bool {
        let last_failure = self.last_failure.lock().map(|at| *at).unwrap_or(None);
        last_failure.is_some_and(|at| at.elapsed() < BACK_OFF)
    }

    fn failed(&self) {
        if let Ok(mut last_failure) = self.last_failure.lock() {
            *last_failure = Some(Instant::now());
        }
    }
}

/// What the handlers of `api-chains` use.
#[derive(Clone)]
pub struct AppState {
    sessions: Sessions,
    accounts: Accounts,
    chains: Chains,
    gas: GasPrices,
    tracker: Tracker,
    /// A kept gas reading younger than this is answered as it is; an older one is read again.
    gas_fresh_for: Duration,
    live: Arc<BTreeMap<u64, LiveReads>>,
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
        let rpc = RpcChains::new(&config.chains, config.rpc_timeout);
        Ok(Self {
            sessions: Sessions::new(keys, ports.store.clone(), ttl).limited(config.limits.per_account),
            accounts: Accounts::new(ports.store.clone()),
            chains: config.chains.clone(),
            gas: GasPrices::new(ports.store.clone(), rpc.clone()),
            tracker: Tracker::new(ports.store.clone(), rpc, config.chains.clone()),
            // gas-monitor reads every chain once per run: two runs' time lets one be late.
            gas_fresh_for: config.schedule_interval * 2,
            live: Arc::new(config.chains.ids().map(|id| (id, LiveReads::default())).collect()),
        })
    }

    /// The chain `id`, which must have an RPC URL here: 404 `chain_unknown` or `chain_not_configured`.
    fn configured_chain(&self, id: u64) -> Result<&ChainInfo, ApiError> {
        let chain = self
            .chains
            .get(id)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "chain_unknown", format!("no chain {id} here")))?;
        if chain.rpc_urls.is_empty() {
            return Err(not_configured(id, StatusCode::NOT_FOUND));
        }
        Ok(chain)
    }
}

fn not_configured(id: u64, status: StatusCode) -> ApiError {
    ApiError::new(
        status,
        "chain_not_configured",
        format!("this installation has no RPC URL for chain {id}"),
    )
}

/// The routes of `api-chains`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chains", get(chains))
        .route("/v1/gas/{chain_id}", get(gas))
        .route("/v1/contracts", post(register))
        .route("/v1/contracts/{chain_id}/{address}", get(contract))
        .route("/v1/transactions/{chain_id}/{tx_hash}", get(transaction))
        .with_state(state)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChainView {
    #[serde(flatten)]
    chain: ChainInfo,
    /// Whether this installation has an RPC URL for the chain, so access rules and tracking can use it.
    rpc_configured: bool,
}

/// `GET /v1/chains`: the chains this installation knows, by id.
async fn chains(State(state): State<AppState>) -> Json<Vec<ChainView>> {
    Json(
        state
            .chains
            .iter()
            .map(|chain| ChainView {
                chain: chain.clone(),
                rpc_configured: !chain.rpc_urls.is_empty(),
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct TiersView {
    slow: String,
    standard: String,
    fast: String,
}

/// Fees in gwei as exact decimal strings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GasView {
    chain_id: u64,
    base_fee_gwei: String,
    priority_fee_gwei: TiersView,
    block_number: u64,
    observed_at: DateTime<Utc>,
}

impl From<GasReading> for GasView {
    fn from(reading: GasReading) -> Self {
        Self {
            chain_id: reading.chain_id,
            base_fee_gwei: gwei(reading.base_fee),
            priority_fee_gwei: TiersView {
                slow: gwei(reading.priority_fee.slow),
                standard: gwei(reading.priority_fee.standard),
                fast: gwei(reading.priority_fee.fast),
            },
            block_number: reading.block_number,
            observed_at: reading.observed_at,
        }
    }
}

/// `GET /v1/gas/{chainId}`: the latest reading gas-monitor kept, or a new one when that is older than
/// two of its runs. When the chain does not answer, an older reading is better than none: its
/// `observedAt` says how old.
async fn gas(State(state): State<AppState>, Path(chain_id): Path<u64>) -> Result<Json<GasView>, ApiError> {
    state.configured_chain(chain_id)?;
    let fresh_for = chrono::Duration::from_std(state.gas_fresh_for).unwrap_or(chrono::Duration::MAX);
    let kept = async || {
        let kept = state
            .gas
            .latest(chain_id)
            .await
            .map_err(|e| ApiError::unavailable(&e))?;
        let fresh = kept
            .as_ref()
            .is_some_and(|reading| Utc::now() - reading.observed_at < fresh_for);
        Ok::<_, ApiError>((kept, fresh))
    };
    if let (Some(reading), true) = kept().await? {
        return Ok(Json(reading.into()));
    }
    let unavailable = || chain_silent(chain_id);
    let live = state.live.get(&chain_id).ok_or_else(unavailable)?;
    let _one_at_a_time = live.gas.lock().await;
    // Another request may have read it while this one waited.
    let (reading, fresh) = kept().await?;
    if fresh || live.backing_off() {
        return reading.map(|reading| Json(reading.into())).ok_or_else(unavailable);
    }
    match state.gas.sample(chain_id).await {
        Ok(reading) => Ok(Json(reading.into())),
        Err(err) => {
            tracing::warn!(chain = chain_id, error = %err, "reading gas prices failed");
            live.failed();
            reading.map(|reading| Json(reading.into())).ok_or_else(unavailable)
        }
    }
}

/// `POST /v1/contracts` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Registration {
    chain_id: u64,
    tx_hash: String,
    #[serde(default)]
    name: Option<String>,
}

/// A transaction's status (`GET /v1/transactions/…`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TxView {
    chain_id: u64,
    tx_hash: B256,
    status: TxStatus,
    confirmations: u64,
    block_number: Option<u64>,
}

/// A registered deployment (`/v1/contracts`): its transaction's status, and the contract once known.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContractView {
    #[serde(flatten)]
    transaction: TxView,
    /// Checksummed (EIP-55).
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    registered_at: DateTime<Utc>,
}

impl From<&TrackedTx> for TxView {
    fn from(transaction: &TrackedTx) -> Self {
        Self {
            chain_id: transaction.chain_id,
            tx_hash: transaction.tx_hash,
            status: transaction.status,
            confirmations: transaction.confirmations,
            block_number: transaction.block_number,
        }
    }
}

impl From<TrackedTx> for ContractView {
    fn from(transaction: TrackedTx) -> Self {
        Self {
            transaction: (&transaction).into(),
            address: transaction.contract_address.map(|address| address.to_checksum(None)),
            name: transaction.name,
            registered_at: transaction.registered_at,
        }
    }
}

/// Characters that hide or reorder text where a name is shown: controls, zero-width characters and
/// bidirectional marks, overrides and isolates.
fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `503 chain_unavailable`: the chain did not answer a read this request needed.
fn chain_silent(chain_id: u64) -> ApiError {
    ApiError::chain_unavailable(format!("chain {chain_id} did not answer; try again shortly"))
}

fn parse_hash(text: &str) -> Option<B256> {
    let hex = text.strip_prefix("0x")?;
    (hex.len() == 64).then(|| B256::from_str(hex).ok()).flatten()
}

fn track_error(err: TrackError, chain_id: u64) -> ApiError {
    match err {
        TrackError::NotConfigured(_) => not_configured(chain_id, StatusCode::BAD_REQUEST),
        TrackError::NotADeployment => ApiError::bad_request(
            "not_a_deployment",
            "this transaction does not create a contract; register the transaction that deployed it",
        ),
        TrackError::NotTheDeployer => ApiError::forbidden(
            "not_the_deployer",
            "only an account linked to the wallet that sent the deployment names it; register it without a name to follow it",
        ),
        TrackError::SenderUnknown => ApiError::conflict(
            "sender_unknown",
            "the chain does not know this transaction yet, so who sent it cannot be checked; register it without a name, and name it once it is known",
        ),
        TrackError::Chain(err) => {
            tracing::warn!(error = %err, "a tracked transaction's chain did not answer");
            chain_silent(chain_id)
        }
        TrackError::Store(err) => ApiError::unavailable(&err),
    }
}

/// `POST /v1/contracts`: registers a deployment by its transaction and looks at it once; `tx-tracker`
/// follows it from then on. 201 when new, 200 with what is known when it was registered before.
async fn register(
    State(state): State<AppState>,
    viewer: Authenticated,
    common::problem::Json(body): common::problem::Json<Registration>,
) -> Result<Response, ApiError> {
    let chain_id = body.chain_id;
    if !state.chains.contains(chain_id) {
        return Err(ApiError::bad_request(
            "chain_unknown",
            format!("no chain {chain_id} here"),
        ));
    }
    let hash = parse_hash(&body.tx_hash)
        .ok_or_else(|| ApiError::bad_request("invalid_tx_hash", "txHash is 0x and 64 hexadecimal digits"))?;
    let name = body
        .name
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    if let Some(name) = &name
        && (name.chars().count() > MAX_NAME || name.chars().any(hides_text))
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("a name has at most {MAX_NAME} characters, and no control or direction marks"),
        ));
    }
    // A name is the deployer's to give: it is checked against the wallets linked to this account that
    // speak for it on this chain.
    let wallets = match name {
        Some(_) => state
            .accounts
            .holders(&viewer.0.account)
            .await
            .map_err(|e| ApiError::unavailable(&e))?
            .into_iter()
            .filter(|wallet| wallet.only_on.is_none_or(|chain| chain == chain_id))
            .map(|wallet| wallet.address)
            .collect(),
        None => Vec::new(),
    };
    let (transaction, created) = state
        .tracker
        .register(chain_id, hash, name, &viewer.0.account, &wallets)
        .await
        .map_err(|err| track_error(err, chain_id))?;
    let location = match transaction.contract_address {
        Some(address) => format!("/v1/contracts/{chain_id}/{address}"),
        None => format!("/v1/transactions/{chain_id}/{hash}"),
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, Json(ContractView::from(transaction))).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A registered transaction as it stands, looked at again first when it is pending and its last look
/// is a few seconds old; when its chain does not answer, as it was last seen. `None` when the look found
/// that it creates no contract, so it is no longer registered.
async fn current(state: &AppState, transaction: TrackedTx) -> Option<TrackedTx> {
    if transaction.status.is_final() || Utc::now() - transaction.checked_at < RECHECK_AFTER {
        return Some(transaction);
    }
    let Some(live) = state.live.get(&transaction.chain_id) else {
        return Some(transaction);
    };
    if live.backing_off() {
        return Some(transaction);
    }
    match state.tracker.refresh(&transaction, None).await {
        Ok((next, _)) => Some(next),
        Err(TrackError::NotADeployment) => None,
        Err(err) => {
            tracing::warn!(chain = transaction.chain_id, error = %err, "looking at a tracked transaction failed");
            if matches!(err, TrackError::Chain(_)) {
                live.failed();
            }
            Some(transaction)
        }
    }
}

/// `GET /v1/contracts/{chainId}/{address}`: the registered deployment that created the contract.
async fn contract(
    State(state): State<AppState>,
    Path((chain_id, address)): Path<(u64, String)>,
) -> Result<Json<ContractView>, ApiError> {
    state.configured_chain(chain_id)?;
    let address = address_in_path(&address)?;
    let unknown = || ApiError::not_found("no registered deployment created a contract at this address");
    let transaction = state
        .tracker
        .by_contract(chain_id, address)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .ok_or_else(unknown)?;
    Ok(Json(current(&state, transaction).await.ok_or_else(unknown)?.into()))
}

/// `GET /v1/transactions/{chainId}/{txHash}`: a registered transaction as tracked, any other as its
/// chain knows it now.
async fn transaction(
    State(state): State<AppState>,
    Path((chain_id, hash)): Path<(u64, String)>,
) -> Result<Json<TxView>, ApiError> {
    state.configured_chain(chain_id)?;
    let hash = parse_hash(&hash)
        .ok_or_else(|| ApiError::bad_request("invalid_tx_hash", "the hash is 0x and 64 hexadecimal digits"))?;
    let registered = state
        .tracker
        .get(chain_id, hash)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    let transaction = match registered {
        Some(transaction) => current(&state, transaction).await,
        None => None,
    };
    let transaction = match transaction {
        Some(transaction) => transaction,
        None => state
            .tracker
            .look_up(chain_id, hash)
            .await
            .map_err(|err| track_error(err, chain_id))?
            .ok_or_else(|| ApiError::not_found("the chain does not know this transaction"))?,
    };
    Ok(Json((&transaction).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_0x_and_64_hex_digits() {
        let hash = format!("0x{}", "ab".repeat(32));
        assert_eq!(parse_hash(&hash), Some(B256::repeat_byte(0xab)));
        assert_eq!(parse_hash(&"ab".repeat(32)), None);
        assert_eq!(parse_hash(&format!("0x{}", "ab".repeat(31))), None);
        assert_eq!(parse_hash(&format!("0x{}", "zz".repeat(32))), None);
        assert_eq!(parse_hash(&format!("0x{}00", "ab".repeat(32))), None);
    }
}
