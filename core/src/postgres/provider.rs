//! `PgTableProvider`: a Postgres relation as a DataFusion table, planned for distributed scans.
//!
//! The provider is built where the query is submitted: it reads the catalog once, plans the
//! ctid partitions and seals the connection URL. What it carries travels through the logical
//! plan to the scheduler, which never connects to the source.

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
use super::exec::{PgScanExec, PgScanSpec, SOURCE_URL_PURPOSE, partition_descriptors};
use super::filter;
use super::partition::{self, BlockRange, PartitionOptions};
use crate::ident::QualifiedName;
use crate::pool::{PoolError, PoolRegistry};
use crate::seal::{ClusterKey, Sealed};
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

/// What the provider carries through a logical plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgTableSpec {
    pub table: QualifiedName,
    pub source: Sealed,
    pub kind: RelationKind,
    pub columns: Vec<PgColumn>,
    pub partitions: Vec<BlockRange>,
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
        options: &PartitionOptions,
    ) -> Result<Self, ProviderError> {
        let pool = PoolRegistry::global().get(uri.connection_url())?;
        let relation =
            catalog::describe(&pool, uri.table())
                .await
                .map_err(|error| ProviderError::Catalog {
                    source_uri: uri.redacted(),
                    error,
                })?;
        let spec = PgTableSpec {
            table: uri.table().clone(),
            source: key.seal(SOURCE_URL_PURPOSE, uri.connection_url()),
            kind: relation.kind,
            partitions: partition::plan(&relation, options),
            columns: relation.columns,
        };
        Ok(Self::from_spec(spec, Some(key.clone())))
    }

    /// Rebuilds a provider from its spec (when decoding a plan); `key` only where scans execute.
    pub fn from_spec(spec: PgTableSpec, key: Option<ClusterKey>) -> Self {
        let schema = PgScanSpec {
            table: spec.table.clone(),
            source: spec.source.clone(),
            columns: spec.columns.clone(),
            predicate: None,
            limit: None,
        }
        .schema();
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
        Ok(filters
            .iter()
            .map(|f| match filter::to_sql(f, &self.spec.columns) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = match projection {
            Some(indices) => indices.iter().map(|&i| self.spec.columns[i].clone()).collect(),
            None => self.spec.columns.clone(),
        };
        let predicates: Vec<String> = filters
            .iter()
            .filter_map(|f| filter::to_sql(f, &self.spec.columns))
            .collect();
        let scan = PgScanSpec {
            table: self.spec.table.clone(),
            source: self.spec.source.clone(),
            columns,
            predicate: (!predicates.is_empty()).then(|| predicates.join(" AND ")),
            limit,
        };
        let descriptors = partition_descriptors(&self.spec.partitions)?;
        Ok(Arc::new(PgScanExec::try_new(
            Arc::new(scan),
            descriptors,
            self.key.clone(),
        )?))
    }
}
