//! `kalla-executor`: Ballista's executor with Kalla's codecs and its own source pools.
//!
//! It accepts every flag of Ballista's stock `ballista-executor`, each also settable as a
//! `KALLA_*` environment variable, plus the source pool settings below. It needs the cluster
//! key (`KALLA_CLUSTER_KEY`, or `KALLA_CLUSTER_KEY_FILE`, read again when it changes, so a
//! rotated key is taken up without a restart) to open scan grants, and refuses to start holding
//! the runner's secrets key (`KALLA_SECRET_KEY`); and S3 settings (`--s3-*`, else the standard
//! `AWS_*` variables) to reach an `s3://` cache. It checks every task's plan as it decodes it
//! (`kalla_core::plan_check`). With mutual TLS (the default) it asks the scheduler for tasks and
//! serves only its Flight service, behind a TLS front (see `flight`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ballista_core::error::BallistaError;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::health::spawn_health_server;
use clap::Parser;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use kalla_core::allow::HostPolicy;
use kalla_core::cluster_tls::server::mutual_acceptor;
use kalla_core::cluster_tls::{ClusterTlsArgs, ClusterTransport, DEFAULT_SCHEDULING_POLICY, client};
use kalla_core::codec::{KallaLogicalCodec, KallaPhysicalCodec};
use kalla_core::plan_check::{DataLocationArgs, PlanCheck};
use kalla_core::pool::{PoolRegistry, PoolSettings};
use kalla_core::process::{LogFiles, LogSettings};
use kalla_core::seal::{CLUSTER_KEY_ENV, CLUSTER_KEY_FILE_ENV, SECRET_KEY_ENV, SECRET_KEY_FILE_ENV};
use kalla_core::storage::{ObjectStores, S3Args, S3Settings};
use kalla_core::tls::{CertificateArgs, CertificateDir};
use kalla_core::{ClusterKey, process, session};
use tokio::task::JoinError;

mod flight;

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
    /// Hosts (comma-separated names, `*.domains`, `*` for any name, addresses, CIDR networks,
    /// socket directories) scans may connect to, checked against the addresses they resolve to.
    /// Default: any but loopback, link-local (cloud metadata) and unspecified addresses, which
    /// only a network listed here admits; Unix sockets and `hostaddr` only where listed.
    #[arg(long, value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    database_tls: CertificateArgs,
    #[command(flatten)]
    data: DataLocationArgs,
    #[command(flatten)]
    tls: ClusterTlsArgs,
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
    log: LogSettings,
    certificates: Option<CertificateDir>,
    plan_check: PlanCheck,
    transport: ClusterTransport,
    hosts: HostPolicy,
}

fn validated(
    ballista: ballista_executor::config::Config,
    database_tls: &CertificateArgs,
    data: &DataLocationArgs,
    tls: &ClusterTlsArgs,
    allowed_hosts: &[String],
) -> anyhow::Result<Validated> {
    refuse_secrets_key()?;
    let key = ClusterKey::from_env().context("kalla-executor cannot start")?;
    let certificates = database_tls.open().context("--tls-ca-dir / KALLA_TLS_CA_DIR")?;
    let plan_check = data
        .plan_check()
        .context("--data-locations / KALLA_DATA_LOCATIONS")?;
    let hosts = HostPolicy::new(allowed_hosts, true).context("--allowed-hosts / KALLA_ALLOWED_HOSTS")?;
    let transport = tls.transport()?;
    transport.check_policy(ballista.task_scheduling_policy, "--task-scheduling-policy")?;
    // Behind the TLS front the scheduler would see every executor come from loopback.
    if transport.tls().is_some() && ballista.external_host.is_none() {
        anyhow::bail!(
            "give --external-host (KALLA_EXTERNAL_HOST): the address the scheduler and other \
             executors reach this executor at (in Kubernetes, its pod IP)"
        );
    }
    let health_addr: SocketAddr = format!("{}:{}", ballista.bind_host, ballista.bind_health_port)
        .parse()
        .context("invalid --bind-host/--bind-health-port")?;
    let config: ExecutorProcessConfig = ballista.try_into().context("invalid executor configuration")?;
    let log = log_settings(&config)?;
    Ok(Validated {
        key,
        health_addr,
        config,
        log,
        certificates,
        plan_check,
        transport,
        hosts,
    })
}

/// An executor never needs the secrets key: one set here (an old deployment's single key, or a
/// copied env file) would put what opens every stored password on every executor's host.
fn refuse_secrets_key() -> anyhow::Result<()> {
    if let Some(variable) = [SECRET_KEY_ENV, SECRET_KEY_FILE_ENV]
        .into_iter()
        .find(|variable| std::env::var_os(variable).is_some())
    {
        anyhow::bail!(
            "{variable} is set: executors must not hold the runner's secrets key; remove it \
             and give executors the cluster key as {CLUSTER_KEY_ENV} (the runner holds both)"
        );
    }
    Ok(())
}

/// Logging as Ballista's stock executor does it, file names included.
fn log_settings(config: &ExecutorProcessConfig) -> anyhow::Result<LogSettings> {
    Ok(LogSettings {
        default_level: config.special_mod_log_level.clone(),
        thread_info: config.print_thread_info,
        files: LogFiles::from_flags(
            config.log_dir.as_deref(),
            config.log_file_name_prefix(),
            config.log_rotation_policy,
        )?,
    })
}

fn main() -> ExitCode {
    process::exit_code(start())
}

fn start() -> anyhow::Result<()> {
    let args: Args = process::parse_args_with(|command| {
        command.mut_arg("task_scheduling_policy", |arg| {
            arg.default_value(DEFAULT_SCHEDULING_POLICY)
        })
    });
    let stray = process::stray_variables::<Args>(&[
        CLUSTER_KEY_ENV,
        CLUSTER_KEY_FILE_ENV,
        SECRET_KEY_ENV,
        SECRET_KEY_FILE_ENV,
    ]);
    if args.check_config {
        process::exit_after_check(
            NAME,
            &stray,
            validated(
                args.ballista,
                &args.database_tls,
                &args.data,
                &args.tls,
                &args.allowed_hosts,
            )
            .map(|executor| {
                if matches!(executor.transport, ClusterTransport::Plaintext) {
                    eprintln!(
                        "{NAME}: warning: --plaintext: the cluster plane is unencrypted and unauthenticated"
                    );
                }
            }),
        );
    }
    let executor = validated(
        args.ballista,
        &args.database_tls,
        &args.data,
        &args.tls,
        &args.allowed_hosts,
    )?;
    // Outlives the runtime, so the log file gets every line until the process ends.
    let _log = process::init_logging(&executor.log)?;
    process::warn_stray(&stray);
    let pool = PoolSettings {
        max_connections: args.source_pool_max_connections,
        idle_timeout: Duration::from_secs(args.source_pool_idle_timeout_secs),
        application_name: format!("kalla-executor-{}", executor.config.executor_id),
        certificates: executor.certificates.clone(),
        hosts: executor.hosts.clone(),
        ..PoolSettings::default()
    };
    tokio::runtime::Runtime::new()?.block_on(run(executor, pool, args.s3.settings()))
}

async fn run(
    Validated {
        key,
        health_addr,
        mut config,
        plan_check,
        transport,
        ..
    }: Validated,
    pool: PoolSettings,
    s3: S3Settings,
) -> anyhow::Result<()> {
    PoolRegistry::global().configure(pool);
    config.override_logical_codec = Some(Arc::new(KallaLogicalCodec::default()));
    plan_check.warn_if_no_files(NAME);
    // Every task's plan is checked as it is decoded, before any of it runs.
    config.override_physical_codec = Some(Arc::new(KallaPhysicalCodec::checking(
        Some(key.clone()),
        plan_check,
    )));
    // Ballista's default registry lacks DataFusion's nested (array) functions: build it from
    // the same session state clients and the scheduler plan with.
    let state = session::session_state(session::session_config(Some(key.clone())))?;
    config.override_function_registry = Some(Arc::new(BallistaFunctionRegistry::from(&state)));
    // Cache and result locations on s3:// are opened on first use with this executor's settings.
    let stores = Arc::new(ObjectStores::new(s3));
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
    transport.warn_if_plaintext(NAME);
    let scheduler = format!("{}:{}", config.scheduler_host, config.scheduler_port);
    if let Some(tls) = transport.tls() {
        // Pull-staged, the executor serves no gRPC port; only its Flight service listens, behind TLS.
        config.override_arrow_flight_service = Some(flight::behind_tls(
            mutual_acceptor(tls)?,
            config.grpc_max_encoding_message_size as usize,
        ));
        config.override_create_grpc_client_endpoint =
            Some(client::endpoint_override(tls.clone(), scheduler.clone()));
    }
    config.override_config_producer = Some(Arc::new(move || {
        session::on_transport(session::session_config(Some(key.clone())), &transport, &scheduler)
    }));

    let (stop_health, health_stopped) = tokio::sync::oneshot::channel();
    let mut health = spawn_health_server(health_addr, config.health.clone(), health_stopped);
    tracing::info!(executor_id = %config.executor_id, "kalla-executor starting");
    // Ballista's health server ends early only when it cannot serve (its port is taken), and
    // says nothing: an executor without its probes would look dead to Kubernetes, so it stops.
    let result = tokio::select! {
        result = start_executor_process(Arc::new(config)) => result,
        ended = &mut health => return Err(health_server_ended(ended, health_addr)),
    };
    let _ = stop_health.send(());
    let _ = health.await;
    result.context("executor stopped with an error")
}

fn health_server_ended(
    ended: Result<Result<(), BallistaError>, JoinError>,
    health_addr: SocketAddr,
) -> anyhow::Error {
    let cause = match ended {
        Ok(Err(error)) => anyhow::Error::new(error),
        Ok(Ok(())) => anyhow::anyhow!("it stopped"),
        Err(error) => anyhow::Error::new(error),
    };
    cause.context(format!(
        "kalla-executor cannot serve its health probes on {health_addr} (--bind-health-port)"
    ))
}
