//! Several runners on one Postgres metadata DB and one cluster (real processes): each job is held
//! by one runner under a lease; when that runner is killed its jobs, running or queued, move to
//! another runner once the lease passes and succeed there; a runner stopped by SIGTERM hands its
//! jobs over at once. A 5-second schedule served by two runners makes exactly one job per tick,
//! and skips none, even when the runner holding a tick's job is killed.

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const LEASE_SECS: u64 = 6;
const SLOW_ROWS: i64 = 12_000;

/// A query that takes about 12 s on one scan partition (a view is not split).
const SLOW: &str = "
CREATE VIEW slow AS
SELECT g AS id, g * 2 AS doubled
FROM generate_series(1, 12000) AS g, LATERAL (SELECT pg_sleep(0.001) WHERE g > 0) AS s;
";

fn slow_query() -> Value {
    json!({"type": "query", "sql": "SELECT id, doubled FROM slow"})
}

/// Runners sharing the metadata DB, the cluster, the keys and the results directory.
struct Runners {
    cluster: Cluster,
    metadata: TestDatabase,
    results: TempDir,
    args: Vec<String>,
}

impl Runners {
    /// Runners that each run `concurrency` jobs at once.
    async fn new(concurrency: usize) -> Self {
        let cluster = Cluster::start(ClusterOptions::default()).await;
        let metadata = TestDatabase::create().await;
        let results = tempfile::Builder::new()
            .prefix("kalla-results-")
            .tempdir()
            .unwrap();
        let mut args = cluster.runner_args();
        let results_url = url::Url::from_directory_path(results.path()).unwrap().to_string();
        let lease = LEASE_SECS.to_string();
        let concurrency = concurrency.to_string();
        args.extend(
            [
                "--cache-dir",
                &results_url,
                "--job-lease-secs",
                &lease,
                "--job-concurrency",
                &concurrency,
            ]
            .map(String::from),
        );
        Self {
            cluster,
            metadata,
            results,
            args,
        }
    }

    async fn start(&self) -> Runner {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Runner::start_in(TempDir::new().unwrap(), Some(&self.metadata.url), &args).await
    }

    /// The rows, and the sum of `doubled`, of a query job's parquet output.
    async fn output_totals(&self, job: &str) -> (i64, i64) {
        output_totals(self.results.path(), job).await
    }
}

async fn output_totals(results: &Path, job: &str) -> (i64, i64) {
    let ctx = SessionContext::new();
    let dir = results.join("results").join(job).join("result");
    ctx.register_parquet(
        "result",
        &format!("{}/", dir.display()),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    let batches = ctx
        .sql("SELECT count(*), CAST(sum(doubled) AS BIGINT) FROM result")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let row = &kalla_core::preview::text_rows(&batches).unwrap()[0];
    let number = |i: usize| row[i].as_deref().unwrap().parse::<i64>().unwrap();
    (number(0), number(1))
}

async fn job(runner: &Runner, id: &str) -> Value {
    runner.call(Method::GET, &format!("/api/jobs/{id}"), None).await.1
}

/// Waits until `runner` (not `previous`) holds the job; returns how long that took.
async fn taken_over(runner: &Runner, id: &str, previous: &str, since: Instant) -> Duration {
    kalla_e2e::wait_for(
        &format!("job {id} to be taken over"),
        Duration::from_secs(60),
        || async {
            let held_by = job(runner, id).await["runner"].as_str().map(str::to_string);
            held_by
                .filter(|held_by| held_by != previous)
                .map(|_| since.elapsed())
        },
    )
    .await
}

/// A succeeded job that produced every row once.
async fn assert_succeeded_whole(runners: &Runners, runner: &Runner, id: &str) -> Value {
    let ended = runner.wait_for_job(id, Duration::from_secs(180)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}\n{}", runner.logs());
    assert_eq!(ended["summary"]["outputs"]["result"], SLOW_ROWS, "{ended}");
    assert_eq!(
        runners.output_totals(id).await,
        (SLOW_ROWS, SLOW_ROWS * (SLOW_ROWS + 1)),
        "every row once"
    );
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_runners_jobs_move_to_another_runner_within_the_lease() {
    let source = TestDatabase::create().await;
    source.execute(SLOW).await;
    let runners = Runners::new(1).await;
    let a = runners.start().await;
    let b = runners.start().await;
    a.register_source("slow", &source.source_uri("slow")).await;

    // Runner a runs one job and holds another in its queue; b holds none.
    let running = a.start_job(slow_query()).await;
    let queued = a.submit_job(slow_query()).await;
    let before = job(&b, &running).await;
    let a_id = before["runner"]
        .as_str()
        .expect("a job names its runner")
        .to_string();
    assert_eq!(job(&b, &queued).await["runner"], a_id.as_str());
    assert_eq!(job(&b, &queued).await["status"], "queued");
    let first_pass = before["ballista_job_ids"][0].clone();

    // SIGKILL: a renews nothing more; b takes both jobs over once their leases pass.
    let killed = Instant::now();
    let _ = a.kill();
    let waited = taken_over(&b, &running, &a_id, killed).await;
    eprintln!("the running job was taken over {waited:?} after its runner was killed");
    let lease = Duration::from_secs(LEASE_SECS);
    assert!(
        waited <= lease + lease / 4 + Duration::from_secs(2),
        "taken over {waited:?} after the kill, lease {lease:?}"
    );
    let ended = assert_succeeded_whole(&runners, &b, &running).await;
    assert_eq!(ended["attempts"], 2, "{ended}");
    assert_ne!(ended["runner"], a_id.as_str(), "{ended}");
    eprintln!(
        "Ballista jobs before the kill: {first_pass}, after: {}",
        ended["ballista_job_ids"]
    );
    assert_eq!(ended["ballista_job_ids"][0], first_pass, "{ended}");
    let ended = assert_succeeded_whole(&runners, &b, &queued).await;
    assert_eq!(ended["attempts"], 1, "a queued job runs once: {ended}");

    // SIGTERM: the stopping runner lets its job go, and another takes it over without waiting
    // for the lease.
    let c = runners.start().await;
    let handed = b.start_job(slow_query()).await;
    let b_id = job(&b, &handed).await["runner"].as_str().unwrap().to_string();
    let stopped = Instant::now();
    let (status, _) = b.terminate();
    assert!(status.success(), "{status}");
    let waited = taken_over(&c, &handed, &b_id, stopped).await;
    eprintln!("the handed-over job was taken over {waited:?} after SIGTERM");
    assert!(waited < lease, "handed over in {waited:?}, lease {lease:?}");
    assert_succeeded_whole(&runners, &c, &handed).await;
    runners.cluster.assert_no_job_running().await;
}

/// Invoices and payments, 200 each: 150 pairs agree, 30 differ in amount, 20 of each unpaired.
const SMALL_RECON: &str = "
CREATE TABLE inv AS SELECT g AS id, g * 10 AS amount FROM generate_series(1, 200) g;
CREATE TABLE pay AS SELECT g AS id, CASE WHEN g > 150 THEN g * 10 + 1 ELSE g * 10 END AS amount
  FROM generate_series(1, 180) g
  UNION ALL SELECT 1000 + g, 5 FROM generate_series(1, 20) g;
";

fn small_recipe() -> Value {
    json!({
        "name": "inv-vs-pay",
        "left": {"source": "inv", "key": ["id"]},
        "right": {"source": "pay", "key": ["id"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0}]
    })
}

/// Which of `runners` holds job ids as `runner_id` (each logs its id when it starts).
fn holder(runners: &[Runner], runner_id: &str) -> Option<usize> {
    runners
        .iter()
        .position(|runner| runner.logs().contains(runner_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_second_schedule_on_two_runners_makes_one_job_per_tick_even_when_one_is_killed() {
    let source = TestDatabase::create().await;
    source.execute(SMALL_RECON).await;
    let runners = Runners::new(2).await;
    let mut live = vec![runners.start().await, runners.start().await];
    live[0]
        .register_source("inv", &source.source_uri("public.inv"))
        .await;
    live[0]
        .register_source("pay", &source.source_uri("public.pay"))
        .await;
    let (status, recipe) = live[0]
        .call(Method::POST, "/api/recipes", Some(small_recipe()))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{recipe}");
    let (status, schedule) = live[1]
        .call(
            Method::POST,
            "/api/schedules",
            Some(json!({"name": "every-5s", "recipe": "inv-vs-pay", "every": "5s"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{schedule}");
    let schedule_id = schedule["id"].as_str().unwrap().to_string();
    assert_eq!(schedule["next_runs"].as_array().unwrap().len(), 5, "{schedule}");

    // 30 s with both runners, then the runner holding a running tick's job is killed, and 30 s
    // more with the other.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (victim_job, victim) =
        kalla_e2e::wait_for("a tick's job to be running", Duration::from_secs(30), || async {
            let (_, running) = live[0].call(Method::GET, "/api/jobs?status=running", None).await;
            let job = running.as_array()?.first()?.clone();
            let at = holder(&live, job["runner"].as_str()?)?;
            Some((job["id"].as_str()?.to_string(), at))
        })
        .await;
    let killed_runner = live.remove(victim);
    let _ = killed_runner.kill();
    let survivor = &live[0];
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (status, paused) = survivor
        .call(Method::POST, &format!("/api/schedules/{schedule_id}/pause"), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{paused}");
    assert_eq!(paused["next_runs"], json!([]), "{paused}");
    let elapsed = started.elapsed();

    // Every tick from the first to the last, 5 s apart, made one job; each job succeeded.
    let ticks = runners
        .metadata
        .text_row(&format!(
            "string_agg(tick_at||'|'||coalesce(job_id,'-')||'|'||missed||'|'||coalesce(error,'-'),';' ORDER BY tick_at) \
             FROM schedule_ticks WHERE schedule_id = '{schedule_id}'"
        ))
        .await;
    let ticks: Vec<Vec<String>> = ticks[0]
        .as_deref()
        .unwrap()
        .split(';')
        .map(|tick| tick.split('|').map(String::from).collect())
        .collect();
    assert!(
        ticks.len() as u64 >= elapsed.as_secs() / 5 - 1,
        "{} ticks in {elapsed:?}: {ticks:?}",
        ticks.len()
    );
    let times: Vec<i64> = ticks
        .iter()
        .map(|tick| {
            chrono::DateTime::parse_from_rfc3339(&tick[0])
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 5000, "a tick skipped or doubled: {ticks:?}");
    }
    for tick in &ticks {
        assert_eq!((tick[2].as_str(), tick[3].as_str()), ("0", "-"), "{tick:?}");
    }
    let mut jobs: Vec<&str> = ticks.iter().map(|tick| tick[1].as_str()).collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), ticks.len(), "one job per tick: {ticks:?}");
    let made = runners.metadata.text_row("count(*) FROM jobs").await;
    assert_eq!(
        made[0].as_deref(),
        Some(ticks.len().to_string().as_str()),
        "no job beyond the ticks'"
    );
    for job in &jobs {
        let ended = survivor.wait_for_job(job, Duration::from_secs(120)).await;
        assert_eq!(ended["status"], "succeeded", "{ended}\n{}", survivor.logs());
        let outputs = &ended["summary"]["outputs"];
        assert_eq!(
            [
                &outputs["matched"],
                &outputs["mismatched"],
                &outputs["left_only"],
                &outputs["right_only"]
            ],
            [&json!(150), &json!(30), &json!(20), &json!(20)],
            "{ended}"
        );
    }
    let taken_over = job(survivor, &victim_job).await;
    assert_eq!(
        taken_over["attempts"], 2,
        "the killed runner's job ran again elsewhere: {taken_over}"
    );
    eprintln!(
        "{} ticks in {elapsed:?}, each one job; the killed runner's job {victim_job} succeeded after a takeover",
        ticks.len()
    );
}
