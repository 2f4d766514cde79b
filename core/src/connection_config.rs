//! A connection's `config` as a database URL, and the URL shown back: shared by every engine
//! serving connections. A config is `{"uri": "…"}` or the URL by parts (`host`, `port`,
//! `database`, `user`, `password`, and TLS as `sslmode`, `sslrootcert`, `sslcert`).

use serde_json::{Map, Value, json};
use url::Url;

use crate::ident::QualifiedName;
use crate::pool::redact_connection_url;
use crate::source::EngineError;

/// Fields of a config given by parts; the last three name TLS settings as libpq's parameters do.
const FIELDS: [&str; 8] = [
    "host",
    "port",
    "database",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
];

/// What one engine's URLs look like.
pub struct UrlShape {
    /// The scheme a URL made from parts gets.
    pub scheme: &'static str,
    /// The schemes a `uri` may have.
    pub schemes: &'static [&'static str],
    pub default_port: u16,
    /// Whether a URL must name a database (else it reaches the whole server).
    pub database_required: bool,
}

impl UrlShape {
    fn example(&self) -> String {
        format!("{}://user@host:port/database", self.scheme)
    }
}

/// The URL a `config` describes, checked to have `shape`.
pub fn config_url(config: &Value, shape: &UrlShape) -> Result<Url, EngineError> {
    let invalid = |message: String| EngineError::InvalidLocation(message);
    let Some(fields) = config.as_object() else {
        return Err(invalid("config must be an object".into()));
    };
    if let Some(uri) = fields.get("uri") {
        if fields.len() > 1 {
            return Err(invalid(format!(
                "give either uri or {}, not both",
                FIELDS.join("/")
            )));
        }
        let uri = uri
            .as_str()
            .ok_or_else(|| invalid("uri must be a string".into()))?;
        let url = Url::parse(uri).map_err(|e| invalid(format!("{e} (in {})", redact_connection_url(uri))))?;
        if !shape.schemes.contains(&url.scheme()) || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "expected {}, got {}",
                shape.example(),
                redact_connection_url(uri)
            )));
        }
        if url.query_pairs().any(|(k, _)| k == "table") {
            return Err(invalid(
                "a connection is a whole database: remove the table parameter".into(),
            ));
        }
        return Ok(url);
    }
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field {unknown:?}; expected uri or {}",
            FIELDS.join(", ")
        )));
    }
    let text = |name: &str, required: bool| -> Result<Option<String>, EngineError> {
        match fields.get(name) {
            None | Some(Value::Null) if required => Err(invalid(format!("{name} is required"))),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if required && s.is_empty() => Err(invalid(format!("{name} is empty"))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{name} must be a string"))),
        }
    };
    let port = match fields.get("port") {
        None | Some(Value::Null) => shape.default_port,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(format!("port {n} is not a TCP port")))?,
        Some(_) => return Err(invalid("port must be a number".into())),
    };
    let host = text("host", true)?.unwrap_or_default();
    let database = text("database", shape.database_required)?;
    let user = text("user", true)?.unwrap_or_default();
    let mut url = Url::parse(&format!("{}://localhost/", shape.scheme)).expect("static URL");
    url.set_host(Some(&host))
        .map_err(|e| invalid(format!("host {host:?}: {e}")))?;
    url.set_port(Some(port)).map_err(|()| invalid("port".into()))?;
    url.set_username(&user).map_err(|()| invalid("user".into()))?;
    if let Some(database) = database {
        url.path_segments_mut()
            .map_err(|()| invalid("database".into()))?
            .clear()
            .push(&database);
    }
    if let Some(password) = text("password", false)?.filter(|p| !p.is_empty()) {
        url.set_password(Some(&password))
            .map_err(|()| invalid("password".into()))?;
    }
    for parameter in ["sslmode", "sslrootcert", "sslcert"] {
        if let Some(value) = text(parameter, false)? {
            url.query_pairs_mut().append_pair(parameter, &value);
        }
    }
    Ok(url)
}

/// The settings users see of a stored URL (no password; `"***"` where one is stored).
pub fn shown_config(stored: &Url, has_password: bool, default_port: u16) -> Value {
    let mut shown = Map::new();
    shown.insert("host".into(), json!(stored.host_str()));
    shown.insert("port".into(), json!(stored.port().unwrap_or(default_port)));
    shown.insert("database".into(), json!(stored.path().trim_start_matches('/')));
    shown.insert("user".into(), json!(stored.username()));
    if has_password {
        shown.insert("password".into(), json!("***"));
    }
    for (key, value) in stored.query_pairs() {
        shown.insert(key.into_owned(), json!(value));
    }
    Value::Object(shown)
}

/// The location of one of a database's tables: its URL with a `table` parameter.
pub fn table_location(database: &Url, table: &QualifiedName) -> Url {
    let mut location = database.clone();
    location
        .query_pairs_mut()
        .append_pair("table", &table.to_string());
    location
}
