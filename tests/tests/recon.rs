//! Reconciliation runs through the real runner, scheduler and two executors, checked against
//! the truth computed independently by SQL in Postgres.

use std::path::Path;
use std::time::Duration;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::reconciliation::{Truth, data, recipe, truth};
use kalla_e2e::runner::Runner;
use kalla_runner::scheduler_api::SchedulerApi;
use kalla_runner::stall::StallWatch;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

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

/// [`setup`] on the default cluster, with `db`'s `invoices` and `payments` as sources.
async fn setup_with_sources(db: &TestDatabase) -> Setup {
    let setup = setup(ClusterOptions::default()).await;
    for table in ["invoices", "payments"] {
        let uri = db.source_uri(&format!("public.{table}"));
        setup.runner.register_source(table, &uri).await;
    }
    setup
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
    for output in OUTPUTS {
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

/// Registers a parquet copy of `table` (written by a query job) as source `alias`.
async fn register_parquet_copy(setup: &Setup, table: &str, alias: &str) {
    let runner = &setup.runner;
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
    db.execute(&data(1_000_000)).await;
    let truth = truth(&db).await;
    // The generator's buckets, so the test cannot pass on a degenerate data set.
    let outputs = &truth.outputs;
    assert!(outputs["matched"].as_i64().unwrap() > 800_000, "{truth:?}");
    assert!(truth.within_tolerance >= 49_000 && truth.amount_failed > 0 && truth.date_failed > 0);
    assert!(truth.currency_failed > 0 && outputs["duplicates"].as_i64().unwrap() > 30_000);

    let setup = setup_with_sources(&db).await;
    let runner = &setup.runner;

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
        register_parquet_copy(&setup, table, alias).await;
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
    db.execute(&data(1_000_000)).await;
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
    // On a loaded machine a real executor's heartbeat may be late too, and be listed beside it.
    assert!(
        reason.starts_with("the cluster lost executor") && reason.contains("gone"),
        "{reason}"
    );

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

/// Invoice `i` falls in bucket `b = (i·7919 + 11) mod 20`. Pass `reference` pairs one invoice
/// with one payment on the invoice reference (amounts equal); pass `split` groups an invoice's
/// payments by the reference (their sum equal to the amount, at most 10 rows a group); pass
/// `customer_amount` pairs on customer and amount (paid within 3 days either way):
/// - 0..=9: a payment with the reference (`reference` matched); 10, 18: the amount is off by 1
///   (`reference` mismatched; 18 has no customer either);
/// - 14: two payments with the reference, the invoice's amount less 1.00, and 1.00 (half of
///   them: `split` matched) or 2.00 (`split` mismatched);
/// - 16: every 10th invoice has 12 payments of 1.00 (a group of 13: exceptions), the others none;
/// - 11: no reference, paid -3..=3 days from the issue (`customer_amount` matched, the window's
///   edges included); 15: a wrong reference (`customer_amount` matched); 13: no reference, paid
///   10 days later (`customer_amount` mismatched);
/// - 12: a payment with the reference (`reference` matched) and another without one, of the
///   same customer and amount: it stays right only, since pass 1 decided its invoice;
/// - 17: the invoice twice (duplicates in every pass; the payment is right only);
/// - 19: a payment with neither reference nor customer (both alone).
///
/// Plus 100 invoices without an id of customer `CN` (50 paid without a reference, matched by
/// customer and amount) and 500 payments of unknown invoices and amounts (right only).
const WATERFALL_DATA: &str = "
CREATE TABLE invoices AS
SELECT 'INV-' || i AS invoice_id, 'C' || (i % 40) AS customer, (i * 1.25)::numeric(12,2) AS amount,
       DATE '2024-01-01' + (i % 300)::int AS issued_on, ((i * 7919 + 11) % 20)::int AS b
FROM generate_series(1, 20000) AS i;
CREATE TABLE payments AS
SELECT 'PAY-' || substr(invoice_id, 5) AS payment_id,
       CASE WHEN b IN (11, 13, 19) THEN NULL WHEN b = 15 THEN 'X-' || invoice_id ELSE invoice_id END
         AS invoice_ref,
       CASE WHEN b IN (18, 19) THEN NULL ELSE customer END AS customer,
       (CASE WHEN b IN (10, 18) THEN amount + 1 WHEN b = 14 THEN amount - 1 ELSE amount END)::numeric(12,2)
         AS amount,
       issued_on + CASE WHEN b = 13 THEN 10 WHEN b IN (11, 15) THEN substr(invoice_id, 5)::int % 7 - 3
                        ELSE b % 6 END AS paid_on,
       b
FROM invoices WHERE b <> 16;
INSERT INTO payments
SELECT payment_id || '-b', CASE WHEN b = 12 THEN NULL ELSE invoice_ref END, customer,
       CASE WHEN b = 12 THEN amount WHEN substr(payment_id, 5)::int % 40 = 17 THEN 1.00 ELSE 2.00 END,
       paid_on, b
FROM payments WHERE b IN (12, 14);
INSERT INTO payments
SELECT 'PAY-M' || substr(invoice_id, 5) || '-' || j, invoice_id, customer, 1.00, issued_on, b
FROM invoices, generate_series(1, 12) AS j WHERE b = 16 AND substr(invoice_id, 5)::int % 200 = 15;
INSERT INTO invoices SELECT * FROM invoices WHERE b = 17;
INSERT INTO invoices SELECT NULL, 'CN', 50000 + j, DATE '2024-05-01', -1 FROM generate_series(1, 100) AS j;
INSERT INTO payments SELECT 'PAY-N' || j, NULL, 'CN', 50000 + j, DATE '2024-05-02', -1
FROM generate_series(1, 50) AS j;
INSERT INTO payments SELECT 'PAY-U' || j, 'NOPE-' || j, 'C1', (j * 0.1 + 0.03)::numeric(12,2), DATE '2024-06-01', -2
FROM generate_series(1, 500) AS j;
ANALYZE invoices;
ANALYZE payments;
";

/// A pass of the waterfall as the Postgres reference runs it, over `l` and `r`.
struct ReferencePass {
    name: &'static str,
    left_key: &'static [&'static str],
    right_key: &'static [&'static str],
    /// A grouped pass's largest group: the left side has one row per key, the right many.
    max_group_size: Option<usize>,
    /// Whether a pair or group passes the pass's one rule (over aggregates in a grouped pass).
    passes: &'static str,
    /// The rule's difference, and its column: 0 `amount_diff`, 1 `issued_on_days`.
    difference: (&'static str, usize),
    /// The rule's name.
    rule: &'static str,
    /// The rule as the recipe writes it.
    recipe_rule: fn() -> Value,
}

const REFERENCE_PASSES: [ReferencePass; 3] = [
    ReferencePass {
        name: "reference",
        left_key: &["invoice_id"],
        right_key: &["invoice_ref"],
        max_group_size: None,
        passes: "abs(r.amount - l.amount) <= 0",
        difference: ("r.amount - l.amount", 0),
        rule: "amount",
        recipe_rule: || json!({"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0}),
    },
    ReferencePass {
        name: "split",
        left_key: &["invoice_id"],
        right_key: &["invoice_ref"],
        max_group_size: Some(10),
        passes: "abs(sum(r.amount) - min(l.amount)) <= 0",
        difference: ("sum(r.amount) - min(l.amount)", 0),
        rule: "amount",
        recipe_rule: || json!({"kind": "numeric", "left": "amount", "right": "amount", "aggregate": "sum", "abs_tol": 0}),
    },
    ReferencePass {
        name: "customer_amount",
        left_key: &["customer", "amount"],
        right_key: &["customer", "amount"],
        max_group_size: None,
        passes: "(r.paid_on - l.issued_on) BETWEEN -3 AND 3",
        difference: ("r.paid_on - l.issued_on", 1),
        rule: "issued_on",
        recipe_rule: || json!({"kind": "date_window", "left": "issued_on", "right": "paid_on", "min_days": -3, "max_days": 3}),
    },
];

/// Output columns, in Postgres over the reference's `l` and `r` and in DataFusion over Kalla's
/// outputs (prefixed `left_`, `right_`).
const LEFT_COLUMNS: [&str; 4] = ["invoice_id", "amount", "customer", "issued_on"];
/// The right side carries `payment_id` too, which no pass reads (`carry`).
const RIGHT_COLUMNS: [&str; 5] = ["invoice_ref", "amount", "customer", "paid_on", "payment_id"];
const OUTPUTS: [&str; 7] = [
    "matched",
    "mismatched",
    "left_only",
    "right_only",
    "duplicates",
    "exceptions",
    "ambiguous",
];

/// SQL of one output row as text: `columns` joined by `|`, each null as empty.
fn row_text(columns: &[String]) -> String {
    columns.join(" || '|' || ")
}

/// A table's columns as text, null as empty.
fn texts(table: &str, columns: &[&str]) -> Vec<String> {
    columns
        .iter()
        .map(|c| format!("coalesce({table}.{c}::text, '')"))
        .collect()
}

fn blanks(count: usize) -> Vec<String> {
    vec!["''".to_string(); count]
}

/// The Postgres statements of pass `n`: from its input `l_{n}`, `r_{n}` (with row numbers
/// `rn`), the queries of the rows it decides (by output) and the next pass's input.
fn reference_pass(
    n: usize,
    pass: &ReferencePass,
    setup: &mut Vec<String>,
    outputs: &mut Vec<(&str, String)>,
) {
    let on: Vec<String> = pass
        .left_key
        .iter()
        .zip(pass.right_key)
        .map(|(l, r)| format!("l.{l} = r.{r}"))
        .collect();
    let on = on.join(" AND ");
    for (side, keys) in [("l", pass.left_key), ("r", pass.right_key)] {
        let not_null: Vec<String> = keys.iter().map(|k| format!("{k} IS NOT NULL")).collect();
        setup.push(format!(
            "CREATE TEMP TABLE {side}c_{n} AS SELECT *, count(*) OVER (PARTITION BY {}) AS kn, ({}) AS has_key \
             FROM {side}_{n}",
            keys.join(", "),
            not_null.join(" AND ")
        ));
    }
    let key_text: Vec<String> = pass.left_key.iter().map(|k| format!("l.{k}::text")).collect();
    let group_id = format!("'{}:' || {}", pass.name, key_text.join(" || '|' || "));
    let mut differences = blanks(2);
    let (left, right) = (texts("l", &LEFT_COLUMNS), texts("r", &RIGHT_COLUMNS));
    let name = format!("'{}'", pass.name);
    let Some(max_group_size) = pass.max_group_size else {
        setup.push(format!(
            "CREATE TEMP TABLE decided_{n} AS SELECT l.rn AS lrn, r.rn AS rrn, coalesce({}, false) AS ok, \
             ({})::text AS difference FROM lc_{n} l JOIN rc_{n} r ON {on} AND l.kn = 1 AND r.kn = 1",
            pass.passes, pass.difference.0
        ));
        differences[pass.difference.1] = "d.difference".into();
        let pair = [vec![name, group_id, "''".into()], left, right, differences].concat();
        let from = format!("FROM decided_{n} d JOIN l_{n} l ON l.rn = d.lrn JOIN r_{n} r ON r.rn = d.rrn");
        outputs.push(("matched", format!("SELECT {} {from} WHERE ok", row_text(&pair))));
        let failed = [pair, vec![format!("'{}'", pass.rule)]].concat();
        outputs.push((
            "mismatched",
            format!("SELECT {} {from} WHERE NOT ok", row_text(&failed)),
        ));
        for (side, rn) in [("l", "lrn"), ("r", "rrn")] {
            setup.push(format!(
                "CREATE TEMP TABLE {side}_{} AS SELECT * FROM {side}_{n} WHERE rn NOT IN (SELECT {rn} FROM decided_{n})",
                n + 1
            ));
        }
        return;
    };
    // One left row per key, any number of right rows.
    setup.push(format!(
        "CREATE TEMP TABLE members_{n} AS SELECT l.rn AS lrn, r.rn AS rrn, 1 + count(*) OVER (PARTITION BY l.rn) AS size \
         FROM lc_{n} l JOIN rc_{n} r ON {on} AND l.kn = 1"
    ));
    setup.push(format!(
        "CREATE TEMP TABLE decided_{n} AS SELECT m.lrn, min(m.size) AS size, coalesce({}, false) AS ok, \
         ({})::text AS difference FROM members_{n} m JOIN l_{n} l ON l.rn = m.lrn JOIN r_{n} r ON r.rn = m.rrn \
         GROUP BY m.lrn",
        pass.passes, pass.difference.0
    ));
    differences[pass.difference.1] = "d.difference".into();
    let left_rows = format!("FROM decided_{n} d JOIN l_{n} l ON l.rn = d.lrn");
    let right_rows = format!(
        "FROM members_{n} m JOIN decided_{n} d ON d.lrn = m.lrn JOIN l_{n} l ON l.rn = m.lrn JOIN r_{n} r ON r.rn = m.rrn"
    );
    let members = |rest: &[String]| {
        [
            [
                vec![name.clone(), group_id.clone(), "'left'".into()],
                left.clone(),
                blanks(RIGHT_COLUMNS.len()),
                rest.to_vec(),
            ]
            .concat(),
            [
                vec![name.clone(), group_id.clone(), "'right'".into()],
                blanks(LEFT_COLUMNS.len()),
                right.clone(),
                rest.to_vec(),
            ]
            .concat(),
        ]
    };
    let within = format!("d.size <= {max_group_size}");
    for (output, condition, rest) in [
        ("matched", format!("ok AND {within}"), differences.clone()),
        (
            "mismatched",
            format!("NOT ok AND {within}"),
            [differences, vec![format!("'{}'", pass.rule)]].concat(),
        ),
        (
            "exceptions",
            format!("NOT ({within})"),
            vec![format!(
                "'a group of ' || d.size || ' rows, more than max_group_size {max_group_size}'"
            )],
        ),
    ] {
        let [left_member, right_member] = members(&rest);
        outputs.push((
            output,
            format!("SELECT {} {left_rows} WHERE {condition}", row_text(&left_member)),
        ));
        outputs.push((
            output,
            format!(
                "SELECT {} {right_rows} WHERE {condition}",
                row_text(&right_member)
            ),
        ));
    }
    setup.push(format!(
        "CREATE TEMP TABLE l_{} AS SELECT * FROM l_{n} WHERE rn NOT IN (SELECT lrn FROM decided_{n})",
        n + 1
    ));
    setup.push(format!(
        "CREATE TEMP TABLE r_{} AS SELECT * FROM r_{n} WHERE rn NOT IN (SELECT rrn FROM members_{n})",
        n + 1
    ));
}

/// The waterfall written directly in Postgres SQL: every output's rows, as text, sorted.
async fn waterfall_in_postgres(db: &TestDatabase) -> Vec<(String, Vec<String>)> {
    let mut setup = vec![
        "CREATE TEMP TABLE l_0 AS SELECT row_number() OVER () AS rn, * FROM invoices".to_string(),
        "CREATE TEMP TABLE r_0 AS SELECT row_number() OVER () AS rn, * FROM payments".to_string(),
    ];
    let mut outputs: Vec<(&str, String)> = Vec::new();
    for (n, pass) in REFERENCE_PASSES.iter().enumerate() {
        reference_pass(n, pass, &mut setup, &mut outputs);
    }
    // After the last pass, the rows it did not decide: alone or duplicates by its key.
    let last = REFERENCE_PASSES.len() - 1;
    let name = format!("'{}'", REFERENCE_PASSES[last].name);
    let undecided = |side: &str, columns: Vec<String>, duplicate: bool| {
        let condition = if duplicate {
            "has_key AND kn > 1"
        } else {
            "NOT (has_key AND kn > 1)"
        };
        format!(
            "SELECT {} FROM {side}c_{last} {side} WHERE rn IN (SELECT rn FROM {side}_{}) AND {condition}",
            row_text(&columns),
            last + 1
        )
    };
    let (left, right) = (texts("l", &LEFT_COLUMNS), texts("r", &RIGHT_COLUMNS));
    outputs.push((
        "left_only",
        undecided("l", [vec![name.clone()], left.clone()].concat(), false),
    ));
    outputs.push((
        "right_only",
        undecided("r", [vec![name.clone()], right.clone()].concat(), false),
    ));
    let left_duplicates = [
        vec![name.clone(), "'left'".into()],
        left,
        blanks(RIGHT_COLUMNS.len()),
    ]
    .concat();
    let right_duplicates = [vec![name, "'right'".into()], blanks(LEFT_COLUMNS.len()), right].concat();
    outputs.push(("duplicates", undecided("l", left_duplicates, true)));
    outputs.push(("duplicates", undecided("r", right_duplicates, true)));

    let mut tx = db.pool.begin().await.unwrap();
    for statement in &setup {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for output in OUTPUTS {
        let mut texts: Vec<String> = Vec::new();
        for (_, query) in outputs.iter().filter(|(o, _)| *o == output) {
            texts.extend(
                sqlx::query_scalar::<_, String>(query)
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap(),
            );
        }
        texts.sort();
        rows.push((output.to_string(), texts));
    }
    tx.rollback().await.unwrap();
    rows
}

/// Kalla's outputs of job `id`, each row as the reference writes it.
async fn waterfall_outputs(results: &Path, id: &str) -> Vec<(String, Vec<String>)> {
    let prefixed = |side: &str, columns: &[&str]| -> Vec<String> {
        columns.iter().map(|c| format!("{side}_{c}")).collect()
    };
    let (left, right) = (prefixed("left", &LEFT_COLUMNS), prefixed("right", &RIGHT_COLUMNS));
    let decided = [
        vec!["group_id".to_string(), "side".into()],
        left.clone(),
        right.clone(),
        vec!["amount_diff".into(), "issued_on_days".into()],
    ]
    .concat();
    let columns = |output: &str| -> Vec<String> {
        match output {
            "matched" => decided.clone(),
            "mismatched" => [decided.clone(), vec!["failed_rules".into()]].concat(),
            "ambiguous" => [vec!["group_id".into()], left.clone(), right.clone()].concat(),
            "exceptions" => [
                vec!["group_id".into(), "side".into()],
                left.clone(),
                right.clone(),
                vec!["reason".into()],
            ]
            .concat(),
            "left_only" => left.clone(),
            "right_only" => right.clone(),
            _ => [vec!["side".into()], left.clone(), right.clone()].concat(),
        }
    };
    let mut rows = Vec::new();
    for output in OUTPUTS {
        let sql = format!("SELECT pass, {} FROM {output}", columns(output).join(", "));
        let mut texts: Vec<String> = outputs_query(results, id, &sql)
            .await
            .into_iter()
            .map(|row| row.join("|"))
            .collect();
        texts.sort();
        rows.push((output.to_string(), texts));
    }
    rows
}

#[tokio::test]
async fn passes_form_a_waterfall_equal_to_postgres() {
    let db = TestDatabase::create().await;
    db.execute(WATERFALL_DATA).await;
    let expected = waterfall_in_postgres(&db).await;
    let count = |output: &str, pass: &str| {
        let rows = &expected.iter().find(|(o, _)| o == output).unwrap().1;
        rows.iter().filter(|r| r.starts_with(&format!("{pass}|"))).count()
    };
    // The generator's buckets, so the test cannot pass on a degenerate data set.
    assert_eq!(
        (count("matched", "reference"), count("mismatched", "reference")),
        (11_000, 2_000)
    );
    assert_eq!(
        (count("matched", "split"), count("mismatched", "split")),
        (1_500, 1_500)
    );
    assert_eq!(count("exceptions", "split"), 1_300);
    assert_eq!(
        (
            count("matched", "customer_amount"),
            count("mismatched", "customer_amount")
        ),
        (2_050, 1_000)
    );
    assert_eq!(count("duplicates", "customer_amount"), 2_000);

    let setup = setup_with_sources(&db).await;
    let runner = &setup.runner;
    register_parquet_copy(&setup, "payments", "payments_pq").await;
    let passes: Vec<Value> = REFERENCE_PASSES
        .iter()
        .map(|p| {
            let mut pass = json!({"name": p.name, "left_key": p.left_key, "right_key": p.right_key,
                                  "rules": [(p.recipe_rule)()]});
            if let Some(size) = p.max_group_size {
                pass["cardinality"] = json!("one_to_many");
                pass["max_group_size"] = json!(size);
            }
            pass
        })
        .collect();
    let recipe = json!({
        "name": "waterfall",
        "left": {"source": "invoices"},
        "right": {"source": "payments_pq", "carry": ["payment_id"]},
        "passes": passes,
    });
    let mut bad = recipe.clone();
    bad["passes"][2]["right_key"] = json!(["customer", "amount", "paid_on"]);
    let (status, body) = runner.call(Method::POST, "/api/recipes", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("passes[2].left_key has 2 columns"), "{body}");
    let mut bad = recipe.clone();
    bad["passes"][1]["rules"][0]["aggregate"] = json!("average");
    let (status, body) = runner.call(Method::POST, "/api/recipes", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let job = run_job(runner, json!({"type": "recon", "recipe": recipe})).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", runner.logs());
    assert_eq!(
        job["ballista_job_ids"].as_array().unwrap().len(),
        3,
        "one Ballista job per pass: {job}"
    );
    let id = job["id"].as_str().unwrap();
    let actual = waterfall_outputs(setup.results.path(), id).await;
    for ((output, expected), (_, actual)) in expected.iter().zip(&actual) {
        assert_eq!(actual.len(), expected.len(), "{output}: {job}");
        let first_difference = expected.iter().zip(actual).find(|(e, a)| e != a);
        assert!(first_difference.is_none(), "{output}: {first_difference:?}");
    }
    let passes = &job["summary"]["passes"];
    assert_eq!(passes[0]["pass"], "reference", "{job}");
    assert_eq!(passes[0]["outputs"]["matched"], 11_000, "{job}");
    assert_eq!(passes[1]["outputs"]["exceptions"], 1_300, "{job}");
    // Every row a pass passed on is in exactly one of the next pass's outputs or passed on again.
    for n in 1..passes.as_array().unwrap().len() {
        let received = &passes[n - 1]["passed_on"];
        let outputs = &passes[n]["outputs"];
        let rows = |output: &str| outputs[output].as_u64().unwrap_or(0);
        let pair_rows = if n == 1 { 1 } else { 2 };
        let decided = pair_rows * (rows("matched") + rows("mismatched")) + rows("exceptions");
        let undecided = match passes[n]["passed_on"].as_object() {
            Some(on) => on.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
            None => rows("left_only") + rows("right_only") + rows("duplicates"),
        };
        let received = received["left"].as_u64().unwrap() + received["right"].as_u64().unwrap();
        assert_eq!(received, decided + undecided, "pass {n}: {job}");
    }
    // Only the outputs stay: the files of what a pass passed on to the next are removed.
    let dir = setup.results.path().join("results").join(id);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let files = std::fs::read_dir(entry.path()).unwrap().count();
        assert!(
            OUTPUTS.contains(&name.as_str()) || files == 0,
            "{name} holds {files} files"
        );
    }
}

#[tokio::test]
async fn a_proximity_pass_pairs_the_nearest_and_sets_ties_apart() {
    let db = TestDatabase::create().await;
    db.execute(
        "CREATE TABLE invoices (customer text, issued_on date, amount numeric(12,2));
         INSERT INTO invoices VALUES
           ('A', '2024-01-10', 100), ('A', '2024-01-20', 50), ('B', '2024-01-10', 10),
           ('C', '2024-01-10', 7), ('D', '2024-01-10', 1), ('D', '2024-01-12', 2),
           ('E', '2024-01-10', 5), (NULL, '2024-01-10', 9);
         CREATE TABLE payments (customer text, paid_on date, amount numeric(12,2));
         INSERT INTO payments VALUES
           ('A', '2024-01-11', 100), ('A', '2024-01-19', 40), ('B', '2024-01-09', 10),
           ('B', '2024-01-11', 10), ('C', '2024-01-20', 7), ('D', '2024-01-11', 1),
           ('E', '2024-01-12', 5), ('E', '2024-01-13', 5);",
    )
    .await;
    let setup = setup_with_sources(&db).await;
    let recipe = json!({
        "name": "nearest",
        "left": {"source": "invoices"},
        "right": {"source": "payments"},
        "passes": [{"name": "nearest", "left_key": ["customer"], "right_key": ["customer"],
                    "nearest": [{"left": "issued_on", "right": "paid_on", "within": 3}],
                    "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0}]}]
    });
    let job = run_job(&setup.runner, json!({"type": "recon", "recipe": recipe})).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", setup.runner.logs());
    let id = job["id"].as_str().unwrap();
    let rows = |output: &'static str, columns: &'static str| {
        let sql = format!("SELECT {columns} FROM {output} ORDER BY 1, 2, 3");
        let results = setup.results.path().to_path_buf();
        async move {
            let rows = outputs_query(&results, id, &sql).await;
            rows.into_iter().map(|row| row.join(" ")).collect::<Vec<_>>()
        }
    };
    let pairs = "group_id, left_issued_on, right_paid_on, left_amount, right_amount";
    assert_eq!(
        rows("matched", pairs).await,
        [
            "nearest:A#1 2024-01-10 2024-01-11 100.00 100.00",
            "nearest:E#1 2024-01-10 2024-01-12 5.00 5.00"
        ]
    );
    // A's second invoice pairs with its nearest payment, though the amounts differ.
    assert_eq!(
        rows("mismatched", pairs).await,
        ["nearest:A#2 2024-01-20 2024-01-19 50.00 40.00"]
    );
    // B's invoice is as near to two payments, and D's payment to two invoices.
    assert_eq!(
        rows("ambiguous", pairs).await,
        [
            "nearest:B#1 2024-01-10 2024-01-09 10.00 10.00",
            "nearest:B#1 2024-01-10 2024-01-11 10.00 10.00",
            "nearest:D#1 2024-01-10 2024-01-11 1.00 1.00",
            "nearest:D#1 2024-01-12 2024-01-11 2.00 1.00"
        ]
    );
    assert_eq!(
        rows("left_only", "left_customer, left_issued_on, left_amount").await,
        ["C 2024-01-10 7.00", " 2024-01-10 9.00"]
    );
    assert_eq!(
        rows("right_only", "right_customer, right_paid_on, right_amount").await,
        ["C 2024-01-20 7.00", "E 2024-01-13 5.00"]
    );
    assert_eq!(job["summary"]["outputs"]["ambiguous"], 4, "{job}");
}
