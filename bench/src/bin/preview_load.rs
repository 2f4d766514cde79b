//! `preview-load`: drives load-scoped previews with N concurrent clients for a fixed time and
//! prints latency percentiles, throughput and the most source connections seen.
//!
//! `--mode runner` sends `POST /api/sources/{alias}/load-scoped` to a runner; `--mode fresh-pool`
//! answers the same requests in-process the way the older engine did, opening a new connection pool
//! per request (without HTTP, which only flatters it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use kalla_core::SourceUri;
use kalla_core::preview::Condition;
use kalla_core::preview::postgres::Previewer;
use rand::Rng;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Runner,
    FreshPool,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Concurrent clients.
    #[arg(long)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runner URL (runner mode).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    runner: String,
    #[arg(long, env = "KALLA_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, default_value = "events")]
    alias: String,
    /// The source database (fresh-pool mode reads it; both modes watch its connections).
    #[arg(long)]
    source_url: String,
    #[arg(long, default_value = "public.events")]
    table: String,
    /// application_name whose connections are counted.
    #[arg(long, default_value = "kalla-runner")]
    application_name: String,
    /// Filter values are drawn from 0..accounts.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
}

#[derive(Default)]
struct Totals {
    errors: AtomicU64,
    max_connections: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let source = SourceUri::parse(&format!("{}?table={}", args.source_url, args.table))?;
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Totals::default());
    let watcher = tokio::spawn(watch_connections(args.clone(), stop.clone(), totals.clone()));

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(args.clone(), source.clone(), deadline, totals.clone())))
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    watcher.await??;

    latencies.sort_unstable();
    if latencies.is_empty() {
        bail!("no request completed");
    }
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{}",
        json!({
            "mode": format!("{:?}", args.mode),
            "clients": args.clients,
            "requests": latencies.len(),
            "errors": totals.errors.load(Ordering::Relaxed),
            "p50_ms": percentile(0.50).as_secs_f64() * 1e3,
            "p99_ms": percentile(0.99).as_secs_f64() * 1e3,
            "throughput_rps": latencies.len() as f64 / elapsed,
            "max_source_connections": totals.max_connections.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

async fn client(
    args: Arc<Args>,
    source: SourceUri,
    deadline: Instant,
    totals: Arc<Totals>,
) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::new();
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let account = rand::thread_rng().gen_range(0..args.accounts);
        let started = Instant::now();
        let ok = match args.mode {
            Mode::Runner => runner_request(&http, &args, account).await?,
            Mode::FreshPool => fresh_pool_request(&args, &source, account).await?,
        };
        if ok {
            latencies.push(started.elapsed());
        } else {
            totals.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(latencies)
}

async fn runner_request(http: &reqwest::Client, args: &Args, account: u64) -> anyhow::Result<bool> {
    let body = json!({"conditions": [{"column": "account_id", "op": "eq", "value": account}], "limit": 200});
    let url = format!("{}/api/sources/{}/load-scoped", args.runner, args.alias);
    let response = http
        .post(url)
        .bearer_auth(args.token.as_deref().context("--token or KALLA_API_TOKEN")?)
        .json(&body)
        .send()
        .await?;
    let ok = response.status().is_success();
    response.bytes().await?;
    Ok(ok)
}

async fn fresh_pool_request(args: &Args, source: &SourceUri, account: u64) -> anyhow::Result<bool> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!(
            "{}?application_name={}",
            source.connection_url(),
            args.application_name
        ))
        .await?;
    let conditions: Vec<Condition> =
        serde_json::from_value(json!([{"column": "account_id", "op": "eq", "value": account}]))?;
    // A new Previewer per request: the older engine described the table every time, too.
    let result = Previewer::default()
        .preview(&pool, source, &conditions, 200, 1_000_000)
        .await;
    pool.close().await;
    Ok(result.is_ok())
}

/// Samples how many connections the source has from `application_name`, every 20 ms.
async fn watch_connections(
    args: Arc<Args>,
    stop: Arc<AtomicBool>,
    totals: Arc<Totals>,
) -> anyhow::Result<()> {
    let monitor = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.source_url)
        .await?;
    while !stop.load(Ordering::Relaxed) {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&args.application_name)
                .fetch_one(&monitor)
                .await?;
        totals.max_connections.fetch_max(count as u64, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
