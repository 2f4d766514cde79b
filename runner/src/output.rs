//! Printing results for people (tables) and for programs (CSV, JSON lines).

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn write(batches: &[RecordBatch], format: Format, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        Format::Table => writeln!(out, "{}", pretty_format_batches(batches)?)?,
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::Writer::new(out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(out);
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
        }
    }
    Ok(())
}

/// Prints JSON objects as a table with the given keys as columns.
pub fn write_json_table(keys: &[&str], objects: &[Value], out: &mut impl Write) -> anyhow::Result<()> {
    let rows = objects
        .iter()
        .map(|object| keys.iter().map(|key| text(&object[*key])).collect())
        .collect();
    write_strings(
        keys.iter().map(|k| k.to_string()).collect(),
        rows,
        Format::Table,
        out,
    )
}

/// Prints a load-scoped preview response: its rows, then how many rows match.
pub fn write_preview(preview: &Value, out: &mut impl Write) -> anyhow::Result<()> {
    write_rows(preview, Format::Table, out)?;
    let bound = if preview["total_rows_exact"] == Value::Bool(false) {
        "at least "
    } else {
        ""
    };
    writeln!(
        out,
        "{} rows shown; {bound}{} match",
        preview["preview_rows"], preview["total_rows"]
    )?;
    Ok(())
}

/// Prints a response's `rows` (values in their text form) headed by its `columns` names.
pub fn write_rows(response: &Value, format: Format, out: &mut impl Write) -> anyhow::Result<()> {
    let headers = response["columns"]
        .as_array()
        .map(|columns| {
            columns
                .iter()
                .map(|c| c["name"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    let rows = response["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.as_array()
                        .map(|v| v.iter().map(text).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    write_strings(headers, rows, format, out)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

fn write_strings(
    headers: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let fields: Vec<Field> = headers
        .iter()
        .map(|h| Field::new(h, DataType::Utf8, true))
        .collect();
    let columns: Vec<ArrayRef> = (0..headers.len())
        .map(|i| {
            Arc::new(StringArray::from_iter(
                rows.iter().map(|row| row.get(i).cloned().flatten()),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    write(&[batch], format, out)
}
