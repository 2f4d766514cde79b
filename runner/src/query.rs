//! SQL on the cluster over connection tables (`connection.schema.table`), sources (by alias)
//! and `information_schema`.
//!
//! Only the tables a statement names are resolved: a connection table is read from its current
//! cache version (cached first if it has none) or, with `live`, by its engine's scan.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::Statement;
use kalla_core::cache::version_table;
use kalla_core::ident::{Ident, QualifiedName};
use kalla_core::preview::PreviewColumn;
use kalla_core::preview::text_rows;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cache::{Cache, CacheError};
use crate::cluster::ClusterEndpoint;
use crate::connections::{ColumnInfo, ConnectionError, Connections};
use crate::metadata::{MetadataDb, MetadataError};
use crate::sources::{SourceError, Sources};

/// Rows a query returns when the request names no limit.
pub const DEFAULT_QUERY_ROWS: usize = 1000;
/// Most rows `/api/query` returns; larger results are for jobs.
pub const MAX_QUERY_ROWS: usize = 100_000;

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("limit must be between 1 and {MAX_QUERY_ROWS}, got {0}")]
    InvalidLimit(usize),
    #[error("{0}")]
    InvalidSql(String),
    #[error(
        "unknown table {0}: name a connection's table as connection.schema.table, or a source by its alias"
    )]
    UnknownTable(String),
    #[error("the query failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub sql: String,
    pub limit: Option<usize>,
    /// Read uncached connection tables straight from their database instead of caching them first.
    #[serde(default)]
    pub live: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryResult {
    pub columns: Vec<PreviewColumn>,
    /// Values in their text form; `null` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    pub row_count: usize,
    /// More rows matched than `limit`; only the first `limit` are here.
    pub truncated: bool,
    pub duration_ms: u64,
    /// How each named table was read.
    pub tables: Vec<TableRead>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TableRead {
    pub name: String,
    /// `cache`, `live` (read from the database by its engine), `source` or `catalog`.
    pub read: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Clone)]
pub struct Queries {
    db: MetadataDb,
    connections: Connections,
    sources: Sources,
    cache: Cache,
    cluster: ClusterEndpoint,
}

impl Queries {
    pub fn new(
        db: MetadataDb,
        connections: Connections,
        sources: Sources,
        cache: Cache,
        cluster: ClusterEndpoint,
    ) -> Self {
        Self {
            db,
            connections,
            sources,
            cache,
            cluster,
        }
    }

    pub async fn run(&self, request: &QueryRequest) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let limit = match request.limit {
            None => DEFAULT_QUERY_ROWS,
            Some(limit) if (1..=MAX_QUERY_ROWS).contains(&limit) => limit,
            Some(limit) => return Err(QueryError::InvalidLimit(limit)),
        };
        let (frame, tables) = self.prepare(&request.sql, request.live).await?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame
            .limit(0, Some(limit + 1))
            .map_err(|e| QueryError::InvalidSql(e.to_string()))?
            .collect()
            .await
            .map_err(|e| QueryError::Failed(e.to_string()))?;
        let mut rows = text_rows(&batches).map_err(|e| QueryError::Failed(e.to_string()))?;
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        Ok(QueryResult {
            columns: schema
                .fields()
                .iter()
                .map(|f| PreviewColumn::from_field(f))
                .collect(),
            row_count: rows.len(),
            rows,
            truncated,
            duration_ms: started.elapsed().as_millis() as u64,
            tables,
        })
    }

    /// The statement `sql` planned on a cluster session with the tables it names registered
    /// (see [`Queries::run`]), and how each is read.
    pub async fn prepare(&self, sql: &str, live: bool) -> Result<(DataFrame, Vec<TableRead>), QueryError> {
        let mut references = table_references(sql)?;
        references.sort_by_key(|r| r.to_string());
        let catalog_only = !references.is_empty() && references.iter().all(is_information_schema);
        let (session, tables) = if catalog_only {
            (self.catalog_session().await?, vec![catalog_read()])
        } else {
            if references.iter().any(is_information_schema) {
                return Err(QueryError::InvalidSql(
                    "information_schema cannot be joined with data tables; query it on its own".into(),
                ));
            }
            let session = self.cluster.query_session().await;
            let mut tables = Vec::with_capacity(references.len());
            for reference in &references {
                tables.push(self.register(&session, reference, live).await?);
            }
            (session, tables)
        };
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = session
            .sql_with_options(sql, options)
            .await
            .map_err(|e| QueryError::InvalidSql(e.to_string()))?;
        Ok((frame, tables))
    }

    /// The source `name` (an alias, or `connection.schema.table`) registered in `session` and
    /// read whole. With `live`, an uncached connection table is read from its database (its schema
    /// is then known without caching it). A source already registered in `session` (a recipe
    /// may read one source on both sides) is read as registered.
    pub async fn read_source(
        &self,
        session: &SessionContext,
        name: &str,
        live: bool,
    ) -> Result<DataFrame, QueryError> {
        let parts: Vec<&str> = name.split('.').collect();
        let reference = match parts.as_slice() {
            [table] => TableReference::bare(*table),
            [catalog, schema, table] => TableReference::full(*catalog, *schema, *table),
            _ => return Err(QueryError::UnknownTable(name.to_string())),
        };
        // `table_exist` errs when the table's catalog or schema is not registered either.
        let registered = session.table_exist(reference.clone()).unwrap_or(false);
        if !registered {
            self.register(session, &reference, live).await?;
        }
        session
            .table(reference)
            .await
            .map_err(|e| QueryError::Failed(e.to_string()))
    }

    /// Makes `reference` readable in `session` and says how it will be read.
    async fn register(
        &self,
        session: &SessionContext,
        reference: &TableReference,
        live: bool,
    ) -> Result<TableRead, QueryError> {
        let unknown = || QueryError::UnknownTable(reference.to_string());
        match reference {
            TableReference::Full {
                catalog,
                schema,
                table,
            } => {
                let connection = self.db.connection_by_name(catalog).await?.ok_or_else(unknown)?;
                let record = match self.db.table(&connection.id, schema, table).await {
                    Err(MetadataError::NotFound { .. }) => return Err(unknown()),
                    other => other?,
                };
                let (provider, read) = if live && record.cache_url.is_none() {
                    let name = qualified(schema, table).ok_or_else(unknown)?;
                    let provider = self
                        .connections
                        .table_location(&connection, &name)
                        .await?
                        .table(session, self.sources.context())
                        .await
                        .map_err(|e| QueryError::Failed(e.to_string()))?;
                    (provider, live_read(reference))
                } else {
                    let cached = self.cache.ensure_cached(&connection, &record).await?;
                    let url = cached.cache_url.clone().unwrap_or_default();
                    let provider = version_table(session, &url)
                        .await
                        .map_err(|e| QueryError::Failed(e.to_string()))?;
                    let read = TableRead {
                        name: reference.to_string(),
                        read: "cache",
                        version: cached.cache_version,
                    };
                    (provider, read)
                };
                register_full(session, catalog, schema, table, provider)?;
                Ok(read)
            }
            TableReference::Bare { table } => {
                let source = match self.sources.locate(table).await {
                    Err(SourceError::Metadata(MetadataError::NotFound { .. })) => return Err(unknown()),
                    other => other?,
                };
                let provider = source
                    .table(session, self.sources.context())
                    .await
                    .map_err(|e| QueryError::Failed(e.to_string()))?;
                session
                    .register_table(table.as_ref(), provider)
                    .map_err(|e| QueryError::Failed(e.to_string()))?;
                Ok(TableRead {
                    name: table.to_string(),
                    read: "source",
                    version: None,
                })
            }
            TableReference::Partial { .. } => Err(unknown()),
        }
    }

    /// A local session whose `information_schema` lists every connection's discovered tables.
    async fn catalog_session(&self) -> Result<SessionContext, QueryError> {
        let session = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        let connections: std::collections::HashMap<String, String> = self
            .db
            .list_connections()
            .await?
            .into_iter()
            .map(|c| (c.id, c.name))
            .collect();
        for table in self.db.list_tables(None).await? {
            let Some(connection) = connections.get(&table.connection_id) else {
                continue;
            };
            let columns: Vec<ColumnInfo> = serde_json::from_str(&table.arrow_schema_json).unwrap_or_default();
            let fields: Vec<Field> = columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.parse().unwrap_or(DataType::Utf8), c.nullable))
                .collect();
            let provider = Arc::new(EmptyTable::new(Arc::new(Schema::new(fields))));
            register_full(
                &session,
                connection,
                &table.schema_name,
                &table.table_name,
                provider,
            )?;
        }
        Ok(session)
    }
}

/// The tables `sql` names (deduplicated, without CTE names), or why it cannot be parsed.
pub(crate) fn table_references(sql: &str) -> Result<Vec<TableReference>, QueryError> {
    let invalid = |e: DataFusionError| QueryError::InvalidSql(e.to_string());
    let mut statements = DFParser::parse_sql(sql).map_err(invalid)?;
    let (Some(statement), None) = (statements.pop_front(), statements.pop_front()) else {
        return Err(QueryError::InvalidSql("send exactly one SQL statement".into()));
    };
    let is_query = matches!(&statement, DFStatement::Statement(s) if matches!(**s, Statement::Query(_)));
    if !is_query {
        return Err(QueryError::InvalidSql(
            "only queries (SELECT …) run here: DDL, DML and other statements are not supported".into(),
        ));
    }
    let (tables, _ctes) = resolve_table_references(&statement, true).map_err(invalid)?;
    Ok(tables)
}

fn is_information_schema(reference: &TableReference) -> bool {
    reference.schema() == Some("information_schema")
}

fn catalog_read() -> TableRead {
    TableRead {
        name: "information_schema".into(),
        read: "catalog",
        version: None,
    }
}

fn live_read(reference: &TableReference) -> TableRead {
    TableRead {
        name: reference.to_string(),
        read: "live",
        version: None,
    }
}

fn qualified(schema: &str, table: &str) -> Option<QualifiedName> {
    Some(QualifiedName {
        schema: Ident::new(schema).ok()?,
        name: Ident::new(table).ok()?,
    })
}

/// Registers `provider` as `catalog.schema.table`, creating the catalog and schema as needed.
fn register_full(
    session: &SessionContext,
    catalog: &str,
    schema: &str,
    table: &str,
    provider: Arc<dyn TableProvider>,
) -> Result<(), QueryError> {
    let failed = |e: datafusion::error::DataFusionError| QueryError::Failed(e.to_string());
    let catalog_provider = match session.catalog(catalog) {
        Some(existing) => existing,
        None => {
            let created = Arc::new(MemoryCatalogProvider::new());
            session.register_catalog(catalog, created.clone());
            created
        }
    };
    let schema_provider = match catalog_provider.schema(schema) {
        Some(existing) => existing,
        None => {
            let created: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            catalog_provider
                .register_schema(schema, created.clone())
                .map_err(failed)?;
            created
        }
    };
    schema_provider
        .register_table(table.to_string(), provider)
        .map_err(failed)?;
    Ok(())
}
