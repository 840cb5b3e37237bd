//! `api-chains`: Chains, gas prices, contract and transaction tracking (/v1/chains, /v1/gas, /v1/contracts, /v1/transactions).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use common::chains::{ChainInfo, Chains};
use common::config::Config;
use common::platform::Ports;
use common::store::Store;
use serde::Serialize;

/// What the handlers of `api-chains` use.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub chains: Chains,
}

impl AppState {
    pub fn new(config: &Config, ports: &Ports) -> Self {
        Self {
            store: ports.store.clone(),
            chains: config.chains.clone(),
        }
    }
}

/// The routes of `api-chains`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new().route("/v1/chains", get(chains)).with_state(state)
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
