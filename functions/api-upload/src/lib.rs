//! `api-upload`: Resumable (tus 1.0.0) and direct multipart uploads (/v1/uploads).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;
use common::platform::Ports;
use common::store::Store;

/// What the handlers of `api-upload` use.
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

/// The routes of `api-upload`; the runtime adds `/healthz`, `/metrics` and the common layers.
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
