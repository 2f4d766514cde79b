//! `PgScanExec`: reads ctid block ranges of a Postgres relation with binary COPY.
//!
//! Ballista restricts each task's plan to its partitions only for leaves it knows, so a
//! custom multi-partition leaf would run every partition in every task and duplicate rows.
//! This operator is therefore not a leaf: its child is an in-memory `DataSourceExec` holding
//! one descriptor row (a block range) per partition, which the scheduler restricts like any
//! memory scan. Each output partition reads exactly the ranges of its input partition.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use super::catalog::PgColumn;
use super::copy::{BatchLimits, CopyDecoder};
use super::partition::BlockRange;
use super::types::PgType;
use crate::ident::{QualifiedName, quote_ident};
use crate::pool::PoolRegistry;
use crate::seal::{ClusterKey, Sealed};

/// Associated data binding sealed values to their use as a source connection URL.
pub const SOURCE_URL_PURPOSE: &str = "kalla/source-connection-url";

/// Everything an executor needs to read the scan, apart from its partitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgScanSpec {
    pub table: QualifiedName,
    pub source: Sealed,
    /// Output columns, in order.
    pub columns: Vec<PgColumn>,
    /// Pushed-down filters as SQL (see `filter::to_sql`).
    pub predicate: Option<String>,
    pub limit: Option<usize>,
}

impl PgScanSpec {
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.pg_type.arrow_type(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// The COPY statement reading `range` of the relation.
    pub fn copy_statement(&self, range: BlockRange) -> String {
        let select_list: Vec<String> = self
            .columns
            .iter()
            .map(|c| match c.pg_type {
                PgType::TextCast => format!("{}::text", quote_ident(&c.name)),
                _ => quote_ident(&c.name),
            })
            .collect();
        let conditions: Vec<String> = range
            .predicate()
            .into_iter()
            .chain(self.predicate.clone())
            .collect();
        let mut sql = format!(
            "COPY (SELECT {} FROM {}",
            select_list.join(", "),
            self.table.quoted()
        );
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql.push_str(") TO STDOUT (FORMAT binary)");
        sql
    }
}

/// Schema of the descriptor rows: one block range per row.
fn descriptor_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("start_block", DataType::UInt32, false),
        Field::new("end_block", DataType::UInt32, true),
    ]))
}

/// The in-memory leaf holding one descriptor row per partition.
pub fn partition_descriptors(ranges: &[BlockRange]) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = descriptor_schema();
    let partitions = ranges
        .iter()
        .map(|range| {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt32Array::from(vec![range.start])),
                    Arc::new(UInt32Array::from(vec![range.end])),
                ],
            )?;
            Ok(vec![batch])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MemorySourceConfig::try_new_exec(&partitions, schema, None)?)
}

fn ranges_in(batch: &RecordBatch) -> Result<Vec<BlockRange>> {
    let column = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| DataFusionError::Internal("PgScanExec descriptor is not UInt32".into()))
    };
    let (starts, ends) = (column(0)?, column(1)?);
    Ok((0..batch.num_rows())
        .map(|i| BlockRange {
            start: starts.value(i),
            end: ends.is_valid(i).then(|| ends.value(i)),
        })
        .collect())
}

#[derive(Debug)]
pub struct PgScanExec {
    spec: Arc<PgScanSpec>,
    schema: SchemaRef,
    descriptors: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    /// Present on processes that may open source connections (executors, embedded mode).
    key: Option<ClusterKey>,
}

impl PgScanExec {
    pub fn try_new(
        spec: Arc<PgScanSpec>,
        descriptors: Arc<dyn ExecutionPlan>,
        key: Option<ClusterKey>,
    ) -> Result<Self> {
        if descriptors.schema() != descriptor_schema() {
            return internal_err!("PgScanExec input is not a partition descriptor scan");
        }
        let schema = spec.schema();
        let partitions = descriptors.properties().output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            spec,
            schema,
            descriptors,
            properties,
            key,
        })
    }

    pub fn spec(&self) -> &PgScanSpec {
        &self.spec
    }
}

impl DisplayAs for PgScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self.spec.columns.iter().map(|c| c.name.as_str()).collect();
        write!(
            f,
            "PgScanExec: table={}, partitions={}, columns=[{}]",
            self.spec.table,
            self.properties.output_partitioning().partition_count(),
            columns.join(", ")
        )?;
        if let Some(predicate) = &self.spec.predicate {
            write!(f, ", predicate={predicate}")?;
        }
        if let Some(limit) = self.spec.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

#[allow(deprecated)] // `with_new_children` is still required by the trait in DataFusion 55.
impl ExecutionPlan for PgScanExec {
    fn name(&self) -> &str {
        "PgScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.descriptors]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Descriptor rows must stay in their partitions: repartitioning them would only add a stage.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [descriptors] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("PgScanExec takes exactly one child".into()))?;
        Ok(Arc::new(Self::try_new(
            self.spec.clone(),
            descriptors,
            self.key.clone(),
        )?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let key = self.key.clone().ok_or_else(|| {
            DataFusionError::Configuration(format!(
                "cannot read {}: this process has no cluster key ({}); \
                 Postgres scans run on executors started with it",
                self.spec.table,
                crate::seal::SECRET_KEY_ENV
            ))
        })?;
        let url = key
            .unseal(SOURCE_URL_PURPOSE, &self.spec.source)
            .map_err(|e| DataFusionError::Configuration(format!("cannot read {}: {e}", self.spec.table)))?;
        let pool = PoolRegistry::global()
            .get(&url)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let descriptors = self.descriptors.execute(partition, context.clone())?;
        let limits = BatchLimits {
            rows: context.session_config().batch_size(),
            ..BatchLimits::default()
        };
        let stream = read_partition(self.spec.clone(), self.schema.clone(), pool, descriptors, limits);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

fn read_partition(
    spec: Arc<PgScanSpec>,
    schema: SchemaRef,
    pool: PgPool,
    mut descriptors: SendableRecordBatchStream,
    limits: BatchLimits,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
    async_stream::try_stream! {
        let types: Vec<PgType> = spec.columns.iter().map(|c| c.pg_type.clone()).collect();
        while let Some(batch) = descriptors.next().await {
            for range in ranges_in(&batch?)? {
                let sql = spec.copy_statement(range);
                tracing::debug!(table = %spec.table, %sql, "reading partition");
                let failed = |e: sqlx::Error| source_error(&spec.table, range, e);
                let mut connection = CopyConnection(Some(pool.acquire().await.map_err(failed)?));
                let mut decoder = CopyDecoder::new(spec.table.to_string(), schema.clone(), &types, limits);
                let mut chunks = connection.conn().copy_out_raw(&sql).await.map_err(failed)?;
                while let Some(chunk) = chunks.next().await {
                    decoder.push(&chunk.map_err(failed)?).map_err(external)?;
                    // async-stream's macro is edition 2021: no let chains inside it.
                    if decoder.batch_full() {
                        let full = decoder.flush().map_err(external)?;
                        if let Some(batch) = full {
                            yield batch;
                        }
                    }
                }
                drop(chunks);
                let last = decoder.finish().map_err(external)?;
                connection.release();
                if let Some(batch) = last {
                    yield batch;
                }
            }
        }
    }
}

fn external(error: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

fn source_error(table: &QualifiedName, range: BlockRange, error: sqlx::Error) -> DataFusionError {
    let blocks = match range.end {
        Some(end) => format!("blocks {}..{end}", range.start),
        None => format!("blocks {}..end", range.start),
    };
    DataFusionError::Execution(format!(
        "reading {table} ({blocks}) from Postgres failed: {error}"
    ))
}

/// A pooled connection in COPY mode. Dropped before the COPY completed (query cancelled,
/// limit reached, error), it is closed rather than returned with a half-read stream.
struct CopyConnection(Option<PoolConnection<Postgres>>);

impl CopyConnection {
    fn conn(&mut self) -> &mut PoolConnection<Postgres> {
        self.0.as_mut().expect("connection present until released")
    }

    /// The COPY completed: return the connection to the pool for reuse.
    fn release(mut self) {
        self.0.take();
    }
}

impl Drop for CopyConnection {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}
