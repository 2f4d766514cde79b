//! The audit log: every change, results download and refused request recorded with who made it
//! (the token's name), the route, the resource, the time and the outcome; `GET /api/audit` reads
//! it back. Bodies, query strings and headers are never recorded, so no secret is.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;

use super::error::{ApiQuery, Errors, checked_limit, codes};
use super::openapi::matched_route;
use super::{ApiError, AppState};
use crate::access::Principal;
use crate::metadata::{AuditEntry, AuditFilter, NewAuditEntry};

/// Most entries one page returns.
const MAX_PAGE: i64 = 1000;

/// The route that downloads a job's results: read-only, but recorded.
const RESULTS_ROUTE: &str = "/api/jobs/{id}/results/{output}";

/// Records the request if it changed something, downloaded results or was refused. A failure
/// to record is logged, and does not change the answer.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(route) = matched_route(&request) else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    // Decoded, as the route reads its parameters: `night_ops`, however a client escaped it.
    let path = percent_encoding::percent_decode_str(request.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !route.starts_with("/api/") || !is_recorded(&method, &route, status) {
        return response;
    }
    let principal = response.extensions().get::<Principal>();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok());
    let resource = resource(&route, &path, location);
    let entry = NewAuditEntry {
        token_name: principal.map(|p| p.name.as_str()),
        method: method.as_str(),
        route: &route,
        path: &path,
        resource: resource.as_deref(),
        status: status.as_u16(),
        outcome: outcome(status),
    };
    if let Err(error) = state.metadata.record_audit(entry).await {
        tracing::error!(%method, %route, %error, "cannot record the request in the audit log");
    }
    response
}

/// Changes, results downloads and refusals; not other reads, nor CORS preflights.
fn is_recorded(method: &Method, route: &str, status: StatusCode) -> bool {
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return true;
    }
    match *method {
        Method::GET | Method::HEAD => route == RESULTS_ROUTE,
        Method::OPTIONS => false,
        _ => true,
    }
}

/// What the audit log calls an answer of `status`.
pub fn outcome(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "refused",
        status if status.is_success() => "succeeded",
        _ => "failed",
    }
}

/// What the request was about: the path's parameters (`conn_…/public/orders`), or for a create,
/// the last segment of the `Location` it answered with.
fn resource(route: &str, path: &str, location: Option<&str>) -> Option<String> {
    let parameters: Vec<&str> = route
        .split('/')
        .zip(path.split('/'))
        .filter(|(template, _)| template.starts_with('{'))
        .map(|(_, value)| value)
        .collect();
    if !parameters.is_empty() {
        return Some(parameters.join("/"));
    }
    location
        .and_then(|location| location.rsplit('/').next())
        .map(str::to_string)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries of this token.
    token: Option<String>,
    /// Only `succeeded`, `failed` or `refused` entries.
    outcome: Option<String>,
    /// Only entries of this route template, e.g. `/api/sources/{alias}`.
    route: Option<String>,
    /// The next page: entries older than the one with this id (the last of the previous page).
    before: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries matching every filter, newest first", body = Vec<AuditEntry>),
        Errors<codes::InvalidLimit>,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = checked_limit(query.limit, 100, MAX_PAGE)?;
    let filter = AuditFilter {
        token_name: query.token.as_deref(),
        outcome: query.outcome.as_deref(),
        route: query.route.as_deref(),
        before: query.before.as_deref(),
        limit,
    };
    Ok(Json(state.metadata.audit_entries(&filter).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_downloads_and_refusals_are_recorded() {
        let ok = StatusCode::OK;
        assert!(is_recorded(&Method::POST, "/api/sources", StatusCode::CREATED));
        assert!(is_recorded(
            &Method::DELETE,
            "/api/sources/{alias}",
            StatusCode::NOT_FOUND
        ));
        assert!(is_recorded(&Method::GET, RESULTS_ROUTE, ok));
        assert!(is_recorded(
            &Method::GET,
            "/api/sources",
            StatusCode::UNAUTHORIZED
        ));
        assert!(is_recorded(&Method::GET, "/api/audit", StatusCode::FORBIDDEN));
        assert!(!is_recorded(&Method::GET, "/api/sources", ok));
        assert!(!is_recorded(&Method::OPTIONS, "/api/sources", ok));
        assert_eq!(outcome(StatusCode::FORBIDDEN), "refused");
        assert_eq!(outcome(StatusCode::NO_CONTENT), "succeeded");
        assert_eq!(outcome(StatusCode::BAD_REQUEST), "failed");
    }

    #[test]
    fn the_resource_is_the_path_s_parameters_or_what_was_created() {
        let route = "/api/connections/{id}/tables/{schema}/{table}/refresh";
        let path = "/api/connections/conn_1/tables/public/orders/refresh";
        assert_eq!(
            resource(route, path, None).as_deref(),
            Some("conn_1/public/orders")
        );
        let created = resource("/api/sources", "/api/sources", Some("/api/sources/invoices"));
        assert_eq!(created.as_deref(), Some("invoices"));
        assert_eq!(resource("/api/query", "/api/query", None), None);
    }
}
