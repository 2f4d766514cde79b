//! Recipe parameters: declared by a recipe with a type and maybe a default, given per run, and
//! put in place of `{name}` in its filter values and in its sources' locations.
//!
//! A recipe that declares no parameters is never rewritten, so a brace in an older recipe's filter
//! stays literal; in one that does, `{{` and `}}` stand for literal braces.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::Recipe;

/// What a parameter's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// `YYYY-MM-DD`.
    Date,
    Text,
    /// A decimal number, given as a JSON number or as text.
    Number,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Date => "date",
            Self::Text => "text",
            Self::Number => "number",
        })
    }
}

/// A parameter a recipe declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value of a run that does not give one; without it, every run must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub default: Option<Value>,
}

/// A run's parameter values by name, as text in their canonical form.
pub type ParamValues = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error("missing parameter {name} ({kind}): give it in params, or declare a default")]
    Missing { name: String, kind: ParamType },
    #[error("parameter {name}: expected {expected}, got {got}")]
    IllTyped {
        name: String,
        expected: &'static str,
        got: String,
    },
    #[error("unknown parameter {name}: the recipe declares {declared}")]
    Unknown { name: String, declared: String },
    #[error("{at}: {{{name}}} is not a declared parameter")]
    Undeclared { at: String, name: String },
    #[error("params[{index}]: {reason}")]
    InvalidDeclaration { index: usize, reason: String },
    #[error(
        "parameter {name} stands in a source location, where its value may hold only letters, digits, \
         '.', '-' and '_' (not starting with '.'); got {value:?}"
    )]
    UnsafeInLocation { name: String, value: String },
    #[error("the location with its parameters in place is not a URL: {0}")]
    BadLocation(String),
}

impl ParamType {
    /// `value` in canonical text form, or what was expected.
    fn canonical(self, value: &Value) -> Result<String, &'static str> {
        match (self, value) {
            (Self::Date, Value::String(text)) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|date| date.format("%Y-%m-%d").to_string())
                .map_err(|_| "a date as YYYY-MM-DD"),
            (Self::Date, _) => Err("a date as YYYY-MM-DD"),
            (Self::Text, Value::String(text)) => Ok(text.clone()),
            (Self::Text, _) => Err("text (a JSON string)"),
            (Self::Number, Value::Number(number)) => Ok(number.to_string()),
            (Self::Number, Value::String(text)) if is_decimal(text) => Ok(text.clone()),
            (Self::Number, _) => Err("a decimal number"),
        }
    }

    /// A value of this type for checking a recipe whose parameter has no default.
    fn sample(self) -> &'static str {
        match self {
            Self::Date => "2000-01-01",
            Self::Text => "x",
            Self::Number => "0",
        }
    }
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole) && all_digits(fraction)
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

/// Checks the declarations: names are identifiers, each once; defaults have their type.
pub fn check_declarations(params: &[Param]) -> Result<(), ParamError> {
    for (index, param) in params.iter().enumerate() {
        let invalid = |reason: String| ParamError::InvalidDeclaration { index, reason };
        if !is_name(&param.name) {
            return Err(invalid(format!(
                "name {:?} must be a letter or '_' then letters, digits or '_' (at most 63)",
                param.name
            )));
        }
        if params[..index].iter().any(|p| p.name == param.name) {
            return Err(invalid(format!("{} is declared twice", param.name)));
        }
        if let Some(default) = &param.default {
            param
                .kind
                .canonical(default)
                .map_err(|expected| invalid(format!("default: expected {expected}, got {default}")))?;
        }
    }
    Ok(())
}

/// The values of a run: `given` checked against the declarations, defaults for the rest.
pub fn resolve(params: &[Param], given: &serde_json::Map<String, Value>) -> Result<ParamValues, ParamError> {
    if let Some(name) = given.keys().find(|name| !params.iter().any(|p| &p.name == *name)) {
        let declared: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        return Err(ParamError::Unknown {
            name: name.clone(),
            declared: if declared.is_empty() {
                "none".into()
            } else {
                declared.join(", ")
            },
        });
    }
    let mut values = ParamValues::new();
    for param in params {
        let Some(value) = given.get(&param.name).or(param.default.as_ref()) else {
            return Err(ParamError::Missing {
                name: param.name.clone(),
                kind: param.kind,
            });
        };
        let canonical = param
            .kind
            .canonical(value)
            .map_err(|expected| ParamError::IllTyped {
                name: param.name.clone(),
                expected,
                got: value.to_string(),
            })?;
        values.insert(param.name.clone(), canonical);
    }
    Ok(values)
}

/// The declared defaults.
pub fn defaults(params: &[Param]) -> ParamValues {
    params
        .iter()
        .filter_map(|param| {
            let value = param.kind.canonical(param.default.as_ref()?).ok()?;
            Some((param.name.clone(), value))
        })
        .collect()
}

/// Values for checking a recipe before any run: defaults, else a sample of each type.
pub fn samples(params: &[Param]) -> ParamValues {
    params
        .iter()
        .map(|param| {
            let value = param
                .default
                .as_ref()
                .and_then(|d| param.kind.canonical(d).ok())
                .unwrap_or_else(|| param.kind.sample().to_string());
            (param.name.clone(), value)
        })
        .collect()
}

/// `template` with each `{name}` replaced by its value and `{{`, `}}` by single braces; `at` names
/// the template in errors.
pub fn substitute(template: &str, values: &ParamValues, at: &str) -> Result<String, ParamError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(brace) = rest.find(['{', '}']) {
        out.push_str(&rest[..brace]);
        let tail = &rest[brace..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let placeholder = tail[1..]
            .split_once('}')
            .map(|(name, _)| name)
            .filter(|name| is_name(name));
        let Some(name) = placeholder else {
            // Not a placeholder: a lone brace stays as it is.
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        };
        let value = values.get(name).ok_or_else(|| ParamError::Undeclared {
            at: at.to_string(),
            name: name.to_string(),
        })?;
        out.push_str(value);
        rest = &tail[name.len() + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A source location with its parameters in place. URLs keep `{` and `}` percent-encoded, so
/// those are read as braces; a value must be a plain name there, so that it cannot climb out of
/// the location's directory or change its host, bucket or query.
pub fn substitute_location(location: &str, values: &ParamValues) -> Result<String, ParamError> {
    let decoded = location
        .replace("%7B", "{")
        .replace("%7b", "{")
        .replace("%7D", "}")
        .replace("%7d", "}");
    if !decoded.contains('{') {
        return Ok(location.to_string());
    }
    for (name, value) in values {
        let safe = !value.is_empty()
            && !value.starts_with('.')
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !safe && decoded.contains(&format!("{{{name}}}")) {
            return Err(ParamError::UnsafeInLocation {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    substitute(&decoded, values, "the source location")
}

/// Whether a location names parameters.
pub fn has_placeholders(location: &str) -> bool {
    let lower = location.to_ascii_lowercase();
    lower.contains("%7b") || location.contains('{')
}

impl Recipe {
    /// The recipe as it can be checked before any run: its declarations checked, and its filters
    /// given the parameters' defaults, or samples of their types.
    pub fn with_sample_params(&self) -> Result<Recipe, ParamError> {
        check_declarations(&self.params)?;
        self.with_params(&samples(&self.params))
    }

    /// The recipe a run with `values` runs: its filter values with the parameters in place, and
    /// no parameters left to declare. A recipe without parameters is returned as it is.
    pub fn with_params(&self, values: &ParamValues) -> Result<Recipe, ParamError> {
        let mut resolved = self.clone();
        if self.params.is_empty() {
            return Ok(resolved);
        }
        resolved.params.clear();
        for (side, filters) in [
            ("left", &mut resolved.left.filters),
            ("right", &mut resolved.right.filters),
        ] {
            for (index, filter) in filters.iter_mut().enumerate() {
                let at = format!("{side}.filters[{index}].value");
                filter.value = substitute_value(&filter.value, values, &at)?;
            }
        }
        Ok(resolved)
    }
}

fn substitute_value(value: &Value, values: &ParamValues, at: &str) -> Result<Value, ParamError> {
    Ok(match value {
        Value::String(text) => Value::String(substitute(text, values, at)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| substitute_value(item, values, at))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declared() -> Vec<Param> {
        serde_json::from_value(json!([
            {"name": "run_date", "type": "date"},
            {"name": "region", "type": "text", "default": "eu"},
            {"name": "limit", "type": "number", "default": 100}
        ]))
        .unwrap()
    }

    fn given(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn values_are_given_or_defaulted_and_checked_by_type() {
        let values = resolve(
            &declared(),
            &given(json!({"run_date": "2026-11-30", "limit": "2.5"})),
        )
        .unwrap();
        assert_eq!(
            values,
            ParamValues::from([
                ("run_date".into(), "2026-11-30".into()),
                ("region".into(), "eu".into()),
                ("limit".into(), "2.5".into()),
            ])
        );
        let error = |given_params: Value| {
            resolve(&declared(), &given(given_params))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(json!({})),
            "missing parameter run_date (date): give it in params, or declare a default"
        );
        assert!(error(json!({"run_date": "30/11/2026"})).starts_with("parameter run_date: expected a date"));
        assert!(error(json!({"run_date": "2026-02-30"})).contains("run_date"));
        assert!(error(json!({"run_date": "2026-11-30", "limit": "1e9"})).starts_with("parameter limit:"));
        assert!(error(json!({"run_date": "2026-11-30", "region": 7})).starts_with("parameter region:"));
        assert_eq!(
            error(json!({"run_date": "2026-11-30", "nope": 1})),
            "unknown parameter nope: the recipe declares run_date, region, limit"
        );
    }

    #[test]
    fn declarations_need_names_once_and_defaults_of_their_type() {
        assert_eq!(check_declarations(&declared()), Ok(()));
        let bad = |decl: Value| {
            let params: Vec<Param> = serde_json::from_value(decl).unwrap();
            check_declarations(&params).unwrap_err().to_string()
        };
        assert!(bad(json!([{"name": "1x", "type": "text"}])).starts_with("params[0]: name"));
        assert!(bad(json!([{"name": "a", "type": "text"}, {"name": "a", "type": "date"}])).contains("twice"));
        assert!(bad(json!([{"name": "d", "type": "date", "default": "soon"}])).contains("default"));
    }

    #[test]
    fn placeholders_are_replaced_and_double_braces_are_literal() {
        let values = ParamValues::from([("a".into(), "1".into()), ("b".into(), "two".into())]);
        assert_eq!(substitute("{a}-{b}", &values, "x").unwrap(), "1-two");
        assert_eq!(substitute("{{a}} {a}}}", &values, "x").unwrap(), "{a} 1}");
        assert_eq!(
            substitute("{ not a name } {", &values, "x").unwrap(),
            "{ not a name } {"
        );
        assert_eq!(
            substitute("v={c}", &values, "left.filters[0].value")
                .unwrap_err()
                .to_string(),
            "left.filters[0].value: {c} is not a declared parameter"
        );
    }

    #[test]
    fn locations_take_only_plain_names() {
        let values = |v: &str| ParamValues::from([("day".into(), v.to_string())]);
        let location = "s3://bank/exports/%7Bday%7D/statement.csv";
        assert_eq!(
            substitute_location(location, &values("2026-11-30")).unwrap(),
            "s3://bank/exports/2026-11-30/statement.csv"
        );
        for unsafe_value in ["../secrets", "a/b", "", ".hidden", "x?y", "a%2Fb"] {
            let error = substitute_location(location, &values(unsafe_value)).unwrap_err();
            assert!(
                matches!(error, ParamError::UnsafeInLocation { .. }),
                "{unsafe_value}: {error}"
            );
        }
        assert_eq!(
            substitute_location("s3://bank/fixed.csv", &values("../x")).unwrap(),
            "s3://bank/fixed.csv",
            "a location without placeholders is left alone"
        );
        assert!(has_placeholders(location) && !has_placeholders("s3://bank/fixed.csv"));
    }

    #[test]
    fn a_recipe_gets_its_filters_resolved_and_loses_its_declarations() {
        let recipe: Recipe = serde_json::from_value(json!({
            "name": "r",
            "params": [{"name": "from", "type": "date"}, {"name": "to", "type": "date"}],
            "left": {"source": "a", "key": ["id"],
                     "filters": [{"column": "d", "op": "between", "value": ["{from}", "{to}"]}]},
            "right": {"source": "b", "key": ["id"],
                      "filters": [{"column": "d", "op": "gte", "value": "{from}"}]}
        }))
        .unwrap();
        let values = ParamValues::from([
            ("from".into(), "2026-11-01".into()),
            ("to".into(), "2026-11-30".into()),
        ]);
        let resolved = recipe.with_params(&values).unwrap();
        assert!(resolved.params.is_empty());
        assert_eq!(
            resolved.left.filters[0].value,
            json!(["2026-11-01", "2026-11-30"])
        );
        assert_eq!(resolved.right.filters[0].value, json!("2026-11-01"));
        let partial = ParamValues::from([("from".into(), "2026-11-01".into())]);
        assert_eq!(
            recipe.with_params(&partial).unwrap_err().to_string(),
            "left.filters[0].value: {to} is not a declared parameter"
        );
    }
}
