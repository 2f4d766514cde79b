//! Open items of a `carry_forward` recipe's runs: each run reads the open items the run before it
//! left beside its own new rows, and leaves its own unmatched rows as open items in turn.
//!
//! A run's open items are its `left_only` and `right_only` rows and both sides of its
//! `mismatched` pairs, written per side in the columns the passes read under
//! `open-items/{recipe_id}/{job_id}/{left|right}/` (apart from results, so never swept with
//! them), and recorded in the metadata DB as one item per side and first-pass key. Ages count
//! run dates: a run's date is its `run_date` parameter if the recipe declares one, else the day
//! it was submitted. Runs of a recipe move its items forward one at a time: a run that another
//! run overtook after it read the items fails, to be run again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast as cast_array;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions::expr_fn::{coalesce, concat_ws};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use kalla_core::cache::sink::write_empty;
use kalla_core::cache::{CacheDir, parquet_dir_table};
use kalla_core::recon::CheckedRecipe;
use kalla_core::recon::pair::SIDE;
use kalla_core::recon::plan::{self, LEFT_ONLY, MATCHED, MISMATCHED, RIGHT_ONLY};
use kalla_core::storage;
use serde::Serialize;

use super::submit::RunInputs;
use super::{JobError, Jobs, failed};
use crate::metadata::{Carried, CarryCounts, CarryRun, JobRecord, SeenItem};

/// Separates a key's parts in its text form; stands for a null part.
const KEY_SEPARATOR: &str = "\u{1f}";
const NULL_PART: &str = "\u{0}";
const KEY_TEXT: &str = "__key";
const ROWS: &str = "__rows";

/// The schema of each of a run's outputs.
type Schemas = HashMap<String, SchemaRef>;

/// Where a run of a `carry_forward` recipe starts from.
pub(super) struct Carry {
    recipe_id: String,
    run_date: NaiveDate,
    /// The run whose open items this one reads.
    read: Option<String>,
    /// Of those, the (side, key) resolved by hand since that run.
    resolved: Vec<(String, String)>,
    /// This run recorded its items before (it is running again).
    recorded: bool,
}

/// What a run did to its recipe's open items, and their ages after it.
#[derive(Debug, Serialize)]
pub(super) struct OpenItemsSummary {
    run_date: String,
    /// Items open after the run.
    open: i64,
    #[serde(flatten)]
    counts: CarryCounts,
    /// Open items by age in run days: `0-1`, `2-7`, `8-30`, `over_30`.
    aging: BTreeMap<&'static str, i64>,
}

impl Jobs {
    /// Where a run of the carry_forward recipe starts from: the open items of the last run that
    /// recorded its own when this run first started, whichever attempt this is. A run overtaken
    /// since (another run recorded after it read) fails at once.
    pub(super) async fn carry_in(&self, job: &JobRecord, inputs: &RunInputs) -> Result<Carry, JobError> {
        let recipe_id = job.recipe_id.clone().ok_or_else(|| {
            JobError::InvalidRequest("carry_forward keeps open items for a stored recipe only".into())
        })?;
        let run_date = run_date(job, inputs)?;
        let start = self.inner.db.begin_carry(&recipe_id, &job.id).await?;
        let last = self.inner.db.carried_forward(&recipe_id).await?;
        if let (false, Some(last)) = (start.recorded, &last) {
            if start.read.as_deref() != Some(last.job_id.as_str()) {
                return Err(overtaken(&last.job_id));
            }
            if last.run_date > run_date.to_string() {
                return Err(failed(format!(
                    "run date {run_date} is before {}, the date of job {} whose open items this \
                     recipe carries: open items only move forward in run dates",
                    last.run_date, last.job_id
                )));
            }
        }
        let read = start.read;
        let recorded = start.recorded;
        let resolved = match &read {
            Some(read) => self.inner.db.resolved_items(&recipe_id, read).await?,
            None => Vec::new(),
        };
        Ok(Carry {
            recipe_id,
            run_date,
            read,
            resolved,
            recorded,
        })
    }

    /// One side's input: its new rows, in the columns the passes read, and the open items it
    /// carries in (less those resolved since).
    pub(super) fn with_open_items(
        &self,
        session: &SessionContext,
        carry: &Carry,
        new_rows: DataFrame,
        recipe: &CheckedRecipe,
        left: bool,
    ) -> Result<DataFrame, JobError> {
        let columns: Vec<Expr> = recipe
            .columns(left)
            .iter()
            .map(|f| column(f.name()).alias(f.name()))
            .collect();
        let new_rows = new_rows.select(columns).map_err(failed)?;
        let Some(read) = &carry.read else {
            return Ok(new_rows);
        };
        let dir = self.open_items_dir(&carry.recipe_id, read, left);
        let table = parquet_dir_table(dir.as_str(), open_items_schema(recipe, left)).map_err(failed)?;
        let mut open = session.read_table(table).map_err(failed)?;
        let resolved: Vec<Expr> = carry
            .resolved
            .iter()
            .filter(|(side, _)| side == side_name(left))
            .filter_map(|(_, key)| key_text_of_json(key))
            .map(lit)
            .collect();
        if !resolved.is_empty() {
            let key = key_text(&key_columns(recipe, left));
            open = open.filter(key.in_list(resolved, true)).map_err(failed)?;
        }
        new_rows.union(open).map_err(failed)
    }

    /// Writes what the run left unmatched as its recipe's open items and records them: the
    /// run's effect on the items, and their ages after it.
    pub(super) async fn carry_out(
        &self,
        job: &JobRecord,
        carry: &Carry,
        recipe: &CheckedRecipe,
        dir: &CacheDir,
        schemas: &Schemas,
    ) -> Result<OpenItemsSummary, JobError> {
        if !carry.recorded {
            let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
            let root = &self.inner.settings.root;
            storage::register_location(&ctx, root.as_str(), &self.inner.settings.s3).map_err(failed)?;
            let outputs = RunOutputs {
                ctx: &ctx,
                dir,
                schemas,
            };
            let mut open = Vec::new();
            let mut matched = HashSet::new();
            let was_open = self.inner.db.open_item_keys(&carry.recipe_id).await?;
            for left in [true, false] {
                let written = self.write_open_items(&outputs, job, carry, recipe, left).await?;
                open.extend(seen_items(written, recipe, left).await?);
                let candidates: Vec<&str> = was_open
                    .iter()
                    .filter(|(side, _)| side == side_name(left))
                    .map(|(_, key)| key.as_str())
                    .collect();
                matched.extend(matched_keys(&outputs, recipe, left, &candidates).await?);
            }
            let run_date = carry.run_date.to_string();
            let recorded = self
                .inner
                .db
                .record_carry(CarryRun {
                    recipe_id: &carry.recipe_id,
                    job_id: &job.id,
                    run_date: &run_date,
                    read: carry.read.as_deref(),
                    open: &open,
                    matched: &matched,
                })
                .await?;
            if let Carried::Overtaken { by } = recorded {
                return Err(overtaken(&by));
            }
        }
        let by_first_seen = self.inner.db.open_items_by_first_seen(&carry.recipe_id).await?;
        Ok(OpenItemsSummary {
            run_date: carry.run_date.to_string(),
            open: by_first_seen.values().sum(),
            counts: self.inner.db.carry_counts(&carry.recipe_id, &job.id).await?,
            aging: aging(carry.run_date, &by_first_seen),
        })
    }

    /// Writes one side's unmatched rows (from the run's outputs) as the run's open items of that
    /// side, and returns them as a frame.
    async fn write_open_items(
        &self,
        outputs: &RunOutputs<'_>,
        job: &JobRecord,
        carry: &Carry,
        recipe: &CheckedRecipe,
        left: bool,
    ) -> Result<DataFrame, JobError> {
        let alone = if left { LEFT_ONLY } else { RIGHT_ONLY };
        let alone = plan::as_source(outputs.read(alone)?, recipe, left).map_err(failed)?;
        let paired = outputs.read(MISMATCHED)?.filter(of_side(left)).map_err(failed)?;
        let paired = plan::as_source(paired, recipe, left).map_err(failed)?;
        let target = self.open_items_dir(&carry.recipe_id, &job.id, left);
        let store = storage::object_store_for(target.url(), &self.inner.settings.s3).map_err(failed)?;
        target.delete_all(&store).await.map_err(failed)?;
        // A scan of a directory without files plans differently on the scheduler and the
        // executors, which Ballista cannot reconcile: the next run must find a file, rows or not.
        let path = target.path().map_err(failed)?;
        write_empty(&store, path, open_items_schema(recipe, left))
            .await
            .map_err(failed)?;
        alone
            .union(paired)
            .map_err(failed)?
            .write_parquet(target.as_str(), DataFrameWriteOptions::new(), None)
            .await
            .map_err(failed)?;
        let table = parquet_dir_table(target.as_str(), open_items_schema(recipe, left)).map_err(failed)?;
        outputs.ctx.read_table(table).map_err(failed)
    }

    fn open_items_dir(&self, recipe_id: &str, job_id: &str, left: bool) -> CacheDir {
        self.inner
            .settings
            .root
            .join(&["open-items", recipe_id, job_id, side_name(left)])
    }
}

fn overtaken(by: &str) -> JobError {
    failed(format!(
        "job {by} recorded the open items of this recipe after this run read them; \
         submit the run again to carry them forward"
    ))
}

fn side_name(left: bool) -> &'static str {
    if left { "left" } else { "right" }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// The date a run's open items are aged by.
fn run_date(job: &JobRecord, inputs: &RunInputs) -> Result<NaiveDate, JobError> {
    let (date, what) = match inputs.params.get("run_date") {
        Some(date) => (date.as_str(), "parameter run_date"),
        None => (job.created_at.get(..10).unwrap_or_default(), "submission date"),
    };
    NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
        JobError::InvalidRequest(format!("the run's {what} {date:?} is not a date (YYYY-MM-DD)"))
    })
}

/// A run's outputs, read in the runner before they are published (no file where one has no rows).
struct RunOutputs<'a> {
    ctx: &'a SessionContext,
    dir: &'a CacheDir,
    schemas: &'a Schemas,
}

impl RunOutputs<'_> {
    fn read(&self, name: &str) -> Result<DataFrame, JobError> {
        let schema = self
            .schemas
            .get(name)
            .cloned()
            .ok_or_else(|| failed(format!("no schema for output {name}")))?;
        let table = parquet_dir_table(self.dir.join(&[name]).as_str(), schema).map_err(failed)?;
        self.ctx.read_table(table).map_err(failed)
    }
}

/// One side's open items as stored: the columns the passes read, any of them null.
fn open_items_schema(recipe: &CheckedRecipe, left: bool) -> SchemaRef {
    let fields: Vec<Field> = recipe
        .columns(left)
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Rows of a decided output that belong to one side: its paired rows and that side's members.
fn of_side(left: bool) -> Expr {
    column(SIDE).is_null().or(column(SIDE).eq(lit(side_name(left))))
}

/// The first pass's key columns of one side, by their names in the source.
fn key_columns(recipe: &CheckedRecipe, left: bool) -> Vec<String> {
    recipe.passes[0]
        .keys
        .iter()
        .map(|key| if left { key.left.name() } else { key.right.name() }.clone())
        .collect()
}

/// A key's text form as an expression: its parts as text, joined.
fn key_text(columns: &[String]) -> Expr {
    let parts = columns
        .iter()
        .map(|name| coalesce(vec![cast(column(name), DataType::Utf8), lit(NULL_PART)]))
        .collect();
    cast(concat_ws(lit(KEY_SEPARATOR), parts), DataType::Utf8)
}

/// A key's JSON form (an array of text parts, null for a null part) from its text form.
fn key_json_of_text(text: &str) -> String {
    let parts: Vec<Option<&str>> = text
        .split(KEY_SEPARATOR)
        .map(|part| (part != NULL_PART).then_some(part))
        .collect();
    serde_json::to_string(&parts).expect("text parts serialize")
}

fn key_text_of_json(json: &str) -> Option<String> {
    let parts: Vec<Option<String>> = serde_json::from_str(json).ok()?;
    let parts: Vec<&str> = parts.iter().map(|p| p.as_deref().unwrap_or(NULL_PART)).collect();
    Some(parts.join(KEY_SEPARATOR))
}

/// One side's open items: rows per key.
async fn seen_items(rows: DataFrame, recipe: &CheckedRecipe, left: bool) -> Result<Vec<SeenItem>, JobError> {
    let key = key_text(&key_columns(recipe, left));
    let batches = rows
        .aggregate(vec![key.alias(KEY_TEXT)], vec![count(lit(1)).alias(ROWS)])
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    let mut items = Vec::new();
    for batch in batches {
        let keys = cast_array(batch.column(0), &DataType::Utf8).map_err(failed)?;
        let rows = cast_array(batch.column(1), &DataType::Int64).map_err(failed)?;
        let (keys, rows) = (keys.as_string::<i32>(), rows.as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            items.push(SeenItem {
                side: side_name(left).to_string(),
                key_json: key_json_of_text(keys.value(i)),
                rows: rows.value(i),
            });
        }
    }
    Ok(items)
}

/// Which of `candidates` (keys of one side, as JSON) the run's `matched` output holds.
async fn matched_keys(
    outputs: &RunOutputs<'_>,
    recipe: &CheckedRecipe,
    left: bool,
    candidates: &[&str],
) -> Result<HashSet<(String, String)>, JobError> {
    let texts: Vec<Expr> = candidates
        .iter()
        .filter_map(|k| key_text_of_json(k))
        .map(lit)
        .collect();
    if texts.is_empty() {
        return Ok(HashSet::new());
    }
    let columns: Vec<String> = key_columns(recipe, left)
        .iter()
        .map(|name| plan::carried(left, name))
        .collect();
    let key = key_text(&columns);
    let batches = outputs
        .read(MATCHED)?
        .filter(of_side(left).and(key.clone().in_list(texts, false)))
        .map_err(failed)?
        .select(vec![key.alias(KEY_TEXT)])
        .map_err(failed)?
        .distinct()
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    let mut matched = HashSet::new();
    for batch in batches {
        let keys = cast_array(batch.column(0), &DataType::Utf8).map_err(failed)?;
        let keys = keys.as_string::<i32>();
        for i in 0..keys.len() {
            matched.insert((side_name(left).to_string(), key_json_of_text(keys.value(i))));
        }
    }
    Ok(matched)
}

/// Open items by age in run days on `run_date`, from their counts by run date first seen.
fn aging(run_date: NaiveDate, by_first_seen: &BTreeMap<String, i64>) -> BTreeMap<&'static str, i64> {
    let mut buckets = BTreeMap::from([("0-1", 0), ("2-7", 0), ("8-30", 0), ("over_30", 0)]);
    for (first_seen, count) in by_first_seen {
        let age = NaiveDate::parse_from_str(first_seen, "%Y-%m-%d")
            .map(|first| (run_date - first).num_days())
            .unwrap_or_default();
        let bucket = match age {
            ..=1 => "0-1",
            2..=7 => "2-7",
            8..=30 => "8-30",
            _ => "over_30",
        };
        *buckets.entry(bucket).or_default() += count;
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_fall_in_their_buckets_by_run_days() {
        let run = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        let seen = BTreeMap::from([
            ("2026-12-31".to_string(), 1),
            ("2026-12-30".to_string(), 2),
            ("2026-12-29".to_string(), 4),
            ("2026-12-24".to_string(), 8),
            ("2026-12-23".to_string(), 16),
            ("2026-12-01".to_string(), 32),
            ("2026-11-30".to_string(), 64),
        ]);
        assert_eq!(
            aging(run, &seen),
            BTreeMap::from([("0-1", 3), ("2-7", 12), ("8-30", 48), ("over_30", 64)])
        );
    }

    #[test]
    fn a_key_keeps_its_parts_and_nulls_between_its_forms() {
        let json = r#"["INV-1",null,"2026-11-30"]"#;
        let text = key_text_of_json(json).unwrap();
        assert_eq!(text, "INV-1\u{1f}\u{0}\u{1f}2026-11-30");
        assert_eq!(key_json_of_text(&text), json);
        assert_eq!(key_text_of_json("not json"), None);
    }
}
