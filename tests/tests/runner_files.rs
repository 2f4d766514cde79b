//! Load-scoped previews of CSV and Parquet sources, on local files and on an S3-compatible server.

use std::path::Path;

use datafusion::prelude::{CsvReadOptions, SessionContext};
use kalla_e2e::runner::Runner;
use kalla_e2e::s3::S3Server;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn example_csv() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/invoices.csv")
        .canonicalize()
        .unwrap()
}

/// The example invoices, parsed here independently of DataFusion.
fn invoices() -> Vec<Vec<String>> {
    std::fs::read_to_string(example_csv())
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

/// Conditions and the rows of the example they must match (columns: id, customer, amount, currency, issued_on, status).
type RowFilter = Box<dyn Fn(&[String]) -> bool>;

fn cases() -> Vec<(Value, RowFilter)> {
    let amount = |row: &[String]| row[2].parse::<f64>().unwrap();
    vec![
        (
            json!([{"column": "currency", "op": "eq", "value": "USD"}]),
            Box::new(|r: &[String]| r[3] == "USD"),
        ),
        (
            json!([{"column": "amount", "op": "gte", "value": 2500}]),
            Box::new(move |r: &[String]| amount(r) >= 2500.0),
        ),
        (
            json!([{"column": "issued_on", "op": "between", "value": ["2024-02-01", "2024-03-01"]}]),
            Box::new(|r: &[String]| r[4].as_str() >= "2024-02-01" && r[4].as_str() <= "2024-03-01"),
        ),
        (
            json!([{"column": "status", "op": "in", "value": ["open", "late"]}, {"column": "customer", "op": "like", "value": "%tech"}]),
            Box::new(|r: &[String]| (r[5] == "open" || r[5] == "late") && r[1].ends_with("tech")),
        ),
        (
            json!([{"column": "invoice_id", "op": "lt", "value": "INV-00011"}]),
            Box::new(|r: &[String]| r[0].as_str() < "INV-00011"),
        ),
        (
            json!([{"column": "status", "op": "is_null"}]),
            Box::new(|_: &[String]| false),
        ),
    ]
}

async fn check_source(runner: &Runner, alias: &str, uri: &str) {
    runner.register_source(alias, uri).await;
    let rows = invoices();
    for (conditions, matches) in cases() {
        let expected = rows.iter().filter(|r| matches(r)).count();
        let (status, body) = runner
            .call(
                Method::POST,
                &format!("/api/sources/{alias}/load-scoped"),
                Some(json!({"conditions": conditions, "limit": 3})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{alias} {conditions}: {body}");
        assert_eq!(body["total_rows"], json!(expected), "{alias} {conditions}");
        assert_eq!(
            body["preview_rows"],
            json!(expected.min(3)),
            "{alias} {conditions}"
        );
    }
    let (status, body) = runner
        .call(
            Method::POST,
            &format!("/api/sources/{alias}/load-scoped"),
            Some(json!({"conditions": [{"column": "amount", "op": "gt", "value": "lots"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

async fn example_parquet(dir: &Path) -> std::path::PathBuf {
    let ctx = SessionContext::new();
    ctx.register_csv("invoices", example_csv().to_str().unwrap(), CsvReadOptions::new())
        .await
        .unwrap();
    let path = dir.join("invoices.parquet");
    ctx.sql(&format!(
        "COPY invoices TO '{}' STORED AS PARQUET",
        path.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    path
}

#[tokio::test]
async fn local_csv_and_parquet_files() {
    let runner = Runner::start(None).await;
    check_source(
        &runner,
        "invoices_csv",
        &format!("file://{}", example_csv().display()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let parquet = example_parquet(dir.path()).await;
    check_source(
        &runner,
        "invoices_parquet",
        &format!("file://{}", parquet.display()),
    )
    .await;

    // An upper-case extension reads like a lower-case one: previewed, and queried on the cluster.
    let upper = dir.path().join("INVOICES.CSV");
    std::fs::copy(example_csv(), &upper).unwrap();
    check_source(&runner, "invoices_upper", &format!("file://{}", upper.display())).await;
    let query = json!({"sql": "SELECT count(*) AS n FROM invoices_upper"});
    let (status, body) = runner.call(Method::POST, "/api/query", Some(query)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0][0], json!(invoices().len().to_string()), "{body}");

    let nowhere = tempfile::TempDir::new().unwrap();
    let missing = format!("file://{}/gone/x.csv", nowhere.path().display());
    let (status, body) = runner
        .call(
            Method::POST,
            "/api/sources",
            Some(json!({"alias": "missing", "uri": missing})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = runner
        .call(Method::POST, "/api/sources/missing/load-scoped", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

#[tokio::test]
async fn csv_and_parquet_on_an_s3_compatible_server() {
    let s3 = S3Server::start().await;
    s3.put_object("in/invoices.csv", std::fs::read(example_csv()).unwrap())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let parquet = example_parquet(dir.path()).await;
    s3.put_object("in/invoices.parquet", std::fs::read(parquet).unwrap())
        .await;

    let args = s3.runner_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(tempfile::tempdir().unwrap(), None, &args).await;
    check_source(&runner, "s3_csv", &format!("s3://{}/in/invoices.csv", s3.bucket)).await;
    check_source(
        &runner,
        "s3_parquet",
        &format!("s3://{}/in/invoices.parquet", s3.bucket),
    )
    .await;
    assert!(
        !runner.logs().contains("test-secret-key"),
        "S3 credentials must not be logged"
    );
}
