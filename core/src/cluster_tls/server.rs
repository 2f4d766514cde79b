//! The server side: a TLS listener whose handshakes run concurrently and whose certificate is read
//! again when its files change, and the front that puts mutual TLS before a service listening on
//! loopback only.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
pub use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{ClusterTls, ClusterTlsError, FlagNames};

/// A client that has not finished its handshake by then is dropped, so slow or silent clients
/// cannot hold connections open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond this many unfinished handshakes no connection is accepted until one ends, so silent
/// clients cannot use up the process's file descriptors.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Accepts TCP connections and yields those whose TLS handshake succeeded. Handshakes run
/// concurrently, so one slow client does not hold up the others.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        Self {
            tcp,
            acceptor,
            handshakes: JoinSet::new(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection whose handshake succeeded.
    pub async fn accept(&mut self) -> (TlsStream<TcpStream>, SocketAddr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(error) => {
                        // Out of file descriptors and the like pass.
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

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        // Small answers must not wait for Nagle's algorithm and the client's delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Some((stream, peer)),
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "refused a connection: TLS handshake failed");
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

/// The flags a certificate and its key were given with, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct PairFlags {
    pub cert: &'static str,
    pub key: &'static str,
}

impl From<FlagNames> for PairFlags {
    fn from(flags: FlagNames) -> Self {
        Self {
            cert: flags.cert,
            key: flags.key,
        }
    }
}

/// The protocol an HTTP/1.1 server offers in ALPN.
pub const HTTP1: &[&[u8]] = &[b"http/1.1"];
/// The protocol a gRPC server offers: clients insist on negotiating HTTP/2.
pub const GRPC: &[&[u8]] = &[b"h2"];

/// TLS with this certificate (re-read when its files change) and no client certificate, offering
/// the protocols `alpn` (by ALPN).
pub fn acceptor(
    cert: &Path,
    key: &Path,
    flags: PairFlags,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, ClusterTlsError> {
    let certificate = ReloadingCertificate::load(cert, key, flags)?;
    let mut config = ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(protocol_error)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Mutual TLS: this process's certificate, and a client certificate the cluster's CA signed.
pub fn mutual_acceptor(tls: &ClusterTls) -> Result<TlsAcceptor, ClusterTlsError> {
    let certificate = ReloadingCertificate::load(&tls.cert, &tls.key, tls.flags.into())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(tls.roots()?), crypto())
        .build()
        .map_err(|e| ClusterTlsError::File {
            flag: tls.flags.ca,
            path: tls.ca.display().to_string(),
            reason: format!("cannot verify clients with it ({e})"),
        })?;
    let mut config = ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(protocol_error)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(certificate));
    // gRPC clients insist on negotiating HTTP/2; the REST API also takes HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn protocol_error(error: rustls::Error) -> ClusterTlsError {
    ClusterTlsError::File {
        flag: "TLS",
        path: "protocol versions".into(),
        reason: error.to_string(),
    }
}

/// Serves `listener` and passes each authenticated connection's bytes to `backend`, a loopback
/// port only this process listens on; runs until the process ends.
pub async fn front(mut listener: TlsListener, backend: SocketAddr) {
    loop {
        let (mut client, peer) = listener.accept().await;
        tokio::spawn(async move {
            let mut service = match TcpStream::connect(backend).await {
                Ok(service) => service,
                Err(error) => {
                    tracing::warn!(%peer, %backend, %error, "cannot reach the service behind the TLS front");
                    return;
                }
            };
            if let Err(error) = service.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut service).await {
                tracing::debug!(%peer, %error, "connection through the TLS front ended");
            }
        });
    }
}

/// The served certificate, re-read when either file's modification time changes (Kubernetes
/// replaces a mounted Secret's files; cert-manager renews them). A new pair that does not load
/// is logged and the previous one kept.
#[derive(Debug)]
struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    flags: PairFlags,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    certified: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

impl ReloadingCertificate {
    fn load(cert: &Path, key: &Path, flags: PairFlags) -> Result<Self, ClusterTlsError> {
        let modified = modification_times(cert, key);
        let certified = certified_key(cert, key, flags)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            flags,
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
        match certified_key(&self.cert, &self.key, self.flags) {
            Ok(certified) => {
                current.certified = certified;
                tracing::info!(cert = %self.cert.display(), "serving the renewed certificate");
            }
            Err(error) => tracing::warn!(
                %error,
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
pub fn certified_key(
    cert: &Path,
    key: &Path,
    flags: PairFlags,
) -> Result<Arc<CertifiedKey>, ClusterTlsError> {
    let file_error = |flag: &'static str, path: &Path, reason: String| ClusterTlsError::File {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(flags.cert, cert, format!("no PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(file_error(flags.cert, cert, "holds no certificate".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error(flags.key, key, format!("no PEM private key ({e})")))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&private_key)
        .map_err(|e| file_error(flags.key, key, format!("not a key rustls can sign with ({e})")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        file_error(
            flags.key,
            key,
            format!("is not the key of {} {}", flags.cert, cert.display()),
        )
    })?;
    Ok(Arc::new(certified))
}
