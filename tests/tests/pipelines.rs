//! Reconciliation pipelines on a real runner, Postgres and an S3-compatible server (moto): a
//! recipe's parameters chosen per run, in its filters and its sources' locations.

use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use kalla_e2e::s3::S3Server;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// The ledger: entries 1..=12, four posted on each of three days; amounts `id * 10`.
const LEDGER: &str = "
CREATE TABLE ledger (entry_id int PRIMARY KEY, posted_on date NOT NULL, amount numeric(12,2) NOT NULL);
INSERT INTO ledger SELECT g, DATE '2026-11-27' + ((g - 1) / 4), g * 10 FROM generate_series(1, 12) g;
";

const DAYS: [&str; 3] = ["2026-11-27", "2026-11-28", "2026-11-29"];

/// Day `d`'s bank export: its first three entries, the second with a wrong amount, and one
/// entry (100 + d) the ledger does not have.
fn export(day: usize) -> String {
    let first = day * 4 + 1;
    let mut csv = String::from("entry_id,amount\n");
    csv.push_str(&format!("{first},{}\n", first * 10));
    csv.push_str(&format!("{},{}\n", first + 1, (first + 1) * 10 + 5));
    csv.push_str(&format!("{},{}\n", first + 2, (first + 2) * 10));
    csv.push_str(&format!("{},1\n", 100 + day));
    csv
}

fn recipe() -> Value {
    json!({
        "name": "ledger-vs-bank",
        "params": [
            {"name": "run_date", "type": "date"},
            {"name": "tolerance", "type": "number", "default": 0.01}
        ],
        "left": {"source": "ledger", "key": ["entry_id"],
                 "filters": [{"column": "posted_on", "op": "eq", "value": "{run_date}"}]},
        "right": {"source": "bank", "key": ["entry_id"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01}]
    })
}

#[tokio::test]
async fn a_parameterised_recipe_reads_each_days_export_and_filters_by_its_date() {
    let db = TestDatabase::create().await;
    db.execute(LEDGER).await;
    let s3 = S3Server::start().await;
    for (day, date) in DAYS.iter().enumerate() {
        s3.put_object(&format!("exports/{date}/statement.csv"), export(day).into_bytes())
            .await;
    }
    let args = s3.runner_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(tempfile::tempdir().unwrap(), None, &args).await;
    runner
        .register_source("ledger", &db.source_uri("public.ledger"))
        .await;
    let template = format!("s3://{}/exports/{{run_date}}/statement.csv", s3.bucket);
    runner.register_source("bank", &template).await;

    // Stored with run_date undeclared a default: its sources are checked when a run gives it.
    let (status, stored) = runner.call(Method::POST, "/api/recipes", Some(recipe())).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let recipe_id = stored["id"].as_str().unwrap().to_string();

    for (day, date) in DAYS.iter().enumerate() {
        let job = if day == 0 {
            let id = runner.kalla(
                &runner.token,
                &["run", "ledger-vs-bank", "--param", &format!("run_date={date}")],
            );
            runner.wait_for_job(id.trim(), Duration::from_secs(120)).await
        } else {
            let id = runner
                .submit_job(json!({"type": "recon", "recipe_id": recipe_id, "params": {"run_date": date}}))
                .await;
            runner.wait_for_job(&id, Duration::from_secs(120)).await
        };
        assert_eq!(job["status"], "succeeded", "{job}\n{}", runner.logs());
        let outputs = &job["summary"]["outputs"];
        // Of the day's four entries: two match, one differs in amount, one the bank lacks; the
        // bank's extra entry is right only. Other days' entries are filtered out.
        assert_eq!(
            [
                &outputs["matched"],
                &outputs["mismatched"],
                &outputs["left_only"],
                &outputs["right_only"]
            ],
            [&json!(2), &json!(1), &json!(1), &json!(1)],
            "{date}: {job}"
        );
        // The job records what it was given and read.
        let inputs = &job["inputs"];
        assert_eq!(
            inputs["params"],
            json!({"run_date": date, "tolerance": "0.01"}),
            "{job}"
        );
        assert_eq!(
            inputs["sources"]["bank"],
            format!("s3://{}/exports/{date}/statement.csv", s3.bucket),
            "{job}"
        );
        assert!(inputs["sources"]["ledger"].is_string(), "{job}");
    }

    // Bad parameters are the request's mistake, named, and make no job.
    let jobs_before = runner.call(Method::GET, "/api/jobs", None).await.1;
    let submit = |params: Value| {
        let runner = &runner;
        let recipe_id = recipe_id.clone();
        async move {
            runner
                .call(
                    Method::POST,
                    "/api/jobs",
                    Some(json!({"type": "recon", "recipe_id": recipe_id, "params": params})),
                )
                .await
        }
    };
    for (params, named) in [
        (json!({}), "missing parameter run_date"),
        (
            json!({"run_date": "29/11/2026"}),
            "parameter run_date: expected a date",
        ),
        (
            json!({"run_date": "2026-11-29", "tolerance": "a lot"}),
            "parameter tolerance",
        ),
        (
            json!({"run_date": "2026-11-29", "day": "x"}),
            "unknown parameter day",
        ),
    ] {
        let (status, body) = submit(params.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params}: {body}");
        assert_eq!(body["error"]["code"], "invalid_params", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{params}: {message}");
    }
    // A day with no export: the source is not there, which is not the request's fault.
    let (status, body) = submit(json!({"run_date": "2026-12-25"})).await;
    assert!(status.is_client_error() || status.is_server_error(), "{body}");
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        runner.call(Method::GET, "/api/jobs", None).await.1,
        jobs_before,
        "no job was made"
    );

    // A text parameter in a location may only be a plain name: no climbing out of the prefix.
    let (status, body) = runner
        .call(
            Method::POST,
            "/api/sources",
            Some(json!({"alias": "by_name", "uri": format!("s3://{}/exports/{{name}}/statement.csv", s3.bucket)})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut by_name = recipe();
    by_name["name"] = json!("by-name");
    by_name["params"] = json!([{"name": "name", "type": "text"}]);
    by_name["left"]["filters"] = json!([]);
    by_name["right"]["source"] = json!("by_name");
    let inline = |name: &str| json!({"type": "recon", "recipe": by_name, "params": {"name": name}});
    let (status, body) = runner
        .call(Method::POST, "/api/jobs", Some(inline("../../other")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_params", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("letters"),
        "{body}"
    );
    let id = runner.submit_job(inline("2026-11-28")).await;
    let job = runner.wait_for_job(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let outputs = &job["summary"]["outputs"];
    assert_eq!(
        [&outputs["left_only"], &outputs["right_only"]],
        [&json!(9), &json!(1)],
        "{job}"
    );

    // A filter naming an undeclared parameter is the recipe's mistake.
    let mut undeclared = recipe();
    undeclared["name"] = json!("undeclared");
    undeclared["left"]["filters"][0]["value"] = json!("{day}");
    let (status, body) = runner.call(Method::POST, "/api/recipes", Some(undeclared)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_recipe", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("{day}"),
        "{body}"
    );
}
