//! One full scenario on the real cluster — a password-protected Postgres connection and source,
//! the cache and job results on S3 with keys, a refresh, cached and live queries, a preview, a
//! reconciliation — and then a search for every password and key in every log line (runner,
//! scheduler, executors), every API response, every file of the runner's data dir (the metadata
//! DB) and of the executors' work dirs, every object in the bucket, and the scheduler's REST
//! views of the jobs (job config, stage plans, plan graphs): zero hits.

use std::path::Path;
use std::time::Duration;

use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use kalla_e2e::s3::S3Server;
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

const DATA: &str = "
CREATE TABLE invoices AS
  SELECT 'INV-' || g AS invoice_id, (g * 1.5)::numeric(12,2) AS amount, DATE '2026-01-01' + g % 200 AS issued_on
  FROM generate_series(1, 5000) g;
CREATE TABLE payments AS
  SELECT 'INV-' || g AS invoice_ref, (g * 1.5 + CASE WHEN g % 10 = 0 THEN 1 ELSE 0 END)::numeric(12,2) AS amount,
         DATE '2026-01-01' + g % 200 + 3 AS paid_on
  FROM generate_series(1, 4900) g;
";

/// Every place a secret could leak to, with what was found there.
struct Haystack {
    places: Vec<(String, Vec<u8>)>,
}

impl Haystack {
    fn add(&mut self, place: impl Into<String>, content: impl Into<Vec<u8>>) {
        self.places.push((place.into(), content.into()));
    }

    fn add_files(&mut self, dir: &Path) -> usize {
        let mut files = 0;
        for path in kalla_e2e::files_under(dir) {
            if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                self.add(path.display().to_string(), bytes);
            }
        }
        files
    }

    /// The places that hold `secret`.
    fn holding(&self, secret: &str) -> Vec<&str> {
        self.places
            .iter()
            .filter(|(_, content)| content.windows(secret.len()).any(|w| w == secret.as_bytes()))
            .map(|(place, _)| place.as_str())
            .collect()
    }
}

async fn call(
    runner: &Runner,
    haystack: &mut Haystack,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, answer) = runner.call(method.clone(), path, body).await;
    assert!(status.is_success(), "{method} {path}: {status} {answer}");
    haystack.add(format!("response to {method} {path}"), answer.to_string());
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_password_or_key_appears_anywhere_after_a_full_scenario() {
    let s3 = S3Server::start().await;
    let db = TestDatabase::create().await;
    db.execute(DATA).await;
    let role = format!("kalla_sec_{}", &db.name[11..]);
    let password = format!("Sec-{}-never-leaks", &db.name[11..]);
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
    ))
    .await;
    let server = url::Url::parse(&db.url).unwrap();
    let (host, port) = (
        server.host_str().unwrap().to_string(),
        server.port().unwrap_or(5432),
    );

    let cluster = Cluster::start(ClusterOptions {
        extra_args: s3.cluster_args(),
        ..ClusterOptions::default()
    })
    .await;
    let mut args = cluster.runner_args();
    args.extend(["--cache-dir".into(), format!("s3://{}/kalla", s3.bucket)]);
    args.extend(s3.runner_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    let mut haystack = Haystack { places: Vec::new() };

    let config = json!({"host": host, "port": port, "database": db.name, "user": role, "password": password});
    let connection = call(
        &runner,
        &mut haystack,
        Method::POST,
        "/api/connections",
        Some(json!({"name": "guarded", "source_type": "postgres", "config": config})),
    )
    .await;
    assert_eq!(connection["discovery"]["status"], "succeeded", "{connection}");
    let id = connection["id"].as_str().unwrap().to_string();
    let uri = format!(
        "postgres://{role}:{password}@{host}:{port}/{}?table=public.invoices",
        db.name
    );
    call(
        &runner,
        &mut haystack,
        Method::POST,
        "/api/sources",
        Some(json!({"alias": "guarded_invoices", "uri": uri})),
    )
    .await;

    let refreshed = call(
        &runner,
        &mut haystack,
        Method::POST,
        &format!("/api/connections/{id}/tables/public/payments/refresh"),
        None,
    )
    .await;
    assert_eq!(refreshed["rows"], 4900, "{refreshed}");
    let cached = call(
        &runner,
        &mut haystack,
        Method::POST,
        "/api/query",
        Some(json!({"sql": "SELECT count(*) FROM guarded.public.payments"})),
    )
    .await;
    assert_eq!(cached["rows"], json!([["4900"]]), "{cached}");
    let live = call(
        &runner,
        &mut haystack,
        Method::POST,
        "/api/query",
        Some(json!({"sql": "SELECT count(*) FROM guarded.public.invoices", "live": true})),
    )
    .await;
    assert_eq!(live["rows"], json!([["5000"]]), "{live}");
    let preview = call(
        &runner,
        &mut haystack,
        Method::POST,
        "/api/sources/guarded_invoices/load-scoped",
        Some(json!({"conditions": [{"column": "invoice_id", "op": "eq", "value": "INV-7"}]})),
    )
    .await;
    assert_eq!(preview["total_rows"], 1, "{preview}");

    let recipe = json!({
        "name": "guarded",
        "left": {"source": "guarded_invoices", "key": ["invoice_id"]},
        "right": {"source": "guarded.public.payments", "key": ["invoice_ref"]},
        "rules": [
            {"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01},
            {"kind": "date_window", "left": "issued_on", "right": "paid_on", "min_days": 0, "max_days": 30}
        ]
    });
    let recipe = call(&runner, &mut haystack, Method::POST, "/api/recipes", Some(recipe)).await;
    let job = call(
        &runner,
        &mut haystack,
        Method::POST,
        "/api/jobs",
        Some(json!({"type": "recon", "recipe_id": recipe["id"]})),
    )
    .await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let done = kalla_e2e::wait_for("the reconciliation", Duration::from_secs(180), || async {
        let (_, job) = runner
            .call(Method::GET, &format!("/api/jobs/{job_id}"), None)
            .await;
        matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(job)
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", cluster.log_tails());
    assert_eq!(
        done["summary"]["outputs"],
        json!({"matched": 4410, "mismatched": 490, "left_only": 100, "right_only": 0, "duplicates": 0, "exceptions": 0, "ambiguous": 0}),
        "{done}"
    );
    haystack.add("the finished job", done.to_string());
    for path in [
        format!("/api/jobs/{job_id}/results/matched?limit=5"),
        format!("/api/jobs/{job_id}/results/left_only?format=csv"),
        "/api/jobs".into(),
        "/api/sources".into(),
        "/api/sources/guarded_invoices".into(),
        "/api/connections".into(),
        format!("/api/connections/{id}"),
        format!("/api/connections/{id}/health"),
        "/api/information_schema".into(),
        "/api/recipes".into(),
        "/metrics".into(),
        "/ready".into(),
    ] {
        call(&runner, &mut haystack, Method::GET, &path, None).await;
    }

    let (jobs, ballista_jobs) = cluster.rest_jobs().await;
    assert!(
        ballista_jobs.len() >= 3,
        "the scheduler ran the refresh, the query and the reconciliation: {jobs}"
    );
    haystack.add("scheduler REST /api/jobs", jobs);
    for ballista_job in &ballista_jobs {
        for view in ["", "/config", "/stages", "/dot"] {
            let path = format!("/api/job/{ballista_job}{view}");
            let body = cluster.rest_get(&path).await;
            haystack.add(format!("scheduler REST {path}"), body);
        }
    }
    let objects = s3.keys("").await;
    assert!(
        objects.iter().any(|k| k.contains("/cache/")) && objects.iter().any(|k| k.contains("/results/")),
        "the cache and the results are in the bucket: {objects:?}"
    );
    for key in &objects {
        let object = s3.get_object(key).await;
        haystack.add(format!("s3://{}/{key}", s3.bucket), object);
    }

    let token = runner.token.clone();
    haystack.add("the runner's log", runner.logs());
    haystack.add("the cluster's logs", cluster.all_logs());
    let (_, data_dir) = runner.terminate();
    let files = haystack.add_files(data_dir.path()) + haystack.add_files(cluster.dir());
    assert!(
        files >= 4,
        "the metadata DB, logs and work dirs were searched ({files} files)"
    );

    let secrets = [
        ("the source's password", password.as_str()),
        ("the S3 secret key", s3.secret_access_key.as_str()),
        ("the S3 access key id", s3.access_key_id.as_str()),
        ("the cluster's secret key", cluster.key.as_str()),
    ];
    for (what, secret) in secrets {
        let found = haystack.holding(secret);
        assert!(found.is_empty(), "{what} is in {found:?}");
    }
    // The token is in its own file (mode 0600) by design, and nowhere else.
    let found = haystack.holding(&token);
    assert!(
        found.iter().all(|place| place.ends_with("api-token")),
        "the API token is in {found:?}"
    );
    assert!(
        haystack.places.len() > 40,
        "{} places searched",
        haystack.places.len()
    );
    assert_eq!(
        haystack.holding("never-leaks").len(),
        0,
        "no part of the password either"
    );
}
