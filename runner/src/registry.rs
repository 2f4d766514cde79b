//! Where data lives: the one registry of sources (one table each) and connections (one database
//! each). Each has a name users give, an engine that reads it and a URI whose password is sealed
//! apart from it; opening a stored one puts the password back for its engine alone.

use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use kalla_core::ident::QualifiedName;
use kalla_core::pool::redact_connection_url;
use kalla_core::recon::ParamValues;
use kalla_core::recon::params::{ParamError, has_placeholders, substitute_location};
use kalla_core::source::{Engine, EngineError, Engines, Fit, SourceContext};
use thiserror::Error;
use url::Url;

use crate::catalog::RESULTS_CATALOG;
use crate::metadata::{By, Kind, MetadataDb, MetadataError, NewRegistration, Registration, SecretRef};
use crate::secrets::{SecretError, Secrets, take_password};

/// The longest name users may give a source or a connection.
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(
        "invalid {} {name:?}: a name starts with a letter or underscore, has only ASCII letters, digits \
         and underscores, and is at most {MAX_NAME_LEN} characters long",
        name_word(*kind)
    )]
    InvalidName { kind: Kind, name: String },
    #[error(
        "connection name {RESULTS_CATALOG:?} is reserved: results.<job_id>.<output> names a job's \
         outputs; choose another name"
    )]
    ReservedName,
    #[error("unknown source_type {given:?}: {}s support {expected}", kind.label())]
    UnknownEngine {
        kind: Kind,
        given: String,
        expected: String,
    },
    #[error("cannot tell the type of {uri}: give source_type ({expected})")]
    CannotInferEngine { uri: String, expected: String },
    #[error("source_type {declared} does not fit a {scheme}:// URI")]
    EngineMismatch { declared: &'static str, scheme: String },
    #[error("give the password in the URI or name a secret, not both")]
    TwoPasswords,
    #[error("give a password or a secret")]
    NoCredentials,
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// A registered record's new credentials: a password sealed for it alone, or a named secret.
#[derive(Clone, Copy)]
pub enum Credentials<'a> {
    Password(&'a str),
    Secret(&'a str),
}

fn name_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Source => "alias",
        Kind::Connection => "connection name",
    }
}

/// The rule for names users give (source aliases, connection names): a plain SQL identifier.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Engine names as prose: `a, b or c`.
pub fn one_of(names: &[&str]) -> String {
    match names {
        [] => "none".into(),
        [only] => (*only).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The engine a table at `url` is read by: the one `declared`, if it fits, else the one the URI
/// implies.
pub fn engine_for(url: &Url, declared: Option<&str>) -> Result<Arc<dyn Engine>, RegistryError> {
    let Some(declared) = declared else {
        return Engines::global()
            .infer(url)
            .ok_or_else(|| RegistryError::CannotInferEngine {
                uri: redact_connection_url(url.as_str()),
                expected: one_of(&Engines::global().names(false)),
            });
    };
    let engine = engine_named(Kind::Source, declared)?;
    if engine.fits(url) == Fit::No {
        return Err(RegistryError::EngineMismatch {
            declared: engine.name(),
            scheme: url.scheme().to_string(),
        });
    }
    Ok(engine)
}

/// The engine `name`, if it can read what `kind` registers (a connection needs whole databases).
pub fn engine_named(kind: Kind, name: &str) -> Result<Arc<dyn Engine>, RegistryError> {
    let serves_databases = kind == Kind::Connection;
    Engines::global()
        .get(name)
        .filter(|engine| !serves_databases || engine.database().is_some())
        .ok_or_else(|| RegistryError::UnknownEngine {
            kind,
            given: name.to_string(),
            expected: one_of(&Engines::global().names(serves_databases)),
        })
}

/// The URI users see: `***` where a stored secret stands in for the password.
pub fn shown_location(record: &Registration) -> String {
    match (&record.secret_id, Url::parse(&record.location)) {
        (Some(_), Ok(mut url)) if !url.username().is_empty() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => record.location.clone(),
    }
}

/// Where a source's (or a connection's, or one of its tables') rows are, and the engine that
/// reads them.
#[derive(Clone)]
pub struct Located {
    pub engine: Arc<dyn Engine>,
    /// The URI, password included: never log or show it.
    pub location: Url,
}

impl std::fmt::Debug for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Located")
            .field("engine", &self.engine.name())
            .field("location", &redact_connection_url(self.location.as_str()))
            .finish()
    }
}

impl Located {
    /// The data as a table of `session`'s cluster.
    pub async fn table(
        &self,
        session: &SessionContext,
        context: &SourceContext,
    ) -> Result<Arc<dyn TableProvider>, EngineError> {
        self.engine.table(&self.location, context, session).await
    }

    /// The location with a run's parameter `values` in place of its `{name}`s; the engine
    /// checks the result against the allow-lists when it opens it, as any location.
    pub fn with_params(self, values: &ParamValues) -> Result<Located, ParamError> {
        if !has_placeholders(self.location.as_str()) {
            return Ok(self);
        }
        let resolved = substitute_location(self.location.as_str(), values)?;
        let location = Url::parse(&resolved).map_err(|error| ParamError::BadLocation(error.to_string()))?;
        Ok(Located {
            engine: self.engine,
            location,
        })
    }

    /// One table of this database; `None` where the engine reads single tables only.
    pub fn table_of(&self, table: &QualifiedName) -> Option<Located> {
        let location = self.engine.database()?.table_location(&self.location, table);
        Some(Located {
            engine: self.engine.clone(),
            location,
        })
    }
}

/// Registration, lookup, opening and deletion, the same for sources and connections.
#[derive(Clone)]
pub struct Registry {
    db: MetadataDb,
    secrets: Secrets,
    context: Arc<SourceContext>,
    grace: Duration,
}

impl Registry {
    /// `grace`: how long cache versions of a deleted connection's tables stay readable.
    pub fn new(db: MetadataDb, secrets: Secrets, context: Arc<SourceContext>, grace: Duration) -> Self {
        Self {
            db,
            secrets,
            context,
            grace,
        }
    }

    /// How long cache versions no longer served stay readable before they are deleted.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// What engines are lent to check, plan and preview what is registered.
    pub fn context(&self) -> &SourceContext {
        &self.context
    }

    /// Stores `url` as `name`, read by `engine`, its password moved into a sealed secret, or
    /// using the named secret `secret`.
    pub async fn register(
        &self,
        kind: Kind,
        name: &str,
        engine: &dyn Engine,
        mut url: Url,
        secret: Option<&str>,
    ) -> Result<Registration, RegistryError> {
        if !is_identifier(name) {
            return Err(RegistryError::InvalidName {
                kind,
                name: name.to_string(),
            });
        }
        if kind == Kind::Connection && name == RESULTS_CATALOG {
            return Err(RegistryError::ReservedName);
        }
        let secret = match (take_password(&mut url), secret) {
            (Some(_), Some(_)) => return Err(RegistryError::TwoPasswords),
            (Some(password), None) => Some(self.secret_ref(Credentials::Password(&password)).await?),
            (None, Some(name)) => Some(self.secret_ref(Credentials::Secret(name)).await?),
            (None, None) => None,
        };
        let record = self
            .db
            .register(NewRegistration {
                kind,
                name,
                engine: engine.name(),
                location: url.as_str(),
                secret,
            })
            .await?;
        Ok(record)
    }

    /// Gives the record new credentials in place: what opens it next uses them.
    pub async fn set_credentials(
        &self,
        kind: Kind,
        by: By<'_>,
        credentials: Credentials<'_>,
    ) -> Result<Registration, RegistryError> {
        let secret = self.secret_ref(credentials).await?;
        Ok(self.db.replace_secret(kind, by, secret).await?)
    }

    async fn secret_ref(&self, credentials: Credentials<'_>) -> Result<SecretRef, RegistryError> {
        Ok(match credentials {
            Credentials::Password(password) => {
                let (id, sealed) = self.secrets.seal(password);
                SecretRef::New { id, sealed }
            }
            Credentials::Secret(name) => SecretRef::Named(self.secrets.named_id(name).await?),
        })
    }

    pub async fn list(&self, kind: Kind) -> Result<Vec<Registration>, RegistryError> {
        Ok(self.db.registrations(kind).await?)
    }

    pub async fn get(&self, kind: Kind, by: By<'_>) -> Result<Registration, RegistryError> {
        Ok(self.db.registration(kind, by).await?)
    }

    pub async fn delete(&self, kind: Kind, by: By<'_>) -> Result<(), RegistryError> {
        Ok(self.db.unregister(kind, by, self.grace).await?)
    }

    /// The record's data, password put back, and its engine.
    pub async fn open(&self, record: &Registration) -> Result<Located, RegistryError> {
        let engine = engine_named(record.kind, &record.engine)?;
        let location = self
            .secrets
            .with_password(&record.location, record.secret_id.as_deref())
            .await?;
        Ok(Located { engine, location })
    }

    /// Where the record named `name` has its data.
    pub async fn locate(&self, kind: Kind, name: &str) -> Result<Located, RegistryError> {
        let record = self.get(kind, By::Name(name)).await?;
        self.open(&record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_identifier_rule() {
        for good in ["invoices", "_x", "A1_b", &"a".repeat(63)] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in ["", "1abc", "a-b", "a b", "a;drop", "é", "a\"", &"a".repeat(64)] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn bad_names_say_the_rule_and_what_was_named() {
        let error = |kind| {
            RegistryError::InvalidName {
                kind,
                name: "1abc".into(),
            }
            .to_string()
        };
        let source = error(Kind::Source);
        assert!(
            source.starts_with("invalid alias \"1abc\"") && source.contains("at most 63"),
            "{source}"
        );
        assert!(error(Kind::Connection).starts_with("invalid connection name \"1abc\""));
    }

    #[test]
    fn lists_read_as_prose() {
        assert_eq!(one_of(&["a"]), "a");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }

    #[test]
    fn engines_are_inferred_or_checked() {
        let url = |s: &str| Url::parse(s).unwrap();
        let resolved = |uri: &str, declared| engine_for(&url(uri), declared).map(|e| e.name());
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
            Err(RegistryError::EngineMismatch { .. })
        ));
        assert!(matches!(
            resolved("file:///x.csv", Some("excel")),
            Err(RegistryError::UnknownEngine { .. })
        ));
    }

    #[test]
    fn connections_take_only_engines_serving_databases() {
        let file_engine = Engines::global()
            .infer(&Url::parse("file:///x.csv").unwrap())
            .unwrap()
            .name();
        assert!(engine_named(Kind::Source, file_engine).is_ok());
        let error = engine_named(Kind::Connection, file_engine)
            .unwrap_err()
            .to_string();
        let databases = one_of(&Engines::global().names(true));
        assert!(
            error.contains(&format!("connections support {databases}")),
            "{error}"
        );
    }
}
