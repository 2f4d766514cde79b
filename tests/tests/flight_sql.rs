//! Arrow Flight SQL on the runner, through real clients (ADBC's Flight SQL driver and
//! pyarrow.flight, in `tests/python/flight_sql_client.py`) against a runner on a scheduler and two
//! executors: a query's values and types equal Postgres's, a connection table joins a job's
//! output, a prepared statement takes parameters, the catalog lists connection tables and a
//! recipe's latest outputs with their columns, the handshake trades the token for a bearer
//! header; a viewer reads job outputs but is refused SQL over a connection, a revoked token and
//! an unknown one are refused with the HTTP API's messages, and reads and refusals are audited.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kalla_core::recon::plan::OUTPUTS;
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::ports::free_port;
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use kalla_e2e::tls::{TestCa, Usage};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The Python with adbc-driver-flightsql and pyarrow that `scripts/test` installs.
const PYTHON_ENV: &str = "KALLA_TEST_FLIGHT_PYTHON";

const INVOICES: &str = "
CREATE TABLE invoices (id int8 PRIMARY KEY, amount numeric(14,4), note text);
INSERT INTO invoices
SELECT i, i * 1234.5678 - 99999.9999, CASE WHEN i % 3 = 0 THEN NULL ELSE 'ø-' || i END
FROM generate_series(1, 50) AS i;
CREATE TABLE payments (id int8 PRIMARY KEY, amount numeric(14,4));
INSERT INTO payments
SELECT id, amount + CASE WHEN id % 10 = 0 THEN 1 ELSE 0 END FROM invoices WHERE id <= 45;
";

/// Invoices against payments: 41 match, 4 differ in amount, 5 were not paid.
fn recipe() -> Value {
    json!({
        "name": "invoices_vs_payments",
        "left": {"source": "invoices", "key": ["id"]},
        "right": {"source": "payments", "key": ["id"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.0001}]
    })
}

async fn token(runner: &Runner, name: &str, role: &str) -> String {
    let body = json!({"name": name, "role": role});
    let (status, answer) = runner.call(Method::POST, "/api/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["token"].as_str().unwrap().to_string()
}

/// How many jobs the cluster's scheduler has seen.
async fn scheduler_jobs(cluster: &Cluster) -> usize {
    let jobs: Value = serde_json::from_str(&cluster.rest_get("/api/jobs").await).unwrap();
    jobs.as_array().unwrap_or_else(|| panic!("{jobs}")).len()
}

/// What the client script `script` (in `tests/python`) saw, as JSON.
fn client(script: &str, args: &[&str]) -> Value {
    let python = std::env::var_os(PYTHON_ENV).unwrap_or_else(|| {
        panic!(
            "{PYTHON_ENV} is not set: run the tests with scripts/test, which installs \
             adbc-driver-flightsql and pyarrow into a venv, or point it at a Python that has them"
        )
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run the Flight SQL client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_clients_query_list_and_are_refused_as_the_api_refuses() {
    let db = TestDatabase::create().await;
    db.execute(INVOICES).await;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let flight = format!("127.0.0.1:{}", free_port());
    let mut args = cluster.runner_args();
    args.extend(["--flight-bind".to_string(), flight.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    runner.create_connection("shop", &db.url).await;
    let operator = token(&runner, "analyst", "operator").await;
    let viewer = token(&runner, "reader", "viewer").await;
    let revoked = token(&runner, "gone", "operator").await;
    let (status, _) = runner.call(Method::DELETE, "/api/tokens/gone", None).await;
    assert_eq!(status, StatusCode::OK);
    let query_job = finished_job(
        &runner,
        json!({"type": "query", "sql": "SELECT id, amount * 2 AS doubled FROM shop.public.invoices WHERE id <= 20"}),
    )
    .await;
    runner
        .register_source("invoices", &db.source_uri("public.invoices"))
        .await;
    runner
        .register_source("payments", &db.source_uri("public.payments"))
        .await;
    let (status, stored) = runner.call(Method::POST, "/api/recipes", Some(recipe())).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let recon = json!({"type": "recon", "recipe_id": stored["id"]});
    let recon_job = finished_job(&runner, recon).await;

    // Job outputs are tables for /api/query too; an unknown job's is an unknown table, and no
    // connection may take the catalog's name. A statement that only filters one output is read
    // by the runner from its files, so the cluster gets no job for it; an aggregate runs there.
    let jobs_before = scheduler_jobs(&cluster).await;
    let filtered =
        json!({"sql": format!("SELECT id, doubled FROM results.{query_job}.result WHERE id > 18")});
    let (status, answer) = runner.call(Method::POST, "/api/query", Some(filtered)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut rows = answer["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|row| row[0].as_str().unwrap().to_string());
    let doubled = text_rows(
        &db,
        "SELECT ARRAY[id::text, (amount * 2)::text] FROM invoices WHERE id IN (19, 20) ORDER BY id",
    )
    .await;
    assert_eq!(Value::from(rows), doubled, "{answer}");
    assert_eq!(scheduler_jobs(&cluster).await, jobs_before, "read by the runner");
    let count = json!({"sql": format!("SELECT count(*) AS n FROM results.{query_job}.result")});
    let (status, answer) = runner.call(Method::POST, "/api/query", Some(count)).await;
    assert_eq!(
        (status, &answer["rows"]),
        (StatusCode::OK, &json!([["20"]])),
        "{answer}"
    );
    assert_eq!(
        scheduler_jobs(&cluster).await,
        jobs_before + 1,
        "run on the cluster"
    );
    let unknown = json!({"sql": "SELECT * FROM results.job_nope.result"});
    let (status, answer) = runner.call(Method::POST, "/api/query", Some(unknown)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let named_results = json!({"name": "results", "source_type": "postgres", "config": {"uri": db.url}});
    let (status, answer) = runner
        .call(Method::POST, "/api/connections", Some(named_results))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("reserved"),
        "{answer}"
    );

    let url = format!("grpc://{flight}");
    let seen = client(
        "flight_sql_client.py",
        &[&url, &operator, &viewer, &revoked, &query_job],
    );

    let postgres = text_rows(
        &db,
        "SELECT ARRAY[id::text, amount::text, note] FROM invoices ORDER BY id",
    )
    .await;
    assert_eq!(seen["rows"], postgres, "values equal Postgres's");
    assert_eq!(seen["types"], json!(["int64", "decimal128(14, 4)", "string"]));
    assert_eq!(seen["pyarrow_count"], json!([{"n": 50}]), "{seen}");
    let joined = text_rows(
        &db,
        "SELECT ARRAY[id::text, note, (amount * 2)::text] FROM invoices WHERE id <= 20 ORDER BY id",
    )
    .await;
    assert_eq!(
        seen["joined"], joined,
        "a connection table joined with a job's output"
    );
    let prepared = text_rows(
        &db,
        "SELECT ARRAY[id::text, amount::text] FROM invoices WHERE id BETWEEN 7 AND 11 ORDER BY id",
    )
    .await;
    assert_eq!(seen["prepared"], prepared, "a prepared statement's parameters");
    assert_eq!(seen["viewer_results"], json!([[41]]), "{seen}");
    assert_eq!(seen["viewer_prepared"], json!([[4]]), "{seen}");

    let catalog = seen["catalog"].as_array().unwrap();
    let shop: Vec<&Value> = catalog.iter().filter(|t| t["catalog"] == "shop").collect();
    assert_eq!(
        shop,
        [
            &json!({"catalog": "shop", "schema": "public", "table": "invoices", "columns": ["id", "amount", "note"]}),
            &json!({"catalog": "shop", "schema": "public", "table": "payments", "columns": ["id", "amount"]}),
        ]
    );
    let mut latest: Vec<&str> = catalog
        .iter()
        .filter(|t| t["catalog"] == "results" && t["schema"] == "latest_invoices_vs_payments")
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    latest.sort();
    let mut outputs = OUTPUTS;
    outputs.sort();
    assert_eq!(latest, outputs, "every output of the recipe's latest run");
    assert_eq!(catalog.len(), 2 + OUTPUTS.len(), "{catalog:?}");
    let matched = catalog
        .iter()
        .find(|t| t["catalog"] == "results" && t["table"] == "matched")
        .unwrap();
    assert!(
        matched["columns"]
            .as_array()
            .unwrap()
            .contains(&json!("left_amount")),
        "{matched}"
    );
    assert_eq!(seen["info"]["vendor_name"], "Kalla", "{seen}");

    let says = |key: &str, words: &[&str]| {
        let message = seen[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} was not refused: {seen}"));
        for word in words {
            assert!(message.contains(word), "{key} must say {word:?}: {message}");
        }
    };
    // ADBC ends its message with the gRPC status: `(PermissionDenied; ExecuteQuery)`.
    says(
        "viewer_sql",
        &["(PermissionDenied;", "operator role", "\"reader\" is a viewer"],
    );
    says("revoked", &["(Unauthenticated;"]);
    says("wrong", &["(Unauthenticated;", "not known"]);
    says(
        "unknown_table",
        &["(NotFound;", "unknown table shop.public.nothing"],
    );
    says("bad_parameter", &["(InvalidArgument;", "parameter $1"]);

    // Reads and refusals are in the audit log, as downloads are: who, which tables, which job.
    let (status, entries) = runner
        .call(Method::GET, "/api/audit?route=flight:sql&limit=1000", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    let entries = entries.as_array().unwrap();
    let by = |token: &str, method: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e["token_name"] == token && e["method"] == method && e["outcome"] == outcome)
            .collect::<Vec<_>>()
    };
    let viewer_reads = by("reader", "DoGet", "succeeded");
    assert!(
        viewer_reads
            .iter()
            .any(|e| e["resource"] == format!("{recon_job}/matched")
                && e["path"] == "results.latest_invoices_vs_payments.matched"),
        "{entries:?}"
    );
    // ADBC prepares every statement, so the viewer is refused when it prepares one.
    assert!(
        by("reader", "CreatePreparedStatement", "refused")
            .iter()
            .any(|e| e["status"] == 403 && e["path"] == "shop.public.invoices"),
        "the viewer's refusal: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["token_name"].is_null() && e["status"] == 401),
        "a wrong token's refusal: {entries:?}"
    );
    assert!(
        by("analyst", "DoGet", "succeeded")
            .iter()
            .any(|e| e["resource"] == format!("{query_job}/result")),
        "{entries:?}"
    );
}

/// Postgres's rows of `sql`, which selects one text array per row, as JSON.
async fn text_rows(db: &TestDatabase, sql: &str) -> Value {
    let rows: Vec<Vec<Option<String>>> = sqlx::query_scalar(sql).fetch_all(&db.pool).await.unwrap();
    json!(rows)
}

/// Runs a job to its end; panics unless it succeeds. Returns its id.
async fn finished_job(runner: &Runner, body: Value) -> String {
    let id = runner.submit_job(body).await;
    let job = runner.wait_for_job(&id, Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_only_clients_trusting_the_runners_certificate_connect() {
    let files = TempDir::new().unwrap();
    let ca = TestCa::new(files.path(), "runner-ca");
    let other_ca = TestCa::new(files.path(), "other-ca");
    let issued = ca.issue("runner", "localhost", &["DNS:localhost"], Usage::Server);
    let port = free_port();
    let flight = format!("127.0.0.1:{port}");
    let args = [
        "--tls-cert",
        issued.cert.to_str().unwrap(),
        "--tls-key",
        issued.key.to_str().unwrap(),
        "--flight-bind",
        &flight,
    ];
    let runner = Runner::start_https(TempDir::new().unwrap(), &args, &ca.cert()).await;
    assert!(
        runner
            .logs()
            .contains(&format!("Flight SQL on grpc+tls://{flight}")),
        "{}",
        runner.logs()
    );

    let address = format!("localhost:{port}");
    let (ca, other_ca) = (ca.cert(), other_ca.cert());
    let seen = client(
        "flight_sql_tls.py",
        &[
            &address,
            &runner.token,
            ca.to_str().unwrap(),
            other_ca.to_str().unwrap(),
        ],
    );
    assert_eq!(seen["trusted"], json!([[42]]), "{seen}");
    for refused in ["untrusted", "plain"] {
        assert!(
            seen[refused]
                .as_str()
                .is_some_and(|e| e.contains("(Unavailable;")),
            "{refused} must be refused: {seen}"
        );
    }
}
