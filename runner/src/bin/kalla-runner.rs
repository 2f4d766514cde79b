//! `kalla-runner`: the HTTP service users talk to.

use kalla_core::process;
use kalla_runner::config::RunnerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = RunnerConfig::load()?;
    process::init_tracing("info");
    kalla_runner::server::run(config).await
}
