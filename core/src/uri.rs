//! Source URIs: `postgres://user:pass@host:port/db?table=schema.table`.

use std::fmt;

use thiserror::Error;
use url::Url;

use crate::ident::{Ident, IdentError, QualifiedName};
use crate::tls::{TlsError, TlsSettings};

#[derive(Debug, Error)]
pub enum UriError {
    #[error("not a valid URI: {0}")]
    Malformed(String),
    #[error("unsupported scheme {0:?}: expected postgres:// or postgresql://")]
    UnknownScheme(String),
    #[error("invalid port in source URI: {0}")]
    BadPort(String),
    #[error("source URI has no host")]
    MissingHost,
    #[error("source URI has no database name (postgres://user@host:port/DATABASE?table=...)")]
    MissingDatabase,
    #[error("source URI has no `table` parameter (…?table=schema.table)")]
    MissingTable,
    #[error("invalid table name {name:?}: {source}")]
    InvalidIdentifier {
        name: String,
        #[source]
        source: IdentError,
    },
    #[error("invalid table name {0:?}: expected `table` or `schema.table`")]
    TooManyParts(String),
    #[error(transparent)]
    Tls(#[from] Box<TlsError>),
}

impl From<TlsError> for UriError {
    fn from(error: TlsError) -> Self {
        Self::Tls(Box::new(error))
    }
}

/// A parsed Postgres source: where to connect and which relation to read.
///
/// `Display` and `Debug` show the redacted form; only [`SourceUri::connection_url`] reveals the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SourceUri {
    connection: Url,
    table: QualifiedName,
}

impl SourceUri {
    pub fn parse(input: &str) -> Result<Self, UriError> {
        let url = Url::parse(input).map_err(|e| classify_url_error(input, e))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(UriError::UnknownScheme(url.scheme().to_string()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UriError::MissingHost);
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(UriError::MissingDatabase);
        }
        let table_param = url
            .query_pairs()
            .find(|(k, _)| k == "table")
            .map(|(_, v)| v.into_owned())
            .ok_or(UriError::MissingTable)?;
        let table = parse_table_name(&table_param)?;

        let mut connection = url.clone();
        let remaining: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "table")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        connection.set_query(None);
        if !remaining.is_empty() {
            connection.query_pairs_mut().extend_pairs(remaining);
        }
        TlsSettings::of(connection.as_str())?;
        Ok(Self { connection, table })
    }

    pub fn table(&self) -> &QualifiedName {
        &self.table
    }

    /// The libpq-style connection URL, password included. Never log or display it.
    pub fn connection_url(&self) -> &str {
        self.connection.as_str()
    }

    /// The URI's TLS parameters (checked when it was parsed).
    pub fn tls(&self) -> TlsSettings {
        TlsSettings::of(self.connection.as_str()).expect("checked by SourceUri::parse")
    }

    pub fn has_password(&self) -> bool {
        self.connection.password().is_some()
    }

    /// The URI with its password replaced by `***`, safe to show and log.
    pub fn redacted(&self) -> String {
        let mut shown = self.connection.clone();
        shown
            .query_pairs_mut()
            .append_pair("table", &self.table.to_string());
        crate::pool::redact_connection_url(shown.as_str())
    }
}

impl fmt::Display for SourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUri({})", self.redacted())
    }
}

fn classify_url_error(input: &str, error: url::ParseError) -> UriError {
    match error {
        url::ParseError::InvalidPort => UriError::BadPort(redact_raw(input)),
        url::ParseError::EmptyHost => UriError::MissingHost,
        other => UriError::Malformed(other.to_string()),
    }
}

/// Best effort redaction of a URI that did not parse, so an error never echoes a password.
fn redact_raw(input: &str) -> String {
    let Some((scheme, rest)) = input.split_once("://") else {
        return "<unparseable>".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => input.to_string(),
    }
}

/// `table` or `schema.table`; either part may be double-quoted to contain dots.
pub fn parse_table_name(input: &str) -> Result<QualifiedName, UriError> {
    let parts = split_qualified(input)?;
    let ident = |name: String| {
        Ident::new(name.clone()).map_err(|source| UriError::InvalidIdentifier { name, source })
    };
    match parts.len() {
        1 => Ok(QualifiedName {
            schema: Ident::new("public").expect("valid"),
            name: ident(parts[0].clone())?,
        }),
        2 => Ok(QualifiedName {
            schema: ident(parts[0].clone())?,
            name: ident(parts[1].clone())?,
        }),
        _ => Err(UriError::TooManyParts(input.to_string())),
    }
}

fn split_qualified(input: &str) -> Result<Vec<String>, UriError> {
    let mut parts = vec![String::new()];
    let mut chars = input.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().expect("non-empty").push('"');
            }
            ('"', true) => quoted = false,
            ('.', false) => parts.push(String::new()),
            (c, _) => parts.last_mut().expect("non-empty").push(c),
        }
    }
    if quoted {
        return Err(UriError::Malformed(format!(
            "unterminated quote in table name {input:?}"
        )));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schema_and_table() {
        let uri = SourceUri::parse("postgres://u:secret@db.example:6543/shop?table=sales.orders").unwrap();
        assert_eq!(uri.table().schema.as_str(), "sales");
        assert_eq!(uri.table().name.as_str(), "orders");
        assert_eq!(uri.connection_url(), "postgres://u:secret@db.example:6543/shop");
    }

    #[test]
    fn schema_defaults_to_public_and_postgresql_scheme_is_accepted() {
        let uri = SourceUri::parse("postgresql://u@localhost/shop?table=orders").unwrap();
        assert_eq!(uri.table().to_string(), "public.orders");
    }

    #[test]
    fn keeps_other_connection_parameters() {
        let uri = SourceUri::parse("postgres://u@h/db?sslmode=require&table=t&application_name=x").unwrap();
        assert_eq!(
            uri.connection_url(),
            "postgres://u@h/db?sslmode=require&application_name=x"
        );
    }

    #[test]
    fn quoted_parts_may_contain_dots_and_quotes() {
        let uri = SourceUri::parse("postgres://u@h/db?table=%22my.schema%22.%22a%22%22b%22").unwrap();
        assert_eq!(uri.table().schema.as_str(), "my.schema");
        assert_eq!(uri.table().name.as_str(), "a\"b");
    }

    #[test]
    fn redaction_hides_the_password_everywhere() {
        let uri = SourceUri::parse("postgres://u:hunter2@h:5432/db?table=t").unwrap();
        for shown in [uri.redacted(), uri.to_string(), format!("{uri:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }

    #[test]
    fn clear_errors() {
        let err = |s: &str| SourceUri::parse(s).unwrap_err().to_string();
        assert!(err("postgres://u@h/db").contains("no `table` parameter"));
        assert!(err("mysql://u@h/db?table=t").contains("unsupported scheme \"mysql\""));
        let bad_port = err("postgres://u:hunter2@h:99999/db?table=t");
        assert!(bad_port.contains("invalid port"), "{bad_port}");
        assert!(!bad_port.contains("hunter2"), "{bad_port}");
        assert!(err("postgres://u@h/db?table=a.b.c").contains("expected `table` or `schema.table`"));
        assert!(err("postgres://u@h/db?table=").contains("identifier is empty"));
        assert!(err("postgres://u@h/db?table=%01x").contains("control character"));
        assert!(err("postgres://u@h/?table=t").contains("no database name"));
        assert!(err("postgres://u@h/db?table=t&sslrootcert=/etc/passwd").contains("never given as paths"));
        assert!(err("postgres://u@h/db?table=t&sslmode=bogus").contains("not one of disable"));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// `text` percent-encoded as a user writes a password into a URI.
    fn encoded(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn any_text_is_a_source_or_an_error(input in any::<String>()) {
            let _ = SourceUri::parse(&input);
        }

        #[test]
        fn uri_shaped_text_is_a_source_or_an_error(
            input in "(postgres|postgresql|s3|file)://[ -~]{0,40}(/[ -~]{0,10})?(\\?table=[ -~]{0,30})?"
        ) {
            let _ = SourceUri::parse(&input);
        }

        #[test]
        fn the_password_shows_only_in_the_connection_url(
            user in "[a-z][a-z0-9_]{0,11}",
            secret in "[ -~]{1,24}",
            host in "[a-z][a-z0-9-]{0,15}",
            port in 1u16..,
            schema in "[a-z_][a-z0-9_]{0,10}",
            table in "[a-z_][a-z0-9_]{0,10}",
        ) {
            // Upper case, so nothing else in the URI (all lower case) can contain it by chance.
            let password = format!("PW{secret}");
            let input = format!(
                "postgres://{user}:{}@{host}:{port}/shop?table={schema}.{table}",
                encoded(&password)
            );
            let uri = SourceUri::parse(&input).unwrap();
            prop_assert!(uri.has_password());
            let connection = Url::parse(uri.connection_url()).unwrap();
            let decoded = percent_encoding_decode(connection.password().unwrap());
            prop_assert_eq!(decoded, password.clone());
            prop_assert_eq!(uri.table().name.as_str(), table.as_str());
            for shown in [uri.redacted(), uri.to_string(), format!("{uri:?}")] {
                prop_assert!(!shown.contains(&password), "{shown}");
                prop_assert!(!shown.contains(&encoded(&password)), "{shown}");
            }
        }

        #[test]
        fn errors_never_echo_the_password(
            secret in "[ -~]{1,24}",
            port in "[0-9]{6}[a-z]?",
            table in prop_oneof![Just(""), Just("a.b.c"), Just("\"unterminated")],
        ) {
            let password = format!("PW{secret}");
            let input = format!("postgres://u:{}@db:{port}/shop?table={table}", encoded(&password));
            if let Err(error) = SourceUri::parse(&input) {
                let message = error.to_string();
                prop_assert!(!message.contains(&password), "{message}");
                prop_assert!(!message.contains(&encoded(&password)), "{message}");
            }
        }
    }

    fn percent_encoding_decode(text: &str) -> String {
        url::form_urlencoded::parse(format!("p={}", text.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    }
}
