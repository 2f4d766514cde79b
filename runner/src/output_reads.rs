//! Where a statement runs: one that only projects, filters and limits a single job output is read
//! by the runner straight from the output's parquet files; anything else runs on the cluster.
//!
//! Sent to the cluster, such a statement would have the executors read the same files, write
//! every row to their shuffle files and send them back to the runner: two extra copies of the
//! whole output and a wait for the last executor before the first row moves. Reading the files
//! here streams batch by batch, with the memory of a few row groups, as the results download
//! already does. Joins, aggregates, sorts and anything reading a source or connection need the
//! cluster, and go there.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::DataFrame;

use crate::catalog::RESULTS_CATALOG;

/// `frame`'s rows as a stream: read here when [`reads_one_output`], on the cluster otherwise.
pub async fn execute(frame: DataFrame) -> Result<SendableRecordBatchStream> {
    let (state, plan) = frame.into_parts();
    let plan = state.optimize(&plan)?;
    let physical: Arc<dyn ExecutionPlan> = if reads_one_output(&plan) {
        tracing::debug!("reading a job output's files on the runner");
        DefaultPhysicalPlanner::default()
            .create_physical_plan(&plan, &state)
            .await?
    } else {
        state.query_planner().create_physical_plan(&plan, &state).await?
    };
    execute_stream(physical, state.task_ctx())
}

/// Whether the optimized `plan` scans one table, a job output, and only projects, filters,
/// renames or limits its rows: a plan that streams from the files in bounded memory.
pub fn reads_one_output(plan: &LogicalPlan) -> bool {
    let mut scans = 0;
    let mut streams = true;
    let visited = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) if scan.table_name.catalog() == Some(RESULTS_CATALOG) => scans += 1,
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_) => {}
            _ => {
                streams = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    visited.is_ok() && streams && scans == 1
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider};
    use datafusion::datasource::empty::EmptyTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A session with `results.job_1.matched` and a connection's `pg.public.orders`, both empty
    /// tables of `(id, amount)`.
    fn session() -> SessionContext {
        let session = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, true),
        ]));
        for (catalog, schema_name, table) in
            [(RESULTS_CATALOG, "job_1", "matched"), ("pg", "public", "orders")]
        {
            let schemas = Arc::new(MemorySchemaProvider::new());
            schemas
                .register_table(table.into(), Arc::new(EmptyTable::new(schema.clone())))
                .unwrap();
            let catalogs = Arc::new(MemoryCatalogProvider::new());
            catalogs.register_schema(schema_name, schemas).unwrap();
            session.register_catalog(catalog, catalogs);
        }
        session
    }

    async fn read_here(sql: &str) -> bool {
        let session = session();
        let plan = session.state().create_logical_plan(sql).await.unwrap();
        reads_one_output(&session.state().optimize(&plan).unwrap())
    }

    #[tokio::test]
    async fn projections_filters_and_limits_of_one_output_are_read_here() {
        for sql in [
            "SELECT * FROM results.job_1.matched",
            "SELECT id, amount * 2 AS doubled FROM results.job_1.matched WHERE amount > 10 LIMIT 5",
            "SELECT m.id FROM results.job_1.matched m WHERE m.id IN (1, 2, 3)",
            "WITH big AS (SELECT * FROM results.job_1.matched WHERE amount > 100) SELECT id FROM big",
        ] {
            assert!(read_here(sql).await, "{sql} should be read on the runner");
        }
    }

    #[tokio::test]
    async fn everything_else_runs_on_the_cluster() {
        for sql in [
            "SELECT * FROM pg.public.orders",
            "SELECT count(*) FROM results.job_1.matched",
            "SELECT * FROM results.job_1.matched ORDER BY amount",
            "SELECT DISTINCT id FROM results.job_1.matched",
            "SELECT * FROM results.job_1.matched m JOIN pg.public.orders o ON m.id = o.id",
            "SELECT * FROM results.job_1.matched UNION ALL SELECT * FROM results.job_1.matched",
            "SELECT * FROM results.job_1.matched WHERE id IN (SELECT id FROM pg.public.orders)",
            "SELECT id, sum(amount) OVER (ORDER BY id) FROM results.job_1.matched",
            "SELECT 1",
        ] {
            assert!(!read_here(sql).await, "{sql} should run on the cluster");
        }
    }
}
