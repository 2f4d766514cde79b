//! Connections, the parquet cache and SQL through the real runner, scheduler and two executors.

use std::path::Path;
use std::time::Duration;

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

const ORDERS: &str = "
CREATE TABLE orders AS
SELECT i::int8 AS id, (i % 997)::int4 AS customer, (i * 1.25)::numeric(12,2) AS amount,
       DATE '2024-01-01' + (i % 365) AS placed_on,
       CASE WHEN i % 11 = 0 THEN NULL ELSE repeat(md5(i::text), 2) END AS note
FROM generate_series(1, 200000) AS i;
CREATE TABLE items (sku text PRIMARY KEY, price numeric(8,2));
INSERT INTO items VALUES ('a', 1.50), ('b', 2.25), ('c', NULL);
CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 1000;
";

/// Postgres's own count and sum of `orders`, for [`TestDatabase::text_row`].
const ORDER_TOTALS: &str = "count(*), sum(amount) FROM orders";

/// A cluster of a scheduler and two executors, with a runner using it and a shared cache dir.
struct Setup {
    runner: Runner,
    cluster: Cluster,
    cache: TempDir,
}

async fn setup(extra: &[&str]) -> Setup {
    setup_on(Cluster::start(ClusterOptions::default()).await, extra).await
}

async fn setup_on(cluster: Cluster, extra: &[&str]) -> Setup {
    let cache = tempfile::Builder::new().prefix("kalla-cache-").tempdir().unwrap();
    let cache_url = url::Url::from_directory_path(cache.path()).unwrap().to_string();
    let runner_args = cluster.runner_args();
    let mut args: Vec<&str> = runner_args.iter().map(String::as_str).collect();
    args.extend([
        "--cache-dir",
        &cache_url,
        "--cache-grace-period-secs",
        "2",
        "--cache-sweep-interval-secs",
        "1",
        "--scan-partition-mib",
        "4",
    ]);
    args.extend_from_slice(extra);
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    Setup {
        runner,
        cluster,
        cache,
    }
}

async fn query(runner: &Runner, body: Value) -> Value {
    let (status, response) = runner.call(Method::POST, "/api/query", Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}: {response}");
    response
}

/// The version directories under the cache root for one table.
fn versions(cache: &Path, connection_id: &str, table: &str) -> Vec<String> {
    let dir = cache.join("cache").join(connection_id).join("public").join(table);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    kalla_e2e::wait_for(what, Duration::from_secs(30), || {
        let ready = done();
        async move { ready.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn connections_are_discovered_cached_refreshed_and_queried_on_the_cluster() {
    let db = TestDatabase::create().await;
    db.execute(ORDERS).await;
    let Setup {
        runner,
        mut cluster,
        cache,
    } = setup(&[]).await;

    let created = runner.create_connection("shop", &db.url).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("conn_"), "{created}");
    assert_eq!(created["discovery"]["status"], "succeeded", "{created}");
    assert_eq!(created["discovery"]["tables"], 3, "{created}");
    assert!(
        created["config"]["password"].is_null(),
        "no password was given: {created}"
    );

    for (body, status, message) in [
        (
            json!({"name": "bad-name", "source_type": "postgres", "config": {"uri": db.url}}),
            400,
            "invalid connection name",
        ),
        (
            json!({"name": "x", "source_type": "oracle", "config": {"uri": db.url}}),
            400,
            "source_type",
        ),
        (
            json!({"name": "x", "source_type": "postgres", "config": {"host": "h"}}),
            400,
            "database is required",
        ),
        (
            json!({"name": "shop", "source_type": "postgres", "config": {"uri": db.url}}),
            409,
            "already exists",
        ),
    ] {
        let (got, response) = runner
            .call(Method::POST, "/api/connections", Some(body.clone()))
            .await;
        assert_eq!(got.as_u16(), status, "{body}: {response}");
        assert!(
            response["error"]["message"].as_str().unwrap().contains(message),
            "{response}"
        );
    }

    let (_, shown) = runner
        .call(Method::GET, &format!("/api/connections/{id}"), None)
        .await;
    assert_eq!(
        (shown["table_count"].clone(), shown["cached_table_count"].clone()),
        (json!(3), json!(0))
    );
    let (_, health) = runner
        .call(Method::GET, &format!("/api/connections/{id}/health"), None)
        .await;
    assert_eq!(health["reachable"], true, "{health}");

    // First use caches the table: a distributed refresh, one parquet file per partition.
    let totals = "SELECT count(*) AS n, sum(amount) AS total, min(placed_on) AS first, count(note) AS notes \
                  FROM shop.public.orders";
    let answer = query(&runner, json!({"sql": totals})).await;
    let expected = db
        .text_row("count(*), sum(amount), min(placed_on), count(note) FROM orders")
        .await;
    assert_eq!(answer["rows"][0], json!(expected), "{answer}");
    assert_eq!(answer["tables"][0]["read"], "cache", "{answer}");
    let v1 = answer["tables"][0]["version"].as_str().unwrap().to_string();
    let v1_dir = cache
        .path()
        .join("cache")
        .join(&id)
        .join("public")
        .join("orders")
        .join(&v1);
    let files: Vec<_> = std::fs::read_dir(&v1_dir).unwrap().flatten().collect();
    assert!(
        files.len() >= 3,
        "one file per partition of a ~25 MiB table at 4 MiB: {files:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
    );

    let by_bucket = "SELECT customer % 7 AS bucket, count(*) AS n, sum(amount) AS total \
                     FROM shop.public.orders GROUP BY customer % 7 ORDER BY bucket";
    let answer = query(&runner, json!({"sql": by_bucket})).await;
    let expected: Vec<Vec<Option<String>>> = sqlx::query_scalar::<_, Vec<Option<String>>>(
        "SELECT ARRAY[(customer % 7)::text, count(*)::text, sum(amount)::text] FROM orders \
         GROUP BY customer % 7 ORDER BY customer % 7",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(answer["rows"], json!(expected));
    assert_eq!(
        answer["tables"][0]["version"],
        json!(v1),
        "served from the same version"
    );

    // Two refreshes of one table at once: one runs, the other is refused.
    let (first, second) = (spawn_refresh(&runner, &id), spawn_refresh(&runner, &id));
    let mut statuses = [first.await.unwrap(), second.await.unwrap()];
    statuses.sort_by_key(|(status, _)| *status);
    assert_eq!(statuses[0].0, StatusCode::OK, "{statuses:?}");
    assert_eq!(statuses[1].0, StatusCode::CONFLICT, "{statuses:?}");
    assert!(
        statuses[1].1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already running")
    );
    let v1 = statuses[0].1["version"].as_str().unwrap().to_string();
    wait_until(
        "the version replaced by the concurrent refresh to be deleted",
        || versions(cache.path(), &id, "orders") == [v1.clone()],
    )
    .await;

    // Change rows at the source, refresh, and see the new values; the old version goes after the grace period.
    db.execute(
        "UPDATE orders SET amount = amount + 1 WHERE id <= 1000; DELETE FROM orders WHERE id > 199990",
    )
    .await;
    let (status, refreshed) = refresh_orders(&runner, &id).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["rows"], 199_990, "{refreshed}");
    let v2 = refreshed["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    let answer = query(&runner, json!({"sql": totals})).await;
    let expected = db
        .text_row("count(*), sum(amount), min(placed_on), count(note) FROM orders")
        .await;
    assert_eq!(answer["rows"][0], json!(expected), "{answer}");
    assert_eq!(answer["tables"][0]["version"], json!(v2));
    wait_until("the replaced version's files to be deleted", || {
        versions(cache.path(), &id, "orders") == [v2.clone()]
    })
    .await;

    // The catalog, through the API and through SQL.
    let (_, catalog) = runner
        .call(
            Method::GET,
            &format!("/api/information_schema?connection_id={id}"),
            None,
        )
        .await;
    let orders = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table_name"] == "orders")
        .unwrap();
    assert_eq!(
        orders["columns"][2],
        json!({"name": "amount", "data_type": "Decimal128(12, 2)", "nullable": true, "sql_type": "numeric(12,2)"})
    );
    assert_eq!(orders["cache_version"], json!(v2));
    let answer = query(
        &runner,
        json!({"sql": "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'shop' AND table_schema = 'public' ORDER BY table_name"}),
    )
    .await;
    assert_eq!(
        answer["rows"],
        json!([["big_orders"], ["items"], ["orders"]]),
        "{answer}"
    );
    let answer = query(
        &runner,
        json!({"sql": "SELECT data_type FROM information_schema.columns WHERE table_catalog = 'shop' AND table_name = 'orders' AND column_name = 'placed_on'"}),
    )
    .await;
    assert_eq!(answer["rows"], json!([["Date32"]]), "{answer}");

    // Sources are queried by alias, next to connection tables.
    runner
        .register_source("orders_src", &db.source_uri("public.orders"))
        .await;
    let answer = query(
        &runner,
        json!({"sql": "SELECT count(*) FROM orders_src s JOIN shop.public.orders o ON o.id = s.id WHERE s.amount = o.amount"}),
    )
    .await;
    assert_eq!(answer["rows"], json!([["199990"]]), "{answer}");
    let reads: Vec<&str> = answer["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["read"].as_str().unwrap())
        .collect();
    assert_eq!(reads, ["source", "cache"], "{answer}");

    // Live reads go straight to Postgres through the partitioned scan; joins mix both.
    let answer = query(
        &runner,
        json!({"sql": "SELECT sku, price FROM shop.public.items ORDER BY sku", "live": true}),
    )
    .await;
    assert_eq!(answer["rows"], json!([["a", "1.50"], ["b", "2.25"], ["c", null]]));
    assert_eq!(answer["tables"][0]["read"], "live");
    let answer = query(
        &runner,
        json!({"sql": "SELECT id FROM shop.public.orders ORDER BY id", "limit": 5}),
    )
    .await;
    assert_eq!(answer["rows"], json!([["1"], ["2"], ["3"], ["4"], ["5"]]));
    assert_eq!(
        (answer["row_count"].clone(), answer["truncated"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(answer["columns"][0]["data_type"], "Int64");

    for (body, status, message) in [
        (
            json!({"sql": "SELECT * FROM shop.public.nope"}),
            404,
            "unknown table",
        ),
        (
            json!({"sql": "SELECT * FROM nowhere.public.orders"}),
            404,
            "unknown table",
        ),
        (
            json!({"sql": "SELECT * FROM public.orders"}),
            404,
            "connection.schema.table",
        ),
        (json!({"sql": "SELEKT 1"}), 400, "SELEKT"),
        (json!({"sql": "CREATE TABLE t (a int)"}), 400, "DDL"),
        (json!({"sql": "SELECT 1", "limit": 0}), 400, "limit"),
    ] {
        let (got, response) = runner.call(Method::POST, "/api/query", Some(body.clone())).await;
        assert_eq!(got.as_u16(), status, "{body}: {response}");
        assert!(
            response["error"]["message"].as_str().unwrap().contains(message),
            "{body}: {response}"
        );
    }

    // A schema refresh drops vanished tables; with data=true every cached table is refreshed too.
    db.execute("DROP VIEW big_orders; DROP TABLE items; CREATE TABLE refunds (id int8)")
        .await;
    let (status, refreshed) = runner
        .call(
            Method::POST,
            &format!("/api/connections/{id}/refresh?data=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        (
            refreshed["discovery"]["added"].clone(),
            refreshed["discovery"]["removed"].clone()
        ),
        (json!(1), json!(2)),
        "{refreshed}"
    );
    let refreshed_tables: Vec<&str> = refreshed["refreshed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["table"].as_str().unwrap())
        .collect();
    assert_eq!(refreshed_tables, ["orders"], "only cached tables get new data");
    let (status, _) = runner
        .call(
            Method::POST,
            "/api/query",
            Some(json!({"sql": "SELECT * FROM shop.public.items", "live": true})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a vanished table is gone from the catalog"
    );
    let (status, bad) = runner
        .call(
            Method::POST,
            &format!("/api/connections/{id}/refresh?data=maybe"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // Purge, delete: the files follow after the grace period.
    let (status, purged) = runner
        .call(
            Method::DELETE,
            &format!("/api/connections/{id}/tables/public/orders/cache"),
            None,
        )
        .await;
    assert_eq!(
        (status, purged["purged_tables"].clone()),
        (StatusCode::OK, json!(1)),
        "{purged}"
    );
    wait_until("the purged version's files to be deleted", || {
        versions(cache.path(), &id, "orders").is_empty()
    })
    .await;
    let answer = query(&runner, json!({"sql": "SELECT count(*) FROM shop.public.orders"})).await;
    assert_eq!(answer["rows"], json!([["199990"]]), "cached again on use");
    let (status, _) = runner
        .call(Method::DELETE, &format!("/api/connections/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_until("a deleted connection's cache to be deleted", || {
        versions(cache.path(), &id, "orders").is_empty()
    })
    .await;
    let (status, _) = runner
        .call(Method::GET, &format!("/api/connections/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    cluster.assert_running();
}

/// Where the cache of `orders` is refreshed.
fn refresh_path(id: &str) -> String {
    format!("/api/connections/{id}/tables/public/orders/refresh")
}

/// Refreshes the cache of `orders` and returns the runner's answer.
async fn refresh_orders(runner: &Runner, id: &str) -> (StatusCode, Value) {
    runner.call(Method::POST, &refresh_path(id), None).await
}

/// Refreshes in the background, so a fault can be injected while it runs.
fn spawn_refresh(runner: &Runner, id: &str) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    runner.spawn_call(Method::POST, &refresh_path(id), None)
}

/// A refresh caught copying from the source, still going, and the answer of the last refresh
/// that ended before one could be caught.
async fn refresh_caught_copying(
    runner: &Runner,
    db: &TestDatabase,
    id: &str,
) -> (tokio::task::JoinHandle<(StatusCode, Value)>, Option<Value>) {
    runner
        .spawn_caught_copying(db, Method::POST, &refresh_path(id), None)
        .await
}

/// The version a successful refresh answered, and Postgres's totals it must serve.
async fn serving(refreshed: &Value, db: &TestDatabase) -> (String, Value) {
    let version = refreshed["version"].as_str().unwrap().to_string();
    (version, json!(db.text_row(ORDER_TOTALS).await))
}

/// After a fault: exactly one version remains (the served one), it answers correctly, and the
/// scheduler runs no job.
async fn assert_one_serving_version(setup: &Setup, id: &str, served: &str, totals: &Value) {
    wait_until("only the served version's files to remain", || {
        versions(setup.cache.path(), id, "orders") == [served.to_string()]
    })
    .await;
    let answer = query(
        &setup.runner,
        json!({"sql": "SELECT count(*), sum(amount) FROM shop.public.orders"}),
    )
    .await;
    assert_eq!(answer["tables"][0]["version"], served, "{answer}");
    assert_eq!(&answer["rows"][0], totals, "the served version's own data");
    let dir = setup
        .cache
        .path()
        .join("cache")
        .join(id)
        .join("public")
        .join("orders")
        .join(served);
    for file in std::fs::read_dir(dir).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("part-") && name.ends_with(".parquet"),
            "stray file {name}"
        );
    }
    setup.cluster.assert_no_job_running().await;
}

/// Faults mid-refresh — an executor killed, the source's backends terminated — never leave a
/// half-written version served, a job running, or partial files behind.
#[tokio::test]
async fn faults_mid_refresh_leave_the_previous_version_serving() {
    let db = TestDatabase::create().await;
    db.execute(&ORDERS.replace("200000", "600000")).await;
    let cluster = Cluster::start(ClusterOptions {
        fast_failure_detection: true,
        ..ClusterOptions::default()
    })
    .await;
    let setup = setup_on(cluster, &[]).await;
    let id = setup.runner.create_connection("shop", &db.url).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, first) = refresh_orders(&setup.runner, &id).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (mut served, mut served_totals) = serving(&first, &db).await;

    // The source's backends terminated mid-refresh: the refresh fails and v1 keeps serving
    // (or, if Ballista retried the failed tasks, the new version does).
    db.execute("UPDATE orders SET amount = amount + 1 WHERE id <= 10")
        .await;
    let (refresh, ended) = refresh_caught_copying(&setup.runner, &db, &id).await;
    if let Some(ended) = ended {
        (served, served_totals) = serving(&ended, &db).await;
    }
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%'").await;
    let (status, outcome) = refresh.await.unwrap();
    eprintln!("source backends terminated mid-refresh: {status} {outcome}");
    if status == StatusCode::OK {
        (served, served_totals) = serving(&outcome, &db).await;
    } else {
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{outcome}");
        assert_eq!(outcome["error"]["code"], "refresh_failed", "{outcome}");
    }
    assert_one_serving_version(&setup, &id, &served, &served_totals).await;

    // An executor killed mid-refresh: the refresh fails or is retried on the other executor; either
    // way one complete version serves.
    let mut setup = setup;
    let (refresh, ended) = refresh_caught_copying(&setup.runner, &db, &id).await;
    if let Some(ended) = ended {
        (served, served_totals) = serving(&ended, &db).await;
    }
    setup.cluster.kill("executor-0");
    let (status, outcome) = tokio::time::timeout(Duration::from_secs(120), refresh)
        .await
        .expect("the refresh ends")
        .unwrap();
    eprintln!("executor killed mid-refresh: {status} {outcome}");
    if status == StatusCode::OK {
        assert_eq!(outcome["rows"], 600_000, "{outcome}");
        (served, served_totals) = serving(&outcome, &db).await;
    } else {
        assert_eq!(outcome["error"]["code"], "refresh_failed", "{outcome}");
    }
    assert_one_serving_version(&setup, &id, &served, &served_totals).await;
}

/// In clusters the cache lives on S3: executors write the parquet files there, queries read them,
/// and replaced versions are deleted from the bucket.
#[tokio::test]
async fn the_cache_can_live_on_s3() {
    let s3 = kalla_e2e::s3::S3Server::start().await;
    let db = TestDatabase::create().await;
    db.execute(ORDERS).await;
    let cluster = Cluster::start(ClusterOptions {
        extra_args: s3.cluster_args(),
        ..ClusterOptions::default()
    })
    .await;
    let cache_dir = format!("s3://{}/kalla", s3.bucket);
    let mut args = cluster.runner_args();
    args.extend(s3.runner_args());
    args.extend(
        [
            "--cache-dir",
            &cache_dir,
            "--cache-grace-period-secs",
            "1",
            "--cache-sweep-interval-secs",
            "1",
            "--scan-partition-mib",
            "4",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    let id = runner.create_connection("shop", &db.url).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let totals = "SELECT count(*), sum(amount) FROM shop.public.orders";
    let (status, answer) = runner
        .call(Method::POST, "/api/query", Some(json!({"sql": totals})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}\n{}", cluster.log_tails());
    assert_eq!(answer["rows"][0], json!(db.text_row(ORDER_TOTALS).await));
    let v1 = answer["tables"][0]["version"].as_str().unwrap().to_string();
    let prefix = format!("kalla/cache/{id}/public/orders/");
    let keys = s3.keys(&prefix).await;
    assert!(
        keys.len() >= 3 && keys.iter().all(|k| k.starts_with(&format!("{prefix}{v1}/part-"))),
        "{keys:?}"
    );

    db.execute("UPDATE orders SET amount = 0 WHERE id = 1").await;
    let (status, refreshed) = refresh_orders(&runner, &id).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let v2 = refreshed["version"].as_str().unwrap().to_string();
    let answer = query(&runner, json!({"sql": totals})).await;
    assert_eq!(answer["rows"][0], json!(db.text_row(ORDER_TOTALS).await));
    kalla_e2e::wait_for(
        "the replaced version to leave the bucket",
        Duration::from_secs(30),
        || async {
            let keys = s3.keys(&prefix).await;
            (!keys.is_empty() && keys.iter().all(|k| k.starts_with(&format!("{prefix}{v2}/")))).then_some(())
        },
    )
    .await;
}

/// A connection's password is sealed: it shows as `***`, never in a response, the runner's log or
/// any file of its data dir (metadata DB and parquet cache included), yet queries still work.
#[tokio::test]
async fn a_connections_password_appears_nowhere() {
    let db = TestDatabase::create().await;
    db.execute(ORDERS).await;
    let role = format!("kalla_conn_{}", &db.name[11..]);
    let password = format!("Conn-{}-never-leaks", &db.name[11..]);
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
    ))
    .await;
    let server = url::Url::parse(&db.url).unwrap();
    let runner = Runner::start(None).await;
    let config = json!({"host": server.host_str(), "port": server.port().unwrap_or(5432),
        "database": db.name, "user": role, "password": password});
    let (status, created) = runner
        .call(
            Method::POST,
            "/api/connections",
            Some(json!({"name": "guarded", "source_type": "postgres", "config": config})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["config"]["password"], "***");
    assert_eq!(created["discovery"]["status"], "succeeded", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let mut responses = vec![created];
    for path in [
        "/api/connections".to_string(),
        format!("/api/connections/{id}"),
        format!("/api/connections/{id}/health"),
    ] {
        responses.push(runner.call(Method::GET, &path, None).await.1);
    }
    responses.push(
        query(
            &runner,
            json!({"sql": "SELECT count(*) FROM guarded.public.orders"}),
        )
        .await,
    );
    responses.push(
        query(
            &runner,
            json!({"sql": "SELECT count(*) FROM guarded.public.items", "live": true}),
        )
        .await,
    );
    assert_eq!(responses[4]["rows"], json!([["200000"]]));
    for response in &responses {
        assert!(!response.to_string().contains(&password), "{response}");
    }
    assert!(
        !runner.logs().contains(&password),
        "the runner's log holds the password"
    );
    let (_, data_dir) = runner.terminate();
    let files = kalla_e2e::files_under(data_dir.path());
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes.windows(password.len()).any(|w| w == password.as_bytes()),
            "{} holds the password",
            path.display()
        );
    }
    assert!(
        files.len() > 3,
        "the metadata DB and the cache's parquet files were searched"
    );
}
