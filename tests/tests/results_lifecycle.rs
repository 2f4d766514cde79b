//! A job's results over their life, on a real runner and Postgres: listed by recipe, status and
//! date, read with their rows and locations, counted on `/metrics`, deleted by request, and swept
//! by `--results-retention-days` — which deletes exactly the expired jobs' result files, keeping
//! every job's row and the open items runs left.

use std::path::Path;
use std::time::{Duration, Instant};

use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// 0.0003 days: results are swept about 26 s after their job finished.
const RETENTION_DAYS: &str = "0.0003";

fn files(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    kalla_e2e::files_under(dir).len()
}

async fn job(runner: &Runner, id: &str) -> Value {
    let (status, job) = runner.call(Method::GET, &format!("/api/jobs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

async fn listed(runner: &Runner, query: &str) -> Vec<String> {
    let (status, jobs) = runner
        .call(Method::GET, &format!("/api/jobs?{query}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {jobs}");
    jobs.as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn results_are_listed_counted_deleted_and_swept_while_rows_and_open_items_stay() {
    let db = TestDatabase::create().await;
    db.execute(
        "CREATE TABLE invoices (id bigint PRIMARY KEY, amount numeric(12,2));
         INSERT INTO invoices SELECT g, g * 1.25 FROM generate_series(1, 100) g;",
    )
    .await;
    let runner = Runner::start_in(
        tempfile::tempdir().unwrap(),
        None,
        &["--results-retention-days", RETENTION_DAYS],
    )
    .await;
    runner
        .register_source("invoices", &db.source_uri("public.invoices"))
        .await;
    let recipe = json!({
        "name": "self-check",
        "carry_forward": true,
        "left": {"source": "invoices", "key": ["id"]},
        "right": {"source": "invoices", "key": ["id"],
                  "filters": [{"column": "id", "op": "lte", "value": "90"}]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01}]
    });
    let (status, stored) = runner.call(Method::POST, "/api/recipes", Some(recipe)).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let recipe_id = stored["id"].as_str().unwrap().to_string();
    let run = || runner.submit_job(json!({"type": "recon", "recipe_id": recipe_id}));

    let first = run().await;
    let done = runner.wait_for_job(&first, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // A succeeded job says where each output is and how many rows it has.
    let shown = job(&runner, &first).await;
    let matched = shown["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["output"] == "matched")
        .cloned()
        .unwrap();
    assert_eq!(matched["rows"], 90, "{shown}");
    assert_eq!(
        matched["path"],
        format!("/api/jobs/{first}/results/matched"),
        "{shown}"
    );
    assert!(
        matched["location"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/results/{first}/matched/")),
        "{shown}"
    );

    let data = runner.data_dir.path().to_path_buf();
    let results = |id: &str| data.join("results").join(id);
    assert!(files(&results(&first)) > 0);

    // The second run starts well after the first ended, so the sweep takes the first alone.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = run().await;
    let done = runner.wait_for_job(&second, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let query = runner
        .submit_job(json!({"type": "query", "sql": "SELECT count(*) AS n FROM invoices"}))
        .await;
    let done = runner.wait_for_job(&query, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Listed by recipe (by name or id), status and the time they were made.
    assert_eq!(
        listed(&runner, "recipe=self-check").await,
        [second.clone(), first.clone()]
    );
    assert_eq!(
        listed(&runner, &format!("recipe={recipe_id}&status=failed")).await,
        Vec::<String>::new()
    );
    let second_made = job(&runner, &second).await["created_at"]
        .as_str()
        .unwrap()
        .to_string();
    let since = format!("since={}", urlencoding(&second_made));
    assert_eq!(listed(&runner, &since).await, [query.clone(), second.clone()]);
    let until = format!("recipe=self-check&until={}", urlencoding(&second_made));
    assert_eq!(listed(&runner, &until).await, [first.as_str()]);
    assert_eq!(
        listed(&runner, "since=2000-01-01&until=2000-01-02").await,
        Vec::<String>::new()
    );
    for (query, status) in [
        ("since=yesterday", StatusCode::BAD_REQUEST),
        ("recipe=nobody", StatusCode::NOT_FOUND),
    ] {
        let (answered, body) = runner
            .call(Method::GET, &format!("/api/jobs?{query}"), None)
            .await;
        assert_eq!(answered, status, "{query}: {body}");
    }

    // /metrics counts jobs by status, and the rows each output received.
    let metrics = runner.metrics().await;
    for line in [
        "kalla_jobs_finished_total{type=\"recon\",status=\"succeeded\"} 2",
        "kalla_jobs_finished_total{type=\"query\",status=\"succeeded\"} 1",
        "kalla_job_output_rows_total{type=\"recon\",output=\"matched\"} 180",
        "kalla_jobs{status=\"succeeded\"} 3",
        "kalla_jobs{status=\"running\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("kalla_job_duration_seconds_count{type=\"recon\",status=\"succeeded\"} 2"),
        "{metrics}"
    );

    // The sweep deletes the first job's files and marks its row; nothing else goes.
    let open_items = data.join("open-items").join(&recipe_id);
    let open_item_files = files(&open_items);
    assert!(open_item_files > 0, "open items are written apart from results");
    assert!(files(&results(&second)) > 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let swept = loop {
        let shown = job(&runner, &first).await;
        if shown["results_deleted_at"].is_string() {
            break shown;
        }
        assert!(
            Instant::now() < deadline,
            "the first job's results were never swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(files(&results(&first)), 0, "swept: {swept}");
    assert!(swept["results"].is_null(), "{swept}");
    assert_eq!(
        swept["summary"]["outputs"]["matched"], 90,
        "the row and summary stay: {swept}"
    );
    let second_shown = job(&runner, &second).await;
    assert!(second_shown["results_deleted_at"].is_null(), "{second_shown}");
    assert!(
        files(&results(&second)) > 0,
        "the second job's results are not due yet"
    );
    assert_eq!(files(&open_items), open_item_files, "open items are never swept");
    // (The second run read every row again beside the first's open items: it put them in
    // duplicates, closing the items as referred.)
    let (status, page) = runner
        .call(
            Method::GET,
            &format!("/api/recipes/{recipe_id}/open-items?state=all"),
            None,
        )
        .await;
    assert_eq!(
        (status, page["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(10)),
        "{page}"
    );
    let (status, gone) = runner
        .call(Method::GET, &format!("/api/jobs/{first}/results/matched"), None)
        .await;
    assert_eq!(status, StatusCode::GONE, "{gone}");
    assert_eq!(gone["error"]["code"], "results_deleted", "{gone}");

    // Deleting by request: once, or again.
    for _ in 0..2 {
        let (status, deleted) = runner
            .call(Method::DELETE, &format!("/api/jobs/{second}/results"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{deleted}");
        assert!(deleted["results_deleted_at"].is_string(), "{deleted}");
    }
    assert_eq!(files(&results(&second)), 0);
    assert_eq!(files(&open_items), open_item_files);
}

/// A query-string value with its `+` and `:` escaped.
fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
