//! Job result pages filtered and sorted over the whole output by the runner (`filter`, `order_by`,
//! `count`), through a real runner and Postgres: pages equal Postgres's own WHERE and ORDER BY
//! over the same rows and tile them without overlap, a filtered and sorted CSV download equals
//! the pages, and a bad filter or sort key is a 400 naming the problem.

use std::time::Duration;

use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// 2,500 entries over 7 accounts; amounts repeat, so sorting by amount alone leaves ties.
const LEDGER: &str = "
CREATE TABLE ledger (id int8 PRIMARY KEY, account text, amount numeric(12,2), booked date);
INSERT INTO ledger
SELECT i, 'acct-' || (i % 7), round((i * 37 % 1000)::numeric / 4, 2), DATE '2026-01-01' + (i % 30)
FROM generate_series(1, 2500) AS i;
";

/// Postgres's rows for the filter and order the pages use, as text, ties broken as the runner
/// breaks them (by the other columns in their order).
const EXPECTED: &str = "
SELECT ARRAY[id::text, account, amount::text, booked::text] FROM ledger
WHERE account = 'acct-3' AND amount >= 100
ORDER BY amount DESC, id, account, booked";

const FILTER: &str = r#"[{"column": "account", "op": "eq", "value": "acct-3"},
                         {"column": "amount", "op": "gte", "value": "100"}]"#;

/// A request's query parameters, as name and value.
type Params<'a> = &'a [(&'a str, &'a str)];

/// The output's path with `params` as its query string.
fn output_path(job: &str, params: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    format!("/api/jobs/{job}/results/result?{}", query.finish())
}

async fn page(runner: &Runner, job: &str, params: &[(&str, &str)]) -> Value {
    let (status, page) = runner.call(Method::GET, &output_path(job, params), None).await;
    assert_eq!(status, StatusCode::OK, "{params:?}: {page}");
    page
}

/// Postgres's rows of `sql`, one text array each.
async fn postgres_rows(db: &TestDatabase, sql: &str) -> Vec<Vec<Option<String>>> {
    sqlx::query_scalar(sql).fetch_all(&db.pool).await.unwrap()
}

/// The error code and message of a request the runner must refuse with 400.
async fn refused(runner: &Runner, job: &str, params: &[(&str, &str)]) -> (String, String) {
    let (status, answer) = runner.call(Method::GET, &output_path(job, params), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}: {answer}");
    let error = &answer["error"];
    (
        error["code"].as_str().unwrap().to_string(),
        error["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_are_filtered_and_sorted_over_the_whole_output() {
    let db = TestDatabase::create().await;
    db.execute(LEDGER).await;
    let runner = Runner::start(None).await;
    runner.create_connection("books", &db.url).await;
    let sql = "SELECT id, account, amount, booked FROM books.public.ledger";
    let job = runner.submit_job(json!({"type": "query", "sql": sql})).await;
    let finished = runner.wait_for_job(&job, Duration::from_secs(180)).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");

    let expected = postgres_rows(&db, EXPECTED).await;
    assert!(
        expected.len() > 150,
        "enough rows for several pages: {}",
        expected.len()
    );
    let mut paged = Vec::new();
    for offset in (0..expected.len()).step_by(50) {
        let offset = offset.to_string();
        let params = [
            ("filter", FILTER),
            ("order_by", "amount:desc"),
            ("offset", &offset),
            ("limit", "50"),
            ("count", "true"),
        ];
        let page = page(&runner, &job, &params).await;
        assert_eq!(page["total_rows"], json!(expected.len()), "{page}");
        paged.extend(page["rows"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(
        Value::from(paged),
        json!(expected),
        "the pages tile Postgres's rows in order"
    );

    // Unfiltered, counted: every row; without `count` there is no total.
    let all = page(&runner, &job, &[("count", "true"), ("limit", "1")]).await;
    assert_eq!(all["total_rows"], json!(2500), "{all}");
    let uncounted = page(&runner, &job, &[("order_by", "id:desc"), ("limit", "2")]).await;
    assert_eq!(uncounted.get("total_rows"), None, "{uncounted}");
    let beyond = page(&runner, &job, &[("offset", "9007199254740992"), ("limit", "5")]).await;
    assert_eq!(beyond["rows"], json!([]), "past the end, no rows: {beyond}");
    let last_two =
        "SELECT ARRAY[id::text, account, amount::text, booked::text] FROM ledger ORDER BY id DESC LIMIT 2";
    assert_eq!(uncounted["rows"], json!(postgres_rows(&db, last_two).await));

    // A download with the same selection holds the same rows, as CSV.
    let download = runner
        .http()
        .get(format!(
            "{}{}",
            runner.base_url,
            output_path(
                &job,
                &[
                    ("format", "csv"),
                    ("filter", FILTER),
                    ("order_by", "amount:desc"),
                    ("offset", "50"),
                    ("limit", "100")
                ]
            )
        ))
        .bearer_auth(&runner.token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let csv = download.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,account,amount,booked"));
    let downloaded: Vec<Vec<Option<String>>> = lines
        .map(|line| line.split(',').map(|v| Some(v.to_string())).collect())
        .collect();
    assert_eq!(downloaded, expected[50..150], "the download equals the pages");

    // Bad requests say what is wrong.
    let cases: [(Params, &str, &str); 8] = [
        (
            &[("filter", "amount > 3")],
            "invalid_condition",
            "JSON list of conditions",
        ),
        (
            &[("filter", r#"[{"column": "amt", "op": "gt", "value": "1"}]"#)],
            "unknown_column",
            "id, account, amount, booked",
        ),
        (
            &[("filter", r#"[{"column": "amount", "op": "gt", "value": "lots"}]"#)],
            "invalid_condition",
            "\"lots\"",
        ),
        (&[("order_by", "amt")], "invalid_order", "unknown column \"amt\""),
        (
            &[("order_by", "amount:sideways")],
            "invalid_order",
            "\"sideways\" is not a direction",
        ),
        (
            &[("order_by", "amount"), ("offset", "99990"), ("limit", "100")],
            "invalid_order",
            "100000",
        ),
        (
            &[
                ("order_by", "amount"),
                ("offset", "9007199254740992"),
                ("limit", "100"),
            ],
            "invalid_order",
            "100000",
        ),
        (
            &[("offset", "18446744073709551615")],
            "invalid_request",
            "offset must be at most 9007199254740992",
        ),
    ];
    for (params, code, says) in cases {
        let (got, message) = refused(&runner, &job, params).await;
        assert_eq!(got, code, "{params:?}: {message}");
        assert!(message.contains(says), "{params:?} must say {says:?}: {message}");
    }
    let (code, message) = refused(&runner, &job, &[("format", "csv"), ("order_by", "amount")]).await;
    assert_eq!(code, "invalid_order", "{message}");
    assert!(message.contains("needs a limit"), "{message}");
    let (code, _) = refused(&runner, &job, &[("format", "parquet"), ("count", "true")]).await;
    assert_eq!(code, "invalid_request");
}
