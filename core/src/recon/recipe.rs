//! Recipes: which two sources to reconcile, on which keys, under which rules, and their
//! validation against the sources' real schemas.

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
    pub left: Side,
    pub right: Side,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Instead of rules: a boolean SQL expression over the paired rows, naming columns `l.…` and
    /// `r.…`, e.g. `tolerance_match(l.amount, r.amount, 0.01) AND l.currency = r.currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_sql: Option<String>,
}

/// One side of a reconciliation: a source alias or a connection table (`connection.schema.table`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Side {
    pub source: String,
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Condition>,
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
    },
    /// `right - left`, in days, lies within `min_days..=max_days`.
    DateWindow {
        left: String,
        right: String,
        min_days: i32,
        max_days: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Equal, where two nulls count as equal.
    EqualOrBothNull {
        left: String,
        right: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
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

/// A rule with everything the plan needs resolved: its name and both columns' fields.
#[derive(Debug, Clone)]
pub struct CheckedRule {
    pub name: String,
    pub rule: Rule,
    pub left: Arc<Field>,
    pub right: Arc<Field>,
}

/// A key column pair and the type both sides are compared in.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub left: Arc<Field>,
    pub right: Arc<Field>,
    pub common: DataType,
}

/// A recipe checked against both sides' schemas.
#[derive(Debug, Clone)]
pub struct CheckedRecipe {
    pub recipe: Recipe,
    pub keys: Vec<KeyPair>,
    pub rules: Vec<CheckedRule>,
    pub match_sql: Option<MatchSql>,
}

/// A recipe's `match_sql`, parsed: columns are qualified `l` or `r`.
#[derive(Debug, Clone)]
pub struct MatchSql {
    pub expr: Expr,
    pub left: Vec<Arc<Field>>,
    pub right: Vec<Arc<Field>>,
}

/// The name `match_sql` has among failed rules.
pub const MATCH_SQL: &str = "match_sql";

impl Recipe {
    /// Checks the recipe against the sources' schemas; the error names the first problem.
    pub fn check(&self, left: &Schema, right: &Schema) -> Result<CheckedRecipe, ReconError> {
        let invalid = |message: String| ReconError::InvalidRecipe(message);
        if self.name.trim().is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(format!("name must be 1 to {MAX_NAME_CHARS} characters")));
        }
        for (side, fields) in [("left", left), ("right", right)] {
            let recipe_side = if side == "left" { &self.left } else { &self.right };
            if recipe_side.key.is_empty() {
                return Err(invalid(format!(
                    "{side}.key is empty: name at least one key column"
                )));
            }
            let fields: Vec<Arc<Field>> = fields.fields().iter().cloned().collect();
            predicate(&fields, &recipe_side.filters).map_err(|e| invalid(format!("{side}.filters: {e}")))?;
        }
        if self.left.key.len() != self.right.key.len() {
            return Err(invalid(format!(
                "left.key has {} columns and right.key {}: keys are compared column by column",
                self.left.key.len(),
                self.right.key.len()
            )));
        }
        let mut keys = Vec::new();
        for (l, r) in self.left.key.iter().zip(&self.right.key) {
            let (left, right) = (field(left, "left.key", l)?, field(right, "right.key", r)?);
            let common =
                comparable(&left, &right).ok_or_else(|| invalid(incompatible("key", &left, &right)))?;
            keys.push(KeyPair { left, right, common });
        }
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let (l, r) = rule.columns();
            let at = format!("rules[{i}]");
            let (left, right) = (
                field(left, &format!("{at}.left"), l)?,
                field(right, &format!("{at}.right"), r)?,
            );
            check_rule(rule, &left, &right)
                .map_err(|reason| invalid(format!("{at} ({}): {reason}", rule.kind())))?;
            let name = rule_name(rule, &mut names).map_err(|reason| invalid(format!("{at}: {reason}")))?;
            rules.push(CheckedRule {
                name,
                rule: rule.clone(),
                left,
                right,
            });
        }
        let match_sql = match &self.match_sql {
            Some(_) if !self.rules.is_empty() => {
                return Err(invalid("give rules or match_sql, not both".into()));
            }
            Some(sql) => {
                Some(parse_match_sql(sql, left, right).map_err(|e| invalid(format!("match_sql: {e}")))?)
            }
            None => None,
        };
        Ok(CheckedRecipe {
            recipe: self.clone(),
            keys,
            rules,
            match_sql,
        })
    }
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
        assert_eq!(checked.keys[0].common, DataType::Utf8View);
        let names: Vec<&str> = checked.rules.iter().map(|r| r.name.as_str()).collect();
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
    }

    #[test]
    fn match_sql_is_parsed_against_both_sides() {
        let (left, right) = schemas();
        let mut value = example();
        value["rules"] = json!([]);
        value["match_sql"] = json!("tolerance_match(l.amount, r.amount, 0.01) AND l.issued_on <= r.paid_on");
        let checked = recipe(value.clone()).check(&left, &right).unwrap();
        let parsed = checked.match_sql.unwrap();
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
                Ok(checked) => prop_assert_eq!(checked.rules.len(), recipe.rules.len()),
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
