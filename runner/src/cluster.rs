//! Connecting a session to a Kalla cluster and registering the `kalla` CLI's sources as tables.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use ballista_core::config::BALLISTA_SHUFFLE_COMPRESSION_CODEC;
use ballista_core::extension::{BallistaConfigGrpcEndpoint, SessionConfigExt, SessionStateExt};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionContext;
use kalla_core::cluster_tls::{ClusterTransport, client};
use kalla_core::pool::redact_connection_url;
use kalla_core::recon::udf::tolerance_match;
use kalla_core::source::SourceContext;
use kalla_core::storage::{ObjectStores, S3Settings};
use kalla_core::{ClusterKey, session};
use tonic::transport::Channel;
use url::Url;

use crate::config::ShuffleCompression;
use crate::registry::{Located, engine_for};
use crate::scheduler_api::SchedulerApi;

/// A session on a remote cluster (`df://host:port`, reached through `transport`), or on an
/// embedded one when `scheduler` is `None`.
pub async fn connect(
    scheduler: Option<&str>,
    key: ClusterKey,
    transport: ClusterTransport,
) -> anyhow::Result<SessionContext> {
    Ok(ClusterEndpoint::start(
        scheduler,
        key,
        S3Settings::default(),
        ShuffleCompression::default(),
        transport,
    )
    .await?
    .base)
}

/// The runner's cluster: a fresh session for each job, and where to reach the scheduler.
#[derive(Clone)]
pub struct ClusterEndpoint {
    base: SessionContext,
    /// The scheduler's gRPC address (`http://host:port`, `https://` with TLS), embedded or remote.
    grpc_url: String,
    transport: ClusterTransport,
    /// The scheduler's REST API; `None` for the embedded cluster.
    pub rest: Option<SchedulerApi>,
    /// The executors' vcores as last asked, and when.
    vcores: Arc<Mutex<Option<(Instant, usize)>>>,
}

/// How long the executors' vcores are taken as known.
const VCORES_TTL: Duration = Duration::from_secs(10);

impl ClusterEndpoint {
    /// Connects to `scheduler` (`df://host:port`) through `transport`, or starts the embedded
    /// cluster (in this process, on loopback); `s3` opens `s3://` buckets in this process and in
    /// the embedded cluster's executors. Jobs' shuffle files are compressed with `shuffle`.
    pub async fn start(
        scheduler: Option<&str>,
        key: ClusterKey,
        s3: S3Settings,
        shuffle: ShuffleCompression,
        transport: ClusterTransport,
    ) -> anyhow::Result<Self> {
        let transport = match scheduler {
            Some(_) => transport,
            None => ClusterTransport::Plaintext,
        };
        let mut config = session::session_config(Some(key));
        // Poll for job status instead of waiting for pushed updates: the job id is known as soon
        // as the scheduler accepts a query (pushed, it can arrive only at the end), so a job can
        // be recorded, watched for stalls and cancelled while it runs.
        config
            .options_mut()
            .set("ballista.client.pull", "true")
            .context("cannot configure the Ballista client")?;
        config
            .options_mut()
            .set(BALLISTA_SHUFFLE_COMPRESSION_CODEC, shuffle.codec())
            .context("cannot configure the shuffle compression")?;
        if let Some(url) = scheduler {
            let authority = scheduler_url(url, false)?
                .trim_start_matches("http://")
                .to_string();
            config = session::on_transport(config, &transport, &authority);
        }
        let state = session::session_state_with_stores(config, Arc::new(ObjectStores::new(s3)))?;
        // Ballista serves gRPC and REST on the same port.
        let (grpc_url, rest) = match scheduler {
            Some(url) => {
                let url = scheduler_url(url, transport.tls().is_some())?;
                (
                    url.clone(),
                    Some(SchedulerApi::new(url, transport.tls().cloned())),
                )
            }
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
            transport,
            rest,
            vcores: Arc::default(),
        })
    }

    /// A client of the scheduler's gRPC API (job status, cancellation).
    pub async fn scheduler(&self) -> anyhow::Result<SchedulerGrpcClient<Channel>> {
        let channel = client::connect(self.transport.tls(), &self.grpc_url)
            .await
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("cannot reach the scheduler at {}", self.grpc_url))?;
        Ok(SchedulerGrpcClient::new(channel))
    }

    /// How Ballista's Flight clients reach the executors holding a job's result: with TLS, this
    /// endpoint set-up; `None` for plaintext.
    pub fn flight_endpoint(&self) -> Option<Arc<BallistaConfigGrpcEndpoint>> {
        self.base
            .state()
            .config()
            .ballista_override_create_grpc_client_endpoint()
    }

    /// [`Self::session`] for running queries: on a remote cluster its shuffles have as many
    /// partitions as the executors have vcores now (DataFusion would take the runner's own core
    /// count, however small its machine and however large the cluster).
    pub async fn query_session(&self) -> SessionContext {
        let session = self.session();
        if let Some(vcores) = self.executor_vcores().await {
            let state = session.state_ref();
            let mut state = state.write();
            state.config_mut().options_mut().execution.target_partitions = vcores.max(1);
        }
        session
    }

    /// The vcores of the executors registered with a remote scheduler (as of a few seconds ago).
    async fn executor_vcores(&self) -> Option<usize> {
        let rest = self.rest.as_ref()?;
        let known = *self.vcores.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((asked, vcores)) = known
            && asked.elapsed() < VCORES_TTL
        {
            return Some(vcores);
        }
        let executors = match rest.executors().await {
            Ok(executors) => executors,
            Err(error) => {
                tracing::warn!(%error, "cannot ask the scheduler for its executors");
                return None;
            }
        };
        let vcores = executors.iter().map(|e| e.specification.vcores).sum();
        *self.vcores.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), vcores));
        Some(vcores)
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

/// The scheduler's HTTP address (gRPC and REST) for a `df://host:port` URL; `https` with TLS.
pub fn scheduler_url(scheduler: &str, tls: bool) -> anyhow::Result<String> {
    let address = scheduler
        .strip_prefix("df://")
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .with_context(|| format!("scheduler URL {scheduler:?} must look like df://HOST:PORT"))?;
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{address}"))
}

/// A table to register: `NAME=URI` on the command line, read by the engine its URI implies.
#[derive(Debug, Clone)]
pub struct TableSource {
    pub name: String,
    pub located: Located,
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
        let location = Url::parse(uri).map_err(|e| format!("{e} (in {})", redact_connection_url(uri)))?;
        let engine = engine_for(&location, None).map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_string(),
            located: Located { engine, location },
        })
    }
}

/// Plans each source with its engine and registers it under its name.
pub async fn register_tables(
    ctx: &SessionContext,
    tables: &[TableSource],
    context: &SourceContext,
) -> anyhow::Result<()> {
    for table in tables {
        let registered = async {
            let provider = table.located.table(ctx, context).await?;
            ctx.register_table(table.name.as_str(), provider)?;
            anyhow::Ok(())
        };
        registered
            .await
            .with_context(|| format!("cannot register table {:?}", table.name))?;
    }
    Ok(())
}
