//! The `kalla-runner` binary over HTTP: auth, sources, load-scoped previews on both metadata
//! backends, injection attempts, where a source's password may (not) appear, and idempotent job
//! submission.

use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::{Runner, run_to_exit};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ITEMS: &str = "
CREATE TABLE items AS
SELECT i::int8 AS id,
       (CASE WHEN i % 7 = 0 THEN NULL ELSE i * 1.25 END)::numeric(12,2) AS amount,
       CASE WHEN i % 7 = 0 THEN NULL ELSE (i / 100.0)::float8 END AS ratio,
       CASE WHEN i % 7 = 0 THEN NULL ELSE format('name_%s', lpad(i::text, 3, '0')) END AS name,
       CASE WHEN i % 7 = 0 THEN NULL ELSE i % 2 = 0 END AS flag,
       CASE WHEN i % 7 = 0 THEN NULL ELSE DATE '2024-01-01' + i END AS day,
       CASE WHEN i % 7 = 0 THEN NULL ELSE TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * interval '1 day' END AS at,
       CASE WHEN i % 7 = 0 THEN NULL ELSE ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid END AS ref
FROM generate_series(1, 100) AS i;
ALTER TABLE items ADD PRIMARY KEY (id);
CREATE TABLE canary (id int PRIMARY KEY);
INSERT INTO canary SELECT generate_series(1, 3);
";

/// Per type class: a column, two values as JSON (low < high), and the same values as SQL literals.
fn type_classes() -> Vec<(&'static str, Value, Value, &'static str, &'static str)> {
    vec![
        ("id", json!(10), json!(20), "10", "20"),
        ("amount", json!("12.50"), json!("42.5"), "12.50", "42.5"),
        ("ratio", json!(0.25), json!(0.75), "0.25::float8", "0.75::float8"),
        (
            "name",
            json!("name_010"),
            json!("name_050"),
            "'name_010'",
            "'name_050'",
        ),
        ("flag", json!(false), json!(true), "false", "true"),
        (
            "day",
            json!("2024-01-11"),
            json!("2024-02-01"),
            "DATE '2024-01-11'",
            "DATE '2024-02-01'",
        ),
        (
            "at",
            json!("2024-01-11T00:00:00Z"),
            json!("2024-01-21 12:00:00+00"),
            "TIMESTAMPTZ '2024-01-11 00:00:00+00'",
            "TIMESTAMPTZ '2024-01-21 12:00:00+00'",
        ),
        (
            "ref",
            json!("00000000-0000-0000-0000-000000000010"),
            json!("00000000-0000-0000-0000-000000000020"),
            "'00000000-0000-0000-0000-000000000010'::uuid",
            "'00000000-0000-0000-0000-000000000020'::uuid",
        ),
    ]
}

/// Every operator on `column`, as a request condition and the SQL predicate Postgres should agree with.
fn cases(column: &str, low: &Value, high: &Value, sql_low: &str, sql_high: &str) -> Vec<(Value, String)> {
    let c = format!("\"{column}\"");
    vec![
        (
            json!({"column": column, "op": "eq", "value": low}),
            format!("{c} = {sql_low}"),
        ),
        (
            json!({"column": column, "op": "neq", "value": low}),
            format!("{c} <> {sql_low}"),
        ),
        (
            json!({"column": column, "op": "gt", "value": low}),
            format!("{c} > {sql_low}"),
        ),
        (
            json!({"column": column, "op": "gte", "value": low}),
            format!("{c} >= {sql_low}"),
        ),
        (
            json!({"column": column, "op": "lt", "value": high}),
            format!("{c} < {sql_high}"),
        ),
        (
            json!({"column": column, "op": "lte", "value": high}),
            format!("{c} <= {sql_high}"),
        ),
        (
            json!({"column": column, "op": "between", "value": [low, high]}),
            format!("{c} BETWEEN {sql_low} AND {sql_high}"),
        ),
        (
            json!({"column": column, "op": "in", "value": [low, high]}),
            format!("{c} IN ({sql_low}, {sql_high})"),
        ),
        (
            json!({"column": column, "op": "like", "value": "%1%"}),
            format!("CAST({c} AS text) LIKE '%1%'"),
        ),
        (json!({"column": column, "op": "is_null"}), format!("{c} IS NULL")),
        (
            json!({"column": column, "op": "is_not_null"}),
            format!("{c} IS NOT NULL"),
        ),
    ]
}

/// A database with `items` and `canary`, and an embedded runner with `items` registered.
async fn items_source_and_runner() -> (TestDatabase, Runner) {
    let source = TestDatabase::create().await;
    source.execute(ITEMS).await;
    let runner = Runner::start(None).await;
    runner
        .register_source("items", &source.source_uri("public.items"))
        .await;
    (source, runner)
}

async fn preview(runner: &Runner, alias: &str, body: Value) -> (StatusCode, Value) {
    runner
        .call(
            Method::POST,
            &format!("/api/sources/{alias}/load-scoped"),
            Some(body),
        )
        .await
}

/// Every operator on every type class agrees with Postgres, through both metadata backends.
#[tokio::test]
async fn every_operator_on_every_type_class_on_both_metadata_backends() {
    let source = TestDatabase::create().await;
    source.execute(ITEMS).await;
    let metadata = TestDatabase::create().await;
    for database_url in [None, Some(metadata.url.as_str())] {
        let runner = Runner::start(database_url).await;
        runner
            .register_source("items", &source.source_uri("public.items"))
            .await;
        for (column, low, high, sql_low, sql_high) in type_classes() {
            for (condition, predicate) in cases(column, &low, &high, sql_low, sql_high) {
                let expected: i64 =
                    sqlx::query_scalar(&format!("SELECT count(*) FROM items WHERE {predicate}"))
                        .fetch_one(&source.pool)
                        .await
                        .unwrap_or_else(|e| panic!("{predicate}: {e}"));
                let (status, body) =
                    preview(&runner, "items", json!({"conditions": [condition], "limit": 5})).await;
                assert_eq!(status, StatusCode::OK, "{condition}: {body}");
                assert_eq!(
                    body["total_rows"],
                    json!(expected),
                    "{condition} vs {predicate} ({database_url:?})"
                );
                assert_eq!(body["total_rows_exact"], json!(true));
                assert_eq!(body["preview_rows"], json!(expected.min(5)), "{condition}");
                assert_eq!(body["rows"].as_array().unwrap().len() as i64, expected.min(5));
            }
        }
        let (_, body) = preview(
            &runner,
            "items",
            json!({"conditions": [{"column": "id", "op": "eq", "value": 10}]}),
        )
        .await;
        assert_eq!(
            body["rows"][0],
            json!([
                "10",
                "12.50",
                "0.1",
                "name_010",
                "true",
                "2024-01-11",
                "2024-01-11 00:00:00+00",
                "00000000-0000-0000-0000-000000000010"
            ])
        );
        let types: Vec<&str> = body["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["data_type"].as_str().unwrap())
            .collect();
        assert_eq!(types[..3], ["Int64", "Decimal128(12, 2)", "Float64"]);
        assert_eq!(body["columns"][0]["nullable"], json!(false));
        let (_, all) = preview(&runner, "items", json!({})).await;
        assert_eq!(
            (all["total_rows"].clone(), all["preview_rows"].clone()),
            (json!(100), json!(100))
        );
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_naming_the_problem_and_sources_gone_get_502() {
    let (source, runner) = items_source_and_runner().await;
    let cases = [
        (
            json!({"limit": 1001}),
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 1000",
        ),
        (json!({"limit": 0}), StatusCode::BAD_REQUEST, "limit"),
        (
            json!({"conditions": [{"column": "nope", "op": "eq", "value": 1}]}),
            StatusCode::BAD_REQUEST,
            "unknown column \"nope\"",
        ),
        (
            json!({"conditions": [{"column": "id", "op": "contains", "value": 1}]}),
            StatusCode::BAD_REQUEST,
            "unknown variant `contains`",
        ),
        (
            json!({"conditions": [{"column": "id", "op": "between", "value": [1]}]}),
            StatusCode::BAD_REQUEST,
            "exactly two",
        ),
        (
            json!({"conditions": [{"column": "id", "op": "in", "value": 1}]}),
            StatusCode::BAD_REQUEST,
            "non-empty list",
        ),
        (
            json!({"conditions": [{"column": "id", "op": "eq", "value": "ten"}]}),
            StatusCode::BAD_REQUEST,
            "ten",
        ),
        (
            json!({"conditions": [{"column": "day", "op": "gt", "value": "2024-13-45"}]}),
            StatusCode::BAD_REQUEST,
            "2024-13-45",
        ),
        (
            json!({"conditions": "id = 1"}),
            StatusCode::BAD_REQUEST,
            "conditions",
        ),
    ];
    for (body, status, message) in cases {
        let (got, response) = preview(&runner, "items", body.clone()).await;
        assert_eq!(got, status, "{body}: {response}");
        let text = response["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{body}: {response}");
    }
    let (status, body) = preview(&runner, "nobody", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    let (status, body) = runner
        .call(
            Method::POST,
            "/api/sources",
            Some(json!({"alias": "items", "uri": source.source_uri("items")})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    for (alias, uri, message) in [
        ("bad-alias", source.source_uri("items"), "invalid alias"),
        ("ok", "sqlserver://h/db".to_string(), "cannot tell the type"),
        ("ok", "mysql://h/db".to_string(), "no `table` parameter"),
        ("ok", source.url.clone(), "no `table` parameter"),
        ("ok", "file:///tmp/x.xlsx".to_string(), "give source_type"),
    ] {
        let (status, body) = runner
            .call(
                Method::POST,
                "/api/sources",
                Some(json!({"alias": alias, "uri": uri})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{alias} {uri}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }

    runner
        .register_source("nowhere", "postgres://app:topsecret@127.0.0.1:1/db?table=t")
        .await;
    let (status, body) = preview(&runner, "nowhere", json!({})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(!body.to_string().contains("topsecret"), "{body}");

    source.execute("DROP TABLE items").await;
    let (status, body) = preview(&runner, "items", json!({})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("gone"),
        "{body}"
    );
}

/// The runner remembers a table's columns between previews; a table altered since must still be
/// previewed correctly on the very next request.
#[tokio::test]
async fn previews_follow_schema_changes_at_once() {
    let (source, runner) = items_source_and_runner().await;
    let by_id = json!({"conditions": [{"column": "id", "op": "eq", "value": 3}]});
    let (status, body) = preview(&runner, "items", by_id.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    source
        .execute("ALTER TABLE items ADD COLUMN note text DEFAULT 'fresh'")
        .await;
    let (status, body) = preview(
        &runner,
        "items",
        json!({"conditions": [{"column": "note", "op": "eq", "value": "fresh"}], "limit": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a new column is filterable: {body}");
    assert_eq!(body["total_rows"], json!(100));

    source.execute("ALTER TABLE items DROP COLUMN ratio").await;
    let (status, body) = preview(&runner, "items", by_id.clone()).await;
    assert_eq!(status, StatusCode::OK, "a dropped column is not selected: {body}");
    let names: Vec<&str> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"ratio") && names.contains(&"note"), "{names:?}");

    source
        .execute("ALTER TABLE items ALTER COLUMN id TYPE text USING 'k' || id")
        .await;
    let (status, body) = preview(
        &runner,
        "items",
        json!({"conditions": [{"column": "id", "op": "eq", "value": "k3"}]}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a retyped column compares as its new type: {body}"
    );
    assert_eq!(body["total_rows"], json!(1));
    assert_eq!(body["columns"][0]["data_type"], json!("Utf8"));

    let (status, body) = preview(
        &runner,
        "items",
        json!({"conditions": [{"column": "id", "op": "eq", "value": "k3"}, {"column": "amount", "op": "gt", "value": "many"}]}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a user's bad value stays a 400: {body}"
    );
}

/// Previews survive the source closing every pooled connection of the runner (a restart, a
/// DBA's `pg_terminate_backend`): the next request finds a live connection by itself.
#[tokio::test]
async fn previews_survive_terminated_connections() {
    let (source, runner) = items_source_and_runner().await;
    let body = json!({"conditions": [{"column": "id", "op": "lte", "value": 10}]});
    let previews = (0..8).map(|_| preview(&runner, "items", body.clone()));
    for (status, body) in futures::future::join_all(previews).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'kalla-runner') AS t",
    )
    .fetch_one(&source.pool)
    .await
    .unwrap();
    assert!(terminated >= 1, "the runner should have pooled connections");
    for _ in 0..4 {
        let (status, body) = preview(&runner, "items", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["total_rows"], json!(10), "{body}");
    }
}

#[tokio::test]
async fn injection_attempts_are_refused_or_taken_literally() {
    let source = TestDatabase::create().await;
    source.execute(ITEMS).await;
    source.execute("CREATE TABLE \"odd \"\"name\"\" ; --\" (\"we\"\"ird col\" text); INSERT INTO \"odd \"\"name\"\" ; --\" VALUES ('x''y')").await;
    let runner = Runner::start(None).await;
    runner
        .register_source("items", &source.source_uri("public.items"))
        .await;
    let hostile = [
        "'; DROP TABLE canary; --",
        "x' OR '1'='1",
        "1; DELETE FROM canary",
        "/* comment */ 1",
        "\\'; DROP TABLE canary; --",
        "ünïcödé ' ☃",
        "%' OR 1=1 --",
        "$1",
        "\0",
    ];
    for value in hostile {
        for column in ["id", "name", "amount", "day"] {
            for op in ["eq", "like", "gt"] {
                let condition = json!({"column": column, "op": op, "value": value});
                let (status, body) = preview(&runner, "items", json!({"conditions": [condition]})).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                    "{condition}: {status} {body}"
                );
                if status == StatusCode::OK {
                    assert!(body["total_rows"].as_u64().unwrap() <= 100, "{condition}: {body}");
                }
            }
        }
        let condition = json!({"column": value, "op": "eq", "value": 1});
        let (status, _) = preview(&runner, "items", json!({"conditions": [condition]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{condition}");
        let (status, _) = runner
            .call(
                Method::POST,
                "/api/sources",
                Some(json!({"alias": value, "uri": source.source_uri("items")})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "alias {value:?}");
    }
    // Table names are always quoted, so a hostile one is refused or looked up literally and not found.
    for (i, table) in [
        "canary; DROP TABLE canary",
        "public.canary--",
        "\"canary; DROP TABLE canary\"",
        "a.b.c",
        "x\"y",
    ]
    .into_iter()
    .enumerate()
    {
        let alias = format!("hostile_{i}");
        let uri = format!("{}?table={}", source.url, urlencode(table));
        let (status, body) = runner
            .call(
                Method::POST,
                "/api/sources",
                Some(json!({"alias": alias, "uri": uri})),
            )
            .await;
        if status == StatusCode::BAD_REQUEST {
            continue;
        }
        assert_eq!(status, StatusCode::CREATED, "{table}: {body}");
        let (status, body) = preview(&runner, &alias, json!({})).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{table}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not exist"),
            "{body}"
        );
    }
    // Identifiers with spaces, quotes and comment markers work when they are real.
    runner
        .register_source(
            "odd",
            &format!(
                "{}?table={}",
                source.url,
                urlencode("public.\"odd \"\"name\"\" ; --\"")
            ),
        )
        .await;
    let (status, body) = preview(
        &runner,
        "odd",
        json!({"conditions": [{"column": "we\"ird col", "op": "eq", "value": "x'y"}]}),
    )
    .await;
    assert_eq!(
        (status, body["total_rows"].clone()),
        (StatusCode::OK, json!(1)),
        "{body}"
    );

    let canary: i64 = sqlx::query_scalar("SELECT count(*) FROM canary")
        .fetch_one(&source.pool)
        .await
        .unwrap();
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&source.pool)
        .await
        .unwrap();
    assert_eq!((canary, items), (3, 100), "hostile input changed data");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn a_sources_password_appears_in_no_response_log_or_metadata_file() {
    let source = TestDatabase::create().await;
    source.execute(ITEMS).await;
    let role = format!("kalla_pw_{}", &source.name[11..]);
    let password = format!("Pw-{}-never-leaks", &source.name[11..]);
    source
        .execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT SELECT ON items TO {role};"
        ))
        .await;
    let runner = Runner::start(None).await;
    let server = url::Url::parse(&source.url).unwrap();
    let uri = format!(
        "postgres://{role}:{password}@{}:{}{}?table=public.items",
        server.host_str().unwrap(),
        server.port().unwrap_or(5432),
        server.path()
    );
    let mut responses = vec![runner.register_source("guarded", &uri).await];
    assert!(
        responses[0]["uri"].as_str().unwrap().contains(":***@"),
        "{}",
        responses[0]
    );
    responses.push(runner.call(Method::GET, "/api/sources", None).await.1);
    responses.push(runner.call(Method::GET, "/api/sources/guarded", None).await.1);
    let (status, body) = preview(
        &runner,
        "guarded",
        json!({"conditions": [{"column": "id", "op": "lt", "value": 3}]}),
    )
    .await;
    assert_eq!(
        (status, body["total_rows"].clone()),
        (StatusCode::OK, json!(2)),
        "{body}"
    );
    responses.push(body);
    responses.push(
        preview(
            &runner,
            "guarded",
            json!({"conditions": [{"column": "id", "op": "eq", "value": "x"}]}),
        )
        .await
        .1,
    );
    responses.push(json!(runner.metrics().await));
    let backends: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND application_name = 'kalla-runner'",
    )
    .bind(&role)
    .fetch_one(&source.pool)
    .await
    .unwrap();
    assert!(
        backends >= 1,
        "the preview should have used the runner's pool for {role}"
    );

    for response in &responses {
        assert!(!response.to_string().contains(&password), "{response}");
    }
    let logs = runner.logs();
    assert!(logs.contains("request"), "the runner should have logged requests");
    let (_, data_dir) = runner.terminate();
    for entry in std::fs::read_dir(data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes.windows(password.len()).any(|w| w == password.as_bytes());
        assert!(!found, "the password is in {}", path.display());
    }
    assert!(!logs.contains(&password), "the password is in the runner's log");
    source
        .execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await;
}

#[tokio::test]
async fn auth_health_readiness_metrics_and_graceful_shutdown() {
    let runner = Runner::start(None).await;
    let http = runner.http();
    for (path, token) in [("/api/sources", None), ("/api/sources", Some("wrong"))] {
        let mut request = http.get(format!("{}{path}", runner.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(runner.data_dir.path().join("api-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    for path in ["/health", "/ready"] {
        let response = http
            .get(format!("{}{path}", runner.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let (status, _) = runner.call(Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = http
        .get(format!("{}/metrics", runner.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kalla_http_requests_total{method=\"GET\",route=\"/api/sources\",status=\"401\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kalla_http_request_duration_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("kalla_metadata_pool_connections"), "{metrics}");

    let (status, body) = runner
        .call(
            Method::POST,
            "/api/sources",
            Some(json!({"alias": "x", "uri": "file:///x.csv", "extra": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, _) = runner
        .call(
            Method::POST,
            "/api/sources",
            Some(json!({"alias": "x", "uri": big})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, data_dir) = runner.terminate();
    assert!(
        status.success(),
        "SIGTERM should stop the runner cleanly: {status}"
    );
    // The same data dir starts again with the same token and migrated database.
    let runner = Runner::start_in(data_dir, None, &[]).await;
    let (status, _) = runner.call(Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_remote_scheduler_needs_both_keys_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (status, output) = run_to_exit(dir.path(), None, &["--scheduler", "df://127.0.0.1:1"]);
    assert!(!status.success());
    assert!(output.contains("KALLA_SECRET_KEY"), "{output}");
    let secrets_key = kalla_e2e::cluster::cluster_key();
    let (status, output) = run_to_exit(
        dir.path(),
        None,
        &["--scheduler", "df://127.0.0.1:1", "--secret-key", &secrets_key],
    );
    assert!(!status.success());
    assert!(output.contains("KALLA_CLUSTER_KEY"), "{output}");
    assert!(!dir.path().join("secret.key").exists());
}

/// A browser preflight from `origin`: the `Access-Control-Allow-Origin` the runner answers.
async fn preflight(runner: &Runner, origin: &str) -> Option<String> {
    let response = runner
        .http()
        .request(Method::OPTIONS, format!("{}/api/sources", runner.base_url))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn cors_is_closed_unless_origins_are_configured() {
    let closed = Runner::start(None).await;
    assert_eq!(preflight(&closed, "https://app.example.com").await, None);

    let open = Runner::start_in(
        tempfile::TempDir::new().unwrap(),
        None,
        &[
            "--cors-allowed-origins",
            "https://app.example.com,http://localhost:3000",
        ],
    )
    .await;
    for origin in ["https://app.example.com", "http://localhost:3000"] {
        assert_eq!(preflight(&open, origin).await.as_deref(), Some(origin));
    }
    assert_eq!(preflight(&open, "https://evil.example.com").await, None);
    let response = open
        .http()
        .get(format!("{}/api/sources", open.base_url))
        .bearer_auth(&open.token)
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let refused = tempfile::TempDir::new().unwrap();
    let (status, output) = run_to_exit(
        refused.path(),
        None,
        &["--cors-allowed-origins", "https://app.example.com/"],
    );
    assert!(!status.success(), "a path in an origin must be refused: {output}");
    assert!(output.contains("not an origin"), "{output}");
}

/// `kalla-runner` with `args` and `env`, run until it exits; its status and what it printed.
fn runner_start_failure(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut command = std::process::Command::new(kalla_e2e::cluster::bin_path("kalla-runner"));
    command.args(["--bind", &format!("127.0.0.1:{}", kalla_e2e::ports::free_port())]);
    for variable in [
        "KALLA_API_TOKEN",
        "KALLA_SECRET_KEY",
        "KALLA_CLUSTER_KEY",
        "KALLA_SCHEDULER",
        "KALLA_DATABASE_URL",
    ] {
        command.env_remove(variable);
    }
    let output = command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run kalla-runner");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, printed)
}

/// A start-up error says what failed and what to do, and no cause in it is empty.
fn assert_start_up_error(printed: &str, what: &[&str]) {
    for part in what {
        assert!(printed.contains(part), "{part:?} missing from:\n{printed}");
    }
    let mut lines = printed.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_end().ends_with("Caused by:") {
            let next = lines.peek().map_or("", |l| l.trim());
            assert!(!next.is_empty(), "an empty cause in:\n{printed}");
        }
    }
}

#[tokio::test]
async fn a_configured_runner_creates_its_new_data_dir_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("not/there/yet");
    let port = kalla_e2e::ports::free_port();
    let token = "kalla_configured_token";
    let mut child = std::process::Command::new(kalla_e2e::cluster::bin_path("kalla-runner"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("KALLA_API_TOKEN", token)
        .env("KALLA_SECRET_KEY", kalla_e2e::cluster::cluster_key())
        .env_remove("KALLA_SCHEDULER")
        .env_remove("KALLA_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kalla-runner");
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/sources");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let answered = loop {
        assert!(child.try_wait().unwrap().is_none(), "kalla-runner exited");
        if let Ok(response) = http.get(&url).bearer_auth(token).send().await {
            break response;
        }
        assert!(std::time::Instant::now() < deadline, "the runner did not answer");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answered.status(), StatusCode::OK);
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the data dir is private");
    assert!(
        data_dir.join("kalla.db").exists(),
        "the metadata DB is in the new data dir"
    );
    assert!(
        !data_dir.join("api-token").exists() && !data_dir.join("secret.key").exists(),
        "configured credentials are not written to disk"
    );
}

#[tokio::test]
async fn start_up_failures_say_what_failed_where_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();

    let (status, printed) =
        runner_start_failure(&["--data-dir", data_dir, "--scheduler", "df://127.0.0.1:1"], &[]);
    assert!(!status.success());
    assert_start_up_error(&printed, &["KALLA_SECRET_KEY", "openssl rand -base64 32"]);

    let (status, printed) =
        runner_start_failure(&["--data-dir", data_dir], &[("KALLA_SECRET_KEY", "not base64!")]);
    assert!(!status.success());
    assert_start_up_error(
        &printed,
        &["KALLA_SECRET_KEY", "not valid base64", "openssl rand -base64 32"],
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let below_file = file.join("data");
    let (status, printed) = runner_start_failure(&["--data-dir", below_file.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert_start_up_error(
        &printed,
        &[
            "cannot create the data dir",
            below_file.to_str().unwrap(),
            "--data-dir",
        ],
    );

    let nowhere = format!(
        "postgres://kalla:hunter2@127.0.0.1:{}/metadata",
        kalla_e2e::ports::free_port()
    );
    let (status, printed) = runner_start_failure(&["--data-dir", data_dir, "--database-url", &nowhere], &[]);
    assert!(!status.success());
    assert_start_up_error(
        &printed,
        &[
            "cannot open the metadata database",
            "127.0.0.1",
            "--database-url",
            "Connection refused",
        ],
    );
    assert!(
        !printed.contains("hunter2"),
        "the password is not printed:\n{printed}"
    );
}

#[tokio::test]
async fn one_idempotency_key_makes_one_job_however_often_and_by_how_many_it_is_sent() {
    let runner = Runner::start(None).await;
    let key = "nightly-2026-12-02";
    let body = json!({"type": "query", "sql": "SELECT 1 AS one"});
    let calls = (0..20).map(|_| runner.call_with_key(Method::POST, "/api/jobs", key, body.clone()));
    let answers = futures::future::join_all(calls).await;
    let ids: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(status, job)| {
            assert_eq!(*status, StatusCode::ACCEPTED, "{job}");
            job["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let jobs = |expected: usize| {
        let runner = &runner;
        async move {
            let (_, jobs) = runner.call(Method::GET, "/api/jobs", None).await;
            assert_eq!(jobs.as_array().unwrap().len(), expected, "{jobs}");
        }
    };
    jobs(1).await;

    // Another body under the key is refused and makes nothing.
    let other = json!({"type": "query", "sql": "SELECT 2 AS two"});
    let (status, answer) = runner.call_with_key(Method::POST, "/api/jobs", key, other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "idempotency_conflict", "{answer}");
    jobs(1).await;

    // A request that fails frees its key: the corrected request makes its job.
    let broken = json!({"type": "query", "sql": "SELEC 3"});
    let (status, answer) = runner
        .call_with_key(Method::POST, "/api/jobs", "retry", broken)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let fixed = json!({"type": "query", "sql": "SELECT 3 AS three"});
    let (status, answer) = runner
        .call_with_key(Method::POST, "/api/jobs", "retry", fixed)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    jobs(2).await;

    let (status, answer) = runner
        .call_with_key(Method::POST, "/api/jobs", "two words", body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{answer}"
    );
    jobs(2).await;
}
