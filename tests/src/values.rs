//! Values as the tests compare them: a query's single row as text, a column as Arrow displays it,
//! and numbers equal whatever their formatting.

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;

/// Runs `sql` and returns its single row's values as strings.
pub async fn df_row(ctx: &SessionContext, sql: &str) -> Vec<Option<String>> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .unwrap_or_else(|| panic!("{sql}: no rows"));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1, "{sql}");
    (0..batch.num_columns())
        .map(|i| {
            let text = cast(batch.column(i), &DataType::Utf8).expect("cast to text");
            let text = text.as_any().downcast_ref::<StringArray>().expect("utf8");
            text.is_valid(0).then(|| text.value(0).to_string())
        })
        .collect()
}

/// The first column of `batches`, each value as Arrow displays it (`None` for NULL).
pub fn displayed(batches: &[RecordBatch]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    for batch in batches {
        let column = batch.column(0);
        let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).unwrap();
        for i in 0..column.len() {
            values.push(column.is_valid(i).then(|| formatter.value(i).to_string()));
        }
    }
    values
}

/// Numbers compare numerically (formatting differs), everything else exactly.
pub fn same(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => a == b,
        },
        (a, b) => a == b,
    }
}
