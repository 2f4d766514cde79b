//! HTTPS for the runner's API: a rustls listener for `axum::serve` whose certificate is read
//! again when its files change, so a rotated certificate is served without a restart.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A client that has not finished its handshake by then is dropped, so slow or silent clients
/// cannot hold connections open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond this many unfinished handshakes no connection is accepted until one ends, so silent
/// clients cannot use up the process's file descriptors.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Accepts TCP connections and hands `axum::serve` those whose TLS handshake succeeded.
/// Handshakes run concurrently, so one slow client does not hold up the others.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves the certificate chain at `cert` with the key at `key` (PEM files), checked now.
    pub fn new(tcp: TcpListener, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let certificate = ReloadingCertificate::load(cert, key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(certificate));
        Ok(Self {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshakes: JoinSet::new(),
        })
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        // Small JSON answers must not wait for Nagle's algorithm and the client's delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Some((stream, peer)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(error) => {
                        // As axum's own listener: out of file descriptors and the like pass.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(handshake) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = handshake {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The served certificate, re-read when either file's modification time changes (Kubernetes
/// replaces a mounted Secret's files; cert-manager renews them). A new pair that does not load
/// is logged and the previous one kept.
#[derive(Debug)]
struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    certified: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

impl ReloadingCertificate {
    fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let modified = modification_times(cert, key);
        let certified = certified_key(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Loaded { certified, modified }),
        })
    }

    fn reload_if_changed(&self) {
        let modified = modification_times(&self.cert, &self.key);
        if self.current.read().expect("certificate lock").modified == modified {
            return;
        }
        let mut current = self.current.write().expect("certificate lock");
        if current.modified == modified {
            return;
        }
        // Tried once per change, so a half-written pair is retried when its second file lands.
        current.modified = modified;
        match certified_key(&self.cert, &self.key) {
            Ok(certified) => {
                current.certified = certified;
                tracing::info!(cert = %self.cert.display(), "serving the renewed certificate");
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "the certificate files changed but do not load; still serving the previous one"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        Some(self.current.read().expect("certificate lock").certified.clone())
    }
}

fn modification_times(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

/// The chain at `cert` with the key at `key`, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("--tls-cert {}: no PEM certificate chain", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "--tls-cert {} holds no certificate",
        cert.display()
    );
    let private_key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}: no PEM private key", key.display()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&private_key)
        .with_context(|| format!("--tls-key {}: not a key rustls can sign with", key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().with_context(|| {
        format!(
            "--tls-key {} is not the key of --tls-cert {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Checks the pair without serving it (for `--check-config`).
pub fn check(cert: &Path, key: &Path) -> anyhow::Result<()> {
    certified_key(cert, key).map(drop)
}
