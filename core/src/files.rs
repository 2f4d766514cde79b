//! CSV and Parquet files (local, or in an S3 bucket) behind the source seam: tables are
//! DataFusion listing tables, split across executors like any file scan; previews are answered
//! by DataFusion in this process.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use url::Url;

use crate::preview::files::{self, FileFormat};
use crate::preview::{Condition, Preview, PreviewError};
use crate::source::{Engine, EngineError, Fit, SourceContext};
use crate::storage;

/// Files of one format.
pub struct FileEngine {
    format: FileFormat,
    /// Where previews run; buckets' stores are registered on it as sources are read.
    previews: SessionContext,
}

impl FileEngine {
    pub fn csv() -> Self {
        Self::new(FileFormat::Csv)
    }

    pub fn parquet() -> Self {
        Self::new(FileFormat::Parquet)
    }

    fn new(format: FileFormat) -> Self {
        Self {
            format,
            previews: SessionContext::new(),
        }
    }
}

impl fmt::Debug for FileEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileEngine")
            .field("format", &self.format)
            .finish()
    }
}

#[async_trait]
impl Engine for FileEngine {
    fn name(&self) -> &'static str {
        match self.format {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }

    fn fits(&self, location: &Url) -> Fit {
        if !matches!(location.scheme(), "file" | "s3") {
            return Fit::No;
        }
        if location
            .path()
            .to_ascii_lowercase()
            .ends_with(self.format.extension())
        {
            Fit::Inferred
        } else {
            Fit::Possible
        }
    }

    async fn check(&self, location: &Url, context: &SourceContext) -> Result<(), EngineError> {
        allowed(location, context)?;
        storage::register_location(&self.previews, location.as_str(), &context.s3)
            .map(drop)
            .map_err(|e| EngineError::InvalidLocation(e.to_string()))
    }

    async fn table(
        &self,
        location: &Url,
        context: &SourceContext,
        session: &SessionContext,
    ) -> Result<Arc<dyn TableProvider>, EngineError> {
        allowed(location, context)?;
        storage::register_location(session, location.as_str(), &context.s3)
            .map_err(|e| EngineError::InvalidLocation(e.to_string()))?;
        listing_table(session, location.as_str(), self.format)
            .await
            .map_err(|e| EngineError::Failed(e.to_string()))
    }

    async fn preview(
        &self,
        location: &Url,
        conditions: &[Condition],
        limit: usize,
        context: &SourceContext,
    ) -> Result<Preview, PreviewError> {
        allowed(location, context).map_err(|e| PreviewError::NotAllowed(e.to_string()))?;
        storage::register_location(&self.previews, location.as_str(), &context.s3)
            .map_err(|e| PreviewError::Unreachable(e.to_string()))?;
        files::preview(&self.previews, location.as_str(), self.format, conditions, limit).await
    }
}

/// Errors unless the files at `location` are ones sources may read here; checked each time they
/// are opened, so a link planted after registration is caught too.
fn allowed(location: &Url, context: &SourceContext) -> Result<(), EngineError> {
    context
        .files
        .check(location)
        .map_err(|e| EngineError::NotAllowed(e.to_string()))
}

/// The files at `url` as one table whose schema is inferred from them; `session` must reach
/// their store.
pub async fn listing_table(
    session: &SessionContext,
    url: &str,
    format: FileFormat,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    let options = match format {
        FileFormat::Parquet => ListingOptions::new(Arc::new(ParquetFormat::default())),
        FileFormat::Csv => ListingOptions::new(Arc::new(CsvFormat::default())),
    }
    .with_file_extension(format.extension_in(url));
    listing_table_with(session, url, options).await
}

/// The files at `url` read as `options` says, as one table whose schema is inferred from them.
pub(crate) async fn listing_table_with(
    session: &SessionContext,
    url: &str,
    options: ListingOptions,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    let table_url = ListingTableUrl::parse(url)?;
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .infer_schema(&session.state())
        .await?;
    Ok(Arc::new(ListingTable::try_new(config)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_fit_by_extension_or_when_declared() {
        let url = |s: &str| Url::parse(s).unwrap();
        let csv = FileEngine::csv();
        assert_eq!(csv.fits(&url("s3://b/x/data.CSV")), Fit::Inferred);
        assert_eq!(csv.fits(&url("file:///x/dir/")), Fit::Possible);
        assert_eq!(csv.fits(&url("postgres://h/db")), Fit::No);
        assert_eq!(FileEngine::parquet().fits(&url("file:///x/y.csv")), Fit::Possible);
    }
}
