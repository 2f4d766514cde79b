//! The fault suite's own cases, on the real binaries: an executor killed mid-scan, the source
//! Postgres and the metadata Postgres restarted with `pg_ctl`, the S3 server stopped mid-write, the
//! runner killed mid-job. Each checks the documented outcome, that nothing half-written is served
//! or published, that no job stays running, and that the system serves again with no manual step.
//! `scripts/test --profile faults` runs these and the fault cases kept next to
//! the features they break (see `.config/nextest.toml`).

use std::time::Duration;

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::{PgCluster, TestDatabase};
use kalla_e2e::runner::Runner;
use kalla_e2e::s3::S3Server;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

const ORDERS: &str = "
CREATE TABLE orders AS
SELECT i::int8 AS id, (i * 1.25)::numeric(12,2) AS amount, repeat(md5(i::text), 2) AS note
FROM generate_series(1, 600000) AS i;
";
const TOTALS: &str = "SELECT count(*), sum(amount) FROM shop.public.orders";
/// Rows that trickle out of Postgres (about a millisecond each), so a job is still reading, and
/// has written nothing, when the fault strikes.
const SLOW_ROWS: i64 = 6000;
const SLOW: &str = "
CREATE VIEW slow AS
SELECT g AS id, g * 2 AS doubled
FROM generate_series(1, 6000) AS g, LATERAL (SELECT pg_sleep(0.001) WHERE g > 0) AS s;
";

/// A scheduler and two executors (quick to notice a lost executor), and a runner using them.
async fn start_on_cluster(extra_cluster_args: &[String], extra_runner_args: &[String]) -> (Cluster, Runner) {
    let cluster = Cluster::start(ClusterOptions {
        fast_failure_detection: true,
        extra_args: extra_cluster_args.to_vec(),
        ..ClusterOptions::default()
    })
    .await;
    let mut args = cluster.runner_args();
    args.extend(
        [
            "--cache-grace-period-secs",
            "1",
            "--cache-sweep-interval-secs",
            "1",
            "--scan-partition-mib",
            "4",
        ]
        .map(String::from),
    );
    args.extend_from_slice(extra_runner_args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    (cluster, runner)
}

async fn connect_shop(runner: &Runner, db: &TestDatabase) -> String {
    let answer = runner.create_connection("shop", &db.url).await;
    answer["id"].as_str().unwrap().to_string()
}

/// Postgres's own count and sum of `orders`, as the runner shows them.
async fn orders_totals(db: &TestDatabase) -> Value {
    json!(db.text_row("count(*), sum(amount) FROM orders").await)
}

fn totals_query_body(live: bool) -> Value {
    json!({"sql": TOTALS, "live": live})
}

async fn totals_query(runner: &Runner, live: bool) -> (StatusCode, Value) {
    runner
        .call(Method::POST, "/api/query", Some(totals_query_body(live)))
        .await
}

/// Starts a live scan of `orders`, strikes with `fault` once an executor copies from the source,
/// and checks that the query either answered right (retried) or failed as a query (502), within
/// bounded time.
async fn live_scan_through(
    runner: &Runner,
    db: &TestDatabase,
    truth: &Value,
    name: &str,
    fault: impl FnOnce(),
) {
    let (query, _) = runner
        .spawn_caught_copying(db, Method::POST, "/api/query", Some(totals_query_body(true)))
        .await;
    fault();
    let (status, answer) = tokio::time::timeout(Duration::from_secs(180), query)
        .await
        .unwrap_or_else(|_| panic!("{name}: the query must end within bounded time"))
        .unwrap();
    eprintln!("{name}: {status} {answer}");
    if status == StatusCode::OK {
        assert_eq!(&answer["rows"][0], truth, "{name}: a retried query answers right");
        return;
    }
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{name}: {answer}");
    assert_eq!(answer["error"]["code"], "query_failed", "{name}: {answer}");
}

/// An executor killed while it scans: Ballista runs the lost tasks on the other executor and the
/// answer is right, or the query fails as a query; then queries answer on the executor left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_mid_scan() {
    let db = TestDatabase::create().await;
    db.execute(ORDERS).await;
    let (mut cluster, runner) = start_on_cluster(&[], &[]).await;
    connect_shop(&runner, &db).await;
    let truth = orders_totals(&db).await;

    live_scan_through(&runner, &db, &truth, "executor killed mid-scan", || {
        cluster.kill("executor-0")
    })
    .await;

    let (status, answer) = totals_query(&runner, true).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["rows"][0], truth);
    cluster.assert_no_job_running().await;
}

/// The source's Postgres restarted (`pg_ctl stop -m fast`, which ends every session, then
/// `start`) while executors scan it: the query fails as a query, naming the lost connection, or is
/// retried and right. Afterwards scans, refreshes and previews open fresh connections on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_postgres_restarted_mid_scan() {
    let server = PgCluster::start();
    let db = TestDatabase::create_on(&server.url).await;
    db.execute(ORDERS).await;
    let (cluster, runner) = start_on_cluster(&[], &[]).await;
    let id = connect_shop(&runner, &db).await;
    runner.register_source("orders", &db.source_uri("orders")).await;
    let truth = orders_totals(&db).await;
    let preview = json!({"conditions": [{"column": "id", "op": "lte", "value": "10"}]});
    let (status, answer) = runner
        .call(
            Method::POST,
            "/api/sources/orders/load-scoped",
            Some(preview.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    live_scan_through(&runner, &db, &truth, "source Postgres restarted mid-scan", || {
        server.stop_server("fast");
        server.start_server();
    })
    .await;

    let (status, answer) = totals_query(&runner, true).await;
    assert_eq!(status, StatusCode::OK, "scans reconnect on their own: {answer}");
    assert_eq!(answer["rows"][0], truth);
    let (status, answer) = runner
        .call(Method::POST, "/api/sources/orders/load-scoped", Some(preview))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "previews reconnect on their own: {answer}"
    );
    assert_eq!(answer["total_rows"], 10, "{answer}");
    let path = format!("/api/connections/{id}/tables/public/orders/refresh");
    let (status, answer) = runner.call(Method::POST, &path, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refreshes reconnect on their own: {answer}"
    );
    assert_eq!(answer["rows"], 600_000, "{answer}");
    cluster.assert_no_job_running().await;
}

/// The metadata Postgres stopped for a few seconds and started again (`pg_ctl`) while clients
/// call the runner and a job runs: requests wait for it or answer 503 `metadata_unavailable`,
/// never another error; the job ends succeeded once the database is back (its end is retried);
/// then every request succeeds, with nothing restarted by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_postgres_restarted_while_serving() {
    let metadata = PgCluster::start();
    let metadata_url = metadata.create_database("kalla").await;
    let db = TestDatabase::create().await;
    db.execute(SLOW).await;
    db.execute("CREATE TABLE items AS SELECT g AS id, g * 3 AS price FROM generate_series(1, 100) g")
        .await;
    let runner = Runner::start(Some(metadata_url.as_str())).await;
    runner.register_source("slow", &db.source_uri("slow")).await;
    runner.register_source("items", &db.source_uri("items")).await;
    let job = runner
        .submit_job(json!({"type": "query", "sql": "SELECT id, doubled FROM slow"}))
        .await;

    let clients: Vec<_> = (0..6)
        .map(|client| {
            let (http, base, token) = (
                runner.http().clone(),
                runner.base_url.clone(),
                runner.token.clone(),
            );
            let job = job.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let mut answers = Vec::new();
                while tokio::time::Instant::now() < deadline {
                    let request = match client % 3 {
                        0 => http.get(format!("{base}/api/sources")),
                        1 => http.get(format!("{base}/api/jobs/{job}")),
                        _ => http
                            .post(format!("{base}/api/sources/items/load-scoped"))
                            .json(&json!({"conditions": [{"column": "id", "op": "lte", "value": "5"}]})),
                    };
                    let response = request
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("the runner answers");
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    answers.push((tokio::time::Instant::now(), status, body));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    metadata.stop_server("fast");
    tokio::time::sleep(Duration::from_secs(3)).await;
    metadata.start_server();
    let restarted = tokio::time::Instant::now();

    let mut unavailable = 0;
    for client in clients {
        for (at, status, body) in client.await.unwrap() {
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(body["error"]["code"], "metadata_unavailable", "{body}");
                unavailable += 1;
                continue;
            }
            assert!(
                status.is_success(),
                "{status} {body} ({:?} after the restart)",
                at.checked_duration_since(restarted)
            );
        }
    }
    eprintln!("{unavailable} requests answered 503 metadata_unavailable");

    let ended = runner.wait_for_job(&job, Duration::from_secs(120)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}\n{}", runner.logs());
    assert_eq!(ended["summary"]["outputs"]["result"], SLOW_ROWS, "{ended}");
    let (status, answer) = runner.call(Method::GET, "/ready", None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    runner
        .register_source("items_again", &db.source_uri("items"))
        .await;
    let (status, sources) = runner.call(Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sources.as_array().map(Vec::len), Some(3), "{sources}");
}

/// The S3 server stopped mid-write (its connections reset, new ones refused), briefly and for
/// longer than a request is retried (`--s3-retry-timeout-secs 3`): a short stop is ridden out by
/// retries; a long one fails the refresh or job clearly. The previous cache version keeps serving,
/// no partial version or result is published, no job stays running, and once the server is back
/// everything works again and the failed version's files leave the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_stopped_mid_write() {
    let s3 = S3Server::start_stoppable().await;
    let db = TestDatabase::create().await;
    db.execute(ORDERS).await;
    db.execute(SLOW).await;
    let mut s3_args = s3.runner_args();
    s3_args.extend(["--s3-retry-timeout-secs", "3"].map(String::from));
    let mut runner_args = s3_args.clone();
    s3_args.extend(["--data-locations".to_string(), format!("s3://{}/", s3.bucket)]);
    runner_args.extend(["--cache-dir".to_string(), format!("s3://{}/kalla", s3.bucket)]);
    let (cluster, runner) = start_on_cluster(&s3_args, &runner_args).await;
    let id = connect_shop(&runner, &db).await;
    runner.register_source("slow", &db.source_uri("slow")).await;
    let refresh_path = format!("/api/connections/{id}/tables/public/orders/refresh");
    let (status, first) = runner.call(Method::POST, &refresh_path, None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let mut served = first["version"].as_str().unwrap().to_string();
    let truth = orders_totals(&db).await;

    // A brief stop, then one that lasts until the refresh has ended.
    for (name, outage) in [("brief", Some(Duration::from_secs(1))), ("long", None)] {
        let (refresh, ended) = runner
            .spawn_caught_copying(&db, Method::POST, &refresh_path, None)
            .await;
        if let Some(ended) = ended {
            served = ended["version"].as_str().unwrap().to_string();
        }
        s3.stop().await;
        if let Some(outage) = outage {
            tokio::time::sleep(outage).await;
            s3.resume().await;
        }
        let (status, outcome) = tokio::time::timeout(Duration::from_secs(180), refresh)
            .await
            .unwrap_or_else(|_| panic!("a {name} S3 stop must end the refresh within bounded time"))
            .unwrap();
        s3.resume().await;
        eprintln!("{name} S3 stop mid-refresh: {status} {outcome}");
        if status == StatusCode::OK {
            served = outcome["version"].as_str().unwrap().to_string();
        } else {
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{outcome}");
            assert_eq!(outcome["error"]["code"], "refresh_failed", "{outcome}");
        }
        let (status, answer) = totals_query(&runner, false).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["tables"][0]["version"], served.as_str(), "{answer}");
        assert_eq!(answer["rows"][0], truth);
    }
    let prefix = format!("kalla/cache/{id}/public/orders/");
    kalla_e2e::wait_for(
        "only the served version's files to stay in the bucket",
        Duration::from_secs(60),
        || async {
            let keys = s3.keys(&prefix).await;
            keys.iter()
                .all(|key| key.starts_with(&format!("{prefix}{served}/part-")))
                .then_some(())
        },
    )
    .await;

    // A job writing its result while S3 is stopped fails, and publishes nothing.
    let job = runner
        .start_job(json!({"type": "query", "sql": "SELECT id, doubled FROM slow"}))
        .await;
    s3.stop().await;
    let ended = runner.wait_for_job(&job, Duration::from_secs(120)).await;
    s3.resume().await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(ended["error"].as_str().is_some_and(|e| !e.is_empty()), "{ended}");
    let (status, answer) = runner
        .call(Method::GET, &format!("/api/jobs/{job}/results/result"), None)
        .await;
    assert!(
        status.is_client_error(),
        "no results of a failed job: {status} {answer}"
    );
    kalla_e2e::wait_for(
        "the failed job's files to go",
        Duration::from_secs(60),
        || async {
            s3.keys(&format!("kalla/results/{job}/"))
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;

    let job = runner
        .submit_job(json!({"type": "query", "sql": "SELECT id, doubled FROM slow"}))
        .await;
    let ended = runner.wait_for_job(&job, Duration::from_secs(120)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["summary"]["outputs"]["result"], SLOW_ROWS, "{ended}");
    cluster.assert_no_job_running().await;
}

/// The runner killed (SIGKILL) mid-job, with its embedded cluster, and started again on the same
/// data dir: the job is taken up again and succeeds with every row, and is never left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runner_killed_mid_job() {
    let db = TestDatabase::create().await;
    db.execute(SLOW).await;
    let runner = Runner::start(None).await;
    runner.register_source("slow", &db.source_uri("slow")).await;
    let job = runner
        .start_job(json!({"type": "query", "sql": "SELECT id, doubled FROM slow"}))
        .await;
    db.wait_for_copy().await;
    let data_dir = runner.kill();

    let runner = Runner::start_in(data_dir, None, &[]).await;
    let ended = runner.wait_for_job(&job, Duration::from_secs(120)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}\n{}", runner.logs());
    assert_eq!(ended["summary"]["outputs"]["result"], SLOW_ROWS, "{ended}");
    assert!(
        ended["attempts"].as_i64().is_some_and(|a| a >= 2),
        "run again: {ended}"
    );
    let (status, page) = runner
        .call(
            Method::GET,
            &format!("/api/jobs/{job}/results/result?limit=10000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["rows"].as_array().map(Vec::len),
        Some(SLOW_ROWS as usize),
        "{page}"
    );
}
