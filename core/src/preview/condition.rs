//! Preview conditions (`{column, op, value}`) and the operand each operator requires.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{MAX_IN_VALUES, PreviewError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Between,
    In,
    /// SQL `LIKE` on the value's text form: case-sensitive, `%` any run, `_` one character,
    /// `\` escapes the next character.
    Like,
    IsNull,
    IsNotNull,
}

impl Op {
    /// The SQL comparison operator of a scalar comparison.
    pub fn comparison(self) -> Option<&'static str> {
        Some(match self {
            Op::Eq => "=",
            Op::Neq => "<>",
            Op::Gt => ">",
            Op::Gte => ">=",
            Op::Lt => "<",
            Op::Lte => "<=",
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub column: String,
    pub op: Op,
    #[serde(default)]
    pub value: Value,
}

/// A condition's value, shaped as its operator needs it. Scalars travel as text and are converted
/// to the column's type by the engine that evaluates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    None,
    One(String),
    Two(String, String),
    List(Vec<String>),
}

impl Condition {
    pub fn operand(&self) -> Result<Operand, PreviewError> {
        let invalid = |reason: &str| PreviewError::InvalidCondition {
            column: self.column.clone(),
            reason: reason.to_string(),
        };
        match self.op {
            Op::IsNull | Op::IsNotNull => match self.value {
                Value::Null => Ok(Operand::None),
                _ => Err(invalid("is_null and is_not_null take no value")),
            },
            Op::Between => match self.value.as_array().map(Vec::as_slice) {
                Some([low, high]) => Ok(Operand::Two(
                    scalar(low).ok_or_else(|| invalid("between needs two scalar values"))?,
                    scalar(high).ok_or_else(|| invalid("between needs two scalar values"))?,
                )),
                _ => Err(invalid(
                    "between needs a list of exactly two values, e.g. [1, 10]",
                )),
            },
            Op::In => {
                let values = self
                    .value
                    .as_array()
                    .filter(|values| !values.is_empty())
                    .ok_or_else(|| invalid("in needs a non-empty list of values, e.g. [\"a\", \"b\"]"))?;
                if values.len() > MAX_IN_VALUES {
                    return Err(invalid(&format!("in takes at most {MAX_IN_VALUES} values")));
                }
                let values = values.iter().map(scalar).collect::<Option<Vec<_>>>();
                Ok(Operand::List(
                    values.ok_or_else(|| invalid("in takes scalar values only"))?,
                ))
            }
            Op::Like => match &self.value {
                Value::String(pattern) => Ok(Operand::One(pattern.clone())),
                _ => Err(invalid("like needs a string pattern, e.g. \"INV-%\"")),
            },
            Op::Eq | Op::Neq | Op::Gt | Op::Gte | Op::Lt | Op::Lte => scalar(&self.value)
                .map(Operand::One)
                .ok_or_else(|| invalid("this operator needs one scalar value (string, number or boolean)")),
        }
    }
}

/// Strings, numbers and booleans as text; anything else has no scalar form.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn operand(value: Value) -> Result<Operand, PreviewError> {
        serde_json::from_value::<Condition>(value).unwrap().operand()
    }

    #[test]
    fn each_operator_takes_its_shape_of_value() {
        assert_eq!(
            operand(json!({"column": "a", "op": "eq", "value": 1.5})).unwrap(),
            Operand::One("1.5".into())
        );
        assert_eq!(
            operand(json!({"column": "a", "op": "between", "value": ["2024-01-01", "2024-02-01"]})).unwrap(),
            Operand::Two("2024-01-01".into(), "2024-02-01".into())
        );
        assert_eq!(
            operand(json!({"column": "a", "op": "in", "value": [1, "x", true]})).unwrap(),
            Operand::List(vec!["1".into(), "x".into(), "true".into()])
        );
        assert_eq!(
            operand(json!({"column": "a", "op": "is_null"})).unwrap(),
            Operand::None
        );
    }

    #[test]
    fn mismatched_values_are_rejected_with_the_rule() {
        for (condition, expected) in [
            (
                json!({"column": "a", "op": "between", "value": [1]}),
                "exactly two",
            ),
            (json!({"column": "a", "op": "in", "value": 3}), "non-empty list"),
            (json!({"column": "a", "op": "in", "value": []}), "non-empty list"),
            (
                json!({"column": "a", "op": "in", "value": [[1]]}),
                "scalar values",
            ),
            (json!({"column": "a", "op": "eq"}), "one scalar value"),
            (
                json!({"column": "a", "op": "gt", "value": {"x": 1}}),
                "one scalar value",
            ),
            (json!({"column": "a", "op": "like", "value": 1}), "string pattern"),
            (json!({"column": "a", "op": "is_null", "value": 1}), "no value"),
        ] {
            let error = operand(condition.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{condition}: {error}");
        }
        let too_many: Vec<u32> = (0..=MAX_IN_VALUES as u32).collect();
        assert!(operand(json!({"column": "a", "op": "in", "value": too_many})).is_err());
    }

    #[test]
    fn unknown_operators_and_fields_do_not_parse() {
        assert!(
            serde_json::from_value::<Condition>(json!({"column": "a", "op": "contains", "value": 1}))
                .is_err()
        );
        assert!(serde_json::from_value::<Condition>(json!({"column": "a", "op": "eq", "valeu": 1})).is_err());
    }
}
