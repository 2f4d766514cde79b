//! Reading a finished job's outputs back: pages as JSON rows (text or typed), or whole outputs as
//! CSV or parquet, the rows a [`Selection`] picks (filtered and sorted over the whole output).
//!
//! Outputs are read in file order with one partition, so pages are stable; a sorted selection
//! breaks ties by every other column, so its pages are stable too. Downloads are encoded as they
//! are sent, a batch or a row group at a time, so the runner's memory stays bounded and its disk
//! untouched however large the output; a sort keeps at most [`MAX_SORTED_ROWS`] rows.

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{FieldRef, SchemaRef};
use datafusion::common::Column;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{SortExpr, col};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use kalla_core::cache::CacheDir;
use kalla_core::json_rows::{ValueStyle, json_rows};
use kalla_core::preview::{Condition, PreviewColumn, PreviewError, predicate};
use kalla_core::storage::{self, S3Settings};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most rows one page returns.
pub const MAX_PAGE_ROWS: usize = 10_000;
const DEFAULT_PAGE_ROWS: usize = 100;
/// How deep into a sorted output a page or download may reach (`offset + limit`): a sort keeps
/// that many rows in memory.
pub const MAX_SORTED_ROWS: usize = 100_000;

/// The largest `offset`: past every row of any real output, and small enough for DataFusion,
/// which counts rows as signed 64-bit integers.
const MAX_OFFSET: usize = 1 << 53;

#[derive(Debug, Error)]
pub enum ResultsError {
    #[error("limit must be between 1 and {MAX_PAGE_ROWS}, got {0}")]
    InvalidLimit(usize),
    #[error("offset must be at most {MAX_OFFSET}, got {0}")]
    InvalidOffset(usize),
    #[error("filter: {0}")]
    InvalidFilter(String),
    #[error(transparent)]
    Filter(#[from] PreviewError),
    #[error("order_by: {0}")]
    InvalidOrder(String),
    #[error("cannot read the results: {0}")]
    Read(String),
}

/// The rows of an output a page or download holds: those matching `filter`, in `order_by`'s
/// order (the files' if empty), from `offset` on, at most `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filter: Vec<Condition>,
    pub order_by: Vec<SortKey>,
    pub offset: usize,
    pub limit: Option<usize>,
}

/// A column to sort by: `amount` ascending, `amount:desc` descending (nulls last either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: String,
    pub descending: bool,
}

impl Selection {
    /// `filter` as the preview's conditions in JSON (`[{"column": …, "op": …, "value": …}]`) and
    /// `order_by` as comma-separated keys (`amount:desc,id`), as the API's query takes them.
    pub fn parse(
        filter: Option<&str>,
        order_by: Option<&str>,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Self, ResultsError> {
        if offset > MAX_OFFSET {
            return Err(ResultsError::InvalidOffset(offset));
        }
        let filter = match filter {
            None => Vec::new(),
            Some(json) => serde_json::from_str(json).map_err(|e| {
                ResultsError::InvalidFilter(format!(
                    "{e}; expected a JSON list of conditions such as [{{\"column\": \"amount\", \"op\": \"gt\", \"value\": \"100\"}}]"
                ))
            })?,
        };
        let order_by = match order_by {
            None => Vec::new(),
            Some(keys) => keys.split(',').map(SortKey::parse).collect::<Result<_, _>>()?,
        };
        Ok(Self {
            filter,
            order_by,
            offset,
            limit,
        })
    }

    /// `frame`'s rows this selection picks.
    fn apply(&self, frame: DataFrame) -> Result<DataFrame, ResultsError> {
        let fields: Vec<_> = frame.schema().fields().iter().cloned().collect();
        let frame = match predicate(&fields, &self.filter)? {
            Some(predicate) => frame.filter(predicate).map_err(read_error)?,
            None => frame,
        };
        if self.order_by.is_empty() {
            if self.offset == 0 && self.limit.is_none() {
                return Ok(frame);
            }
            return frame.limit(self.offset, self.limit).map_err(read_error);
        }
        let Some(end) = self
            .limit
            .map(|limit| self.offset.saturating_add(limit))
            .filter(|end| *end <= MAX_SORTED_ROWS)
        else {
            return Err(ResultsError::InvalidOrder(format!(
                "a sorted read reaches at most row {MAX_SORTED_ROWS} (offset + limit, and a download needs a limit); filter to narrow the output"
            )));
        };
        let keys = sort_keys(&fields, &self.order_by)?;
        frame
            .sort(keys)
            .and_then(|sorted| sorted.limit(self.offset, Some(end - self.offset)))
            .map_err(read_error)
    }
}

impl SortKey {
    fn parse(key: &str) -> Result<Self, ResultsError> {
        let (column, descending) = match key.trim().rsplit_once(':') {
            None => (key.trim(), false),
            Some((column, "asc")) => (column, false),
            Some((column, "desc")) => (column, true),
            Some((_, direction)) => {
                return Err(ResultsError::InvalidOrder(format!(
                    "{direction:?} is not a direction: write column, column:asc or column:desc"
                )));
            }
        };
        if column.is_empty() {
            return Err(ResultsError::InvalidOrder(
                "an empty column name: write column, column:asc or column:desc, comma-separated".into(),
            ));
        }
        Ok(Self {
            column: column.to_string(),
            descending,
        })
    }
}

/// `keys` as sort expressions, then every other column that has an order (ties broken by the
/// whole row, so a sorted page is the same whenever it is read).
fn sort_keys(fields: &[FieldRef], keys: &[SortKey]) -> Result<Vec<SortExpr>, ResultsError> {
    let mut exprs = Vec::with_capacity(fields.len());
    for key in keys {
        let Some(field) = fields.iter().find(|f| f.name() == &key.column) else {
            return Err(ResultsError::InvalidOrder(format!(
                "unknown column {:?}; the output has: {}",
                key.column,
                fields
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        exprs.push(col(Column::new_unqualified(field.name())).sort(!key.descending, false));
    }
    let tie_breakers = fields
        .iter()
        .filter(|f| !keys.iter().any(|k| &k.column == f.name()))
        .filter(|f| !f.data_type().is_nested())
        .map(|f| col(Column::new_unqualified(f.name())).sort(true, false));
    exprs.extend(tie_breakers);
    Ok(exprs)
}

fn read_error(error: impl std::fmt::Display) -> ResultsError {
    ResultsError::Read(error.to_string())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultFormat {
    #[default]
    Json,
    Csv,
    Parquet,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub columns: Vec<PreviewColumn>,
    /// Values in their text form, or typed if asked; `null` is SQL NULL.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
    pub offset: usize,
    pub limit: usize,
    /// Rows the filter matches in the whole output, when asked for (`count=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_rows: Option<usize>,
}

async fn read(dir: &CacheDir, s3: &S3Settings) -> Result<DataFrame, ResultsError> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    storage::register_location(&ctx, dir.as_str(), s3).map_err(read_error)?;
    let options = ParquetReadOptions::default().file_extension(".parquet");
    ctx.read_parquet(dir.as_str(), options).await.map_err(read_error)
}

pub async fn page(
    dir: &CacheDir,
    s3: &S3Settings,
    selection: &Selection,
    count: bool,
    style: ValueStyle,
) -> Result<Page, ResultsError> {
    let limit = match selection.limit {
        None => DEFAULT_PAGE_ROWS,
        Some(limit) if (1..=MAX_PAGE_ROWS).contains(&limit) => limit,
        Some(limit) => return Err(ResultsError::InvalidLimit(limit)),
    };
    let frame = read(dir, s3).await?;
    let columns = frame
        .schema()
        .fields()
        .iter()
        .map(|f| PreviewColumn::from_field(f))
        .collect();
    let total_rows = match count {
        true => {
            let matching = Selection {
                filter: selection.filter.clone(),
                ..Selection::default()
            };
            Some(matching.apply(frame.clone())?.count().await.map_err(read_error)?)
        }
        false => None,
    };
    let page = Selection {
        limit: Some(limit),
        ..selection.clone()
    };
    let batches = page.apply(frame)?.collect().await.map_err(read_error)?;
    Ok(Page {
        columns,
        rows: json_rows(&batches, style).map_err(read_error)?,
        offset: selection.offset,
        limit,
        total_rows,
    })
}

/// Rows a parquet download holds in memory before they are sent, encoded, as one row group.
const DOWNLOAD_ROW_GROUP_ROWS: usize = 64 * 1024;

/// Encoded bytes of a download, or the error that cut it short.
pub type Chunks = futures::stream::BoxStream<'static, Result<Vec<u8>, ResultsError>>;

/// The rows `selection` picks as one CSV or parquet file, sent as it is encoded: a batch (CSV)
/// or a row group (parquet) at a time, never staged whole in memory or on disk. An error midway
/// ends the stream with it, so the download is cut, never silently short.
pub async fn export(
    dir: &CacheDir,
    s3: &S3Settings,
    format: ResultFormat,
    selection: &Selection,
) -> Result<Chunks, ResultsError> {
    let frame = selection.apply(read(dir, s3).await?)?;
    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.execute_stream().await.map_err(read_error)?;
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let encoded = match format {
            ResultFormat::Parquet => encode_parquet(batches, schema, &sender).await,
            ResultFormat::Csv | ResultFormat::Json => encode_csv(batches, &sender).await,
        };
        let _ = sender.send(encoded.map(|()| Chunk::End)).await;
    });
    // A stream that ends without `End` (the encoder panicked) ends with an error too.
    Ok(futures::stream::unfold(Some(receiver), |receiver| async {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Some(Ok(Chunk::Bytes(bytes))) => Some((Ok(bytes), Some(receiver))),
            Some(Ok(Chunk::End)) => None,
            Some(Err(error)) => Some((Err(error), None)),
            None => Some((
                Err(ResultsError::Read("the download stopped before its end".into())),
                None,
            )),
        }
    })
    .boxed())
}

/// What the encoder sends: encoded bytes, then the end (or an error instead).
enum Chunk {
    Bytes(Vec<u8>),
    End,
}

type ChunkSender = tokio::sync::mpsc::Sender<Result<Chunk, ResultsError>>;

/// Sends `bytes` unless there are none; false once the client has gone.
async fn send(sender: &ChunkSender, bytes: Vec<u8>) -> bool {
    bytes.is_empty() || sender.send(Ok(Chunk::Bytes(bytes))).await.is_ok()
}

async fn encode_csv(
    mut batches: SendableRecordBatchStream,
    sender: &ChunkSender,
) -> Result<(), ResultsError> {
    let mut header = true;
    while let Some(batch) = batches.next().await {
        let mut writer = WriterBuilder::new().with_header(header).build(Vec::new());
        writer.write(&batch.map_err(read_error)?).map_err(read_error)?;
        header = false;
        if !send(sender, writer.into_inner()).await {
            return Ok(());
        }
    }
    Ok(())
}

async fn encode_parquet(
    mut batches: SendableRecordBatchStream,
    schema: SchemaRef,
    sender: &ChunkSender,
) -> Result<(), ResultsError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(DOWNLOAD_ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties)).map_err(read_error)?;
    while let Some(batch) = batches.next().await {
        writer.write(&batch.map_err(read_error)?).map_err(read_error)?;
        // What the writer has flushed (whole row groups) is final: send it on.
        if !send(sender, std::mem::take(writer.inner_mut())).await {
            return Ok(());
        }
    }
    send(sender, writer.into_inner().map_err(read_error)?).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_name_a_column_and_maybe_a_direction() {
        let selection = Selection::parse(None, Some("amount:desc, id,name:asc"), 0, None).unwrap();
        let keys: Vec<(&str, bool)> = selection
            .order_by
            .iter()
            .map(|k| (k.column.as_str(), k.descending))
            .collect();
        assert_eq!(keys, [("amount", true), ("id", false), ("name", false)]);
        for (bad, says) in [
            ("amount:up", "\"up\" is not a direction"),
            ("id,", "empty column name"),
        ] {
            let error = Selection::parse(None, Some(bad), 0, None)
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn filters_are_the_previews_conditions_in_json() {
        let filter = r#"[{"column": "amount", "op": "between", "value": [1, 10]}]"#;
        let selection = Selection::parse(Some(filter), None, 0, None).unwrap();
        assert_eq!(selection.filter[0].column, "amount");
        let error = Selection::parse(Some("amount > 1"), None, 0, None).unwrap_err();
        assert!(matches!(error, ResultsError::InvalidFilter(_)), "{error}");
    }
}
