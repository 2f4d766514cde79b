//! The `tables` table: a connection's discovered tables, their columns, and their cache state.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};

use super::{MetadataDb, MetadataError, after, new_id, now};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TableRecord {
    pub id: String,
    pub connection_id: String,
    pub schema_name: String,
    pub table_name: String,
    #[serde(skip)]
    pub arrow_schema_json: String,
    pub discovered_at: String,
    pub cache_version: Option<String>,
    pub cache_url: Option<String>,
    pub last_sync: Option<String>,
    pub row_count: Option<i64>,
}

impl FromRow<'_, AnyRow> for TableRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            connection_id: row.try_get("connection_id")?,
            schema_name: row.try_get("schema_name")?,
            table_name: row.try_get("table_name")?,
            arrow_schema_json: row.try_get("arrow_schema_json")?,
            discovered_at: row.try_get("discovered_at")?,
            cache_version: row.try_get("cache_version")?,
            cache_url: row.try_get("cache_url")?,
            last_sync: row.try_get("last_sync")?,
            row_count: row.try_get("row_count")?,
        })
    }
}

/// A table found at the source.
#[derive(Debug, Clone)]
pub struct DiscoveredTable {
    pub schema_name: String,
    pub table_name: String,
    pub arrow_schema_json: String,
}

/// What a schema refresh changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableSync {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// A new cache version, ready to be served.
pub struct NewVersion<'a> {
    pub version: &'a str,
    pub url: &'a str,
    pub rows: i64,
}

const COLUMNS: &str = "id, connection_id, schema_name, table_name, arrow_schema_json, discovered_at, \
                       cache_version, cache_url, last_sync, row_count";

impl MetadataDb {
    /// Makes the connection's tables what discovery found: new ones added, changed columns
    /// updated, vanished ones removed with their cache queued for deletion. One transaction.
    pub async fn sync_tables(
        &self,
        connection_id: &str,
        discovered: &[DiscoveredTable],
        grace: Duration,
    ) -> Result<TableSync, MetadataError> {
        let mut tx = self.pool().begin().await?;
        // Writing first takes SQLite's write lock at once.
        sqlx::query("UPDATE connections SET updated_at = $1 WHERE id = $2")
            .bind(now())
            .bind(connection_id)
            .execute(&mut *tx)
            .await?;
        let existing: Vec<TableRecord> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM tables WHERE connection_id = $1"))
                .bind(connection_id)
                .fetch_all(&mut *tx)
                .await?;
        let mut existing: HashMap<(String, String), TableRecord> = existing
            .into_iter()
            .map(|t| ((t.schema_name.clone(), t.table_name.clone()), t))
            .collect();
        let mut sync = TableSync::default();
        for table in discovered {
            let key = (table.schema_name.clone(), table.table_name.clone());
            match existing.remove(&key) {
                Some(known) if known.arrow_schema_json == table.arrow_schema_json => sync.unchanged += 1,
                Some(known) => {
                    sqlx::query("UPDATE tables SET arrow_schema_json = $1, discovered_at = $2 WHERE id = $3")
                        .bind(&table.arrow_schema_json)
                        .bind(now())
                        .bind(&known.id)
                        .execute(&mut *tx)
                        .await?;
                    sync.changed += 1;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO tables (id, connection_id, schema_name, table_name, arrow_schema_json, \
                         discovered_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(new_id("tbl"))
                    .bind(connection_id)
                    .bind(&table.schema_name)
                    .bind(&table.table_name)
                    .bind(&table.arrow_schema_json)
                    .bind(now())
                    .execute(&mut *tx)
                    .await?;
                    sync.added += 1;
                }
            }
        }
        for gone in existing.into_values() {
            sqlx::query("DELETE FROM tables WHERE id = $1")
                .bind(&gone.id)
                .execute(&mut *tx)
                .await?;
            if let Some(url) = &gone.cache_url {
                Self::queue_deletion(&mut tx, url, "table gone at the source", grace).await?;
            }
            sync.removed += 1;
        }
        tx.commit().await?;
        Ok(sync)
    }

    /// Tables of one connection, or of all.
    pub async fn list_tables(&self, connection_id: Option<&str>) -> Result<Vec<TableRecord>, MetadataError> {
        let order = "ORDER BY connection_id, schema_name, table_name";
        let one = format!("SELECT {COLUMNS} FROM tables WHERE connection_id = $1 {order}");
        let all = format!("SELECT {COLUMNS} FROM tables {order}");
        let query = match connection_id {
            Some(id) => sqlx::query_as(&one).bind(id),
            None => sqlx::query_as(&all),
        };
        Ok(query.fetch_all(self.pool()).await?)
    }

    pub async fn table(
        &self,
        connection_id: &str,
        schema: &str,
        name: &str,
    ) -> Result<TableRecord, MetadataError> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM tables WHERE connection_id = $1 AND schema_name = $2 AND table_name = $3"
        ))
        .bind(connection_id)
        .bind(schema)
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| MetadataError::NotFound {
            kind: "table",
            name: format!("{schema}.{name}"),
        })
    }

    /// Takes the table's refresh lease unless another live refresh holds it.
    pub async fn take_refresh_lease(
        &self,
        table_id: &str,
        lease: &str,
        ttl: Duration,
    ) -> Result<bool, MetadataError> {
        let now = now();
        let taken = sqlx::query(
            "UPDATE tables SET refresh_lease = $1, refresh_lease_expires_at = $2 \
             WHERE id = $3 AND (refresh_lease IS NULL OR refresh_lease_expires_at < $4)",
        )
        .bind(lease)
        .bind(after(ttl))
        .bind(table_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    pub async fn release_refresh_lease(&self, table_id: &str, lease: &str) -> Result<(), MetadataError> {
        sqlx::query(
            "UPDATE tables SET refresh_lease = NULL, refresh_lease_expires_at = NULL \
             WHERE id = $1 AND refresh_lease = $2",
        )
        .bind(table_id)
        .bind(lease)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Points the table at its new cache version and queues the previous one for deletion, in one
    /// transaction, if `lease` still holds the table. Returns false (changing nothing) if not.
    pub async fn publish_version(
        &self,
        table_id: &str,
        lease: &str,
        version: NewVersion<'_>,
        grace: Duration,
    ) -> Result<bool, MetadataError> {
        let mut tx = self.pool().begin().await?;
        let Some(previous) = Self::lock_cache_url(&mut tx, table_id).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        let published = sqlx::query(
            "UPDATE tables SET cache_version = $1, cache_url = $2, last_sync = $3, row_count = $4, \
             refresh_lease = NULL, refresh_lease_expires_at = NULL \
             WHERE id = $5 AND refresh_lease = $6",
        )
        .bind(version.version)
        .bind(version.url)
        .bind(now())
        .bind(version.rows)
        .bind(table_id)
        .bind(lease)
        .execute(&mut *tx)
        .await?;
        if published.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(url) = previous.filter(|url| url != version.url) {
            Self::queue_deletion(&mut tx, &url, "replaced by a newer version", grace).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Stops serving the table's cache and queues its files for deletion; false if it had none.
    pub async fn purge_table_cache(&self, table_id: &str, grace: Duration) -> Result<bool, MetadataError> {
        let mut tx = self.pool().begin().await?;
        let Some(Some(url)) = Self::lock_cache_url(&mut tx, table_id).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query(
            "UPDATE tables SET cache_version = NULL, cache_url = NULL, last_sync = NULL, row_count = NULL \
             WHERE id = $1",
        )
        .bind(table_id)
        .execute(&mut *tx)
        .await?;
        Self::queue_deletion(&mut tx, &url, "cache purged", grace).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Locks the table's row for this transaction (a write first, so SQLite takes its write lock
    /// at once) and returns its current cache URL; `None` if the table does not exist.
    async fn lock_cache_url(
        tx: &mut Transaction<'_, Any>,
        table_id: &str,
    ) -> Result<Option<Option<String>>, sqlx::Error> {
        sqlx::query_scalar("UPDATE tables SET cache_url = cache_url WHERE id = $1 RETURNING cache_url")
            .bind(table_id)
            .fetch_optional(&mut **tx)
            .await
    }
}
