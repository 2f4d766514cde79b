//! Passwords sealed under the secrets key (which only the runner holds): named secrets made
//! through the API and those taken out of registered URIs, put back only when a connection is
//! opened, and sealed again when the key is rotated.

use std::time::Duration;

use kalla_core::SecretsKey;
use kalla_core::seal::{SealError, Sealed};
use thiserror::Error;
use url::Url;

use crate::metadata::{MetadataDb, MetadataError, SecretRecord};
use crate::registry::is_identifier;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("a stored secret cannot be opened with this runner's KALLA_SECRET_KEY: {0}")]
    Unseal(#[from] SealError),
    #[error("the stored URI {0} cannot hold a password")]
    NoPasswordSlot(String),
    #[error(
        "invalid secret name {0:?}: a name starts with a letter or underscore and has only ASCII \
         letters, digits and underscores"
    )]
    InvalidName(String),
    #[error("a secret's value must not be empty")]
    EmptyValue,
}

/// How far re-sealing under the current secrets key has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ResealStatus {
    /// Keys in the ring: the first seals, the others only open (during a rotation).
    pub keys: usize,
    /// Secrets still sealed under an older key: the older keys may go once this is 0.
    pub sealed_with_older_keys: usize,
    /// Secrets no key of the ring opens.
    pub unreadable: usize,
}

/// Seals new secrets and opens stored ones.
#[derive(Clone)]
pub struct Secrets {
    db: MetadataDb,
    key: SecretsKey,
}

impl Secrets {
    pub fn new(db: MetadataDb, key: SecretsKey) -> Self {
        Self { db, key }
    }

    /// A new secret id and `password` sealed for it, ready to be stored together.
    pub fn seal(&self, password: &str) -> (String, Sealed) {
        let id = MetadataDb::new_secret_id();
        let sealed = self.key.seal(&purpose(&id), password);
        (id, sealed)
    }

    /// Stores `value` as the secret `name`.
    pub async fn create(&self, name: &str, value: &str) -> Result<SecretRecord, SecretError> {
        check_secret(name, value)?;
        let (id, sealed) = self.seal(value);
        Ok(self.db.create_named_secret(&id, name, &sealed).await?)
    }

    pub async fn list(&self) -> Result<Vec<SecretRecord>, SecretError> {
        Ok(self.db.named_secrets().await?)
    }

    pub async fn get(&self, name: &str) -> Result<SecretRecord, SecretError> {
        Ok(self.db.named_secret(name).await?)
    }

    /// Replaces the value of the secret `name`; what uses it reads the new one from its next
    /// connection on.
    pub async fn update(&self, name: &str, value: &str) -> Result<SecretRecord, SecretError> {
        if value.is_empty() {
            return Err(SecretError::EmptyValue);
        }
        let record = self.db.named_secret(name).await?;
        let sealed = self.key.seal(&purpose(&record.id), value);
        self.db.update_secret(&record.id, &sealed).await?;
        Ok(self.db.named_secret(name).await?)
    }

    pub async fn delete(&self, name: &str) -> Result<(), SecretError> {
        Ok(self.db.delete_named_secret(name).await?)
    }

    /// Seals every secret an older key of the ring sealed again under the current one; returns
    /// what is left. Nothing to do outside a rotation: one key opens only what it sealed.
    pub async fn reseal(&self) -> Result<ResealStatus, SecretError> {
        if self.key.key_count() > 1 {
            for (id, sealed) in self.db.sealed_secrets().await? {
                if let Ok((value, false)) = self.key.unseal_noting_key(&purpose(&id), &sealed) {
                    let resealed = self.key.seal(&purpose(&id), &value);
                    // Changed meanwhile means sealed anew under the current key: nothing to do.
                    self.db.reseal_secret(&id, &sealed, &resealed).await?;
                }
            }
        }
        self.status().await
    }

    /// Every `every`, seals again what an older key of a rotated ring sealed, and says what no
    /// key opens.
    pub async fn run_reseals(self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        let mut reported = ResealStatus::default();
        loop {
            ticks.tick().await;
            match self.reseal().await {
                Ok(status) if status != reported => {
                    if status.keys > 1 || status.unreadable > 0 {
                        tracing::info!(
                            ?status,
                            "secrets key rotation: sealed again under the current key"
                        );
                    }
                    reported = status;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot seal the stored secrets again; retrying"),
            }
        }
    }

    /// How many secrets an older key still seals, without changing any.
    pub async fn status(&self) -> Result<ResealStatus, SecretError> {
        let mut status = ResealStatus {
            keys: self.key.key_count(),
            ..ResealStatus::default()
        };
        for (id, sealed) in self.db.sealed_secrets().await? {
            match self.key.unseal_noting_key(&purpose(&id), &sealed) {
                Ok((_, true)) => {}
                Ok((_, false)) => status.sealed_with_older_keys += 1,
                Err(_) => status.unreadable += 1,
            }
        }
        Ok(status)
    }

    /// The id of the named secret `name`, for a record to use.
    pub async fn named_id(&self, name: &str) -> Result<String, SecretError> {
        Ok(self.get(name).await?.id)
    }

    pub async fn reveal(&self, secret_id: &str) -> Result<String, SecretError> {
        let sealed = self.db.secret(secret_id).await?;
        Ok(self.key.unseal(&purpose(secret_id), &sealed)?)
    }

    /// `stored_url` with the password of `secret_id` (if any) put back.
    pub async fn with_password(&self, stored_url: &str, secret_id: Option<&str>) -> Result<Url, SecretError> {
        let no_slot = || SecretError::NoPasswordSlot(kalla_core::pool::redact_connection_url(stored_url));
        let mut url = Url::parse(stored_url).map_err(|_| no_slot())?;
        if let Some(secret_id) = secret_id {
            let password = self.reveal(secret_id).await?;
            url.set_password(Some(&password)).map_err(|()| no_slot())?;
        }
        Ok(url)
    }
}

fn check_secret(name: &str, value: &str) -> Result<(), SecretError> {
    if !is_identifier(name) {
        return Err(SecretError::InvalidName(name.to_string()));
    }
    if value.is_empty() {
        return Err(SecretError::EmptyValue);
    }
    Ok(())
}

/// What a secret is sealed for, so a sealed value cannot be moved to another row.
fn purpose(secret_id: &str) -> String {
    format!("kalla-secret:{secret_id}")
}

/// Removes the password (userinfo or `password=` parameter) from `url` and returns it.
pub fn take_password(url: &mut Url) -> Option<String> {
    let mut password = url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    let _ = url.set_password(None);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.iter().any(|(k, _)| k == "password") {
        url.set_query(None);
        let mut query = url.query_pairs_mut();
        for (key, value) in pairs {
            if key == "password" {
                password.get_or_insert(value);
            } else {
                query.append_pair(&key, &value);
            }
        }
    }
    password.filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_uri() {
        let mut url = Url::parse("postgres://app:p%40s+s@h:5432/db?table=s.t&sslmode=disable").unwrap();
        assert_eq!(take_password(&mut url).as_deref(), Some("p@s+s"));
        assert_eq!(url.as_str(), "postgres://app@h:5432/db?table=s.t&sslmode=disable");

        let mut url = Url::parse("postgres://app@h/db?password=hunter2&table=t").unwrap();
        assert_eq!(take_password(&mut url).as_deref(), Some("hunter2"));
        assert_eq!(url.as_str(), "postgres://app@h/db?table=t");

        let mut url = Url::parse("postgres://app@h/db?table=t").unwrap();
        assert_eq!(take_password(&mut url), None);
    }
}
