//! Typed JSON (`"typed": true`) from `/api/query` and job result pages, through the real runner,
//! scheduler and two executors, checked against Postgres's own values.

use std::time::Duration;

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

const TABLE: &str = "
CREATE TABLE typed (
    id int4 PRIMARY KEY, flag bool, small int2, big int8, amount numeric(30,10), ratio float8,
    day date, at timestamp, at_utc timestamptz, name text
);
INSERT INTO typed VALUES
    (1, true, -7, 9007199254740992, 12345678901234567890.0123456789, 0.1, '2026-11-30',
     '2026-11-30 06:00:00', '2026-11-30 06:00:00.123456+01', 'ø 🦀'),
    (2, false, 32767, 9007199254740993, -0.0000000001, 'NaN', '0001-01-01',
     '1999-12-31 23:59:59.5', '1970-01-01 00:00:00+00', ''),
    (3, NULL, NULL, -9223372036854775808, NULL, '-Infinity', NULL, NULL, NULL, NULL),
    (4, true, 0, -9007199254740992, 0, 1e300, '2024-02-29', '2024-02-29 12:00:00', NULL, '42');
";

/// The columns as Postgres writes them as text, row by row in `id` order.
const POSTGRES_TEXT: &str = "
SELECT ARRAY[id::text, flag::text, small::text, big::text, amount::text, ratio::text, day::text, name]
FROM typed ORDER BY id";

/// Postgres's text of an integer column, as typed JSON writes it: a number within ±2^53.
fn integer(text: &str) -> Value {
    let value: i128 = text.parse().unwrap();
    match value.unsigned_abs() <= 1 << 53 {
        true => json!(value as i64),
        false => json!(text),
    }
}

/// What typed JSON must say for one row of [`POSTGRES_TEXT`].
fn expected_row(text: &[Option<String>]) -> Vec<Value> {
    let value = |i: usize, typed: &dyn Fn(&str) -> Value| text[i].as_deref().map_or(Value::Null, typed);
    vec![
        value(0, &integer),
        value(1, &|flag| json!(flag == "true")),
        value(2, &integer),
        value(3, &integer),
        // Decimals: Postgres's exact text, the column's scale kept.
        value(4, &|amount| json!(amount)),
        value(5, &|ratio| match ratio {
            "NaN" => json!("NaN"),
            "-Infinity" => json!("-inf"),
            number => json!(number.parse::<f64>().unwrap()),
        }),
        value(6, &|day| json!(day)),
    ]
}

async fn query(runner: &Runner, body: Value) -> Value {
    let (status, answer) = runner.call(Method::POST, "/api/query", Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    answer
}

/// Rows sorted by their first value (the id), as a job's output may hold them in any order.
fn by_id(rows: &Value) -> Vec<Value> {
    let mut rows = rows.as_array().unwrap().clone();
    rows.sort_by_key(|row| row[0].as_i64().or_else(|| row[0].as_str()?.parse().ok()));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_values_equal_postgres_in_queries_and_result_pages() {
    let db = TestDatabase::create().await;
    db.execute(TABLE).await;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let args = cluster.runner_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    runner.create_connection("shop", &db.url).await;
    let postgres: Vec<Vec<Option<String>>> = sqlx::query_scalar(POSTGRES_TEXT)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(postgres.len(), 4);
    let sql = "SELECT id, flag, small, big, amount, ratio, day, at, at_utc, name FROM shop.public.typed ORDER BY id";

    let typed = query(&runner, json!({"sql": sql, "live": true, "typed": true})).await;
    let rows = typed["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{typed}");
    for (row, text) in rows.iter().zip(&postgres) {
        let row = row.as_array().unwrap();
        assert_eq!(row[..7], expected_row(text)[..], "row {text:?}");
        assert_eq!(row[9], text[7].as_deref().map_or(Value::Null, |name| json!(name)));
    }
    // Timestamps as ISO 8601: the zone-less as they are, the zoned in UTC with their offset.
    let times: Vec<(&Value, &Value)> = rows.iter().map(|row| (&row[7], &row[8])).collect();
    assert_eq!(
        times,
        [
            (
                &json!("2026-11-30T06:00:00"),
                &json!("2026-11-30T05:00:00.123456Z")
            ),
            (&json!("1999-12-31T23:59:59.500"), &json!("1970-01-01T00:00:00Z")),
            (&Value::Null, &Value::Null),
            (&json!("2024-02-29T12:00:00"), &Value::Null),
        ]
    );

    // The default is unchanged: every value text, null still null.
    let text = query(&runner, json!({"sql": sql, "live": true})).await;
    assert_eq!(text["rows"][0][3], json!("9007199254740992"));
    assert_eq!(text["rows"][0][1], json!("true"));
    assert_eq!(text["rows"][2][1], Value::Null);
    assert_eq!(text["columns"], typed["columns"]);

    // A job's output pages, typed alike.
    let job = runner
        .submit_job(json!({"type": "query", "sql": sql.replace(" ORDER BY id", "")}))
        .await;
    let ended = runner.wait_for_job(&job, Duration::from_secs(120)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let page_path = format!("/api/jobs/{job}/results/result");
    let (status, page) = runner
        .call(Method::GET, &format!("{page_path}?typed=true"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        by_id(&page["rows"]),
        *rows,
        "a result page equals the query's rows"
    );
    let (status, page) = runner.call(Method::GET, &page_path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(by_id(&page["rows"]), *text["rows"].as_array().unwrap());

    // Typed applies to JSON only; a download keeps its own types.
    let (status, refused) = runner
        .call(Method::GET, &format!("{page_path}?format=csv&typed=true"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("typed"),
        "{refused}"
    );
    let (status, refused) = runner
        .call(
            Method::POST,
            "/api/query",
            Some(json!({"sql": sql, "typed": "yes"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
}
