//! Reconciliation runs through the real runner, scheduler and two executors, checked against
//! the truth computed independently by SQL in Postgres.

use std::path::Path;
use std::time::Duration;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use kalla_runner::scheduler_api::SchedulerApi;
use kalla_runner::stall::StallWatch;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Invoice `i` falls in bucket `b = (i·7919 + 11) mod 100` (every bucket equally often):
/// - 0..=79 and 97: one payment, same amount, paid 0..=30 days later (matched; 1 in 7 payments
///   spells the currency in lower case with spaces, which the rule ignores), except 97: no currency;
/// - 80..=84: one payment, amount ± 0.01 (matched within the tolerance of exactly 0.01);
/// - 85..=87: amount + 5.00 (mismatched: amount); 88, 89: paid 45 days later (mismatched: date);
///   90, 91: both;
/// - 92..=94: no payment (left only); 98: a void payment, filtered out (left only);
/// - 95: the invoice twice (both rows duplicates; the payment is right only);
/// - 96: two payments (both duplicates; the invoice is left only);
/// - 99: matched.
///
/// Plus 50,000 payments for unknown invoices and 1,000 with no invoice reference (right only),
/// and 500 invoices without an id (left only).
const DATA: &str = "
CREATE TABLE base AS
SELECT i, (i * 7919 + 11) % 100 AS b,
       'INV-' || lpad(i::text, 8, '0') AS invoice_id,
       ((100 + (i * 37) % 99900) / 100.0)::numeric(12,2) AS amount,
       (ARRAY['EUR','USD','GBP'])[1 + (i % 3)::int] AS currency,
       DATE '2024-01-01' + (i % 365)::int AS issued_on
FROM generate_series(1::int8, 1000000::int8) AS i;
CREATE TABLE invoices AS SELECT invoice_id, amount, currency, issued_on FROM base;
INSERT INTO invoices SELECT invoice_id, amount, currency, issued_on FROM base WHERE b = 95;
INSERT INTO invoices SELECT NULL, 1.00, 'EUR', DATE '2024-01-01' FROM generate_series(1, 500);
CREATE TABLE payments AS
SELECT 'PAY-' || i AS payment_id, invoice_id AS invoice_ref,
       (amount + CASE WHEN b BETWEEN 80 AND 84 THEN CASE WHEN i % 2 = 0 THEN 0.01 ELSE -0.01 END
                      WHEN b BETWEEN 85 AND 87 OR b IN (90, 91) THEN 5.00 ELSE 0 END)::numeric(12,2) AS amount,
       CASE WHEN b = 97 THEN NULL WHEN i % 7 = 0 THEN ' ' || lower(currency) || ' ' ELSE currency END AS currency,
       issued_on + CASE WHEN b BETWEEN 88 AND 91 THEN 45 ELSE (i % 31)::int END AS paid_on,
       CASE WHEN b = 98 THEN 'void' ELSE 'ok' END AS status
FROM base WHERE b NOT IN (92, 93, 94);
INSERT INTO payments
SELECT p.payment_id || '-2', p.invoice_ref, p.amount, p.currency, p.paid_on, p.status
FROM payments p JOIN base ON base.invoice_id = p.invoice_ref WHERE base.b = 96;
INSERT INTO payments
SELECT 'PAY-X' || j, 'INV-9' || lpad(j::text, 7, '0'), (j % 1000) + 0.50, 'EUR', DATE '2024-06-01', 'ok'
FROM generate_series(1, 50000) AS j;
INSERT INTO payments SELECT 'PAY-N' || j, NULL, 10.00, 'EUR', DATE '2024-06-01', 'ok' FROM generate_series(1, 1000) AS j;
DROP TABLE base;
ANALYZE invoices;
ANALYZE payments;
";

/// The same classification, written independently in Postgres SQL.
const TRUTH: &str = "
WITH l AS (SELECT * FROM invoices),
r AS (SELECT * FROM payments WHERE status <> 'void'),
lk AS (SELECT invoice_id AS k, count(*) AS n FROM l WHERE invoice_id IS NOT NULL GROUP BY 1),
rk AS (SELECT invoice_ref AS k, count(*) AS n FROM r WHERE invoice_ref IS NOT NULL GROUP BY 1),
pairs AS (
  SELECT l.amount, l.currency, l.issued_on, r.amount AS r_amount, r.currency AS r_currency, r.paid_on
  FROM l JOIN lk ON lk.k = l.invoice_id AND lk.n = 1
         JOIN r ON r.invoice_ref = l.invoice_id
         JOIN rk ON rk.k = r.invoice_ref AND rk.n = 1),
judged AS (
  SELECT (abs(r_amount - amount) <= 0.01) IS TRUE AS amount_ok,
         (paid_on - issued_on BETWEEN 0 AND 30) IS TRUE AS date_ok,
         (upper(btrim(currency)) = upper(btrim(r_currency))) IS TRUE AS currency_ok,
         r_amount <> amount AS differs
  FROM pairs)
SELECT ARRAY[
  (SELECT count(*) FROM judged WHERE amount_ok AND date_ok AND currency_ok),
  (SELECT count(*) FROM judged WHERE NOT (amount_ok AND date_ok AND currency_ok)),
  (SELECT count(*) FROM l LEFT JOIN lk ON lk.k = l.invoice_id WHERE lk.n IS NULL OR lk.n = 1)
    - (SELECT count(*) FROM pairs),
  (SELECT count(*) FROM r LEFT JOIN rk ON rk.k = r.invoice_ref WHERE rk.n IS NULL OR rk.n = 1)
    - (SELECT count(*) FROM pairs),
  (SELECT count(*) FROM l JOIN lk ON lk.k = l.invoice_id WHERE lk.n > 1)
    + (SELECT count(*) FROM r JOIN rk ON rk.k = r.invoice_ref WHERE rk.n > 1),
  (SELECT count(*) FROM judged WHERE amount_ok AND date_ok AND currency_ok AND differs),
  (SELECT count(*) FROM judged WHERE NOT amount_ok),
  (SELECT count(*) FROM judged WHERE NOT date_ok),
  (SELECT count(*) FROM judged WHERE NOT currency_ok)
]";

/// Postgres's truth: rows per output, then matched-within-tolerance and failures per rule.
#[derive(Debug, PartialEq, Eq)]
struct Truth {
    outputs: Value,
    within_tolerance: i64,
    amount_failed: i64,
    date_failed: i64,
    currency_failed: i64,
}

async fn truth(db: &TestDatabase) -> Truth {
    // The CTEs are materialized without statistics; nested loops over them would take hours.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let numbers: Vec<i64> = sqlx::query_scalar(TRUTH).fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    Truth {
        outputs: json!({
            "matched": numbers[0], "mismatched": numbers[1], "left_only": numbers[2],
            "right_only": numbers[3], "duplicates": numbers[4],
        }),
        within_tolerance: numbers[5],
        amount_failed: numbers[6],
        date_failed: numbers[7],
        currency_failed: numbers[8],
    }
}

fn recipe(name: &str, left: &str, right: &str) -> Value {
    json!({
        "name": name,
        "left": {"source": left, "key": ["invoice_id"]},
        "right": {"source": right, "key": ["invoice_ref"],
                  "filters": [{"column": "status", "op": "neq", "value": "void"}]},
        "rules": [
            {"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01},
            {"kind": "date_window", "left": "issued_on", "right": "paid_on", "min_days": 0, "max_days": 30},
            {"kind": "equal", "left": "currency", "right": "currency", "trim": true, "case_insensitive": true}
        ]
    })
}

struct Setup {
    runner: Runner,
    cluster: Cluster,
    results: TempDir,
}

async fn setup(options: ClusterOptions) -> Setup {
    let cluster = Cluster::start(options).await;
    let results = tempfile::Builder::new()
        .prefix("kalla-results-")
        .tempdir()
        .unwrap();
    let runner = start_runner(TempDir::new().unwrap(), &cluster, &results).await;
    Setup {
        runner,
        cluster,
        results,
    }
}

/// A runner on `cluster` whose cache and results go to `results`.
async fn start_runner(data_dir: TempDir, cluster: &Cluster, results: &TempDir) -> Runner {
    let results_url = url::Url::from_directory_path(results.path()).unwrap().to_string();
    let runner_args = cluster.runner_args();
    let mut args: Vec<&str> = runner_args.iter().map(String::as_str).collect();
    args.extend([
        "--cache-dir",
        &results_url,
        "--scan-partition-mib",
        "16",
        "--job-stall-timeout-secs",
        "10",
    ]);
    Runner::start_in(data_dir, None, &args).await
}

/// Submits a job and waits until it ends; returns its final state.
async fn run_job(runner: &Runner, body: Value) -> Value {
    let id = runner.submit_job(body).await;
    runner.wait_for_job(&id, Duration::from_secs(300)).await
}

/// One DataFusion query over a job's outputs (registered by name), as rows of text.
async fn outputs_query(results: &Path, job: &str, sql: &str) -> Vec<Vec<String>> {
    let ctx = SessionContext::new();
    for output in ["matched", "mismatched", "left_only", "right_only", "duplicates"] {
        let dir = results.join("results").join(job).join(output);
        let url = format!("{}/", dir.display());
        ctx.register_parquet(output, &url, ParquetReadOptions::default())
            .await
            .unwrap_or_else(|e| panic!("output {output}: {e}"));
    }
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    kalla_core::preview::text_rows(&batches)
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().map(|v| v.unwrap_or_default()).collect())
        .collect()
}

async fn postgres_keys(db: &TestDatabase, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(&db.pool).await.unwrap()
}

/// Checks a finished job's counts and output rows against the truth.
async fn assert_matches_truth(setup: &Setup, db: &TestDatabase, job: &Value, truth: &Truth) {
    assert_eq!(job["status"], "succeeded", "{job}\n{}", setup.runner.logs());
    assert_eq!(job["summary"]["outputs"], truth.outputs, "{job}");
    let id = job["id"].as_str().unwrap();
    let results = setup.results.path();
    let single = |rows: Vec<Vec<String>>| rows[0][0].parse::<i64>().unwrap();
    let keys_apart = outputs_query(
        results,
        id,
        "SELECT count(*) FROM (SELECT left_invoice_id, right_invoice_ref FROM matched \
         UNION ALL SELECT left_invoice_id, right_invoice_ref FROM mismatched) \
         WHERE left_invoice_id IS NULL OR (right_invoice_ref IS DISTINCT FROM left_invoice_id)",
    )
    .await;
    assert_eq!(
        single(keys_apart),
        0,
        "a matched or mismatched row holds both sides' (equal) keys"
    );
    let within = outputs_query(results, id, "SELECT count(*) FROM matched WHERE amount_diff <> 0").await;
    assert_eq!(single(within), truth.within_tolerance);
    let tolerance_edge = outputs_query(
        results,
        id,
        "SELECT count(*) FROM matched WHERE abs(amount_diff) = 0.01",
    )
    .await;
    assert_eq!(
        single(tolerance_edge),
        truth.within_tolerance,
        "a difference of exactly abs_tol matches"
    );
    for (rule, expected) in [
        ("amount", truth.amount_failed),
        ("issued_on", truth.date_failed),
        ("currency", truth.currency_failed),
    ] {
        let sql = format!("SELECT count(*) FROM mismatched WHERE failed_rules LIKE '%{rule}%'");
        assert_eq!(
            single(outputs_query(results, id, &sql).await),
            expected,
            "rule {rule}"
        );
    }
    let left_only = outputs_query(
        results,
        id,
        "SELECT left_invoice_id FROM left_only WHERE left_invoice_id IS NOT NULL ORDER BY 1",
    )
    .await;
    let expected = postgres_keys(
        db,
        "WITH lk AS (SELECT invoice_id AS k, count(*) AS n FROM invoices WHERE invoice_id IS NOT NULL GROUP BY 1),
              rk AS (SELECT invoice_ref AS k, count(*) AS n FROM payments
                     WHERE status <> 'void' AND invoice_ref IS NOT NULL GROUP BY 1)
         SELECT lk.k FROM lk LEFT JOIN rk ON rk.k = lk.k
         WHERE lk.n = 1 AND (rk.n IS NULL OR rk.n <> 1) ORDER BY lk.k COLLATE \"C\"",
    )
    .await;
    let left_only: Vec<String> = left_only.into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(left_only.len(), expected.len());
    assert!(left_only == expected, "left_only keys differ from Postgres's");
    let duplicates = outputs_query(
        results,
        id,
        "SELECT side, count(*) FROM duplicates GROUP BY side ORDER BY side",
    )
    .await;
    let expected_duplicates: Vec<i64> = sqlx::query_scalar(
        "SELECT ARRAY[(SELECT count(*) FROM invoices WHERE invoice_id IN
                         (SELECT invoice_id FROM invoices GROUP BY 1 HAVING count(*) > 1)),
                      (SELECT count(*) FROM payments WHERE status <> 'void' AND invoice_ref IN
                         (SELECT invoice_ref FROM payments WHERE status <> 'void' GROUP BY 1 HAVING count(*) > 1))]",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        duplicates,
        vec![
            vec!["left".to_string(), expected_duplicates[0].to_string()],
            vec!["right".to_string(), expected_duplicates[1].to_string()]
        ]
    );
}

#[tokio::test]
async fn reconciliation_equals_the_truth_from_postgres_and_from_parquet() {
    let db = TestDatabase::create().await;
    db.execute(DATA).await;
    let truth = truth(&db).await;
    // The generator's buckets, so the test cannot pass on a degenerate data set.
    let outputs = &truth.outputs;
    assert!(outputs["matched"].as_i64().unwrap() > 800_000, "{truth:?}");
    assert!(truth.within_tolerance >= 49_000 && truth.amount_failed > 0 && truth.date_failed > 0);
    assert!(truth.currency_failed > 0 && outputs["duplicates"].as_i64().unwrap() > 30_000);

    let setup = setup(ClusterOptions::default()).await;
    let runner = &setup.runner;
    runner
        .register_source("invoices", &db.source_uri("public.invoices"))
        .await;
    runner
        .register_source("payments", &db.source_uri("public.payments"))
        .await;

    // Recipes are checked against the sources' real schemas.
    let mut bad = recipe("bad", "invoices", "payments");
    bad["rules"][0]["right"] = json!("amt");
    let (status, body) = runner.call(Method::POST, "/api/recipes", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rules[0].right: unknown column \"amt\""),
        "{body}"
    );
    let mut bad = recipe("bad", "invoices", "payments");
    bad["rules"][1]["right"] = json!("status");
    let (status, body) = runner.call(Method::POST, "/api/recipes", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = runner
        .call(
            Method::POST,
            "/api/recipes",
            Some(recipe("bad", "invoices", "nowhere")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, created) = runner
        .call(
            Method::POST,
            "/api/recipes",
            Some(recipe("invoices-vs-payments", "invoices", "payments")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let recipe_id = created["id"].as_str().unwrap();
    assert!(recipe_id.starts_with("rcp_"));

    let job = run_job(runner, json!({"type": "recon", "recipe_id": recipe_id})).await;
    assert_matches_truth(&setup, &db, &job, &truth).await;
    assert_eq!(
        job["ballista_job_ids"].as_array().unwrap().len(),
        1,
        "one pass classifies every row: {job}"
    );

    // Results through the API: a page, and the whole output as CSV.
    let id = job["id"].as_str().unwrap();
    let (status, page) = runner
        .call(
            Method::GET,
            &format!("/api/jobs/{id}/results/mismatched?limit=5&offset=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["rows"].as_array().unwrap().len(), 5);
    let csv = runner
        .http()
        .get(format!(
            "{}/api/jobs/{id}/results/right_only?format=csv",
            runner.base_url
        ))
        .bearer_auth(&runner.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.lines().count() as i64 - 1,
        truth.outputs["right_only"].as_i64().unwrap()
    );
    let (status, body) = runner
        .call(Method::GET, &format!("/api/jobs/{id}/results/nope"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The same sources as parquet, written by query jobs, reconciled with an inline recipe.
    for (table, alias) in [("invoices", "invoices_pq"), ("payments", "payments_pq")] {
        let export = run_job(
            runner,
            json!({"type": "query", "sql": format!("SELECT * FROM {table}")}),
        )
        .await;
        assert_eq!(export["status"], "succeeded", "{export}");
        let dir = setup
            .results
            .path()
            .join("results")
            .join(export["id"].as_str().unwrap())
            .join("result");
        let uri = format!("file://{}/", dir.display());
        let body = json!({"alias": alias, "uri": uri, "source_type": "parquet"});
        let (status, body) = runner.call(Method::POST, "/api/sources", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let job = run_job(
        runner,
        json!({"type": "recon", "recipe": recipe("from-parquet", "invoices_pq", "payments_pq")}),
    )
    .await;
    assert_matches_truth(&setup, &db, &job, &truth).await;
}

#[tokio::test]
async fn jobs_are_cancelled_and_survive_a_lost_executor_and_a_runner_restart() {
    let db = TestDatabase::create().await;
    db.execute(DATA).await;
    let truth = truth(&db).await;
    let options = ClusterOptions {
        executors: 3,
        fast_failure_detection: true,
        ..ClusterOptions::default()
    };
    let mut setup = setup(options).await;
    setup
        .runner
        .register_source("invoices", &db.source_uri("public.invoices"))
        .await;
    setup
        .runner
        .register_source("payments", &db.source_uri("public.payments"))
        .await;
    let job = json!({"type": "recon", "recipe": recipe("faults", "invoices", "payments")});

    // Cancel: the job ends cancelled, its Ballista job stops, its partial outputs are removed.
    let id = setup.runner.start_job(job.clone()).await;
    let (status, cancelled) = setup
        .runner
        .call(Method::DELETE, &format!("/api/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let ballista = cancelled["ballista_job_ids"][0].as_str().unwrap().to_string();
    let rest = setup.cluster.rest_client();
    kalla_e2e::wait_for("the Ballista job to stop", Duration::from_secs(30), || async {
        let job: Value = rest
            .get(setup.cluster.rest_url(&format!("/api/job/{ballista}")))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let status = job["job_status"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        (!status.contains("running") && !status.contains("queued")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !setup.results.path().join("results").join(&id).exists(),
        "a cancelled job's outputs remain"
    );
    let (status, _) = setup
        .runner
        .call(Method::DELETE, &format!("/api/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "cancelling twice");

    // The stall watch reads the real scheduler: its executors, a job's stages, and a stall once
    // an executor it saw is gone (here one that never existed) and nothing moves.
    let scheduler = SchedulerApi::new(
        setup.cluster.rest_url(""),
        setup.cluster.transport().tls().cloned(),
    );
    let watch = StallWatch::new(scheduler, Duration::from_secs(2));
    let executors = watch.executors().await.expect("executors");
    assert_eq!(executors.len(), 3, "{executors:?}");
    let stages = watch.progress(&ballista).await.expect("stages");
    assert!(!stages.is_empty(), "{stages:?}");
    let mut before = executors.clone();
    before.insert("gone".into());
    let reason = tokio::time::timeout(Duration::from_secs(30), watch.stalled(&ballista, before))
        .await
        .expect("a stall is noticed");
    assert!(reason.contains("executor gone"), "{reason}");

    // An executor killed mid-run: Ballista reruns its tasks, or, where it cannot, the runner
    // notices the stall, cancels the Ballista job and runs the job again on the executor left.
    let id = setup.runner.start_job(job.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    setup.cluster.kill("executor-0");
    let ended = setup.runner.wait_for_job(&id, Duration::from_secs(300)).await;
    assert_matches_truth(&setup, &db, &ended, &truth).await;
    eprintln!(
        "after losing an executor the job succeeded in {} attempts",
        ended["attempts"]
    );

    // An executor frozen mid-run (it keeps its connections and answers nothing): the same.
    let id = setup.runner.start_job(job.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    setup.cluster.freeze("executor-1");
    let ended = setup.runner.wait_for_job(&id, Duration::from_secs(300)).await;
    assert_matches_truth(&setup, &db, &ended, &truth).await;
    eprintln!(
        "after an executor froze the job succeeded in {} attempts",
        ended["attempts"]
    );

    // The runner stopped mid-run and started again: the new runner takes over the running
    // Ballista job (had it ended, it would run the job's pass again).
    let id = setup.runner.start_job(job).await;
    // While it runs, its progress names the Ballista job's stages and tasks.
    let before = kalla_e2e::wait_for("the job's tasks", Duration::from_secs(30), || async {
        let (_, job) = setup
            .runner
            .call(Method::GET, &format!("/api/jobs/{id}"), None)
            .await;
        assert_eq!(job["status"], "running", "{job}");
        let progress = &job["progress"];
        (progress["tasks"].as_u64() > Some(0) && progress["stages"].is_array()).then_some(job)
    })
    .await;
    let first_pass = before["ballista_job_ids"][0].clone();
    let Setup {
        runner,
        cluster,
        results,
    } = setup;
    let (_, data_dir) = runner.terminate();
    let runner = start_runner(data_dir, &cluster, &results).await;
    let setup = Setup {
        runner,
        cluster,
        results,
    };
    let ended = setup.runner.wait_for_job(&id, Duration::from_secs(300)).await;
    assert_matches_truth(&setup, &db, &ended, &truth).await;
    assert_eq!(ended["attempts"], 2, "{ended}");
    assert_eq!(
        ended["ballista_job_ids"],
        json!([first_pass]),
        "the new runner took over the pass, which ran once: {ended}"
    );
}
