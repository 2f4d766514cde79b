//! `PairsTable`: a table whose scan pairs two logical plans' rows by key with a [`PairExec`].
//!
//! Like a write ([`crate::cache::write`]), the pairing travels to the scheduler as a table in an
//! ordinary query: the logical codec carries both sides' plans, and the scheduler plans them where
//! it plans the scan. Both sides are hash-partitioned on their key into as many partitions as
//! their estimated size calls for (one per [`PairsSpec::partition_bytes`], never fewer than the
//! session's `target_partitions`), which Ballista turns into one shuffle per side; every task of
//! the stage above pairs one partition of each, in waves when there are more than task slots.
//! A partition that still does not fit its task's memory spills (see [`super::spill`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use serde::{Deserialize, Serialize};

use super::pair::{Grouping, PairExec, key_columns, paired_schema};
use crate::codec::{decode_plan, encode_plan};

/// What a pairing carries through the logical plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairsSpec {
    /// Each side's plan, as [`encode_plan`] encodes it.
    pub left: String,
    pub right: String,
    /// How many leading columns of each side are the key.
    pub keys: usize,
    /// How a grouped pass gathers a key's rows; none for a one-to-one pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouping: Option<Grouping>,
    /// The shuffle is sized for partitions of about this many bytes of both sides' rows.
    #[serde(default = "default_partition_bytes")]
    pub partition_bytes: u64,
}

/// The default [`PairsSpec::partition_bytes`]: 64 MiB, which a task pairs in memory within a
/// share of about 256 MiB of its executor's pool.
pub const DEFAULT_PARTITION_BYTES: u64 = 64 * 1024 * 1024;
/// More shuffle partitions than this cost more in shuffle files than they save in memory: a
/// partition that is still too large spills.
const MAX_PARTITIONS: usize = 4096;
/// What a value of variable width is taken to hold when only row counts are known.
const VARIABLE_WIDTH_BYTES: u64 = 24;

fn default_partition_bytes() -> u64 {
    DEFAULT_PARTITION_BYTES
}

#[derive(Debug)]
pub struct PairsTable {
    left: LogicalPlan,
    right: LogicalPlan,
    keys: usize,
    grouping: Option<Grouping>,
    partition_bytes: u64,
    schema: SchemaRef,
}

impl PairsTable {
    /// Pairs (or, with `grouping`, groups) `left`'s and `right`'s rows by their first `keys`
    /// columns (the same types on both), shuffled into partitions of about `partition_bytes`.
    pub fn new(
        left: LogicalPlan,
        right: LogicalPlan,
        keys: usize,
        grouping: Option<Grouping>,
        partition_bytes: u64,
    ) -> Result<Self> {
        let (left_schema, right_schema) = (left.schema().as_arrow(), right.schema().as_arrow());
        let schema = paired_schema(left_schema, right_schema, keys, grouping.as_ref())?;
        Ok(Self {
            left,
            right,
            keys,
            grouping,
            partition_bytes: partition_bytes.max(1),
            schema,
        })
    }

    pub fn spec(&self) -> Result<PairsSpec> {
        Ok(PairsSpec {
            left: encode_plan(&self.left)?,
            right: encode_plan(&self.right)?,
            keys: self.keys,
            grouping: self.grouping.clone(),
            partition_bytes: self.partition_bytes,
        })
    }

    pub fn from_spec(spec: PairsSpec, ctx: &TaskContext) -> Result<Self> {
        Self::new(
            decode_plan(&spec.left, ctx)?,
            decode_plan(&spec.right, ctx)?,
            spec.keys,
            spec.grouping,
            spec.partition_bytes,
        )
    }

    /// The two sides' plans, left first.
    pub fn inputs(&self) -> [&LogicalPlan; 2] {
        [&self.left, &self.right]
    }

    /// How many partitions the shuffle of `inputs` needs for partitions of about
    /// `partition_bytes`, by what their sources say of their size.
    fn partitions(&self, inputs: &[&Arc<dyn ExecutionPlan>], target_partitions: usize) -> usize {
        let bytes: u64 = inputs.iter().map(|input| estimated_bytes(input)).sum();
        let by_size = bytes.div_ceil(self.partition_bytes) as usize;
        let partitions = by_size.clamp(target_partitions.max(1), MAX_PARTITIONS.max(target_partitions));
        tracing::info!(
            estimated_bytes = bytes,
            partitions,
            "a reconciliation's shuffle is sized"
        );
        partitions
    }
}

/// A side hash-partitioned on its first `keys` columns.
fn shuffled(input: Arc<dyn ExecutionPlan>, keys: usize, partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let keys = key_columns(&input.schema(), keys);
    Ok(Arc::new(RepartitionExec::try_new(
        input,
        Partitioning::Hash(keys, partitions),
    )?))
}

/// What `plan` yields, in bytes, by the statistics of it or its inputs (parquet metadata, a
/// Postgres relation's size): their byte size, else their rows at an estimated width. Inputs
/// that know nothing count nothing.
pub fn estimated_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let statistics = StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .ok();
    let known = |value: Option<&usize>| value.copied().filter(|v| *v > 0).map(|v| v as u64);
    if let Some(bytes) = statistics
        .as_ref()
        .and_then(|s| known(s.total_byte_size.get_value()))
    {
        return bytes;
    }
    let Some(rows) = statistics.as_ref().and_then(|s| known(s.num_rows.get_value())) else {
        return plan.children().into_iter().map(estimated_bytes).sum();
    };
    let width: u64 = plan
        .schema()
        .fields()
        .iter()
        .map(|f| {
            f.data_type()
                .primitive_width()
                .map_or(VARIABLE_WIDTH_BYTES, |w| w as u64)
        })
        .sum();
    rows * width
}

#[async_trait]
impl TableProvider for PairsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        let left = state.create_physical_plan(&self.left).await?;
        let right = state.create_physical_plan(&self.right).await?;
        let partitions = self.partitions(&[&left, &right], state.config().target_partitions());
        let left = shuffled(left, self.keys, partitions)?;
        let right = shuffled(right, self.keys, partitions)?;
        let pairs: Arc<dyn ExecutionPlan> =
            Arc::new(PairExec::try_new(self.keys, self.grouping.clone(), left, right)?);
        let Some(projection) = projection else {
            return Ok(pairs);
        };
        let columns = projection.iter().map(|&i| {
            let name = self.schema.field(i).name().clone();
            (Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>, name)
        });
        Ok(Arc::new(ProjectionExec::try_new(columns, pairs)?))
    }
}
