//! Reading a finished job's outputs back: pages as JSON rows (text or typed), or whole outputs as
//! CSV or parquet.
//!
//! Outputs are read in file order with one partition, so pages are stable; downloads are
//! encoded as they are sent, a batch or a row group at a time, so the runner's memory stays
//! bounded and its disk untouched however large the output.

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use kalla_core::cache::CacheDir;
use kalla_core::json_rows::{ValueStyle, json_rows};
use kalla_core::preview::PreviewColumn;
use kalla_core::storage::{self, S3Settings};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most rows one page returns.
pub const MAX_PAGE_ROWS: usize = 10_000;
const DEFAULT_PAGE_ROWS: usize = 100;

#[derive(Debug, Error)]
pub enum ResultsError {
    #[error("limit must be between 1 and {MAX_PAGE_ROWS}, got {0}")]
    InvalidLimit(usize),
    #[error("cannot read the results: {0}")]
    Read(String),
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
    offset: usize,
    limit: Option<usize>,
    style: ValueStyle,
) -> Result<Page, ResultsError> {
    let limit = match limit {
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
    let batches = frame
        .limit(offset, Some(limit))
        .map_err(read_error)?
        .collect()
        .await
        .map_err(read_error)?;
    Ok(Page {
        columns,
        rows: json_rows(&batches, style).map_err(read_error)?,
        offset,
        limit,
    })
}

/// Rows a parquet download holds in memory before they are sent, encoded, as one row group.
const DOWNLOAD_ROW_GROUP_ROWS: usize = 64 * 1024;

/// Encoded bytes of a download, or the error that cut it short.
pub type Chunks = futures::stream::BoxStream<'static, Result<Vec<u8>, ResultsError>>;

/// The output (rows `offset..offset+limit` if given) as one CSV or parquet file, sent as it is
/// encoded: a batch (CSV) or a row group (parquet) at a time, never staged whole in memory or on
/// disk. An error midway ends the stream with it, so the download is cut, never silently short.
pub async fn export(
    dir: &CacheDir,
    s3: &S3Settings,
    format: ResultFormat,
    offset: usize,
    limit: Option<usize>,
) -> Result<Chunks, ResultsError> {
    let frame = read(dir, s3).await?;
    let frame = if offset > 0 || limit.is_some() {
        frame.limit(offset, limit).map_err(read_error)?
    } else {
        frame
    };
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
