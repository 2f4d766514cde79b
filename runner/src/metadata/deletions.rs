//! The `pending_deletions` table: cache versions no longer served, deleted after a grace period
//! so that queries still reading them can finish.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};

use super::{MetadataDb, MetadataError, after, new_id, now};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeletion {
    pub id: String,
    pub url: String,
    pub attempts: i64,
}

impl FromRow<'_, AnyRow> for PendingDeletion {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            url: row.try_get("url")?,
            attempts: row.try_get("attempts")?,
        })
    }
}

impl MetadataDb {
    pub(crate) async fn queue_deletion(
        tx: &mut Transaction<'_, Any>,
        url: &str,
        reason: &str,
        grace: Duration,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO pending_deletions (id, url, reason, delete_after) VALUES ($1, $2, $3, $4)")
            .bind(new_id("del"))
            .bind(url)
            .bind(reason)
            .bind(after(grace))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Queues `url` (e.g. a failed refresh's partial files) for deletion after `grace`.
    pub async fn queue_deletion_now(
        &self,
        url: &str,
        reason: &str,
        grace: Duration,
    ) -> Result<(), MetadataError> {
        let mut tx = self.pool().begin().await?;
        Self::queue_deletion(&mut tx, url, reason, grace).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletions whose grace period is over, oldest first.
    pub async fn due_deletions(&self, limit: i64) -> Result<Vec<PendingDeletion>, MetadataError> {
        Ok(sqlx::query_as(
            "SELECT id, url, attempts FROM pending_deletions WHERE delete_after <= $1 \
             ORDER BY delete_after LIMIT $2",
        )
        .bind(now())
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn deletion_done(&self, id: &str) -> Result<(), MetadataError> {
        sqlx::query("DELETE FROM pending_deletions WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub async fn deletion_failed(
        &self,
        id: &str,
        error: &str,
        retry_in: Duration,
    ) -> Result<(), MetadataError> {
        sqlx::query(
            "UPDATE pending_deletions SET attempts = attempts + 1, last_error = $1, delete_after = $2 \
             WHERE id = $3",
        )
        .bind(error)
        .bind(after(retry_in))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// How many deletions are queued (due or not).
    pub async fn pending_deletion_count(&self) -> Result<i64, MetadataError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM pending_deletions")
            .fetch_one(self.pool())
            .await?)
    }
}
