//! The runner's HTTP API: routes, shared state, and the layers every request passes through.

mod auth;
mod connections;
mod error;
mod health;
mod jobs;
mod metrics;
mod recipes;
mod sources;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{delete, get, post};
use axum::{Router, middleware};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::cache::Cache;
use crate::cluster::ClusterEndpoint;
use crate::connections::Connections;
use crate::jobs::Jobs;
use crate::metadata::MetadataDb;
use crate::query::Queries;
use crate::recipes::Recipes;
use crate::sources::Sources;

pub use auth::ApiToken;
pub use error::ApiError;
pub use metrics::install_recorder;

/// Request bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub metadata: MetadataDb,
    pub sources: Sources,
    pub connections: Connections,
    pub cache: Cache,
    pub queries: Queries,
    pub recipes: Recipes,
    pub jobs: Jobs,
    pub token: Arc<ApiToken>,
    pub cluster: ClusterEndpoint,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// Lets pages from `origins` call the API from a browser (with the token); none: no CORS headers,
/// so browsers refuse cross-origin calls. Origins are checked by `RunnerConfig::validate`.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    let protected = Router::new()
        .route("/api/sources", get(sources::list).post(sources::create))
        .route("/api/sources/{alias}", get(sources::show).delete(sources::remove))
        .route("/api/sources/{alias}/load-scoped", post(sources::load_scoped))
        .route(
            "/api/connections",
            get(connections::list).post(connections::create),
        )
        .route(
            "/api/connections/{id}",
            get(connections::show).delete(connections::remove),
        )
        .route("/api/connections/{id}/health", get(connections::health))
        .route("/api/connections/{id}/refresh", post(connections::refresh))
        .route("/api/connections/{id}/cache", delete(connections::purge))
        .route(
            "/api/connections/{id}/tables/{schema}/{table}/refresh",
            post(connections::refresh_table),
        )
        .route(
            "/api/connections/{id}/tables/{schema}/{table}/cache",
            delete(connections::purge_table),
        )
        .route("/api/information_schema", get(connections::information_schema))
        .route("/api/query", post(connections::query))
        .route("/api/recipes", get(recipes::list).post(recipes::create))
        .route(
            "/api/recipes/{id}",
            get(recipes::show).put(recipes::replace).delete(recipes::remove),
        )
        .route("/api/jobs", get(jobs::list).post(jobs::submit))
        .route("/api/jobs/{id}", get(jobs::show).delete(jobs::cancel))
        .route("/api/jobs/{id}/results/{output}", get(jobs::output))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    let router = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .merge(protected)
        .fallback(error::no_such_route)
        .layer(middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let router = match cors(cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}
