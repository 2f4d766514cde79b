//! `kalla-runner`: the HTTP service users talk to.

use std::process::ExitCode;

use kalla_core::process;
use kalla_runner::config::RunnerConfig;

#[tokio::main]
async fn main() -> ExitCode {
    process::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let config = RunnerConfig::load()?;
    let stray = process::stray_variables::<RunnerConfig>(&[]);
    if config.check_config {
        process::exit_after_check("kalla-runner", &stray, config.validate());
    }
    process::init_tracing("info", process::Console::Stdout);
    process::warn_stray(&stray);
    kalla_runner::server::run(config).await
}
