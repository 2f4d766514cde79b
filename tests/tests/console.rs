//! The web console in real headless Chromium against a real runner and Postgres: the demo's
//! whole flow (sign in, register two Postgres sources and a CSV, preview with two filters,
//! build the demo recipe and dry-run it, run it and watch it finish, open its mismatched rows,
//! sort and filter them across pages, download them), by pointer at 1280 px, by keyboard only,
//! and at a phone's 390 px; what a viewer token is offered; and the headers every answer carries.
//!
//! Each step is checked against the API's own answer, run through axe-core (no critical or
//! serious violation), and saved as a screenshot under `target/tmp/console-screenshots/<flow>/`.

use std::path::PathBuf;
use std::time::Duration;

use kalla_e2e::browser::{Browser, Input};
use kalla_e2e::demo;
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn screenshots(flow: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("console-screenshots")
        .join(flow)
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A runner, and a database holding the demo's `invoices` and `payments`.
async fn demo() -> (Runner, TestDatabase) {
    (Runner::start(None).await, demo::database().await)
}

/// No critical or serious accessibility violation on the page shown.
async fn assert_accessible(browser: &Browser, page: &str) {
    let violations = browser.accessibility_violations().await;
    assert!(
        violations.is_empty(),
        "axe-core on {page}:\n{}",
        violations.join("\n")
    );
}

/// Screenshot, accessibility, and the token in no URL the page has asked for.
async fn step(browser: &mut Browser, runner: &Runner, name: &str) {
    browser.shot(name).await;
    assert_accessible(browser, name).await;
    for url in browser.requested_urls().await {
        assert!(!url.contains(&runner.token), "the token is in a URL: {url}");
    }
}

/// The rows of the table shown, as text (`null` for SQL NULL, as the page writes it).
async fn shown_rows(browser: &Browser) -> Vec<Vec<String>> {
    let rows = browser
        .client
        .execute(
            "return Array.from(document.querySelectorAll('.rows tbody tr')).map(tr => Array.from(tr.cells).map(td => td.innerText))",
            vec![],
        )
        .await
        .expect("rows");
    serde_json::from_value(rows).expect("rows of text")
}

fn as_shown(rows: &Value) -> Vec<Vec<String>> {
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|v| v.as_str().unwrap_or("null").to_string())
                .collect()
        })
        .collect()
}

async fn sign_in(browser: &Browser, runner: &Runner, token: &str) {
    browser.goto(&format!("{}/", runner.base_url)).await;
    browser.type_into("input[type=password]", token).await;
    browser.press("form button[type=submit]").await;
    browser.find("[data-nav=sources][aria-current=page]").await;
}

async fn register_source(browser: &Browser, alias: &str, uri: &str) {
    let form = "form[aria-labelledby=register-source-title]";
    browser
        .type_into(&format!("{form} input[name=alias]"), alias)
        .await;
    browser.type_into(&format!("{form} input[name=uri]"), uri).await;
    browser.press(&format!("{form} button[type=submit]")).await;
    // Registering opens the source's preview.
    browser
        .wait_for_text(&format!("Preview {alias}"), Duration::from_secs(30))
        .await;
    browser.find(".preview-output table").await;
}

/// Adds a condition to the filter builder in `within` and fills it: `values` are typed in
/// order into its value inputs.
async fn add_condition(browser: &Browser, within: &str, n: usize, column: &str, op: &str, values: &[&str]) {
    browser
        .press(&format!("{within} fieldset.filters > button"))
        .await;
    let row = format!("{within} li.condition:nth-child({n})");
    browser
        .choose(&format!("{row} select[aria-label=Column]"), column)
        .await;
    browser
        .choose(&format!("{row} select[aria-label=Operator]"), op)
        .await;
    let inputs = ["Value", "From", "To"];
    let labels: Vec<&str> = if op == "between" {
        inputs[1..].to_vec()
    } else {
        inputs[..1].to_vec()
    };
    for (label, value) in labels.iter().zip(values) {
        browser
            .type_into(&format!("{row} input[aria-label={label}]"), value)
            .await;
    }
}

async fn demo_flow(flow: &str, width: u32, input: Input) {
    let Some(mut browser) = Browser::start(width, &screenshots(flow), input).await else {
        return;
    };
    let (runner, db) = demo().await;

    browser.goto(&format!("{}/", runner.base_url)).await;
    browser.find("input[type=password]").await;
    step(&mut browser, &runner, "sign-in").await;
    sign_in(&browser, &runner, &runner.token).await;
    step(&mut browser, &runner, "sources-empty").await;

    // Sources: two Postgres tables and a CSV, registered through the form.
    register_source(&browser, "invoices_pg", &db.source_uri("public.invoices")).await;
    browser.press("a[data-nav=sources]").await;
    register_source(&browser, "payments_pg", &db.source_uri("public.payments")).await;
    browser.press("a[data-nav=sources]").await;
    let csv = examples()
        .join("invoices.csv")
        .canonicalize()
        .expect("the example CSV");
    register_source(&browser, "invoices_csv", &format!("file://{}", csv.display())).await;
    browser.press("a[data-nav=sources]").await;
    browser.find("a[href='#/sources/invoices_csv']").await;
    step(&mut browser, &runner, "sources-registered").await;
    let (_, sources) = runner.call(Method::GET, "/api/sources", None).await;
    assert_eq!(sources.as_array().map(Vec::len), Some(3), "{sources}");

    // Preview with two filters; the count shown is the API's.
    browser.press("a[href='#/sources/invoices_pg']").await;
    browser.find(".preview-output table").await;
    add_condition(
        &browser,
        "main form",
        1,
        "issued_on",
        "between",
        &["01102024", "01122024"],
    )
    .await;
    add_condition(&browser, "main form", 2, "amount", "gte", &["1000"]).await;
    browser.press("main form button[type=submit]").await;
    let conditions = json!([
        {"column": "issued_on", "op": "between", "value": ["2024-01-10", "2024-01-12"]},
        {"column": "amount", "op": "gte", "value": "1000"},
    ]);
    let (status, expected) = runner
        .call(
            Method::POST,
            "/api/sources/invoices_pg/load-scoped",
            Some(json!({"conditions": conditions, "limit": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{expected}");
    let total = expected["total_rows"].as_u64().expect("a count");
    assert!(
        total > 50 && total < 10_000,
        "two filters keep some rows: {total}"
    );
    browser
        .wait_for_text(&format!("{} matching rows", fmt(total)), Duration::from_secs(30))
        .await;
    step(&mut browser, &runner, "preview-filtered").await;

    // The demo recipe, built in the form: keys, a numeric and a date-window rule.
    browser.press("a[data-nav=recipes]").await;
    browser.press("a[href='#/recipes/new']").await;
    browser
        .type_into("[data-path=name] input", "invoices-vs-payments")
        .await;
    browser.choose("#left-source", "invoices_pg").await;
    browser
        .find("#left-source option[value=invoices_pg]:checked")
        .await;
    // Saved too early: the runner's error is shown beside the field it names.
    browser.press("#save-recipe").await;
    let error = browser
        .find("[data-path='right.source'] .field-error:not([hidden])")
        .await;
    let said = error.text().await.expect("the error's text");
    assert!(said.contains("right.source"), "{said}");
    browser.press("[data-path='left.key'] > button").await;
    browser
        .choose("[data-path='left.key'] select", "invoice_id")
        .await;
    browser.choose("#right-source", "payments_pg").await;
    browser.press("[data-path='right.key'] > button").await;
    browser
        .choose("[data-path='right.key'] select", "invoice_ref")
        .await;
    browser.press("[data-path=rules] > button").await;
    browser
        .choose(
            "[data-path='rules[0]'] select[aria-label='Rule 1 kind']",
            "numeric",
        )
        .await;
    browser
        .choose(
            "[data-path='rules[0]'] select[aria-label='Rule 1 left column']",
            "amount",
        )
        .await;
    browser
        .choose(
            "[data-path='rules[0]'] select[aria-label='Rule 1 right column']",
            "amount",
        )
        .await;
    browser.press("[data-path=rules] > button").await;
    browser
        .choose(
            "[data-path='rules[1]'] select[aria-label='Rule 2 kind']",
            "date_window",
        )
        .await;
    browser
        .choose(
            "[data-path='rules[1]'] select[aria-label='Rule 2 left column']",
            "issued_on",
        )
        .await;
    browser
        .choose(
            "[data-path='rules[1]'] select[aria-label='Rule 2 right column']",
            "paid_on",
        )
        .await;
    browser
        .type_into(
            "[data-path='rules[0]'] input[aria-label='Rule 1 absolute tolerance']",
            "0.01",
        )
        .await;
    browser
        .type_into("[data-path='rules[1]'] input[aria-label='Rule 2 min days']", "0")
        .await;
    browser
        .type_into("[data-path='rules[1]'] input[aria-label='Rule 2 max days']", "14")
        .await;
    browser.press("#dry-run").await;
    browser
        .wait_for_text("Rows per output in the sample", Duration::from_secs(60))
        .await;
    step(&mut browser, &runner, "recipe-dry-run").await;
    browser.press("#save-recipe").await;
    browser
        .wait_for_text("Recipe invoices-vs-payments", Duration::from_secs(30))
        .await;
    step(&mut browser, &runner, "recipe-saved").await;
    // The recipe built in the form is the demo's, as the API stores it.
    let (_, built) = runner
        .call(Method::GET, "/api/recipes/invoices-vs-payments", None)
        .await;
    let mut example = demo::recipe();
    example["name"] = json!("reference");
    let (status, reference) = runner.call(Method::POST, "/api/recipes", Some(example)).await;
    assert_eq!(status, StatusCode::CREATED, "{reference}");
    let mut reference = reference["recipe"].clone();
    reference["name"] = json!("invoices-vs-payments");
    assert_eq!(
        built["recipe"], reference,
        "the recipe built in the form is the demo's"
    );

    // Run it and watch it finish.
    browser.press("a[href^='#/runs?recipe=']").await;
    browser
        .press("form[aria-labelledby=start-title] button[type=submit]")
        .await;
    browser
        .wait_for_text("Rows per output", Duration::from_secs(180))
        .await;
    browser.find(".badge-succeeded").await;
    step(&mut browser, &runner, "run-succeeded").await;
    let (_, jobs) = runner.call(Method::GET, "/api/jobs", None).await;
    let job = jobs[0]["id"].as_str().expect("a job").to_string();

    // The mismatched rows: sorted by amount, descending, then filtered, then the second page.
    browser.press("a[href$='/mismatched']").await;
    browser.find(".rows table").await;
    browser.press("button.sort[data-column=left_amount]").await;
    browser
        .find("th[aria-sort=ascending] button[data-column=left_amount]")
        .await;
    browser.press("button.sort[data-column=left_amount]").await;
    browser
        .find("th[aria-sort=descending] button[data-column=left_amount]")
        .await;
    add_condition(&browser, "main form", 1, "left_amount", "gte", &["100"]).await;
    browser.press("main form button[type=submit]").await;
    let filter = json!([{"column": "left_amount", "op": "gte", "value": "100"}]).to_string();
    let query = |extra: &str| {
        let filter = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>();
        format!("/api/jobs/{job}/results/mismatched?filter={filter}&order_by=left_amount:desc{extra}")
    };
    let (_, first) = runner
        .call(Method::GET, &query("&limit=50&count=true"), None)
        .await;
    let matching = first["total_rows"].as_u64().expect("a count");
    assert!(matching > 100, "the filter keeps more than two pages: {matching}");
    browser
        .wait_for_text(&format!("{} rows match", fmt(matching)), Duration::from_secs(30))
        .await;
    assert_eq!(
        shown_rows(&browser).await,
        as_shown(&first["rows"]),
        "page 1 is the API's"
    );
    browser.press(".pager [data-page=next]").await;
    browser
        .wait_for_text("Rows 51–100", Duration::from_secs(30))
        .await;
    let (_, second) = runner
        .call(Method::GET, &query("&limit=50&offset=50"), None)
        .await;
    assert_eq!(
        shown_rows(&browser).await,
        as_shown(&second["rows"]),
        "page 2 is the API's"
    );
    assert!(
        browser.has("td.failed").await,
        "failing rules' values are highlighted"
    );
    step(&mut browser, &runner, "mismatched-sorted-filtered-page-2").await;

    // The download is the API's CSV of the same rows.
    browser.press("#download-csv").await;
    let file = browser.downloaded(&format!("{job}-mismatched.csv")).await;
    let api = runner
        .http()
        .get(format!(
            "{}{}",
            runner.base_url,
            query(&format!("&format=csv&limit={matching}"))
        ))
        .bearer_auth(&runner.token)
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert_eq!(file, api.to_vec(), "the downloaded file is the API's");
    assert_eq!(
        file.iter().filter(|b| **b == b'\n').count() as u64,
        matching + 1,
        "a header and every row"
    );
    step(&mut browser, &runner, "downloaded").await;

    browser.press("a[data-nav=schedules]").await;
    browser.find("form[aria-labelledby=schedule-title]").await;
    step(&mut browser, &runner, "schedules").await;
    browser.close().await;
}

fn fmt(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_flow_works_with_a_pointer_at_1280_px() {
    demo_flow("pointer-1280", 1280, Input::Pointer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_flow_works_by_keyboard_alone() {
    demo_flow("keyboard-1280", 1280, Input::Keyboard).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_flow_works_at_a_phones_390_px() {
    demo_flow("pointer-390", 390, Input::Pointer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_is_offered_no_register_run_or_delete_and_the_api_refuses_them() {
    let Some(mut browser) = Browser::start(1280, &screenshots("viewer"), Input::Pointer).await else {
        return;
    };
    let (runner, db) = demo().await;
    demo::register_sources(&runner, &db).await;
    let (status, stored) = runner
        .call(Method::POST, "/api/recipes", Some(demo::recipe()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let recipe_id = stored["id"].as_str().unwrap().to_string();
    let job = runner
        .submit_job(json!({"type": "recon", "recipe_id": recipe_id}))
        .await;
    runner.wait_for_job(&job, Duration::from_secs(120)).await;
    let (status, made) = runner
        .call(
            Method::POST,
            "/api/tokens",
            Some(json!({"name": "analyst", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let viewer = made["token"].as_str().expect("the token's value").to_string();

    sign_in(&browser, &runner, &viewer).await;
    browser.wait_for_text("viewer", Duration::from_secs(10)).await;
    browser.find("a[href='#/sources/invoices_pg']").await;
    assert!(
        !browser.has("form[aria-labelledby=register-source-title]").await,
        "no source form"
    );
    assert!(
        !browser
            .has("form[aria-labelledby=register-connection-title]")
            .await,
        "no connection form"
    );
    assert!(!browser.has("button.danger").await, "no delete button");
    step(&mut browser, &runner, "viewer-sources").await;

    browser.press("a[data-nav=recipes]").await;
    browser.find(&format!("a[href='#/recipes/{recipe_id}']")).await;
    assert!(!browser.has("a[href='#/recipes/new']").await, "no new recipe");
    assert!(!browser.has("button.danger").await, "no delete button");
    browser.press(&format!("a[href='#/recipes/{recipe_id}']")).await;
    browser
        .wait_for_text("may look but not change", Duration::from_secs(20))
        .await;
    assert!(!browser.has("#save-recipe").await, "no save");
    assert!(
        !browser.has("#dry-run").await,
        "no dry run (the API refuses a viewer's)"
    );
    step(&mut browser, &runner, "viewer-recipe").await;

    browser.press("a[data-nav=runs]").await;
    browser.press(&format!("a[href='#/runs/{job}']")).await;
    browser.find(".badge-succeeded").await;
    assert!(
        !browser.has("form[aria-labelledby=start-title]").await,
        "no run form"
    );
    browser
        .goto(&format!("{}/console/#/runs?recipe={recipe_id}", runner.base_url))
        .await;
    browser.find("#runs-recipe").await;
    assert!(
        !browser.has("form[aria-labelledby=start-title]").await,
        "no run form"
    );
    step(&mut browser, &runner, "viewer-runs").await;

    let connection = runner.create_connection("demo", &db.url).await;
    let connection = connection["id"].as_str().expect("a connection id").to_string();
    browser.press("a[data-nav=sources]").await;
    browser
        .press(&format!("a[href='#/connections/{connection}']"))
        .await;
    browser
        .wait_for_text("Reachable in", Duration::from_secs(30))
        .await;
    browser.find("table").await;
    assert!(!browser.has("button.danger").await, "no delete button");
    assert!(
        !browser.has("button.secondary").await,
        "no refresh or rediscover button"
    );
    step(&mut browser, &runner, "viewer-connection").await;

    browser.press("a[data-nav=schedules]").await;
    browser
        .wait_for_text("Recipes that run by themselves", Duration::from_secs(20))
        .await;
    assert!(
        !browser.has("form[aria-labelledby=schedule-title]").await,
        "no schedule form"
    );
    step(&mut browser, &runner, "viewer-schedules").await;

    // The API refuses what the console does not offer.
    let refused = [
        (
            Method::POST,
            "/api/sources".to_string(),
            Some(json!({"alias": "x", "uri": db.source_uri("public.invoices")})),
        ),
        (Method::DELETE, "/api/sources/invoices_pg".to_string(), None),
        (
            Method::POST,
            "/api/jobs".to_string(),
            Some(json!({"type": "recon", "recipe_id": recipe_id})),
        ),
        (Method::DELETE, format!("/api/recipes/{recipe_id}"), None),
        (
            Method::POST,
            "/api/dry-runs".to_string(),
            Some(json!({"recipe": stored["recipe"]})),
        ),
    ];
    for (method, path, body) in refused {
        let (status, answer) = runner.call_as(Some(&viewer), method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_security_headers_and_the_console_its_own_policy() {
    let runner = Runner::start(None).await;
    let get = |path: &str| runner.http().get(format!("{}{path}", runner.base_url)).send();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = no_redirect
        .get(format!("{}/", runner.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(root.headers()["location"], "/console/");

    for path in ["/console/", "/console/app.js", "/console/app.css"] {
        let page = get(path).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let policy = page.headers()["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "connect-src 'self'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(
            !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
            "{policy}"
        );
        assert_common_headers(page.headers(), path);
    }
    let script = get("/console/app.js").await.unwrap();
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let missing = get("/console/nothing.js").await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_common_headers(missing.headers(), "/console/nothing.js");

    for (path, token) in [
        ("/api/whoami", Some(runner.token.as_str())),
        ("/api/whoami", None),
        ("/health", None),
    ] {
        let mut request = runner.http().get(format!("{}{path}", runner.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(
            answer.headers()["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'",
            "{path}"
        );
        assert_common_headers(answer.headers(), path);
    }
}

fn assert_common_headers(headers: &reqwest::header::HeaderMap, path: &str) {
    assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
}
