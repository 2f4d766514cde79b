//! Reconciliation pipelines on a real runner, Postgres and an S3-compatible server (moto): a
//! recipe's parameters chosen per run, in its filters and its sources' locations; and a
//! `carry_forward` recipe run by a daily schedule's ticks on five run dates, its open items
//! against what the test computes.

use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use kalla_e2e::s3::S3Server;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
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

/// Run dates of the simulation: ages count these, not the clock (gaps of 1, 7, 11 and 26 days).
const RUN_DATES: [&str; 5] = [
    "2026-10-01",
    "2026-10-02",
    "2026-10-09",
    "2026-10-20",
    "2026-11-15",
];

/// Day `d`'s invoices: `INV-d-1` to `INV-d-4`, amounts in cents.
fn invoices(day: usize) -> Vec<(String, i64)> {
    (1..=4)
        .map(|i| (format!("INV-{day}-{i}"), (100 * i as i64 + day as i64) * 100))
        .collect()
}

fn amount_of(id: &str) -> i64 {
    let parts: Vec<usize> = id.split('-').skip(1).map(|p| p.parse().unwrap()).collect();
    invoices(parts[0])[parts[1] - 1].1
}

/// Day `d`'s payments: invoice 1 on time on even days, a day early (on the day before) on odd
/// ones; invoice 2 two run days late; invoice 3 on time but a unit too much; invoice 4 never;
/// and a payment of no invoice.
fn payments(day: usize) -> Vec<(String, i64)> {
    let mut paid = Vec::new();
    if day.is_multiple_of(2) {
        paid.push(format!("INV-{day}-1"));
    }
    if day + 1 < RUN_DATES.len() && !(day + 1).is_multiple_of(2) {
        paid.push(format!("INV-{}-1", day + 1));
    }
    if day >= 2 {
        paid.push(format!("INV-{}-2", day - 2));
    }
    let mut payments: Vec<(String, i64)> = paid.into_iter().map(|id| (id.clone(), amount_of(&id))).collect();
    payments.push((format!("INV-{day}-3"), amount_of(&format!("INV-{day}-3")) + 100));
    payments.push((format!("UNK-{day}"), 500));
    payments
}

fn cents(amount: i64) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}

/// An open item as the test keeps it: since which day, for how many runs, with what amount.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    first_seen: usize,
    runs_seen: i64,
    amount: i64,
}

type Open = BTreeMap<(&'static str, String), Item>;

/// What a day's run does, computed without Kalla: new rows plus open items of each side, paired
/// by invoice id; equal amounts match, others stay open.
#[derive(Debug, Default, PartialEq)]
struct DayOutcome {
    opened: i64,
    still_open: i64,
    closed: BTreeSet<(&'static str, String)>,
}

fn run_day(open: &mut Open, day: usize) -> DayOutcome {
    let mut sides: BTreeMap<(&'static str, String), (i64, Option<Item>)> = BTreeMap::new();
    for (id, amount) in invoices(day) {
        sides.insert(("left", id), (amount, None));
    }
    for (id, amount) in payments(day) {
        sides.insert(("right", id), (amount, None));
    }
    for ((side, id), item) in std::mem::take(open) {
        sides.insert((side, id), (item.amount, Some(item)));
    }
    let mut outcome = DayOutcome::default();
    let keys: BTreeSet<String> = sides.keys().map(|(_, id)| id.clone()).collect();
    for id in keys {
        let left = sides.get(&("left", id.clone())).cloned();
        let right = sides.get(&("right", id.clone())).cloned();
        let matched = matches!((&left, &right), (Some(l), Some(r)) if l.0 == r.0);
        for (side, row) in [("left", left), ("right", right)] {
            let Some((amount, earlier)) = row else { continue };
            if matched {
                if earlier.is_some() {
                    outcome.closed.insert((side, id.clone()));
                }
                continue;
            }
            let item = match earlier {
                Some(item) => {
                    outcome.still_open += 1;
                    Item {
                        runs_seen: item.runs_seen + 1,
                        ..item
                    }
                }
                None => {
                    outcome.opened += 1;
                    Item {
                        first_seen: day,
                        runs_seen: 1,
                        amount,
                    }
                }
            };
            open.insert((side, id.clone()), item);
        }
    }
    outcome
}

fn date(day: usize) -> chrono::NaiveDate {
    RUN_DATES[day].parse().unwrap()
}

fn aging(open: &Open, day: usize) -> Value {
    let mut buckets = BTreeMap::from([("0-1", 0), ("2-7", 0), ("8-30", 0), ("over_30", 0)]);
    for item in open.values() {
        let age = (date(day) - date(item.first_seen)).num_days();
        let bucket = match age {
            0..=1 => "0-1",
            2..=7 => "2-7",
            8..=30 => "8-30",
            _ => "over_30",
        };
        *buckets.get_mut(bucket).unwrap() += 1;
    }
    json!(buckets)
}

/// Every item of the recipe in `state`, read page by page.
async fn items(runner: &Runner, recipe_id: &str, state: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/api/recipes/{recipe_id}/open-items?state={state}&limit=4&after={after}");
        let (status, page) = runner.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => return items,
        }
    }
}

#[tokio::test]
async fn carried_forward_items_age_in_run_days_and_close_when_a_later_run_matches_them() {
    let db = TestDatabase::create().await;
    let mut invoices_sql = String::from(
        "CREATE TABLE invoices (invoice_id text PRIMARY KEY, issued_on date NOT NULL, amount numeric(12,2) NOT NULL);",
    );
    for (day, run_date) in RUN_DATES.iter().enumerate() {
        for (id, amount) in invoices(day) {
            invoices_sql.push_str(&format!(
                "INSERT INTO invoices VALUES ('{id}', DATE '{run_date}', {});",
                cents(amount)
            ));
        }
    }
    db.execute(&invoices_sql).await;
    let s3 = S3Server::start().await;
    let mut args = s3.runner_args();
    args.extend(["--cache-dir".to_string(), format!("s3://{}/kalla/", s3.bucket)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(tempfile::tempdir().unwrap(), None, &args).await;
    runner
        .register_source("invoices", &db.source_uri("public.invoices"))
        .await;
    let template = format!("s3://{}/payments/{{run_date}}/payments.csv", s3.bucket);
    runner.register_source("payments", &template).await;
    let recipe = json!({
        "name": "invoices-vs-payments",
        "carry_forward": true,
        "params": [{"name": "run_date", "type": "date"}],
        "left": {"source": "invoices", "key": ["invoice_id"],
                 "filters": [{"column": "issued_on", "op": "eq", "value": "{run_date}"}]},
        "right": {"source": "payments", "key": ["invoice_id"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.001}]
    });
    let (status, stored) = runner
        .call(Method::POST, "/api/recipes", Some(recipe.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let recipe_id = stored["id"].as_str().unwrap().to_string();

    // Open items belong to a stored recipe: an inline one may not carry any.
    let (status, body) = runner
        .call(
            Method::POST,
            "/api/jobs",
            Some(json!({"type": "recon", "recipe": recipe, "params": {"run_date": RUN_DATES[0]}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stored recipe"),
        "{body}"
    );

    // Each day is reconciled by the schedule's tick on that date (06:00 in Oslo), fired by the
    // test rather than waited for: the tick gives its date to the run.
    let schedule = json!({
        "name": "payments-daily", "recipe": recipe_id, "cron": "0 6 * * *",
        "timezone": "Europe/Oslo", "params": {"run_date": "{tick_date}"}
    });
    let (status, schedule) = runner.call(Method::POST, "/api/schedules", Some(schedule)).await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let ticks = format!("/api/schedules/{}/ticks", schedule["id"].as_str().unwrap());
    for (at, says) in [
        ("2026-10-01T06:00:00Z", "not one of the schedule's ticks"),
        ("2099-01-01", "yet to come"),
        ("1 Oct", "neither a date"),
    ] {
        let (status, body) = runner.call(Method::POST, &ticks, Some(json!({"at": at}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{at}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{at}: {body}"
        );
    }

    let mut open = Open::new();
    let mut closed: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut buckets_used = BTreeSet::new();
    let mut jobs = Vec::new();
    for (day, run_date) in RUN_DATES.iter().enumerate() {
        let mut csv = String::from("invoice_id,amount\n");
        for (id, amount) in payments(day) {
            csv.push_str(&format!("{id},{}\n", cents(amount)));
        }
        s3.put_object(&format!("payments/{run_date}/payments.csv"), csv.into_bytes())
            .await;
        let (status, tick) = if day == 1 {
            let shown = runner.kalla(
                &runner.token,
                &["schedules", "fire", "payments-daily", "--at", run_date],
            );
            (StatusCode::CREATED, serde_json::from_str(&shown).unwrap())
        } else {
            runner
                .call(Method::POST, &ticks, Some(json!({"at": run_date})))
                .await
        };
        assert_eq!(status, StatusCode::CREATED, "{tick}");
        // 06:00 in Oslo: summer time until 25 October, winter time after.
        let utc_hour = if *run_date < "2026-10-25" { 4 } else { 5 };
        assert_eq!(
            tick["tick_at"],
            format!("{run_date}T0{utc_hour}:00:00.000000Z"),
            "{tick}"
        );
        let id = tick["job_id"].as_str().unwrap().to_string();
        // A tick has one job, however often it is fired.
        let (status, again) = runner
            .call(Method::POST, &ticks, Some(json!({"at": tick["tick_at"]})))
            .await;
        assert_eq!(
            (status, &again["job_id"]),
            (StatusCode::OK, &tick["job_id"]),
            "{again}"
        );
        let job = runner.wait_for_job(&id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}\n{}", runner.logs());
        assert_eq!(job["inputs"]["params"], json!({"run_date": run_date}), "{job}");
        jobs.push(id.clone());

        let outcome = run_day(&mut open, day);
        for (side, key) in &outcome.closed {
            closed.insert((side.to_string(), key.clone(), id.clone()));
        }
        let ages = aging(&open, day);
        buckets_used.extend(
            ages.as_object()
                .unwrap()
                .iter()
                .filter(|(_, count)| **count != 0)
                .map(|(bucket, _)| bucket.clone()),
        );
        assert_eq!(
            job["summary"]["open_items"],
            json!({
                "run_date": run_date,
                "open": open.len(),
                "opened": outcome.opened,
                "still_open": outcome.still_open,
                "matched": outcome.closed.len(),
                "referred": 0,
                "aging": ages,
            }),
            "day {day}: {job}"
        );
        let listed: BTreeMap<(String, String), (usize, i64, i64)> = items(&runner, &recipe_id, "open")
            .await
            .iter()
            .map(|item| {
                let first_seen = RUN_DATES.iter().position(|d| item["first_seen"] == *d).unwrap();
                (
                    (
                        item["side"].as_str().unwrap().to_string(),
                        item["key"][0].as_str().unwrap().to_string(),
                    ),
                    (
                        first_seen,
                        item["runs_seen"].as_i64().unwrap(),
                        item["age_days"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        let expected: BTreeMap<(String, String), (usize, i64, i64)> = open
            .iter()
            .map(|((side, key), item)| {
                let age = (date(day) - date(item.first_seen)).num_days();
                (
                    (side.to_string(), key.clone()),
                    (item.first_seen, item.runs_seen, age),
                )
            })
            .collect();
        assert_eq!(listed, expected, "open items after day {day}");
        let matched: BTreeSet<(String, String, String)> = items(&runner, &recipe_id, "matched")
            .await
            .iter()
            .map(|item| {
                (
                    item["side"].as_str().unwrap().to_string(),
                    item["key"][0].as_str().unwrap().to_string(),
                    item["closed_by_job"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(matched, closed, "items matched by day {day}");

        if day == 2 {
            // The first day's overpaid invoice is written off: its payment stays open alone.
            let listed = items(&runner, &recipe_id, "open").await;
            let item = listed
                .iter()
                .find(|item| item["side"] == "left" && item["key"][0] == "INV-0-3")
                .unwrap();
            let resolve = format!(
                "/api/recipes/{recipe_id}/open-items/{}/resolve",
                item["id"].as_str().unwrap()
            );
            let (status, resolved) = runner
                .call(Method::POST, &resolve, Some(json!({"note": "written off"})))
                .await;
            assert_eq!(status, StatusCode::OK, "{resolved}");
            assert_eq!(resolved["state"], "resolved", "{resolved}");
            let history = resolved["history"].as_array().unwrap();
            assert_eq!(
                (&history[0]["event"], &history[1]["event"], &history[1]["note"]),
                (&json!("opened"), &json!("resolved"), &json!("written off")),
                "{resolved}"
            );
            assert!(history[1]["by"].is_string(), "{resolved}");
            let (status, again) = runner
                .call(Method::POST, &resolve, Some(json!({"note": "twice"})))
                .await;
            assert_eq!(status, StatusCode::CONFLICT, "{again}");
            assert_eq!(again["error"]["code"], "item_closed", "{again}");
            open.remove(&("left", "INV-0-3".to_string()));
        }
    }
    // The days were chosen to close items of both sides and fill every age bucket.
    let sides: BTreeSet<&str> = closed.iter().map(|(side, _, _)| side.as_str()).collect();
    assert_eq!(sides, BTreeSet::from(["left", "right"]), "{closed:?}");
    assert_eq!(buckets_used.len(), 4, "{buckets_used:?}");
    assert!(
        !s3.keys("kalla/open-items/").await.is_empty(),
        "open items are kept in the store, apart from results"
    );

    // The schedule shows the five ticks, each with its job.
    let (_, shown) = runner.call(Method::GET, &ticks.replace("/ticks", ""), None).await;
    let mut ticked: Vec<String> = shown["recent_ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tick| tick["job_id"].as_str().unwrap().to_string())
        .collect();
    ticked.reverse();
    assert_eq!(ticked, jobs, "{shown}");

    // Open items only move forward in run dates.
    let id = runner
        .submit_job(json!({"type": "recon", "recipe_id": recipe_id, "params": {"run_date": RUN_DATES[1]}}))
        .await;
    let job = runner.wait_for_job(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("only move forward"),
        "{job}"
    );
}
