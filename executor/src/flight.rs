//! The executor's Flight service (shuffle and result fetches) served with mutual TLS: only peers
//! with a certificate of the cluster's CA get past the handshake.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::error::BallistaError;
use ballista_core::utils::create_grpc_server;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use kalla_core::cluster_tls::server::{TlsAcceptor, TlsListener};
use tokio::net::TcpListener;

/// Serves Ballista's Flight service with `acceptor`, on the address Ballista gives it.
pub fn behind_tls(acceptor: TlsAcceptor, max_message_size: usize) -> Arc<ArrowFlightServerProvider> {
    Arc::new(move |work_dir, address, mut shutdown, grpc_config| {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let listener = TlsListener::new(TcpListener::bind(address).await?, acceptor);
            tracing::info!(%address, "Flight service listening with mutual TLS");
            let connections = futures::stream::unfold(listener, |mut listener| async move {
                let (connection, _) = listener.accept().await;
                Some((Ok::<_, std::io::Error>(connection), listener))
            });
            let service = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size);
            create_grpc_server(&grpc_config)
                .add_service(service)
                .serve_with_incoming_shutdown(connections, shutdown.recv())
                .await
                .map_err(BallistaError::TonicError)
        })
    })
}
