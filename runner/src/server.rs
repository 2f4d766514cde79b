//! Starting the runner: credentials, metadata DB, cluster, and the HTTP server until SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use kalla_core::pool::{PoolRegistry, PoolSettings, redact_connection_url};
use kalla_core::source::SourceContext;
use kalla_core::{ClusterKey, SecretsKey};
use tokio::net::TcpListener;

use crate::access::Tokens;
use crate::api::{self, AppState};
use crate::cache::{Cache, CacheSettings};
use crate::catalog::Catalog;
use crate::cluster::ClusterEndpoint;
use crate::config::RunnerConfig;
use crate::connections::Connections;
use crate::https::TlsListener;
use crate::job_outputs::JobOutputs;
use crate::jobs::{CallbackSettings, JobSettings, Jobs};
use crate::local_state::{self, Origin};
use crate::metadata::MetadataDb;
use crate::query::Queries;
use crate::recipes::Recipes;
use crate::registry::Registry;
use crate::schedules::Schedules;
use crate::secrets::Secrets;
use crate::sources::Sources;

/// How often stored secrets are looked at during a rotation of the secrets key.
const RESEAL_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(config: RunnerConfig) -> anyhow::Result<()> {
    config.validate()?;
    local_state::prepare_data_dir(&config.data_dir)?;
    let secrets_key = secrets_key(&config)?;
    let key = cluster_key(&config)?;
    let token = api_token(&config)?;
    configure_source_pools(&config)?;
    let metadata = open_metadata(&config).await?;
    tracing::info!(backend = ?metadata.backend(), "metadata database ready");
    let cluster = start_cluster(&config, &key).await?;
    let state = services(&config, metadata, cluster, secrets_key, key, token).await?;
    let jobs = state.jobs.clone();
    listen(&config, state).await?;
    jobs.hand_over().await;
    tracing::info!("kalla-runner stopped");
    Ok(())
}

/// The bounds every source connection pool of this process keeps.
fn configure_source_pools(config: &RunnerConfig) -> anyhow::Result<()> {
    PoolRegistry::global().configure(PoolSettings {
        max_connections: config.source_pool_max_connections,
        idle_timeout: Duration::from_secs(config.source_pool_idle_timeout_secs),
        acquire_timeout: Duration::from_secs(config.source_connect_timeout_secs.max(1)),
        application_name: "kalla-runner".into(),
        ping_when_idle_for: Duration::from_millis(100),
        certificates: config.database_tls.open()?,
        hosts: config.host_policy()?,
    });
    Ok(())
}

/// The runner's services, each given what it reads from, and the workers and sweeps they run.
async fn services(
    config: &RunnerConfig,
    metadata: MetadataDb,
    cluster: ClusterEndpoint,
    secrets_key: SecretsKey,
    key: ClusterKey,
    token: String,
) -> anyhow::Result<AppState> {
    let secrets = Secrets::new(metadata.clone(), secrets_key);
    let grace = Duration::from_secs(config.cache_grace_period_secs);
    let context = Arc::new(SourceContext {
        key,
        scans: config.scan_options(),
        s3: config.s3(),
        count_cap: config.preview_count_cap,
        files: config.file_access()?,
    });
    tokio::spawn(secrets.clone().run_reseals(RESEAL_INTERVAL));
    let registry = Registry::new(metadata.clone(), secrets.clone(), context, grace);
    let sources = Sources::new(registry.clone());
    let connections = Connections::new(metadata.clone(), registry.clone());
    let cache_settings = CacheSettings {
        root: config.cache_root()?,
        grace,
        s3: config.s3(),
    };
    tracing::info!(cache = %cache_settings.root.as_str(), "parquet cache");
    let cache = Cache::new(
        metadata.clone(),
        registry.clone(),
        cluster.clone(),
        cache_settings,
    );
    tokio::spawn(
        cache
            .clone()
            .run_deletions(Duration::from_secs(config.cache_sweep_interval_secs.max(1))),
    );
    let outputs = JobOutputs::new(metadata.clone(), config.cache_root()?);
    let catalog = Catalog::new(
        metadata.clone(),
        registry.clone(),
        cache.clone(),
        outputs,
        cluster.clone(),
    );
    let queries = Queries::new(catalog.clone());
    let recipes = Recipes::new(metadata.clone(), catalog.clone(), cluster.clone());
    let jobs = Jobs::start(
        metadata.clone(),
        catalog,
        recipes.clone(),
        cluster.clone(),
        JobSettings {
            root: config.cache_root()?,
            s3: config.s3(),
            concurrency: config.job_concurrency,
            queue_capacity: config.job_queue_capacity,
            stall_timeout: Duration::from_secs(config.job_stall_timeout_secs),
            pair_partition_bytes: config.pair_partition_mib.max(1) * 1024 * 1024,
            callbacks: CallbackSettings {
                hosts: config.host_policy()?,
                allow_http: config.allow_http_callbacks,
                signing_keys: callback_signing_keys(config)?,
            },
            lease: Duration::from_secs(config.job_lease_secs.max(1)),
            results_retention: config
                .results_retention_days
                .map(|days| Duration::from_secs_f64(days * 86_400.0)),
        },
    )
    .await
    .context("cannot start the job workers")?;
    let schedules = Schedules::new(metadata.clone(), recipes.clone(), jobs.clone());
    tokio::spawn(schedules.clone().run_ticks());
    let state = AppState {
        tokens: Tokens::new(metadata.clone(), token),
        secrets,
        registry,
        recipes,
        jobs,
        schedules,
        sources,
        connections,
        cache,
        queries,
        metadata,
        cluster,
        metrics: api::install_recorder(),
    };
    Ok(state)
}

/// Serves the API (HTTPS when a certificate is configured) until SIGTERM or Ctrl-C.
async fn listen(config: &RunnerConfig, state: AppState) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let address = listener.local_addr()?;
    if let Some(bind) = config.flight_bind {
        let flight = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind} (--flight-bind)"))?;
        crate::flight::announce(flight.local_addr()?, config.https().is_some());
        let https = config.https().map(|(c, k)| (c.to_path_buf(), k.to_path_buf()));
        let served = crate::flight::serve(flight, https, state.clone(), shutdown_signal());
        tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::error!(error = format!("{error:#}"), "Flight SQL stopped");
            }
        });
    }
    let app = api::router(state, &config.cors_allowed_origins);
    match config.https() {
        Some((cert, key)) => {
            let listener = TlsListener::new(listener, cert, key)?;
            announce_listening("https", address);
            serve(listener, app).await?;
        }
        None => {
            announce_listening("http", address);
            // Small JSON answers must not wait for Nagle's algorithm and the client's delayed ACK.
            let listener = listener.tap_io(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
            });
            serve(listener, app).await?;
        }
    }
    Ok(())
}

fn announce_listening(scheme: &str, address: SocketAddr) {
    tracing::info!(%address, scheme, "kalla-runner listening");
    println!("kalla-runner listening on {scheme}://{address}");
}

/// Serves `app` until SIGTERM or Ctrl-C, finishing in-flight requests.
async fn serve<L>(listener: L, app: axum::Router) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")
}

async fn open_metadata(config: &RunnerConfig) -> anyhow::Result<MetadataDb> {
    let url = config.metadata_url();
    MetadataDb::open(&url).await.with_context(|| {
        let what_to_do = match &config.database_url {
            Some(_) => "check --database-url / KALLA_DATABASE_URL and that the server accepts connections",
            None => "check that the data dir is writable, or set --database-url / KALLA_DATABASE_URL",
        };
        format!(
            "cannot open the metadata database {}; {what_to_do}",
            redact_connection_url(&url)
        )
    })
}

/// The configured secrets key, else (embedded mode; [`RunnerConfig::validate`] requires one with a
/// remote scheduler) one generated into the data dir, where the next start finds it again.
fn secrets_key(config: &RunnerConfig) -> anyhow::Result<SecretsKey> {
    if let Some(path) = &config.secret_key_file {
        announce("secrets key", &Origin::Stored(path.clone()));
        return SecretsKey::from_file(path).context("--secret-key-file / KALLA_SECRET_KEY_FILE");
    }
    let configured = config.secret_key.as_ref().map(|k| k.expose());
    let (key, origin) = local_state::load_or_generate(
        &config.data_dir,
        local_state::KEY_FILE,
        configured,
        local_state::generate_key,
    )?;
    announce("secrets key", &origin);
    SecretsKey::from_base64(&key).context("KALLA_SECRET_KEY")
}

/// The configured cluster key, else (embedded mode) a fresh one: an embedded cluster lives and dies
/// with this process, so nothing sealed for it outlives the key.
fn cluster_key(config: &RunnerConfig) -> anyhow::Result<ClusterKey> {
    if let Some(path) = &config.cluster_key_file {
        return ClusterKey::from_file(path).context("--cluster-key-file / KALLA_CLUSTER_KEY_FILE");
    }
    match &config.cluster_key {
        Some(key) => ClusterKey::from_base64(key.expose()).context("KALLA_CLUSTER_KEY / --cluster-key"),
        None => Ok(ClusterKey::generate()),
    }
}

/// The configured callback signing keys, else one generated into the data dir.
fn callback_signing_keys(config: &RunnerConfig) -> anyhow::Result<Vec<String>> {
    let configured = config.callback_signing_keys.as_ref().map(|k| k.expose());
    let (keys, origin) = local_state::load_or_generate(
        &config.data_dir,
        local_state::CALLBACK_KEY_FILE,
        configured,
        local_state::generate_token,
    )?;
    announce("callback signing key", &origin);
    Ok(keys.split(',').map(|key| key.trim().to_string()).collect())
}

fn api_token(config: &RunnerConfig) -> anyhow::Result<String> {
    let configured = config.api_token.as_ref().map(|t| t.expose());
    let (token, origin) = local_state::load_or_generate(
        &config.data_dir,
        local_state::TOKEN_FILE,
        configured,
        local_state::generate_token,
    )?;
    if token.is_empty() {
        bail!("the API token is empty; set KALLA_API_TOKEN or delete the empty token file");
    }
    announce("API token", &origin);
    Ok(token)
}

fn announce(what: &str, origin: &Origin) {
    match origin {
        Origin::Configured => tracing::info!("{what}: configured"),
        Origin::Stored(path) => tracing::info!("{what}: read from {}", path.display()),
        Origin::Generated(path) => {
            tracing::info!("{what}: generated into {}", path.display());
            println!("generated the {what} into {} (mode 0600)", path.display());
        }
    }
}

async fn start_cluster(config: &RunnerConfig, key: &ClusterKey) -> anyhow::Result<ClusterEndpoint> {
    let cluster = ClusterEndpoint::start(
        config.scheduler.as_deref(),
        key.clone(),
        config.s3(),
        config.shuffle_compression,
        config.cluster_transport()?,
    )
    .await?;
    match &cluster.rest {
        Some(scheduler) => tracing::info!(scheduler = %scheduler.url(), "using the remote cluster"),
        None => tracing::info!("embedded cluster started"),
    }
    Ok(cluster)
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
