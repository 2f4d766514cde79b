//! The one session setup shared by the scheduler, the executors and clients.

use std::sync::Arc;

use ballista_core::extension::SessionConfigExt;
use datafusion::common::Result;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{FunctionRegistry, SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;

use crate::cluster_tls::ClusterTransport;
use crate::cluster_tls::client::endpoint_override;
use crate::codec::{KallaLogicalCodec, KallaPhysicalCodec};
use crate::recon::udf::tolerance_match;
use crate::seal::ClusterKey;
use crate::storage::ObjectStores;

/// A Ballista session config carrying Kalla's codecs. `key` is needed only where Postgres
/// scans execute (executors, embedded clusters).
pub fn session_config(key: Option<ClusterKey>) -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(KallaLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(KallaPhysicalCodec::new(key)))
}

/// `config` for a cluster whose plane is `transport`: with mutual TLS, Ballista's clients (to
/// the scheduler at `scheduler`, `host:port`, and to executors' Flight) speak TLS with this
/// process's certificate.
pub fn on_transport(config: SessionConfig, transport: &ClusterTransport, scheduler: &str) -> SessionConfig {
    match transport.tls() {
        None => config,
        Some(tls) => config
            .with_ballista_use_tls(true)
            .with_ballista_override_create_grpc_client_endpoint(endpoint_override(
                tls.clone(),
                scheduler.to_string(),
            )),
    }
}

/// The session state every Kalla process plans with, with Kalla's functions registered.
pub fn session_state(config: SessionConfig) -> Result<SessionState> {
    let mut state = ballista_core::utils::default_session_builder(config)?;
    state.register_udf(tolerance_match())?;
    Ok(state)
}

/// [`session_state`] whose runtime opens `s3://` buckets through `stores` (the scheduler lists
/// cached files there; clients and embedded executors read and write them).
pub fn session_state_with_stores(config: SessionConfig, stores: Arc<ObjectStores>) -> Result<SessionState> {
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(stores)
        .build_arc()?;
    Ok(SessionStateBuilder::new_from_existing(session_state(config)?)
        .with_runtime_env(runtime)
        .build())
}
