//! Recipes: which two sources to reconcile, in which passes (each on its own keys, under its
//! own rules), and their validation against the sources' real schemas.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, TableReference, plan_err};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ReconError;
use super::group::{Aggregate, GroupAggregate};
use super::params::Param;
use super::udf::tolerance_match;
use crate::preview::Condition;
use crate::preview::predicate;

/// Longest recipe or rule name.
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    /// Parameters a run gives (or takes the defaults of), put in place of `{name}` in the
    /// sides' filter values and in their sources' locations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    pub left: Side,
    pub right: Side,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Instead of rules: a boolean SQL expression over the paired rows, naming columns `l.…` and
    /// `r.…`, e.g. `tolerance_match(l.amount, r.amount, 0.01) AND l.currency = r.currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_sql: Option<String>,
    /// Passes run in order, a waterfall: rows a pass decides (matched or mismatched) leave, and
    /// only rows it leaves alone (no partner, a null key part, duplicates) go on to the next.
    /// Without passes, the sides' `key`s, `rules` and `match_sql` are the one pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<Pass>,
    /// Keep what a run leaves unmatched (left only, right only, mismatched) as open items that
    /// the next run matches again, beside its own rows. Only for a stored recipe.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carry_forward: bool,
}

/// One pass of a waterfall: its own keys (column by column, left with right) and rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Pass {
    /// What the `pass` column of the rows it decides says; `pass_<n>` if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub left_key: Vec<String>,
    pub right_key: Vec<String>,
    /// How many rows of each side one key may gather: a grouped pass compares each group's
    /// aggregates, one value per side, by its rules.
    #[serde(default, skip_serializing_if = "Cardinality::is_one_to_one")]
    pub cardinality: Cardinality,
    /// A proximity pass: within the rows of one key, pairs whose values are nearest on these
    /// conditions, in order, are matched first (see [`Nearest`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<Nearest>,
    /// In a grouped or proximity pass: a key of more rows (both sides together) goes to
    /// `exceptions`.
    #[cfg_attr(feature = "openapi", schema(minimum = 2))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_group_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_sql: Option<String>,
}

/// A nearest-value condition of a proximity pass: a left and a right row are candidates when
/// `|right − left| ≤ within` (in days, for dates) on every condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Nearest {
    pub left: String,
    pub right: String,
    #[cfg_attr(feature = "openapi", schema(value_type = f64, minimum = 0))]
    pub within: Tolerance,
}

/// Which sides of a pass may have more than one row per key: `one_to_many` groups the right
/// side's rows of a key with the left side's one row, `many_to_one` the other way round,
/// `many_to_many` both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Cardinality {
    #[default]
    OneToOne,
    OneToMany,
    ManyToOne,
    ManyToMany,
}

impl Cardinality {
    fn is_one_to_one(&self) -> bool {
        *self == Cardinality::OneToOne
    }

    /// Whether the left and the right side may have many rows per key.
    pub fn many(self) -> [bool; 2] {
        match self {
            Cardinality::OneToOne => [false, false],
            Cardinality::OneToMany => [false, true],
            Cardinality::ManyToOne => [true, false],
            Cardinality::ManyToMany => [true, true],
        }
    }

    pub fn grouped(self) -> bool {
        self != Cardinality::OneToOne
    }
}

/// One side of a reconciliation: a source alias or a connection table (`connection.schema.table`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Side {
    pub source: String,
    /// The key of a recipe without `passes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Condition>,
    /// Columns every output row of this side carries beside those the passes read (an id, a
    /// description), so that each row can be traced to the row of the source it came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carry: Vec<String>,
}

/// How a left column is compared with a right column. A rule with no `name` is named after
/// its left column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Both values present and equal (after trimming and case folding, if asked).
    Equal {
        left: String,
        right: String,
        #[serde(default)]
        trim: bool,
        #[serde(default)]
        case_insensitive: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// In a grouped pass: what is compared of a group's rows on a side with many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aggregate: Option<Aggregate>,
    },
    /// `|right - left| <= abs_tol`, or `<= rel_tol × max(|left|, |right|)`: either suffices.
    /// Decimals are compared in decimal arithmetic, so a difference of exactly `abs_tol` passes.
    Numeric {
        left: String,
        right: String,
        #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0))]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        abs_tol: Option<Tolerance>,
        #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0))]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rel_tol: Option<Tolerance>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// In a grouped pass: what is compared of a group's rows on a side with many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aggregate: Option<Aggregate>,
    },
    /// `right - left`, in days, lies within `min_days..=max_days`.
    DateWindow {
        left: String,
        right: String,
        min_days: i32,
        max_days: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// In a grouped pass: what is compared of a group's rows on a side with many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aggregate: Option<Aggregate>,
    },
    /// Equal, where two nulls count as equal.
    EqualOrBothNull {
        left: String,
        right: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// In a grouped pass: what is compared of a group's rows on a side with many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aggregate: Option<Aggregate>,
    },
}

impl Rule {
    pub fn columns(&self) -> (&str, &str) {
        match self {
            Rule::Equal { left, right, .. }
            | Rule::Numeric { left, right, .. }
            | Rule::DateWindow { left, right, .. }
            | Rule::EqualOrBothNull { left, right, .. } => (left, right),
        }
    }

    pub fn aggregate(&self) -> Option<Aggregate> {
        match self {
            Rule::Equal { aggregate, .. }
            | Rule::Numeric { aggregate, .. }
            | Rule::DateWindow { aggregate, .. }
            | Rule::EqualOrBothNull { aggregate, .. } => *aggregate,
        }
    }

    fn given_name(&self) -> Option<&str> {
        match self {
            Rule::Equal { name, .. }
            | Rule::Numeric { name, .. }
            | Rule::DateWindow { name, .. }
            | Rule::EqualOrBothNull { name, .. } => name.as_deref(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Equal { .. } => "equal",
            Rule::Numeric { .. } => "numeric",
            Rule::DateWindow { .. } => "date_window",
            Rule::EqualOrBothNull { .. } => "equal_or_both_null",
        }
    }
}

/// A non-negative decimal number, kept as the digits the user wrote so that it converts to a
/// decimal literal exactly (a JSON number like `0.01` is read through its shortest form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tolerance {
    digits: String,
}

impl Tolerance {
    /// The value as a decimal: unscaled integer and scale.
    pub fn unscaled(&self) -> (i128, i8) {
        let (whole, fraction) = self.digits.split_once('.').unwrap_or((&self.digits, ""));
        let unscaled = format!("{whole}{fraction}").parse().expect("validated digits");
        (unscaled, fraction.len() as i8)
    }

    pub fn as_f64(&self) -> f64 {
        self.digits.parse().expect("validated digits")
    }
}

impl FromStr for Tolerance {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
            return Err(format!(
                "tolerance {text:?} must be a non-negative decimal number such as 0.01"
            ));
        }
        if whole.len() + fraction.len() > 30 || fraction.len() > 18 {
            return Err(format!("tolerance {text:?} has too many digits"));
        }
        Ok(Self {
            digits: text.to_string(),
        })
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.digits)
    }
}

impl<'de> Deserialize<'de> for Tolerance {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(serde_json::Number),
            Text(String),
        }
        let text = match Written::deserialize(deserializer)? {
            // Shortest round-trip form: 0.01 reads back as "0.01", not 0.01000000000000000021.
            Written::Number(number) => match number.as_f64() {
                Some(value) if number.is_f64() => format!("{value}"),
                _ => number.to_string(),
            },
            Written::Text(text) => text,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Tolerance {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::Number::from_str(&self.digits) {
            Ok(number) => number.serialize(serializer),
            Err(_) => serializer.serialize_str(&self.digits),
        }
    }
}

/// A rule with everything the plan needs resolved: its name, both columns' fields and, in a
/// grouped pass, the aggregate each side is compared by.
#[derive(Debug, Clone)]
pub struct CheckedRule {
    pub name: String,
    pub rule: Rule,
    pub left: Arc<Field>,
    pub right: Arc<Field>,
    /// In a grouped pass, per side: the aggregate compared (`min`, the one row's value, on a
    /// side of one row per key) and its type.
    pub aggregates: Option<[(Aggregate, DataType); 2]>,
}

/// A key column pair and the type both sides are compared in.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub left: Arc<Field>,
    pub right: Arc<Field>,
    pub common: DataType,
}

/// A nearest-value condition with both columns' fields and the type they are compared in: an
/// exact decimal for integers and decimals, `Float64` for floats, `Int32` days for dates.
#[derive(Debug, Clone)]
pub struct CheckedNearest {
    pub left: Arc<Field>,
    pub right: Arc<Field>,
    pub compared: DataType,
    pub within: Tolerance,
}

/// A pass checked against both sides' schemas.
#[derive(Debug, Clone)]
pub struct CheckedPass {
    pub name: String,
    pub cardinality: Cardinality,
    pub nearest: Vec<CheckedNearest>,
    pub max_group_size: Option<u32>,
    pub keys: Vec<KeyPair>,
    pub rules: Vec<CheckedRule>,
    pub match_sql: Option<MatchSql>,
}

impl CheckedPass {
    /// Every column the pass reads from one side: its keys, its nearest conditions', then its
    /// rules' columns.
    fn columns(&self, left: bool) -> Vec<&Arc<Field>> {
        let mut columns = Vec::new();
        for key in &self.keys {
            columns.push(if left { &key.left } else { &key.right });
        }
        for near in &self.nearest {
            columns.push(if left { &near.left } else { &near.right });
        }
        for rule in &self.rules {
            columns.push(if left { &rule.left } else { &rule.right });
        }
        if let Some(sql) = &self.match_sql {
            columns.extend(if left { &sql.left } else { &sql.right });
        }
        columns
    }
}

/// A pass's `match_sql`, parsed: columns are qualified `l` or `r`.
#[derive(Debug, Clone)]
pub struct MatchSql {
    pub expr: Expr,
    pub left: Vec<Arc<Field>>,
    pub right: Vec<Arc<Field>>,
}

/// A recipe checked against both sides' schemas.
#[derive(Debug, Clone)]
pub struct CheckedRecipe {
    pub recipe: Recipe,
    pub passes: Vec<CheckedPass>,
    /// Each side's `carry` columns.
    pub carried: [Vec<Arc<Field>>; 2],
}

impl CheckedRecipe {
    /// Every column of one side that some pass reads, in the order passes name them, then its
    /// carried columns: each once.
    pub fn columns(&self, left: bool) -> Vec<Arc<Field>> {
        let mut columns: Vec<Arc<Field>> = Vec::new();
        let carried = &self.carried[if left { 0 } else { 1 }];
        for field in self.passes.iter().flat_map(|p| p.columns(left)).chain(carried) {
            if !columns.iter().any(|c| c.name() == field.name()) {
                columns.push(field.clone());
            }
        }
        columns
    }
}

/// Where a pass's parts are written in the recipe, for errors that name the field.
struct PassAt {
    left_key: String,
    right_key: String,
    rules: String,
    match_sql: String,
    max_group_size: String,
    nearest: String,
}

impl PassAt {
    fn top_level() -> Self {
        Self {
            left_key: "left.key".into(),
            right_key: "right.key".into(),
            rules: "rules".into(),
            match_sql: "match_sql".into(),
            max_group_size: "max_group_size".into(),
            nearest: "nearest".into(),
        }
    }

    fn nth(index: usize) -> Self {
        let at = format!("passes[{index}]");
        Self {
            left_key: format!("{at}.left_key"),
            right_key: format!("{at}.right_key"),
            rules: format!("{at}.rules"),
            match_sql: format!("{at}.match_sql"),
            max_group_size: format!("{at}.max_group_size"),
            nearest: format!("{at}.nearest"),
        }
    }
}

/// The name `match_sql` has among failed rules.
pub const MATCH_SQL: &str = "match_sql";

/// The most passes a recipe may have.
pub const MAX_PASSES: usize = 16;

impl Recipe {
    /// Checks the recipe against the sources' schemas; the error names the first problem.
    pub fn check(&self, left: &Schema, right: &Schema) -> Result<CheckedRecipe, ReconError> {
        let invalid = |message: String| ReconError::InvalidRecipe(message);
        if self.name.trim().is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(format!("name must be 1 to {MAX_NAME_CHARS} characters")));
        }
        for (side, fields) in [("left", left), ("right", right)] {
            let recipe_side = if side == "left" { &self.left } else { &self.right };
            let fields: Vec<Arc<Field>> = fields.fields().iter().cloned().collect();
            predicate(&fields, &recipe_side.filters).map_err(|e| invalid(format!("{side}.filters: {e}")))?;
        }
        let passes = if self.passes.is_empty() {
            let pass = Pass {
                name: None,
                left_key: self.left.key.clone(),
                right_key: self.right.key.clone(),
                cardinality: Cardinality::OneToOne,
                nearest: Vec::new(),
                max_group_size: None,
                rules: self.rules.clone(),
                match_sql: self.match_sql.clone(),
            };
            vec![check_pass(&pass, 0, &PassAt::top_level(), left, right)?]
        } else {
            self.check_pass_list(left, right)?
        };
        Ok(CheckedRecipe {
            recipe: self.clone(),
            passes,
            carried: [
                carried(&self.left, left, "left")?,
                carried(&self.right, right, "right")?,
            ],
        })
    }

    fn check_pass_list(&self, left: &Schema, right: &Schema) -> Result<Vec<CheckedPass>, ReconError> {
        let invalid = |message: &str| Err(ReconError::InvalidRecipe(message.to_string()));
        if !self.left.key.is_empty() || !self.right.key.is_empty() {
            return invalid(
                "left.key and right.key: with passes, each pass names its keys (left_key, right_key)",
            );
        }
        if !self.rules.is_empty() || self.match_sql.is_some() {
            return invalid("rules and match_sql: with passes, each pass has its own");
        }
        if self.passes.len() > MAX_PASSES {
            return invalid(&format!("passes: at most {MAX_PASSES}"));
        }
        let mut names = HashSet::new();
        let mut checked = Vec::new();
        for (index, pass) in self.passes.iter().enumerate() {
            let pass = check_pass(pass, index, &PassAt::nth(index), left, right)?;
            if !names.insert(pass.name.clone()) {
                return invalid(&format!(
                    "passes[{index}].name: another pass is named {:?}",
                    pass.name
                ));
            }
            checked.push(pass);
        }
        Ok(checked)
    }
}

/// Checks one pass; `at` says where its parts are written.
fn check_pass(
    pass: &Pass,
    index: usize,
    at: &PassAt,
    left: &Schema,
    right: &Schema,
) -> Result<CheckedPass, ReconError> {
    let invalid = |message: String| ReconError::InvalidRecipe(message);
    let name = match &pass.name {
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(invalid(format!(
                    "passes[{index}].name {name:?} must be 1 to 63 letters, digits, - or _"
                )));
            }
            name.clone()
        }
        None => format!("pass_{}", index + 1),
    };
    for (keys, at) in [(&pass.left_key, &at.left_key), (&pass.right_key, &at.right_key)] {
        if keys.is_empty() {
            return Err(invalid(format!("{at} is empty: name at least one key column")));
        }
    }
    if pass.left_key.len() != pass.right_key.len() {
        return Err(invalid(format!(
            "{} has {} columns and {} {}: keys are compared column by column",
            at.left_key,
            pass.left_key.len(),
            at.right_key,
            pass.right_key.len()
        )));
    }
    let mut keys = Vec::new();
    for (l, r) in pass.left_key.iter().zip(&pass.right_key) {
        let (left, right) = (field(left, &at.left_key, l)?, field(right, &at.right_key, r)?);
        let common = comparable(&left, &right).ok_or_else(|| invalid(incompatible("key", &left, &right)))?;
        keys.push(KeyPair { left, right, common });
    }
    let nearest = check_nearest(pass, at, left, right)?;
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for (i, rule) in pass.rules.iter().enumerate() {
        let (l, r) = rule.columns();
        let at = format!("{}[{i}]", at.rules);
        let (left, right) = (
            field(left, &format!("{at}.left"), l)?,
            field(right, &format!("{at}.right"), r)?,
        );
        let aggregates = aggregates(rule, pass.cardinality, [&left, &right])
            .map_err(|reason| invalid(format!("{at}.aggregate: {reason}")))?;
        let compared = |side: usize, field: &Arc<Field>| match &aggregates {
            Some(aggregates) => Arc::new(field.as_ref().clone().with_data_type(aggregates[side].1.clone())),
            None => field.clone(),
        };
        check_rule(rule, &compared(0, &left), &compared(1, &right))
            .map_err(|reason| invalid(format!("{at} ({}): {reason}", rule.kind())))?;
        let name = rule_name(rule, &mut names).map_err(|reason| invalid(format!("{at}: {reason}")))?;
        rules.push(CheckedRule {
            name,
            rule: rule.clone(),
            left,
            right,
            aggregates,
        });
    }
    let grouped = pass.cardinality.grouped();
    match pass.max_group_size {
        Some(_) if !grouped && nearest.is_empty() => {
            return Err(invalid(format!(
                "{}: only a grouped pass (cardinality other than one_to_one) or a proximity pass \
                 (with nearest) has groups",
                at.max_group_size
            )));
        }
        Some(size) if size < 2 => {
            return Err(invalid(format!(
                "{}: a group has at least 2 rows",
                at.max_group_size
            )));
        }
        _ => {}
    }
    if grouped && pass.match_sql.is_some() {
        return Err(invalid(format!(
            "{}: a grouped pass compares aggregates by rules, not by match_sql",
            at.match_sql
        )));
    }
    let match_sql = match &pass.match_sql {
        Some(_) if !pass.rules.is_empty() => {
            return Err(invalid(format!(
                "{} and {}: give rules or match_sql, not both",
                at.rules, at.match_sql
            )));
        }
        Some(sql) => {
            Some(parse_match_sql(sql, left, right).map_err(|e| invalid(format!("{}: {e}", at.match_sql)))?)
        }
        None => None,
    };
    Ok(CheckedPass {
        name,
        cardinality: pass.cardinality,
        nearest,
        max_group_size: pass.max_group_size,
        keys,
        rules,
        match_sql,
    })
}

/// A pass's nearest conditions, checked: one-to-one passes only, numbers or dates on both sides,
/// whole days for dates.
fn check_nearest(
    pass: &Pass,
    at: &PassAt,
    left: &Schema,
    right: &Schema,
) -> Result<Vec<CheckedNearest>, ReconError> {
    let invalid = |message: String| ReconError::InvalidRecipe(message);
    if !pass.nearest.is_empty() && pass.cardinality.grouped() {
        return Err(invalid(format!(
            "{}: a proximity pass pairs one row with one row (cardinality one_to_one)",
            at.nearest
        )));
    }
    let mut checked = Vec::new();
    for (i, near) in pass.nearest.iter().enumerate() {
        let at = format!("{}[{i}]", at.nearest);
        let (l, r) = (
            field(left, &format!("{at}.left"), &near.left)?,
            field(right, &format!("{at}.right"), &near.right)?,
        );
        let compared = match (family(l.data_type()), family(r.data_type())) {
            (Family::Date, Family::Date) => {
                let (unscaled, scale) = near.within.unscaled();
                if unscaled % 10i128.pow(scale as u32) != 0 {
                    return Err(invalid(format!(
                        "{at}.within: dates are near by whole days, not {}",
                        near.within
                    )));
                }
                DataType::Int32
            }
            (Family::Number, Family::Number)
                if l.data_type().is_floating() || r.data_type().is_floating() =>
            {
                DataType::Float64
            }
            (Family::Number, Family::Number) => {
                let scale = |t: &DataType| match t {
                    DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => *s,
                    _ => 0,
                };
                let scale = scale(l.data_type())
                    .max(scale(r.data_type()))
                    .max(near.within.unscaled().1)
                    .max(0);
                DataType::Decimal128(38, scale)
            }
            _ => {
                return Err(invalid(format!(
                    "{at}: needs two numeric or two date columns; {}",
                    incompatible("nearest", &l, &r)
                )));
            }
        };
        checked.push(CheckedNearest {
            left: l,
            right: r,
            compared,
            within: near.within.clone(),
        });
    }
    Ok(checked)
}

/// What a rule compares of each side in a pass of `cardinality`: `None` in a one-to-one pass,
/// else per side its aggregate (the rule's on a side with many rows per key, `min` of the one row
/// on the other) and the type it gives.
fn aggregates(
    rule: &Rule,
    cardinality: Cardinality,
    fields: [&Arc<Field>; 2],
) -> Result<Option<[(Aggregate, DataType); 2]>, String> {
    let many = cardinality.many();
    let aggregate = match (cardinality.grouped(), rule.aggregate()) {
        (false, None) => return Ok(None),
        (false, Some(_)) => {
            return Err("only a grouped pass (cardinality other than one_to_one) aggregates".into());
        }
        (true, None) => {
            return Err("a grouped pass compares a group's rows by sum, min, max or count: name one".into());
        }
        (true, Some(aggregate)) => aggregate,
    };
    let of_side = |side: usize| {
        let aggregate = if many[side] { aggregate } else { Aggregate::Min };
        let field = fields[side];
        if aggregate == Aggregate::Sum && family(field.data_type()) != Family::Number {
            return Err(format!(
                "sum needs a numeric column; {:?} is {}",
                field.name(),
                field.data_type()
            ));
        }
        GroupAggregate::new(aggregate, field)
            .map(|computed| (aggregate, computed.data_type()))
            .map_err(|e| {
                format!(
                    "{} of {:?} ({}): {e}",
                    aggregate.name(),
                    field.name(),
                    field.data_type()
                )
            })
    };
    Ok(Some([of_side(0)?, of_side(1)?]))
}

/// Parses `sql` against both sides' columns (as `l.…` and `r.…`) and checks it is a condition.
fn parse_match_sql(sql: &str, left: &Schema, right: &Schema) -> datafusion::common::Result<MatchSql> {
    let qualified = |side: &str, schema: &Schema| {
        schema
            .fields()
            .iter()
            .map(|f| (Some(TableReference::bare(side)), f.clone()))
            .collect::<Vec<_>>()
    };
    let mut fields = qualified("l", left);
    fields.extend(qualified("r", right));
    let schema = DFSchema::new_with_metadata(fields, HashMap::new())?;
    let ctx = SessionContext::new();
    ctx.register_udf(tolerance_match().as_ref().clone());
    let expr = ctx.parse_sql_expr(sql, &schema)?;
    let data_type = expr.get_type(&schema)?;
    if data_type != DataType::Boolean {
        return plan_err!("must be a condition (true or false), not {data_type}");
    }
    let mut columns = (Vec::new(), Vec::new());
    for column in expr.column_refs() {
        let (side, schema) = match column.relation.as_ref().map(|r| r.table()) {
            Some("l") => (&mut columns.0, left),
            Some("r") => (&mut columns.1, right),
            _ => return plan_err!("name columns as l.column or r.column, not {column}"),
        };
        let field = Arc::new(schema.field_with_name(&column.name)?.clone());
        if !side.contains(&field) {
            side.push(field);
        }
    }
    // `column_refs` is a set: order the columns by name so outputs do not change between runs.
    columns.0.sort_by(|a, b| a.name().cmp(b.name()));
    columns.1.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(MatchSql {
        expr,
        left: columns.0,
        right: columns.1,
    })
}

/// A side's `carry` columns, checked against its schema.
fn carried(side: &Side, schema: &Schema, at: &str) -> Result<Vec<Arc<Field>>, ReconError> {
    let at = |i: usize| format!("{at}.carry[{i}]");
    side.carry
        .iter()
        .enumerate()
        .map(|(i, name)| field(schema, &at(i), name))
        .collect()
}

fn field(schema: &Schema, at: &str, name: &str) -> Result<Arc<Field>, ReconError> {
    schema
        .fields()
        .iter()
        .find(|f| f.name() == name)
        .cloned()
        .ok_or_else(|| {
            let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            ReconError::InvalidRecipe(format!(
                "{at}: unknown column {name:?}; the source has: {}",
                available.join(", ")
            ))
        })
}

fn incompatible(what: &str, left: &Field, right: &Field) -> String {
    format!(
        "{what} columns {:?} ({}) and {:?} ({}) cannot be compared",
        left.name(),
        left.data_type(),
        right.name(),
        right.data_type()
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Family {
    Number,
    Text,
    Date,
    Boolean,
    Other,
}

fn family(data_type: &DataType) -> Family {
    match data_type {
        t if t.is_numeric() => Family::Number,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Family::Text,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => Family::Date,
        DataType::Boolean => Family::Boolean,
        _ => Family::Other,
    }
}

/// The type two columns are compared in, if they can be: the same family (numbers, text,
/// dates, booleans) and a type both convert to.
fn comparable(left: &Field, right: &Field) -> Option<DataType> {
    let family_of_left = family(left.data_type());
    if family_of_left == Family::Other || family_of_left != family(right.data_type()) {
        return None;
    }
    comparison_coercion(left.data_type(), right.data_type())
}

fn check_rule(rule: &Rule, left: &Field, right: &Field) -> Result<(), String> {
    let same_family = || {
        comparable(left, right)
            .map(drop)
            .ok_or_else(|| incompatible("rule", left, right))
    };
    match rule {
        Rule::Equal {
            trim,
            case_insensitive,
            ..
        } => {
            same_family()?;
            if (*trim || *case_insensitive) && family(left.data_type()) != Family::Text {
                return Err("trim and case_insensitive apply to text columns only".into());
            }
            Ok(())
        }
        Rule::EqualOrBothNull { .. } => same_family(),
        Rule::Numeric { abs_tol, rel_tol, .. } => {
            if family(left.data_type()) != Family::Number || family(right.data_type()) != Family::Number {
                return Err(format!(
                    "needs numeric columns; {}",
                    incompatible("rule", left, right)
                ));
            }
            if abs_tol.is_none() && rel_tol.is_none() {
                return Err("give abs_tol, rel_tol or both (0 for exact equality)".into());
            }
            Ok(())
        }
        Rule::DateWindow {
            min_days, max_days, ..
        } => {
            if family(left.data_type()) != Family::Date || family(right.data_type()) != Family::Date {
                return Err(format!(
                    "needs date or timestamp columns; {}",
                    incompatible("rule", left, right)
                ));
            }
            if min_days > max_days {
                return Err(format!(
                    "min_days ({min_days}) is greater than max_days ({max_days})"
                ));
            }
            Ok(())
        }
    }
}

/// The rule's name: given, or its left column's; unique within the recipe, and usable as a
/// column name prefix (letters, digits, `_`).
fn rule_name(rule: &Rule, taken: &mut HashSet<String>) -> Result<String, String> {
    let name = match rule.given_name() {
        Some(given) => {
            let valid = !given.is_empty()
                && given.len() <= 63
                && given.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "rule name {given:?} must be 1 to 63 letters, digits or _"
                ));
            }
            given.to_string()
        }
        None => {
            let base: String = rule
                .columns()
                .0
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            (1..)
                .map(|n| {
                    if n == 1 {
                        base.clone()
                    } else {
                        format!("{base}_{n}")
                    }
                })
                .find(|candidate| !taken.contains(candidate))
                .expect("some suffix is free")
        }
    };
    if !taken.insert(name.clone()) {
        return Err(format!("two rules are named {name:?}; give one a different name"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn schemas() -> (Schema, Schema) {
        let left = Schema::new(vec![
            Field::new("invoice_id", DataType::Utf8, false),
            Field::new("amount", DataType::Decimal128(12, 2), false),
            Field::new("issued_on", DataType::Date32, false),
            Field::new("currency", DataType::Utf8, true),
        ]);
        let right = Schema::new(vec![
            Field::new("invoice_ref", DataType::Utf8View, false),
            Field::new("amount", DataType::Decimal128(14, 2), false),
            Field::new("paid_on", DataType::Date32, false),
            Field::new("currency", DataType::Utf8, true),
            Field::new("payment_id", DataType::Int64, false),
        ]);
        (left, right)
    }

    fn recipe(value: serde_json::Value) -> Recipe {
        serde_json::from_value(value).unwrap()
    }

    fn example() -> serde_json::Value {
        json!({
            "name": "invoices-vs-payments",
            "left": {"source": "invoices", "key": ["invoice_id"]},
            "right": {"source": "payments", "key": ["invoice_ref"],
                      "filters": [{"column": "currency", "op": "eq", "value": "EUR"}]},
            "rules": [
                {"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01},
                {"kind": "date_window", "left": "issued_on", "right": "paid_on", "min_days": 0, "max_days": 30},
                {"kind": "equal", "left": "currency", "right": "currency", "trim": true, "case_insensitive": true}
            ]
        })
    }

    fn error(value: serde_json::Value) -> String {
        let (left, right) = schemas();
        recipe(value).check(&left, &right).unwrap_err().to_string()
    }

    #[test]
    fn the_example_recipe_checks_and_round_trips() {
        let (left, right) = schemas();
        let parsed = recipe(example());
        let checked = parsed.check(&left, &right).unwrap();
        assert_eq!(checked.passes.len(), 1);
        assert_eq!(checked.passes[0].name, "pass_1");
        assert_eq!(checked.passes[0].keys[0].common, DataType::Utf8View);
        let names: Vec<&str> = checked.passes[0].rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["amount", "issued_on", "currency"]);
        let written = serde_json::to_value(&parsed).unwrap();
        assert_eq!(written["rules"][0]["abs_tol"], json!(0.01));
        assert_eq!(recipe(written), parsed);
    }

    #[test]
    fn tolerances_keep_the_digits_written() {
        let exact: Tolerance = serde_json::from_value(json!(0.01)).unwrap();
        assert_eq!(exact.unscaled(), (1, 2));
        let text: Tolerance = serde_json::from_value(json!("12.500")).unwrap();
        assert_eq!(text.unscaled(), (12500, 3));
        let whole: Tolerance = serde_json::from_value(json!(3)).unwrap();
        assert_eq!(whole.unscaled(), (3, 0));
        for bad in [
            json!(-0.01),
            json!("1e-3"),
            json!("abc"),
            json!("1."),
            json!(".5"),
        ] {
            assert!(serde_json::from_value::<Tolerance>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn problems_are_named() {
        let mut unknown = example();
        unknown["rules"][0]["right"] = json!("amt");
        assert!(error(unknown).contains("rules[0].right: unknown column \"amt\""));

        let mut empty = example();
        empty["left"]["key"] = json!([]);
        assert!(error(empty).contains("left.key is empty"));

        let mut types = example();
        types["rules"][1]["right"] = json!("amount");
        assert!(error(types).contains("needs date or timestamp columns"));

        let mut key_types = example();
        key_types["right"]["key"] = json!(["amount"]);
        assert!(error(key_types).contains("cannot be compared"));

        let mut filter = example();
        filter["right"]["filters"][0]["column"] = json!("nope");
        assert!(error(filter).contains("right.filters"));

        let mut window = example();
        window["rules"][1]["min_days"] = json!(5);
        window["rules"][1]["max_days"] = json!(1);
        assert!(error(window).contains("greater than max_days"));

        let mut no_tolerance = example();
        no_tolerance["rules"][0]
            .as_object_mut()
            .unwrap()
            .remove("abs_tol");
        assert!(error(no_tolerance).contains("abs_tol"));

        let mut twins = example();
        twins["rules"][2]["name"] = json!("amount");
        assert!(error(twins).contains("two rules are named"));

        let mut carry = example();
        carry["right"]["carry"] = json!(["amount", "payment_no"]);
        assert!(error(carry).contains("right.carry[1]: unknown column \"payment_no\""));
    }

    #[test]
    fn carried_columns_follow_those_the_passes_read_each_once() {
        let (left, right) = schemas();
        let mut value = example();
        value["right"]["carry"] = json!(["payment_id", "amount"]);
        let checked = recipe(value).check(&left, &right).unwrap();
        let names =
            |left: bool| -> Vec<String> { checked.columns(left).iter().map(|f| f.name().clone()).collect() };
        assert_eq!(names(false).last().map(String::as_str), Some("payment_id"));
        assert_eq!(names(false).iter().filter(|n| *n == "amount").count(), 1);
        assert!(!names(true).contains(&"payment_id".to_string()));
    }

    #[test]
    fn match_sql_is_parsed_against_both_sides() {
        let (left, right) = schemas();
        let mut value = example();
        value["rules"] = json!([]);
        value["match_sql"] = json!("tolerance_match(l.amount, r.amount, 0.01) AND l.issued_on <= r.paid_on");
        let checked = recipe(value.clone()).check(&left, &right).unwrap();
        let parsed = checked.passes[0].match_sql.clone().unwrap();
        let names = |fields: &[Arc<Field>]| fields.iter().map(|f| f.name().clone()).collect::<Vec<_>>();
        assert_eq!(names(&parsed.left), ["amount", "issued_on"]);
        assert_eq!(names(&parsed.right), ["amount", "paid_on"]);

        value["match_sql"] = json!("l.amount + r.amount");
        assert!(
            error(value.clone()).contains("match_sql: "),
            "{}",
            error(value.clone())
        );
        value["match_sql"] = json!("l.nope = r.amount");
        assert!(error(value.clone()).contains("match_sql"));
        value["match_sql"] = json!("amount = 1");
        assert!(error(value.clone()).contains("match_sql"));
        let mut both = example();
        both["match_sql"] = json!("true");
        assert!(error(both).contains("not both"));
    }

    fn two_passes() -> serde_json::Value {
        json!({
            "name": "waterfall",
            "left": {"source": "invoices"},
            "right": {"source": "payments"},
            "passes": [
                {"name": "reference", "left_key": ["invoice_id"], "right_key": ["invoice_ref"],
                 "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0}]},
                {"left_key": ["currency", "amount"], "right_key": ["currency", "amount"],
                 "rules": [{"kind": "date_window", "left": "issued_on", "right": "paid_on",
                            "min_days": -3, "max_days": 3}]}
            ]
        })
    }

    #[test]
    fn passes_check_each_with_its_own_keys_and_rules() {
        let (left, right) = schemas();
        let checked = recipe(two_passes()).check(&left, &right).unwrap();
        let names: Vec<&str> = checked.passes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["reference", "pass_2"]);
        assert_eq!(checked.passes[1].keys.len(), 2);
        let columns =
            |left: bool| -> Vec<String> { checked.columns(left).iter().map(|f| f.name().clone()).collect() };
        assert_eq!(columns(true), ["invoice_id", "amount", "currency", "issued_on"]);
        assert_eq!(columns(false), ["invoice_ref", "amount", "currency", "paid_on"]);

        let problem = |edit: &dyn Fn(&mut serde_json::Value)| problem_of(two_passes(), edit);
        let unknown = problem(&|v| v["passes"][1]["rules"][0]["right"] = json!("paid"));
        assert!(
            unknown.contains("passes[1].rules[0].right: unknown column \"paid\""),
            "{unknown}"
        );
        let empty = problem(&|v| v["passes"][0]["right_key"] = json!([]));
        assert!(empty.contains("passes[0].right_key is empty"), "{empty}");
        let uneven = problem(&|v| v["passes"][1]["right_key"] = json!(["currency"]));
        assert!(uneven.contains("passes[1].left_key has 2 columns"), "{uneven}");
        let twins = problem(&|v| v["passes"][1]["name"] = json!("reference"));
        assert!(twins.contains("passes[1].name: another pass is named"), "{twins}");
        let both = problem(&|v| v["left"]["key"] = json!(["invoice_id"]));
        assert!(both.contains("left.key and right.key"), "{both}");
        let top_rules = problem(&|v| v["match_sql"] = json!("true"));
        assert!(top_rules.contains("each pass has its own"), "{top_rules}");
        let bad_name = problem(&|v| v["passes"][0]["name"] = json!("a b"));
        assert!(bad_name.contains("passes[0].name"), "{bad_name}");
    }

    /// The error of `base` changed by `edit`.
    fn problem_of(base: serde_json::Value, edit: &dyn Fn(&mut serde_json::Value)) -> String {
        let mut changed = base;
        edit(&mut changed);
        error(changed)
    }

    #[test]
    fn grouped_passes_compare_aggregates_each_rule_names() {
        let (left, right) = schemas();
        let mut value = two_passes();
        value["passes"][0]["cardinality"] = json!("one_to_many");
        value["passes"][0]["max_group_size"] = json!(5);
        value["passes"][0]["rules"][0]["aggregate"] = json!("sum");
        let checked = recipe(value.clone()).check(&left, &right).unwrap();
        let rule = &checked.passes[0].rules[0];
        let [(left_aggregate, _), (right_aggregate, right_type)] = rule.aggregates.clone().unwrap();
        assert_eq!(
            (left_aggregate, right_aggregate),
            (Aggregate::Min, Aggregate::Sum)
        );
        assert_eq!(right_type, DataType::Decimal128(24, 2));
        assert_eq!(checked.passes[0].cardinality.many(), [false, true]);

        let problem = |edit: &dyn Fn(&mut serde_json::Value)| problem_of(value.clone(), edit);
        let none = problem(&|v| v["passes"][0]["rules"][0]["aggregate"] = json!(null));
        assert!(
            none.contains("passes[0].rules[0].aggregate: a grouped pass"),
            "{none}"
        );
        let one_to_one = problem(&|v| v["passes"][1]["rules"][0]["aggregate"] = json!("max"));
        assert!(
            one_to_one.contains("passes[1].rules[0].aggregate: only a grouped pass"),
            "{one_to_one}"
        );
        let text = problem(&|v| {
            v["passes"][0]["rules"][0] =
                json!({"kind": "equal", "left": "currency", "right": "currency", "aggregate": "sum"})
        });
        assert!(text.contains("sum needs a numeric column"), "{text}");
        let tiny = problem(&|v| v["passes"][0]["max_group_size"] = json!(1));
        assert!(
            tiny.contains("passes[0].max_group_size: a group has at least 2 rows"),
            "{tiny}"
        );
        let ungrouped = problem(&|v| v["passes"][1]["max_group_size"] = json!(10));
        assert!(ungrouped.contains("passes[1].max_group_size"), "{ungrouped}");
        let sql = problem(&|v| {
            v["passes"][0]["rules"] = json!([]);
            v["passes"][0]["match_sql"] = json!("true");
        });
        assert!(sql.contains("passes[0].match_sql: a grouped pass"), "{sql}");
        let mut count = value.clone();
        count["passes"][0]["rules"][0] = json!({"kind": "numeric", "left": "amount", "right": "invoice_ref",
                                                "aggregate": "count", "abs_tol": 0});
        let checked = recipe(count).check(&left, &right).unwrap();
        let counted = checked.passes[0].rules[0].aggregates.clone().unwrap();
        assert_eq!(
            counted[1],
            (Aggregate::Count, DataType::Int64),
            "a count of text is a number"
        );
    }

    #[test]
    fn proximity_passes_compare_numbers_or_whole_days() {
        let (left, right) = schemas();
        let mut value = two_passes();
        value["passes"][1]["left_key"] = json!(["currency"]);
        value["passes"][1]["right_key"] = json!(["currency"]);
        value["passes"][1]["nearest"] = json!([
            {"left": "issued_on", "right": "paid_on", "within": 3},
            {"left": "amount", "right": "amount", "within": 0.005}
        ]);
        let checked = recipe(value.clone()).check(&left, &right).unwrap();
        let compared: Vec<&DataType> = checked.passes[1].nearest.iter().map(|n| &n.compared).collect();
        assert_eq!(compared, [&DataType::Int32, &DataType::Decimal128(38, 3)]);

        let problem = |edit: &dyn Fn(&mut serde_json::Value)| problem_of(value.clone(), edit);
        let days = problem(&|v| v["passes"][1]["nearest"][0]["within"] = json!(1.5));
        assert!(
            days.contains("passes[1].nearest[0].within: dates are near by whole days"),
            "{days}"
        );
        let text = problem(&|v| v["passes"][1]["nearest"][1]["left"] = json!("currency"));
        assert!(
            text.contains("passes[1].nearest[1]: needs two numeric or two date columns"),
            "{text}"
        );
        let unknown = problem(&|v| v["passes"][1]["nearest"][1]["right"] = json!("amt"));
        assert!(
            unknown.contains("passes[1].nearest[1].right: unknown column"),
            "{unknown}"
        );
        let grouped = problem(&|v| v["passes"][1]["cardinality"] = json!("many_to_many"));
        assert!(
            grouped.contains("passes[1].nearest: a proximity pass pairs one row"),
            "{grouped}"
        );
        let negative = serde_json::from_value::<Nearest>(json!({"left": "a", "right": "b", "within": -1}));
        assert!(negative.is_err());
    }

    #[test]
    fn the_example_recipes_check_against_the_demo_tables() {
        let invoices = Schema::new(vec![
            Field::new("invoice_id", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("issued_on", DataType::Date32, true),
        ]);
        let payments = Schema::new(vec![
            Field::new("invoice_ref", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("paid_on", DataType::Date32, true),
        ]);
        for example in [
            include_str!("../../../examples/recipes/invoices-vs-payments.json"),
            include_str!("../../../examples/recipes/invoices-vs-payments-waterfall.json"),
        ] {
            let recipe: Recipe = serde_json::from_str(example).unwrap();
            if let Err(error) = recipe.check(&invoices, &payments) {
                panic!("{}: {error}", recipe.name);
            }
        }
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        assert!(
            serde_json::from_value::<Recipe>(json!({"name": "x", "left": {"source": "a", "key": ["k"]},
            "right": {"source": "b", "key": ["k"]}, "rules": [{"kind": "fuzzy", "left": "a", "right": "b"}]}))
            .is_err()
        );
        assert!(
            serde_json::from_value::<Recipe>(json!({"name": "x", "left": {"source": "a", "key": ["k"]},
            "right": {"source": "b", "key": ["k"]}, "extra": 1}))
            .is_err()
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Column names: mostly the test schemas' own, sometimes anything.
    fn column() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec!["invoice_id", "invoice_ref", "amount", "issued_on", "paid_on", "currency"])
                .prop_map(String::from),
            1 => any::<String>(),
        ]
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            "-?[0-9]{0,40}(\\.[0-9]{0,25})?".prop_map(|s| json!(s)),
            any::<String>().prop_map(|s| json!(s)),
        ]
    }

    fn operator() -> impl Strategy<Value = String> {
        prop_oneof![
            29 => prop::sample::select(vec!["eq", "neq", "gt", "gte", "lt", "lte", "like", "is_null"]).prop_map(String::from),
            1 => "[a-z_]{2,12}",
        ]
    }

    fn tolerance() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => "[0-9]{1,3}(\\.[0-9]{1,4})?".prop_map(|s| json!(s.parse::<f64>().unwrap())),
            4 => "[0-9]{1,3}(\\.[0-9]{1,4})?".prop_map(|s| json!(s)),
            1 => number(),
        ]
    }

    fn rule() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                39 => prop::sample::select(vec!["equal", "numeric", "date_window", "equal_or_both_null"]),
                1 => Just("other"),
            ],
            column(),
            column(),
            tolerance(),
            any::<i32>(),
            any::<i32>(),
            proptest::option::of(any::<String>()),
        )
            .prop_map(|(kind, left, right, tolerance, min_days, max_days, name)| {
                let mut rule = json!({"kind": kind, "left": left, "right": right});
                match kind {
                    "numeric" => rule["abs_tol"] = tolerance,
                    "date_window" => {
                        rule["min_days"] = json!(min_days);
                        rule["max_days"] = json!(max_days);
                    }
                    "equal" => rule["trim"] = json!(true),
                    _ => {}
                }
                if let Some(name) = name {
                    rule["name"] = json!(name);
                }
                rule
            })
    }

    /// One side: mostly its real key, sometimes other or more columns; few filters.
    fn side(key: &'static str) -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                6 => Just(vec![key.to_string()]),
                1 => prop::collection::vec(column(), 0..3),
            ],
            prop_oneof![
                3 => Just(Vec::new()),
                1 => prop::collection::vec((column(), operator(), number()), 1..3),
            ],
        )
            .prop_map(|(key, filters)| {
                let filters: Vec<Value> = filters
                    .into_iter()
                    .map(|(column, op, value)| json!({"column": column, "op": op, "value": value}))
                    .collect();
                json!({"source": "s", "key": key, "filters": filters})
            })
    }

    fn recipe_json() -> impl Strategy<Value = Value> {
        (
            prop_oneof![9 => "[a-z][a-z -]{0,20}", 1 => any::<String>()],
            side("invoice_id"),
            side("invoice_ref"),
            prop::collection::vec(rule(), 0..5),
            proptest::option::of(prop_oneof![
                any::<String>(),
                Just("tolerance_match(l.amount, r.amount, 0.01)".to_string()),
                "(l|r)\\.(amount|currency|nope) (=|<|>) (l|r)\\.(amount|currency)( AND| OR)? ?[()a-z.]{0,20}",
            ]),
        )
            .prop_map(|(name, left, right, rules, match_sql)| {
                let mut recipe = json!({"name": name, "left": left, "right": right, "rules": rules});
                if let Some(sql) = match_sql.filter(|_| rules.is_empty()) {
                    recipe["match_sql"] = json!(sql);
                }
                recipe
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_recipe_shaped_json_checks_or_names_its_problem(value in recipe_json()) {
            let (left, right) = super::tests::schemas();
            let Ok(recipe) = serde_json::from_value::<Recipe>(value) else {
                return Ok(());
            };
            match recipe.check(&left, &right) {
                Ok(checked) => prop_assert_eq!(checked.passes[0].rules.len(), recipe.rules.len()),
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        #[test]
        fn any_text_is_a_tolerance_or_an_error(text in any::<String>()) {
            let _ = text.parse::<Tolerance>();
        }

        #[test]
        fn tolerances_keep_the_digits_as_written(whole in 0u64..1_000_000_000, fraction in "[0-9]{0,18}") {
            let text = if fraction.is_empty() { whole.to_string() } else { format!("{whole}.{fraction}") };
            let tolerance: Tolerance = text.parse().unwrap();
            let expected: i128 = format!("{whole}{fraction}").parse().unwrap();
            prop_assert_eq!(tolerance.unscaled(), (expected, fraction.len() as i8));
        }
    }
}
