//! Connections: databases registered once by name, the discovery of their tables, and whether
//! they can be reached.

use std::time::{Duration, Instant};

use kalla_core::SourceUri;
use kalla_core::ident::QualifiedName;
use kalla_core::pool::{PoolRegistry, redact_connection_url, session_is_encrypted};
use kalla_core::postgres::catalog;
use kalla_core::tls::{SslMode, TlsSettings};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use thiserror::Error;
use url::Url;

use crate::metadata::{
    ConnectionRecord, DiscoveredTable, MetadataDb, MetadataError, NewConnection, TableSync,
};
use crate::secrets::{SecretError, Secrets, take_password};
use crate::sources::{MAX_ALIAS_LEN, is_identifier};

#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error(
        "invalid connection name {0:?}: a name starts with a letter or underscore, has only ASCII letters, \
         digits and underscores, and is at most {MAX_ALIAS_LEN} characters long"
    )]
    InvalidName(String),
    #[error("unknown source_type {0:?}: connections support postgres")]
    UnknownType(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("the connection's database cannot be read: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// A column as Kalla reads it; a table's list of these is its `arrow_schema_json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ColumnInfo {
    pub name: String,
    /// The Arrow type (e.g. `Int64`, `Decimal128(12, 2)`).
    pub data_type: String,
    pub nullable: bool,
    /// The column's type at the source (`format_type`).
    pub sql_type: String,
}

/// How discovery went; a connection is kept even when its database cannot be read yet.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Discovery {
    Succeeded {
        tables: usize,
        #[serde(flatten)]
        changes: TableSync,
        duration_ms: u64,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub reachable: bool,
    pub latency_ms: f64,
    /// The `sslmode` the runner connects with (`prefer` unless the connection sets one).
    pub sslmode: String,
    /// Whether the runner's session is encrypted, as the server reports it (`pg_stat_ssl`; behind
    /// a connection pooler, that is the pooler's session to the server).
    pub encrypted: bool,
    /// Whether the server's certificate was checked against trusted roots (`verify-ca` or
    /// `verify-full` on an encrypted session).
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct Connections {
    db: MetadataDb,
    secrets: Secrets,
    grace: Duration,
}

impl Connections {
    /// `grace`: how long replaced cache versions stay readable before they are deleted.
    pub fn new(db: MetadataDb, secrets: Secrets, grace: Duration) -> Self {
        Self { db, secrets, grace }
    }

    pub async fn create(
        &self,
        name: &str,
        source_type: &str,
        config: &Value,
    ) -> Result<(ConnectionRecord, Discovery), ConnectionError> {
        if !is_identifier(name) {
            return Err(ConnectionError::InvalidName(name.to_string()));
        }
        if source_type != "postgres" {
            return Err(ConnectionError::UnknownType(source_type.to_string()));
        }
        let mut url = postgres_url(config)?;
        PoolRegistry::global()
            .check_tls(url.as_str())
            .map_err(|e| ConnectionError::InvalidConfig(e.to_string()))?;
        let secret = take_password(&mut url).map(|password| self.secrets.seal(&password));
        let config_json = json!({"uri": url.as_str()}).to_string();
        let record = self
            .db
            .insert_connection(NewConnection {
                name,
                source_type,
                config_json: &config_json,
                secret,
            })
            .await?;
        let discovery = self.discover(&record).await;
        Ok((record, discovery))
    }

    pub async fn list(&self) -> Result<Vec<ConnectionRecord>, ConnectionError> {
        Ok(self.db.list_connections().await?)
    }

    pub async fn get(&self, id: &str) -> Result<ConnectionRecord, ConnectionError> {
        Ok(self.db.connection(id).await?)
    }

    pub async fn delete(&self, id: &str) -> Result<(), ConnectionError> {
        Ok(self.db.delete_connection(id, self.grace).await?)
    }

    /// Reads the database's tables and makes the `tables` rows match them.
    pub async fn discover(&self, record: &ConnectionRecord) -> Discovery {
        let started = Instant::now();
        match self.try_discover(record).await {
            Ok((tables, changes)) => Discovery::Succeeded {
                tables,
                changes,
                duration_ms: started.elapsed().as_millis() as u64,
            },
            Err(error) => Discovery::Failed {
                error: error.to_string(),
            },
        }
    }

    async fn try_discover(&self, record: &ConnectionRecord) -> Result<(usize, TableSync), ConnectionError> {
        let url = self.connection_url(record).await?;
        let pool = PoolRegistry::global()
            .get(url.as_str())
            .map_err(|e| ConnectionError::Unreachable(e.to_string()))?;
        let unreachable = |e: &dyn std::fmt::Display| ConnectionError::Unreachable(e.to_string());
        let relations = catalog::list_relations(&pool)
            .await
            .map_err(|e| unreachable(&e))?;
        let mut discovered = Vec::with_capacity(relations.len());
        for name in relations {
            let relation = match catalog::describe(&pool, &name).await {
                Ok(relation) => relation,
                // Dropped between listing and describing, or not readable after all.
                Err(catalog::CatalogError::NotFound(_) | catalog::CatalogError::NoColumns(_)) => continue,
                Err(error) => return Err(unreachable(&error)),
            };
            let columns: Vec<ColumnInfo> = relation
                .columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name.clone(),
                    data_type: c.pg_type.arrow_type().to_string(),
                    nullable: c.nullable,
                    sql_type: c.sql_type.clone(),
                })
                .collect();
            discovered.push(DiscoveredTable {
                schema_name: name.schema.to_string(),
                table_name: name.name.to_string(),
                arrow_schema_json: serde_json::to_string(&columns).expect("columns serialize"),
            });
        }
        let changes = self.db.sync_tables(&record.id, &discovered, self.grace).await?;
        Ok((discovered.len(), changes))
    }

    pub async fn health(&self, record: &ConnectionRecord) -> Result<Health, ConnectionError> {
        let url = self.connection_url(record).await?;
        // Checked when the connection was created; the pool names any problem since.
        let mode = TlsSettings::of(url.as_str())
            .ok()
            .and_then(|settings| settings.mode())
            .unwrap_or(SslMode::Prefer);
        let started = Instant::now();
        let checked = async {
            let pool = PoolRegistry::global()
                .get(url.as_str())
                .map_err(|e| e.to_string())?;
            let mut connection = pool.acquire().await.map_err(|e| e.to_string())?;
            if let Ok(encrypted) = session_is_encrypted(&mut connection).await {
                return Ok(encrypted);
            }
            // A server without `pg_stat_ssl` (a Postgres-compatible one) still answers.
            sqlx::query("SELECT 1")
                .execute(&mut *connection)
                .await
                .map(|_| false)
                .map_err(|e| e.to_string())
        }
        .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let encrypted = checked.as_ref().is_ok_and(|encrypted| *encrypted);
        Ok(Health {
            reachable: checked.is_ok(),
            latency_ms,
            sslmode: mode.to_string(),
            encrypted,
            verified: encrypted && mode.verifies(),
            error: checked.err(),
        })
    }

    /// The connection's URL with its password put back. Never log or show it.
    pub async fn connection_url(&self, record: &ConnectionRecord) -> Result<Url, ConnectionError> {
        let stored = stored_url(record)?;
        Ok(self
            .secrets
            .with_password(&stored, record.secret_id.as_deref())
            .await?)
    }

    /// A source URI for one table of the connection.
    pub async fn table_uri(
        &self,
        record: &ConnectionRecord,
        table: &QualifiedName,
    ) -> Result<SourceUri, ConnectionError> {
        let mut url = self.connection_url(record).await?;
        url.query_pairs_mut().append_pair("table", &table.to_string());
        SourceUri::parse(url.as_str()).map_err(|e| ConnectionError::InvalidConfig(e.to_string()))
    }
}

/// The settings users see: host, port, database, user and sslmode; `password: "***"` when one is stored.
pub fn display_config(record: &ConnectionRecord) -> Value {
    let Ok(url) = stored_url(record)
        .and_then(|u| Url::parse(&u).map_err(|e| ConnectionError::InvalidConfig(e.to_string())))
    else {
        return Value::Null;
    };
    let mut shown = Map::new();
    shown.insert("host".into(), json!(url.host_str()));
    shown.insert("port".into(), json!(url.port().unwrap_or(5432)));
    shown.insert("database".into(), json!(url.path().trim_start_matches('/')));
    shown.insert("user".into(), json!(url.username()));
    if record.secret_id.is_some() {
        shown.insert("password".into(), json!("***"));
    }
    for (key, value) in url.query_pairs() {
        shown.insert(key.into_owned(), json!(value));
    }
    Value::Object(shown)
}

fn stored_url(record: &ConnectionRecord) -> Result<String, ConnectionError> {
    let config: Value = serde_json::from_str(&record.config_json)
        .map_err(|e| ConnectionError::InvalidConfig(format!("stored config is not JSON: {e}")))?;
    config["uri"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ConnectionError::InvalidConfig("stored config has no uri".into()))
}

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

/// A Postgres `config`: `{"uri": "postgres://…"}` or `{host, port?, database, user, password?,
/// sslmode?, sslrootcert?, sslcert?}` (certificates by the names the operator configured).
fn postgres_url(config: &Value) -> Result<Url, ConnectionError> {
    let invalid = |message: String| ConnectionError::InvalidConfig(message);
    let Some(fields) = config.as_object() else {
        return Err(invalid("config must be an object".into()));
    };
    if let Some(uri) = fields.get("uri") {
        if fields.len() > 1 {
            return Err(invalid(
                "give either uri or host/port/database/user/password/sslmode/sslrootcert/sslcert, not both"
                    .into(),
            ));
        }
        let uri = uri
            .as_str()
            .ok_or_else(|| invalid("uri must be a string".into()))?;
        let url = Url::parse(uri).map_err(|e| invalid(format!("{e} (in {})", redact_connection_url(uri))))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "expected postgres://user@host:port/database, got {}",
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
    let text = |name: &str, required: bool| -> Result<Option<String>, ConnectionError> {
        match fields.get(name) {
            None | Some(Value::Null) if required => Err(invalid(format!("{name} is required"))),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if required && s.is_empty() => Err(invalid(format!("{name} is empty"))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{name} must be a string"))),
        }
    };
    let port = match fields.get("port") {
        None | Some(Value::Null) => 5432,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(format!("port {n} is not a TCP port")))?,
        Some(_) => return Err(invalid("port must be a number".into())),
    };
    let host = text("host", true)?.unwrap_or_default();
    let database = text("database", true)?.unwrap_or_default();
    let user = text("user", true)?.unwrap_or_default();
    let mut url = Url::parse("postgres://localhost/").expect("static URL");
    url.set_host(Some(&host))
        .map_err(|e| invalid(format!("host {host:?}: {e}")))?;
    url.set_port(Some(port)).map_err(|()| invalid("port".into()))?;
    url.set_username(&user).map_err(|()| invalid("user".into()))?;
    url.path_segments_mut()
        .map_err(|()| invalid("database".into()))?
        .clear()
        .push(&database);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_become_urls() {
        let url = postgres_url(
            &json!({"host": "db.internal", "port": 6432, "database": "shop floor",
            "user": "app", "password": "p@ss/word", "sslmode": "verify-full",
            "sslrootcert": "prod-ca", "sslcert": "app"}),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "postgres://app:p%40ss%2Fword@db.internal:6432/shop%20floor\
             ?sslmode=verify-full&sslrootcert=prod-ca&sslcert=app"
        );
        let url = postgres_url(&json!({"uri": "postgresql://app@h/db"})).unwrap();
        assert_eq!(url.as_str(), "postgresql://app@h/db");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        for (config, message) in [
            (json!("postgres://h/db"), "must be an object"),
            (json!({"uri": "mysql://h/db"}), "expected postgres://"),
            (json!({"uri": "postgres://h/db?table=t"}), "remove the table"),
            (json!({"uri": "postgres://h/db", "host": "x"}), "not both"),
            (json!({"host": "h", "database": "d"}), "user is required"),
            (
                json!({"host": "h", "database": "d", "user": "u", "port": 70000}),
                "not a TCP port",
            ),
            (
                json!({"host": "h", "database": "d", "user": "u", "pasword": "x"}),
                "unknown field \"pasword\"",
            ),
            (json!({"uri": "postgres://u:secret@h:bad/db"}), "invalid port"),
        ] {
            let error = postgres_url(&config).unwrap_err().to_string();
            assert!(error.contains(message), "{config}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
