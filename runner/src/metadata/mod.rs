//! The metadata DB: SQLite by default, Postgres in clusters, one query layer over both (sqlx `Any`).
//!
//! Migrations live in `migrations/sqlite/` and `migrations/postgres/`; each is applied in a
//! transaction and recorded with its checksum, and an applied migration that was edited since
//! stops the runner with its name.

mod audit;
mod deletions;
mod idempotency;
mod jobs;
mod open_items;
mod recipes;
mod registrations;
mod schedules;
mod secrets;
mod tables;
mod tokens;

use std::time::Duration;

use kalla_core::seal::Sealed;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Any, AnyPool, Error as SqlxError, Transaction};
use thiserror::Error;
use tokio::time::Instant;

pub use audit::{AuditEntry, AuditFilter, NewAuditEntry};
pub use deletions::PendingDeletion;
pub use idempotency::Claim;
pub use jobs::{JobEnd, JobFilter, JobRecord, JobStatus, Lease, NewJob};
pub use open_items::{Carried, CarriedForward, CarryCounts, CarryRun, CarryStart, OpenItemRecord, SeenItem};
pub use recipes::RecipeRecord;
pub use registrations::{By, Kind, NewRegistration, Registration, SecretRef};
pub use schedules::{NewSchedule, ScheduleRecord, TickRecord};
pub use secrets::SecretRecord;
pub use tables::{DiscoveredTable, NewVersion, TableRecord, TableSync};
pub use tokens::{NewToken, TokenRecord};

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
    #[error("{kind} {name:?} is used by {users} source(s) or connection(s); point them at another first")]
    InUse {
        kind: &'static str,
        name: String,
        users: i64,
    },
    #[error("metadata database error: {0}")]
    Database(#[from] SqlxError),
}

/// Why a pool that kept retrying `url` gave up: the pool says only that it timed out, one more
/// connection attempt says what stood in the way (refused, unknown host, bad password, …).
async fn why_unreachable(url: &str) -> SqlxError {
    use sqlx::Connection;
    match sqlx::AnyConnection::connect(url).await {
        Err(error) => error,
        // It answers now: the pool's time-out is all there is to say.
        Ok(connection) => {
            let _ = connection.close().await;
            SqlxError::PoolTimedOut
        }
    }
}

impl MetadataError {
    /// Whether the database could not be reached or went away mid-statement (a restart, a network
    /// fault), as opposed to refusing the statement: the same statement may succeed later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect(error) | Self::Database(error) => match error {
                SqlxError::Io(_) | SqlxError::PoolTimedOut | SqlxError::Tls(_) | SqlxError::Protocol(_) => {
                    true
                }
                // Postgres's connection_exception (08) and operator_intervention (57P: shutdown,
                // starting up) classes.
                SqlxError::Database(error) => error
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Runs `statement` again, with backoff, while the metadata DB is unavailable and `patience` has
/// not run out; for records that must not be lost to a database restart (how a job ended).
pub async fn retry_while_unavailable<T, F, Fut>(
    patience: Duration,
    mut statement: F,
) -> Result<T, MetadataError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, MetadataError>>,
{
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_millis(250);
    loop {
        match statement().await {
            Err(error) if error.is_unavailable() && Instant::now() + wait < deadline => {
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "the metadata database is unavailable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            outcome => return outcome,
        }
    }
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
        let pool = match AnyPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await
        {
            Ok(pool) => pool,
            Err(SqlxError::PoolTimedOut) => return Err(MetadataError::Connect(why_unreachable(url).await)),
            Err(error) => return Err(MetadataError::Connect(error)),
        };
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

/// One row of text values to insert, after its sealed secret if it has one.
struct RowInsert<'a> {
    table: &'static str,
    columns: &'a str,
    values: Vec<Option<&'a str>>,
    secret: Option<&'a (String, Sealed)>,
    /// What a unique violation is reported as: a duplicate `kind` named `name`.
    kind: &'static str,
    name: &'a str,
}

impl MetadataDb {
    /// Inserts the row and its secret in one transaction.
    async fn insert_with_secret(&self, row: RowInsert<'_>) -> Result<(), MetadataError> {
        let mut tx = self.pool().begin().await?;
        let inserted = Self::insert_rows(&mut tx, &row).await;
        if let Err(error) = inserted {
            // Roll back now rather than when the connection is next used: until then SQLite
            // would keep this transaction's write lock and refuse the next writer.
            tx.rollback().await?;
            return Err(unique_violation(error, row.kind, row.name));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_rows(tx: &mut Transaction<'_, Any>, row: &RowInsert<'_>) -> Result<(), SqlxError> {
        if let Some((id, sealed)) = row.secret {
            Self::insert_secret(tx, id, sealed).await?;
        }
        let placeholders: Vec<String> = (1..=row.values.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            row.table,
            row.columns,
            placeholders.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for value in &row.values {
            insert = insert.bind(*value);
        }
        insert.execute(&mut **tx).await?;
        Ok(())
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

/// The time now, as stored: compare stored times with it as text.
pub fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// The time `delay` from now, as stored.
pub fn after(delay: std::time::Duration) -> String {
    // Capped so the result keeps the fixed width of a four-digit year.
    let cap = chrono::Duration::days(365 * 100);
    let delay = chrono::Duration::from_std(delay).unwrap_or(cap).min(cap);
    timestamp(chrono::Utc::now() + delay)
}

/// The time `delay` ago, as stored.
pub fn ago(delay: std::time::Duration) -> String {
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(365 * 100));
    timestamp(chrono::Utc::now() - delay)
}

/// A time as stored: fixed width, so text comparison is time order in both backends.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn refused() -> MetadataError {
        MetadataError::Database(SqlxError::Io(std::io::ErrorKind::ConnectionRefused.into()))
    }

    #[tokio::test]
    async fn statements_are_retried_while_the_database_is_away_and_no_longer() {
        let calls = Cell::new(0);
        let outcome = retry_while_unavailable(Duration::from_secs(60), || {
            calls.set(calls.get() + 1);
            let answer = if calls.get() < 4 {
                Err(refused())
            } else {
                Ok(calls.get())
            };
            async move { answer }
        })
        .await;
        assert_eq!(outcome.unwrap(), 4);

        calls.set(0);
        let outcome = retry_while_unavailable(Duration::from_secs(60), || {
            calls.set(calls.get() + 1);
            async {
                Err::<(), _>(MetadataError::NotFound {
                    kind: "job",
                    name: "job_x".into(),
                })
            }
        })
        .await;
        assert!(matches!(outcome, Err(MetadataError::NotFound { .. })));
        assert_eq!(calls.get(), 1, "a refused statement is not retried");

        calls.set(0);
        let outcome = retry_while_unavailable(Duration::from_secs(3), || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(refused()) }
        })
        .await;
        assert!(outcome.is_err_and(|e| e.is_unavailable()));
        assert!(
            (2..=5).contains(&calls.get()),
            "gives up once patience runs out: {}",
            calls.get()
        );
    }
}
