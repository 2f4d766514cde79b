//! Liveness, readiness and the metrics endpoint.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalla_core::pool::PoolRegistry;
use serde_json::json;

use super::AppState;
use crate::cluster::ClusterEndpoint;

#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "The runner is up", body = serde_json::Value),
    )
)]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the metadata DB answers, the cluster is reachable and the job queue has room;
/// 503 says which is not.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses(
        (status = 200, description = "The metadata DB and the cluster answer and the job queue has room", body = serde_json::Value),
        (status = 503, description = "Says which of them is not ready", body = serde_json::Value),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let metadata = state.metadata.ping().await.map_err(|e| e.to_string());
    let cluster = probe_cluster(&state.cluster).await;
    let jobs = if state.jobs.queue_full() {
        Err("the job queue is full".to_string())
    } else {
        Ok(())
    };
    let status = if metadata.is_ok() && cluster.is_ok() && jobs.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let describe = |result: Result<(), String>| result.err().unwrap_or_else(|| "ok".into());
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "metadata": describe(metadata),
        "cluster": describe(cluster),
        "jobs": describe(jobs),
    });
    (status, Json(body)).into_response()
}

async fn probe_cluster(cluster: &ClusterEndpoint) -> Result<(), String> {
    match &cluster.rest {
        Some(scheduler) => scheduler.check().await,
        None => Ok(()),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus metrics", body = String, content_type = "text/plain"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> String {
    match state.metadata.jobs_by_status().await {
        Ok(counts) => {
            for (status, count) in counts {
                metrics::gauge!("kalla_jobs", "status" => status).set(count as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot count jobs by status for /metrics"),
    }
    let pool = state.metadata.pool();
    metrics::gauge!("kalla_metadata_pool_connections").set(pool.size() as f64);
    metrics::gauge!("kalla_metadata_pool_idle_connections").set(pool.num_idle() as f64);
    for stats in PoolRegistry::global().stats() {
        metrics::gauge!("kalla_source_pool_connections", "source" => stats.source.clone())
            .set(stats.size as f64);
        metrics::gauge!("kalla_source_pool_idle_connections", "source" => stats.source)
            .set(stats.idle as f64);
    }
    state.metrics.render()
}
