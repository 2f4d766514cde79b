//! A recipe tried on samples of its sides: every pass run in-process over rows held in memory,
//! each output's rows returned instead of written. What a person building a recipe looks at
//! before a run reads the whole of both sources.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt8Array};
use datafusion::arrow::compute::{filter_record_batch, kernels::cmp::eq};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::{DataFrame, SessionContext, col};

use super::plan::{self, OUTPUTS};
use super::recipe::{CheckedPass, CheckedRecipe, KeyPair};

/// Most left rows a dry run samples.
pub const MAX_SAMPLE_ROWS: usize = 1000;

/// Right rows sampled per left row at most (a key may have several partners).
pub const RIGHT_ROWS_PER_LEFT_ROW: usize = 10;

/// A filter on the right side keeping the rows whose keys equal some sampled left row's in some
/// pass, so a sample shows what would pair rather than two unrelated slices. `None` when no
/// sampled left row has a whole key (nothing on the right could pair). A one-column key is one
/// `IN` list; the filter stays shallow however many rows are sampled (plans travel as nested
/// protobuf, whose readers limit its depth).
pub fn partners_of(left: &[RecordBatch], recipe: &CheckedRecipe) -> Result<Option<Expr>> {
    let mut per_pass = Vec::new();
    for pass in &recipe.passes {
        let mut rows = Vec::new();
        for batch in left {
            for row in 0..batch.num_rows() {
                if let Some(values) = key_values(batch, row, pass)? {
                    rows.push(values);
                }
            }
        }
        if rows.is_empty() {
            continue;
        }
        let columns: Vec<Expr> = pass.keys.iter().map(right_key).collect();
        per_pass.push(match columns.as_slice() {
            [column] => column
                .clone()
                .in_list(rows.into_iter().flatten().map(lit).collect(), false),
            _ => any_of(
                rows.into_iter()
                    .map(|values| {
                        all_of(
                            columns
                                .iter()
                                .zip(values)
                                .map(|(c, v)| c.clone().eq(lit(v)))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        });
    }
    Ok((!per_pass.is_empty()).then(|| any_of(per_pass)))
}

/// A sampled left row's key values in the keys' common type; `None` when a key part is null
/// (such a row pairs with nothing).
fn key_values(batch: &RecordBatch, row: usize, pass: &CheckedPass) -> Result<Option<Vec<ScalarValue>>> {
    let mut values = Vec::with_capacity(pass.keys.len());
    for key in &pass.keys {
        let Some(column) = batch.column_by_name(key.left.name()) else {
            return Ok(None);
        };
        let value = ScalarValue::try_from_array(column, row)?;
        if value.is_null() {
            return Ok(None);
        }
        values.push(value.cast_to(&key.common)?);
    }
    Ok(Some(values))
}

/// A right key column in the keys' common type: uncast where it has it already, so a source that
/// can filter pushes the comparison down.
fn right_key(key: &KeyPair) -> Expr {
    let column = col(quoted(key.right.name()));
    match key.right.data_type() == &key.common {
        true => column,
        false => cast(column, key.common.clone()),
    }
}

/// `a OR b OR …` as a balanced tree, `log2(n)` deep.
fn any_of(mut exprs: Vec<Expr>) -> Expr {
    if exprs.len() == 1 {
        return exprs.pop().expect("one");
    }
    let right = exprs.split_off(exprs.len() / 2);
    any_of(exprs).or(any_of(right))
}

/// `a AND b AND …` (a key has few columns).
fn all_of(exprs: Vec<Expr>) -> Expr {
    exprs.into_iter().reduce(Expr::and).expect("a key has a column")
}

/// A column name as `col` takes it: quoted, so a name with a dot or capitals is one column.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs every pass of `recipe` in `ctx` over `sides`, as a job runs them on the cluster: each
/// pass's decided rows go to their outputs, the rest to the next pass. Returns every output's
/// rows (an output no row reached has none).
pub async fn run(
    ctx: &SessionContext,
    mut sides: (DataFrame, DataFrame),
    recipe: &CheckedRecipe,
    partition_bytes: u64,
) -> Result<BTreeMap<String, Vec<RecordBatch>>> {
    let mut outputs: BTreeMap<String, Vec<RecordBatch>> =
        OUTPUTS.iter().map(|o| (o.to_string(), Vec::new())).collect();
    for index in 0..recipe.passes.len() {
        let (frame, split) = plan::classify(sides.0, sides.1, recipe, index, partition_bytes)?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await?;
        let mut remaining = Vec::new();
        for (route, output) in split.outputs.iter().enumerate() {
            let mut chosen = Vec::new();
            for batch in &batches {
                let here = eq(
                    batch.column(split.route_column),
                    &UInt8Array::new_scalar(route as u8),
                )?;
                chosen.push(filter_record_batch(&batch.project(&output.columns)?, &here)?);
            }
            match outputs.get_mut(&output.name) {
                Some(rows) => rows.extend(chosen),
                None => {
                    let schema = Arc::new(schema.project(&output.columns)?);
                    remaining.push(Arc::new(MemTable::try_new(schema, vec![chosen])?));
                }
            }
        }
        let [left, right] = match <[Arc<MemTable>; 2]>::try_from(remaining) {
            Ok(both) => both,
            // The last pass passes nothing on.
            Err(_) => break,
        };
        sides = (
            plan::as_source(ctx.read_table(left)?, recipe, true)?,
            plan::as_source(ctx.read_table(right)?, recipe, false)?,
        );
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use serde_json::json;

    use super::*;
    use crate::recon::Recipe;

    fn batch(ids: &[Option<i64>], names: &[&str]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("Id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    fn recipe(left: &RecordBatch, right: &RecordBatch) -> CheckedRecipe {
        let recipe: Recipe = serde_json::from_value(json!({
            "name": "r",
            "left": {"source": "a", "key": ["Id"]},
            "right": {"source": "b", "key": ["Id"]},
            "rules": [{"kind": "equal", "left": "name", "right": "name"}]
        }))
        .unwrap();
        recipe.check(&left.schema(), &right.schema()).unwrap()
    }

    #[tokio::test]
    async fn partners_keep_the_right_rows_a_sampled_left_row_could_pair_with() {
        let left = batch(&[Some(1), None, Some(3)], &["a", "b", "c"]);
        let right = batch(&[Some(1), Some(2), Some(3), None], &["a", "x", "z", "b"]);
        let recipe = recipe(&left, &right);
        let filter = partners_of(std::slice::from_ref(&left), &recipe)
            .unwrap()
            .unwrap();
        let ctx = SessionContext::new();
        let kept = ctx.read_batch(right).unwrap().filter(filter).unwrap();
        let ids: Vec<i64> = kept
            .collect()
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids, [1, 3]);

        let no_keys = batch(&[None], &["a"]);
        assert!(partners_of(&[no_keys], &recipe).unwrap().is_none());
    }

    #[tokio::test]
    async fn partners_of_a_two_column_key_match_both_columns() {
        let left = batch(&[Some(1), Some(2)], &["a", "b"]);
        let right = batch(&[Some(1), Some(1), Some(2), Some(3)], &["a", "x", "b", "a"]);
        let recipe: Recipe = serde_json::from_value(json!({
            "name": "r",
            "left": {"source": "a", "key": ["Id", "name"]},
            "right": {"source": "b", "key": ["Id", "name"]},
            "rules": [{"kind": "equal", "left": "name", "right": "name"}],
        }))
        .unwrap();
        let recipe = recipe.check(&left.schema(), &right.schema()).unwrap();
        let filter = partners_of(std::slice::from_ref(&left), &recipe)
            .unwrap()
            .unwrap();
        let ctx = SessionContext::new();
        let kept = ctx
            .read_batch(right)
            .unwrap()
            .filter(filter)
            .unwrap()
            .collect()
            .await
            .unwrap();
        let names: Vec<&str> = kept
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .iter()
                    .flatten()
            })
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_one_column_key_is_one_in_list_however_many_rows() {
        let ids: Vec<Option<i64>> = (0..1000).map(Some).collect();
        let left = batch(&ids, &["a"; 1000]);
        let recipe = recipe(&left, &left);
        match partners_of(&[left], &recipe).unwrap() {
            Some(Expr::InList(list)) => assert_eq!(list.list.len(), 1000),
            other => panic!("not one IN list: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_dry_run_returns_each_outputs_rows() {
        let left = batch(&[Some(1), Some(2), Some(3)], &["a", "b", "c"]);
        let right = batch(&[Some(1), Some(2), Some(4)], &["a", "x", "d"]);
        let recipe = recipe(&left, &right);
        let ctx = SessionContext::new();
        let sides = (ctx.read_batch(left).unwrap(), ctx.read_batch(right).unwrap());
        let outputs = run(&ctx, sides, &recipe, 4096).await.unwrap();
        let rows = |name: &str| outputs[name].iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(
            OUTPUTS.map(|o| (o, rows(o))),
            [
                ("matched", 1),
                ("mismatched", 1),
                ("left_only", 1),
                ("right_only", 1),
                ("duplicates", 0),
                ("exceptions", 0),
                ("ambiguous", 0)
            ]
        );
    }
}
