//! The executor's Flight service (shuffle and result fetches) behind mutual TLS: Ballista's own
//! service listens on loopback only, and a TLS front on the advertised port admits only peers
//! with a certificate of the cluster's CA.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::error::BallistaError;
use ballista_core::utils::create_grpc_server;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use kalla_core::cluster_tls::server::{TlsAcceptor, TlsListener, front};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Serves Ballista's Flight service behind `acceptor`, on the address Ballista gives it.
pub fn behind_tls(acceptor: TlsAcceptor, max_message_size: usize) -> Arc<ArrowFlightServerProvider> {
    Arc::new(move |work_dir, address, mut shutdown, grpc_config| {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let public = TcpListener::bind(address).await?;
            let internal = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let front = tokio::spawn(front(TlsListener::new(public, acceptor), internal.local_addr()?));
            tracing::info!(%address, "Flight service listening behind mutual TLS");
            let service = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size);
            let served = create_grpc_server(&grpc_config)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(internal).with_nodelay(Some(true)),
                    shutdown.recv(),
                )
                .await;
            front.abort();
            served.map_err(BallistaError::TonicError)
        })
    })
}
