//! `api-videos`: Video metadata, search and owner-only edits (/v1/videos).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use common::platform::Ports;
use common::store::Store;

/// What the handlers of `api-videos` use.
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

/// The routes of `api-videos`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
