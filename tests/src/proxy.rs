//! A TCP proxy on a loopback port that a test can take down and bring back, so a server that keeps
//! its state in memory (moto) can look stopped to its clients without losing that state.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::ports::free_port;

pub struct TcpProxy {
    pub port: u16,
    target: SocketAddr,
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl TcpProxy {
    /// Forwards a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let proxy = Self {
            port: free_port(),
            target,
            serving: Mutex::new(None),
        };
        proxy.resume().await;
        proxy
    }

    /// Resets every open connection and refuses new ones, as a stopped server does.
    pub async fn stop(&self) {
        let serving = self.serving.lock().unwrap().take();
        if let Some(serving) = serving {
            serving.abort();
            // Only once the task is gone is the port free again.
            let _ = serving.await;
        }
    }

    /// Accepts connections again, on the same port.
    pub async fn resume(&self) {
        self.stop().await;
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on port {}: {e}", self.port));
        let target = self.target;
        let serving = tokio::spawn(async move {
            // Dropped with the accepting task, which aborts every connection it forwards.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.serving.lock().unwrap() = Some(serving);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.lock().unwrap().take() {
            serving.abort();
        }
    }
}
