//! TLS to Postgres, end to end: a server of the test's own that accepts only TLS sessions over
//! TCP, certificates from a CA the test makes, a runner and separate executor processes that
//! know the CA by name (`--tls-ca-dir`), and `pg_stat_ssl` read back on the server.

use std::path::Path;
use std::time::Duration;

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::{PgCluster, ServerTls, TestDatabase};
use kalla_e2e::runner::Runner;
use kalla_e2e::tls::{TestCa, Usage};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

const ORDERS: &str = "CREATE TABLE orders AS
    SELECT g::int8 AS id, (g * 1.5)::numeric(12,2) AS amount FROM generate_series(1, 20000) g";
/// The user a client certificate authenticates (`cert` in `pg_hba.conf`).
const CERT_USER: &str = "kalla_cert";

/// The server's certificate names `localhost` only, so connecting to 127.0.0.1 with
/// `verify-full` is a wrong host name.
struct Setup {
    server: PgCluster,
    certificates: TempDir,
    _files: TempDir,
}

fn setup() -> Setup {
    let files = TempDir::new().unwrap();
    let ca = TestCa::new(files.path(), "kalla-test-ca");
    let other = TestCa::new(files.path(), "other-ca");
    let server_cert = ca.issue("server", "localhost", &["DNS:localhost"], Usage::Server);
    let client = ca.issue("client", CERT_USER, &[], Usage::Client);
    let server = PgCluster::start_with_tls(&ServerTls {
        cert: server_cert.cert,
        key: server_cert.key,
        client_ca: ca.cert(),
        hba: vec![
            format!("hostssl all {CERT_USER} 127.0.0.1/32 cert"),
            "hostssl all all 127.0.0.1/32 trust".into(),
        ],
    });
    // The operator's certificate directory, laid out as Kubernetes mounts TLS Secrets.
    let certificates = TempDir::new().unwrap();
    let entry = |name: &str, files: &[(&Path, &str)]| {
        let dir = certificates.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for (from, to) in files {
            std::fs::copy(from, dir.join(to)).unwrap();
        }
    };
    entry("test-ca", &[(&ca.cert(), "ca.crt")]);
    entry("other-ca", &[(&other.cert(), "ca.crt")]);
    entry("app", &[(&client.cert, "tls.crt"), (&client.key, "tls.key")]);
    Setup {
        server,
        certificates,
        _files: files,
    }
}

/// `url` (a `postgres://…@127.0.0.1:PORT/db` URL) on `host`, with `query` added.
fn at(url: &str, host: &str, query: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some(host)).unwrap();
    let separator = if url.query().is_some() { "&" } else { "?" };
    format!("{url}{separator}{query}")
}

fn error_message(answer: &Value) -> String {
    answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn preview(runner: &Runner, alias: &str) -> (StatusCode, Value) {
    let filter = json!({"conditions": [{"column": "id", "op": "lte", "value": "10"}]});
    let path = format!("/api/sources/{alias}/load-scoped");
    runner.call(Method::POST, &path, Some(filter)).await
}

/// Asserts that connection `id`'s health reports `sslmode`, and sessions encrypted and verified
/// or neither.
async fn assert_protection(runner: &Runner, id: &str, sslmode: &str, protected: bool) {
    let path = format!("/api/connections/{id}/health");
    let (status, health) = runner.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(
        (&health["sslmode"], &health["encrypted"], &health["verified"]),
        (&json!(sslmode), &json!(protected), &json!(protected)),
        "{health}"
    );
}

/// Registers `uri` as `alias` and previews it.
async fn registered_preview(runner: &Runner, alias: &str, uri: &str) -> (StatusCode, Value) {
    let body = json!({"alias": alias, "uri": uri});
    let (status, answer) = runner.call(Method::POST, "/api/sources", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{alias}: {answer}");
    preview(runner, alias).await
}

/// Every mode against the TLS-only server: what connects, what fails and how it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sslmodes_behave_as_libpq_with_named_certificates_only() {
    let setup = setup();
    let db = TestDatabase::create_on(&setup.server.url).await;
    db.execute(ORDERS).await;
    db.execute(&format!(
        "CREATE ROLE {CERT_USER} LOGIN; GRANT SELECT ON orders TO {CERT_USER}"
    ))
    .await;
    let dir = setup.certificates.path().display().to_string();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &["--tls-ca-dir", &dir]).await;
    let uri = |host: &str, query: &str| at(&db.source_uri("orders"), host, query);

    for (alias, uri) in [
        (
            "full",
            uri("localhost", "sslmode=verify-full&sslrootcert=test-ca"),
        ),
        ("named_only", uri("localhost", "sslrootcert=test-ca")),
        ("ca", uri("localhost", "sslmode=verify-ca&sslrootcert=test-ca")),
        ("required", uri("127.0.0.1", "sslmode=require")),
        ("allowed", uri("127.0.0.1", "sslmode=allow")),
        ("by_default", uri("127.0.0.1", "")),
    ] {
        let (status, answer) = registered_preview(&runner, alias, &uri).await;
        assert_eq!(status, StatusCode::OK, "{alias}: {answer}");
        assert_eq!(answer["total_rows"], 10, "{alias}: {answer}");
    }
    let client_cert = at(
        &db.source_uri("orders"),
        "localhost",
        "sslrootcert=test-ca&sslcert=app&sslkey=app",
    );
    let client_cert = client_cert.replacen("postgres@", &format!("{CERT_USER}@"), 1);
    let (status, answer) = registered_preview(&runner, "by_certificate", &client_cert).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a client certificate authenticates: {answer}"
    );

    for (alias, uri, says) in [
        (
            "another_ca",
            uri("localhost", "sslmode=verify-full&sslrootcert=other-ca"),
            "UnknownIssuer",
        ),
        (
            "wrong_name",
            uri("127.0.0.1", "sslmode=verify-full&sslrootcert=test-ca"),
            "not valid for name",
        ),
        // Stricter than libpq: sqlx 0.8 checks the host name under verify-ca too (README).
        (
            "ca_by_address",
            uri("127.0.0.1", "sslmode=verify-ca&sslrootcert=test-ca"),
            "not valid for name",
        ),
        ("plaintext", uri("127.0.0.1", "sslmode=disable"), "no encryption"),
        (
            "no_certificate",
            client_cert.replace("&sslcert=app&sslkey=app", ""),
            "certificate",
        ),
    ] {
        runner.assert_preview_refused(alias, &uri, says).await;
    }

    // Certificates are named, never given as paths; a name must be configured.
    for (query, says) in [
        (
            "sslrootcert=/etc/passwd",
            "certificates are named, never given as paths",
        ),
        (
            "sslmode=verify-full&ssl-ca=../../etc/ssl/private",
            "never given as paths",
        ),
        (
            "sslcert=app&sslkey=/root/.ssh/id_rsa",
            "must name the certificate sslcert names",
        ),
        (
            "sslrootcert=nobody",
            "\"nobody\" names no certificate of this process: its --tls-ca-dir",
        ),
        ("sslcrl=/etc/crl.pem", "not a TLS parameter Kalla takes"),
        ("sslmode=prefer&sslrootcert=test-ca", "use sslmode=verify-full"),
        ("sslmode=sometimes", "not one of disable, allow, prefer"),
    ] {
        let body = json!({"alias": "refused", "uri": uri("localhost", query)});
        let (status, answer) = runner.call(Method::POST, "/api/sources", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert!(
            error_message(&answer).contains(says),
            "{query} must say {says:?}: {answer}"
        );
    }
    let (_, sources) = runner.call(Method::GET, "/api/sources", None).await;
    let aliases: Vec<&str> = sources
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["alias"].as_str())
        .collect();
    assert!(
        !aliases.contains(&"refused"),
        "nothing refused was kept: {aliases:?}"
    );

    // A runner without the directory refuses every name.
    let bare = Runner::start(None).await;
    let body = json!({"alias": "named", "uri": uri("localhost", "sslrootcert=test-ca")});
    let (status, answer) = bare.call(Method::POST, "/api/sources", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        error_message(&answer).contains("it has no --tls-ca-dir"),
        "{answer}"
    );
}

/// Every session Kalla opens to the TLS-only server, from the runner and from separate executor
/// processes, for previews, discovery, health, live scans, refreshes, a reconciliation job and
/// the metadata DB, is encrypted as `pg_stat_ssl` shows; the connection's health says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_session_of_every_process_is_encrypted() {
    let setup = setup();
    let db = TestDatabase::create_on(&setup.server.url).await;
    db.execute(ORDERS).await;
    let metadata = setup.server.create_database("kalla_metadata").await;
    let dir = setup.certificates.path().display().to_string();
    let cluster = Cluster::start(ClusterOptions {
        executor_args: vec!["--tls-ca-dir".into(), dir.clone()],
        ..ClusterOptions::default()
    })
    .await;
    let mut runner_args = cluster.runner_args();
    runner_args.extend(["--tls-ca-dir".to_string(), dir.clone()]);
    let runner_args: Vec<&str> = runner_args.iter().map(String::as_str).collect();
    let metadata = at(&metadata, "localhost", "sslmode=verify-full&sslrootcert=")
        + &setup
            .certificates
            .path()
            .join("test-ca/ca.crt")
            .display()
            .to_string();
    let runner = Runner::start_in(TempDir::new().unwrap(), Some(&metadata), &runner_args).await;

    let config = json!({"host": "localhost", "port": url::Url::parse(&db.url).unwrap().port(),
        "database": db.name, "user": "postgres", "sslmode": "verify-full", "sslrootcert": "test-ca"});
    let body = json!({"name": "shop", "source_type": "postgres", "config": config});
    let (status, created) = runner.call(Method::POST, "/api/connections", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["config"]["sslrootcert"], "test-ca", "{created}");
    let id = created["id"].as_str().unwrap();
    assert_protection(&runner, id, "verify-full", true).await;

    let source = at(
        &db.source_uri("orders"),
        "localhost",
        "sslmode=verify-full&sslrootcert=test-ca",
    );
    let (status, answer) = registered_preview(&runner, "orders", &source).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let totals = json!({"sql": "SELECT count(*) AS n FROM shop.public.orders", "live": true});
    let (status, answer) = runner.call(Method::POST, "/api/query", Some(totals)).await;
    assert_eq!(status, StatusCode::OK, "live scan on the executors: {answer}");
    assert_eq!(answer["rows"][0][0], "20000", "{answer}");
    let refresh = format!("/api/connections/{id}/tables/public/orders/refresh");
    let (status, answer) = runner.call(Method::POST, &refresh, None).await;
    assert_eq!(status, StatusCode::OK, "refresh on the executors: {answer}");
    assert_eq!(answer["rows"], 20000, "{answer}");
    let recipe = json!({
        "name": "orders-vs-orders",
        "left": {"source": "orders", "key": ["id"]},
        "right": {"source": "shop.public.orders", "key": ["id"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0}]
    });
    let job = runner
        .submit_job(json!({"type": "recon", "recipe": recipe}))
        .await;
    let ended = runner.wait_for_job(&job, Duration::from_secs(120)).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["summary"]["outputs"]["matched"], 20000, "{ended}");

    // Pools keep their sessions open a while (the idle timeout): read every one now.
    let sessions: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.datname, a.application_name, s.ssl FROM pg_stat_activity a
         JOIN pg_stat_ssl s USING (pid)
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
           AND (a.application_name LIKE 'kalla%' OR a.datname = 'kalla_metadata')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let from = |prefix: &str| {
        sessions
            .iter()
            .filter(|(_, app, _)| app.starts_with(prefix))
            .count()
    };
    assert!(from("kalla-runner") > 0, "runner sessions: {sessions:?}");
    assert!(from("kalla-executor-") > 0, "executor sessions: {sessions:?}");
    assert!(
        sessions.iter().any(|(db, _, _)| db == "kalla_metadata"),
        "metadata sessions: {sessions:?}"
    );
    let plaintext: Vec<_> = sessions.iter().filter(|(_, _, ssl)| !ssl).collect();
    assert!(plaintext.is_empty(), "plaintext sessions: {plaintext:?}");
    drop(cluster);
}

/// Plaintext is visible: against a server without TLS, a connection's health says its sessions
/// are not encrypted, and the fallback under the default `prefer` is logged once per source
/// however often it is read (an explicit `sslmode=disable` is the user's choice, not logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_sessions_are_reported_and_logged_once_per_source() {
    let server = PgCluster::start();
    let db = TestDatabase::create_on(&server.url).await;
    db.execute(ORDERS).await;
    let runner = Runner::start(None).await;
    let created = runner.create_connection("plain", &db.url).await;
    let id = created["id"].as_str().unwrap();
    assert_protection(&runner, id, "prefer", false).await;
    let (status, answer) = registered_preview(&runner, "orders", &db.source_uri("orders")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let disabled = at(&db.source_uri("orders"), "127.0.0.1", "sslmode=disable");
    let (status, answer) = registered_preview(&runner, "orders_plain", &disabled).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for _ in 0..2 {
        let (status, answer) = preview(&runner, "orders").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let warnings = runner
        .logs()
        .matches("sessions to this source are plaintext")
        .count();
    assert_eq!(warnings, 1, "logged once per source:\n{}", runner.logs());
}
