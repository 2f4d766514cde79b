//! The operator every database engine's scan is on a cluster: a reader above an in-memory scan
//! of descriptor rows, one per partition.
//!
//! Ballista restricts each task's plan to its partitions only for leaves it knows, so a custom
//! multi-partition leaf would run every partition in every task and duplicate rows. A scan is
//! therefore not a leaf: its child is an in-memory `DataSourceExec` holding each partition's
//! descriptor rows (a block range, a key range's index…), which the scheduler restricts like any
//! memory scan, and each output partition reads exactly what its input partition describes.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, Statistics, internal_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use sqlx::Database;
use sqlx::pool::PoolConnection;

use crate::grant::ScanGrant;
use crate::ident::QualifiedName;
use crate::seal::ClusterKey;

/// What an engine's scan does where it runs: read the partitions its descriptors name.
pub trait PartitionReader: fmt::Debug + Send + Sync + 'static {
    /// The operator's name in plans, which plan checks let through.
    const OPERATOR: &'static str;

    /// The schema of the descriptor rows this reader takes.
    fn descriptor_schema() -> SchemaRef;

    /// The rows it reads.
    fn schema(&self) -> SchemaRef;

    /// About how many bytes the whole scan reads (all partitions), if the source said.
    fn estimated_bytes(&self) -> Option<usize>;

    /// What plans show of the scan besides its operator and partition count.
    fn fmt_details(&self, f: &mut fmt::Formatter) -> fmt::Result;

    /// Reads the partitions described by the rows `descriptors` streams.
    fn read(
        &self,
        descriptors: SendableRecordBatchStream,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream>;
}

/// The in-memory leaf holding `partitions`' descriptor rows, one batch per partition.
pub fn descriptor_scan(schema: SchemaRef, partitions: Vec<RecordBatch>) -> Result<Arc<dyn ExecutionPlan>> {
    let partitions: Vec<Vec<RecordBatch>> = partitions.into_iter().map(|batch| vec![batch]).collect();
    Ok(MemorySourceConfig::try_new_exec(&partitions, schema, None)?)
}

/// A reader above its descriptor scan.
#[derive(Debug)]
pub struct DescriptorScanExec<R> {
    reader: Arc<R>,
    descriptors: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl<R: PartitionReader> DescriptorScanExec<R> {
    pub fn new(reader: Arc<R>, descriptors: Arc<dyn ExecutionPlan>) -> Result<Self> {
        if descriptors.schema() != R::descriptor_schema() {
            return internal_err!("{} input is not its partition descriptor scan", R::OPERATOR);
        }
        let partitions = descriptors.properties().output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(reader.schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            reader,
            descriptors,
            properties,
        })
    }

    pub fn reader(&self) -> &R {
        &self.reader
    }

    /// Another scan of the same reader over `descriptors` (as a decoded plan rebuilds it).
    pub fn with_descriptors(&self, inputs: &[Arc<dyn ExecutionPlan>]) -> Result<Self> {
        let [descriptors] = inputs else {
            return internal_err!("{} needs exactly one input", R::OPERATOR);
        };
        Self::new(self.reader.clone(), descriptors.clone())
    }
}

impl<R: PartitionReader> DisplayAs for DescriptorScanExec<R> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let partitions = self.properties.output_partitioning().partition_count();
        write!(f, "{}: partitions={partitions}, ", R::OPERATOR)?;
        self.reader.fmt_details(f)
    }
}

#[allow(deprecated)] // `with_new_children` is still required by the trait in DataFusion 55.
impl<R: PartitionReader> ExecutionPlan for DescriptorScanExec<R> {
    fn name(&self) -> &str {
        R::OPERATOR
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

    /// The whole scan's size (a shuffle above it is sized by this); nothing is known of one
    /// partition.
    fn statistics_from_inputs(
        &self,
        _inputs: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut statistics = Statistics::new_unknown(&self.reader.schema());
        if let Some(bytes) = self
            .reader
            .estimated_bytes()
            .filter(|_| args.partition().is_none())
        {
            statistics.total_byte_size = Precision::Inexact(bytes);
        }
        Ok(Arc::new(statistics))
    }

    /// Descriptor rows must stay in their partitions: repartitioning them would only add a stage.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.with_descriptors(&children)?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let descriptors = self.descriptors.execute(partition, context.clone())?;
        self.reader.read(descriptors, context)
    }
}

/// A table's bytes scaled to the share `projected` of its `columns` columns take (none if the
/// size is unknown).
pub fn projected_bytes(table_bytes: u64, projected: usize, columns: usize) -> Option<usize> {
    (table_bytes > 0).then(|| (table_bytes * projected.max(1) as u64 / columns.max(1) as u64) as usize)
}

/// A pooled connection streaming a result. Dropped before the result was read to its end (query
/// cancelled, limit reached, error), it is closed rather than returned to its pool, where it
/// would first have to finish (or drain) what it was sending.
pub struct StreamingConnection<DB: Database>(Option<PoolConnection<DB>>);

impl<DB: Database> StreamingConnection<DB> {
    pub fn new(connection: PoolConnection<DB>) -> Self {
        Self(Some(connection))
    }

    pub fn conn(&mut self) -> &mut PoolConnection<DB> {
        self.0.as_mut().expect("connection present until released")
    }

    /// The result was read to its end: return the connection to the pool for reuse.
    pub fn release(mut self) {
        self.0.take();
    }
}

impl<DB: Database> Drop for StreamingConnection<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// Refuses a scan that Kalla's planner would never have produced, and logs it: a forged plan.
pub fn plan_refused(table: &QualifiedName, reason: String) -> DataFusionError {
    tracing::warn!(target: "kalla::plan_check", %table, %reason, "refused a scan");
    DataFusionError::Plan(format!("plan refused: scan of {table}: {reason}"))
}

/// The connection URL `grant` seals, opened with this process's cluster key for a scan of
/// `columns` of `table`; refused where the process has no key or the grant is not this scan's.
pub fn open_grant<C: serde::Serialize>(
    grant: &ScanGrant,
    key: Option<&ClusterKey>,
    table: &QualifiedName,
    columns: &[C],
) -> Result<String> {
    let key = key.ok_or_else(|| {
        DataFusionError::Configuration(format!(
            "cannot read {table}: this process has no cluster key ({}); source scans run on \
             executors started with it",
            crate::seal::CLUSTER_KEY_ENV
        ))
    })?;
    grant
        .open(key, table, columns)
        .map_err(|e| plan_refused(table, e.to_string()))
}

/// `error` as DataFusion carries an engine's own errors.
pub fn external(error: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}
