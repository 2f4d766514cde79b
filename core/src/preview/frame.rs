//! DataFusion's side of previews and filters: conditions as a typed predicate over a frame's
//! columns, and record batches as rows of text.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::DataFrame;
use serde_json::Value;

use super::files::read_error;
use super::{Condition, Op, Operand, Preview, PreviewColumn, PreviewError, find_column};
use crate::json_rows::{ValueStyle, json_rows};

/// The first `limit` rows of `frame` matching `conditions`, and how many match: all of them, or
/// at most `count_cap` (the total then a lower bound) where counting means reading a database.
pub async fn preview_frame(
    frame: DataFrame,
    conditions: &[Condition],
    limit: usize,
    count_cap: Option<u64>,
) -> Result<Preview, PreviewError> {
    let fields: Vec<Arc<Field>> = frame.schema().fields().iter().cloned().collect();
    let filtered = match predicate(&fields, conditions)? {
        Some(predicate) => frame.filter(predicate).map_err(read_error)?,
        None => frame,
    };
    let counted = match count_cap {
        Some(cap) => filtered
            .clone()
            .limit(0, Some(cap as usize + 1))
            .map_err(read_error)?,
        None => filtered.clone(),
    };
    let counted = counted.count().await.map_err(read_error)? as u64;
    let batches = filtered
        .limit(0, Some(limit))
        .map_err(read_error)?
        .collect()
        .await
        .map_err(read_error)?;
    let total_rows_exact = count_cap.is_none_or(|cap| counted <= cap);
    Ok(Preview {
        columns: fields.iter().map(|f| PreviewColumn::from_field(f)).collect(),
        rows: text_rows(&batches)?,
        total_rows: count_cap.map_or(counted, |cap| counted.min(cap)),
        total_rows_exact,
    })
}

/// All conditions ANDed, each value converted to its column's type (also the filters of recipes).
pub fn predicate(fields: &[Arc<Field>], conditions: &[Condition]) -> Result<Option<Expr>, PreviewError> {
    let mut predicates = Vec::with_capacity(conditions.len());
    for condition in conditions {
        let field = find_column(fields, &condition.column, |f| f.name())?;
        let column = Expr::Column(Column::new_unqualified(field.name()));
        let typed = |value: String| typed_literal(value, field);
        predicates.push(match (condition.op, condition.operand()?) {
            (Op::IsNull, _) => column.is_null(),
            (Op::IsNotNull, _) => column.is_not_null(),
            (Op::Like, Operand::One(pattern)) => cast(column, DataType::Utf8).like(lit(pattern)),
            (Op::Between, Operand::Two(low, high)) => column.between(typed(low)?, typed(high)?),
            (Op::In, Operand::List(values)) => {
                let values = values.into_iter().map(typed).collect::<Result<Vec<_>, _>>()?;
                column.in_list(values, false)
            }
            (op, Operand::One(value)) => {
                let value = typed(value)?;
                match op {
                    Op::Eq => column.eq(value),
                    Op::Neq => column.not_eq(value),
                    Op::Gt => column.gt(value),
                    Op::Gte => column.gt_eq(value),
                    Op::Lt => column.lt(value),
                    Op::Lte => column.lt_eq(value),
                    other => unreachable!("{other:?} has no scalar operand"),
                }
            }
            (op, operand) => unreachable!("Condition::operand gave {operand:?} for {op:?}"),
        });
    }
    Ok(predicates.into_iter().reduce(Expr::and))
}

fn typed_literal(value: String, field: &Field) -> Result<Expr, PreviewError> {
    ScalarValue::try_from_string(value.clone(), field.data_type())
        .map(lit)
        .map_err(|_| {
            PreviewError::InvalidValue(format!(
                "{value:?} is not a valid {} for column {:?}",
                field.data_type(),
                field.name()
            ))
        })
}

/// Every value of `batches` in its text form, `None` for null, row by row.
pub fn text_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>, PreviewError> {
    let rows = json_rows(batches, ValueStyle::Text).map_err(|e| PreviewError::Internal(e.to_string()))?;
    let text = |value: Value| match value {
        Value::String(text) => Some(text),
        _ => None,
    };
    Ok(rows
        .into_iter()
        .map(|row| row.into_iter().map(text).collect())
        .collect())
}
