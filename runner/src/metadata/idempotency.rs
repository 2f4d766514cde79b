//! The `idempotency_keys` table: which resource the first request with an `Idempotency-Key`
//! made, so that the same request sent again gets it instead of making another.

use std::time::Duration;

use super::{MetadataDb, MetadataError, ago, now};

/// How long a key is kept.
const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// A claim this old whose request made nothing was left by a runner that stopped meanwhile:
/// the next request with its key takes it over.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// What a request's claim of its key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: make the resource, then [`MetadataDb::settle_idempotency_key`].
    Claimed,
    /// A request with the same key and body made this resource.
    Made(String),
    /// A request with the same key and body is being served.
    InFlight,
    /// The key was used with another request.
    OtherRequest,
}

impl MetadataDb {
    /// Claims `key` on `route` for a request whose route and body hash to `request_sha256`.
    pub async fn claim_idempotency_key(
        &self,
        route: &str,
        key: &str,
        request_sha256: &str,
    ) -> Result<Claim, MetadataError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(ago(KEPT_FOR))
            .execute(self.pool())
            .await?;
        // A claim removed between the insert and the select (its request failed) frees the key:
        // try again.
        let (held_sha256, resource_id, created_at) = loop {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (route, idempotency_key, request_sha256, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (route, idempotency_key) DO NOTHING",
            )
            .bind(route)
            .bind(key)
            .bind(request_sha256)
            .bind(now())
            .execute(self.pool())
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(Claim::Claimed);
            }
            let held: Option<(String, Option<String>, String)> = sqlx::query_as(
                "SELECT request_sha256, resource_id, created_at FROM idempotency_keys \
                 WHERE route = $1 AND idempotency_key = $2",
            )
            .bind(route)
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
            if let Some(held) = held {
                break held;
            }
        };
        if held_sha256 != request_sha256 {
            return Ok(Claim::OtherRequest);
        }
        if let Some(id) = resource_id {
            return Ok(Claim::Made(id));
        }
        let taken_over = sqlx::query(
            "UPDATE idempotency_keys SET created_at = $1 \
             WHERE route = $2 AND idempotency_key = $3 AND resource_id IS NULL AND created_at = $4 AND created_at < $5",
        )
        .bind(now())
        .bind(route)
        .bind(key)
        .bind(created_at.as_str())
        .bind(ago(ABANDONED_AFTER))
        .execute(self.pool())
        .await?;
        Ok(match taken_over.rows_affected() {
            1 => Claim::Claimed,
            _ => Claim::InFlight,
        })
    }

    /// Records the resource the request that claimed `key` made.
    pub async fn settle_idempotency_key(
        &self,
        route: &str,
        key: &str,
        resource_id: &str,
    ) -> Result<(), MetadataError> {
        sqlx::query("UPDATE idempotency_keys SET resource_id = $1 WHERE route = $2 AND idempotency_key = $3")
            .bind(resource_id)
            .bind(route)
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Frees `key` after the request that claimed it failed, so that it can be sent again.
    pub async fn release_idempotency_key(&self, route: &str, key: &str) -> Result<(), MetadataError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE route = $1 AND idempotency_key = $2 AND resource_id IS NULL",
        )
        .bind(route)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
