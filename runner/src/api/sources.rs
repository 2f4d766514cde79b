//! `/api/sources`: register, list, show and delete sources, and preview one with conditions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kalla_core::preview::{Condition, PreviewColumn};
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiPath, Errors, codes};
use super::secrets::UpdateCredentials;
use super::{ApiError, AppState, Created, created};
use crate::metadata::{By, Kind, Registration};
use crate::registry::shown_location;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    alias: String,
    uri: String,
    source_type: Option<String>,
    /// The name of a stored secret holding the password (instead of one in the URI).
    secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    id: String,
    alias: String,
    /// Redacted: `***` stands where a password was.
    uri: String,
    source_type: String,
    created_at: String,
    updated_at: String,
}

impl From<Registration> for SourceView {
    fn from(record: Registration) -> Self {
        Self {
            uri: shown_location(&record),
            id: record.id,
            alias: record.name,
            source_type: record.engine,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/sources",
    tag = "sources",
    request_body = CreateSource,
    responses(
        (status = 201, description = "The source, its URI redacted", body = SourceView),
        Errors<(
            codes::InvalidRequest,
            codes::InvalidAlias,
            codes::InvalidSource,
            codes::NotAllowed,
            codes::NotFound,
            codes::Conflict,
        )>,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateSource>,
) -> Result<Created<SourceView>, ApiError> {
    let record = state
        .sources
        .register(
            &request.alias,
            &request.uri,
            request.source_type.as_deref(),
            request.secret.as_deref(),
        )
        .await?;
    let location = format!("/api/sources/{}", record.name);
    Ok(created(StatusCode::CREATED, location, record.into()))
}

#[utoipa::path(
    get,
    path = "/api/sources",
    tag = "sources",
    responses(
        (status = 200, description = "Every source", body = Vec<SourceView>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<SourceView>>, ApiError> {
    let records = state.registry.list(Kind::Source).await?;
    Ok(Json(records.into_iter().map(SourceView::from).collect()))
}

#[utoipa::path(
    get,
    path = "/api/sources/{alias}",
    tag = "sources",
    params(("alias" = String, Path, description = "The source alias")),
    responses(
        (status = 200, description = "The source", body = SourceView),
        Errors<codes::NotFound>,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(alias): ApiPath<String>,
) -> Result<Json<SourceView>, ApiError> {
    Ok(Json(
        state.registry.get(Kind::Source, By::Name(&alias)).await?.into(),
    ))
}

#[utoipa::path(
    patch,
    path = "/api/sources/{alias}",
    tag = "sources",
    params(("alias" = String, Path, description = "The source alias")),
    request_body = UpdateCredentials,
    responses(
        (status = 200, description = "The source, now read with the new credentials", body = SourceView),
        Errors<(codes::InvalidRequest, codes::NotFound)>,
    )
)]
pub async fn update_credentials(
    State(state): State<AppState>,
    ApiPath(alias): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateCredentials>,
) -> Result<Json<SourceView>, ApiError> {
    let record = state
        .registry
        .set_credentials(Kind::Source, By::Name(&alias), request.credentials()?)
        .await?;
    Ok(Json(record.into()))
}

#[utoipa::path(
    delete,
    path = "/api/sources/{alias}",
    tag = "sources",
    params(("alias" = String, Path, description = "The source alias")),
    responses(
        (status = 204, description = "Deleted"),
        Errors<codes::NotFound>,
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(alias): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.delete(Kind::Source, By::Name(&alias)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadScoped {
    #[serde(default)]
    conditions: Vec<Condition>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoadScopedView {
    alias: String,
    columns: Vec<PreviewColumn>,
    rows: Vec<Vec<Option<String>>>,
    /// Rows matching the conditions; a lower bound when `total_rows_exact` is false.
    total_rows: u64,
    total_rows_exact: bool,
    preview_rows: usize,
}

#[utoipa::path(
    post,
    path = "/api/sources/{alias}/load-scoped",
    tag = "sources",
    params(("alias" = String, Path, description = "The source alias")),
    request_body = LoadScoped,
    responses(
        (status = 200, description = "The matching rows, read from the source's own pool", body = LoadScopedView),
        Errors<(
            codes::InvalidLimit,
            codes::UnknownColumn,
            codes::InvalidCondition,
            codes::NotFound,
            codes::NotAllowed,
            codes::SourceUnavailable,
            codes::SecretUnreadable,
        )>,
    )
)]
pub async fn load_scoped(
    State(state): State<AppState>,
    ApiPath(alias): ApiPath<String>,
    ApiJson(request): ApiJson<LoadScoped>,
) -> Result<Json<LoadScopedView>, ApiError> {
    let preview = state
        .sources
        .preview(&alias, &request.conditions, request.limit)
        .await?;
    Ok(Json(LoadScopedView {
        alias,
        preview_rows: preview.rows.len(),
        columns: preview.columns,
        rows: preview.rows,
        total_rows: preview.total_rows,
        total_rows_exact: preview.total_rows_exact,
    }))
}
