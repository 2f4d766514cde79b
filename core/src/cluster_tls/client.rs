//! The client side: Ballista's gRPC and Flight endpoints over mutual TLS.
//!
//! Ballista builds each endpoint and then hands it to an override function; the one here adds
//! TLS with this process's certificate, read from disk for every new connection (a rotated
//! certificate is used without a restart), and trusts only the cluster's CA.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::EndpointOverrideFn;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{ClusterTls, EXECUTOR_NAME};

/// How long a new connection may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The override for Ballista's endpoints: mutual TLS to `scheduler` (`host:port`, verified under
/// its host name) and to executors (any other address, verified under [`EXECUTOR_NAME`]).
pub fn endpoint_override(tls: Arc<ClusterTls>, scheduler: String) -> EndpointOverrideFn {
    Arc::new(move |endpoint: Endpoint| {
        let endpoint = with_https(endpoint)?;
        let authority = endpoint.uri().authority().map(|a| a.as_str().to_string());
        let files = tls.pem_files()?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(files.ca))
            .identity(Identity::from_pem(files.cert, files.key));
        if authority.as_deref() != Some(scheduler.as_str()) {
            config = config.domain_name(EXECUTOR_NAME);
        }
        Ok(endpoint.tls_config(config)?)
    })
}

/// Ballista names some peers `http://…` whatever the session says (an executor's scheduler);
/// tonic speaks TLS only to `https://` URIs, so such an endpoint is made again for `https`.
fn with_https(endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
    if endpoint.uri().scheme_str() != Some("http") {
        return Ok(endpoint);
    }
    let authority = endpoint.uri().authority().map(|a| a.as_str()).unwrap_or_default();
    Ok(Endpoint::from_shared(format!("https://{authority}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

/// A gRPC channel to `url` (`https://host:port` of the scheduler) through [`endpoint_override`].
pub async fn connect(
    tls: Option<&Arc<ClusterTls>>,
    url: &str,
) -> Result<tonic::transport::Channel, Box<dyn std::error::Error + Send + Sync>> {
    let endpoint = Endpoint::from_shared(url.to_string())?.connect_timeout(CONNECT_TIMEOUT);
    let endpoint = match tls {
        Some(tls) => {
            let authority = endpoint.uri().authority().map(|a| a.as_str().to_string());
            endpoint_override(tls.clone(), authority.unwrap_or_default())(endpoint)?
        }
        None => endpoint,
    };
    Ok(endpoint.connect().await?)
}
