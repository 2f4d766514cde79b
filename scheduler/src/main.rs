//! `kalla-scheduler`: Ballista's scheduler with Kalla's codecs and session builder.
//!
//! It accepts every flag of Ballista's stock `ballista-scheduler`, each also settable as a
//! `KALLA_*` environment variable (`--bind-port` → `KALLA_BIND_PORT`). It never needs the
//! cluster key: it plans scans but never connects to a source.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{Config, SchedulerConfig};
use ballista_scheduler::scheduler_process::start_server;
use clap::Parser;
use kalla_core::codec::{KallaLogicalCodec, KallaPhysicalCodec};
use kalla_core::storage::{ObjectStores, S3Args};
use kalla_core::{process, session};

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

fn main() -> anyhow::Result<()> {
    let args: Args = process::parse_args();
    let stray = process::stray_variables::<Args>(&[]);
    if args.check_config {
        process::exit_after_check(NAME, &stray, scheduler_config(args.ballista).map(drop));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Deep plans recurse while being encoded and optimised.
        .thread_stack_size(32 * 1024 * 1024)
        .build()?
        .block_on(run(args, &stray))
}

const NAME: &str = "kalla-scheduler";

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
    stray: &[String],
) -> anyhow::Result<()> {
    process::init_tracing(&args.log_level_setting);
    process::warn_stray(stray);
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
    start_server(cluster, addr, Arc::new(config))
        .await
        .context("scheduler stopped with an error")?;
    Ok(())
}
