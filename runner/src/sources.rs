//! Registering sources (a password in a URI moves into a sealed secret) and previewing them.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use kalla_core::SourceUri;
use kalla_core::pool::{PoolRegistry, redact_connection_url};
use kalla_core::preview::files::{self, FileFormat};
use kalla_core::preview::postgres::Previewer;
use kalla_core::preview::{self, Condition, Preview, PreviewError};
use kalla_core::storage::{self, S3Settings, StorageError};
use thiserror::Error;
use url::Url;

use crate::metadata::{MetadataDb, MetadataError, NewSource, SourceRecord};
use crate::secrets::{SecretError, Secrets, take_password};

pub(crate) const MAX_ALIAS_LEN: usize = 63;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(
        "invalid alias {0:?}: an alias starts with a letter or underscore, has only ASCII letters, digits \
         and underscores, and is at most {MAX_ALIAS_LEN} characters long"
    )]
    InvalidAlias(String),
    #[error("unknown source_type {0:?}: expected postgres, csv or parquet")]
    UnknownType(String),
    #[error("cannot tell the type of {0}: give source_type (postgres, csv or parquet)")]
    CannotInferType(String),
    #[error("source_type {declared} does not fit a {scheme}:// URI")]
    TypeMismatch { declared: &'static str, scheme: String },
    #[error("invalid source URI: {0}")]
    InvalidUri(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Preview(#[from] PreviewError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    Postgres,
    Csv,
    Parquet,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }

    fn parse(name: &str) -> Result<Self, SourceError> {
        match name {
            "postgres" => Ok(Self::Postgres),
            "csv" => Ok(Self::Csv),
            "parquet" => Ok(Self::Parquet),
            other => Err(SourceError::UnknownType(other.to_string())),
        }
    }

    /// The type a URI implies: its scheme for databases, its extension for files.
    fn infer(url: &Url) -> Option<Self> {
        if is_postgres_scheme(url.scheme()) {
            return Some(Self::Postgres);
        }
        let path = url.path().to_ascii_lowercase();
        if path.ends_with(".csv") {
            Some(Self::Csv)
        } else if path.ends_with(".parquet") {
            Some(Self::Parquet)
        } else {
            None
        }
    }
}

fn is_postgres_scheme(scheme: &str) -> bool {
    matches!(scheme, "postgres" | "postgresql")
}

/// Where a source's rows are.
pub enum SourceLocation {
    Postgres(SourceUri),
    File { url: Url, format: FileFormat },
}

/// Sources: their metadata, their secrets, and previews read through each source's own pool.
#[derive(Clone)]
pub struct Sources {
    db: MetadataDb,
    secrets: Secrets,
    files: SessionContext,
    s3: S3Settings,
    count_cap: u64,
    previewer: Arc<Previewer>,
}

impl Sources {
    pub fn new(db: MetadataDb, secrets: Secrets, s3: S3Settings, count_cap: u64) -> Self {
        Self {
            db,
            secrets,
            files: SessionContext::new(),
            s3,
            count_cap,
            previewer: Arc::default(),
        }
    }

    pub async fn register(
        &self,
        alias: &str,
        uri: &str,
        source_type: Option<&str>,
    ) -> Result<SourceRecord, SourceError> {
        check_alias(alias)?;
        let mut url = Url::parse(uri)
            .map_err(|e| SourceError::InvalidUri(format!("{e} (in {})", redact_connection_url(uri))))?;
        let source_type = resolve_type(&url, source_type)?;
        match source_type {
            SourceType::Postgres => {
                let parsed = SourceUri::parse(uri).map_err(|e| SourceError::InvalidUri(e.to_string()))?;
                PoolRegistry::global()
                    .check_tls(parsed.connection_url())
                    .map_err(|e| SourceError::InvalidUri(e.to_string()))?;
            }
            SourceType::Csv | SourceType::Parquet => {
                storage::register_location(&self.files, uri, &self.s3).map_err(storage_error)?;
            }
        }
        let secret = take_password(&mut url).map(|password| self.secrets.seal(&password));
        let record = self
            .db
            .insert_source(NewSource {
                alias,
                uri: url.as_str(),
                source_type: source_type.as_str(),
                secret,
            })
            .await?;
        Ok(record)
    }

    pub async fn list(&self) -> Result<Vec<SourceRecord>, SourceError> {
        Ok(self.db.list_sources().await?)
    }

    pub async fn get(&self, alias: &str) -> Result<SourceRecord, SourceError> {
        Ok(self.db.source(alias).await?)
    }

    pub async fn delete(&self, alias: &str) -> Result<(), SourceError> {
        Ok(self.db.delete_source(alias).await?)
    }

    /// The source's first `limit` rows matching `conditions`. The metadata DB is only asked where
    /// the source is; the rows come through the source's own pool (or DataFusion, for files).
    pub async fn preview(
        &self,
        alias: &str,
        conditions: &[Condition],
        limit: Option<usize>,
    ) -> Result<Preview, SourceError> {
        let limit = preview::checked_limit(limit)?;
        let preview = match self.locate(alias).await? {
            SourceLocation::Postgres(source) => {
                let pool = PoolRegistry::global()
                    .get(source.connection_url())
                    .map_err(|e| PreviewError::Unreachable(e.to_string()))?;
                self.previewer
                    .preview(&pool, &source, conditions, limit, self.count_cap)
                    .await?
            }
            SourceLocation::File { url, format } => {
                files::preview(&self.files, url.as_str(), format, conditions, limit).await?
            }
        };
        Ok(preview)
    }

    /// Where the source's data is: a Postgres table (password included) or files, whose object
    /// store is registered on `files` sessions of this runner.
    pub async fn locate(&self, alias: &str) -> Result<SourceLocation, SourceError> {
        let record = self.db.source(alias).await?;
        let format = match SourceType::parse(&record.source_type)? {
            SourceType::Postgres => return Ok(SourceLocation::Postgres(self.postgres_uri(&record).await?)),
            SourceType::Csv => FileFormat::Csv,
            SourceType::Parquet => FileFormat::Parquet,
        };
        let url = storage::register_location(&self.files, &record.uri, &self.s3).map_err(storage_error)?;
        Ok(SourceLocation::File { url, format })
    }

    pub fn s3(&self) -> &S3Settings {
        &self.s3
    }

    /// The stored URI with its password put back from the secret.
    async fn postgres_uri(&self, record: &SourceRecord) -> Result<SourceUri, SourceError> {
        let url = self
            .secrets
            .with_password(&record.uri, record.secret_id.as_deref())
            .await?;
        SourceUri::parse(url.as_str()).map_err(|e| SourceError::InvalidUri(e.to_string()))
    }
}

fn check_alias(alias: &str) -> Result<(), SourceError> {
    if is_identifier(alias) {
        Ok(())
    } else {
        Err(SourceError::InvalidAlias(alias.to_string()))
    }
}

/// The rule for names users give (source aliases, connection names): a plain SQL identifier.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_ALIAS_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn resolve_type(url: &Url, declared: Option<&str>) -> Result<SourceType, SourceError> {
    let inferred = SourceType::infer(url);
    let Some(declared) = declared else {
        return inferred.ok_or_else(|| SourceError::CannotInferType(redact_connection_url(url.as_str())));
    };
    let declared = SourceType::parse(declared)?;
    let fits = match declared {
        SourceType::Postgres => is_postgres_scheme(url.scheme()),
        SourceType::Csv | SourceType::Parquet => matches!(url.scheme(), "file" | "s3"),
    };
    if !fits {
        return Err(SourceError::TypeMismatch {
            declared: declared.as_str(),
            scheme: url.scheme().to_string(),
        });
    }
    Ok(declared)
}

/// The URI shown to users: `***` where a stored secret stands in for the password.
pub fn display_uri(record: &SourceRecord) -> String {
    match (&record.secret_id, Url::parse(&record.uri)) {
        (Some(_), Ok(mut url)) if !url.username().is_empty() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => record.uri.clone(),
    }
}

fn storage_error(error: StorageError) -> SourceError {
    SourceError::InvalidUri(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_follow_the_identifier_rule() {
        for good in ["invoices", "_x", "A1_b", &"a".repeat(63)] {
            assert!(check_alias(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "a-b", "a b", "a;drop", "é", "a\"", &"a".repeat(64)] {
            assert!(check_alias(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn types_are_inferred_or_checked() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            resolve_type(&url("postgresql://h/db?table=t"), None).unwrap(),
            SourceType::Postgres
        );
        assert_eq!(
            resolve_type(&url("s3://b/x/data.CSV"), None).unwrap(),
            SourceType::Csv
        );
        assert_eq!(
            resolve_type(&url("file:///x/y.parquet"), None).unwrap(),
            SourceType::Parquet
        );
        assert_eq!(
            resolve_type(&url("s3://b/dir/"), Some("parquet")).unwrap(),
            SourceType::Parquet
        );
        assert!(matches!(
            resolve_type(&url("s3://b/dir/"), None),
            Err(SourceError::CannotInferType(_))
        ));
        assert!(matches!(
            resolve_type(&url("postgres://h/db"), Some("csv")),
            Err(SourceError::TypeMismatch { .. })
        ));
        assert!(matches!(
            resolve_type(&url("file:///x.csv"), Some("excel")),
            Err(SourceError::UnknownType(_))
        ));
    }

    #[test]
    fn redaction_covers_both_password_places() {
        let shown = redact_connection_url("postgres://u:pw1@h/db?password=pw2&table=t");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }
}
