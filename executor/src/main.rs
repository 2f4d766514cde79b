//! `kalla-executor`: Ballista's executor with Kalla's codecs and its own source pools.
//!
//! It accepts every flag of Ballista's stock `ballista-executor`, each also settable as a
//! `KALLA_*` environment variable, plus the source pool settings below. It needs the cluster
//! key (`KALLA_SECRET_KEY`) to unseal source credentials, and S3 settings (`--s3-*`, else the
//! standard `AWS_*` variables) to reach an `s3://` cache.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::health::spawn_health_server;
use clap::Parser;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use kalla_core::codec::{KallaLogicalCodec, KallaPhysicalCodec};
use kalla_core::pool::{PoolRegistry, PoolSettings};
use kalla_core::storage::{ObjectStores, S3Args};
use kalla_core::{ClusterKey, process, session};

#[derive(Parser, Debug)]
#[command(
    name = NAME,
    version,
    about = "Kalla executor: Ballista's executor with Kalla's Postgres scans"
)]
struct Args {
    #[command(flatten)]
    ballista: ballista_executor::config::Config,
    /// Most connections this executor opens to any one source.
    #[arg(long, default_value_t = PoolSettings::default().max_connections)]
    source_pool_max_connections: u32,
    /// Seconds before an idle source connection is closed.
    #[arg(long, default_value_t = PoolSettings::default().idle_timeout.as_secs())]
    source_pool_idle_timeout_secs: u64,
    #[command(flatten)]
    s3: S3Args,
    /// Check the flags, `KALLA_*` variables and cluster key, then exit (0: valid; 2: each
    /// problem on stderr).
    #[arg(long)]
    check_config: bool,
}

const NAME: &str = "kalla-executor";

/// What the executor needs before it starts, checked.
struct Validated {
    key: ClusterKey,
    health_addr: SocketAddr,
    config: ExecutorProcessConfig,
}

fn validated(ballista: ballista_executor::config::Config) -> anyhow::Result<Validated> {
    let key = ClusterKey::from_env().context("kalla-executor cannot start")?;
    let health_addr: SocketAddr = format!("{}:{}", ballista.bind_host, ballista.bind_health_port)
        .parse()
        .context("invalid --bind-host/--bind-health-port")?;
    let config: ExecutorProcessConfig = ballista.try_into().context("invalid executor configuration")?;
    Ok(Validated {
        key,
        health_addr,
        config,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Args = process::parse_args();
    let stray = process::stray_variables::<Args>(&[kalla_core::seal::SECRET_KEY_ENV]);
    if args.check_config {
        process::exit_after_check(NAME, &stray, validated(args.ballista).map(drop));
    }
    process::init_tracing(&args.ballista.log_level_setting);
    process::warn_stray(&stray);
    let Validated {
        key,
        health_addr,
        mut config,
    } = validated(args.ballista)?;
    PoolRegistry::global().configure(PoolSettings {
        max_connections: args.source_pool_max_connections,
        idle_timeout: Duration::from_secs(args.source_pool_idle_timeout_secs),
        application_name: format!("kalla-executor-{}", config.executor_id),
        ..PoolSettings::default()
    });
    config.override_logical_codec = Some(Arc::new(KallaLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(KallaPhysicalCodec::new(Some(key.clone()))));
    // Ballista's default registry lacks DataFusion's nested (array) functions: build it from
    // the same session state clients and the scheduler plan with.
    let state = session::session_state(session::session_config(Some(key.clone())))?;
    config.override_function_registry = Some(Arc::new(BallistaFunctionRegistry::from(&state)));
    // Cache and result locations on s3:// are opened on first use with this executor's settings.
    let stores = Arc::new(ObjectStores::new(args.s3.settings()));
    let spill_dir = config
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().display().to_string());
    config.override_runtime_producer = Some(Arc::new(move |_| {
        let runtime = RuntimeEnvBuilder::new()
            .with_temp_file_path(spill_dir.clone())
            .with_object_store_registry(stores.clone())
            .build()?;
        Ok(Arc::new(runtime))
    }));
    config.override_config_producer = Some(Arc::new(move || session::session_config(Some(key.clone()))));

    let (stop_health, health_stopped) = tokio::sync::oneshot::channel();
    let health = spawn_health_server(health_addr, config.health.clone(), health_stopped);
    tracing::info!(executor_id = %config.executor_id, "kalla-executor starting");
    let result = start_executor_process(Arc::new(config)).await;
    let _ = stop_health.send(());
    let _ = health.await;
    result.context("executor stopped with an error")
}
