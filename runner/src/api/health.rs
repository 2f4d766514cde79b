//! Liveness, readiness and the metrics endpoint.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalla_core::pool::PoolRegistry;
use serde_json::json;

use super::AppState;
use crate::cluster::ClusterEndpoint;

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the metadata DB answers, the cluster is reachable and the job queue has room;
/// 503 says which is not.
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

pub async fn metrics(State(state): State<AppState>) -> String {
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
