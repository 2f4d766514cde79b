//! `WritePlanTable`: scanning it runs a logical plan on the cluster and writes its rows with a
//! [`PartitionParquetSinkExec`] (one or several outputs), returning one row per written file.
//!
//! A write travels to the scheduler as a table in an ordinary query: the logical codec carries the plan to run (as datafusion-proto bytes, with
//! Kalla's codec for its sources) and the sink's spec; the scheduler plans the input where it
//! plans the scan, so the input's stages are distributed as usual and every task of the last
//! stage writes its own files.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use super::sink::{PartitionParquetSinkExec, SinkSpec};
use super::written_files_schema;
use crate::codec::{decode_plan, encode_plan};

/// What a write carries through the logical plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteSpec {
    /// The input plan, datafusion-proto encoded with Kalla's logical codec, in base64.
    pub plan: String,
    pub sink: SinkSpec,
}

#[derive(Debug)]
pub struct WritePlanTable {
    plan: LogicalPlan,
    sink: SinkSpec,
}

impl WritePlanTable {
    pub fn new(plan: LogicalPlan, sink: SinkSpec) -> Self {
        Self { plan, sink }
    }

    pub fn spec(&self) -> Result<WriteSpec> {
        Ok(WriteSpec {
            plan: encode_plan(&self.plan)?,
            sink: self.sink.clone(),
        })
    }

    pub fn from_spec(spec: WriteSpec, ctx: &TaskContext) -> Result<Self> {
        Ok(Self::new(decode_plan(&spec.plan, ctx)?, spec.sink))
    }

    /// The plan whose rows are written.
    pub fn plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// Where they are written.
    pub fn sink(&self) -> &SinkSpec {
        &self.sink
    }
}

#[async_trait]
impl TableProvider for WritePlanTable {
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
        // Read whole: a projection would drop summary columns the caller needs.
        let whole = (0..written_files_schema().fields().len()).collect::<Vec<_>>();
        if projection.is_some_and(|p| *p != whole) {
            return datafusion::common::not_impl_err!("a write is read whole, as SELECT * of its table");
        }
        let input = state.create_physical_plan(&self.plan).await?;
        Ok(Arc::new(PartitionParquetSinkExec::new(
            Arc::new(self.sink.clone()),
            input,
        )))
    }
}
