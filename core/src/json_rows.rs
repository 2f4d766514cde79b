//! Record batches as rows of JSON values: every value as text (the API's default), or typed, with
//! numbers as JSON numbers wherever a JSON reader keeps them exact.
//!
//! Typed values, by Arrow type (README, "Typed results"):
//! - booleans → `true`/`false`; 8- to 32-bit integers and floats → numbers;
//! - 64-bit integers → numbers within ±2^53 (what an IEEE double holds exactly), exact strings
//!   beyond;
//! - decimals → exact strings (`"12.30"`, the column's scale kept);
//! - floats that are not finite → the strings `"NaN"`, `"inf"`, `"-inf"` (JSON has no such
//!   numbers);
//! - dates, times and timestamps → ISO 8601 strings (`2026-11-30`, `2026-11-30T06:00:00`, with
//!   the offset where the column has a time zone);
//! - lists → arrays and structs → objects, their values typed alike;
//! - everything else (strings, binary as hex, durations, intervals) → the text form.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

/// How values are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValueStyle {
    /// Every value as its text form; `null` is SQL NULL.
    #[default]
    Text,
    /// Numbers and booleans as JSON's own, where exact (see the module's documentation).
    Typed,
}

impl ValueStyle {
    /// The style a request's `typed` flag asks for.
    pub fn typed(typed: bool) -> Self {
        if typed { Self::Typed } else { Self::Text }
    }
}

/// The largest integer magnitude an IEEE double (JSON's number in most readers) holds exactly.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// Every row of `batches`, each value written in `style`; `null` is SQL NULL.
pub fn json_rows(batches: &[RecordBatch], style: ValueStyle) -> Result<Vec<Vec<Value>>, ArrowError> {
    let options = FormatOptions::default();
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
        let cells = batch
            .columns()
            .iter()
            .map(|array| writer(array, style, &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(cells.iter().map(|cell| cell(row)).collect());
        }
    }
    Ok(rows)
}

/// Writes the value of one row of a column.
type Cell<'a> = Box<dyn Fn(usize) -> Value + 'a>;

/// The writer of `array`'s values, nulls included.
fn writer<'a>(
    array: &'a ArrayRef,
    style: ValueStyle,
    options: &'a FormatOptions,
) -> Result<Cell<'a>, ArrowError> {
    let value = match style {
        ValueStyle::Text => text(array, options)?,
        ValueStyle::Typed => typed(array, options)?,
    };
    Ok(Box::new(move |row| match array.is_valid(row) {
        true => value(row),
        false => Value::Null,
    }))
}

fn text<'a>(array: &'a ArrayRef, options: &'a FormatOptions) -> Result<Cell<'a>, ArrowError> {
    let formatter = ArrayFormatter::try_new(array.as_ref(), options)?;
    Ok(Box::new(move |row| {
        Value::String(formatter.value(row).to_string())
    }))
}

/// The writer of `array`'s valid values, typed.
fn typed<'a>(array: &'a ArrayRef, options: &'a FormatOptions) -> Result<Cell<'a>, ArrowError> {
    macro_rules! number {
        ($type:ty) => {{
            let values = array.as_primitive::<$type>();
            Box::new(move |row| Value::from(values.value(row)))
        }};
    }
    macro_rules! float {
        ($type:ty) => {{
            let values = array.as_primitive::<$type>();
            Box::new(move |row| float(f64::from(values.value(row))))
        }};
    }
    Ok(match array.data_type() {
        DataType::Boolean => {
            let values = array.as_boolean();
            Box::new(move |row| Value::Bool(values.value(row)))
        }
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::Int64 => {
            let values = array.as_primitive::<Int64Type>();
            Box::new(move |row| exact_integer(values.value(row).unsigned_abs(), values.value(row)))
        }
        DataType::UInt64 => {
            let values = array.as_primitive::<UInt64Type>();
            Box::new(move |row| exact_integer(values.value(row), values.value(row)))
        }
        DataType::Float16 => float!(Float16Type),
        DataType::Float32 => float!(Float32Type),
        DataType::Float64 => float!(Float64Type),
        DataType::List(_) => list(array.as_list::<i32>(), options)?,
        DataType::LargeList(_) => list(array.as_list::<i64>(), options)?,
        DataType::Struct(fields) => {
            let children = array.as_struct().columns();
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            let cells = children
                .iter()
                .map(|child| writer(child, ValueStyle::Typed, options))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(move |row| {
                let object: Map<String, Value> = names
                    .iter()
                    .zip(&cells)
                    .map(|(name, cell)| (name.to_string(), cell(row)))
                    .collect();
                Value::Object(object)
            })
        }
        _ => text(array, options)?,
    })
}

/// `value` as a JSON number where a double holds it exactly (`magnitude` ≤ 2^53), else as its
/// exact decimal text.
fn exact_integer<T: Into<Number> + ToString>(magnitude: u64, value: T) -> Value {
    match magnitude <= MAX_EXACT_INTEGER {
        true => Value::Number(value.into()),
        false => Value::String(value.to_string()),
    }
}

fn float(value: f64) -> Value {
    match Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::String("NaN".into()),
        None if value > 0.0 => Value::String("inf".into()),
        None => Value::String("-inf".into()),
    }
}

/// A list column's writer: each row's elements, typed, as an array.
fn list<'a, O: OffsetSizeTrait>(
    array: &'a GenericListArray<O>,
    options: &'a FormatOptions,
) -> Result<Cell<'a>, ArrowError> {
    let element = writer(array.values(), ValueStyle::Typed, options)?;
    let offsets = array.value_offsets();
    Ok(Box::new(move |row| {
        let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
        Value::Array((start..end).map(&element).collect())
    }))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, ListArray,
        StringArray, StructArray, TimestampMicrosecondArray, UInt64Array,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use serde_json::json;

    use std::sync::Arc;

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, array)| array).collect(),
        )
        .unwrap()
    }

    #[test]
    fn typed_values_are_json_numbers_only_where_exact() {
        let limit = 1i64 << 53;
        let batch = batch(vec![
            (
                "flag",
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            ),
            ("small", Arc::new(Int32Array::from(vec![Some(-7), Some(0), None]))),
            ("big", Arc::new(Int64Array::from(vec![limit, -limit, limit + 1]))),
            ("huge", Arc::new(UInt64Array::from(vec![0, u64::MAX, 1 << 53]))),
            (
                "ratio",
                Arc::new(Float64Array::from(vec![0.5, f64::NAN, f64::NEG_INFINITY])),
            ),
            (
                "amount",
                Arc::new(
                    Decimal128Array::from(vec![Some(1230), Some(-5), None])
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![Some(20_422), None, Some(0)])),
            ),
            (
                "at",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_764_482_400_000_000, 1, 0])
                        .with_timezone("+00:00"),
                ),
            ),
            ("name", Arc::new(StringArray::from(vec!["a", "ø", "42"]))),
        ]);
        let rows = json_rows(std::slice::from_ref(&batch), ValueStyle::Typed).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![
                    json!(true),
                    json!(-7),
                    json!(9_007_199_254_740_992i64),
                    json!(0),
                    json!(0.5),
                    json!("12.30"),
                    json!("2025-11-30"),
                    json!("2025-11-30T06:00:00Z"),
                    json!("a"),
                ],
                vec![
                    Value::Null,
                    json!(0),
                    json!(-9_007_199_254_740_992i64),
                    json!("18446744073709551615"),
                    json!("NaN"),
                    json!("-0.05"),
                    Value::Null,
                    json!("1970-01-01T00:00:00.000001Z"),
                    json!("ø"),
                ],
                vec![
                    json!(false),
                    Value::Null,
                    json!("9007199254740993"),
                    json!(9_007_199_254_740_992u64),
                    json!("-inf"),
                    Value::Null,
                    json!("1970-01-01"),
                    json!("1970-01-01T00:00:00Z"),
                    json!("42"),
                ],
            ]
        );
        let text = json_rows(&[batch], ValueStyle::Text).unwrap();
        assert_eq!(text[0][1], json!("-7"));
        assert_eq!(text[0][2], json!("9007199254740992"));
        assert_eq!(text[1][0], Value::Null);
        assert_eq!(text[2][0], json!("false"));
    }

    #[test]
    fn lists_and_structs_are_arrays_and_objects() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None, Some(i64::MAX)]),
            None,
        ]);
        let point = StructArray::from(vec![
            (
                Arc::new(Field::new("x", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("label", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["p", "q"])) as ArrayRef,
            ),
        ]);
        let batch = batch(vec![("ids", Arc::new(list)), ("point", Arc::new(point))]);
        let rows = json_rows(&[batch], ValueStyle::Typed).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![
                    json!([1, null, "9223372036854775807"]),
                    json!({"x": 1, "label": "p"})
                ],
                vec![Value::Null, json!({"x": null, "label": "q"})],
            ]
        );
    }
}
