//! `api-load`: sustained concurrent load on a runner — load-scoped previews, `POST /api/query` and
//! job submissions, a third of the clients each — for a fixed time; prints, per kind, how the
//! runner answered and how fast, whether every accepted job ended well, the runner's memory over
//! the run, and the most connections each Kalla process held to the source.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 200)]
    clients: usize,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    runner: String,
    #[arg(long, env = "KALLA_API_TOKEN", hide_env_values = true)]
    token: String,
    /// The source alias previews, queries and jobs read (a Postgres table with `account_id`).
    #[arg(long)]
    alias: String,
    /// Filter values are drawn from 0..accounts.
    #[arg(long, default_value_t = 1000)]
    accounts: u64,
    /// The source database, whose connections are watched.
    #[arg(long)]
    source_url: String,
    /// The runner's process id, whose resident memory is sampled.
    #[arg(long)]
    runner_pid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Preview,
    Query,
    Job,
}

/// One request: what answered (`None`: no HTTP answer at all), how long it took, the job it
/// started.
struct Outcome {
    status: Option<u16>,
    latency: Duration,
    job: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let connections = tokio::spawn(watch_connections(args.clone(), stop.clone()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let memory = tokio::spawn(watch_memory(args.runner_pid, started, deadline, stop.clone()));

    let kinds = [Kind::Preview, Kind::Query, Kind::Job];
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            tokio::spawn(client(http.clone(), args.clone(), kind, deadline))
        })
        .collect();
    let mut outcomes: BTreeMap<Kind, Vec<Outcome>> = BTreeMap::new();
    for (i, client) in clients.into_iter().enumerate() {
        outcomes
            .entry(kinds[i % kinds.len()])
            .or_default()
            .extend(client.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let jobs = job_endings(&http, &args, &outcomes[&Kind::Job]).await?;
    stop.store(true, Ordering::Relaxed);
    let connections = connections.await??;
    let memory = memory.await??;

    let report: BTreeMap<String, Value> = outcomes
        .iter()
        .map(|(kind, outcomes)| (format!("{kind:?}").to_lowercase(), summary(outcomes, elapsed)))
        .collect();
    println!(
        "{}",
        json!({
            "clients": args.clients,
            "seconds": args.seconds,
            "requests": report,
            "jobs_ended": jobs,
            "runner_rss_mib": memory,
            "max_source_connections": connections,
        })
    );
    Ok(())
}

async fn client(http: reqwest::Client, args: Arc<Args>, kind: Kind, deadline: Instant) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    while Instant::now() < deadline {
        let account = rand::thread_rng().gen_range(0..args.accounts);
        let (path, body) = match kind {
            Kind::Preview => (
                format!("/api/sources/{}/load-scoped", args.alias),
                json!({"conditions": [{"column": "account_id", "op": "eq", "value": account}], "limit": 100}),
            ),
            Kind::Query => (
                "/api/query".to_string(),
                json!({"sql": format!("SELECT count(*), sum(amount) FROM {} WHERE account_id = {account}", args.alias)}),
            ),
            Kind::Job => (
                "/api/jobs".to_string(),
                json!({"type": "query", "sql": format!("SELECT * FROM {} WHERE account_id = {account}", args.alias)}),
            ),
        };
        let started = Instant::now();
        let response = http
            .post(format!("{}{path}", args.runner))
            .bearer_auth(&args.token)
            .json(&body)
            .send()
            .await;
        let (status, answer) = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                (
                    Some(status),
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
            Err(_) => (None, Value::Null),
        };
        let job = (kind == Kind::Job && status == Some(202))
            .then(|| answer["id"].as_str().map(str::to_string))
            .flatten();
        outcomes.push(Outcome {
            status,
            latency: started.elapsed(),
            job,
        });
        if status == Some(429) {
            // The runner asked to come back later (Retry-After); a well-behaved client pauses.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    outcomes
}

/// Answers by status, the undocumented ones (anything but 2xx, 429 and 503, or no answer) as
/// errors, and latency percentiles of the successful ones.
fn summary(outcomes: &[Outcome], elapsed: f64) -> Value {
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok: Vec<Duration> = Vec::new();
    for outcome in outcomes {
        let label = outcome.status.map_or("no answer".to_string(), |s| s.to_string());
        *by_status.entry(label).or_default() += 1;
        if outcome.status.is_some_and(|s| (200..300).contains(&s)) {
            ok.push(outcome.latency);
        }
    }
    let errors = outcomes
        .iter()
        .filter(|o| {
            !o.status
                .is_some_and(|s| (200..300).contains(&s) || s == 429 || s == 503)
        })
        .count();
    ok.sort_unstable();
    let percentile = |p: f64| {
        ok.get(((ok.len() as f64 * p) as usize).min(ok.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    json!({
        "requests": outcomes.len(),
        "by_status": by_status,
        "errors": errors,
        "ok_per_second": ok.len() as f64 / elapsed,
        "p50_ms": percentile(0.5),
        "p99_ms": percentile(0.99),
    })
}

/// Waits until every accepted job has ended (at most 10 minutes); their final statuses, counted.
async fn job_endings(http: &reqwest::Client, args: &Args, outcomes: &[Outcome]) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    for id in outcomes.iter().filter_map(|o| o.job.as_deref()) {
        loop {
            let job: Value = http
                .get(format!("{}/api/jobs/{id}", args.runner))
                .bearer_auth(&args.token)
                .send()
                .await?
                .json()
                .await?;
            let status = job["status"].as_str().context("a job status")?.to_string();
            if !matches!(status.as_str(), "queued" | "running") {
                *ended.entry(status).or_default() += 1;
                break;
            }
            if Instant::now() > deadline {
                bail!("job {id} has not ended 10 minutes after the load");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(json!(ended))
}

/// The runner's resident memory, sampled every 250 ms: at the start, its peak, its peak in the
/// first and in the last 10 s of the load, and at the end (once every accepted job has ended).
async fn watch_memory(
    pid: u32,
    started: Instant,
    deadline: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Value> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).context("the runner's /proc status")?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")?;
        samples.push((Instant::now(), kib / 1024.0));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let peak = |from: Instant, to: Instant| {
        samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, mib)| *mib)
            .fold(0.0, f64::max)
    };
    let ten = Duration::from_secs(10);
    Ok(json!({
        "start": samples[0].1,
        "peak": peak(started, Instant::now()),
        "peak_first_10s": peak(started, started + ten),
        "peak_last_10s": peak(deadline - ten, deadline),
        "end": samples[samples.len() - 1].1,
    }))
}

/// The most connections each Kalla process (by `application_name`) held to the source at once,
/// sampled every 20 ms.
async fn watch_connections(args: Arc<Args>, stop: Arc<AtomicBool>) -> anyhow::Result<BTreeMap<String, i64>> {
    let monitor = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.source_url)
        .await?;
    let mut most: BTreeMap<String, i64> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT application_name, count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'kalla%' GROUP BY 1",
        )
        .fetch_all(&monitor)
        .await?;
        for (process, count) in counts {
            let seen = most.entry(process).or_default();
            *seen = (*seen).max(count);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(most)
}
