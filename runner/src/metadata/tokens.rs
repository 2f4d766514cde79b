//! The `api_tokens` table: named tokens, stored as the SHA-256 of their value, with a role, an
//! optional expiry and a revocation time.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{MetadataDb, MetadataError, after, new_id, now, unique_violation};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub value_sha256: String,
    /// The token that made this one.
    pub created_by: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl FromRow<'_, AnyRow> for TokenRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            value_sha256: row.try_get("value_sha256")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    }
}

/// A token to store.
pub struct NewToken<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub value_sha256: &'a str,
    pub created_by: &'a str,
    pub expires_in: Option<std::time::Duration>,
}

const COLUMNS: &str =
    "id, name, role, value_sha256, created_by, created_at, expires_at, revoked_at, last_used_at";

impl MetadataDb {
    pub async fn insert_token(&self, new: NewToken<'_>) -> Result<TokenRecord, MetadataError> {
        let record = TokenRecord {
            id: new_id("tok"),
            name: new.name.to_string(),
            role: new.role.to_string(),
            value_sha256: new.value_sha256.to_string(),
            created_by: new.created_by.to_string(),
            created_at: now(),
            expires_at: new.expires_in.map(after),
            revoked_at: None,
            last_used_at: None,
        };
        sqlx::query(&format!(
            "INSERT INTO api_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)"
        ))
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.role)
        .bind(&record.value_sha256)
        .bind(&record.created_by)
        .bind(&record.created_at)
        .bind(record.expires_at.as_deref())
        .execute(self.pool())
        .await
        .map_err(|e| unique_violation(e, "token", new.name))?;
        Ok(record)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, MetadataError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_tokens ORDER BY name"))
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// The token whose value hashes to `value_sha256`, revoked and expired ones included.
    pub async fn token_by_hash(&self, value_sha256: &str) -> Result<Option<TokenRecord>, MetadataError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE value_sha256 = $1"
        ))
        .bind(value_sha256)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Marks the token revoked (once; revoking again changes nothing).
    pub async fn revoke_token(&self, name: &str) -> Result<TokenRecord, MetadataError> {
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(name)
            .execute(self.pool())
            .await?;
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_tokens WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| MetadataError::NotFound {
                kind: "token",
                name: name.to_string(),
            })
    }

    /// Records that the token was used now.
    pub async fn token_used(&self, id: &str) -> Result<(), MetadataError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
