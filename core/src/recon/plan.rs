//! The plan of a reconciliation run, built with DataFusion's DataFrame API (identifiers are
//! never spliced into SQL).
//!
//! One pass ([`classify`]): both sides' keys and compared columns are shuffled on the key and
//! paired by a [`PairsTable`] scan (see [`super::pair`]), which tells each row whether it pairs
//! with the one row of its key on the other side, is alone, or is a duplicate on its own side.
//! The rules are evaluated on the paired rows, and every row is routed to its output as the
//! executors write. No join: rows are never multiplied.

use std::ops::Not;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::functions::expr_fn::{abs, btrim, coalesce, concat_ws, lower};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, Operator, binary_expr, cast, lit, when};
use datafusion::prelude::DataFrame;

use super::pair::{FATE, Fate, SIDE};
use super::pairs_table::PairsTable;
use super::recipe::{CheckedRecipe, CheckedRule, MATCH_SQL, Rule, Tolerance};
use crate::cache::sink::{Split, SplitOutput};

/// Outputs users see; a row's route is its output's index in [`OUTPUTS`].
pub const MATCHED: &str = "matched";
pub const MISMATCHED: &str = "mismatched";
pub const LEFT_ONLY: &str = "left_only";
pub const RIGHT_ONLY: &str = "right_only";
pub const DUPLICATES: &str = "duplicates";
/// Every output a finished run has.
pub const OUTPUTS: [&str; 5] = [MATCHED, MISMATCHED, LEFT_ONLY, RIGHT_ONLY, DUPLICATES];

const ROUTE: &str = "__route";
const FAILED_RULES: &str = "failed_rules";

/// The route of rows bound for `output`.
fn route_to(output: &str) -> Expr {
    let index = OUTPUTS.iter().position(|o| *o == output).expect("one of OUTPUTS");
    lit(index as u8)
}

/// Column names of the outputs, derived once from the recipe.
struct Names<'a> {
    recipe: &'a CheckedRecipe,
    left_keys: Vec<String>,
    right_keys: Vec<String>,
    /// Compared columns that are not keys: (source column, output column).
    left_values: Vec<(Field, String)>,
    right_values: Vec<(Field, String)>,
}

impl<'a> Names<'a> {
    fn new(recipe: &'a CheckedRecipe) -> Self {
        let prefixed = |side: &str, name: &str| format!("{side}_{name}");
        let values = |side: &str, keys: &[String], fields: Vec<&Field>| {
            let mut seen: Vec<(Field, String)> = Vec::new();
            for field in fields {
                let is_key = keys.iter().any(|k| k == field.name());
                if !is_key && !seen.iter().any(|(f, _)| f.name() == field.name()) {
                    seen.push((field.clone(), prefixed(side, field.name())));
                }
            }
            seen
        };
        let compared = |left: bool| {
            let from_rules = recipe
                .rules
                .iter()
                .map(move |r| if left { r.left.as_ref() } else { r.right.as_ref() });
            let from_sql = recipe
                .match_sql
                .iter()
                .flat_map(move |m| if left { &m.left } else { &m.right })
                .map(|f| f.as_ref());
            from_rules.chain(from_sql).collect::<Vec<&Field>>()
        };
        let left_key_names: Vec<String> = recipe.keys.iter().map(|k| k.left.name().clone()).collect();
        let right_key_names: Vec<String> = recipe.keys.iter().map(|k| k.right.name().clone()).collect();
        Self {
            recipe,
            left_keys: left_key_names.iter().map(|k| prefixed("left", k)).collect(),
            right_keys: right_key_names.iter().map(|k| prefixed("right", k)).collect(),
            left_values: values("left", &left_key_names, compared(true)),
            right_values: values("right", &right_key_names, compared(false)),
        }
    }

    /// Where a rule's column is found after the first pass: a key's common value or a value column.
    fn output_column(&self, source: &str, left: bool) -> Expr {
        let key = self.recipe.keys.iter().position(|k| {
            let field = if left { &k.left } else { &k.right };
            field.name() == source
        });
        match key {
            Some(i) => column(&self.left_keys[i]),
            None => column(&format!("{}_{source}", if left { "left" } else { "right" })),
        }
    }

    fn value_names(&self) -> impl Iterator<Item = &String> {
        self.left_values
            .iter()
            .chain(&self.right_values)
            .map(|(_, name)| name)
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// One side's rows as they are paired: its keys in their common type, then its compared columns.
fn side_rows(frame: DataFrame, names: &Names, left: bool) -> Result<DataFrame> {
    let (keys, values) = if left {
        (&names.left_keys, &names.left_values)
    } else {
        (&names.right_keys, &names.right_values)
    };
    let mut columns = Vec::new();
    for (pair, name) in names.recipe.keys.iter().zip(keys) {
        let source = if left { &pair.left } else { &pair.right };
        columns.push(cast(column(source.name()), pair.common.clone()).alias(name));
    }
    columns.extend(
        values
            .iter()
            .map(|(field, name)| column(field.name()).alias(name)),
    );
    frame.select(columns)
}

/// The pass: every row of both sides, with its route, paired in shuffle partitions of about
/// `partition_bytes`. Outputs, by route: [`OUTPUTS`].
pub fn classify(
    left: DataFrame,
    right: DataFrame,
    recipe: &CheckedRecipe,
    partition_bytes: u64,
) -> Result<(DataFrame, Split)> {
    let names = Names::new(recipe);
    let (state, left) = side_rows(left, &names, true)?.into_parts();
    let right = side_rows(right, &names, false)?.into_unoptimized_plan();
    let pairs = PairsTable::new(left, right, names.left_keys.len(), partition_bytes);
    let scan = LogicalPlanBuilder::scan("pairs", provider_as_source(Arc::new(pairs)), None)?.build()?;
    let paired = DataFrame::new(state, scan);

    let mut outcomes = Vec::new();
    let mut columns: Vec<Expr> = vec![column(SIDE)];
    columns.extend(names.left_keys.iter().chain(&names.right_keys).map(|k| column(k)));
    columns.extend(names.value_names().map(|name| column(name)));
    for rule in &recipe.rules {
        let left = names.output_column(rule.left.name(), true);
        let right = names.output_column(rule.right.name(), false);
        let outcome = evaluate(rule, left, right)?;
        if let Some((name, difference)) = outcome.difference {
            columns.push(difference.alias(name));
        }
        outcomes.push((rule.name.clone(), outcome.passes));
    }
    if let Some(sql) = &recipe.match_sql {
        let passes = sql.expr.clone().transform(|expr| {
            Ok(match expr {
                Expr::Column(c) => {
                    let left = c.relation.as_ref().is_some_and(|r| r.table() == "l");
                    Transformed::yes(names.output_column(&c.name, left))
                }
                other => Transformed::no(other),
            })
        })?;
        outcomes.push((MATCH_SQL.to_string(), coalesce(vec![passes.data, lit(false)])));
    }
    let failed: Vec<Expr> = outcomes
        .iter()
        .map(|(name, passes)| when(passes.clone().not(), lit(name.clone())).end())
        .collect::<Result<_>>()?;
    columns.push(
        if failed.is_empty() {
            lit("")
        } else {
            concat_ws(lit(","), failed)
        }
        .alias(FAILED_RULES),
    );
    let all_pass = outcomes
        .into_iter()
        .map(|(_, passes)| passes)
        .reduce(Expr::and)
        .unwrap_or(lit(true));
    let fate = |fate: Fate| column(FATE).eq(lit(fate as u8));
    let route = when(fate(Fate::Paired).and(all_pass), route_to(MATCHED))
        .when(fate(Fate::Paired), route_to(MISMATCHED))
        .when(fate(Fate::LeftAlone), route_to(LEFT_ONLY))
        .when(fate(Fate::RightAlone), route_to(RIGHT_ONLY))
        .otherwise(route_to(DUPLICATES))?;
    columns.push(route.alias(ROUTE));
    let classified = paired.select(columns)?;

    let schema = classified.schema().as_arrow().clone();
    let differences: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n.ends_with(DIFF_SUFFIX) || n.ends_with(DAYS_SUFFIX))
        .collect();
    let pair_columns: Vec<&String> = names
        .left_keys
        .iter()
        .chain(&names.right_keys)
        .chain(names.value_names())
        .chain(&differences)
        .collect();
    let mut mismatched_columns = pair_columns.clone();
    let failed_rules = FAILED_RULES.to_string();
    mismatched_columns.push(&failed_rules);
    let side = SIDE.to_string();
    let duplicates: Vec<&String> = std::iter::once(&side)
        .chain(&names.left_keys)
        .chain(&names.right_keys)
        .chain(names.value_names())
        .collect();
    let outputs = [
        (MATCHED, pair_columns),
        (MISMATCHED, mismatched_columns),
        (LEFT_ONLY, one_side_columns(&names.left_keys, &names.left_values)),
        (
            RIGHT_ONLY,
            one_side_columns(&names.right_keys, &names.right_values),
        ),
        (DUPLICATES, duplicates),
    ];
    Ok((classified, split(&schema, &outputs)?))
}

const DIFF_SUFFIX: &str = "_diff";
const DAYS_SUFFIX: &str = "_days";

/// Whether a rule passes, and the difference it records (numeric and date rules).
struct Outcome {
    passes: Expr,
    difference: Option<(String, Expr)>,
}

fn evaluate(rule: &CheckedRule, left: Expr, right: Expr) -> Result<Outcome> {
    let outcome = match &rule.rule {
        Rule::Equal {
            trim,
            case_insensitive,
            ..
        } => {
            let normalize = |value: Expr| {
                let value = if *trim { btrim(vec![value]) } else { value };
                if *case_insensitive { lower(value) } else { value }
            };
            Outcome {
                passes: coalesce(vec![normalize(left).eq(normalize(right)), lit(false)]),
                difference: None,
            }
        }
        Rule::EqualOrBothNull { .. } => Outcome {
            passes: binary_expr(left, Operator::IsNotDistinctFrom, right),
            difference: None,
        },
        Rule::Numeric { abs_tol, rel_tol, .. } => {
            let float = [&rule.left, &rule.right]
                .iter()
                .any(|f| f.data_type().is_floating());
            let difference = right.clone() - left.clone();
            let within = |bound: Expr| abs(difference.clone()).lt_eq(bound);
            let mut checks = Vec::new();
            if let Some(tolerance) = abs_tol {
                checks.push(within(tolerance_literal(tolerance, float)));
            }
            if let Some(tolerance) = rel_tol {
                let larger =
                    when(abs(left.clone()).gt(abs(right.clone())), abs(left)).otherwise(abs(right))?;
                checks.push(within(tolerance_literal(tolerance, float) * larger));
            }
            let passes = checks
                .into_iter()
                .reduce(Expr::or)
                .expect("checked: a tolerance is given");
            Outcome {
                passes: coalesce(vec![passes, lit(false)]),
                difference: Some((format!("{}{DIFF_SUFFIX}", rule.name), difference)),
            }
        }
        Rule::DateWindow {
            min_days, max_days, ..
        } => {
            let days = |value: Expr| {
                cast(
                    cast(cast(value, DataType::Date32), DataType::Int32),
                    DataType::Int64,
                )
            };
            let difference = days(right) - days(left);
            Outcome {
                passes: coalesce(vec![
                    difference
                        .clone()
                        .between(lit(i64::from(*min_days)), lit(i64::from(*max_days))),
                    lit(false),
                ]),
                difference: Some((format!("{}{DAYS_SUFFIX}", rule.name), difference)),
            }
        }
    };
    Ok(outcome)
}

/// The tolerance as an exact decimal literal (a float one for float columns).
fn tolerance_literal(tolerance: &Tolerance, float: bool) -> Expr {
    if float {
        return lit(tolerance.as_f64());
    }
    let (unscaled, scale) = tolerance.unscaled();
    let digits = unscaled.unsigned_abs().to_string().len() as u8;
    let precision = digits.max(scale as u8).max(1);
    lit(ScalarValue::Decimal128(Some(unscaled), precision, scale))
}

/// One side's keys and value columns: what its `*_only` output holds.
fn one_side_columns<'n>(keys: &'n [String], values: &'n [(Field, String)]) -> Vec<&'n String> {
    keys.iter().chain(values.iter().map(|(_, n)| n)).collect()
}

/// A split routing by the [`ROUTE`] column into `outputs`, each with the named columns.
fn split(schema: &Schema, outputs: &[(&str, Vec<&String>)]) -> Result<Split> {
    let index = |name: &str| schema.index_of(name).map_err(Into::into);
    Ok(Split {
        route_column: index(ROUTE)?,
        outputs: outputs
            .iter()
            .map(|(name, columns)| {
                Ok(SplitOutput {
                    name: name.to_string(),
                    columns: columns.iter().map(|c| index(c)).collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?,
    })
}
