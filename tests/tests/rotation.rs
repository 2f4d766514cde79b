//! Named secrets and rotation: a secret's value goes in and never comes out; a password rotated
//! at the source is taken up with one call while a job runs; the secrets key and the cluster key
//! are rotated (key files read again as they change) while a reconciliation runs and previews
//! are served, every secret ends sealed under the new key, and the old one can go; executors of a
//! real cluster take up a rotated cluster key without a restart.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::{PgCluster, TestDatabase};
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

const FIRST_PASSWORD: &str = "first-pass-Aq7";
const SECOND_PASSWORD: &str = "second-pass-Zx9";

async fn preview_status(runner: &Runner, alias: &str) -> (StatusCode, Value) {
    let path = format!("/api/sources/{alias}/load-scoped");
    runner
        .call(Method::POST, &path, Some(json!({"conditions": [], "limit": 1})))
        .await
}

async fn expect(
    runner: &Runner,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: StatusCode,
) -> Value {
    let (got, answer) = runner.call(method.clone(), path, body).await;
    assert_eq!(got, status, "{method} {path}: {answer}");
    answer
}

/// `postgres://app@127.0.0.1:PORT/DB?table=public.TABLE` on `db`'s server, without a password.
fn app_uri(db: &TestDatabase, table: &str) -> String {
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username("app").unwrap();
    url.set_query(Some(&format!("table=public.{table}")));
    url.to_string()
}

fn with_password(uri: &str, password: &str) -> String {
    let mut url = url::Url::parse(uri).unwrap();
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_rotated_at_the_source_is_taken_up_with_one_call() {
    let server = PgCluster::start_with_passwords();
    let db = TestDatabase::create_on(&server.url).await;
    db.execute(&format!(
        "CREATE ROLE app LOGIN PASSWORD '{FIRST_PASSWORD}';
         CREATE TABLE orders AS SELECT g AS id, g % 97 AS bucket FROM generate_series(1, 2000000) g;
         GRANT SELECT ON orders TO app;"
    ))
    .await;
    let runner = Runner::start(None).await;

    // A named secret, used by name by a source and a connection; another source has its
    // password in its URI.
    let secret = json!({"name": "shop_app", "value": FIRST_PASSWORD});
    let made = expect(
        &runner,
        Method::POST,
        "/api/secrets",
        Some(secret),
        StatusCode::CREATED,
    )
    .await;
    assert!(made["id"].as_str().unwrap().starts_with("secr_"), "{made}");
    let by_name = json!({"alias": "orders", "uri": app_uri(&db, "orders"), "secret": "shop_app"});
    expect(
        &runner,
        Method::POST,
        "/api/sources",
        Some(by_name),
        StatusCode::CREATED,
    )
    .await;
    let direct = with_password(&app_uri(&db, "orders"), FIRST_PASSWORD);
    runner.register_source("orders_direct", &direct).await;
    let database = app_uri(&db, "orders").replace("?table=public.orders", "");
    let connection =
        json!({"name": "shop", "source_type": "postgres", "config": {"uri": database}, "secret": "shop_app"});
    let connection = expect(
        &runner,
        Method::POST,
        "/api/connections",
        Some(connection),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(connection["discovery"]["status"], "succeeded", "{connection}");
    for alias in ["orders", "orders_direct"] {
        let (status, rows) = preview_status(&runner, alias).await;
        assert_eq!(status, StatusCode::OK, "{alias}: {rows}");
        assert_eq!(rows["preview_rows"], 1, "{alias}: {rows}");
    }
    let refusals = [
        (
            "/api/secrets",
            json!({"name": "shop_app", "value": "x"}),
            StatusCode::CONFLICT,
        ),
        (
            "/api/secrets",
            json!({"name": "shop app", "value": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/secrets",
            json!({"name": "empty", "value": ""}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/sources",
            json!({"alias": "both", "uri": direct, "secret": "shop_app"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/sources",
            json!({"alias": "unknown", "uri": app_uri(&db, "orders"), "secret": "nope"}),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (path, body, status) in refusals {
        expect(&runner, Method::POST, path, Some(body), status).await;
    }
    let listed = expect(&runner, Method::GET, "/api/secrets", None, StatusCode::OK).await;
    assert_eq!(listed[0]["name"], "shop_app");
    assert_eq!(listed[0]["used_by"], 2, "{listed}");
    expect(
        &runner,
        Method::DELETE,
        "/api/secrets/shop_app",
        None,
        StatusCode::CONFLICT,
    )
    .await;

    // A job reads the table while the password changes at the source.
    let job = runner
        .submit_job(json!({"type": "query", "sql": "SELECT bucket, count(*) AS n FROM orders_direct GROUP BY bucket"}))
        .await;
    db.wait_for_copy().await;
    db.execute(&format!("ALTER ROLE app PASSWORD '{SECOND_PASSWORD}'"))
        .await;
    let new_value = json!({"value": SECOND_PASSWORD});
    expect(
        &runner,
        Method::PUT,
        "/api/secrets/shop_app",
        Some(new_value),
        StatusCode::OK,
    )
    .await;
    let new_password = json!({"password": SECOND_PASSWORD});
    let patched = expect(
        &runner,
        Method::PATCH,
        "/api/sources/orders_direct",
        Some(new_password),
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["alias"], "orders_direct");
    let neither = json!({});
    expect(
        &runner,
        Method::PATCH,
        "/api/sources/orders",
        Some(neither),
        StatusCode::BAD_REQUEST,
    )
    .await;

    for alias in ["orders", "orders_direct"] {
        let (status, rows) = preview_status(&runner, alias).await;
        assert_eq!(status, StatusCode::OK, "{alias} after the rotation: {rows}");
    }
    let live = json!({"sql": "SELECT count(*) AS n FROM shop.public.orders", "live": true});
    let answer = expect(&runner, Method::POST, "/api/query", Some(live), StatusCode::OK).await;
    assert_eq!(answer["rows"], json!([["2000000"]]));
    let ended = runner.wait_for_job(&job, Duration::from_secs(180)).await;
    assert_eq!(
        ended["status"], "succeeded",
        "the job running through the rotation: {ended}"
    );

    // The old password is gone at the source: a new pool given it cannot connect.
    let stale = format!(
        "{}&sslmode=prefer",
        with_password(&app_uri(&db, "orders"), FIRST_PASSWORD)
    );
    runner.register_source("orders_stale", &stale).await;
    let (status, answer) = preview_status(&runner, "orders_stale").await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "the old password opens nothing new: {answer}"
    );

    // No answer and no audit entry holds a password.
    let audit = expect(
        &runner,
        Method::GET,
        "/api/audit?limit=1000",
        None,
        StatusCode::OK,
    )
    .await;
    let shown = format!("{made}{listed}{connection}{patched}{audit}");
    for password in [FIRST_PASSWORD, SECOND_PASSWORD] {
        assert!(!shown.contains(password), "a password was shown");
    }
    expect(
        &runner,
        Method::DELETE,
        "/api/sources/orders",
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let connection_path = format!("/api/connections/{}", connection["id"].as_str().unwrap());
    expect(
        &runner,
        Method::DELETE,
        &connection_path,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect(
        &runner,
        Method::DELETE,
        "/api/secrets/shop_app",
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
}

/// Writes a key ring file, with a modification time that differs from the last even where the
/// file system's timestamps are coarse.
fn write_keys(path: &Path, keys: &[&str]) {
    let file = std::fs::File::create(path).unwrap();
    std::io::Write::write_all(&mut &file, keys.join("\n").as_bytes()).unwrap();
    // Each write a second further ahead than the one before.
    static WRITES: AtomicU64 = AtomicU64::new(1);
    let ahead = Duration::from_secs(WRITES.fetch_add(1, Ordering::Relaxed));
    file.set_modified(SystemTime::now() + ahead).unwrap();
}

const INVOICES: &str = "
CREATE TABLE invoices AS
  SELECT 'INV-' || g AS invoice_id, (g * 1.5)::numeric(12,2) AS amount FROM generate_series(1, 400000) g;
CREATE TABLE payments AS
  SELECT 'INV-' || g AS invoice_ref, (g * 1.5)::numeric(12,2) AS amount FROM generate_series(1, 399000) g;
";

fn recipe() -> Value {
    json!({
        "name": "rotation",
        "left": {"source": "invoices", "key": ["invoice_id"]},
        "right": {"source": "payments", "key": ["invoice_ref"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_while_a_reconciliation_runs_and_previews_are_served() {
    let db = TestDatabase::create().await;
    db.execute(INVOICES).await;
    let keys = TempDir::new().unwrap();
    let (secrets_file, cluster_file) = (keys.path().join("secrets.key"), keys.path().join("cluster.key"));
    let generate = kalla_core::ClusterKey::generate_base64;
    let (old_secrets, new_secrets) = (generate(), generate());
    let (old_cluster, new_cluster) = (generate(), generate());
    write_keys(&secrets_file, &[&old_secrets]);
    write_keys(&cluster_file, &[&old_cluster]);
    let (secrets_path, cluster_path) = (
        secrets_file.display().to_string(),
        cluster_file.display().to_string(),
    );
    let runner = Runner::start_in(
        TempDir::new().unwrap(),
        None,
        &[
            "--secret-key-file",
            &secrets_path,
            "--cluster-key-file",
            &cluster_path,
        ],
    )
    .await;
    for table in ["invoices", "payments"] {
        let uri = with_password(&db.source_uri(table), "pw-sealed-in-the-db");
        runner.register_source(table, &uri).await;
    }
    let secret = json!({"name": "spare", "value": "a-named-secret"});
    expect(
        &runner,
        Method::POST,
        "/api/secrets",
        Some(secret),
        StatusCode::CREATED,
    )
    .await;
    let before = expect(&runner, Method::GET, "/api/keys", None, StatusCode::OK).await;
    assert_eq!(
        before,
        json!({"secrets_key": {"keys": 1, "sealed_with_older_keys": 0, "unreadable": 0}, "cluster_keys": 1})
    );

    let previews = {
        let (http, token) = (runner.http().clone(), runner.token.clone());
        let url = format!("{}/api/sources/invoices/load-scoped", runner.base_url);
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..200 {
                let request = http.post(&url).bearer_auth(&token).json(&json!({"limit": 1}));
                statuses.push(request.send().await.map(|answer| answer.status()).ok());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            statuses
        })
    };
    let job = runner
        .submit_job(json!({"type": "recon", "recipe": recipe()}))
        .await;
    db.wait_for_copy().await;
    write_keys(&secrets_file, &[&new_secrets, &old_secrets]);
    write_keys(&cluster_file, &[&new_cluster, &old_cluster]);
    let during = expect(&runner, Method::POST, "/api/keys/reseal", None, StatusCode::OK).await;
    assert_eq!(
        during,
        json!({"secrets_key": {"keys": 2, "sealed_with_older_keys": 0, "unreadable": 0}, "cluster_keys": 2})
    );
    let ended = runner.wait_for_job(&job, Duration::from_secs(300)).await;
    assert_eq!(
        ended["status"], "succeeded",
        "the reconciliation through the rotation: {ended}"
    );

    // The old keys go: everything stored opens under the new secrets key alone.
    write_keys(&secrets_file, &[&new_secrets]);
    write_keys(&cluster_file, &[&new_cluster]);
    let after = expect(&runner, Method::GET, "/api/keys", None, StatusCode::OK).await;
    assert_eq!(
        after,
        json!({"secrets_key": {"keys": 1, "sealed_with_older_keys": 0, "unreadable": 0}, "cluster_keys": 1})
    );
    let again = runner
        .submit_job(json!({"type": "recon", "recipe": recipe()}))
        .await;
    let ended = runner.wait_for_job(&again, Duration::from_secs(300)).await;
    assert_eq!(
        ended["status"], "succeeded",
        "a reconciliation under the new keys alone: {ended}"
    );

    let statuses = previews.await.unwrap();
    assert!(
        statuses.iter().all(|status| *status == Some(StatusCode::OK)),
        "every preview during the rotation was served: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executors_take_up_a_rotated_cluster_key_without_a_restart() {
    let db = TestDatabase::create().await;
    db.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
        .await;
    let cluster = Cluster::start(ClusterOptions {
        key_file: true,
        ..ClusterOptions::default()
    })
    .await;
    let keys = TempDir::new().unwrap();
    let runner_file = keys.path().join("cluster.key");
    write_keys(&runner_file, &[&cluster.key]);
    // The cluster's flags, with the runner's own key file instead of the key.
    let mut args = cluster.runner_args();
    let at = args.iter().position(|arg| arg == "--cluster-key").unwrap();
    args.splice(
        at..at + 2,
        [
            "--cluster-key-file".to_string(),
            runner_file.display().to_string(),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    runner.register_source("t", &db.source_uri("t")).await;
    let count = json!({"sql": "SELECT count(*) AS n FROM t"});
    let counted = |answer: &Value| answer["rows"] == json!([["10000"]]);

    let new_key = kalla_core::ClusterKey::generate_base64();
    let (old, new, both) = (
        &[cluster.key.as_str()][..],
        &[new_key.as_str()][..],
        &[new_key.as_str(), cluster.key.as_str()][..],
    );
    // Executors take both keys before the runner seals with the new one; then the old one goes.
    for (stage, (executors, runner_keys)) in [(old, old), (both, both), (new, new)].into_iter().enumerate() {
        write_keys(&cluster.key_file(), executors);
        write_keys(&runner_file, runner_keys);
        let (status, answer) = runner.call(Method::POST, "/api/query", Some(count.clone())).await;
        assert_eq!(status, StatusCode::OK, "stage {stage}: {answer}");
        assert!(counted(&answer), "stage {stage}: {answer}");
    }

    // A key the executors were not given opens nothing there.
    write_keys(&runner_file, &[&kalla_core::ClusterKey::generate_base64()]);
    let (status, answer) = runner.call(Method::POST, "/api/query", Some(count)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(answer.to_string().contains("KALLA_CLUSTER_KEY"), "{answer}");
}
