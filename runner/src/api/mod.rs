//! The runner's HTTP API: routes, shared state, and the layers every request passes through.

mod audit;
mod auth;
mod connections;
mod error;
mod headers;
mod health;
mod idempotency;
mod jobs;
mod metrics;
mod openapi;
mod recipes;
mod schedules;
mod secrets;
mod sources;
mod tokens;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::{Router, middleware};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::access::{Role, Tokens};
use crate::cache::Cache;
use crate::cluster::ClusterEndpoint;
use crate::connections::Connections;
use crate::jobs::Jobs;
use crate::metadata::MetadataDb;
use crate::query::Queries;
use crate::recipes::Recipes;
use crate::registry::Registry;
use crate::schedules::Schedules;
use crate::secrets::Secrets;
use crate::sources::Sources;

pub use audit::outcome;
pub use error::{ApiError, ErrorCode};
pub use metrics::install_recorder;

/// A `201` or `202` with the `Location` of what the request made (which the audit log records).
type Created<T> = (StatusCode, [(header::HeaderName, String); 1], axum::Json<T>);

fn created<T>(status: StatusCode, location: String, body: T) -> Created<T> {
    (status, [(header::LOCATION, location)], axum::Json(body))
}

/// Request bodies larger than this are refused with 413.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub metadata: MetadataDb,
    pub registry: Registry,
    pub sources: Sources,
    pub connections: Connections,
    pub cache: Cache,
    pub queries: Queries,
    pub recipes: Recipes,
    pub jobs: Jobs,
    pub schedules: Schedules,
    pub tokens: Tokens,
    pub secrets: Secrets,
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
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static(idempotency::IDEMPOTENCY_KEY),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

openapi::documented_api! {
    public: [health::health, health::ready, health::metrics, openapi::document],
    Viewer: [
        sources::list,
        sources::show,
        sources::load_scoped,
        connections::list,
        connections::show,
        connections::health,
        connections::information_schema,
        recipes::list,
        recipes::show,
        recipes::open_items,
        jobs::list,
        jobs::show,
        jobs::output,
        schedules::list,
        schedules::show,
        tokens::whoami,
    ],
    Operator: [
        connections::refresh,
        connections::purge,
        connections::refresh_table,
        connections::purge_table,
        connections::query,
        recipes::create,
        recipes::dry_run,
        recipes::replace,
        recipes::remove,
        recipes::resolve_open_item,
        jobs::submit,
        jobs::cancel,
        jobs::delete_results,
        schedules::create,
        schedules::pause,
        schedules::resume,
        schedules::remove,
        schedules::fire,
    ],
    Admin: [
        sources::create,
        sources::update_credentials,
        sources::remove,
        connections::create,
        connections::update_credentials,
        connections::remove,
        secrets::create,
        secrets::list,
        secrets::show,
        secrets::update,
        secrets::remove,
        secrets::keys,
        secrets::reseal,
        tokens::create,
        tokens::list,
        tokens::revoke,
        audit::list,
    ],
}

pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    let protected = Role::ALL
        .into_iter()
        .fold(Router::new(), |routes, role| {
            routes.merge(
                role_routes(role).route_layer(middleware::from_fn_with_state(role, auth::require_role)),
            )
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    let router = public_routes()
        .merge(protected)
        .fallback(error::no_such_route)
        .layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(middleware::from_fn(openapi::check_documented))
        .layer(middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(crate::console::routes())
        .layer(middleware::from_fn(headers::security_headers));
    let router = match cors(cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_body_limit_is_the_enforced_one() {
        assert_eq!(MAX_BODY_BYTES, 1024 * 1024);
        assert!(error::ErrorCode::BodyTooLarge.meaning().contains("1 MiB"));
    }
}
