//! `PartitionParquetSinkExec`: every input partition writes its own parquet file.
//!
//! DataFusion's file sinks need a single input partition, which would funnel a whole refresh
//! through one task. This operator keeps its input's partitioning instead: the task that scans a
//! partition writes it to its own `part-<random>.parquet` in the target directory and returns one
//! summary row (see [`written_files_schema`]). Ballista runs each task on a plan restricted to its
//! partitions, so the partition index is no unique name; and a retried task must not overwrite a
//! file another attempt may still be writing. Files no summary row names are removed before the
//! version is published.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray, UInt32Array, UInt64Array};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use serde::{Deserialize, Serialize};

use super::{CacheDir, written_files_schema};

/// Rows per parquet row group: small enough to bound a writer's memory, large enough for scans.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Where the files go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkSpec {
    /// The target directory's URL (`file:///…/` or `s3://bucket/…/`).
    pub directory: String,
}

#[derive(Debug)]
pub struct PartitionParquetSinkExec {
    spec: Arc<SinkSpec>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl PartitionParquetSinkExec {
    pub fn new(spec: Arc<SinkSpec>, input: Arc<dyn ExecutionPlan>) -> Self {
        let partitions = input.properties().output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(written_files_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            spec,
            input,
            properties,
        }
    }

    pub fn spec(&self) -> &SinkSpec {
        &self.spec
    }
}

impl DisplayAs for PartitionParquetSinkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PartitionParquetSinkExec: directory={}", self.spec.directory)
    }
}

#[allow(deprecated)] // `with_new_children` is still required by the trait in DataFusion 55.
impl ExecutionPlan for PartitionParquetSinkExec {
    fn name(&self) -> &str {
        "PartitionParquetSinkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Each partition is written where it was read: repartitioning would only add a shuffle.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|_| {
            DataFusionError::Internal("PartitionParquetSinkExec takes exactly one child".into())
        })?;
        Ok(Arc::new(Self::new(self.spec.clone(), input)))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let directory = CacheDir::parse(&self.spec.directory).map_err(external)?;
        let store = context
            .runtime_env()
            .object_store(ObjectStoreUrl::parse(directory.store_url())?)?;
        let path = directory
            .path()
            .map_err(external)?
            .join(format!("part-{:016x}.parquet", rand::random::<u64>()).as_str());
        let input = self.input.execute(partition, context)?;
        let write = async move {
            let schema = input.schema();
            let properties = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .build();
            let object = BufWriter::new(store.clone(), path.clone());
            let mut writer = AsyncArrowWriter::try_new(object, schema, Some(properties))?;
            let mut rows = 0_u64;
            let mut input = input;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).await?;
            }
            writer.close().await?;
            let bytes = store.head(&path).await?.size;
            summary(partition, path.as_ref(), rows, bytes)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            written_files_schema(),
            futures::stream::once(write),
        )))
    }
}

fn summary(partition: usize, path: &str, rows: u64, bytes: u64) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        written_files_schema(),
        vec![
            Arc::new(UInt32Array::from(vec![partition as u32])),
            Arc::new(StringArray::from(vec![path])),
            Arc::new(UInt64Array::from(vec![rows])),
            Arc::new(UInt64Array::from(vec![bytes])),
        ],
    )?)
}

fn external(error: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}
