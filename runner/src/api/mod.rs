//! The runner's HTTP API: routes, shared state, and the layers every request passes through.

mod auth;
mod error;
mod health;
mod metrics;
mod sources;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Router, middleware};

use crate::metadata::MetadataDb;
use crate::sources::Sources;

pub use auth::ApiToken;
pub use error::ApiError;
pub use metrics::install_recorder;

/// Request bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Where the runner's cluster is.
#[derive(Clone)]
pub enum ClusterEndpoint {
    /// A session on the in-process scheduler and executor, which live as long as it does.
    Embedded(datafusion::prelude::SessionContext),
    /// A remote scheduler's REST address (`http://host:port`).
    Remote(String),
}

#[derive(Clone)]
pub struct AppState {
    pub metadata: MetadataDb,
    pub sources: Sources,
    pub token: Arc<ApiToken>,
    pub cluster: ClusterEndpoint,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/sources", get(sources::list).post(sources::create))
        .route("/api/sources/{alias}", get(sources::show).delete(sources::remove))
        .route("/api/sources/{alias}/load-scoped", post(sources::load_scoped))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .merge(protected)
        .fallback(error::no_such_route)
        .layer(middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
