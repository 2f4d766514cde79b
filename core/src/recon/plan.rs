//! The plans of a reconciliation run, built with DataFusion's DataFrame API (identifiers are
//! never spliced into SQL).
//!
//! The first pass ([`classify`]) unions both sides' keys and compared columns and groups them by
//! key: a key found once on each side is matched or mismatched by the rules, a key found on one
//! side only is left or right only, and every other key (duplicated on a side, or with a null
//! part) is a *problem key*. Grouping instead of joining means one shuffle and no multiplied
//! rows. The second pass ([`problem_rows`]), needed only when problem keys exist, reads the rows
//! behind them again: rows of a key duplicated on their own side are `duplicates`; the others
//! (a single row whose partner key is duplicated, or a row with a null key part) match nothing
//! and are left or right only.

use std::ops::Not;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::functions::expr_fn::{abs, btrim, coalesce, concat_ws, lower};
use datafusion::functions_aggregate::expr_fn::{max, sum};
use datafusion::logical_expr::{Expr, JoinType, Operator, binary_expr, cast, lit, when};
use datafusion::prelude::DataFrame;

use super::recipe::{CheckedRecipe, CheckedRule, MATCH_SQL, Rule, Tolerance};
use crate::cache::sink::{Split, SplitOutput};

/// Outputs users see, in the order of [`classify`]'s routes.
pub const MATCHED: &str = "matched";
pub const MISMATCHED: &str = "mismatched";
pub const LEFT_ONLY: &str = "left_only";
pub const RIGHT_ONLY: &str = "right_only";
pub const DUPLICATES: &str = "duplicates";
/// Every output a finished run has.
pub const OUTPUTS: [&str; 5] = [MATCHED, MISMATCHED, LEFT_ONLY, RIGHT_ONLY, DUPLICATES];
/// The first pass's list of keys the second pass must look at; removed when the run ends.
pub const PROBLEM_KEYS: &str = "_problem_keys";

const LEFT_COUNT: &str = "__left_rows";
const RIGHT_COUNT: &str = "__right_rows";
const ROUTE: &str = "__route";
const SIDE: &str = "side";
const FAILED_RULES: &str = "failed_rules";

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

fn typed_null(data_type: &DataType) -> Result<Expr> {
    Ok(lit(ScalarValue::try_from(data_type)?))
}

/// One side's rows as the first pass unions them: common-typed keys, both sides' value columns
/// (the other side's null) and a row count per side.
fn side_rows(frame: DataFrame, names: &Names, left: bool) -> Result<DataFrame> {
    let mut columns = Vec::new();
    for (pair, name) in names.recipe.keys.iter().zip(&names.left_keys) {
        let source = if left { &pair.left } else { &pair.right };
        columns.push(cast(column(source.name()), pair.common.clone()).alias(name));
    }
    for (values, mine) in [(&names.left_values, left), (&names.right_values, !left)] {
        for (field, name) in values {
            let value = if mine {
                column(field.name())
            } else {
                typed_null(field.data_type())?
            };
            columns.push(value.alias(name));
        }
    }
    columns.push(lit(i64::from(left)).alias(LEFT_COUNT));
    columns.push(lit(i64::from(!left)).alias(RIGHT_COUNT));
    frame.select(columns)
}

/// The first pass: one row per key with its route. Outputs, by route: matched, mismatched,
/// left_only, right_only and [`PROBLEM_KEYS`].
pub fn classify(left: DataFrame, right: DataFrame, recipe: &CheckedRecipe) -> Result<(DataFrame, Split)> {
    let names = Names::new(recipe);
    let rows = side_rows(left, &names, true)?.union(side_rows(right, &names, false)?)?;
    let mut aggregates = vec![
        sum(column(LEFT_COUNT)).alias(LEFT_COUNT),
        sum(column(RIGHT_COUNT)).alias(RIGHT_COUNT),
    ];
    // A key seen once per side has one value per column, so max() is that value.
    aggregates.extend(names.value_names().map(|name| max(column(name)).alias(name)));
    let keys: Vec<Expr> = names.left_keys.iter().map(|k| column(k)).collect();
    let grouped = rows.aggregate(keys, aggregates)?;

    let mut outcomes = Vec::new();
    let mut columns: Vec<Expr> = names.left_keys.iter().map(|k| column(k)).collect();
    for (left_key, right_key) in names.left_keys.iter().zip(&names.right_keys) {
        columns.push(column(left_key).alias(right_key));
    }
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
    columns.push(column(LEFT_COUNT));
    columns.push(column(RIGHT_COUNT));
    let all_pass = outcomes
        .into_iter()
        .map(|(_, passes)| passes)
        .reduce(Expr::and)
        .unwrap_or(lit(true));
    let any_key_null = any_null(&names.left_keys);
    let route = when(
        any_key_null
            .or(column(LEFT_COUNT).gt(lit(1i64)))
            .or(column(RIGHT_COUNT).gt(lit(1i64))),
        lit(4u8),
    )
    .when(column(RIGHT_COUNT).eq(lit(0i64)), lit(2u8))
    .when(column(LEFT_COUNT).eq(lit(0i64)), lit(3u8))
    .when(all_pass, lit(0u8))
    .otherwise(lit(1u8))?;
    columns.push(route.alias(ROUTE));
    let classified = grouped.select(columns)?;

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
    let split = split(
        &schema,
        &[
            (MATCHED, pair_columns),
            (MISMATCHED, mismatched_columns),
            (LEFT_ONLY, one_side_columns(&names.left_keys, &names.left_values)),
            (
                RIGHT_ONLY,
                one_side_columns(&names.right_keys, &names.right_values),
            ),
            (
                PROBLEM_KEYS,
                names
                    .left_keys
                    .iter()
                    .chain([&LEFT_COUNT.to_string(), &RIGHT_COUNT.to_string()])
                    .collect(),
            ),
        ],
    )?;
    Ok((classified, split))
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

fn any_null(columns: &[String]) -> Expr {
    columns
        .iter()
        .map(|c| column(c).is_null())
        .reduce(Expr::or)
        .expect("a recipe has at least one key")
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

/// The second pass: the rows behind the problem keys (`problem_keys` is the first pass's
/// [`PROBLEM_KEYS`] output). Outputs, by route: left_only, right_only, duplicates.
pub fn problem_rows(
    left: DataFrame,
    right: DataFrame,
    problem_keys: DataFrame,
    recipe: &CheckedRecipe,
) -> Result<(DataFrame, Split)> {
    let names = Names::new(recipe);
    let key_columns: Vec<String> = (0..names.left_keys.len())
        .map(|i| format!("__problem_key_{i}"))
        .collect();
    let mut renamed: Vec<Expr> = names
        .left_keys
        .iter()
        .zip(&key_columns)
        .map(|(from, to)| column(from).alias(to))
        .collect();
    renamed.push(column(LEFT_COUNT));
    renamed.push(column(RIGHT_COUNT));
    let problem_keys = problem_keys.select(renamed)?;

    let mut branches = Vec::new();
    for (frame, left_side) in [(left, true), (right, false)] {
        let side_keys = if left_side {
            &names.left_keys
        } else {
            &names.right_keys
        };
        let mut own = Vec::new();
        for (pair, name) in recipe.keys.iter().zip(side_keys) {
            let source = if left_side { &pair.left } else { &pair.right };
            own.push(cast(column(source.name()), pair.common.clone()).alias(name));
        }
        let own_values = if left_side {
            &names.left_values
        } else {
            &names.right_values
        };
        own.extend(
            own_values
                .iter()
                .map(|(field, name)| column(field.name()).alias(name)),
        );
        let rows = frame.select(own)?;

        let (count, alone) = if left_side {
            (LEFT_COUNT, 0u8)
        } else {
            (RIGHT_COUNT, 1u8)
        };
        let keyed_names: Vec<&str> = side_keys.iter().map(String::as_str).collect();
        let problem_names: Vec<&str> = key_columns.iter().map(String::as_str).collect();
        let keyed = rows.clone().join(
            problem_keys.clone(),
            JoinType::Inner,
            &keyed_names,
            &problem_names,
            None,
        )?;
        let duplicated = when(column(count).gt(lit(1i64)), lit(2u8)).otherwise(lit(alone))?;
        branches.push(problem_layout(keyed, &names, recipe, left_side, duplicated)?);
        let null_keys = rows.filter(any_null(side_keys))?;
        branches.push(problem_layout(null_keys, &names, recipe, left_side, lit(alone))?);
    }
    let mut branches = branches.into_iter();
    let first = branches.next().expect("four branches");
    let rows = branches.try_fold(first, |all, branch| all.union(branch))?;

    let schema = rows.schema().as_arrow().clone();
    let side = SIDE.to_string();
    let duplicates: Vec<&String> = std::iter::once(&side)
        .chain(&names.left_keys)
        .chain(&names.right_keys)
        .chain(names.value_names())
        .collect();
    let split = split(
        &schema,
        &[
            (LEFT_ONLY, one_side_columns(&names.left_keys, &names.left_values)),
            (
                RIGHT_ONLY,
                one_side_columns(&names.right_keys, &names.right_values),
            ),
            (DUPLICATES, duplicates),
        ],
    )?;
    Ok((rows, split))
}

/// A second-pass branch in the common layout: side, both sides' keys and values (the other
/// side's null), route.
fn problem_layout(
    frame: DataFrame,
    names: &Names,
    recipe: &CheckedRecipe,
    left_side: bool,
    route: Expr,
) -> Result<DataFrame> {
    let mut columns = vec![lit(if left_side { "left" } else { "right" }).alias(SIDE)];
    for (keys, mine) in [(&names.left_keys, left_side), (&names.right_keys, !left_side)] {
        for (pair, name) in recipe.keys.iter().zip(keys) {
            columns.push(if mine {
                column(name)
            } else {
                typed_null(&pair.common)?.alias(name)
            });
        }
    }
    for (values, mine) in [(&names.left_values, left_side), (&names.right_values, !left_side)] {
        for (field, name) in values {
            columns.push(if mine {
                column(name)
            } else {
                typed_null(field.data_type())?.alias(name)
            });
        }
    }
    columns.push(route.alias(ROUTE));
    frame.select(columns)
}
