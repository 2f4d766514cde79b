//! `kalla-scheduler`: Ballista's scheduler with Kalla's codecs and session builder.
//!
//! It accepts every flag of Ballista's stock `ballista-scheduler`, each also settable as a
//! `KALLA_*` environment variable (`--bind-port` → `KALLA_BIND_PORT`). It never needs the
//! cluster key: it plans scans but never connects to a source. It checks every logical plan
//! before it plans it, and every decoded plan below a Ballista node (`kalla_core::plan_check`). With mutual TLS (the default), Ballista's gRPC and REST
//! service listens on loopback only, behind a TLS front on `--bind-port` that admits only peers
//! with a certificate of the cluster's CA; Kubernetes probes use the plaintext
//! `--bind-health-port`, which answers `/healthz`, `/readyz` and `/api/metrics` and nothing else.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{Config, SchedulerConfig};
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use clap::Parser;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use kalla_core::cluster_tls::server::{TlsListener, front, mutual_acceptor};
use kalla_core::cluster_tls::{ClusterTlsArgs, ClusterTransport, DEFAULT_SCHEDULING_POLICY, client};
use kalla_core::codec::{KallaLogicalCodec, KallaPhysicalCodec};
use kalla_core::plan_check::{DataLocationArgs, PlanCheck};
use kalla_core::process::{LogFiles, LogSettings};
use kalla_core::storage::{ObjectStores, S3Args};
use kalla_core::{process, session};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

mod probes;

#[derive(Parser, Debug)]
#[command(
    name = NAME,
    version,
    about = "Kalla scheduler: Ballista's scheduler with Kalla's codecs"
)]
struct Args {
    #[command(flatten)]
    ballista: Config,
    /// Where cached tables live on S3, the scheduler lists their files while planning.
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    data: DataLocationArgs,
    #[command(flatten)]
    tls: ClusterTlsArgs,
    /// Port of the plaintext probe server (`/healthz`, `/readyz`, `/api/metrics`).
    #[arg(long, default_value_t = 50060)]
    bind_health_port: u16,
    /// Check the flags and `KALLA_*` variables, then exit (0: valid; 2: each problem on stderr).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    process::exit_code(start())
}

fn start() -> anyhow::Result<()> {
    let args: Args = process::parse_args_with(|command| {
        command.mut_arg("scheduler_policy", |arg| {
            arg.default_value(DEFAULT_SCHEDULING_POLICY)
        })
    });
    let stray = process::stray_variables::<Args>(&[]);
    if args.check_config {
        let validation = log_settings(&args.ballista)
            .and_then(|_| plan_check(&args.data))
            .and_then(|_| transport(&args.tls, args.ballista.scheduler_policy))
            .inspect(warn_if_plaintext)
            .and_then(|_| scheduler_config(args.ballista));
        process::exit_after_check(NAME, &stray, validation.map(drop));
    }
    // Outlives the runtime, so the log file gets every line until the process ends.
    let _log = process::init_logging(&log_settings(&args.ballista)?)?;
    process::warn_stray(&stray);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Deep plans recurse while being encoded and optimised.
        .thread_stack_size(32 * 1024 * 1024)
        .build()?;
    let result = runtime.block_on(run(args));
    // A blocking task (a file write, a DNS look-up) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

const NAME: &str = "kalla-scheduler";

/// Logging as Ballista's stock scheduler does it, file names included.
fn log_settings(args: &Config) -> anyhow::Result<LogSettings> {
    let prefix = format!(
        "scheduler_{}_{}_{}",
        args.namespace, args.external_host, args.bind_port
    );
    Ok(LogSettings {
        default_level: args.log_level_setting.clone(),
        thread_info: args.print_thread_info,
        files: LogFiles::from_flags(args.log_dir.as_deref(), prefix, args.log_rotation_policy)?,
    })
}

/// The listening address and Ballista's scheduler configuration, validated.
fn scheduler_config(args: Config) -> anyhow::Result<(SocketAddr, SchedulerConfig)> {
    let addr: SocketAddr = format!("{}:{}", args.bind_host, args.bind_port)
        .parse()
        .with_context(|| {
            format!(
                "invalid --bind-host/--bind-port {}:{}",
                args.bind_host, args.bind_port
            )
        })?;
    let config: SchedulerConfig = args.try_into().context("invalid scheduler configuration")?;
    Ok((addr, config))
}

fn plan_check(data: &DataLocationArgs) -> anyhow::Result<PlanCheck> {
    data.plan_check()
        .context("--data-locations / KALLA_DATA_LOCATIONS")
}

/// The cluster plane's transport, with a scheduling policy it can secure.
fn transport(tls: &ClusterTlsArgs, policy: TaskSchedulingPolicy) -> anyhow::Result<ClusterTransport> {
    let transport = tls.transport()?;
    transport.check_policy(policy, "--scheduler-policy")?;
    Ok(transport)
}

/// `--check-config` says `--plaintext` loudly too.
fn warn_if_plaintext(transport: &ClusterTransport) {
    if matches!(transport, ClusterTransport::Plaintext) {
        eprintln!("{NAME}: warning: --plaintext: the cluster plane is unencrypted and unauthenticated");
    }
}

async fn run(
    Args {
        ballista: args,
        s3,
        data,
        tls,
        bind_health_port,
        ..
    }: Args,
) -> anyhow::Result<()> {
    let plan_check = plan_check(&data)?;
    plan_check.warn_if_no_files(NAME);
    let transport = transport(&tls, args.scheduler_policy)?;
    transport.warn_if_plaintext(NAME);
    let health_addr = SocketAddr::new(
        args.bind_host.parse().context("invalid --bind-host")?,
        bind_health_port,
    );
    let (addr, mut config) = scheduler_config(args)?;
    config.override_logical_codec = Some(Arc::new(KallaLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(KallaPhysicalCodec::checking(None, plan_check.clone())));
    config.override_config_producer = Some(Arc::new(|| session::session_config(None)));
    let stores = Arc::new(ObjectStores::new(s3.settings()));
    // Every logical plan is checked before it is planned.
    config.override_session_builder = Some(Arc::new(move |config| {
        let mut state = session::session_state_with_stores(config, stores.clone())?;
        state.add_analyzer_rule(Arc::new(plan_check.clone()));
        Ok(state)
    }));
    if let Some(tls) = transport.tls() {
        // Its calls to executors (the Flight proxy) go over mutual TLS too.
        config.use_tls = true;
        config.override_create_grpc_client_endpoint = Some(client::endpoint_override(
            tls.clone(),
            format!("{}:{}", config.external_host, addr.port()),
        ));
    }
    config.validate().context("invalid scheduler configuration")?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .context("cannot set up the scheduler's cluster state")?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .context("cannot start the scheduler")?;
    let service = match transport.tls() {
        None => bind(addr).await?,
        Some(tls) => {
            let public = TlsListener::new(bind(addr).await?, mutual_acceptor(tls)?);
            let internal = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            tokio::spawn(front(public, internal.local_addr()?));
            internal
        }
    };
    let probes = probes::serve(bind(health_addr).await?, service.local_addr()?);
    tracing::info!(%addr, %health_addr, tls = transport.tls().is_some(), "kalla-scheduler starting");
    // Ballista's scheduler never stops by itself: without this a SIGTERM would end the process
    // before the log file got its last lines.
    tokio::select! {
        result = start_grpc_service_with_listener(service, scheduler) => {
            result.context("scheduler stopped with an error")
        }
        result = probes => result.context("the probe server stopped"),
        signal = stop_signal() => {
            let signal = signal.context("cannot listen for SIGINT and SIGTERM")?;
            tracing::info!("kalla-scheduler stopping on {signal}");
            Ok(())
        }
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The first of SIGINT and SIGTERM.
async fn stop_signal() -> std::io::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        received = tokio::signal::ctrl_c() => received.map(|()| "SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
