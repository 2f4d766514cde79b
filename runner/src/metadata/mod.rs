//! The metadata DB: SQLite by default, Postgres in clusters, one query layer over both (sqlx `Any`).
//!
//! Migrations live in `migrations/sqlite/` and `migrations/postgres/`; each is applied in a
//! transaction and recorded with its checksum, and an applied migration that was edited since
//! stops the runner with its name.

mod secrets;
mod sources;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Error as SqlxError};
use thiserror::Error;

pub use sources::{NewSource, SourceRecord};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("unsupported metadata database URL (expected sqlite://… or postgres://…)")]
    UnsupportedUrl,
    #[error("cannot open the metadata database: {0}")]
    Connect(#[source] SqlxError),
    #[error(
        "migration {version} ({description}) was edited after it was applied to this metadata database; \
         restore the original file or migrate the database by hand"
    )]
    EditedMigration { version: i64, description: String },
    #[error("cannot migrate the metadata database: {0}")]
    Migrate(#[source] MigrateError),
    #[error("{kind} {name:?} already exists")]
    Duplicate { kind: &'static str, name: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("metadata database error: {0}")]
    Database(#[from] SqlxError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The runner's metadata database. Only the runner touches it.
#[derive(Debug, Clone)]
pub struct MetadataDb {
    pool: AnyPool,
    backend: Backend,
}

impl MetadataDb {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, MetadataError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(MetadataError::UnsupportedUrl);
        };
        let max_connections = match backend {
            // One writer at a time either way; more connections only add lock waits.
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await
            .map_err(MetadataError::Connect)?;
        let db = Self { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), MetadataError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), MetadataError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await.map_err(|error| match error {
            MigrateError::VersionMismatch(version) => MetadataError::EditedMigration {
                version,
                description: migrator
                    .iter()
                    .find(|m| m.version == version)
                    .map(|m| m.description.to_string())
                    .unwrap_or_default(),
            },
            other => MetadataError::Migrate(other),
        })
    }
}

/// Sorts a failed insert into a duplicate name or a real error.
fn unique_violation(error: SqlxError, kind: &'static str, name: &str) -> MetadataError {
    match &error {
        SqlxError::Database(db) if db.is_unique_violation() => MetadataError::Duplicate {
            kind,
            name: name.to_string(),
        },
        _ => MetadataError::Database(error),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A new id: `prefix_` and 21 URL-safe random characters.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: [char; 62] = [
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j',
        'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'A', 'B', 'C', 'D',
        'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X',
        'Y', 'Z',
    ];
    format!("{prefix}_{}", nanoid::nanoid!(21, &ALPHABET))
}
