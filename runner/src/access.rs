//! Who may do what: the three nested roles, named tokens (stored as hashes), and the principal a
//! request acts as.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::local_state::generate_token;
use crate::metadata::{self, MetadataDb, MetadataError, NewToken, TokenRecord};
use crate::registry::{MAX_NAME_LEN, is_identifier};

/// The name the configured (bootstrap) token acts under; no stored token may take it.
pub const BOOTSTRAP: &str = "bootstrap";

/// What a token may do; each role may do all the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Lists, previews, job status and results.
    Viewer,
    /// Also recipes, jobs, refreshes and SQL.
    Operator,
    /// Also tokens, connections, sources and the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

/// Who a request acts as: a token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Error)]
pub enum AccessError {
    #[error("the bearer token is not known to this runner")]
    UnknownToken,
    #[error("token {0:?} has expired")]
    Expired(String),
    #[error("token {0:?} was revoked")]
    Revoked(String),
    #[error(
        "invalid token name {0:?}: a name starts with a letter or underscore, has only ASCII letters, \
         digits and underscores, is at most {MAX_NAME_LEN} characters long and is not \"{BOOTSTRAP}\""
    )]
    InvalidName(String),
    #[error("expires_in_secs must be at least 1")]
    InvalidExpiry,
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// A token just made: its record and its value, which is shown this once and never again.
pub struct Issued {
    pub record: TokenRecord,
    pub value: String,
}

/// The bootstrap token (configured, an admin) and the named tokens stored in the metadata DB.
#[derive(Clone)]
pub struct Tokens {
    db: MetadataDb,
    bootstrap: Arc<BootstrapToken>,
}

impl Tokens {
    pub fn new(db: MetadataDb, bootstrap: String) -> Self {
        Self {
            db,
            bootstrap: Arc::new(BootstrapToken(bootstrap)),
        }
    }

    /// Who `presented` is, if it is a live token.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, AccessError> {
        if self.bootstrap.matches(presented) {
            return Ok(Principal {
                name: BOOTSTRAP.into(),
                role: Role::Admin,
            });
        }
        let record = self
            .db
            .token_by_hash(&hash(presented))
            .await?
            .ok_or(AccessError::UnknownToken)?;
        if record.revoked_at.is_some() {
            return Err(AccessError::Revoked(record.name));
        }
        let now = metadata::now();
        if record.expires_at.as_deref().is_some_and(|at| at <= now.as_str()) {
            return Err(AccessError::Expired(record.name));
        }
        let role = Role::parse(&record.role).ok_or(AccessError::UnknownToken)?;
        self.note_use(&record).await;
        Ok(Principal {
            name: record.name,
            role,
        })
    }

    /// Records when the token was last used, at most once a minute so requests do not all write.
    async fn note_use(&self, record: &TokenRecord) {
        let recently = |at: &str| {
            chrono::DateTime::parse_from_rfc3339(at)
                .is_ok_and(|at| chrono::Utc::now().signed_duration_since(at) < chrono::Duration::minutes(1))
        };
        if record.last_used_at.as_deref().is_some_and(recently) {
            return;
        }
        if let Err(error) = self.db.token_used(&record.id).await {
            tracing::warn!(token = %record.name, %error, "cannot record a token's use");
        }
    }

    pub async fn create(
        &self,
        name: &str,
        role: Role,
        expires_in: Option<Duration>,
        by: &Principal,
    ) -> Result<Issued, AccessError> {
        if !is_identifier(name) || name == BOOTSTRAP {
            return Err(AccessError::InvalidName(name.to_string()));
        }
        if expires_in.is_some_and(|d| d.is_zero()) {
            return Err(AccessError::InvalidExpiry);
        }
        let value = generate_token();
        let record = self
            .db
            .insert_token(NewToken {
                name,
                role: role.as_str(),
                value_sha256: &hash(&value),
                created_by: &by.name,
                expires_in,
            })
            .await?;
        Ok(Issued { record, value })
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, AccessError> {
        Ok(self.db.list_tokens().await?)
    }

    pub async fn revoke(&self, name: &str) -> Result<TokenRecord, AccessError> {
        Ok(self.db.revoke_token(name).await?)
    }
}

/// The token of an `authorization` header's value `Bearer <token>`.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}

/// The configured token. `Debug` never shows it.
struct BootstrapToken(String);

impl BootstrapToken {
    /// Compares in time independent of where the first difference is.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// What a token is stored as: tokens are long and random, so a plain SHA-256 cannot be reversed.
fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_the_one_before_it_may() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn tokens_are_stored_as_hashes_and_the_bootstrap_one_matches_exactly() {
        let stored = hash("kalla_abc");
        assert_eq!(stored.len(), 64);
        assert_ne!(stored, hash("kalla_abd"));
        let bootstrap = BootstrapToken("kalla_abc".into());
        assert!(bootstrap.matches("kalla_abc"));
        for wrong in ["kalla_abd", "kalla_ab", ""] {
            assert!(!bootstrap.matches(wrong));
        }
    }
}
