//! The plan of each pass of a reconciliation run, built with DataFusion's DataFrame API
//! (identifiers are never spliced into SQL).
//!
//! A pass ([`classify`]): both sides' keys and the columns any pass reads are shuffled on the
//! pass's key and paired by a [`PairsTable`] scan (see [`super::pair`]), which tells each row
//! whether it pairs with the one row of its key on the other side, is alone, or is a duplicate on
//! its own side. The rules are evaluated on the paired rows, and every row is routed to its output
//! as the executors write. No join: rows are never multiplied.
//!
//! Passes form a waterfall: a pass writes the pairs it decides (matched or mismatched) to the
//! outputs, and, unless it is the last, every other row, as its side's columns, to
//! [`remaining`] for the next pass to read as its input. Every output has the same columns
//! whichever pass wrote a file of it: the pass's name, every column of either side some pass
//! reads or the recipe carries (`left_…`, `right_…`), and the differences of every pass's rules.

use std::ops::Not;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result, ScalarValue, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::functions::expr_fn::{abs, btrim, coalesce, concat, concat_ws, lower};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{
    Expr, ExprSchemable, LogicalPlanBuilder, Operator, binary_expr, cast, lit, when,
};
use datafusion::prelude::DataFrame;

use super::nearest::NearColumn;
use super::pair::{FATE, Fate, GROUP_ROWS, GroupColumn, Grouping, LEFT, RANK, RIGHT, SIDE};
use super::pairs_table::PairsTable;
use super::recipe::{CheckedNearest, CheckedPass, CheckedRecipe, CheckedRule, MATCH_SQL, Rule, Tolerance};
use crate::cache::sink::{Split, SplitOutput};

/// Outputs users see.
pub const MATCHED: &str = "matched";
pub const MISMATCHED: &str = "mismatched";
pub const LEFT_ONLY: &str = "left_only";
pub const RIGHT_ONLY: &str = "right_only";
pub const DUPLICATES: &str = "duplicates";
pub const EXCEPTIONS: &str = "exceptions";
pub const AMBIGUOUS: &str = "ambiguous";
/// Every output a finished run has.
pub const OUTPUTS: [&str; 7] = [
    MATCHED, MISMATCHED, LEFT_ONLY, RIGHT_ONLY, DUPLICATES, EXCEPTIONS, AMBIGUOUS,
];
/// The column naming the pass that decided a row.
pub const PASS: &str = "pass";
/// The column naming a decided row's pair or group.
pub const GROUP_ID: &str = "group_id";

const ROUTE: &str = "__route";
const FAILED_RULES: &str = "failed_rules";
const REASON: &str = "reason";

/// Where a pass that is not the last writes one side's rows it did not decide: the next pass's
/// input. Not an output: a finished run's outputs are published without them.
pub fn remaining(pass: usize, left: bool) -> String {
    let side = if left { "left" } else { "right" };
    format!("_remaining_{}_{side}", pass + 1)
}

/// A remaining side as the next pass reads it: its columns under their source names.
pub fn as_source(remaining: DataFrame, recipe: &CheckedRecipe, left: bool) -> Result<DataFrame> {
    let columns: Vec<Expr> = recipe
        .columns(left)
        .iter()
        .map(|field| column(&carried(left, field.name())).alias(field.name()))
        .collect();
    remaining.select(columns)
}

/// The output name of a source column some pass reads.
pub fn carried(left: bool, name: &str) -> String {
    format!("{}_{name}", if left { "left" } else { "right" })
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// One side's rows as a pass pairs them: the pass's keys in their common type, then the other
/// columns some pass reads. A key already of its common type is its carried column itself.
/// Returns the key columns' names too.
fn side_rows(
    frame: DataFrame,
    recipe: &CheckedRecipe,
    pass: &CheckedPass,
    left: bool,
) -> Result<(DataFrame, Vec<String>)> {
    let mut columns = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, key) in pass.keys.iter().enumerate() {
        let field = if left { &key.left } else { &key.right };
        let name = carried(left, field.name());
        let reusable = field.data_type() == &key.common && !names.contains(&name);
        let name = if reusable {
            name
        } else {
            format!("__{}_key_{i}", if left { "left" } else { "right" })
        };
        columns.push(cast(column(field.name()), key.common.clone()).alias(&name));
        names.push(name);
    }
    let keys = names.clone();
    for (i, near) in pass.nearest.iter().enumerate() {
        let field = if left { &near.left } else { &near.right };
        let value = match near.compared {
            // Days since the epoch, whatever the date type.
            DataType::Int32 => cast(cast(column(field.name()), DataType::Date32), DataType::Int32),
            ref compared => cast(column(field.name()), compared.clone()),
        };
        names.push(near_column(left, i));
        columns.push(value.alias(near_column(left, i)));
    }
    for field in recipe.columns(left) {
        let name = carried(left, field.name());
        if !names.contains(&name) {
            columns.push(column(field.name()).alias(&name));
            names.push(name);
        }
    }
    Ok((frame.select(columns)?, keys))
}

/// The default [`CheckedPass::max_group_size`]: a group this large still pairs in a few MiB.
pub const DEFAULT_MAX_GROUP_SIZE: u32 = 10_000;

/// The name of the column holding one side's value of a nearest condition, as compared.
fn near_column(left: bool, index: usize) -> String {
    format!("__{}_near_{index}", if left { "left" } else { "right" })
}

/// A nearest condition's `within`, in the unit its values are compared in.
fn within(near: &CheckedNearest) -> String {
    let (unscaled, scale) = near.within.unscaled();
    match near.compared {
        DataType::Int32 => (unscaled / 10i128.pow(scale as u32)).to_string(),
        DataType::Decimal128(_, to) => (unscaled * 10i128.pow((to - scale).max(0) as u32)).to_string(),
        _ => near.within.as_f64().to_string(),
    }
}

/// The name of the column holding a grouped rule's aggregate of one side.
fn aggregated(rule: &CheckedRule, left: bool) -> String {
    format!("__{}_{}", if left { "left" } else { "right" }, rule.name)
}

/// How a grouped pass gathers its rows: each rule's aggregate of either side, read from the
/// sides as [`side_rows`] gives them.
fn grouping(pass: &CheckedPass, sides: [&Schema; 2]) -> Result<Option<Grouping>> {
    let max_group_size = pass.max_group_size.unwrap_or(DEFAULT_MAX_GROUP_SIZE);
    if !pass.nearest.is_empty() {
        let nearest = pass
            .nearest
            .iter()
            .enumerate()
            .map(|(i, near)| {
                Ok(NearColumn {
                    left: sides[LEFT].index_of(&near_column(true, i))?,
                    right: sides[RIGHT].index_of(&near_column(false, i))?,
                    within: within(near),
                })
            })
            .collect::<Result<_>>()?;
        return Ok(Some(Grouping {
            many: [true, true],
            max_group_size,
            aggregates: Vec::new(),
            nearest,
        }));
    }
    if !pass.cardinality.grouped() {
        return Ok(None);
    }
    let mut aggregates = Vec::new();
    for rule in &pass.rules {
        let Some(compared) = &rule.aggregates else {
            return plan_err!(
                "rule {} of grouped pass {} names no aggregate",
                rule.name,
                pass.name
            );
        };
        for (side, field) in [(LEFT, &rule.left), (RIGHT, &rule.right)] {
            let left = side == LEFT;
            aggregates.push(GroupColumn {
                name: aggregated(rule, left),
                side,
                column: sides[side].index_of(&carried(left, field.name()))?,
                aggregate: compared[side].0,
            });
        }
    }
    Ok(Some(Grouping {
        many: pass.cardinality.many(),
        max_group_size,
        aggregates,
        nearest: Vec::new(),
    }))
}

/// Pass `index` of `recipe` over its two sides: every row with its route, paired or grouped in
/// shuffle partitions of about `partition_bytes`. Outputs, by route: see [`Routes`].
pub fn classify(
    left: DataFrame,
    right: DataFrame,
    recipe: &CheckedRecipe,
    index: usize,
    partition_bytes: u64,
) -> Result<(DataFrame, Split)> {
    let pass = &recipe.passes[index];
    let (left, left_keys) = side_rows(left, recipe, pass, true)?;
    let (right, right_keys) = side_rows(right, recipe, pass, false)?;
    let (state, left) = left.into_parts();
    let right = right.into_unoptimized_plan();
    let grouping = grouping(pass, [left.schema().as_arrow(), right.schema().as_arrow()])?;
    let pairs = PairsTable::new(left, right, pass.keys.len(), grouping, partition_bytes)?;
    let scan = LogicalPlanBuilder::scan("pairs", provider_as_source(Arc::new(pairs)), None)?.build()?;
    let paired = DataFrame::new(state, scan);

    let sides = [recipe.columns(true), recipe.columns(false)]
        .map(|fields| fields.iter().map(|f| f.name().clone()).collect::<Vec<_>>());
    let left_columns: Vec<String> = sides[LEFT].iter().map(|c| carried(true, c)).collect();
    let right_columns: Vec<String> = sides[RIGHT].iter().map(|c| carried(false, c)).collect();
    let decided = [Fate::Grouped, Fate::Oversized, Fate::Ambiguous]
        .into_iter()
        .fold(fate_is(Fate::Paired), |any, other| any.or(fate_is(other)));
    let mut columns: Vec<Expr> = vec![
        lit(pass.name.clone()).alias(PASS),
        when(decided, group_id(pass, &left_keys, &right_keys)?)
            .end()?
            .alias(GROUP_ID),
        column(SIDE),
    ];
    columns.extend(left_columns.iter().chain(&right_columns).map(|c| column(c)));

    let judged = judge(pass, recipe)?;
    columns.extend(judged.differences);
    columns.push(judged.failed.alias(FAILED_RULES));
    columns.push(reason(pass).alias(REASON));
    let routes = Routes::of(index, index + 1 == recipe.passes.len());
    columns.push(routes.route(judged.all_pass)?.alias(ROUTE));
    let classified = paired.select(columns)?;
    let schema = classified.schema().as_arrow().clone();
    let split = routes.split(&schema, [&left_columns, &right_columns], &judged.difference_names)?;
    Ok((classified, split))
}

/// Whether a paired row's fate is `fate`.
fn fate_is(fate: Fate) -> Expr {
    column(FATE).eq(lit(fate as u8))
}

/// Why an exception's rows are one: its group is too large (in passes that gather groups).
fn reason(pass: &CheckedPass) -> Expr {
    if !pass.cardinality.grouped() && pass.nearest.is_empty() {
        return lit(ScalarValue::Utf8(None));
    }
    concat(vec![
        lit("a group of "),
        cast(column(GROUP_ROWS), DataType::Utf8),
        lit(format!(
            " rows, more than max_group_size {}",
            pass.max_group_size.unwrap_or(DEFAULT_MAX_GROUP_SIZE)
        )),
    ])
}

/// A decided row's group: the pass's name and its key, e.g. `reference:INV-7`, or
/// `customer_amount:C1|12.50` for a key of two columns; in a proximity pass, with the pair's
/// rank within its key after a `#` (`customer:C1#2`).
fn group_id(pass: &CheckedPass, left_keys: &[String], right_keys: &[String]) -> Result<Expr> {
    let parts: Vec<Expr> = left_keys
        .iter()
        .zip(right_keys)
        .map(|(l, r)| cast(coalesce(vec![column(l), column(r)]), DataType::Utf8))
        .collect();
    let mut id = vec![lit(format!("{}:", pass.name)), concat_ws(lit("|"), parts)];
    if !pass.nearest.is_empty() {
        let rank = concat(vec![lit("#"), cast(column(RANK), DataType::Utf8)]);
        id.push(when(column(RANK).is_not_null(), rank).otherwise(lit(""))?);
    }
    Ok(concat(id))
}

/// A pass's rules over its paired or grouped rows.
struct Judged {
    /// Whether every rule passes.
    all_pass: Expr,
    /// The names of the rules that fail, comma-separated.
    failed: Expr,
    /// Every difference column of every pass (null where this pass has no such rule).
    differences: Vec<Expr>,
    difference_names: Vec<String>,
}

fn judge(pass: &CheckedPass, recipe: &CheckedRecipe) -> Result<Judged> {
    let mut outcomes = Vec::new();
    let mut own_differences = HashMap::new();
    for rule in &pass.rules {
        let compared = |left: bool| match rule.aggregates {
            Some(_) => column(&aggregated(rule, left)),
            None => column(&carried(
                left,
                if left { rule.left.name() } else { rule.right.name() },
            )),
        };
        let outcome = evaluate(rule, compared(true), compared(false))?;
        if let Some((name, difference)) = outcome.difference {
            own_differences.insert(name, difference);
        }
        outcomes.push((rule.name.clone(), outcome.passes));
    }
    let all_differences = difference_columns(recipe)?;
    let differences = all_differences
        .iter()
        .map(|(name, data_type)| {
            let value = match own_differences.remove(name) {
                Some(difference) => cast(difference, data_type.clone()),
                None => lit(ScalarValue::try_from(data_type)?),
            };
            Ok(value.alias(name))
        })
        .collect::<Result<_>>()?;
    if let Some(sql) = &pass.match_sql {
        let passes = sql.expr.clone().transform(|expr| {
            Ok(match expr {
                Expr::Column(c) => {
                    let left = c.relation.as_ref().is_some_and(|r| r.table() == "l");
                    Transformed::yes(column(&carried(left, &c.name)))
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
    let failed = if failed.is_empty() {
        lit("")
    } else {
        concat_ws(lit(","), failed)
    };
    let all_pass = outcomes
        .into_iter()
        .map(|(_, passes)| passes)
        .reduce(Expr::and)
        .unwrap_or(lit(true));
    Ok(Judged {
        all_pass,
        failed,
        differences,
        difference_names: all_differences.into_iter().map(|(name, _)| name).collect(),
    })
}

/// The outputs one pass routes rows to; a route is an output's index in `names`.
struct Routes {
    names: Vec<String>,
    /// Where each side's rows the pass did not pair go: `left_only` and `right_only` after the
    /// last pass, the [`remaining`] sides before it.
    unpaired: [String; 2],
    /// Where duplicates go: `duplicates` after the last pass; before it, with the unpaired rows,
    /// to the next pass.
    duplicates: [String; 2],
}

impl Routes {
    /// Matched, mismatched, the unpaired rows of each side (and duplicates, after the last pass),
    /// exceptions and ambiguous.
    fn of(index: usize, last: bool) -> Self {
        let unpaired = match last {
            true => [LEFT_ONLY.to_string(), RIGHT_ONLY.to_string()],
            false => [remaining(index, true), remaining(index, false)],
        };
        let duplicates = match last {
            true => [DUPLICATES.to_string(), DUPLICATES.to_string()],
            false => unpaired.clone(),
        };
        let mut names = vec![MATCHED.to_string(), MISMATCHED.to_string()];
        names.extend(unpaired.iter().cloned());
        if last {
            names.push(DUPLICATES.to_string());
        }
        names.extend([EXCEPTIONS, AMBIGUOUS].map(String::from));
        Self {
            names,
            unpaired,
            duplicates,
        }
    }

    /// The route of rows bound for `output`.
    fn to(&self, output: &str) -> Expr {
        let index = self
            .names
            .iter()
            .position(|o| o == output)
            .expect("one of the pass's outputs");
        lit(index as u8)
    }

    /// Every paired row's route, by its fate and, for pairs and groups, whether all rules pass.
    fn route(&self, all_pass: Expr) -> Result<Expr> {
        let agreed = fate_is(Fate::Paired).or(fate_is(Fate::Grouped));
        when(agreed.clone().and(all_pass), self.to(MATCHED))
            .when(agreed, self.to(MISMATCHED))
            .when(fate_is(Fate::Oversized), self.to(EXCEPTIONS))
            .when(fate_is(Fate::Ambiguous), self.to(AMBIGUOUS))
            .when(fate_is(Fate::LeftAlone), self.to(&self.unpaired[LEFT]))
            .when(fate_is(Fate::RightAlone), self.to(&self.unpaired[RIGHT]))
            .when(column(SIDE).eq(lit("left")), self.to(&self.duplicates[LEFT]))
            .otherwise(self.to(&self.duplicates[RIGHT]))
    }

    /// The split writing each output's columns: `sides` are the left and right columns.
    fn split(&self, schema: &Schema, sides: [&Vec<String>; 2], differences: &[String]) -> Result<Split> {
        let both: Vec<&str> = sides.iter().flat_map(|s| s.iter().map(String::as_str)).collect();
        let one = |side: usize| sides[side].iter().map(String::as_str).collect::<Vec<_>>();
        let mut decided = vec![PASS, GROUP_ID, SIDE];
        decided.extend(&both);
        decided.extend(differences.iter().map(String::as_str));
        let columns = |output: &str| -> Vec<&str> {
            match output {
                MATCHED => decided.clone(),
                MISMATCHED => [&decided[..], &[FAILED_RULES]].concat(),
                EXCEPTIONS => [&[PASS, GROUP_ID, SIDE][..], &both, &[REASON]].concat(),
                AMBIGUOUS => [&[PASS, GROUP_ID][..], &both].concat(),
                LEFT_ONLY => [&[PASS][..], &one(LEFT)].concat(),
                RIGHT_ONLY => [&[PASS][..], &one(RIGHT)].concat(),
                DUPLICATES => [&[PASS, SIDE][..], &both].concat(),
                remaining if remaining.ends_with("_left") => one(LEFT),
                _ => one(RIGHT),
            }
        };
        let index = |name: &str| schema.index_of(name).map_err(Into::into);
        Ok(Split {
            route_column: index(ROUTE)?,
            outputs: self
                .names
                .iter()
                .map(|name| {
                    Ok(SplitOutput {
                        name: name.clone(),
                        columns: columns(name).into_iter().map(index).collect::<Result<_>>()?,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// Every difference column some pass's rules record, each once, with the type it is written in:
/// rules of different passes that share a name share a column, in a type both fit.
pub fn difference_columns(recipe: &CheckedRecipe) -> Result<Vec<(String, DataType)>> {
    let mut columns: Vec<(String, DataType)> = Vec::new();
    for pass in &recipe.passes {
        for rule in &pass.rules {
            let compared = |side: usize, field: &Arc<Field>| match &rule.aggregates {
                Some(aggregates) => aggregates[side].1.clone(),
                None => field.data_type().clone(),
            };
            let fields = vec![
                Field::new("l", compared(LEFT, &rule.left), true),
                Field::new("r", compared(RIGHT, &rule.right), true),
            ];
            let schema = DFSchema::from_unqualified_fields(fields.into(), HashMap::new())?;
            let outcome = evaluate(rule, column("l"), column("r"))?;
            let Some((name, difference)) = outcome.difference else {
                continue;
            };
            let data_type = difference.get_type(&schema)?;
            match columns.iter_mut().find(|(n, _)| *n == name) {
                None => columns.push((name, data_type)),
                Some((_, existing)) => match comparison_coercion(existing, &data_type) {
                    Some(wider) => *existing = wider,
                    None => {
                        return plan_err!(
                            "rules of two passes record {name} as {existing} and as {data_type}: name them apart"
                        );
                    }
                },
            }
        }
    }
    Ok(columns)
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
