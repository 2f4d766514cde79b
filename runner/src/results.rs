//! Reading a finished job's outputs back: pages as text rows, or whole outputs as CSV or parquet.
//!
//! Outputs are read in file order with one partition, so pages are stable; downloads are
//! written to a temporary file first and streamed from there, so memory stays bounded however
//! large the output.

use std::fs::File;

use datafusion::arrow::csv::WriterBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use kalla_core::cache::CacheDir;
use kalla_core::preview::PreviewColumn;
use kalla_core::preview::text_rows;
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
    /// Values in their text form; `null` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
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
        rows: text_rows(&batches).map_err(read_error)?,
        offset,
        limit,
    })
}

/// The output (rows `offset..offset+limit` if given) as one CSV or parquet file in a temporary file.
pub async fn export(
    dir: &CacheDir,
    s3: &S3Settings,
    format: ResultFormat,
    offset: usize,
    limit: Option<usize>,
) -> Result<tempfile::NamedTempFile, ResultsError> {
    let frame = read(dir, s3).await?;
    let frame = if offset > 0 || limit.is_some() {
        frame.limit(offset, limit).map_err(read_error)?
    } else {
        frame
    };
    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let mut stream = frame.execute_stream().await.map_err(read_error)?;
    let file = tempfile::NamedTempFile::new().map_err(read_error)?;
    let target: File = file.reopen().map_err(read_error)?;
    match format {
        ResultFormat::Parquet => {
            let properties = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let mut writer = ArrowWriter::try_new(target, schema, Some(properties)).map_err(read_error)?;
            while let Some(batch) = stream.next().await {
                writer.write(&batch.map_err(read_error)?).map_err(read_error)?;
            }
            writer.close().map_err(read_error)?;
        }
        ResultFormat::Csv | ResultFormat::Json => {
            let mut writer = WriterBuilder::new().with_header(true).build(target);
            while let Some(batch) = stream.next().await {
                writer.write(&batch.map_err(read_error)?).map_err(read_error)?;
            }
        }
    }
    Ok(file)
}
