//! TLS to source databases: `sslmode` as libpq reads it, and certificates by name.
//!
//! A connection URL says how much TLS it wants (`sslmode`) and may name a CA bundle
//! (`sslrootcert`) and a client certificate (`sslcert`, `sslkey`). The names refer to what the
//! operator mounted in the process's certificate directory (`--tls-ca-dir`), laid out as
//! Kubernetes TLS Secrets are: `<dir>/<name>/ca.crt`, `<dir>/<name>/tls.crt` and
//! `<dir>/<name>/tls.key`. A URL never gives a path, so whoever registers a source cannot make a
//! process read a file of its choosing; and a plan carries only the names.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use thiserror::Error;
use url::Url;

/// The CA bundle file of a named certificate.
const CA_FILE: &str = "ca.crt";
/// A named client certificate's chain and key.
const CLIENT_CERT_FILE: &str = "tls.crt";
const CLIENT_KEY_FILE: &str = "tls.key";
/// `sslrootcert=system`: the operating system's trusted roots (as libpq 16 reads it).
const SYSTEM_ROOTS: &str = "system";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("sslmode={0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    UnknownMode(String),
    #[error(
        "{parameter}={value:?}: certificates are named, never given as paths: name a certificate \
         the operator configured with --tls-ca-dir (letters, digits, '.', '_', '-')"
    )]
    PathNotAllowed { parameter: &'static str, value: String },
    #[error("{parameter}={name:?} names no certificate of this process: {configured}")]
    NotConfigured {
        parameter: &'static str,
        name: String,
        configured: String,
    },
    #[error(
        "sslrootcert={root} is for checking the server's certificate, which sslmode={mode} does \
         not do: use sslmode=verify-full (or verify-ca)"
    )]
    RootWithoutVerification { root: String, mode: SslMode },
    #[error("sslrootcert=system needs sslmode=verify-full (sslmode={0} was given)")]
    SystemRootsNeedVerifyFull(SslMode),
    #[error("{0:?} is not a TLS parameter Kalla takes (sslmode, sslrootcert, sslcert, sslkey)")]
    UnknownParameter(String),
    #[error("sslkey={key:?} must name the certificate sslcert names, which holds its key")]
    KeyWithoutItsCertificate { key: String },
    #[error("{parameter} is given twice (as {first} and {second})")]
    Repeated {
        parameter: &'static str,
        first: String,
        second: String,
    },
    #[error("--tls-ca-dir {dir}: {reason}")]
    Directory { dir: PathBuf, reason: String },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

/// libpq's `sslmode` values, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against trusted roots.
    pub fn verifies(self) -> bool {
        self >= Self::VerifyCa
    }
}

/// A database driver's connect options, as [`TlsSettings`] configure them.
pub trait TlsOptions: Sized {
    fn with_mode(self, mode: SslMode) -> Self;
    fn with_root_pem(self, pem: Vec<u8>) -> Self;
    fn with_client_pem(self, certificate: Vec<u8>, key: Vec<u8>) -> Self;
}

impl TlsOptions for PgConnectOptions {
    /// sqlx treats `allow` as `disable`; Kalla runs it as `prefer` (TLS whenever the server
    /// offers it), which only differs from libpq by preferring encryption.
    fn with_mode(self, mode: SslMode) -> Self {
        self.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        })
    }

    fn with_root_pem(self, pem: Vec<u8>) -> Self {
        self.ssl_root_cert_from_pem(pem)
    }

    fn with_client_pem(self, certificate: Vec<u8>, key: Vec<u8>) -> Self {
        self.ssl_client_cert_from_pem(certificate)
            .ssl_client_key_from_pem(key)
    }
}

impl TlsOptions for MySqlConnectOptions {
    /// libpq's modes for MariaDB's: `verify-full` is `VERIFY_IDENTITY` (the host name checked).
    fn with_mode(self, mode: SslMode) -> Self {
        self.ssl_mode(match mode {
            SslMode::Disable => MySqlSslMode::Disabled,
            SslMode::Allow | SslMode::Prefer => MySqlSslMode::Preferred,
            SslMode::Require => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        })
    }

    fn with_root_pem(self, pem: Vec<u8>) -> Self {
        self.ssl_ca_from_pem(pem)
    }

    fn with_client_pem(self, certificate: Vec<u8>, key: Vec<u8>) -> Self {
        self.ssl_client_cert_from_pem(certificate)
            .ssl_client_key_from_pem(key)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(value: &str) -> Result<Self, TlsError> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => return Err(TlsError::UnknownMode(other.to_string())),
        })
    }
}

/// Where the server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCertificates {
    /// The operating system's trusted roots.
    System,
    /// A CA bundle from the certificate directory.
    Named(String),
}

/// A connection URL's TLS parameters, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `None`: sqlx's default (`PGSSLMODE`, else `prefer`).
    mode: Option<SslMode>,
    root: Option<RootCertificates>,
    client_certificate: Option<String>,
}

/// Each parameter Kalla reads, with the aliases sqlx also accepts (all of which it must take
/// out of a URL before sqlx reads that URL's paths).
const MODE_PARAMETERS: [&str; 2] = ["sslmode", "ssl-mode"];
const ROOT_PARAMETERS: [&str; 3] = ["sslrootcert", "ssl-root-cert", "ssl-ca"];
const CERT_PARAMETERS: [&str; 2] = ["sslcert", "ssl-cert"];
const KEY_PARAMETERS: [&str; 2] = ["sslkey", "ssl-key"];

impl TlsSettings {
    /// Takes the TLS parameters out of `url` (leaving the rest) and checks them.
    pub fn take_from(url: &mut Url) -> Result<Self, TlsError> {
        let mut found = Found::default();
        let mut kept = Vec::new();
        for (key, value) in url.query_pairs() {
            let (key, value) = (key.into_owned(), value.into_owned());
            let slot = match key.as_str() {
                k if MODE_PARAMETERS.contains(&k) => &mut found.mode,
                k if ROOT_PARAMETERS.contains(&k) => &mut found.root,
                k if CERT_PARAMETERS.contains(&k) => &mut found.cert,
                k if KEY_PARAMETERS.contains(&k) => &mut found.key,
                // Whatever else sqlx might one day read as a file, Kalla does not pass on.
                k if k.starts_with("ssl") => return Err(TlsError::UnknownParameter(key)),
                _ => {
                    kept.push((key, value));
                    continue;
                }
            };
            if let Some((first, _)) = slot.replace((key.clone(), value)) {
                return Err(TlsError::Repeated {
                    parameter: canonical(&key),
                    first,
                    second: key,
                });
            }
        }
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        found.settings()
    }

    /// The settings of a connection URL, which is left as it is.
    pub fn of(connection_url: &str) -> Result<Self, TlsError> {
        match Url::parse(connection_url) {
            Ok(mut url) => Self::take_from(&mut url),
            Err(_) => Ok(Self::default()),
        }
    }

    /// The mode asked for, if any.
    pub fn mode(&self) -> Option<SslMode> {
        self.mode
    }

    /// Names every certificate these settings use.
    pub fn names(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let root = match &self.root {
            Some(RootCertificates::Named(name)) => Some(("sslrootcert", name.as_str())),
            _ => None,
        };
        let client = self.client_certificate.as_deref().map(|name| ("sslcert", name));
        root.into_iter().chain(client)
    }

    /// Errors unless every certificate these settings name is configured in `dir`.
    pub fn check_configured(&self, dir: Option<&CertificateDir>) -> Result<(), TlsError> {
        for (parameter, name) in self.names() {
            let files: &[&str] = if parameter == "sslrootcert" {
                &[CA_FILE]
            } else {
                &[CLIENT_CERT_FILE, CLIENT_KEY_FILE]
            };
            let configured = dir.is_some_and(|dir| files.iter().all(|f| dir.file(name, f).is_file()));
            if !configured {
                return Err(TlsError::NotConfigured {
                    parameter,
                    name: name.to_string(),
                    configured: dir.map_or_else(
                        || "it has no --tls-ca-dir".to_string(),
                        |dir| {
                            format!(
                                "its --tls-ca-dir {} holds [{}]",
                                dir.root.display(),
                                dir.names().join(", ")
                            )
                        },
                    ),
                });
            }
        }
        Ok(())
    }

    /// `options` with these settings' mode and certificates (read from `dir` now).
    pub fn apply<O: TlsOptions>(&self, mut options: O, dir: Option<&CertificateDir>) -> Result<O, TlsError> {
        self.check_configured(dir)?;
        if let Some(mode) = self.mode {
            options = options.with_mode(mode);
        }
        let Some(dir) = dir else {
            return Ok(options);
        };
        if let Some(RootCertificates::Named(name)) = &self.root {
            options = options.with_root_pem(dir.read(name, CA_FILE)?);
        }
        if let Some(name) = &self.client_certificate {
            options = options.with_client_pem(
                dir.read(name, CLIENT_CERT_FILE)?,
                dir.read(name, CLIENT_KEY_FILE)?,
            );
        }
        Ok(options)
    }
}

/// The raw TLS parameters of one URL, each with the spelling it was given in.
#[derive(Default)]
struct Found {
    mode: Option<(String, String)>,
    root: Option<(String, String)>,
    cert: Option<(String, String)>,
    key: Option<(String, String)>,
}

impl Found {
    fn settings(self) -> Result<TlsSettings, TlsError> {
        let mode = self.mode.map(|(_, value)| value.parse()).transpose()?;
        let root = self
            .root
            .map(|(_, value)| match value.as_str() {
                SYSTEM_ROOTS => Ok(RootCertificates::System),
                _ => certificate_name("sslrootcert", value).map(RootCertificates::Named),
            })
            .transpose()?;
        let client_certificate = self
            .cert
            .map(|(_, value)| certificate_name("sslcert", value))
            .transpose()?;
        if let Some((_, key)) = self.key
            && client_certificate.as_deref() != Some(key.as_str())
        {
            return Err(TlsError::KeyWithoutItsCertificate { key });
        }
        Ok(TlsSettings {
            mode: effective_mode(mode, root.as_ref())?,
            root,
            client_certificate,
        })
    }
}

/// The mode to run: a CA named without a mode (or with `require`, as libpq does when it has a
/// root file) verifies; a weaker mode with a CA named, which would check nothing, is refused.
fn effective_mode(
    mode: Option<SslMode>,
    root: Option<&RootCertificates>,
) -> Result<Option<SslMode>, TlsError> {
    match (root, mode) {
        (None, mode) => Ok(mode),
        (Some(RootCertificates::System), None | Some(SslMode::VerifyFull)) => Ok(Some(SslMode::VerifyFull)),
        (Some(RootCertificates::System), Some(mode)) => Err(TlsError::SystemRootsNeedVerifyFull(mode)),
        (Some(RootCertificates::Named(_)), None) => Ok(Some(SslMode::VerifyFull)),
        (Some(RootCertificates::Named(_)), Some(SslMode::Require)) => Ok(Some(SslMode::VerifyCa)),
        (Some(RootCertificates::Named(_)), Some(mode)) if mode.verifies() => Ok(Some(mode)),
        (Some(RootCertificates::Named(name)), Some(mode)) => Err(TlsError::RootWithoutVerification {
            root: name.clone(),
            mode,
        }),
    }
}

fn canonical(key: &str) -> &'static str {
    [
        ("sslmode", &MODE_PARAMETERS[..]),
        ("sslrootcert", &ROOT_PARAMETERS[..]),
        ("sslcert", &CERT_PARAMETERS[..]),
    ]
    .into_iter()
    .find(|(_, aliases)| aliases.contains(&key))
    .map_or("sslkey", |(name, _)| name)
}

/// A certificate's name: a directory entry of `--tls-ca-dir`, never a path.
fn certificate_name(parameter: &'static str, value: String) -> Result<String, TlsError> {
    let valid = !value.is_empty()
        && value.len() <= 128
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(value)
    } else {
        Err(TlsError::PathNotAllowed { parameter, value })
    }
}

/// The operator's certificates: one entry (a directory) per name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateDir {
    root: PathBuf,
}

impl CertificateDir {
    /// Opens `root`, checking that every entry's files hold what their names say.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let dir = Self { root: root.into() };
        let entries = std::fs::read_dir(&dir.root).map_err(|e| dir.problem(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| dir.problem(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes keeps a mount's real files under `..data` and friends.
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            dir.check_entry(&name)?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The certificate names configured, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| certificate_name("sslrootcert", name.clone()).is_ok())
            .collect();
        names.sort();
        names
    }

    fn check_entry(&self, name: &str) -> Result<(), TlsError> {
        let (ca, cert, key) = (
            self.file(name, CA_FILE),
            self.file(name, CLIENT_CERT_FILE),
            self.file(name, CLIENT_KEY_FILE),
        );
        if !ca.is_file() && !cert.is_file() {
            return Err(self.problem(format!(
                "{name}/ holds neither {CA_FILE} (a CA bundle) nor {CLIENT_CERT_FILE} and \
                 {CLIENT_KEY_FILE} (a client certificate)"
            )));
        }
        if ca.is_file() {
            self.parse(&ca, holds_certificates)?;
        }
        if cert.is_file() != key.is_file() {
            return Err(self.problem(format!(
                "{name}/ must hold both {CLIENT_CERT_FILE} and {CLIENT_KEY_FILE}, or neither"
            )));
        }
        if cert.is_file() {
            self.parse(&cert, holds_certificates)?;
            self.parse(&key, |pem| PrivateKeyDer::from_pem_slice(pem).is_ok())?;
        }
        Ok(())
    }

    fn parse(&self, path: &Path, holds_pem: impl Fn(&[u8]) -> bool) -> Result<(), TlsError> {
        let pem = std::fs::read(path).map_err(|e| self.problem(format!("{}: {e}", path.display())))?;
        if holds_pem(&pem) {
            Ok(())
        } else {
            Err(self.problem(format!(
                "{} holds no PEM of the kind its name says",
                path.display()
            )))
        }
    }

    fn file(&self, name: &str, file: &str) -> PathBuf {
        self.root.join(name).join(file)
    }

    /// A certificate's file, read now (so a rotated Secret is used by the next new pool).
    fn read(&self, name: &str, file: &str) -> Result<Vec<u8>, TlsError> {
        let path = self.file(name, file);
        std::fs::read(&path).map_err(|e| TlsError::Unreadable {
            path,
            reason: e.to_string(),
        })
    }

    fn problem(&self, reason: String) -> TlsError {
        TlsError::Directory {
            dir: self.root.clone(),
            reason,
        }
    }
}

fn holds_certificates(pem: &[u8]) -> bool {
    CertificateDer::pem_slice_iter(pem).any(|certificate| certificate.is_ok())
}

/// `--tls-ca-dir`, flattened into each service's flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CertificateArgs {
    /// Directory of named certificates for database TLS: `<name>/ca.crt` (a CA bundle, named by
    /// `sslrootcert=<name>`) and `<name>/tls.crt` with `<name>/tls.key` (a client certificate,
    /// named by `sslcert=<name>`), as Kubernetes TLS Secrets mount.
    #[arg(long)]
    pub tls_ca_dir: Option<PathBuf>,
}

impl CertificateArgs {
    /// The directory, opened and checked; `None` when not configured.
    pub fn open(&self) -> Result<Option<CertificateDir>, TlsError> {
        self.tls_ca_dir.as_ref().map(CertificateDir::open).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(query: &str) -> Result<TlsSettings, TlsError> {
        TlsSettings::of(&format!("postgres://u@db.example/shop?{query}"))
    }

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_stay() {
        let mut url = Url::parse(
            "postgres://u@h/db?application_name=x&sslmode=verify-full&ssl-root-cert=prod&sslcert=app&sslkey=app",
        )
        .unwrap();
        let settings = TlsSettings::take_from(&mut url).unwrap();
        assert_eq!(url.as_str(), "postgres://u@h/db?application_name=x");
        assert_eq!(settings.mode(), Some(SslMode::VerifyFull));
        let names: Vec<_> = settings.names().collect();
        assert_eq!(names, [("sslrootcert", "prod"), ("sslcert", "app")]);
    }

    #[test]
    fn paths_are_refused_whatever_the_spelling() {
        for query in [
            "sslrootcert=/etc/passwd",
            "ssl-ca=../secrets/ca.crt",
            "sslcert=.hidden",
            "ssl-cert=a/b",
            "sslkey=/root/.ssh/id_rsa&sslcert=app",
            "sslrootcert=",
        ] {
            let error = settings(query).unwrap_err();
            assert!(
                matches!(
                    error,
                    TlsError::PathNotAllowed { .. } | TlsError::KeyWithoutItsCertificate { .. }
                ),
                "{query}: {error}"
            );
        }
    }

    #[test]
    fn modes_follow_libpq_and_a_named_ca_is_always_checked() {
        let mode = |query: &str| settings(query).map(|s| s.mode());
        assert_eq!(mode("").unwrap(), None);
        assert_eq!(mode("sslmode=allow").unwrap(), Some(SslMode::Allow));
        assert_eq!(mode("sslrootcert=prod").unwrap(), Some(SslMode::VerifyFull));
        assert_eq!(
            mode("sslmode=require&sslrootcert=prod").unwrap(),
            Some(SslMode::VerifyCa)
        );
        assert_eq!(mode("sslrootcert=system").unwrap(), Some(SslMode::VerifyFull));
        for refused in [
            "sslmode=prefer&sslrootcert=prod",
            "sslmode=disable&sslrootcert=prod",
            "sslmode=verify-ca&sslrootcert=system",
            "sslmode=on",
            "sslmode=require&ssl-mode=disable",
            "sslcrl=/etc/crl.pem",
        ] {
            assert!(mode(refused).is_err(), "{refused}");
        }
        let message = mode("sslmode=prefer&sslrootcert=prod").unwrap_err().to_string();
        assert!(message.contains("use sslmode=verify-full"), "{message}");
        let allow = PgConnectOptions::new().with_mode(SslMode::Allow);
        assert!(matches!(allow.get_ssl_mode(), PgSslMode::Prefer));
        let full = MySqlConnectOptions::new().with_mode(SslMode::VerifyFull);
        assert!(matches!(full.get_ssl_mode(), MySqlSslMode::VerifyIdentity));
    }

    #[test]
    fn names_must_be_configured_with_their_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("prod")).unwrap();
        std::fs::write(dir.path().join("prod/ca.crt"), "not a certificate").unwrap();
        let error = CertificateDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("holds no PEM"), "{error}");

        std::fs::remove_file(dir.path().join("prod/ca.crt")).unwrap();
        std::fs::write(dir.path().join("prod/tls.crt"), "x").unwrap();
        let error = CertificateDir::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("both tls.crt and tls.key"), "{error}");

        std::fs::remove_dir_all(dir.path().join("prod")).unwrap();
        let certificates = CertificateDir::open(dir.path()).unwrap();
        let unknown = settings("sslrootcert=prod").unwrap();
        let error = unknown
            .check_configured(Some(&certificates))
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"prod\" names no certificate"), "{error}");
        assert!(error.ends_with("holds []"), "{error}");
        let error = unknown.check_configured(None).unwrap_err().to_string();
        assert!(error.contains("it has no --tls-ca-dir"), "{error}");
        assert!(
            settings("sslmode=require")
                .unwrap()
                .check_configured(None)
                .is_ok()
        );
    }
}
