//! The `audit_log` table: who changed what, downloaded which results, or was refused, and when.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{MetadataDb, MetadataError, new_id, now};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    /// The token's name; `null` when the request carried no valid token.
    pub token_name: Option<String>,
    pub method: String,
    /// The route's template, e.g. `/api/sources/{alias}`.
    pub route: String,
    pub path: String,
    /// The id or name the request was about.
    pub resource: Option<String>,
    pub status: i64,
    /// `succeeded`, `failed` or `refused` (401/403).
    pub outcome: String,
}

impl FromRow<'_, AnyRow> for AuditEntry {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            token_name: row.try_get("token_name")?,
            method: row.try_get("method")?,
            route: row.try_get("route")?,
            path: row.try_get("path")?,
            resource: row.try_get("resource")?,
            status: row.try_get("status")?,
            outcome: row.try_get("outcome")?,
        })
    }
}

/// An entry to record.
pub struct NewAuditEntry<'a> {
    pub token_name: Option<&'a str>,
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub resource: Option<&'a str>,
    pub status: u16,
    pub outcome: &'a str,
}

/// Which entries to read: those matching every filter given, newest first, after the entry
/// `before` (the last of the previous page), at most `limit`.
#[derive(Debug, Default)]
pub struct AuditFilter<'a> {
    pub token_name: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub route: Option<&'a str>,
    pub before: Option<&'a str>,
    pub limit: i64,
}

const COLUMNS: &str = "id, at, token_name, method, route, path, resource, status, outcome";

impl MetadataDb {
    pub async fn record_audit(&self, entry: NewAuditEntry<'_>) -> Result<(), MetadataError> {
        sqlx::query(&format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(new_id("aud"))
        .bind(now())
        .bind(entry.token_name)
        .bind(entry.method)
        .bind(entry.route)
        .bind(entry.path)
        .bind(entry.resource)
        .bind(i64::from(entry.status))
        .bind(entry.outcome)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Entries matching every filter given, newest first.
    pub async fn audit_entries(&self, filter: &AuditFilter<'_>) -> Result<Vec<AuditEntry>, MetadataError> {
        // Each filter is bound; an absent one compares its placeholder with NULL and matches all.
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log \
             WHERE ($1 IS NULL OR token_name = $1) AND ($2 IS NULL OR outcome = $2) \
               AND ($3 IS NULL OR route = $3) \
               AND ($4 IS NULL OR (at, id) < (SELECT at, id FROM audit_log WHERE id = $4)) \
             ORDER BY at DESC, id DESC LIMIT $5"
        );
        Ok(sqlx::query_as(&sql)
            .bind(filter.token_name)
            .bind(filter.outcome)
            .bind(filter.route)
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(self.pool())
            .await?)
    }
}
