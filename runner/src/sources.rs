//! Registering sources (a password in a URI moves into a sealed secret) and previewing them.

use datafusion::prelude::SessionContext;
use kalla_core::pool::{PoolRegistry, redact_connection_url};
use kalla_core::preview::files::{self, FileFormat};
use kalla_core::preview::{self, Condition, Preview, PreviewError};
use kalla_core::seal::SealError;
use kalla_core::storage::{self, S3Settings, StorageError};
use kalla_core::{ClusterKey, SourceUri};
use thiserror::Error;
use url::Url;

use crate::metadata::{MetadataDb, MetadataError, NewSource, SourceRecord};

const MAX_ALIAS_LEN: usize = 63;

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
    #[error("the source's stored secret cannot be opened with this runner's KALLA_SECRET_KEY: {0}")]
    Secret(#[from] SealError),
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

/// Sources: their metadata, their secrets, and previews read through each source's own pool.
#[derive(Clone)]
pub struct Sources {
    db: MetadataDb,
    key: ClusterKey,
    files: SessionContext,
    s3: S3Settings,
    count_cap: u64,
}

impl Sources {
    pub fn new(db: MetadataDb, key: ClusterKey, s3: S3Settings, count_cap: u64) -> Self {
        Self {
            db,
            key,
            files: SessionContext::new(),
            s3,
            count_cap,
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
                SourceUri::parse(uri).map_err(|e| SourceError::InvalidUri(e.to_string()))?;
            }
            SourceType::Csv | SourceType::Parquet => {
                storage::register_location(&self.files, uri, &self.s3).map_err(storage_error)?;
            }
        }
        let secret = take_password(&mut url).map(|password| {
            let id = MetadataDb::new_secret_id();
            let sealed = self.key.seal(&secret_purpose(&id), &password);
            (id, sealed)
        });
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
        let record = self.db.source(alias).await?;
        match SourceType::parse(&record.source_type)? {
            SourceType::Postgres => {
                let source = self.postgres_uri(&record).await?;
                let pool = PoolRegistry::global()
                    .get(source.connection_url())
                    .map_err(|e| PreviewError::Unreachable(e.to_string()))?;
                Ok(
                    preview::postgres::preview(&pool, source.table(), conditions, limit, self.count_cap)
                        .await?,
                )
            }
            format @ (SourceType::Csv | SourceType::Parquet) => {
                let url =
                    storage::register_location(&self.files, &record.uri, &self.s3).map_err(storage_error)?;
                let format = if format == SourceType::Csv {
                    FileFormat::Csv
                } else {
                    FileFormat::Parquet
                };
                Ok(files::preview(&self.files, url.as_str(), format, conditions, limit).await?)
            }
        }
    }

    /// The stored URI with its password put back from the secret.
    async fn postgres_uri(&self, record: &SourceRecord) -> Result<SourceUri, SourceError> {
        let mut url = Url::parse(&record.uri).map_err(|e| SourceError::InvalidUri(e.to_string()))?;
        if let Some(secret_id) = &record.secret_id {
            let sealed = self.db.secret(secret_id).await?;
            let password = self.key.unseal(&secret_purpose(secret_id), &sealed)?;
            url.set_password(Some(&password))
                .map_err(|()| SourceError::InvalidUri("stored URI cannot hold a password".into()))?;
        }
        SourceUri::parse(url.as_str()).map_err(|e| SourceError::InvalidUri(e.to_string()))
    }
}

/// What a source's password is sealed for, so a sealed value cannot be moved to another row.
fn secret_purpose(secret_id: &str) -> String {
    format!("kalla-secret:{secret_id}")
}

fn check_alias(alias: &str) -> Result<(), SourceError> {
    let mut chars = alias.chars();
    let valid = alias.len() <= MAX_ALIAS_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(SourceError::InvalidAlias(alias.to_string()))
    }
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

/// Removes the password (userinfo or `password=` parameter) from `url` and returns it.
fn take_password(url: &mut Url) -> Option<String> {
    let mut password = url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    let _ = url.set_password(None);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.iter().any(|(k, _)| k == "password") {
        url.set_query(None);
        let mut query = url.query_pairs_mut();
        for (key, value) in pairs {
            if key == "password" {
                password.get_or_insert(value);
            } else {
                query.append_pair(&key, &value);
            }
        }
    }
    password.filter(|p| !p.is_empty())
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
    fn passwords_leave_the_uri() {
        let mut url = Url::parse("postgres://app:p%40s+s@h:5432/db?table=s.t&sslmode=disable").unwrap();
        assert_eq!(take_password(&mut url).as_deref(), Some("p@s+s"));
        assert_eq!(url.as_str(), "postgres://app@h:5432/db?table=s.t&sslmode=disable");

        let mut url = Url::parse("postgres://app@h/db?password=hunter2&table=t").unwrap();
        assert_eq!(take_password(&mut url).as_deref(), Some("hunter2"));
        assert_eq!(url.as_str(), "postgres://app@h/db?table=t");

        let mut url = Url::parse("postgres://app@h/db?table=t").unwrap();
        assert_eq!(take_password(&mut url), None);
    }

    #[test]
    fn redaction_covers_both_password_places() {
        let shown = redact_connection_url("postgres://u:pw1@h/db?password=pw2&table=t");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }
}
