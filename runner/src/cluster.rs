//! Connecting a session to a Kalla cluster and registering Postgres sources as tables.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionContext;
use kalla_core::postgres::{PartitionOptions, PgTableProvider};
use kalla_core::recon::udf::tolerance_match;
use kalla_core::storage::{ObjectStores, S3Settings};
use kalla_core::{ClusterKey, SourceUri, session};
use tonic::transport::Channel;

/// A session on a remote cluster (`df://host:port`), or on an embedded one when `scheduler` is `None`.
pub async fn connect(scheduler: Option<&str>, key: ClusterKey) -> anyhow::Result<SessionContext> {
    Ok(ClusterEndpoint::start(scheduler, key, S3Settings::default())
        .await?
        .base)
}

/// The runner's cluster: a fresh session for each job, and where to reach the scheduler.
#[derive(Clone)]
pub struct ClusterEndpoint {
    base: SessionContext,
    /// The scheduler's gRPC address (`http://host:port`), embedded or remote.
    grpc_url: String,
    /// The scheduler's REST address; `None` for the embedded cluster.
    pub rest_url: Option<String>,
}

impl ClusterEndpoint {
    /// Connects to `scheduler` (`df://host:port`), or starts the embedded cluster; `s3` opens
    /// `s3://` buckets in this process and in the embedded cluster's executors.
    pub async fn start(scheduler: Option<&str>, key: ClusterKey, s3: S3Settings) -> anyhow::Result<Self> {
        let config = session::session_config(Some(key));
        let state = session::session_state_with_stores(config, Arc::new(ObjectStores::new(s3)))?;
        let (grpc_url, rest_url) = match scheduler {
            Some(url) => (scheduler_rest_url(url)?, Some(scheduler_rest_url(url)?)),
            None => (start_embedded(&state).await?, None),
        };
        let state = state
            .upgrade_for_ballista(grpc_url.clone())
            .context("cannot set up a Ballista session")?;
        let base = SessionContext::new_with_state(state);
        // Ballista's upgrade replaces the function list; Kalla's own functions go back in.
        base.register_udf(tolerance_match().as_ref().clone());
        Ok(Self {
            base,
            grpc_url,
            rest_url,
        })
    }

    /// A client of the scheduler's gRPC API (job status, cancellation).
    pub async fn scheduler(&self) -> anyhow::Result<SchedulerGrpcClient<Channel>> {
        SchedulerGrpcClient::connect(self.grpc_url.clone())
            .await
            .with_context(|| format!("cannot reach the scheduler at {}", self.grpc_url))
    }

    /// A session on the cluster with an empty catalog of its own, so one job's tables never
    /// show up in another's.
    pub fn session(&self) -> SessionContext {
        let state = SessionStateBuilder::new_from_existing(self.base.state())
            .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
            .build();
        // A new catalog list starts empty: bare table names need the default catalog and schema.
        let options = &state.config().options().catalog;
        let schema = Arc::new(MemorySchemaProvider::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema(&options.default_schema, schema)
            .expect("a memory catalog takes any schema");
        state
            .catalog_list()
            .register_catalog(options.default_catalog.clone(), catalog);
        SessionContext::new_with_state(state)
    }
}

/// Starts an in-process scheduler and executor (Ballista's standalone mode, set up here so that
/// the scheduler's address is known) and returns the scheduler's gRPC URL.
async fn start_embedded(state: &SessionState) -> anyhow::Result<String> {
    let address = ballista_scheduler::standalone::new_standalone_scheduler_from_state(state)
        .await
        .context("cannot start the embedded scheduler")?;
    let url = format!("http://localhost:{}", address.port());
    let mut attempts = 0;
    let scheduler = loop {
        match SchedulerGrpcClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(error) if attempts >= 50 => {
                return Err(error).context("the embedded scheduler does not answer");
            }
            Err(_) => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let parallelism = state.config().ballista_standalone_parallelism();
    ballista_executor::new_standalone_executor_from_state(scheduler, parallelism, state)
        .await
        .context("cannot start the embedded executor")?;
    Ok(url)
}

/// The scheduler's REST address for a `df://host:port` URL.
pub fn scheduler_rest_url(scheduler: &str) -> anyhow::Result<String> {
    let address = scheduler
        .strip_prefix("df://")
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .with_context(|| format!("scheduler URL {scheduler:?} must look like df://HOST:PORT"))?;
    Ok(format!("http://{address}"))
}

/// A table to register: `NAME=URI` on the command line.
#[derive(Debug, Clone)]
pub struct TableSource {
    pub name: String,
    pub uri: SourceUri,
}

impl std::str::FromStr for TableSource {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected NAME=URI, e.g. orders=postgres://user@host/db?table=public.orders";
        let (name, uri) = value.split_once('=').ok_or(EXPECTED)?;
        if name.contains("://") {
            return Err(format!("the table has no name: {EXPECTED}"));
        }
        if name.is_empty() {
            return Err("table name before '=' is empty".into());
        }
        let uri = SourceUri::parse(uri).map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_string(),
            uri,
        })
    }
}

/// Describes each source and registers it under its name.
pub async fn register_tables(
    ctx: &SessionContext,
    tables: &[TableSource],
    key: &ClusterKey,
    options: &PartitionOptions,
) -> anyhow::Result<()> {
    for table in tables {
        let provider = PgTableProvider::connect(&table.uri, key, options)
            .await
            .with_context(|| format!("cannot register table {:?}", table.name))?;
        ctx.register_table(table.name.as_str(), Arc::new(provider))
            .with_context(|| format!("cannot register table {:?}", table.name))?;
    }
    Ok(())
}
