//! Scan grants: a source's connection URL sealed for one table's columns until an expiry.
//!
//! Every database engine's scans carry one. The runner issues a grant when it plans a scan; the
//! executor opens it before reading. The
//! table, its columns (names and types as the runner read them from the catalog) and the expiry
//! are bound to the ciphertext as associated data, so a grant captured from a plan cannot be
//! replayed for another table, with other columns, or after it expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ident::QualifiedName;
use crate::seal::{ClusterKey, SealError, Sealed};

/// How long a grant stays valid unless the runner is told otherwise: long enough for Ballista's
/// task retries and for a runner taking over a job that is still running.
pub const DEFAULT_GRANT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What a grant's associated data starts with (its purpose).
const PURPOSE: &str = "kalla/scan-grant-v1";

#[derive(Debug, Error)]
pub enum GrantError {
    #[error("the scan grant for {table} expired {ago} s ago: plan the job again")]
    Expired { table: String, ago: u64 },
    #[error("the scan grant is not valid for {table} with these columns: {source}")]
    NotForThisScan {
        table: String,
        #[source]
        source: SealError,
    },
}

/// A sealed connection URL, good for one table's scan until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanGrant {
    pub sealed: Sealed,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl ScanGrant {
    /// Seals `url` for reading `columns` of `table` during the next `ttl`.
    pub fn issue<C: Serialize>(
        key: &ClusterKey,
        url: &str,
        table: &QualifiedName,
        columns: &[C],
        ttl: Duration,
    ) -> Self {
        let expires_at = unix_now().saturating_add(ttl.as_secs());
        let sealed = key.seal(&binding(table, columns, expires_at), url);
        Self { sealed, expires_at }
    }

    /// The URL, when this grant was issued for exactly `table` and `columns` and has not expired.
    pub fn open<C: Serialize>(
        &self,
        key: &ClusterKey,
        table: &QualifiedName,
        columns: &[C],
    ) -> Result<String, GrantError> {
        let now = unix_now();
        if now >= self.expires_at {
            return Err(GrantError::Expired {
                table: table.to_string(),
                ago: now - self.expires_at,
            });
        }
        key.unseal(&binding(table, columns, self.expires_at), &self.sealed)
            .map_err(|source| GrantError::NotForThisScan {
                table: table.to_string(),
                source,
            })
    }
}

/// The associated data: everything about the scan the runner fixed when it issued the grant.
fn binding<C: Serialize>(table: &QualifiedName, columns: &[C], expires_at: u64) -> String {
    let columns = serde_json::to_string(columns).expect("columns serialize to JSON");
    format!("{PURPOSE}\n{}\n{columns}\n{expires_at}", table.quoted())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::Ident;
    use crate::postgres::catalog::{FilterSupport, PgColumn};
    use crate::postgres::types::PgType;

    fn key() -> ClusterKey {
        ClusterKey::generate()
    }

    fn table(name: &str) -> QualifiedName {
        QualifiedName {
            schema: Ident::new("public").unwrap(),
            name: Ident::new(name).unwrap(),
        }
    }

    fn columns(sql_type: &str) -> Vec<PgColumn> {
        vec![PgColumn {
            name: "amount".into(),
            sql_type: sql_type.into(),
            pg_type: PgType::Int8,
            nullable: false,
            filter: FilterSupport::Exact,
        }]
    }

    const URL: &str = "postgres://kalla:hunter2@db/ledger";

    #[test]
    fn opens_for_the_scan_it_was_issued_for() {
        let key = key();
        let grant = ScanGrant::issue(&key, URL, &table("orders"), &columns("bigint"), DEFAULT_GRANT_TTL);
        assert_eq!(
            grant.open(&key, &table("orders"), &columns("bigint")).unwrap(),
            URL
        );
        assert!(!serde_json::to_string(&grant).unwrap().contains("hunter2"));
    }

    #[test]
    fn another_table_other_columns_or_a_moved_expiry_are_refused() {
        let key = key();
        let grant = ScanGrant::issue(&key, URL, &table("orders"), &columns("bigint"), DEFAULT_GRANT_TTL);
        let refused =
            |result: Result<String, GrantError>| matches!(result, Err(GrantError::NotForThisScan { .. }));
        assert!(refused(grant.open(&key, &table("pg_authid"), &columns("bigint"))));
        assert!(refused(grant.open(
            &key,
            &table("orders"),
            &columns("bigint) FROM pg_authid --")
        )));
        let extended = ScanGrant {
            expires_at: grant.expires_at + 3600,
            ..grant.clone()
        };
        assert!(refused(extended.open(&key, &table("orders"), &columns("bigint"))));
    }

    #[test]
    fn an_expired_grant_is_refused_before_it_is_opened() {
        let key = key();
        let grant = ScanGrant::issue(&key, URL, &table("orders"), &columns("bigint"), Duration::ZERO);
        let error = grant
            .open(&key, &table("orders"), &columns("bigint"))
            .unwrap_err();
        assert!(matches!(error, GrantError::Expired { .. }), "{error}");
        assert!(error.to_string().contains("plan the job again"));
    }
}
