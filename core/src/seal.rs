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
//!
//! Each is a key ring so it can be rotated without stopping anything: the first key seals, every
//! key opens. A key given as a file (`KALLA_CLUSTER_KEY_FILE`, `KALLA_SECRET_KEY_FILE`) is read
//! again when the file changes, so a rotated key reaches running executors and runners.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

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
/// Environment variable naming a file that holds the cluster key ring, read again on change.
pub const CLUSTER_KEY_FILE_ENV: &str = "KALLA_CLUSTER_KEY_FILE";
/// Environment variable naming a file that holds the secrets key ring, read again on change.
pub const SECRET_KEY_FILE_ENV: &str = "KALLA_SECRET_KEY_FILE";

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
    #[error("{variable} holds no key: give one or more (comma- or line-separated, the sealing key first)")]
    NoKey { variable: &'static str },
    #[error("cannot read the key file {path} ({variable}_FILE): {reason}")]
    KeyFile {
        variable: &'static str,
        path: String,
        reason: String,
    },
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
    /// The variable naming a file that holds the key ring instead.
    const FILE_VARIABLE: &'static str;
    const WHAT: &'static str;
}

/// Marker for [`ClusterKey`].
#[derive(Debug, Clone, Copy)]
pub enum Cluster {}

impl KeyKind for Cluster {
    const VARIABLE: &'static str = CLUSTER_KEY_ENV;
    const FILE_VARIABLE: &'static str = CLUSTER_KEY_FILE_ENV;
    const WHAT: &'static str = "cluster key";
}

/// Marker for [`SecretsKey`].
#[derive(Debug, Clone, Copy)]
pub enum Secrets {}

impl KeyKind for Secrets {
    const VARIABLE: &'static str = SECRET_KEY_ENV;
    const FILE_VARIABLE: &'static str = SECRET_KEY_FILE_ENV;
    const WHAT: &'static str = "secrets key";
}

/// Seals credentials into scan grants; held by the runner and the executors.
pub type ClusterKey = SealingKey<Cluster>;
/// Seals the secrets stored in the metadata DB; held by the runner alone.
pub type SecretsKey = SealingKey<Secrets>;

/// A ring of 256-bit AES-GCM keys of one [`KeyKind`]: the first seals, each opens. Clones
/// share the ring, so a key file read again updates every holder.
pub struct SealingKey<K> {
    ring: Arc<Ring>,
    kind: PhantomData<K>,
}

struct Ring {
    keys: RwLock<Keys>,
    /// Where the keys come from, when read from a file.
    file: Option<PathBuf>,
}

struct Keys {
    /// Never empty; the first seals.
    ciphers: Vec<Aes256Gcm>,
    /// The key file's modification time when it was read.
    modified: Option<SystemTime>,
}

impl<K> Clone for SealingKey<K> {
    fn clone(&self) -> Self {
        Self {
            ring: self.ring.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: KeyKind> SealingKey<K> {
    /// One key, or several separated by commas or lines: the first seals, every one opens (the
    /// ones before it during a rotation).
    pub fn from_base64(encoded: &str) -> Result<Self, SealError> {
        Ok(Self::with_ring(parse_keys::<K>(encoded)?, None, None))
    }

    /// The keys in the file at `path`, read again whenever the file changes.
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let (ciphers, modified) = read_key_file::<K>(path)?;
        Ok(Self::with_ring(ciphers, Some(path.to_path_buf()), modified))
    }

    fn with_ring(ciphers: Vec<Aes256Gcm>, file: Option<PathBuf>, modified: Option<SystemTime>) -> Self {
        Self {
            ring: Arc::new(Ring {
                keys: RwLock::new(Keys { ciphers, modified }),
                file,
            }),
            kind: PhantomData,
        }
    }

    /// How many keys the ring holds (one outside a rotation).
    pub fn key_count(&self) -> usize {
        self.ciphers().len()
    }

    /// The ring's keys, the key file read again first if it changed. A file that no longer
    /// reads as keys leaves the ring as it was, and says so.
    fn ciphers(&self) -> Vec<Aes256Gcm> {
        if let Some(path) = &self.ring.file {
            self.reload_if_changed(path);
        }
        let keys = self.ring.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.ciphers.clone()
    }

    fn reload_if_changed(&self, path: &Path) {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let unchanged = {
            let keys = self.ring.keys.read().unwrap_or_else(PoisonError::into_inner);
            keys.modified == modified
        };
        if unchanged {
            return;
        }
        let mut keys = self.ring.keys.write().unwrap_or_else(PoisonError::into_inner);
        match read_key_file::<K>(path) {
            Ok((ciphers, modified)) => {
                tracing::info!(file = %path.display(), keys = ciphers.len(), "the {} was read again", K::WHAT);
                *keys = Keys { ciphers, modified };
            }
            Err(error) => {
                // Tried again at the next change, not at every use.
                keys.modified = modified;
                tracing::error!(%error, "the {} file changed but cannot be used; the keys read before stay", K::WHAT);
            }
        }
    }

    /// Reads the key's file (`<VARIABLE>_FILE`) or variable; an error says what is missing or
    /// malformed.
    pub fn from_env() -> Result<Self, SealError> {
        if let Some(path) = std::env::var_os(K::FILE_VARIABLE) {
            return Self::from_file(Path::new(&path));
        }
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
        let ciphertext = self.ciphers()[0]
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Sealed(format!("{SEALED_PREFIX}{}", BASE64.encode(sealed)))
    }

    pub fn unseal(&self, purpose: &str, sealed: &Sealed) -> Result<String, SealError> {
        self.unseal_noting_key(purpose, sealed)
            .map(|(plaintext, _)| plaintext)
    }

    /// The plaintext, and whether the sealing key (the ring's first) sealed it: `false` means it
    /// should be sealed again before an older key leaves the ring.
    pub fn unseal_noting_key(&self, purpose: &str, sealed: &Sealed) -> Result<(String, bool), SealError> {
        let encoded = sealed.0.strip_prefix(SEALED_PREFIX).ok_or(SealError::Malformed)?;
        let bytes = BASE64.decode(encoded).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = || Payload {
            msg: ciphertext,
            aad: purpose.as_bytes(),
        };
        let ciphers = self.ciphers();
        let (index, plaintext) = ciphers
            .iter()
            .enumerate()
            .find_map(|(index, cipher)| {
                let plaintext = cipher.decrypt(Nonce::from_slice(nonce), payload()).ok()?;
                Some((index, plaintext))
            })
            .ok_or(SealError::WrongKeyOrTampered {
                variable: K::VARIABLE,
            })?;
        let plaintext = String::from_utf8(plaintext).map_err(|_| SealError::Malformed)?;
        Ok((plaintext, index == 0))
    }
}

/// The keys `encoded` holds, separated by commas or white space.
fn parse_keys<K: KeyKind>(encoded: &str) -> Result<Vec<Aes256Gcm>, SealError> {
    let variable = K::VARIABLE;
    let ciphers = encoded
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|key| !key.is_empty())
        .map(|key| {
            let bytes = BASE64
                .decode(key)
                .map_err(|source| SealError::KeyNotBase64 { variable, source })?;
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::KeyWrongLength {
                variable,
                length: bytes.len(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ciphers.is_empty() {
        return Err(SealError::NoKey { variable });
    }
    Ok(ciphers)
}

fn read_key_file<K: KeyKind>(path: &Path) -> Result<(Vec<Aes256Gcm>, Option<SystemTime>), SealError> {
    let unreadable = |error: std::io::Error| SealError::KeyFile {
        variable: K::VARIABLE,
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(unreadable)?;
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    Ok((parse_keys::<K>(&text)?, Some(modified)))
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
    fn a_ring_seals_with_its_first_key_and_opens_with_each() {
        let (old, new) = (ClusterKey::generate_base64(), ClusterKey::generate_base64());
        let before = ClusterKey::from_base64(&old).unwrap();
        let sealed_before = before.seal("p", "secret");
        let during = ClusterKey::from_base64(&format!("{new},{old}")).unwrap();
        assert_eq!(during.key_count(), 2);
        assert_eq!(
            during.unseal_noting_key("p", &sealed_before).unwrap(),
            ("secret".into(), false)
        );
        let sealed_during = during.seal("p", "secret");
        assert_eq!(
            during.unseal_noting_key("p", &sealed_during).unwrap(),
            ("secret".into(), true)
        );
        assert!(
            before.unseal("p", &sealed_during).is_err(),
            "the new key sealed it"
        );
        let after = ClusterKey::from_base64(&new).unwrap();
        assert!(after.unseal("p", &sealed_during).is_ok());
        assert!(after.unseal("p", &sealed_before).is_err(), "the old key is gone");
        assert!(matches!(
            ClusterKey::from_base64(" , "),
            Err(SealError::NoKey { .. })
        ));
    }

    #[test]
    fn a_key_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let (old, new) = (ClusterKey::generate_base64(), ClusterKey::generate_base64());
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let key = ClusterKey::from_file(&path).unwrap();
        let held_elsewhere = key.clone();
        let sealed_old = key.seal("p", "secret");
        let rewrite = |text: String| {
            // A new modification time, even on a file system with coarse timestamps.
            let file = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &file, text.as_bytes()).unwrap();
            let later = SystemTime::now() + std::time::Duration::from_secs(5);
            file.set_modified(later).unwrap();
        };
        rewrite(format!("{new}\n{old}\n"));
        let sealed_new = held_elsewhere.seal("p", "secret");
        assert!(
            key.unseal_noting_key("p", &sealed_new).unwrap().1,
            "sealed by the new key"
        );
        assert!(
            !key.unseal_noting_key("p", &sealed_old).unwrap().1,
            "sealed by the old key"
        );
        rewrite("not a key".into());
        assert_eq!(key.key_count(), 2, "a broken file leaves the ring as it was");
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
