//! SQL identifiers: validation of user-supplied names, Postgres quoting and MariaDB quoting.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Postgres truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier {0:?} is longer than {MAX_IDENTIFIER_BYTES} bytes")]
    TooLong(String),
    #[error("identifier {0:?} contains a NUL or control character")]
    ControlCharacter(String),
}

/// `name` as a Postgres quoted identifier: `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name` as a MariaDB (MySQL) quoted identifier: `` `name` `` with embedded backticks doubled.
pub fn backquote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A validated SQL identifier (schema, table or column name), kept exactly as the catalog spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ident(String);

impl Ident {
    pub fn new(name: impl Into<String>) -> Result<Self, IdentError> {
        let name = name.into();
        if name.is_empty() {
            return Err(IdentError::Empty);
        }
        if name.len() > MAX_IDENTIFIER_BYTES {
            return Err(IdentError::TooLong(name));
        }
        if name.chars().any(char::is_control) {
            return Err(IdentError::ControlCharacter(name));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier as a Postgres quoted identifier.
    pub fn quoted(&self) -> String {
        quote_ident(&self.0)
    }
}

impl TryFrom<String> for Ident {
    type Error = IdentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Ident> for String {
    fn from(value: Ident) -> Self {
        value.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QualifiedName {
    pub schema: Ident,
    pub name: Ident,
}

impl QualifiedName {
    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.name.quoted())
    }

    /// The name quoted for MariaDB, where the schema is the database.
    pub fn backquoted(&self) -> String {
        format!(
            "{}.{}",
            backquote_ident(self.schema.as_str()),
            backquote_ident(self.name.as_str())
        )
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_embedded_quotes() {
        let ident = Ident::new(r#"we"ird; DROP TABLE x"#).unwrap();
        assert_eq!(ident.quoted(), r#""we""ird; DROP TABLE x""#);
        assert_eq!(backquote_ident("we`ird; x"), "`we``ird; x`");
    }

    #[test]
    fn rejects_empty_long_and_control_characters() {
        assert_eq!(Ident::new(""), Err(IdentError::Empty));
        assert!(matches!(Ident::new("a".repeat(64)), Err(IdentError::TooLong(_))));
        assert!(matches!(Ident::new("a\0b"), Err(IdentError::ControlCharacter(_))));
        assert!(Ident::new("Ünïcode name").is_ok());
    }
}
