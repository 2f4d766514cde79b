//! `MariaTableProvider`: a MariaDB table as a DataFusion table, planned for distributed scans.
//!
//! Built where the query is submitted: it reads `information_schema` once, splits the table by
//! its key's range (`MIN`/`MAX` through the key's index) and issues a scan grant. What it carries
//! travels through the logical plan to the scheduler, which never connects to the source.
//! Filters MariaDB answers exactly as DataFusion would are pushed down (see [`super::filter`]);
//! the rest are evaluated by DataFusion above the scan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use thiserror::Error;

use super::catalog::{self, CatalogError, MariaColumn, TableInfo};
use super::exec::{MariaScanExec, MariaScanSpec, columns_schema, partition_descriptors};
use super::location::TableLocation;
use super::partition::{KeyRange, split_keys};
use crate::grant::ScanGrant;
use crate::ident::{QualifiedName, backquote_ident};
use crate::pool::{PoolError, PoolRegistry};
use crate::postgres::ScanOptions;
use crate::pushdown;
use crate::seal::ClusterKey;

#[derive(Debug, Error)]
pub enum ProviderError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("source {location}: {error}")]
    Catalog {
        location: String,
        #[source]
        error: CatalogError,
    },
    #[error("source {location}: reading the range of key {key}: {error}")]
    KeyRange {
        location: String,
        key: String,
        #[source]
        error: sqlx::Error,
    },
}

/// What the provider carries through a logical plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MariaTableSpec {
    pub table: QualifiedName,
    pub grant: ScanGrant,
    pub base_table: bool,
    pub columns: Vec<MariaColumn>,
    pub key: Option<String>,
    pub ranges: Vec<KeyRange>,
    pub data_bytes: u64,
}

#[derive(Debug)]
pub struct MariaTableProvider {
    spec: Arc<MariaTableSpec>,
    schema: SchemaRef,
    key: Option<ClusterKey>,
}

impl MariaTableProvider {
    /// Describes `location`'s table through this process's pool and plans its partitions.
    pub async fn connect(
        location: &TableLocation,
        key: &ClusterKey,
        options: &ScanOptions,
    ) -> Result<Self, ProviderError> {
        let pool = PoolRegistry::global()
            .get_mariadb(location.connection_url())
            .await?;
        let info = catalog::describe(&pool, location.table())
            .await
            .map_err(|error| ProviderError::Catalog {
                location: location.redacted(),
                error,
            })?;
        let ranges = plan_ranges(&pool, location, &info, options).await?;
        let grant = ScanGrant::issue(
            key,
            location.connection_url(),
            location.table(),
            &info.columns,
            options.grant_ttl,
        );
        let spec = MariaTableSpec {
            table: location.table().clone(),
            grant,
            base_table: info.base_table,
            key: info.key.filter(|_| ranges != [KeyRange::WHOLE]),
            ranges,
            data_bytes: info.data_bytes,
            columns: info.columns,
        };
        Ok(Self::from_spec(spec, Some(key.clone())))
    }

    /// Rebuilds a provider from its spec (when decoding a plan); `key` only where scans execute.
    pub fn from_spec(spec: MariaTableSpec, key: Option<ClusterKey>) -> Self {
        let schema = columns_schema(&spec.columns);
        Self {
            spec: Arc::new(spec),
            schema,
            key,
        }
    }

    pub fn spec(&self) -> &MariaTableSpec {
        &self.spec
    }
}

/// The key ranges of the table's partitions: as many as its size (or the options) asks for,
/// over the key's present range; one range for a view, a table without an integer key, or an
/// empty table.
async fn plan_ranges(
    pool: &MySqlPool,
    location: &TableLocation,
    info: &TableInfo,
    options: &ScanOptions,
) -> Result<Vec<KeyRange>, ProviderError> {
    let count = options.partitions.count_for(info.data_bytes);
    let Some(key) = info.key.as_deref().filter(|_| count > 1) else {
        return Ok(vec![KeyRange::WHOLE]);
    };
    // Cast so that signed and BIGINT UNSIGNED keys come back alike, as exact decimal text.
    let sql = format!(
        "SELECT CAST(MIN({key}) AS CHAR), CAST(MAX({key}) AS CHAR) FROM {}",
        location.table().backquoted(),
        key = backquote_ident(key),
    );
    let (min, max): (Option<String>, Option<String>) =
        sqlx::query_as(&sql)
            .fetch_one(pool)
            .await
            .map_err(|error| ProviderError::KeyRange {
                location: location.redacted(),
                key: key.to_string(),
                error,
            })?;
    let parsed = min
        .zip(max)
        .and_then(|(min, max)| Some((min.parse().ok()?, max.parse().ok()?)));
    Ok(match parsed {
        Some((min, max)) => split_keys(min, max, count),
        None => vec![KeyRange::WHOLE],
    })
}

#[async_trait]
impl TableProvider for MariaTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        match self.spec.base_table {
            true => TableType::Base,
            false => TableType::View,
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
        let scan = MariaScanSpec {
            table: self.spec.table.clone(),
            grant: self.spec.grant.clone(),
            table_columns: self.spec.columns.clone(),
            projection,
            key: self.spec.key.clone(),
            ranges: self.spec.ranges.clone(),
            filters: filters
                .iter()
                .map(|f| pushdown::encode(&self.spec.table, f, &self.spec.columns))
                .collect::<Result<_>>()?,
            limit,
            data_bytes: self.spec.data_bytes,
        };
        let descriptors = partition_descriptors(scan.ranges.len())?;
        Ok(Arc::new(MariaScanExec::try_new(
            Arc::new(scan),
            descriptors,
            self.key.clone(),
        )?))
    }
}
