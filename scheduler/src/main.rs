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
    name = "kalla-scheduler",
    version,
    about = "Kalla scheduler: Ballista's scheduler with Kalla's codecs"
)]
struct Args {
    #[command(flatten)]
    ballista: Config,
    /// Where cached tables live on S3, the scheduler lists their files while planning.
    #[command(flatten)]
    s3: S3Args,
}

fn main() -> anyhow::Result<()> {
    let args: Args = process::parse_args();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Deep plans recurse while being encoded and optimised.
        .thread_stack_size(32 * 1024 * 1024)
        .build()?
        .block_on(run(args))
}

async fn run(Args { ballista: args, s3 }: Args) -> anyhow::Result<()> {
    process::init_tracing(&args.log_level_setting);
    let addr: SocketAddr = format!("{}:{}", args.bind_host, args.bind_port)
        .parse()
        .with_context(|| {
            format!(
                "invalid --bind-host/--bind-port {}:{}",
                args.bind_host, args.bind_port
            )
        })?;
    let mut config: SchedulerConfig = args.try_into().context("invalid scheduler configuration")?;
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
