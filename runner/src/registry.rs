//! Where data lives: what sources (one table each) and connections (one database each) share.
//! Each has a name users give, an engine that reads it and a URI whose password is sealed apart
//! from it; opening a stored one puts the password back for its engine alone.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use kalla_core::seal::Sealed;
use kalla_core::source::{Engine, EngineError, SourceContext};
use url::Url;

use crate::secrets::{SecretError, Secrets, take_password};

/// The longest name users may give a source or a connection.
pub const MAX_NAME_LEN: usize = 63;

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

/// Where a source's (or a connection table's) rows are, and the engine that reads them.
pub struct Located {
    pub engine: Arc<dyn Engine>,
    /// The URI, password included: never log or show it.
    pub location: Url,
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
}

/// A URI ready to store: its password, if any, taken out and sealed under the id it is stored by.
pub struct Sealing {
    pub stored: Url,
    pub secret: Option<(String, Sealed)>,
}

/// Registration and opening, the same for sources and connections.
#[derive(Clone)]
pub struct Registry {
    secrets: Secrets,
    context: Arc<SourceContext>,
}

impl Registry {
    pub fn new(secrets: Secrets, context: Arc<SourceContext>) -> Self {
        Self { secrets, context }
    }

    /// What engines are lent to check, plan and preview what is registered.
    pub fn context(&self) -> &SourceContext {
        &self.context
    }

    /// `url` with its password moved into a sealed secret.
    pub fn seal(&self, mut url: Url) -> Sealing {
        let secret = take_password(&mut url).map(|password| self.secrets.seal(&password));
        Sealing { stored: url, secret }
    }

    /// A stored URI with its password put back, for `engine` to read.
    pub async fn open(
        &self,
        engine: Arc<dyn Engine>,
        stored: &str,
        secret_id: Option<&str>,
    ) -> Result<Located, SecretError> {
        let location = self.secrets.with_password(stored, secret_id).await?;
        Ok(Located { engine, location })
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
    fn lists_read_as_prose() {
        assert_eq!(one_of(&["a"]), "a");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }
}
