//! Mutual TLS on the cluster plane: the runner (and `kalla query`), the scheduler and the
//! executors each hold a certificate signed by the cluster's CA, and each accepts a peer only if
//! it presents one too.
//!
//! - [`server`]: the TLS front of the scheduler and of each executor's Flight service (a client
//!   certificate is required; a rotated certificate is served without a restart);
//! - [`client`]: Ballista's gRPC and Flight clients over TLS with this process's certificate.
//!
//! Names: a client verifies the scheduler under the host name it dials, and executors (dialled
//! by the address they registered, often a pod IP) under [`EXECUTOR_NAME`], which every
//! executor's certificate carries.

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use thiserror::Error;

/// The DNS name every executor's certificate carries, and clients verify executors under.
pub const EXECUTOR_NAME: &str = "kalla-executor";

#[derive(Debug, Error)]
pub enum ClusterTlsError {
    #[error("{flag} {path}: {reason}")]
    File {
        flag: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "the cluster plane needs {cert}, {key} and {ca} (a certificate and key signed by the \
         cluster's CA, and that CA); {missing} missing. Or give {plaintext} to run it unencrypted \
         and unauthenticated on a network nobody else reaches"
    )]
    Incomplete {
        cert: &'static str,
        key: &'static str,
        ca: &'static str,
        plaintext: &'static str,
        missing: String,
    },
    #[error("{plaintext} and the cluster certificate flags exclude each other")]
    Contradictory { plaintext: &'static str },
    #[error(
        "{flag} push-staged needs a gRPC port on every executor, which Kalla does not put behind \
         TLS: use pull-staged (the default), or --plaintext"
    )]
    PushWithTls { flag: &'static str },
}

/// Kalla's default for Ballista's scheduling policy (`--scheduler-policy`,
/// `--task-scheduling-policy`): executors ask the scheduler for tasks, so they serve no gRPC port.
pub const DEFAULT_SCHEDULING_POLICY: &str = "pull-staged";

/// The flags a process reads its cluster certificates from (they differ between the runner,
/// whose `--tls-cert` is its API's, and the scheduler and executors).
#[derive(Debug, Clone, Copy)]
pub struct FlagNames {
    pub cert: &'static str,
    pub key: &'static str,
    pub ca: &'static str,
    pub plaintext: &'static str,
}

/// The scheduler's and executors' flag names.
pub const SERVICE_FLAGS: FlagNames = FlagNames {
    cert: "--tls-cert",
    key: "--tls-key",
    ca: "--tls-ca",
    plaintext: "--plaintext",
};

/// The flags of the cluster's clients (the runner, whose `--tls-cert` is its API's, and
/// `kalla query`).
pub const CLIENT_FLAGS: FlagNames = FlagNames {
    cert: "--cluster-tls-cert",
    key: "--cluster-tls-key",
    ca: "--cluster-tls-ca",
    plaintext: "--cluster-plaintext",
};

/// This process's certificate files for the cluster plane, checked when opened. The files are
/// read again for each new connection, so a rotated certificate is used without a restart.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    flags: FlagNames,
}

impl ClusterTls {
    pub fn open(cert: &Path, key: &Path, ca: &Path, flags: FlagNames) -> Result<Self, ClusterTlsError> {
        let tls = Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
            flags,
        };
        server::certified_key(&tls.cert, &tls.key, flags.into())?;
        tls.roots()?;
        Ok(tls)
    }

    /// The cluster's CA, as a trust store holding only it.
    pub fn roots(&self) -> Result<RootCertStore, ClusterTlsError> {
        let file_error = |reason: String| ClusterTlsError::File {
            flag: self.flags.ca,
            path: self.ca.display().to_string(),
            reason,
        };
        let certificates = CertificateDer::pem_file_iter(&self.ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| file_error(format!("no PEM certificate ({e})")))?;
        if certificates.is_empty() {
            return Err(file_error("holds no certificate".into()));
        }
        let mut roots = RootCertStore::empty();
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| file_error(format!("not a CA certificate rustls takes ({e})")))?;
        }
        Ok(roots)
    }

    fn read(&self, flag: &'static str, path: &Path) -> Result<Vec<u8>, ClusterTlsError> {
        std::fs::read(path).map_err(|e| ClusterTlsError::File {
            flag,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// The files as they are on disk now.
    pub fn pem_files(&self) -> Result<PemFiles, ClusterTlsError> {
        Ok(PemFiles {
            cert: self.read(self.flags.cert, &self.cert)?,
            key: self.read(self.flags.key, &self.key)?,
            ca: self.read(self.flags.ca, &self.ca)?,
        })
    }
}

/// A certificate chain, its key and the CA, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

/// How this process's cluster plane is carried.
#[derive(Debug, Clone)]
pub enum ClusterTransport {
    /// Mutual TLS with these certificates.
    Mutual(Arc<ClusterTls>),
    /// Plaintext and unauthenticated, because the operator asked for it.
    Plaintext,
}

impl ClusterTransport {
    /// The transport the given flags ask for: all three certificate files, or plaintext.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        plaintext: bool,
        flags: FlagNames,
    ) -> Result<Self, ClusterTlsError> {
        let given = [(flags.cert, cert), (flags.key, key), (flags.ca, ca)];
        let missing: Vec<&str> = given
            .iter()
            .filter(|(_, path)| path.is_none())
            .map(|(flag, _)| *flag)
            .collect();
        match (cert, key, ca) {
            _ if plaintext && missing.len() < 3 => Err(ClusterTlsError::Contradictory {
                plaintext: flags.plaintext,
            }),
            _ if plaintext => Ok(Self::Plaintext),
            (Some(cert), Some(key), Some(ca)) => {
                Ok(Self::Mutual(Arc::new(ClusterTls::open(cert, key, ca, flags)?)))
            }
            _ => Err(ClusterTlsError::Incomplete {
                cert: flags.cert,
                key: flags.key,
                ca: flags.ca,
                plaintext: flags.plaintext,
                missing: missing.join(", "),
            }),
        }
    }

    /// Refuses a scheduling policy (given by `flag`) the transport cannot secure.
    pub fn check_policy(
        &self,
        policy: TaskSchedulingPolicy,
        flag: &'static str,
    ) -> Result<(), ClusterTlsError> {
        match (self, policy) {
            (Self::Mutual(_), TaskSchedulingPolicy::PushStaged) => Err(ClusterTlsError::PushWithTls { flag }),
            _ => Ok(()),
        }
    }

    pub fn tls(&self) -> Option<&Arc<ClusterTls>> {
        match self {
            Self::Mutual(tls) => Some(tls),
            Self::Plaintext => None,
        }
    }

    /// Says at start-up that the cluster plane is open, when it is.
    pub fn warn_if_plaintext(&self, service: &str) {
        if matches!(self, Self::Plaintext) {
            tracing::warn!(
                "{service}: the cluster plane is PLAINTEXT and unauthenticated (--plaintext): \
                 anything that reaches its ports can submit plans and read shuffle data"
            );
        }
    }
}

/// The scheduler's and executors' cluster TLS flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterTlsArgs {
    /// This process's certificate chain (PEM) for the cluster plane, signed by --tls-ca; an
    /// executor's must carry the DNS name `kalla-executor`. Read again when it changes.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): every peer must present a certificate it signed.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Run the cluster plane unencrypted and unauthenticated (only on a network nobody else
    /// reaches).
    #[arg(long)]
    pub plaintext: bool,
}

impl ClusterTlsArgs {
    pub fn transport(&self) -> Result<ClusterTransport, ClusterTlsError> {
        ClusterTransport::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
            self.plaintext,
            SERVICE_FLAGS,
        )
    }
}

/// The cluster TLS flags of a client of the cluster (the runner, `kalla query`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// This client's certificate chain (PEM) on the cluster plane, signed by
    /// --cluster-tls-ca; needed with a remote scheduler unless --cluster-plaintext. Read again
    /// when it changes.
    #[arg(long)]
    pub cluster_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --cluster-tls-cert.
    #[arg(long)]
    pub cluster_tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): the scheduler and executors must present certificates it signed.
    #[arg(long)]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Talk to the scheduler and executors unencrypted and unauthenticated (only on a network
    /// nobody else reaches).
    #[arg(long)]
    pub cluster_plaintext: bool,
}

impl ClientTlsArgs {
    pub fn transport(&self) -> Result<ClusterTransport, ClusterTlsError> {
        ClusterTransport::from_flags(
            self.cluster_tls_cert.as_deref(),
            self.cluster_tls_key.as_deref(),
            self.cluster_tls_ca.as_deref(),
            self.cluster_plaintext,
            CLIENT_FLAGS,
        )
    }
}
