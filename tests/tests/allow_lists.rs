//! Allow-lists: file sources only under `--file-roots` (`..` and links resolved), database
//! hosts only as `--allowed-hosts` says (by the address a name resolves to; Unix sockets and
//! `hostaddr` only where listed), checked on the runner where a source is registered or opened,
//! and on executors where their scans connect. Each escape is a 403 naming the rule, and nothing
//! of it is stored or read.

use std::path::Path;

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

const SECRET_ROW: &str = "s3cr3t-row";

async fn register(runner: &Runner, alias: &str, uri: &str, source_type: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"alias": alias, "uri": uri});
    if let Some(source_type) = source_type {
        body["source_type"] = json!(source_type);
    }
    runner.call(Method::POST, "/api/sources", Some(body)).await
}

async fn preview(runner: &Runner, alias: &str) -> (StatusCode, Value) {
    let path = format!("/api/sources/{alias}/load-scoped");
    runner
        .call(Method::POST, &path, Some(json!({"conditions": [], "limit": 10})))
        .await
}

/// Asserts a 403 `not_allowed` whose message says `says`, and that no secret row is in it.
fn assert_refused(what: &str, (status, answer): (StatusCode, Value), says: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {answer}");
    assert_eq!(answer["error"]["code"], "not_allowed", "{what}: {answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{what}: {message}");
    assert!(
        !answer.to_string().contains(SECRET_ROW),
        "{what} read the file: {answer}"
    );
}

async fn source_aliases(runner: &Runner) -> Vec<String> {
    let (status, sources) = runner.call(Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::OK, "{sources}");
    sources
        .as_array()
        .expect("a list of sources")
        .iter()
        .map(|source| source["alias"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn file_uri(path: &Path) -> String {
    url::Url::from_file_path(path).unwrap().to_string()
}

#[tokio::test]
async fn file_sources_stay_under_their_roots() {
    let outside = TempDir::new().unwrap();
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, format!("id,value\n1,{SECRET_ROW}\n")).unwrap();
    let root = TempDir::new().unwrap();
    let data = root.path().join("data.csv");
    std::fs::write(&data, "id,value\n1,fine\n").unwrap();
    let roots = root.path().display().to_string();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &["--file-roots", &roots]).await;

    let rule = "--file-roots";
    assert_refused(
        "outside",
        register(&runner, "outside", &file_uri(&secret), None).await,
        rule,
    );
    let dotted = format!(
        "{}/../{}/secret.csv",
        file_uri(root.path()),
        outside.path().file_name().unwrap().to_string_lossy()
    );
    assert_refused(
        "through ..",
        register(&runner, "dotted", &dotted, None).await,
        rule,
    );
    std::os::unix::fs::symlink(&secret, root.path().join("link.csv")).unwrap();
    let link = file_uri(&root.path().join("link.csv"));
    assert_refused(
        "through a link",
        register(&runner, "linked", &link, None).await,
        rule,
    );
    let directory = file_uri(root.path());
    assert_refused(
        "a directory holding a link",
        register(&runner, "folder", &directory, Some("csv")).await,
        "through a symbolic link",
    );
    let passwd = register(&runner, "passwd", "file:///etc/passwd", Some("csv")).await;
    assert_refused("/etc/passwd", passwd, rule);

    // Checked again where the file is opened: a link swapped in after registration is refused.
    runner.register_source("data", &file_uri(&data)).await;
    let (status, rows) = preview(&runner, "data").await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows["rows"], json!([["1", "fine"]]));
    std::fs::remove_file(&data).unwrap();
    std::os::unix::fs::symlink(&secret, &data).unwrap();
    assert_refused("a link swapped in", preview(&runner, "data").await, rule);
    let (status, answer) = runner
        .call(
            Method::POST,
            "/api/query",
            Some(json!({"sql": "SELECT * FROM data"})),
        )
        .await;
    assert_refused("a query of it", (status, answer), rule);

    assert_eq!(
        source_aliases(&runner).await,
        ["data"],
        "only the allowed source was stored"
    );
}

#[tokio::test]
async fn database_hosts_are_checked_by_the_address_they_resolve_to() {
    let db = TestDatabase::create().await;
    db.execute("CREATE TABLE t AS SELECT 1 AS id").await;
    let runner = Runner::start_in(
        TempDir::new().unwrap(),
        None,
        &["--allowed-hosts", "db.example.com,127.0.0.0/8"],
    )
    .await;
    runner.register_source("allowed", &db.source_uri("t")).await;
    let (status, rows) = preview(&runner, "allowed").await;
    assert_eq!(status, StatusCode::OK, "{rows}");

    let socket = format!("{}&host=/var/run/postgresql", db.source_uri("t"));
    assert_refused(
        "a socket",
        register(&runner, "socket", &socket, None).await,
        "Unix socket",
    );
    let encoded_socket = "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/postgres?table=pg_catalog.pg_authid";
    assert_refused(
        "a socket as the host",
        register(&runner, "socket2", encoded_socket, None).await,
        "Unix socket",
    );
    let hostaddr = format!("{}&hostaddr=10.9.9.9", db.source_uri("t"));
    assert_refused(
        "hostaddr",
        register(&runner, "hostaddr", &hostaddr, None).await,
        "hostaddr=10.9.9.9",
    );
    let elsewhere = "postgres://u@elsewhere.example.org/db?table=public.t";
    assert_refused(
        "a host not listed",
        register(&runner, "elsewhere", elsewhere, None).await,
        "elsewhere.example.org",
    );
    // The resolver reads 2852039166 as 169.254.169.254, where cloud metadata lives.
    let link_local = "postgres://u@2852039166:5432/db?table=public.t";
    assert_refused(
        "a name resolving to link-local",
        register(&runner, "metadata", link_local, None).await,
        "169.254.169.254, a link-local address",
    );
    let connection = json!({"name": "meta", "source_type": "postgres",
        "config": {"uri": "postgres://u@2852039166:5432/db"}});
    let answer = runner
        .call(Method::POST, "/api/connections", Some(connection))
        .await;
    assert_refused("a connection resolving to link-local", answer, "link-local");

    assert_eq!(source_aliases(&runner).await, ["allowed"]);
    let (_, connections) = runner.call(Method::GET, "/api/connections", None).await;
    assert_eq!(connections, json!([]), "no connection was stored");
}

#[tokio::test]
async fn unix_sockets_are_refused_by_default_too() {
    let runner = Runner::start(None).await;
    let socket = "postgres://postgres@localhost/postgres?table=pg_catalog.pg_authid&host=/var/run/postgresql";
    assert_refused(
        "a socket",
        register(&runner, "socket", socket, None).await,
        "Unix socket",
    );
    let outside = file_uri(Path::new("/etc/passwd"));
    assert_refused(
        "/etc/passwd",
        register(&runner, "passwd", &outside, Some("csv")).await,
        "--file-roots",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executors_check_the_hosts_their_scans_connect_to() {
    let db = TestDatabase::create().await;
    db.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
        .await;
    // Executors with the default of a cluster: no loopback, where this test's Postgres is.
    let cluster = Cluster::start(ClusterOptions {
        executor_hosts: "*",
        ..ClusterOptions::default()
    })
    .await;
    let args = cluster.runner_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    runner.register_source("t", &db.source_uri("t")).await;
    let (status, answer) = runner
        .call(
            Method::POST,
            "/api/query",
            Some(json!({"sql": "SELECT count(*) FROM t"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("a loopback address") && message.contains("--allowed-hosts"),
        "{message}"
    );
}
