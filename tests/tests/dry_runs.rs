//! `POST /api/dry-runs` against the demo's invoices and payments in a real Postgres, on the
//! embedded cluster: a sample of the left side and the right rows that could pair with it, sorted
//! into the outputs a full run puts the same rows in; nothing stored; bad requests named.

use std::time::Duration;

use kalla_core::recon::plan::OUTPUTS;
use kalla_e2e::demo;
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The `left_invoice_id`s of one dry-run output's rows.
fn invoice_ids(output: &Value) -> Vec<String> {
    let at = output["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .position(|c| c["name"] == "left_invoice_id")
        .expect("a left_invoice_id column");
    output["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row[at].as_str().expect("an id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_sorts_a_sample_as_the_full_run_sorts_the_same_rows() {
    let db = demo::database().await;
    let runner = Runner::start(None).await;
    demo::register_sources(&runner, &db).await;

    let (status, dry) = runner
        .call(
            Method::POST,
            "/api/dry-runs",
            Some(json!({"recipe": demo::recipe(), "sample_rows": 200})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["left_rows"], 200, "{dry}");
    let outputs = dry["outputs"].as_array().expect("outputs");
    let names: Vec<&str> = outputs.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, OUTPUTS);
    let count = |name: &str| {
        outputs.iter().find(|o| o["name"] == name).unwrap()["total_rows"]
            .as_u64()
            .unwrap()
    };
    // One-to-one pairs are one row each; every sampled payment has its invoice in the sample.
    let paired = count("matched") + count("mismatched");
    assert_eq!(dry["right_rows"].as_u64(), Some(paired), "{dry}");
    assert_eq!(paired + count("left_only"), 200, "{dry}");
    assert!(
        count("matched") > 0 && count("mismatched") > 0 && count("left_only") > 0,
        "{dry}"
    );
    // Nothing was stored or run as a job.
    let (_, recipes) = runner.call(Method::GET, "/api/recipes", None).await;
    let (_, jobs) = runner.call(Method::GET, "/api/jobs", None).await;
    assert_eq!((recipes, jobs), (json!([]), json!([])));

    // The largest sample: 1000 left rows, and the right rows of their keys.
    let (status, most) = runner
        .call(
            Method::POST,
            "/api/dry-runs",
            Some(json!({"recipe": demo::recipe(), "sample_rows": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{most}");
    assert_eq!(most["left_rows"], 1000, "{most}");
    let total = |name: &str| {
        most["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap()["total_rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        most["right_rows"].as_u64(),
        Some(total("matched") + total("mismatched")),
        "{most}"
    );

    // The full run puts each sampled invoice in the output the dry run did.
    let job = runner
        .submit_job(json!({"type": "recon", "recipe": demo::recipe()}))
        .await;
    let job = runner.wait_for_job(&job, Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    for name in ["matched", "mismatched", "left_only"] {
        let output = outputs.iter().find(|o| o["name"] == name).unwrap();
        let ids = invoice_ids(output);
        assert_eq!(
            ids.len() as u64,
            count(name),
            "{name}: every row is shown (at most 200)"
        );
        let filter = json!([{"column": "left_invoice_id", "op": "in", "value": ids}]).to_string();
        let filter: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        let path = format!(
            "/api/jobs/{}/results/{name}?filter={filter}&count=true&limit=1",
            job["id"].as_str().unwrap()
        );
        let (status, page) = runner.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page["total_rows"].as_u64(),
            Some(count(name)),
            "{name}: the full run agrees"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_names_what_is_wrong_with_its_request() {
    let db = TestDatabase::create().await;
    db.execute("CREATE TABLE t AS SELECT i AS id, i::numeric(10,2) AS amount FROM generate_series(1, 10) i")
        .await;
    let runner = Runner::start(None).await;
    runner.register_source("t", &db.source_uri("public.t")).await;
    let recipe = |rule_left: &str, left_source: &str| {
        json!({"name": "r", "left": {"source": left_source, "key": ["id"]}, "right": {"source": "t", "key": ["id"]},
               "rules": [{"kind": "numeric", "left": rule_left, "right": "amount", "abs_tol": 0.01}]})
    };
    let cases = [
        (
            json!({"recipe": recipe("amount", "t"), "sample_rows": 0}),
            "invalid_request",
            "sample_rows must be between 1 and 1000",
        ),
        (
            json!({"recipe": recipe("amount", "t"), "sample_rows": 1001}),
            "invalid_request",
            "got 1001",
        ),
        (
            json!({"recipe": recipe("nope", "t")}),
            "invalid_recipe",
            "rules[0].left",
        ),
        (
            json!({"recipe": recipe("amount", "nowhere")}),
            "invalid_recipe",
            "left.source",
        ),
        (
            json!({"recipe": recipe("amount", "t"), "params": {"day": "2026-01-01"}}),
            "invalid_params",
            "day",
        ),
        (
            json!({"recipe": recipe("amount", "t"), "sample": 5}),
            "invalid_request",
            "sample",
        ),
    ];
    for (body, code, says) in cases {
        let (status, answer) = runner
            .call(Method::POST, "/api/dry-runs", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message} must say {says:?}");
    }
    let (status, answer) = runner
        .call(
            Method::POST,
            "/api/dry-runs",
            Some(json!({"recipe": recipe("amount", "t"), "sample_rows": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["left_rows"].as_u64(), answer["right_rows"].as_u64()),
        (Some(3), Some(3)),
        "{answer}"
    );
}
