//! The plaintext probe server: Kubernetes' probes and Prometheus reach the scheduler's health and
//! metrics here, and nothing else of it, whatever the cluster plane's TLS.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

/// The paths answered, each by Ballista's own handler behind the loopback `service` address.
const PATHS: [&str; 3] = ["/healthz", "/readyz", "/api/metrics"];

#[derive(Clone)]
struct Backend {
    http: reqwest::Client,
    service: SocketAddr,
}

/// Serves [`PATHS`] on `listener` until the process ends.
pub async fn serve(listener: TcpListener, service: SocketAddr) -> std::io::Result<()> {
    let backend = Backend {
        // Straight to loopback, whatever proxy the environment names.
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds"),
        service,
    };
    let router = PATHS
        .iter()
        .fold(Router::new(), |router, path| router.route(path, get(forward)))
        .with_state(backend);
    axum::serve(listener, router).await
}

async fn forward(State(backend): State<Backend>, uri: Uri) -> Response {
    let url = format!("http://{}{}", backend.service, uri.path());
    let answer = match backend.http.get(&url).send().await {
        Ok(answer) => answer,
        Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type
        && let Ok(value) = axum::http::HeaderValue::from_bytes(content_type.as_bytes())
    {
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, value);
    }
    response
}
