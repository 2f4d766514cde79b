//! `CacheRefreshTable`: scanning it reads a Postgres relation and writes it into a cache version.
//!
//! A table rather than a plan node, so a refresh travels to the scheduler like any query: the
//! logical codec carries the spec, the scheduler's `scan()` plans the partitioned Postgres scan
//! with a [`PartitionParquetSinkExec`] on top, and the query's result is one row per written file.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use super::sink::{PartitionParquetSinkExec, SinkSpec};
use super::{read_whole, written_files_schema};
use crate::postgres::provider::{PgTableProvider, PgTableSpec};
use crate::seal::ClusterKey;

/// What a refresh carries through the logical plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRefreshSpec {
    pub source: PgTableSpec,
    pub sink: SinkSpec,
}

#[derive(Debug)]
pub struct CacheRefreshTable {
    spec: CacheRefreshSpec,
    source: PgTableProvider,
}

impl CacheRefreshTable {
    /// `key` only where scans execute (embedded clusters); the scheduler plans without it.
    pub fn new(spec: CacheRefreshSpec, key: Option<ClusterKey>) -> Self {
        let source = PgTableProvider::from_spec(spec.source.clone(), key);
        Self { spec, source }
    }

    pub fn spec(&self) -> &CacheRefreshSpec {
        &self.spec
    }
}

#[async_trait]
impl TableProvider for CacheRefreshTable {
    fn schema(&self) -> SchemaRef {
        written_files_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        read_whole(projection, "a cache refresh")?;
        let scan = self.source.scan(state, None, &[], None).await?;
        Ok(Arc::new(PartitionParquetSinkExec::new(
            Arc::new(self.spec.sink.clone()),
            scan,
        )))
    }
}
