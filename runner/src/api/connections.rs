//! `/api/connections`, `/api/information_schema` and `/api/query`: databases registered once,
//! their tables and parquet cache, and SQL over them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiJson, ApiQuery};
use super::{ApiError, AppState};
use crate::cache::Refreshed;
use crate::connections::{ColumnInfo, Discovery, Health, display_config};
use crate::metadata::{ConnectionRecord, TableRecord};
use crate::query::{QueryRequest, QueryResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    name: String,
    source_type: String,
    config: Value,
}

#[derive(Debug, Serialize)]
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
    discovery: Option<Discovery>,
}

impl From<ConnectionRecord> for ConnectionView {
    fn from(record: ConnectionRecord) -> Self {
        Self {
            config: display_config(&record),
            id: record.id,
            name: record.name,
            source_type: record.source_type,
            created_at: record.created_at,
            updated_at: record.updated_at,
            table_count: None,
            cached_table_count: None,
            discovery: None,
        }
    }
}

#[derive(Debug, Serialize)]
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

pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateConnection>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let (record, discovery) = state
        .connections
        .create(&request.name, &request.source_type, &request.config)
        .await?;
    let mut view = ConnectionView::from(record);
    view.discovery = Some(discovery);
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    let records = state.connections.list().await?;
    Ok(Json(records.into_iter().map(ConnectionView::from).collect()))
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let record = state.connections.get(&id).await?;
    let tables = state.metadata.list_tables(Some(&id)).await?;
    let mut view = ConnectionView::from(record);
    view.table_count = Some(tables.len());
    view.cached_table_count = Some(tables.iter().filter(|t| t.cache_url.is_some()).count());
    Ok(Json(view))
}

pub async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.connections.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn health(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Health>, ApiError> {
    let record = state.connections.get(&id).await?;
    Ok(Json(state.connections.health(&record).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshOptions {
    /// Also refresh the data of every table that has a cache.
    #[serde(default)]
    data: bool,
}

#[derive(Debug, Serialize)]
pub struct ConnectionRefreshed {
    discovery: Discovery,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refreshed: Vec<Refreshed>,
}

pub async fn refresh(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(options): ApiQuery<RefreshOptions>,
) -> Result<Json<ConnectionRefreshed>, ApiError> {
    let record = state.connections.get(&id).await?;
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

pub async fn refresh_table(
    State(state): State<AppState>,
    Path((id, schema, table)): Path<(String, String, String)>,
) -> Result<Json<Refreshed>, ApiError> {
    let record = state.connections.get(&id).await?;
    let table = state.metadata.table(&id, &schema, &table).await?;
    Ok(Json(state.cache.refresh(&record, &table).await?))
}

#[derive(Debug, Serialize)]
pub struct Purged {
    purged_tables: usize,
    /// Files are deleted after this many seconds, so running queries can finish.
    delete_after_secs: u64,
}

pub async fn purge(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Purged>, ApiError> {
    state.connections.get(&id).await?;
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

pub async fn purge_table(
    State(state): State<AppState>,
    Path((id, schema, table)): Path<(String, String, String)>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFilter {
    connection_id: Option<String>,
}

pub async fn information_schema(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<CatalogFilter>,
) -> Result<Json<Vec<TableView>>, ApiError> {
    if let Some(id) = &filter.connection_id {
        state.connections.get(id).await?;
    }
    let tables = state
        .metadata
        .list_tables(filter.connection_id.as_deref())
        .await?;
    Ok(Json(tables.into_iter().map(TableView::from).collect()))
}

pub async fn query(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Json<QueryResult>, ApiError> {
    Ok(Json(state.queries.run(&request).await?))
}
