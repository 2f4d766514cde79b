//! Sealed secrets: named ones (made through the API, referred to by name) and the unnamed ones
//! taken out of registered URIs. This layer stores and returns ciphertext only; sealing happens
//! in [`crate::secrets`].

use kalla_core::seal::Sealed;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{MetadataDb, MetadataError, new_id, now, unique_violation};

/// A named secret as it is listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    /// Sources and connections that use it.
    pub used_by: i64,
}

const SECRET_COLUMNS: &str = "s.id, s.name, s.created_at, COALESCE(s.updated_at, s.created_at), \
     (SELECT count(*) FROM sources WHERE secret_id = s.id) \
     + (SELECT count(*) FROM connections WHERE secret_id = s.id)";

impl SecretRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            created_at: row.try_get(2)?,
            updated_at: row.try_get(3)?,
            used_by: row.try_get(4)?,
        })
    }
}

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
        sealed.map(Sealed::from_stored).ok_or_else(|| not_found(id))
    }

    /// Stores `sealed` (sealed for `id`) as the secret named `name`.
    pub async fn create_named_secret(
        &self,
        id: &str,
        name: &str,
        sealed: &Sealed,
    ) -> Result<SecretRecord, MetadataError> {
        let created = now();
        sqlx::query(
            "INSERT INTO secrets (id, name, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id)
        .bind(name)
        .bind(sealed.as_str())
        .bind(&created)
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "secret", name))?;
        Ok(SecretRecord {
            id: id.to_string(),
            name: name.to_string(),
            created_at: created.clone(),
            updated_at: created,
            used_by: 0,
        })
    }

    pub async fn named_secrets(&self) -> Result<Vec<SecretRecord>, MetadataError> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets s WHERE s.name IS NOT NULL ORDER BY s.name");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(SecretRecord::from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn named_secret(&self, name: &str) -> Result<SecretRecord, MetadataError> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets s WHERE s.name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| not_found(name))?;
        Ok(SecretRecord::from_row(&row)?)
    }

    /// Replaces the secret's value with `sealed`, sealed for the same id.
    pub async fn update_secret(&self, id: &str, sealed: &Sealed) -> Result<(), MetadataError> {
        let updated = sqlx::query("UPDATE secrets SET sealed = $1, updated_at = $2 WHERE id = $3")
            .bind(sealed.as_str())
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        if updated.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// Deletes the named secret, unless a source or connection still uses it.
    pub async fn delete_named_secret(&self, name: &str) -> Result<(), MetadataError> {
        let mut tx = self.pool().begin().await?;
        // Writing first takes SQLite's write lock at once (the row is left as it was).
        let id: Option<String> =
            sqlx::query_scalar("UPDATE secrets SET name = name WHERE name = $1 RETURNING id")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else {
            tx.rollback().await?;
            return Err(not_found(name));
        };
        let users = Self::secret_users(&mut tx, &id).await?;
        if users > 0 {
            tx.rollback().await?;
            return Err(MetadataError::InUse {
                kind: "secret",
                name: name.to_string(),
                users,
            });
        }
        sqlx::query("DELETE FROM secrets WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every stored secret (named or not) and its sealed value, to seal them again under a
    /// rotated key.
    pub async fn sealed_secrets(&self) -> Result<Vec<(String, Sealed)>, MetadataError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, sealed FROM secrets ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, sealed)| (id, Sealed::from_stored(sealed)))
            .collect())
    }

    /// Replaces `old` with `new` unless the value changed meanwhile (then it is left alone:
    /// whoever changed it sealed it under the current key). Whether it was replaced.
    pub async fn reseal_secret(&self, id: &str, old: &Sealed, new: &Sealed) -> Result<bool, MetadataError> {
        let updated =
            sqlx::query("UPDATE secrets SET sealed = $1, updated_at = $2 WHERE id = $3 AND sealed = $4")
                .bind(new.as_str())
                .bind(now())
                .bind(id)
                .bind(old.as_str())
                .execute(self.pool())
                .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Deletes the secret if it has no name and no record uses it any more.
    pub(crate) async fn delete_if_orphaned(
        tx: &mut Transaction<'_, Any>,
        id: &str,
    ) -> Result<(), MetadataError> {
        if Self::secret_users(tx, id).await? == 0 {
            sqlx::query("DELETE FROM secrets WHERE id = $1 AND name IS NULL")
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn secret_users(tx: &mut Transaction<'_, Any>, id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM connections WHERE secret_id = $1) \
                  + (SELECT count(*) FROM sources WHERE secret_id = $1)",
        )
        .bind(id)
        .fetch_one(&mut **tx)
        .await
    }

    pub fn new_secret_id() -> String {
        new_id("secr")
    }
}

fn not_found(name: &str) -> MetadataError {
    MetadataError::NotFound {
        kind: "secret",
        name: name.to_string(),
    }
}
