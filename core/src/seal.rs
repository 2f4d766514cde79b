//! Sealing keys: authenticated encryption of credentials, with one key per trust boundary.
//!
//! Kalla holds two keys of the same shape (32 random bytes, base64) for two different readers:
//! - the **cluster key** ([`ClusterKey`], `KALLA_CLUSTER_KEY`) seals a source's credentials into
//!   a scan grant before it enters a plan; the runner and the executors hold it, so the scheduler
//!   sees only ciphertext in job configs, plan displays and logs;
//! - the **secrets key** ([`SecretsKey`], `KALLA_SECRET_KEY`) seals the secrets the runner stores
//!   in its metadata DB; only the runner holds it, so a cluster peer (an executor's host, a
//!   captured plan) never holds what opens the stored passwords.
//!
//! The two are distinct types, so one cannot be passed where the other belongs.

use std::fmt;
use std::marker::PhantomData;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Environment variable holding the cluster key (runner and executors).
pub const CLUSTER_KEY_ENV: &str = "KALLA_CLUSTER_KEY";
/// Environment variable holding the secrets key (the runner only).
pub const SECRET_KEY_ENV: &str = "KALLA_SECRET_KEY";

const NONCE_LEN: usize = 12;
const SEALED_PREFIX: &str = "kalla-sealed-v1:";

#[derive(Debug, Error)]
pub enum SealError {
    #[error(
        "{variable} is not set: this process needs the {what} \
         (32 random bytes, base64-encoded, e.g. `openssl rand -base64 32`)"
    )]
    MissingKey {
        variable: &'static str,
        what: &'static str,
    },
    #[error("{variable} is not valid base64 ({source}); generate a key with `openssl rand -base64 32`")]
    KeyNotBase64 {
        variable: &'static str,
        source: base64::DecodeError,
    },
    #[error("{variable} must decode to exactly 32 bytes, got {length} (use `openssl rand -base64 32`)")]
    KeyWrongLength { variable: &'static str, length: usize },
    #[error("sealed value is malformed")]
    Malformed,
    #[error(
        "sealed value could not be opened: it was sealed with a different {variable} \
         or has been tampered with"
    )]
    WrongKeyOrTampered { variable: &'static str },
}

/// What a key is for: the variable that configures it and how errors name it.
pub trait KeyKind {
    const VARIABLE: &'static str;
    const WHAT: &'static str;
}

/// Marker for [`ClusterKey`].
#[derive(Debug, Clone, Copy)]
pub enum Cluster {}

impl KeyKind for Cluster {
    const VARIABLE: &'static str = CLUSTER_KEY_ENV;
    const WHAT: &'static str = "cluster key";
}

/// Marker for [`SecretsKey`].
#[derive(Debug, Clone, Copy)]
pub enum Secrets {}

impl KeyKind for Secrets {
    const VARIABLE: &'static str = SECRET_KEY_ENV;
    const WHAT: &'static str = "secrets key";
}

/// Seals credentials into scan grants; held by the runner and the executors.
pub type ClusterKey = SealingKey<Cluster>;
/// Seals the secrets stored in the metadata DB; held by the runner alone.
pub type SecretsKey = SealingKey<Secrets>;

/// A 256-bit AES-GCM key of one [`KeyKind`].
pub struct SealingKey<K> {
    cipher: Aes256Gcm,
    kind: PhantomData<K>,
}

impl<K> Clone for SealingKey<K> {
    fn clone(&self) -> Self {
        Self {
            cipher: self.cipher.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: KeyKind> SealingKey<K> {
    pub fn from_base64(encoded: &str) -> Result<Self, SealError> {
        let variable = K::VARIABLE;
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|source| SealError::KeyNotBase64 { variable, source })?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::KeyWrongLength {
            variable,
            length: bytes.len(),
        })?;
        Ok(Self {
            cipher,
            kind: PhantomData,
        })
    }

    /// Reads the key's variable; an error says what is missing or malformed.
    pub fn from_env() -> Result<Self, SealError> {
        match std::env::var(K::VARIABLE) {
            Ok(value) if !value.trim().is_empty() => Self::from_base64(&value),
            _ => Err(Self::missing()),
        }
    }

    /// The error for a key that is not configured.
    pub fn missing() -> SealError {
        SealError::MissingKey {
            variable: K::VARIABLE,
            what: K::WHAT,
        }
    }

    /// A fresh random key, as `openssl rand -base64 32` would print it.
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        BASE64.encode(bytes)
    }

    /// A fresh random key, for a process that is its own whole cluster.
    pub fn generate() -> Self {
        Self::from_base64(&Self::generate_base64()).expect("a generated key has 32 bytes")
    }

    /// Encrypts `plaintext` for `purpose` (bound as associated data, so a sealed value
    /// cannot be replayed where another kind of secret is expected).
    pub fn seal(&self, purpose: &str, plaintext: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: purpose.as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Sealed(format!("{SEALED_PREFIX}{}", BASE64.encode(sealed)))
    }

    pub fn unseal(&self, purpose: &str, sealed: &Sealed) -> Result<String, SealError> {
        let encoded = sealed.0.strip_prefix(SEALED_PREFIX).ok_or(SealError::Malformed)?;
        let bytes = BASE64.decode(encoded).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: purpose.as_bytes(),
        };
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::WrongKeyOrTampered {
                variable: K::VARIABLE,
            })?;
        String::from_utf8(plaintext).map_err(|_| SealError::Malformed)
    }
}

impl<K: KeyKind> fmt::Debug for SealingKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey({}, <redacted>)", K::WHAT)
    }
}

/// Ciphertext produced by [`ClusterKey::seal`]; safe to serialize, display and log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(String);

impl Sealed {
    /// A sealed value read back from storage; [`ClusterKey::unseal`] checks it.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The text to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(<ciphertext>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::generate()
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let key = key();
        let sealed = key.seal("source-url", "postgres://u:hunter2@h/db");
        let serialized = serde_json::to_string(&sealed).unwrap();
        assert!(!serialized.contains("hunter2"));
        assert_eq!(
            key.unseal("source-url", &sealed).unwrap(),
            "postgres://u:hunter2@h/db"
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let key = key();
        assert_ne!(key.seal("p", "same"), key.seal("p", "same"));
    }

    #[test]
    fn wrong_key_wrong_purpose_and_tampering_are_rejected() {
        let (a, b) = (key(), key());
        let sealed = a.seal("source-url", "secret");
        assert!(matches!(
            b.unseal("source-url", &sealed),
            Err(SealError::WrongKeyOrTampered { .. })
        ));
        assert!(matches!(
            a.unseal("other", &sealed),
            Err(SealError::WrongKeyOrTampered { .. })
        ));
        let mut tampered = sealed.0.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = Sealed(String::from_utf8(tampered).unwrap());
        assert!(a.unseal("source-url", &tampered).is_err());
        assert!(matches!(
            a.unseal("source-url", &Sealed("garbage".into())),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn an_unseal_error_names_the_variable_of_the_key_that_failed() {
        let sealed = key().seal("p", "secret");
        let error = SecretsKey::generate()
            .unseal("p", &sealed)
            .unwrap_err()
            .to_string();
        assert!(error.contains(SECRET_KEY_ENV), "{error}");
    }

    #[test]
    fn key_errors_say_what_is_wrong() {
        assert!(matches!(
            ClusterKey::from_base64("not base64!"),
            Err(SealError::KeyNotBase64 {
                variable: CLUSTER_KEY_ENV,
                ..
            })
        ));
        assert!(matches!(
            SecretsKey::from_base64("c2hvcnQ="),
            Err(SealError::KeyWrongLength {
                variable: SECRET_KEY_ENV,
                length: 5
            })
        ));
        let missing = ClusterKey::missing().to_string();
        assert!(missing.contains("KALLA_CLUSTER_KEY"), "{missing}");
        assert!(missing.contains("openssl rand -base64 32"), "{missing}");
    }
}
