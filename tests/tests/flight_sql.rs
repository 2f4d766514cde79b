//! Arrow Flight SQL on the runner, through real clients (ADBC's Flight SQL driver and
//! pyarrow.flight, in `tests/python/flight_sql_client.py`) against a runner on a scheduler and two
//! executors: a query's values and types equal Postgres's, the catalog lists connection tables
//! with their columns, the handshake trades the token for a bearer header, and a viewer's SQL, a
//! revoked token and an unknown one are refused with the HTTP API's messages.

use std::path::PathBuf;
use std::process::Command;

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::ports::free_port;
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
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
";

async fn token(runner: &Runner, name: &str, role: &str) -> String {
    let body = json!({"name": name, "role": role});
    let (status, answer) = runner.call(Method::POST, "/api/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["token"].as_str().unwrap().to_string()
}

/// What the client script saw, as JSON.
fn client(url: &str, operator: &str, viewer: &str, revoked: &str) -> Value {
    let python = std::env::var_os(PYTHON_ENV).unwrap_or_else(|| {
        panic!(
            "{PYTHON_ENV} is not set: run the tests with scripts/test, which installs \
             adbc-driver-flightsql and pyarrow into a venv, or point it at a Python that has them"
        )
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/flight_sql_client.py");
    let output = Command::new(python)
        .arg(script)
        .args([url, operator, viewer, revoked])
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

    let seen = client(&format!("grpc://{flight}"), &operator, &viewer, &revoked);

    let postgres: Vec<Vec<Option<String>>> =
        sqlx::query_scalar("SELECT ARRAY[id::text, amount::text, note] FROM invoices ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let postgres: Vec<Value> = postgres.into_iter().map(|row| json!(row)).collect();
    assert_eq!(
        seen["rows"].as_array().unwrap(),
        &postgres,
        "values equal Postgres's"
    );
    assert_eq!(seen["types"], json!(["int64", "decimal128(14, 4)", "string"]));
    assert_eq!(seen["pyarrow_count"], json!([{"n": 50}]), "{seen}");
    assert_eq!(
        seen["catalog"],
        json!([{"catalog": "shop", "schema": "public", "table": "invoices", "columns": ["id", "amount", "note"]}])
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
}
