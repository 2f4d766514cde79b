//! Connections: databases registered once by name, the discovery of their tables, and whether
//! they can be reached.

use std::time::Instant;

use kalla_core::source::EngineError;
pub use kalla_core::source::{ColumnInfo, Health};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use url::Url;

use crate::metadata::{DiscoveredTable, Kind, MetadataDb, MetadataError, Registration, TableSync};
use crate::registry::{Located, Registry, RegistryError, engine_named};

#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("the connection's database cannot be read: {0}")]
    Unreachable(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
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
}

impl Connections {
    pub fn new(db: MetadataDb, registry: Registry) -> Self {
        Self { db, registry }
    }

    /// Registers the database `config` describes as `name`, then discovers its tables.
    pub async fn create(
        &self,
        name: &str,
        source_type: &str,
        config: &Value,
        secret: Option<&str>,
    ) -> Result<(Registration, Discovery), ConnectionError> {
        let engine = engine_named(Kind::Connection, source_type)?;
        let url = engine
            .database()
            .expect("engine_named gives connections only engines serving databases")
            .url(config)
            .await
            .map_err(|e| match e {
                EngineError::NotAllowed(message) => ConnectionError::NotAllowed(message),
                other => ConnectionError::InvalidConfig(other.to_string()),
            })?;
        let record = self
            .registry
            .register(Kind::Connection, name, engine.as_ref(), url, secret)
            .await?;
        let discovery = self.discover(&record).await;
        Ok((record, discovery))
    }

    /// Reads the database's tables and makes the `tables` rows match them.
    pub async fn discover(&self, record: &Registration) -> Discovery {
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

    async fn try_discover(&self, record: &Registration) -> Result<(usize, TableSync), ConnectionError> {
        let database = self.registry.open(record).await?;
        let discovered: Vec<DiscoveredTable> = database_of(&database)
            .discover(&database.location)
            .await
            .map_err(|e| ConnectionError::Unreachable(e.to_string()))?
            .into_iter()
            .map(|found| DiscoveredTable {
                schema_name: found.table.schema.to_string(),
                table_name: found.table.name.to_string(),
                arrow_schema_json: serde_json::to_string(&found.columns).expect("columns serialize"),
            })
            .collect();
        let changes = self
            .db
            .sync_tables(&record.id, &discovered, self.registry.grace())
            .await?;
        Ok((discovered.len(), changes))
    }

    pub async fn health(&self, record: &Registration) -> Result<Health, ConnectionError> {
        let database = self.registry.open(record).await?;
        Ok(database_of(&database).health(&database.location).await)
    }
}

/// The database side of an opened connection, whose engine [`engine_named`] let in.
fn database_of(located: &Located) -> &dyn kalla_core::source::Database {
    located
        .engine
        .database()
        .expect("connections are registered only with engines serving databases")
}

/// The settings users see, as the connection's engine shows them; `password: "***"` when one
/// is stored.
pub fn shown_config(record: &Registration) -> Value {
    let (Ok(engine), Ok(url)) = (
        engine_named(Kind::Connection, &record.engine),
        Url::parse(&record.location),
    ) else {
        return Value::Null;
    };
    match engine.database() {
        Some(database) => database.shown_config(&url, record.secret_id.is_some()),
        None => Value::Null,
    }
}
