//! HTTPS for the runner's API: the cluster plane's TLS listener (`kalla_core::cluster_tls`) as
//! a listener for `axum::serve`, without client certificates; a rotated certificate is served
//! without a restart.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use kalla_core::cluster_tls::server::{self, PairFlags};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// The flags the API's certificate and key are given with.
const API_FLAGS: PairFlags = PairFlags {
    cert: "--tls-cert",
    key: "--tls-key",
};

pub struct TlsListener(server::TlsListener);

impl TlsListener {
    /// Serves HTTP/1.1 with the certificate chain at `cert` and the key at `key` (PEM files),
    /// checked now.
    pub fn new(tcp: TcpListener, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        Self::offering(tcp, cert, key, server::HTTP1)
    }

    /// As [`TlsListener::new`], for gRPC (Flight SQL), which negotiates HTTP/2.
    pub fn grpc(tcp: TcpListener, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        Self::offering(tcp, cert, key, server::GRPC)
    }

    fn offering(tcp: TcpListener, cert: &Path, key: &Path, alpn: &[&[u8]]) -> anyhow::Result<Self> {
        Ok(Self(server::TlsListener::new(
            tcp,
            server::acceptor(cert, key, API_FLAGS, alpn)?,
        )))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Checks the pair without serving it (for `--check-config`).
pub fn check(cert: &Path, key: &Path) -> anyhow::Result<()> {
    Ok(server::certified_key(cert, key, API_FLAGS).map(drop)?)
}
