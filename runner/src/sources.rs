//! Sources: single tables registered by URI, and their load-scoped previews.

use kalla_core::pool::redact_connection_url;
use kalla_core::preview::{self, Condition, Preview, PreviewError};
use kalla_core::source::EngineError;
use thiserror::Error;
use url::Url;

use crate::metadata::{Kind, Registration};
use crate::registry::{Registry, RegistryError, engine_for};

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("invalid source URI: {0}")]
    InvalidUri(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Preview(#[from] PreviewError),
}

/// Registering sources (a password in a URI moves into a sealed secret) and previewing them.
#[derive(Clone)]
pub struct Sources {
    registry: Registry,
}

impl Sources {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// Registers the table at `uri` as `alias`, once its engine has checked the location.
    pub async fn register(
        &self,
        alias: &str,
        uri: &str,
        source_type: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Registration, SourceError> {
        let url = Url::parse(uri)
            .map_err(|e| SourceError::InvalidUri(format!("{e} (in {})", redact_connection_url(uri))))?;
        let engine = engine_for(&url, source_type)?;
        engine
            .check(&url, self.registry.context())
            .await
            .map_err(|e| match e {
                EngineError::NotAllowed(message) => SourceError::NotAllowed(message),
                other => SourceError::InvalidUri(other.to_string()),
            })?;
        Ok(self
            .registry
            .register(Kind::Source, alias, engine.as_ref(), url, secret)
            .await?)
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
        let source = self.registry.locate(Kind::Source, alias).await?;
        let preview = source
            .engine
            .preview(&source.location, conditions, limit, self.registry.context())
            .await?;
        Ok(preview)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_both_password_places() {
        let shown = redact_connection_url("postgres://u:pw1@h/db?password=pw2&table=t");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }
}
