//! `kalla-scheduler`: Ballista's scheduler with Kalla's codecs and session builder.
//!
//! It accepts every flag of Ballista's stock `ballista-scheduler`, each also settable as a
//! `KALLA_*` environment variable (`--bind-port` → `KALLA_BIND_PORT`). It never needs the
//! cluster key: it plans scans but never connects to a source.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{Config, SchedulerConfig};
use ballista_scheduler::scheduler_process::start_server;
use clap::Parser;
use kalla_core::codec::{KallaLogicalCodec, KallaPhysicalCodec};
use kalla_core::process::{LogFiles, LogSettings};
use kalla_core::storage::{ObjectStores, S3Args};
use kalla_core::{process, session};
use tokio::signal::unix::{SignalKind, signal};

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
    /// Check the flags and `KALLA_*` variables, then exit (0: valid; 2: each problem on stderr).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    process::exit_code(start())
}

fn start() -> anyhow::Result<()> {
    let args: Args = process::parse_args();
    let stray = process::stray_variables::<Args>(&[]);
    if args.check_config {
        let validation = log_settings(&args.ballista).and_then(|_| scheduler_config(args.ballista));
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

async fn run(
    Args {
        ballista: args, s3, ..
    }: Args,
) -> anyhow::Result<()> {
    let (addr, mut config) = scheduler_config(args)?;
    config.override_logical_codec = Some(Arc::new(KallaLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(KallaPhysicalCodec::new(None)));
    config.override_config_producer = Some(Arc::new(|| session::session_config(None)));
    let stores = Arc::new(ObjectStores::new(s3.settings()));
    config.override_session_builder = Some(Arc::new(move |config| {
        session::session_state_with_stores(config, stores.clone())
    }));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .context("cannot set up the scheduler's cluster state")?;
    tracing::info!(%addr, "kalla-scheduler starting");
    // Ballista's scheduler never stops by itself: without this a SIGTERM would end the process
    // before the log file got its last lines.
    tokio::select! {
        result = start_server(cluster, addr, Arc::new(config)) => {
            result.context("scheduler stopped with an error")
        }
        signal = stop_signal() => {
            let signal = signal.context("cannot listen for SIGINT and SIGTERM")?;
            tracing::info!("kalla-scheduler stopping on {signal}");
            Ok(())
        }
    }
}

/// The first of SIGINT and SIGTERM.
async fn stop_signal() -> std::io::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        received = tokio::signal::ctrl_c() => received.map(|()| "SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
