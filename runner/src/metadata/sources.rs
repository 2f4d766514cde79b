//! The `sources` table: named sources that previews and recipes read.

use kalla_core::seal::Sealed;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{MetadataDb, MetadataError, RowInsert, new_id, now};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRecord {
    pub id: String,
    pub alias: String,
    /// The URI without its password.
    pub uri: String,
    pub source_type: String,
    #[serde(skip)]
    pub secret_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl FromRow<'_, AnyRow> for SourceRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            alias: row.try_get("alias")?,
            uri: row.try_get("uri")?,
            source_type: row.try_get("source_type")?,
            secret_id: row.try_get("secret_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A source to register; `secret` is the sealed password taken out of `uri`, with the id it is sealed for.
pub struct NewSource<'a> {
    pub alias: &'a str,
    pub uri: &'a str,
    pub source_type: &'a str,
    pub secret: Option<(String, Sealed)>,
}

const COLUMNS: &str = "id, alias, uri, source_type, secret_id, created_at, updated_at";

impl MetadataDb {
    /// Stores the source and its secret in one transaction.
    pub async fn insert_source(&self, source: NewSource<'_>) -> Result<SourceRecord, MetadataError> {
        let now = now();
        let record = SourceRecord {
            id: new_id("src"),
            alias: source.alias.to_string(),
            uri: source.uri.to_string(),
            source_type: source.source_type.to_string(),
            secret_id: source.secret.as_ref().map(|(id, _)| id.clone()),
            created_at: now.clone(),
            updated_at: now,
        };
        self.insert_with_secret(RowInsert {
            table: "sources",
            columns: COLUMNS,
            values: vec![
                Some(record.id.as_str()),
                Some(record.alias.as_str()),
                Some(record.uri.as_str()),
                Some(record.source_type.as_str()),
                record.secret_id.as_deref(),
                Some(record.created_at.as_str()),
                Some(record.updated_at.as_str()),
            ],
            secret: source.secret.as_ref(),
            kind: "source",
            name: source.alias,
        })
        .await?;
        Ok(record)
    }

    pub async fn list_sources(&self) -> Result<Vec<SourceRecord>, MetadataError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM sources ORDER BY alias"))
                .fetch_all(self.pool())
                .await?,
        )
    }

    pub async fn source(&self, alias: &str) -> Result<SourceRecord, MetadataError> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM sources WHERE alias = $1"))
            .bind(alias)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| MetadataError::NotFound {
                kind: "source",
                name: alias.to_string(),
            })
    }

    /// Deletes the source and its secret in one transaction.
    pub async fn delete_source(&self, alias: &str) -> Result<(), MetadataError> {
        let mut tx = self.pool().begin().await?;
        // Writing first takes SQLite's write lock at once (a read-then-write transaction could
        // fail to upgrade its lock without waiting).
        let deleted: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM sources WHERE alias = $1 RETURNING secret_id")
                .bind(alias)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(secret_id) = deleted else {
            tx.rollback().await?;
            return Err(MetadataError::NotFound {
                kind: "source",
                name: alias.to_string(),
            });
        };
        if let Some(secret_id) = secret_id {
            Self::delete_secret(&mut tx, &secret_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
