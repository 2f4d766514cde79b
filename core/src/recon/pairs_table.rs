//! `PairsTable`: a table whose scan pairs two logical plans' rows by key with a [`PairExec`].
//!
//! Like a write ([`crate::cache::write`]), the pairing travels to the scheduler as a table in an
//! ordinary query: the logical codec carries both sides' plans, and the scheduler plans them where
//! it plans the scan. Each side is hash-partitioned on its key into as many partitions as the
//! session's `target_partitions`, which Ballista turns into one shuffle per side; every task of
//! the stage above pairs one partition of each.

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
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use serde::{Deserialize, Serialize};

use super::pair::{PairExec, key_columns, paired_schema};
use crate::codec::{decode_plan, encode_plan};

/// What a pairing carries through the logical plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairsSpec {
    /// Each side's plan, as [`encode_plan`] encodes it.
    pub left: String,
    pub right: String,
    /// How many leading columns of each side are the key.
    pub keys: usize,
}

#[derive(Debug)]
pub struct PairsTable {
    left: LogicalPlan,
    right: LogicalPlan,
    keys: usize,
    schema: SchemaRef,
}

impl PairsTable {
    /// Pairs `left`'s and `right`'s rows by their first `keys` columns (the same types on both).
    pub fn new(left: LogicalPlan, right: LogicalPlan, keys: usize) -> Self {
        let schema = paired_schema(left.schema().as_arrow(), right.schema().as_arrow(), keys);
        Self {
            left,
            right,
            keys,
            schema,
        }
    }

    pub fn spec(&self) -> Result<PairsSpec> {
        Ok(PairsSpec {
            left: encode_plan(&self.left)?,
            right: encode_plan(&self.right)?,
            keys: self.keys,
        })
    }

    pub fn from_spec(spec: PairsSpec, ctx: &TaskContext) -> Result<Self> {
        Ok(Self::new(
            decode_plan(&spec.left, ctx)?,
            decode_plan(&spec.right, ctx)?,
            spec.keys,
        ))
    }

    /// The two sides' plans, left first.
    pub fn inputs(&self) -> [&LogicalPlan; 2] {
        [&self.left, &self.right]
    }

    /// A side's physical plan, hash-partitioned on its key.
    async fn side(&self, state: &dyn Session, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        let input = state.create_physical_plan(plan).await?;
        let keys = key_columns(&input.schema(), self.keys);
        let partitions = state.config().target_partitions();
        Ok(Arc::new(RepartitionExec::try_new(
            input,
            Partitioning::Hash(keys, partitions),
        )?))
    }
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
        let left = self.side(state, &self.left).await?;
        let right = self.side(state, &self.right).await?;
        let pairs: Arc<dyn ExecutionPlan> = Arc::new(PairExec::try_new(self.keys, left, right)?);
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
