//! `PgTableProvider`: a Postgres relation as a DataFusion table, planned for distributed scans.
//!
//! The provider is built where the query is submitted: it reads the catalog once, plans the
//! ctid partitions and issues a scan grant (the connection URL sealed for this table's columns,
//! until an expiry). What it carries travels through the logical plan to the scheduler, which
//! never connects to the source; pushed-down filters travel on as typed expressions.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::catalog::{self, CatalogError, PgColumn, RelationKind};
use super::exec::{PgScanExec, PgScanSpec, columns_schema, partition_descriptors};
use super::partition::{self, BlockRange, PartitionOptions};
use crate::grant::{DEFAULT_GRANT_TTL, ScanGrant};
use crate::ident::QualifiedName;
use crate::pool::{PoolError, PoolRegistry};
use crate::pushdown;
use crate::seal::ClusterKey;
use crate::uri::SourceUri;

#[derive(Debug, Error)]
pub enum ProviderError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("source {source_uri}: {error}")]
    Catalog {
        source_uri: String,
        #[source]
        error: CatalogError,
    },
}

/// How a Postgres relation is planned for a distributed scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    pub partitions: PartitionOptions,
    /// How long the scan's grant stays valid (see [`ScanGrant`]).
    pub grant_ttl: std::time::Duration,
}

impl ScanOptions {
    /// Default options, but exactly `count` partitions.
    pub fn in_partitions(count: usize) -> Self {
        let mut options = Self::default();
        options.partitions.partitions = Some(count);
        options
    }
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            partitions: PartitionOptions::default(),
            grant_ttl: DEFAULT_GRANT_TTL,
        }
    }
}

/// What the provider carries through a logical plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgTableSpec {
    pub table: QualifiedName,
    pub grant: ScanGrant,
    pub kind: RelationKind,
    pub columns: Vec<PgColumn>,
    pub partitions: Vec<BlockRange>,
    /// The relation's heap size when it was planned: what the scan is sized by.
    #[serde(default)]
    pub heap_bytes: u64,
}

#[derive(Debug)]
pub struct PgTableProvider {
    spec: Arc<PgTableSpec>,
    schema: SchemaRef,
    key: Option<ClusterKey>,
}

impl PgTableProvider {
    /// Describes `uri`'s relation through this process's pool and plans its partitions.
    pub async fn connect(
        uri: &SourceUri,
        key: &ClusterKey,
        options: &ScanOptions,
    ) -> Result<Self, ProviderError> {
        let pool = PoolRegistry::global().get(uri.connection_url()).await?;
        let relation =
            catalog::describe(&pool, uri.table())
                .await
                .map_err(|error| ProviderError::Catalog {
                    source_uri: uri.redacted(),
                    error,
                })?;
        let grant = ScanGrant::issue(
            key,
            uri.connection_url(),
            uri.table(),
            &relation.columns,
            options.grant_ttl,
        );
        let spec = PgTableSpec {
            table: uri.table().clone(),
            grant,
            kind: relation.kind,
            partitions: partition::plan(&relation, &options.partitions),
            heap_bytes: relation.heap_bytes,
            columns: relation.columns,
        };
        Ok(Self::from_spec(spec, Some(key.clone())))
    }

    /// Rebuilds a provider from its spec (when decoding a plan); `key` only where scans execute.
    pub fn from_spec(spec: PgTableSpec, key: Option<ClusterKey>) -> Self {
        let schema = columns_schema(&spec.columns);
        Self {
            spec: Arc::new(spec),
            schema,
            key,
        }
    }

    pub fn spec(&self) -> &PgTableSpec {
        &self.spec
    }
}

#[async_trait]
impl TableProvider for PgTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        match self.spec.kind {
            RelationKind::Heap => TableType::Base,
            RelationKind::Other => TableType::View,
        }
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown::support(filters, &self.spec.columns))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection = match projection {
            Some(indices) => indices.clone(),
            None => (0..self.spec.columns.len()).collect(),
        };
        let scan = PgScanSpec {
            table: self.spec.table.clone(),
            grant: self.spec.grant.clone(),
            table_columns: self.spec.columns.clone(),
            projection,
            filters: filters
                .iter()
                .map(|f| pushdown::encode(&self.spec.table, f, &self.spec.columns))
                .collect::<Result<_>>()?,
            limit,
            heap_bytes: self.spec.heap_bytes,
        };
        let descriptors = partition_descriptors(&self.spec.partitions)?;
        Ok(Arc::new(PgScanExec::try_new(
            Arc::new(scan),
            descriptors,
            self.key.clone(),
        )?))
    }
}
