//! A recipe's dry run: a sample of its left side and the right rows that could pair with it,
//! read on the cluster, then every pass run on the runner in memory. Nothing is written.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use kalla_core::json_rows::{ValueStyle, json_rows};
use kalla_core::preview::{PreviewColumn, predicate};
use kalla_core::recon::dry_run::{self, RIGHT_ROWS_PER_LEFT_ROW};
use kalla_core::recon::plan::OUTPUTS;
use kalla_core::recon::{ParamValues, Recipe, Side, params};
use serde::{Deserialize, Serialize};

use super::{RecipeError, Recipes};

/// Left rows a dry run samples if not told.
pub const DEFAULT_SAMPLE_ROWS: usize = 100;
pub use dry_run::MAX_SAMPLE_ROWS;
/// Rows of each output a dry run shows (it counts them all).
pub const MAX_SHOWN_ROWS: usize = 200;
/// Bytes of pairs per partition in memory: a sample is small, so one or two partitions.
const PARTITION_BYTES: u64 = 64 * 1024 * 1024;

/// What a dry run tries: a recipe (stored or not), on how many left rows, with which parameters.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    pub recipe: Recipe,
    /// Left rows sampled (after the left side's filters): 1 to 1000; 100 if not given.
    pub sample_rows: Option<i64>,
    /// Values of the recipe's parameters, as a run takes them (defaults fill the rest).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// What a recipe makes of a sample.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRunView {
    /// Left rows sampled: the first `sample_rows` the left side's filters keep.
    pub left_rows: usize,
    /// Right rows sampled: those the right side's filters keep whose key equals a sampled left
    /// row's in some pass (at most 10 per left row). So `right_only` stays empty unless a pass's
    /// rules split a key's rows: a right row no sampled left row could pair with is not read.
    pub right_rows: usize,
    /// Every output of a run, in the order a run lists them.
    pub outputs: Vec<DryRunOutput>,
}

/// One output of a dry run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRunOutput {
    pub name: String,
    /// Rows the sample put in this output.
    pub total_rows: usize,
    pub columns: Vec<PreviewColumn>,
    /// The first 200 of them, as text; `null` is SQL NULL.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
}

impl Recipes {
    /// Runs `request`'s recipe on a sample of its sources as they are now.
    pub async fn dry_run(
        &self,
        request: DryRunRequest,
        sample_rows: usize,
    ) -> Result<DryRunView, RecipeError> {
        let values = params::resolve(&request.recipe.params, &request.params)?;
        let recipe = request.recipe.with_params(&values)?;
        let checked = self.check(&recipe, &values).await?;
        let session = self.cluster.session();
        let left = self.side(&session, "left", &recipe.left, &values).await?;
        let left = Sample::of(left, sample_rows).await?;
        let right = self.side(&session, "right", &recipe.right, &values).await?;
        let right = match dry_run::partners_of(&left.rows, &checked).map_err(sample_error)? {
            Some(partners) => {
                let most = sample_rows * RIGHT_ROWS_PER_LEFT_ROW;
                Sample::of(right.filter(partners).map_err(sample_error)?, most).await?
            }
            None => Sample::of(right, 0).await?,
        };
        let (left_rows, right_rows) = (left.count(), right.count());

        let local = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        let sides = (left.in_memory(&local)?, right.in_memory(&local)?);
        let mut outputs = dry_run::run(&local, sides, &checked, PARTITION_BYTES)
            .await
            .map_err(sample_error)?
            .into_iter()
            .map(|(name, batches)| output(name, &batches))
            .collect::<Result<Vec<_>, _>>()?;
        outputs.sort_by_key(|o| OUTPUTS.iter().position(|name| *name == o.name));
        Ok(DryRunView {
            left_rows,
            right_rows,
            outputs,
        })
    }

    /// One side's rows as a run reads them: its source, through its filters.
    async fn side(
        &self,
        session: &SessionContext,
        name: &'static str,
        side: &Side,
        values: &ParamValues,
    ) -> Result<DataFrame, RecipeError> {
        let frame = self
            .catalog
            .read(session, &side.source, false, values)
            .await
            .map_err(|error| RecipeError::Source { side: name, error })?;
        let fields: Vec<_> = frame.schema().fields().iter().cloned().collect();
        match predicate(&fields, &side.filters).map_err(|e| RecipeError::Sample(e.to_string()))? {
            Some(predicate) => frame.filter(predicate).map_err(sample_error),
            None => Ok(frame),
        }
    }
}

/// Rows of one side, read on the cluster.
struct Sample {
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
}

impl Sample {
    async fn of(frame: DataFrame, most: usize) -> Result<Self, RecipeError> {
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let rows = match most {
            0 => Vec::new(),
            most => frame
                .limit(0, Some(most))
                .map_err(sample_error)?
                .collect()
                .await
                .map_err(sample_error)?,
        };
        Ok(Self { schema, rows })
    }

    fn count(&self) -> usize {
        self.rows.iter().map(RecordBatch::num_rows).sum()
    }

    fn in_memory(self, ctx: &SessionContext) -> Result<DataFrame, RecipeError> {
        let table = MemTable::try_new(self.schema, vec![self.rows]).map_err(sample_error)?;
        ctx.read_table(Arc::new(table)).map_err(sample_error)
    }
}

fn output(name: String, batches: &[RecordBatch]) -> Result<DryRunOutput, RecipeError> {
    let total_rows = batches.iter().map(RecordBatch::num_rows).sum();
    let columns = match batches.first() {
        Some(batch) => batch
            .schema()
            .fields()
            .iter()
            .map(|f| PreviewColumn::from_field(f))
            .collect(),
        None => Vec::new(),
    };
    let mut rows = json_rows(batches, ValueStyle::Text).map_err(|e| sample_error(e.into()))?;
    rows.truncate(MAX_SHOWN_ROWS);
    Ok(DryRunOutput {
        name,
        total_rows,
        columns,
        rows,
    })
}

fn sample_error(error: DataFusionError) -> RecipeError {
    RecipeError::Sample(error.to_string())
}
