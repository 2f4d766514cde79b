//! Registering sources (a password in a URI moves into a sealed secret) and previewing them.

use std::sync::Arc;

use kalla_core::pool::redact_connection_url;
use kalla_core::preview::{self, Condition, Preview, PreviewError};
use kalla_core::source::{Engine, Engines, Fit, SourceContext};
use thiserror::Error;
use url::Url;

use crate::metadata::{MetadataDb, MetadataError, NewSource, SourceRecord};
use crate::registry::{Located, MAX_NAME_LEN, Registry, is_identifier, one_of};
use crate::secrets::SecretError;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(
        "invalid alias {0:?}: an alias starts with a letter or underscore, has only ASCII letters, digits \
         and underscores, and is at most {MAX_NAME_LEN} characters long"
    )]
    InvalidAlias(String),
    #[error("unknown source_type {given:?}: expected {expected}")]
    UnknownType { given: String, expected: String },
    #[error("cannot tell the type of {uri}: give source_type ({expected})")]
    CannotInferType { uri: String, expected: String },
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

/// Sources: their metadata, their secrets, and previews read through each source's own engine.
#[derive(Clone)]
pub struct Sources {
    db: MetadataDb,
    registry: Registry,
}

impl Sources {
    pub fn new(db: MetadataDb, registry: Registry) -> Self {
        Self { db, registry }
    }

    /// What engines are lent to plan and preview sources.
    pub fn context(&self) -> &SourceContext {
        self.registry.context()
    }

    pub async fn register(
        &self,
        alias: &str,
        uri: &str,
        source_type: Option<&str>,
    ) -> Result<SourceRecord, SourceError> {
        check_alias(alias)?;
        let url = Url::parse(uri)
            .map_err(|e| SourceError::InvalidUri(format!("{e} (in {})", redact_connection_url(uri))))?;
        let engine = resolve_engine(&url, source_type)?;
        engine
            .check(&url, self.context())
            .map_err(|e| SourceError::InvalidUri(e.to_string()))?;
        let sealing = self.registry.seal(url);
        let record = self
            .db
            .insert_source(NewSource {
                alias,
                uri: sealing.stored.as_str(),
                source_type: engine.name(),
                secret: sealing.secret,
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
    /// the source is; the rows come from the source itself, through its engine.
    pub async fn preview(
        &self,
        alias: &str,
        conditions: &[Condition],
        limit: Option<usize>,
    ) -> Result<Preview, SourceError> {
        let limit = preview::checked_limit(limit)?;
        let source = self.locate(alias).await?;
        let preview = source
            .engine
            .preview(&source.location, conditions, limit, self.context())
            .await?;
        Ok(preview)
    }

    /// Where the source's data is, password included.
    pub async fn locate(&self, alias: &str) -> Result<Located, SourceError> {
        let record = self.db.source(alias).await?;
        let engine = engine_named(&record.source_type)?;
        Ok(self
            .registry
            .open(engine, &record.uri, record.secret_id.as_deref())
            .await?)
    }
}

fn check_alias(alias: &str) -> Result<(), SourceError> {
    if is_identifier(alias) {
        Ok(())
    } else {
        Err(SourceError::InvalidAlias(alias.to_string()))
    }
}

/// The engine a source of `url` is read by: the one `declared`, if it fits, else the one the
/// URI implies.
fn resolve_engine(url: &Url, declared: Option<&str>) -> Result<Arc<dyn Engine>, SourceError> {
    let Some(declared) = declared else {
        return Engines::global()
            .infer(url)
            .ok_or_else(|| SourceError::CannotInferType {
                uri: redact_connection_url(url.as_str()),
                expected: one_of(&Engines::global().names(false)),
            });
    };
    let engine = engine_named(declared)?;
    if engine.fits(url) == Fit::No {
        return Err(SourceError::TypeMismatch {
            declared: engine.name(),
            scheme: url.scheme().to_string(),
        });
    }
    Ok(engine)
}

fn engine_named(name: &str) -> Result<Arc<dyn Engine>, SourceError> {
    Engines::global()
        .get(name)
        .ok_or_else(|| SourceError::UnknownType {
            given: name.to_string(),
            expected: one_of(&Engines::global().names(false)),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_aliases_say_the_rule() {
        let error = check_alias("1abc").unwrap_err().to_string();
        assert!(
            error.contains("invalid alias \"1abc\"") && error.contains("at most 63"),
            "{error}"
        );
        assert!(check_alias("invoices").is_ok());
    }

    #[test]
    fn engines_are_inferred_or_checked() {
        let url = |s: &str| Url::parse(s).unwrap();
        let resolved = |uri: &str, declared| resolve_engine(&url(uri), declared).map(|e| e.name());
        let file_engine = Engines::global().infer(&url("s3://b/x/data.CSV")).unwrap().name();
        assert_eq!(resolved("s3://b/x/data.CSV", None).unwrap(), file_engine);
        assert_eq!(resolved("s3://b/dir/", Some(file_engine)).unwrap(), file_engine);
        let error = resolved("s3://b/dir/", None).unwrap_err().to_string();
        let expected = one_of(&Engines::global().names(false));
        assert!(error.starts_with("cannot tell the type of s3://b/dir/") && error.contains(&expected));
        let database_uri = "postgresql://h/db?table=t";
        let database_engine = Engines::global().infer(&url(database_uri)).unwrap().name();
        assert_eq!(resolved(database_uri, None).unwrap(), database_engine);
        assert!(matches!(
            resolved(database_uri, Some(file_engine)),
            Err(SourceError::TypeMismatch { .. })
        ));
        assert!(matches!(
            resolved("file:///x.csv", Some("excel")),
            Err(SourceError::UnknownType { .. })
        ));
    }

    #[test]
    fn redaction_covers_both_password_places() {
        let shown = redact_connection_url("postgres://u:pw1@h/db?password=pw2&table=t");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }
}
