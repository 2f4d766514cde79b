//! Previews of CSV and Parquet files (local or in an object store), answered by DataFusion.
//!
//! Columns are typed by schema inference; a condition's value is converted to its column's type
//! before the query runs, so a bad value is the user's error, not a failed scan.

use datafusion::error::DataFusionError;
use datafusion::prelude::{CsvReadOptions, DataFrame, ParquetReadOptions, SessionContext};

use super::frame::preview_frame;
use super::{Condition, Preview, PreviewError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
}

impl FileFormat {
    /// The extension files of this format have, in lower case.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => ".csv",
            Self::Parquet => ".parquet",
        }
    }

    /// The extension the files at `url` are listed by: a single file's own (`.CSV` as written),
    /// else the format's.
    pub fn extension_in(self, url: &str) -> String {
        let extension = self.extension();
        let path = url.split(['?', '#']).next().unwrap_or(url);
        match path.len().checked_sub(extension.len()) {
            Some(start) if path.is_char_boundary(start) && path[start..].eq_ignore_ascii_case(extension) => {
                path[start..].to_string()
            }
            _ => extension.to_string(),
        }
    }
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
    preview_frame(frame, conditions, limit, None).await
}

async fn read(ctx: &SessionContext, url: &str, format: FileFormat) -> Result<DataFrame, PreviewError> {
    let extension = format.extension_in(url);
    let frame = match format {
        FileFormat::Csv => {
            ctx.read_csv(url, CsvReadOptions::new().file_extension(&extension))
                .await
        }
        FileFormat::Parquet => {
            let options = ParquetReadOptions {
                file_extension: &extension,
                ..ParquetReadOptions::default()
            };
            ctx.read_parquet(url, options).await
        }
    };
    frame.map_err(read_error)
}

pub(super) fn read_error(error: DataFusionError) -> PreviewError {
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

    #[test]
    fn a_single_file_is_listed_by_its_own_extension() {
        assert_eq!(FileFormat::Csv.extension_in("file:///d/INVOICES.CSV"), ".CSV");
        assert_eq!(FileFormat::Csv.extension_in("s3://b/x.Csv?versionId=1"), ".Csv");
        assert_eq!(FileFormat::Csv.extension_in("file:///d/"), ".csv");
        assert_eq!(
            FileFormat::Parquet.extension_in("file:///d/x.PARQUET"),
            ".PARQUET"
        );
        assert_eq!(FileFormat::Parquet.extension_in("s3://b/dir/"), ".parquet");
    }

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
