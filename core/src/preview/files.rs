//! Previews of CSV and Parquet files (local or in an object store), answered by DataFusion.
//!
//! Columns are typed by schema inference; a condition's value is converted to its column's type
//! before the query runs, so a bad value is the user's error, not a failed scan.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::{CsvReadOptions, DataFrame, ParquetReadOptions, SessionContext};

use super::{Condition, Op, Operand, Preview, PreviewColumn, PreviewError, find_column};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
}

/// The first `limit` rows of the file(s) at `url` matching `conditions`, and how many match.
pub async fn preview(
    ctx: &SessionContext,
    url: &str,
    format: FileFormat,
    conditions: &[Condition],
    limit: usize,
) -> Result<Preview, PreviewError> {
    let frame = read(ctx, url, format).await?;
    let fields: Vec<Arc<Field>> = frame.schema().fields().iter().cloned().collect();
    let predicate = predicate(&fields, conditions)?;
    let filtered = match predicate {
        Some(predicate) => frame.filter(predicate).map_err(read_error)?,
        None => frame,
    };
    let total_rows = filtered.clone().count().await.map_err(read_error)? as u64;
    let batches = filtered
        .limit(0, Some(limit))
        .map_err(read_error)?
        .collect()
        .await
        .map_err(read_error)?;
    Ok(Preview {
        columns: fields.iter().map(|f| PreviewColumn::from_field(f)).collect(),
        rows: text_rows(&batches)?,
        total_rows,
        total_rows_exact: true,
    })
}

async fn read(ctx: &SessionContext, url: &str, format: FileFormat) -> Result<DataFrame, PreviewError> {
    let frame = match format {
        FileFormat::Csv => ctx.read_csv(url, CsvReadOptions::new()).await,
        FileFormat::Parquet => ctx.read_parquet(url, ParquetReadOptions::default()).await,
    };
    frame.map_err(read_error)
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
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|array| ArrayFormatter::try_new(array.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PreviewError::Internal(e.to_string()))?;
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(array, formatter)| array.is_valid(row).then(|| formatter.value(row).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn read_error(error: DataFusionError) -> PreviewError {
    match error.find_root() {
        DataFusionError::ObjectStore(store) => match store.as_ref() {
            object_store::Error::NotFound { path, .. } => PreviewError::Gone(format!("{path} not found")),
            other => PreviewError::Unreachable(other.to_string()),
        },
        DataFusionError::IoError(io) if io.kind() == std::io::ErrorKind::NotFound => {
            PreviewError::Gone(io.to_string())
        }
        // DataFusion reports an empty or missing location as a planning error.
        DataFusionError::Plan(message) if message.starts_with("No files found") => {
            PreviewError::Gone(message.clone())
        }
        DataFusionError::ArrowError(arrow, _) => PreviewError::InvalidValue(arrow.to_string()),
        other => PreviewError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    async fn csv_preview(conditions: serde_json::Value, limit: usize) -> Result<Preview, PreviewError> {
        let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        writeln!(file, "id,amount,day,name").unwrap();
        writeln!(file, "1,10.50,2024-01-01,alpha").unwrap();
        writeln!(file, "2,20.00,2024-02-01,beta").unwrap();
        writeln!(file, "3,,2024-03-01,gamma").unwrap();
        let ctx = SessionContext::new();
        let url = format!("file://{}", file.path().display());
        let conditions: Vec<Condition> = serde_json::from_value(conditions).unwrap();
        preview(&ctx, &url, FileFormat::Csv, &conditions, limit).await
    }

    #[tokio::test]
    async fn filters_use_the_inferred_types_and_count_every_match() {
        let preview = csv_preview(json!([{"column": "id", "op": "gte", "value": "2"}]), 1)
            .await
            .unwrap();
        assert_eq!(preview.total_rows, 2);
        assert_eq!(
            preview.rows,
            vec![vec![
                Some("2".into()),
                Some("20.0".into()),
                Some("2024-02-01".into()),
                Some("beta".into())
            ]]
        );
        assert_eq!(preview.columns[0].data_type, "Int64");

        let nulls = csv_preview(json!([{"column": "amount", "op": "is_null"}]), 10)
            .await
            .unwrap();
        assert_eq!(nulls.total_rows, 1);
        assert_eq!(nulls.rows[0][1], None);

        let like = csv_preview(json!([{"column": "name", "op": "like", "value": "%a"}]), 10)
            .await
            .unwrap();
        assert_eq!(like.total_rows, 3);
    }

    #[tokio::test]
    async fn bad_values_and_columns_are_the_users_errors() {
        let error = csv_preview(json!([{"column": "id", "op": "eq", "value": "abc"}]), 10)
            .await
            .unwrap_err();
        assert!(matches!(error, PreviewError::InvalidValue(_)), "{error}");
        let error = csv_preview(json!([{"column": "nope", "op": "is_null"}]), 10)
            .await
            .unwrap_err();
        assert!(matches!(error, PreviewError::UnknownColumn { .. }), "{error}");
    }
}
