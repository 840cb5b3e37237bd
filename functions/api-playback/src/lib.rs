//! `api-playback`: Token-gated playback: signed HLS and DASH URLs and content keys (/v1/videos/{id}/playback, /v1/keys/{id}).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use common::platform::Ports;
use common::store::Store;

/// What the handlers of `api-playback` use.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
}

impl AppState {
    pub fn new(ports: &Ports) -> Self {
        Self {
            store: ports.store.clone(),
        }
    }
}

/// The routes of `api-playback`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
