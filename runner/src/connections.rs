//! Connections: databases registered once by name, the discovery of their tables, and whether
//! they can be reached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kalla_core::ident::QualifiedName;
pub use kalla_core::source::{ColumnInfo, Health};
use kalla_core::source::{Database, Engine, Engines};
use serde::Serialize;
use serde_json::{Value, json};
use thiserror::Error;
use url::Url;

use crate::metadata::{
    ConnectionRecord, DiscoveredTable, MetadataDb, MetadataError, NewConnection, TableSync,
};
use crate::registry::{Located, MAX_NAME_LEN, Registry, is_identifier, one_of};
use crate::secrets::SecretError;

#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error(
        "invalid connection name {0:?}: a name starts with a letter or underscore, has only ASCII letters, \
         digits and underscores, and is at most {MAX_NAME_LEN} characters long"
    )]
    InvalidName(String),
    #[error("unknown source_type {given:?}: connections support {supported}")]
    UnknownType { given: String, supported: String },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("the connection's database cannot be read: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Secret(#[from] SecretError),
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

#[derive(Clone)]
pub struct Connections {
    db: MetadataDb,
    registry: Registry,
    grace: Duration,
}

impl Connections {
    /// `grace`: how long replaced cache versions stay readable before they are deleted.
    pub fn new(db: MetadataDb, registry: Registry, grace: Duration) -> Self {
        Self { db, registry, grace }
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
        let engine = database_engine(source_type)?;
        let url = database(&engine)
            .url(config)
            .map_err(|e| ConnectionError::InvalidConfig(e.to_string()))?;
        let sealing = self.registry.seal(url);
        let config_json = json!({"uri": sealing.stored.as_str()}).to_string();
        let record = self
            .db
            .insert_connection(NewConnection {
                name,
                source_type: engine.name(),
                config_json: &config_json,
                secret: sealing.secret,
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
        let database_at = self.open(record).await?;
        let discovered: Vec<DiscoveredTable> = database(&database_at.engine)
            .discover(&database_at.location)
            .await
            .map_err(|e| ConnectionError::Unreachable(e.to_string()))?
            .into_iter()
            .map(|found| DiscoveredTable {
                schema_name: found.table.schema.to_string(),
                table_name: found.table.name.to_string(),
                arrow_schema_json: serde_json::to_string(&found.columns).expect("columns serialize"),
            })
            .collect();
        let changes = self.db.sync_tables(&record.id, &discovered, self.grace).await?;
        Ok((discovered.len(), changes))
    }

    pub async fn health(&self, record: &ConnectionRecord) -> Result<Health, ConnectionError> {
        let database_at = self.open(record).await?;
        Ok(database(&database_at.engine).health(&database_at.location).await)
    }

    /// One table of the connection's database, and the engine that reads it.
    pub async fn table_location(
        &self,
        record: &ConnectionRecord,
        table: &QualifiedName,
    ) -> Result<Located, ConnectionError> {
        let database_at = self.open(record).await?;
        let location = database(&database_at.engine).table_location(&database_at.location, table);
        Ok(Located {
            engine: database_at.engine,
            location,
        })
    }

    /// The connection's database, password put back, and its engine.
    async fn open(&self, record: &ConnectionRecord) -> Result<Located, ConnectionError> {
        let engine = database_engine(&record.source_type)?;
        let stored = stored_url(record)?;
        Ok(self
            .registry
            .open(engine, &stored, record.secret_id.as_deref())
            .await?)
    }
}

/// The engine named `source_type`, if it serves whole databases.
fn database_engine(source_type: &str) -> Result<Arc<dyn Engine>, ConnectionError> {
    Engines::global()
        .get(source_type)
        .filter(|engine| engine.database().is_some())
        .ok_or_else(|| ConnectionError::UnknownType {
            given: source_type.to_string(),
            supported: one_of(&Engines::global().names(true)),
        })
}

/// The database side of an engine [`database_engine`] returned.
fn database(engine: &Arc<dyn Engine>) -> &dyn Database {
    engine
        .database()
        .expect("database_engine returns only engines serving databases")
}

/// The settings users see, as the connection's engine shows them; `password: "***"` when one
/// is stored.
pub fn display_config(record: &ConnectionRecord) -> Value {
    let (Ok(engine), Ok(stored)) = (database_engine(&record.source_type), stored_url(record)) else {
        return Value::Null;
    };
    match Url::parse(&stored) {
        Ok(url) => database(&engine).shown_config(&url, record.secret_id.is_some()),
        Err(_) => Value::Null,
    }
}

fn stored_url(record: &ConnectionRecord) -> Result<String, ConnectionError> {
    let config: Value = serde_json::from_str(&record.config_json)
        .map_err(|e| ConnectionError::InvalidConfig(format!("stored config is not JSON: {e}")))?;
    config["uri"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ConnectionError::InvalidConfig("stored config has no uri".into()))
}
