//! The `connections` table: databases registered once by name, identified by `conn_…` ids only.

use kalla_core::seal::Sealed;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};

use super::{MetadataDb, MetadataError, RowInsert, new_id, now};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionRecord {
    pub id: String,
    pub name: String,
    pub source_type: String,
    /// The settings without their password, as JSON.
    #[serde(skip)]
    pub config_json: String,
    #[serde(skip)]
    pub secret_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl FromRow<'_, AnyRow> for ConnectionRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            source_type: row.try_get("source_type")?,
            config_json: row.try_get("config_json")?,
            secret_id: row.try_get("secret_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A connection to store; `secret` is its sealed password with the id it is sealed for.
pub struct NewConnection<'a> {
    pub name: &'a str,
    pub source_type: &'a str,
    pub config_json: &'a str,
    pub secret: Option<(String, Sealed)>,
}

const COLUMNS: &str = "id, name, source_type, config_json, secret_id, created_at, updated_at";

impl MetadataDb {
    /// Stores the connection and its secret in one transaction.
    pub async fn insert_connection(&self, new: NewConnection<'_>) -> Result<ConnectionRecord, MetadataError> {
        let now = now();
        let record = ConnectionRecord {
            id: new_id("conn"),
            name: new.name.to_string(),
            source_type: new.source_type.to_string(),
            config_json: new.config_json.to_string(),
            secret_id: new.secret.as_ref().map(|(id, _)| id.clone()),
            created_at: now.clone(),
            updated_at: now,
        };
        self.insert_with_secret(RowInsert {
            table: "connections",
            columns: COLUMNS,
            values: vec![
                Some(record.id.as_str()),
                Some(record.name.as_str()),
                Some(record.source_type.as_str()),
                Some(record.config_json.as_str()),
                record.secret_id.as_deref(),
                Some(record.created_at.as_str()),
                Some(record.updated_at.as_str()),
            ],
            secret: new.secret.as_ref(),
            kind: "connection",
            name: new.name,
        })
        .await?;
        Ok(record)
    }

    pub async fn list_connections(&self) -> Result<Vec<ConnectionRecord>, MetadataError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM connections ORDER BY name"))
                .fetch_all(self.pool())
                .await?,
        )
    }

    pub async fn connection(&self, id: &str) -> Result<ConnectionRecord, MetadataError> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM connections WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| MetadataError::NotFound {
                kind: "connection",
                name: id.to_string(),
            })
    }

    pub async fn connection_by_name(&self, name: &str) -> Result<Option<ConnectionRecord>, MetadataError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM connections WHERE name = $1"))
                .bind(name)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Deletes the connection, its tables, and its secret unless another row still uses it; the
    /// cache versions it served are queued for deletion. One transaction.
    pub async fn delete_connection(&self, id: &str, grace: std::time::Duration) -> Result<(), MetadataError> {
        let mut tx = self.pool().begin().await?;
        // Tables first: the cascade from `connections` would take their cache URLs with it.
        let cached: Vec<Option<String>> =
            sqlx::query_scalar("DELETE FROM tables WHERE connection_id = $1 RETURNING cache_url")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        let deleted: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM connections WHERE id = $1 RETURNING secret_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(secret_id) = deleted else {
            tx.rollback().await?;
            return Err(MetadataError::NotFound {
                kind: "connection",
                name: id.to_string(),
            });
        };
        for url in cached.into_iter().flatten() {
            Self::queue_deletion(&mut tx, &url, "connection deleted", grace).await?;
        }
        if let Some(secret_id) = secret_id
            && !Self::secret_in_use(&mut tx, &secret_id).await?
        {
            Self::delete_secret(&mut tx, &secret_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn secret_in_use(tx: &mut Transaction<'_, Any>, secret_id: &str) -> Result<bool, sqlx::Error> {
        let users: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM connections WHERE secret_id = $1) \
                  + (SELECT count(*) FROM sources WHERE secret_id = $1)",
        )
        .bind(secret_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(users > 0)
    }
}
