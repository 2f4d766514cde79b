//! `/api/connections`, `/api/information_schema` and `/api/query`: databases registered once,
//! their tables and parquet cache, and SQL over them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiJson, ApiPath, ApiQuery, Errors, codes};
use super::secrets::UpdateCredentials;
use super::{ApiError, AppState, Created, created};
use crate::cache::Refreshed;
use crate::connections::{ColumnInfo, Discovery, Health, shown_config};
use crate::metadata::{By, Kind, Registration, TableRecord};
use crate::query::{QueryRequest, QueryResult};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    name: String,
    source_type: String,
    /// `host`, `port`, `database`, `user`, `password`, … (see the README).
    #[schema(value_type = Object)]
    config: Value,
    /// The name of a stored secret holding the password (instead of one in `config`).
    secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    id: String,
    name: String,
    source_type: String,
    /// The settings, with `***` for a stored password.
    config: Value,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    table_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_table_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    discovery: Option<Discovery>,
}

impl From<Registration> for ConnectionView {
    fn from(record: Registration) -> Self {
        Self {
            config: shown_config(&record),
            id: record.id,
            name: record.name,
            source_type: record.engine,
            created_at: record.created_at,
            updated_at: record.updated_at,
            table_count: None,
            cached_table_count: None,
            discovery: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TableView {
    #[serde(flatten)]
    record: TableRecord,
    columns: Vec<ColumnInfo>,
}

impl From<TableRecord> for TableView {
    fn from(record: TableRecord) -> Self {
        Self {
            columns: serde_json::from_str(&record.arrow_schema_json).unwrap_or_default(),
            record,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/connections",
    tag = "connections",
    request_body = CreateConnection,
    responses(
        (status = 201, description = "The connection (password shown as `***`) and how discovery went", body = ConnectionView),
        Errors<(
            codes::InvalidRequest,
            codes::InvalidName,
            codes::InvalidConnection,
            codes::NotAllowed,
            codes::NotFound,
            codes::Conflict,
        )>,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateConnection>,
) -> Result<Created<ConnectionView>, ApiError> {
    let (record, discovery) = state
        .connections
        .create(
            &request.name,
            &request.source_type,
            &request.config,
            request.secret.as_deref(),
        )
        .await?;
    let location = format!("/api/connections/{}", record.id);
    let mut view = ConnectionView::from(record);
    view.discovery = Some(discovery);
    Ok(created(StatusCode::CREATED, location, view))
}

#[utoipa::path(
    get,
    path = "/api/connections",
    tag = "connections",
    responses(
        (status = 200, description = "Every connection", body = Vec<ConnectionView>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    let records = state.registry.list(Kind::Connection).await?;
    Ok(Json(records.into_iter().map(ConnectionView::from).collect()))
}

#[utoipa::path(
    get,
    path = "/api/connections/{id}",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)")),
    responses(
        (status = 200, description = "The connection with its table counts", body = ConnectionView),
        Errors<codes::NotFound>,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let record = state.registry.get(Kind::Connection, By::Id(&id)).await?;
    let tables = state.metadata.list_tables(Some(&id)).await?;
    let mut view = ConnectionView::from(record);
    view.table_count = Some(tables.len());
    view.cached_table_count = Some(tables.iter().filter(|t| t.cache_url.is_some()).count());
    Ok(Json(view))
}

#[utoipa::path(
    patch,
    path = "/api/connections/{id}",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)")),
    request_body = UpdateCredentials,
    responses(
        (status = 200, description = "The connection, now opened with the new credentials", body = ConnectionView),
        Errors<(codes::InvalidRequest, codes::NotFound)>,
    )
)]
pub async fn update_credentials(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateCredentials>,
) -> Result<Json<ConnectionView>, ApiError> {
    let record = state
        .registry
        .set_credentials(Kind::Connection, By::Id(&id), request.credentials()?)
        .await?;
    Ok(Json(record.into()))
}

#[utoipa::path(
    delete,
    path = "/api/connections/{id}",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)")),
    responses(
        (status = 204, description = "Deleted, with its tables and cache"),
        Errors<codes::NotFound>,
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.delete(Kind::Connection, By::Id(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/connections/{id}/health",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)")),
    responses(
        (status = 200, description = "Whether the database answers, and how fast", body = Health),
        Errors<(codes::NotFound, codes::SecretUnreadable)>,
    )
)]
pub async fn health(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Health>, ApiError> {
    let record = state.registry.get(Kind::Connection, By::Id(&id)).await?;
    Ok(Json(state.connections.health(&record).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefreshOptions {
    /// Also refresh the data of every table that has a cache.
    #[serde(default)]
    data: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionRefreshed {
    #[schema(value_type = Object)]
    discovery: Discovery,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refreshed: Vec<Refreshed>,
}

#[utoipa::path(
    post,
    path = "/api/connections/{id}/refresh",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)"), RefreshOptions),
    responses(
        (status = 200, description = "Tables discovered again; with `data=true` every cached table refreshed", body = ConnectionRefreshed),
        Errors<(codes::NotFound, codes::RefreshRunning, codes::RefreshFailed, codes::SecretUnreadable)>,
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(options): ApiQuery<RefreshOptions>,
) -> Result<Json<ConnectionRefreshed>, ApiError> {
    let record = state.registry.get(Kind::Connection, By::Id(&id)).await?;
    let discovery = state.connections.discover(&record).await;
    let mut refreshed = Vec::new();
    if options.data {
        for table in state.metadata.list_tables(Some(&id)).await? {
            if table.cache_url.is_some() {
                refreshed.push(state.cache.refresh(&record, &table).await?);
            }
        }
    }
    Ok(Json(ConnectionRefreshed { discovery, refreshed }))
}

#[utoipa::path(
    post,
    path = "/api/connections/{id}/tables/{schema}/{table}/refresh",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)"), ("schema" = String, Path, description = "The table's schema"), ("table" = String, Path, description = "The table's name")),
    responses(
        (status = 200, description = "A new cache version, published once completely written", body = Refreshed),
        Errors<(codes::NotFound, codes::RefreshRunning, codes::RefreshFailed, codes::SecretUnreadable)>,
    )
)]
pub async fn refresh_table(
    State(state): State<AppState>,
    ApiPath((id, schema, table)): ApiPath<(String, String, String)>,
) -> Result<Json<Refreshed>, ApiError> {
    let record = state.registry.get(Kind::Connection, By::Id(&id)).await?;
    let table = state.metadata.table(&id, &schema, &table).await?;
    Ok(Json(state.cache.refresh(&record, &table).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Purged {
    purged_tables: usize,
    /// Files are deleted after this many seconds, so running queries can finish.
    delete_after_secs: u64,
}

#[utoipa::path(
    delete,
    path = "/api/connections/{id}/cache",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)")),
    responses(
        (status = 200, description = "Every table's cache dropped", body = Purged),
        Errors<codes::NotFound>,
    )
)]
pub async fn purge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Purged>, ApiError> {
    state.registry.get(Kind::Connection, By::Id(&id)).await?;
    let mut purged_tables = 0;
    for table in state.metadata.list_tables(Some(&id)).await? {
        if state
            .metadata
            .purge_table_cache(&table.id, state.cache.grace())
            .await?
        {
            purged_tables += 1;
        }
    }
    Ok(Json(Purged {
        purged_tables,
        delete_after_secs: state.cache.grace().as_secs(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/connections/{id}/tables/{schema}/{table}/cache",
    tag = "connections",
    params(("id" = String, Path, description = "The connection id (`conn_…`)"), ("schema" = String, Path, description = "The table's schema"), ("table" = String, Path, description = "The table's name")),
    responses(
        (status = 200, description = "The table's cache dropped", body = Purged),
        Errors<codes::NotFound>,
    )
)]
pub async fn purge_table(
    State(state): State<AppState>,
    ApiPath((id, schema, table)): ApiPath<(String, String, String)>,
) -> Result<Json<Purged>, ApiError> {
    let table = state.metadata.table(&id, &schema, &table).await?;
    let purged = state
        .metadata
        .purge_table_cache(&table.id, state.cache.grace())
        .await?;
    Ok(Json(Purged {
        purged_tables: usize::from(purged),
        delete_after_secs: state.cache.grace().as_secs(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CatalogFilter {
    connection_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/information_schema",
    tag = "connections",
    params(CatalogFilter),
    responses(
        (status = 200, description = "Every discovered table with its columns", body = Vec<TableView>),
        Errors<codes::NotFound>,
    )
)]
pub async fn information_schema(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<CatalogFilter>,
) -> Result<Json<Vec<TableView>>, ApiError> {
    if let Some(id) = &filter.connection_id {
        state.registry.get(Kind::Connection, By::Id(id)).await?;
    }
    let tables = state
        .metadata
        .list_tables(filter.connection_id.as_deref())
        .await?;
    Ok(Json(tables.into_iter().map(TableView::from).collect()))
}

#[utoipa::path(
    post,
    path = "/api/query",
    tag = "query",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The first rows of the result", body = QueryResult),
        Errors<(
            codes::InvalidLimit,
            codes::InvalidSql,
            codes::InvalidParams,
            codes::UnknownTable,
            codes::NotAllowed,
            codes::RefreshRunning,
            codes::QueryFailed,
            codes::RefreshFailed,
            codes::SecretUnreadable,
        )>,
    )
)]
pub async fn query(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Json<QueryResult>, ApiError> {
    Ok(Json(state.queries.run(&request).await?))
}
