//! Names to tables: a source's alias, a connection's `connection.schema.table` or a job's output
//! `results.<job_id>.<output>` (`results.latest_<recipe>.<output>`: the recipe's newest succeeded
//! run) resolved to a table of a cluster session, and `information_schema` over every discovered
//! table and every recipe's latest outputs.
//!
//! Only the tables a statement names are resolved: a connection table is read from its current
//! cache version (cached first if it has none) or, with `live`, by its engine's scan; a source is
//! read by its engine; a job output from its parquet files.

use std::collections::HashMap;
use std::sync::Arc;

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
use kalla_core::cache::{output_table, version_table};
use kalla_core::ident::{Ident, QualifiedName};
use kalla_core::recon::ParamValues;
use kalla_core::recon::params::{ParamError, substitute_location};
use kalla_core::source::EngineError;
use serde::Serialize;
use thiserror::Error;

use crate::cache::{Cache, CacheError};
use crate::cluster::ClusterEndpoint;
use crate::connections::ColumnInfo;
use crate::job_outputs::{JobOutputs, LATEST_PREFIX, OutputError, outputs_of};
use crate::metadata::{By, Kind, MetadataDb, MetadataError};
use crate::registry::{Registry, RegistryError, shown_location};

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("{0}")]
    InvalidSql(String),
    #[error(
        "unknown table {0}: name a connection's table as connection.schema.table, or a source by its alias"
    )]
    UnknownTable(String),
    #[error("the query failed: {0}")]
    Failed(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("source {source_alias}: {error}")]
    Params { source_alias: String, error: ParamError },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// The catalog of job outputs; no connection may take its name.
pub const RESULTS_CATALOG: &str = "results";

/// A table the catalog lists: a connection's discovered table, or a recipe's latest output.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    pub catalog: String,
    pub schema: String,
    pub table: String,
    pub columns: Schema,
}

/// A parameter error in the location of the source `alias`.
fn params_of(alias: &str) -> impl FnOnce(ParamError) -> CatalogError + '_ {
    move |error| CatalogError::Params {
        source_alias: alias.to_string(),
        error,
    }
}

impl From<EngineError> for CatalogError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::NotAllowed(message) => Self::NotAllowed(message),
            other => Self::Failed(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TableRead {
    pub name: String,
    /// `cache`, `live` (read from the database by its engine), `source`, `results` (a job's
    /// output) or `catalog`.
    pub read: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Resolves the names statements and recipes use; holds no state of its own.
#[derive(Clone)]
pub struct Catalog {
    db: MetadataDb,
    registry: Registry,
    cache: Cache,
    outputs: JobOutputs,
    cluster: ClusterEndpoint,
}

impl Catalog {
    pub fn new(
        db: MetadataDb,
        registry: Registry,
        cache: Cache,
        outputs: JobOutputs,
        cluster: ClusterEndpoint,
    ) -> Self {
        Self {
            db,
            registry,
            cache,
            outputs,
            cluster,
        }
    }

    /// The statement `sql` planned on a cluster session with the tables it names registered
    /// (see [`crate::query::Queries::run`]), and how each is read.
    pub async fn plan(&self, sql: &str, live: bool) -> Result<(DataFrame, Vec<TableRead>), CatalogError> {
        let mut references = table_references(sql)?;
        references.sort_by_key(|r| r.to_string());
        let catalog_only = !references.is_empty() && references.iter().all(is_information_schema);
        let (session, tables) = if catalog_only {
            (self.information_schema().await?, vec![catalog_read()])
        } else {
            if references.iter().any(is_information_schema) {
                return Err(CatalogError::InvalidSql(
                    "information_schema cannot be joined with data tables; query it on its own".into(),
                ));
            }
            let session = self.cluster.query_session().await;
            let mut tables = Vec::with_capacity(references.len());
            for reference in &references {
                tables.push(
                    self.resolve(&session, reference, live, &ParamValues::new())
                        .await?,
                );
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
            .map_err(|e| CatalogError::InvalidSql(e.to_string()))?;
        Ok((frame, tables))
    }

    /// The source `name` (an alias, or `connection.schema.table`) registered in `session` and
    /// read whole, a source's location given the run's parameter `values`. With `live`, an
    /// uncached connection table is read from its database (its schema is then known without
    /// caching it). A source already registered in `session` (a recipe may read one source on
    /// both sides) is read as registered.
    pub async fn read(
        &self,
        session: &SessionContext,
        name: &str,
        live: bool,
        values: &ParamValues,
    ) -> Result<DataFrame, CatalogError> {
        let parts: Vec<&str> = name.split('.').collect();
        let reference = match parts.as_slice() {
            [table] => TableReference::bare(*table),
            [catalog, schema, table] => TableReference::full(*catalog, *schema, *table),
            _ => return Err(CatalogError::UnknownTable(name.to_string())),
        };
        // `table_exist` errs when the table's catalog or schema is not registered either.
        let registered = session.table_exist(reference.clone()).unwrap_or(false);
        if !registered {
            self.resolve(session, &reference, live, values).await?;
        }
        session
            .table(reference)
            .await
            .map_err(|e| CatalogError::Failed(e.to_string()))
    }

    /// Makes `reference` readable in `session` and says how it will be read.
    async fn resolve(
        &self,
        session: &SessionContext,
        reference: &TableReference,
        live: bool,
        values: &ParamValues,
    ) -> Result<TableRead, CatalogError> {
        let unknown = || CatalogError::UnknownTable(reference.to_string());
        let resolved = match reference {
            TableReference::Full {
                catalog,
                schema,
                table,
            } if catalog.as_ref() == RESULTS_CATALOG => {
                self.resolve_job_output(session, reference.to_string(), schema, table)
                    .await
            }
            TableReference::Full {
                catalog,
                schema,
                table,
            } => {
                let parts = [catalog.as_ref(), schema.as_ref(), table.as_ref()];
                self.resolve_connection_table(session, reference.to_string(), parts, live)
                    .await
            }
            TableReference::Bare { table } => self.resolve_source(session, table, values).await,
            TableReference::Partial { .. } => return Err(unknown()),
        };
        match resolved {
            Err(CatalogError::Metadata(MetadataError::NotFound { .. }))
            | Err(CatalogError::Output(OutputError::Metadata(MetadataError::NotFound { .. })))
            | Err(CatalogError::Registry(RegistryError::Metadata(MetadataError::NotFound { .. }))) => {
                Err(unknown())
            }
            other => other,
        }
    }

    /// `connection.schema.table` from its cache version (cached first if it has none) or, with
    /// `live` and no cache version yet, from its database.
    async fn resolve_connection_table(
        &self,
        session: &SessionContext,
        name: String,
        [catalog, schema, table]: [&str; 3],
        live: bool,
    ) -> Result<TableRead, CatalogError> {
        let connection = self.registry.get(Kind::Connection, By::Name(catalog)).await?;
        let record = self.db.table(&connection.id, schema, table).await?;
        let (provider, read) = if live && record.cache_url.is_none() {
            let table_name =
                qualified(schema, table).ok_or_else(|| CatalogError::UnknownTable(name.clone()))?;
            let located = self.registry.open(&connection).await?;
            let provider = located
                .table_of(&table_name)
                .ok_or_else(|| CatalogError::UnknownTable(name.clone()))?
                .table(session, self.registry.context())
                .await?;
            let read = TableRead {
                name,
                read: "live",
                version: None,
            };
            (provider, read)
        } else {
            let cached = self.cache.ensure_cached(&connection, &record).await?;
            let url = cached.cache_url.clone().unwrap_or_default();
            let provider = version_table(session, &url)
                .await
                .map_err(|e| CatalogError::Failed(e.to_string()))?;
            let read = TableRead {
                name,
                read: "cache",
                version: cached.cache_version,
            };
            (provider, read)
        };
        register_full(session, catalog, schema, table, provider)?;
        Ok(read)
    }

    /// `results.<job>.<output>` from the parquet files of the job's output, `<job>` a job id or
    /// `latest_<recipe>`; strings as plain strings, the type Flight SQL sends.
    async fn resolve_job_output(
        &self,
        session: &SessionContext,
        name: String,
        job: &str,
        output: &str,
    ) -> Result<TableRead, CatalogError> {
        let (job_id, dir) = self.outputs.named_output(job, output).await?;
        let provider = output_table(session, dir.as_str())
            .await
            .map_err(|e| CatalogError::Failed(e.to_string()))?;
        register_full(session, RESULTS_CATALOG, job, output, provider)?;
        Ok(TableRead {
            name,
            read: "results",
            version: Some(job_id),
        })
    }

    /// A source by its alias, read by its engine.
    async fn resolve_source(
        &self,
        session: &SessionContext,
        alias: &str,
        values: &ParamValues,
    ) -> Result<TableRead, CatalogError> {
        let provider = self
            .registry
            .locate(Kind::Source, alias)
            .await?
            .with_params(values)
            .map_err(params_of(alias))?
            .table(session, self.registry.context())
            .await?;
        session
            .register_table(alias, provider)
            .map_err(|e| CatalogError::Failed(e.to_string()))?;
        Ok(TableRead {
            name: alias.to_string(),
            read: "source",
            version: None,
        })
    }

    /// Where the source `name` is read from by a run given `values`, as shown (no password);
    /// `None` for a connection's table, which has no location of its own.
    pub async fn source_location(
        &self,
        name: &str,
        values: &ParamValues,
    ) -> Result<Option<String>, CatalogError> {
        if name.contains('.') {
            return Ok(None);
        }
        let record = self.registry.get(Kind::Source, By::Name(name)).await?;
        let location = substitute_location(&shown_location(&record), values).map_err(params_of(name))?;
        Ok(Some(location))
    }

    /// Every table the catalog lists, sorted: each connection's discovered tables, then each
    /// recipe's latest outputs as `results.latest_<recipe>.<output>`.
    pub async fn tables(&self) -> Result<Vec<CatalogTable>, CatalogError> {
        let mut tables = self.connection_tables().await?;
        tables.sort_by(|a, b| (&a.catalog, &a.schema, &a.table).cmp(&(&b.catalog, &b.schema, &b.table)));
        tables.extend(self.latest_outputs().await?);
        Ok(tables)
    }

    async fn connection_tables(&self) -> Result<Vec<CatalogTable>, CatalogError> {
        let connections: HashMap<String, String> = self
            .registry
            .list(Kind::Connection)
            .await?
            .into_iter()
            .map(|c| (c.id, c.name))
            .collect();
        let mut tables = Vec::new();
        for table in self.db.list_tables(None).await? {
            let Some(connection) = connections.get(&table.connection_id) else {
                continue;
            };
            let columns: Vec<ColumnInfo> = serde_json::from_str(&table.arrow_schema_json).unwrap_or_default();
            let fields: Vec<Field> = columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.parse().unwrap_or(DataType::Utf8), c.nullable))
                .collect();
            tables.push(CatalogTable {
                catalog: connection.clone(),
                schema: table.schema_name,
                table: table.table_name,
                columns: Schema::new(fields),
            });
        }
        Ok(tables)
    }

    /// Each recipe's latest succeeded run's outputs, their columns read from the files.
    async fn latest_outputs(&self) -> Result<Vec<CatalogTable>, CatalogError> {
        let session = self.cluster.session();
        let mut tables = Vec::new();
        for (recipe, job) in self.outputs.latest_runs().await? {
            let schema = format!("{LATEST_PREFIX}{recipe}");
            for output in outputs_of(&job.job_type) {
                let dir = self.outputs.results_dir(&job.id).join(&[output]);
                let provider = output_table(&session, dir.as_str())
                    .await
                    .map_err(|e| CatalogError::Failed(e.to_string()))?;
                tables.push(CatalogTable {
                    catalog: RESULTS_CATALOG.to_string(),
                    schema: schema.clone(),
                    table: output.to_string(),
                    columns: provider.schema().as_ref().clone(),
                });
            }
        }
        Ok(tables)
    }

    /// A local session whose `information_schema` lists every table of [`Self::tables`].
    async fn information_schema(&self) -> Result<SessionContext, CatalogError> {
        let session = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        for listed in self.tables().await? {
            let provider = Arc::new(EmptyTable::new(Arc::new(listed.columns)));
            register_full(&session, &listed.catalog, &listed.schema, &listed.table, provider)?;
        }
        Ok(session)
    }
}

/// The tables `sql` names (deduplicated, without CTE names), or why it cannot be parsed.
pub(crate) fn table_references(sql: &str) -> Result<Vec<TableReference>, CatalogError> {
    let invalid = |e: DataFusionError| CatalogError::InvalidSql(e.to_string());
    let mut statements = DFParser::parse_sql(sql).map_err(invalid)?;
    let (Some(statement), None) = (statements.pop_front(), statements.pop_front()) else {
        return Err(CatalogError::InvalidSql("send exactly one SQL statement".into()));
    };
    let is_query = matches!(&statement, DFStatement::Statement(s) if matches!(**s, Statement::Query(_)));
    if !is_query {
        return Err(CatalogError::InvalidSql(
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
) -> Result<(), CatalogError> {
    let failed = |e: datafusion::error::DataFusionError| CatalogError::Failed(e.to_string());
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
