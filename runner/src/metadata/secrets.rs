//! Sealed secrets. This layer stores and returns ciphertext only; sealing happens in [`crate::secrets`].

use kalla_core::seal::Sealed;
use sqlx::{Any, Transaction};

use super::{MetadataDb, MetadataError, new_id, now};

impl MetadataDb {
    pub(crate) async fn insert_secret(
        tx: &mut Transaction<'_, Any>,
        id: &str,
        sealed: &Sealed,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO secrets (id, sealed, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(sealed.as_str())
            .bind(now())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn secret(&self, id: &str) -> Result<Sealed, MetadataError> {
        let sealed: Option<String> = sqlx::query_scalar("SELECT sealed FROM secrets WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        sealed
            .map(Sealed::from_stored)
            .ok_or_else(|| MetadataError::NotFound {
                kind: "secret",
                name: id.to_string(),
            })
    }

    pub(crate) async fn delete_secret(tx: &mut Transaction<'_, Any>, id: &str) -> Result<(), MetadataError> {
        sqlx::query("DELETE FROM secrets WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub fn new_secret_id() -> String {
        new_id("secr")
    }
}
