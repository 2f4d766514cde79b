//! The cluster key and sealing: authenticated encryption of credentials that travel in plans.
//!
//! A client seals a source's connection URL with the cluster key before the URL enters a
//! logical plan; only processes holding the key (executors) can unseal it. The scheduler sees
//! ciphertext, so its job config, plan display and logs never contain a password.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Environment variable holding the base64-encoded 32-byte cluster key.
pub const SECRET_KEY_ENV: &str = "KALLA_SECRET_KEY";

const NONCE_LEN: usize = 12;
const SEALED_PREFIX: &str = "kalla-sealed-v1:";

#[derive(Debug, Error)]
pub enum SealError {
    #[error(
        "{SECRET_KEY_ENV} is not set: this process needs the cluster key \
         (32 random bytes, base64-encoded, e.g. `openssl rand -base64 32`)"
    )]
    MissingKey,
    #[error("{SECRET_KEY_ENV} is not valid base64 ({0}); generate a key with `openssl rand -base64 32`")]
    KeyNotBase64(base64::DecodeError),
    #[error("{SECRET_KEY_ENV} must decode to exactly 32 bytes, got {0} (use `openssl rand -base64 32`)")]
    KeyWrongLength(usize),
    #[error("sealed value is malformed")]
    Malformed,
    #[error(
        "sealed value could not be opened: it was sealed with a different {SECRET_KEY_ENV} \
         or has been tampered with"
    )]
    WrongKeyOrTampered,
}

/// The 256-bit key shared by the processes of one Kalla cluster.
#[derive(Clone)]
pub struct ClusterKey(Aes256Gcm);

impl ClusterKey {
    pub fn from_base64(encoded: &str) -> Result<Self, SealError> {
        let bytes = BASE64.decode(encoded.trim()).map_err(SealError::KeyNotBase64)?;
        if bytes.len() != 32 {
            return Err(SealError::KeyWrongLength(bytes.len()));
        }
        Ok(Self(Aes256Gcm::new_from_slice(&bytes).expect("32-byte key")))
    }

    /// Reads `KALLA_SECRET_KEY`; an error says what is missing or malformed.
    pub fn from_env() -> Result<Self, SealError> {
        match std::env::var(SECRET_KEY_ENV) {
            Ok(value) if !value.trim().is_empty() => Self::from_base64(&value),
            _ => Err(SealError::MissingKey),
        }
    }

    /// A fresh random key, as `openssl rand -base64 32` would print it.
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        BASE64.encode(bytes)
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
            .0
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
            .0
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::WrongKeyOrTampered)?;
        String::from_utf8(plaintext).map_err(|_| SealError::Malformed)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
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
        ClusterKey::from_base64(&ClusterKey::generate_base64()).unwrap()
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
            Err(SealError::WrongKeyOrTampered)
        ));
        assert!(matches!(
            a.unseal("other", &sealed),
            Err(SealError::WrongKeyOrTampered)
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
    fn key_errors_say_what_is_wrong() {
        assert!(matches!(
            ClusterKey::from_base64("not base64!"),
            Err(SealError::KeyNotBase64(_))
        ));
        assert!(matches!(
            ClusterKey::from_base64("c2hvcnQ="),
            Err(SealError::KeyWrongLength(5))
        ));
        assert!(
            SealError::MissingKey
                .to_string()
                .contains("openssl rand -base64 32")
        );
    }
}
