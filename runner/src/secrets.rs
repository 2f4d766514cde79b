//! Passwords taken out of URIs and settings, sealed under the secrets key (which only the runner
//! holds), and put back only when a connection is opened.

use kalla_core::SecretsKey;
use kalla_core::seal::{SealError, Sealed};
use thiserror::Error;
use url::Url;

use crate::metadata::{MetadataDb, MetadataError};

#[derive(Debug, Error)]
pub enum SecretError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("a stored secret cannot be opened with this runner's KALLA_SECRET_KEY: {0}")]
    Unseal(#[from] SealError),
    #[error("the stored URI {0} cannot hold a password")]
    NoPasswordSlot(String),
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
