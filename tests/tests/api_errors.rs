//! Every error status the runner's OpenAPI document lists for a route is one the route really
//! answers: this test provokes each of them, on every route, against a real runner, Postgres and
//! embedded cluster, and checks the answer's status and code. Together with the runner's own
//! check (any answer its document lacks is logged, and the harness fails a test on such a line),
//! the document and the API cannot disagree in either direction.
//!
//! Not provoked: 500 `internal`, which only a bug gives (every protected route lists it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kalla_e2e::ports::free_port;
use kalla_e2e::postgres::{PgCluster, TestDatabase};
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A route as the document names it: method and path pattern.
type Route = (Method, &'static str);

const SOURCES: Route = (Method::GET, "/api/sources");
const CREATE_SOURCE: Route = (Method::POST, "/api/sources");
const SOURCE: Route = (Method::GET, "/api/sources/{alias}");
const DELETE_SOURCE: Route = (Method::DELETE, "/api/sources/{alias}");
const PREVIEW: Route = (Method::POST, "/api/sources/{alias}/load-scoped");
const CONNECTIONS: Route = (Method::GET, "/api/connections");
const CREATE_CONNECTION: Route = (Method::POST, "/api/connections");
const CONNECTION: Route = (Method::GET, "/api/connections/{id}");
const DELETE_CONNECTION: Route = (Method::DELETE, "/api/connections/{id}");
const HEALTH: Route = (Method::GET, "/api/connections/{id}/health");
const REFRESH: Route = (Method::POST, "/api/connections/{id}/refresh");
const REFRESH_TABLE: Route = (
    Method::POST,
    "/api/connections/{id}/tables/{schema}/{table}/refresh",
);
const PURGE: Route = (Method::DELETE, "/api/connections/{id}/cache");
const PURGE_TABLE: Route = (
    Method::DELETE,
    "/api/connections/{id}/tables/{schema}/{table}/cache",
);
const CATALOG: Route = (Method::GET, "/api/information_schema");
const QUERY: Route = (Method::POST, "/api/query");
const RECIPES: Route = (Method::GET, "/api/recipes");
const CREATE_RECIPE: Route = (Method::POST, "/api/recipes");
const RECIPE: Route = (Method::GET, "/api/recipes/{id}");
const REPLACE_RECIPE: Route = (Method::PUT, "/api/recipes/{id}");
const DRY_RUN: Route = (Method::POST, "/api/dry-runs");
const DELETE_RECIPE: Route = (Method::DELETE, "/api/recipes/{id}");
const OPEN_ITEMS: Route = (Method::GET, "/api/recipes/{id}/open-items");
const RESOLVE_ITEM: Route = (Method::POST, "/api/recipes/{id}/open-items/{item}/resolve");
const SUBMIT: Route = (Method::POST, "/api/jobs");
const JOBS: Route = (Method::GET, "/api/jobs");
const JOB: Route = (Method::GET, "/api/jobs/{id}");
const CANCEL: Route = (Method::DELETE, "/api/jobs/{id}");
const RESULTS: Route = (Method::GET, "/api/jobs/{id}/results/{output}");
const DELETE_RESULTS: Route = (Method::DELETE, "/api/jobs/{id}/results");
const CREATE_TOKEN: Route = (Method::POST, "/api/tokens");
const TOKENS: Route = (Method::GET, "/api/tokens");
const REVOKE_TOKEN: Route = (Method::DELETE, "/api/tokens/{name}");
const AUDIT: Route = (Method::GET, "/api/audit");
const WHOAMI: Route = (Method::GET, "/api/whoami");
const UPDATE_SOURCE: Route = (Method::PATCH, "/api/sources/{alias}");
const UPDATE_CONNECTION: Route = (Method::PATCH, "/api/connections/{id}");
const CREATE_SECRET: Route = (Method::POST, "/api/secrets");
const SECRETS: Route = (Method::GET, "/api/secrets");
const SECRET: Route = (Method::GET, "/api/secrets/{name}");
const UPDATE_SECRET: Route = (Method::PUT, "/api/secrets/{name}");
const DELETE_SECRET: Route = (Method::DELETE, "/api/secrets/{name}");
const KEYS: Route = (Method::GET, "/api/keys");
const RESEAL: Route = (Method::POST, "/api/keys/reseal");
const READY: Route = (Method::GET, "/ready");
const SCHEDULES: Route = (Method::GET, "/api/schedules");
const CREATE_SCHEDULE: Route = (Method::POST, "/api/schedules");
const SCHEDULE: Route = (Method::GET, "/api/schedules/{id}");
const PAUSE_SCHEDULE: Route = (Method::POST, "/api/schedules/{id}/pause");
const RESUME_SCHEDULE: Route = (Method::POST, "/api/schedules/{id}/resume");
const DELETE_SCHEDULE: Route = (Method::DELETE, "/api/schedules/{id}");
const FIRE_TICK: Route = (Method::POST, "/api/schedules/{id}/ticks");

/// The document's error statuses per route, each with the codes it lists.
type Documented = BTreeMap<(String, String), BTreeMap<u16, Vec<String>>>;

fn key((method, pattern): &Route) -> (String, String) {
    (method.to_string(), pattern.to_string())
}

/// A route's pattern with its parameters filled in, in order.
fn path(route: &Route, parameters: &[&str]) -> String {
    let mut parameters = parameters.iter();
    route
        .1
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                parameters.next().expect("a value for each parameter").to_string()
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// What the test provoked, checked against the document as it goes.
struct Driven {
    documented: Documented,
    seen: BTreeSet<(String, String, u16)>,
}

impl Driven {
    async fn new(runner: &Runner) -> Self {
        let (status, document) = runner.call(Method::GET, "/api/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        let mut documented = Documented::new();
        for (pattern, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let errors = operation["responses"]
                    .as_object()
                    .expect("responses")
                    .iter()
                    .filter_map(|(status, response)| {
                        let status: u16 = status.parse().ok().filter(|s| *s >= 400)?;
                        let codes = response["x-error-codes"]
                            .as_array()
                            .map(|codes| codes.iter().map(|c| c.as_str().unwrap().to_string()).collect())
                            .unwrap_or_default();
                        Some((status, codes))
                    })
                    .collect();
                documented.insert((method.to_uppercase(), pattern.clone()), errors);
            }
        }
        Self {
            documented,
            seen: BTreeSet::new(),
        }
    }

    /// Records that `route` answered `status` with `code` (`None`: an answer without an error
    /// code, as `/ready` gives), after checking the document lists both.
    fn record(&mut self, route: &Route, status: StatusCode, code: Option<&str>) {
        let (method, pattern) = key(route);
        let codes = self
            .documented
            .get(&(method.clone(), pattern.clone()))
            .and_then(|statuses| statuses.get(&status.as_u16()))
            .unwrap_or_else(|| panic!("{method} {pattern} answered {status}, which its document lacks"));
        if let Some(code) = code {
            assert!(
                codes.iter().any(|c| c == code),
                "{method} {pattern} answered {status} {code}; the document lists {codes:?}"
            );
        }
        self.seen.insert((method, pattern, status.as_u16()));
    }

    /// Every documented error status of every route, but for 500 where it only means a bug.
    fn unprovoked(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for ((method, pattern), statuses) in &self.documented {
            for (status, codes) in statuses {
                let only_bugs = !codes.is_empty() && codes.iter().all(|c| c == "internal");
                if !only_bugs && !self.seen.contains(&(method.clone(), pattern.clone(), *status)) {
                    missing.push(format!("{method} {pattern} {status} {codes:?}"));
                }
            }
        }
        missing
    }
}

/// Sends a request to `route` with the runner's token and checks that it answers `status` with
/// `code`; returns the body.
async fn expect(
    driven: &mut Driven,
    runner: &Runner,
    route: &Route,
    parameters: &[&str],
    body: Option<Value>,
    status: StatusCode,
    code: &str,
) -> Value {
    let target = path(route, parameters);
    let (answered, answer) = runner.call(route.0.clone(), &target, body).await;
    assert_eq!(answered, status, "{} {target}: {answer}", route.0);
    assert_eq!(answer["error"]["code"], code, "{} {target}: {answer}", route.0);
    driven.record(route, answered, Some(code));
    answer
}

/// Sends a request to `route` expecting success; returns the body.
async fn succeed(runner: &Runner, route: &Route, parameters: &[&str], body: Option<Value>) -> Value {
    let target = path(route, parameters);
    let (status, answer) = runner.call(route.0.clone(), &target, body).await;
    assert!(status.is_success(), "{} {target}: {status} {answer}", route.0);
    answer
}

/// Every protected route with parameters that name existing things (where it matters).
fn protected_routes(ids: &Ids) -> Vec<(Route, Vec<&str>, Option<Value>)> {
    let recipe = recipe_body("r_any", "items", "items");
    vec![
        (SOURCES, vec![], None),
        (
            CREATE_SOURCE,
            vec![],
            Some(json!({"alias": "another", "uri": example_csv()})),
        ),
        (SOURCE, vec!["items"], None),
        (DELETE_SOURCE, vec!["items"], None),
        (PREVIEW, vec!["items"], Some(json!({}))),
        (CONNECTIONS, vec![], None),
        (
            CREATE_CONNECTION,
            vec![],
            Some(
                json!({"name": "another", "source_type": "postgres", "config": {"uri": "postgres://u@127.0.0.1:1/x"}}),
            ),
        ),
        (CONNECTION, vec![&ids.connection], None),
        (DELETE_CONNECTION, vec![&ids.connection], None),
        (HEALTH, vec![&ids.connection], None),
        (REFRESH, vec![&ids.connection], None),
        (REFRESH_TABLE, vec![&ids.connection, "public", "items"], None),
        (PURGE, vec![&ids.connection], None),
        (PURGE_TABLE, vec![&ids.connection, "public", "items"], None),
        (CATALOG, vec![], None),
        (QUERY, vec![], Some(json!({"sql": "SELECT count(*) FROM items"}))),
        (RECIPES, vec![], None),
        (CREATE_RECIPE, vec![], Some(recipe.clone())),
        (RECIPE, vec!["r1"], None),
        (REPLACE_RECIPE, vec!["r1"], Some(recipe.clone())),
        (DRY_RUN, vec![], Some(json!({"recipe": recipe}))),
        (DELETE_RECIPE, vec!["r1"], None),
        (OPEN_ITEMS, vec!["r_carry"], None),
        (
            RESOLVE_ITEM,
            vec!["r_carry", &ids.item],
            Some(json!({"note": "settled"})),
        ),
        (SUBMIT, vec![], Some(json!({"type": "recon", "recipe_id": "r1"}))),
        (JOBS, vec![], None),
        (JOB, vec![&ids.job], None),
        (CANCEL, vec![&ids.job], None),
        (RESULTS, vec![&ids.job, "matched"], None),
        (DELETE_RESULTS, vec![&ids.carry_job], None),
        (
            CREATE_TOKEN,
            vec![],
            Some(json!({"name": "another", "role": "viewer"})),
        ),
        (TOKENS, vec![], None),
        (REVOKE_TOKEN, vec!["t1"], None),
        (WHOAMI, vec![], None),
        (AUDIT, vec![], None),
        (UPDATE_SOURCE, vec!["items"], Some(json!({"password": "another"}))),
        (
            UPDATE_CONNECTION,
            vec![&ids.connection],
            Some(json!({"password": "another"})),
        ),
        (
            CREATE_SECRET,
            vec![],
            Some(json!({"name": "another", "value": "v"})),
        ),
        (SECRETS, vec![], None),
        (SECRET, vec!["s1"], None),
        (UPDATE_SECRET, vec!["s1"], Some(json!({"value": "v2"}))),
        (DELETE_SECRET, vec!["s1"], None),
        (KEYS, vec![], None),
        (RESEAL, vec![], None),
        (SCHEDULES, vec![], None),
        (CREATE_SCHEDULE, vec![], Some(schedule_body("another", "r1"))),
        (SCHEDULE, vec!["sch1"], None),
        (PAUSE_SCHEDULE, vec!["sch1"], None),
        (RESUME_SCHEDULE, vec!["sch1"], None),
        (DELETE_SCHEDULE, vec!["sch1"], None),
        (FIRE_TICK, vec!["sch1"], Some(json!({"at": "2026-01-01"}))),
    ]
}

/// A schedule of `recipe` that ticks once a year (1 January), so never while the test runs.
fn schedule_body(name: &str, recipe: &str) -> Value {
    json!({"name": name, "recipe": recipe, "cron": "0 0 1 1 *"})
}

/// Ids of things the scenario made.
#[derive(Default)]
struct Ids {
    connection: String,
    job: String,
    /// An item a carry_forward run left open, resolved by the scenario.
    item: String,
    /// The carry_forward run, whose results the scenario deletes.
    carry_job: String,
}

fn example_csv() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/invoices.csv");
    format!(
        "file://{}",
        path.canonicalize().expect("examples/invoices.csv").display()
    )
}

fn recipe_body(name: &str, left: &str, right: &str) -> Value {
    json!({
        "name": name,
        "left": {"source": left, "key": ["id"]},
        "right": {"source": right, "key": ["id"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01}],
    })
}

/// `url` with a password, so what Kalla stores for it is a sealed secret.
fn with_password(url: &str) -> String {
    let mut url = url::Url::parse(url).expect("a URL");
    url.set_password(Some("not-needed-by-trust-auth"))
        .expect("a password slot");
    url.to_string()
}

#[tokio::test]
async fn every_documented_error_status_of_every_route_is_answered() {
    let db = TestDatabase::create().await;
    db.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, amount numeric(12,2));
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 100) g;
         CREATE VIEW boom AS SELECT id, 1 / (id + 1000) AS x FROM items;
         CREATE FUNCTION slow_id(bigint) RETURNS bigint LANGUAGE sql VOLATILE
           AS 'SELECT pg_sleep(0.01); SELECT $1';
         CREATE VIEW slow AS SELECT slow_id(g) AS id FROM generate_series(1, 3000) g;",
    )
    .await;
    let metadata = PgCluster::start();
    let metadata_url = metadata.create_database("kalla_metadata").await;
    let runner = Runner::start_in(
        TempDir::new().unwrap(),
        Some(&metadata_url),
        &["--job-concurrency", "1", "--job-queue-capacity", "1"],
    )
    .await;
    let mut driven = Driven::new(&runner).await;
    let mut ids = Ids::default();

    // What the scenario works on: sources (one whose server nobody runs), a connection, a
    // recipe, and a finished job with results.
    let items = with_password(&db.source_uri("public.items"));
    runner.register_source("items", &items).await;
    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/nowhere?table=public.t",
        free_port()
    );
    runner.register_source("gone", &nowhere).await;
    runner
        .register_source("slow", &db.source_uri("public.slow"))
        .await;
    let connection = runner.create_connection("shop", &with_password(&db.url)).await;
    ids.connection = connection["id"].as_str().unwrap().to_string();
    let id = ids.connection.clone();
    let secret = json!({"name": "s1", "value": "not-needed-by-trust-auth"});
    succeed(&runner, &CREATE_SECRET, &[], Some(secret)).await;
    let by_secret = json!({"alias": "items_by_secret", "uri": db.source_uri("public.items"), "secret": "s1"});
    succeed(&runner, &CREATE_SOURCE, &[], Some(by_secret)).await;
    succeed(
        &runner,
        &CREATE_RECIPE,
        &[],
        Some(recipe_body("r1", "items", "items")),
    )
    .await;
    succeed(
        &runner,
        &CREATE_RECIPE,
        &[],
        Some(recipe_body("r2", "items", "items")),
    )
    .await;
    ids.job = runner
        .submit_job(json!({"type": "recon", "recipe_id": "r1"}))
        .await;
    let job = runner.wait_for_job(&ids.job, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    succeed(&runner, &CREATE_SCHEDULE, &[], Some(schedule_body("sch1", "r1"))).await;
    // A carry_forward recipe whose run leaves the items past 90 open, one of them resolved below.
    let mut carried = recipe_body("r_carry", "items", "items");
    carried["carry_forward"] = json!(true);
    carried["right"]["filters"] = json!([{"column": "id", "op": "lte", "value": "90"}]);
    succeed(&runner, &CREATE_RECIPE, &[], Some(carried)).await;
    ids.carry_job = runner
        .submit_job(json!({"type": "recon", "recipe_id": "r_carry"}))
        .await;
    let job = runner
        .wait_for_job(&ids.carry_job, Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let page = succeed(&runner, &OPEN_ITEMS, &["r_carry"], None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(10), "{page}");
    ids.item = page["items"][0]["id"].as_str().unwrap().to_string();

    // 401: no token.
    for (route, parameters, body) in protected_routes(&ids) {
        let mut request = runner.http().request(
            route.0.clone(),
            format!("{}{}", runner.base_url, path(&route, &parameters)),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("runner answers");
        let status = response.status();
        let answer: Value = response.json().await.expect("a JSON error");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{route:?}: {answer}");
        driven.record(&route, status, answer["error"]["code"].as_str());
    }

    // 400 `invalid_request` and 413: a malformed or oversized body, a bad query parameter, a path
    // segment that is not UTF-8.
    let oversized = json!({"padding": "x".repeat(2 * 1024 * 1024)});
    for (route, parameters, body) in protected_routes(&ids) {
        let target = path(&route, &parameters);
        if body.is_some() {
            let (status, answer) = runner
                .call(route.0.clone(), &target, Some(json!({"no_such_field": 1})))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{route:?}: {answer}");
            driven.record(&route, status, answer["error"]["code"].as_str());
            // The runner closes the connection after refusing a body it did not read: a client of
            // its own, so the next request does not find its pooled connection closed.
            let response = reqwest::Client::new()
                .request(route.0.clone(), format!("{}{target}", runner.base_url))
                .bearer_auth(&runner.token)
                .json(&oversized)
                .send()
                .await
                .expect("runner answers");
            let status = response.status();
            let answer: Value = response.json().await.expect("a JSON error");
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{route:?}: {answer}");
            driven.record(&route, status, answer["error"]["code"].as_str());
        }
        if !parameters.is_empty() {
            let mut bad = parameters.clone();
            bad[0] = "%FF";
            let (status, answer) = runner.call(route.0.clone(), &path(&route, &bad), None).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{route:?} with a non-UTF-8 segment: {answer}"
            );
            driven.record(&route, status, answer["error"]["code"].as_str());
        }
    }
    for (route, query) in [
        (&JOBS, "status=sideways"),
        (&CATALOG, "nonsense=1"),
        (&REFRESH, "data=maybe"),
        (&AUDIT, "nonsense=1"),
    ] {
        let parameters = if route == &REFRESH {
            vec![id.as_str()]
        } else {
            vec![]
        };
        let target = format!("{}?{query}", path(route, &parameters));
        let (status, answer) = runner.call(route.0.clone(), &target, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{target}: {answer}");
        driven.record(route, status, answer["error"]["code"].as_str());
    }

    // 403: a viewer's token on every route that needs more; 400 and 409 of tokens and the audit
    // log.
    let (status, viewer) = runner
        .call(
            Method::POST,
            "/api/tokens",
            Some(json!({"name": "t1", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let viewer = viewer["token"].as_str().expect("a token").to_string();
    for (route, parameters, body) in protected_routes(&ids) {
        let target = path(&route, &parameters);
        let (status, answer) = runner
            .call_as(Some(&viewer), route.0.clone(), &target, body)
            .await;
        if status != StatusCode::FORBIDDEN {
            assert!(status.is_success(), "{route:?} as a viewer: {status} {answer}");
            continue;
        }
        driven.record(&route, status, answer["error"]["code"].as_str());
    }
    let token = |name: &str| Some(json!({"name": name, "role": "viewer"}));
    expect(
        &mut driven,
        &runner,
        &CREATE_TOKEN,
        &[],
        token("t1"),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let invalid = StatusCode::BAD_REQUEST;
    expect(
        &mut driven,
        &runner,
        &CREATE_TOKEN,
        &[],
        token("bootstrap"),
        invalid,
        "invalid_name",
    )
    .await;
    let target = "/api/audit?limit=0";
    let (status, answer) = runner.call(Method::GET, target, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_limit", "{answer}");
    driven.record(&AUDIT, status, Some("invalid_limit"));

    // 404: ids and names nobody made.
    let missing = StatusCode::NOT_FOUND;
    expect(
        &mut driven,
        &runner,
        &REVOKE_TOKEN,
        &["nobody"],
        None,
        missing,
        "not_found",
    )
    .await;
    for route in [&SOURCE, &DELETE_SOURCE] {
        expect(
            &mut driven,
            &runner,
            route,
            &["nobody"],
            None,
            missing,
            "not_found",
        )
        .await;
    }
    expect(
        &mut driven,
        &runner,
        &PREVIEW,
        &["nobody"],
        Some(json!({})),
        missing,
        "not_found",
    )
    .await;
    for route in [&CONNECTION, &DELETE_CONNECTION, &HEALTH, &REFRESH, &PURGE] {
        expect(
            &mut driven,
            &runner,
            route,
            &["conn_nobody"],
            None,
            missing,
            "not_found",
        )
        .await;
    }
    for route in [&REFRESH_TABLE, &PURGE_TABLE] {
        expect(
            &mut driven,
            &runner,
            route,
            &[&id, "public", "nothing"],
            None,
            missing,
            "not_found",
        )
        .await;
    }
    let target = "/api/information_schema?connection_id=conn_nobody";
    let (status, answer) = runner.call(Method::GET, target, None).await;
    assert_eq!(status, missing, "{answer}");
    driven.record(&CATALOG, status, answer["error"]["code"].as_str());
    for route in [&RECIPE, &DELETE_RECIPE] {
        expect(
            &mut driven,
            &runner,
            route,
            &["rcp_nobody"],
            None,
            missing,
            "not_found",
        )
        .await;
    }
    let recipe = Some(recipe_body("r3", "items", "items"));
    expect(
        &mut driven,
        &runner,
        &REPLACE_RECIPE,
        &["rcp_nobody"],
        recipe,
        missing,
        "not_found",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &OPEN_ITEMS,
        &["rcp_nobody"],
        None,
        missing,
        "not_found",
    )
    .await;
    let note = |note: &str| Some(json!({"note": note}));
    for parameters in [["rcp_nobody", ids.item.as_str()], ["r_carry", "oi_nobody"]] {
        expect(
            &mut driven,
            &runner,
            &RESOLVE_ITEM,
            &parameters,
            note("settled"),
            missing,
            "not_found",
        )
        .await;
    }
    let by_unknown_recipe = Some(json!({"type": "recon", "recipe_id": "rcp_nobody"}));
    expect(
        &mut driven,
        &runner,
        &SUBMIT,
        &[],
        by_unknown_recipe,
        missing,
        "not_found",
    )
    .await;
    for route in [&JOB, &CANCEL, &DELETE_RESULTS] {
        expect(
            &mut driven,
            &runner,
            route,
            &["job_nobody"],
            None,
            missing,
            "not_found",
        )
        .await;
    }
    expect(
        &mut driven,
        &runner,
        &RESULTS,
        &["job_nobody", "matched"],
        None,
        missing,
        "not_found",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &RESULTS,
        &[&ids.job, "nothing"],
        None,
        missing,
        "unknown_output",
    )
    .await;
    let sql = Some(json!({"sql": "SELECT * FROM nowhere"}));
    expect(&mut driven, &runner, &QUERY, &[], sql, missing, "unknown_table").await;
    for (route, body) in [
        (&SECRET, None),
        (&UPDATE_SECRET, Some(json!({"value": "v"}))),
        (&DELETE_SECRET, None),
        (&UPDATE_SOURCE, Some(json!({"secret": "s1"}))),
    ] {
        expect(
            &mut driven,
            &runner,
            route,
            &["nobody"],
            body,
            missing,
            "not_found",
        )
        .await;
    }
    let password = Some(json!({"password": "p"}));
    expect(
        &mut driven,
        &runner,
        &UPDATE_CONNECTION,
        &["conn_nobody"],
        password,
        missing,
        "not_found",
    )
    .await;
    let unknown_secret =
        Some(json!({"alias": "x", "uri": db.source_uri("public.items"), "secret": "nobody"}));
    expect(
        &mut driven,
        &runner,
        &CREATE_SOURCE,
        &[],
        unknown_secret,
        missing,
        "not_found",
    )
    .await;
    let unknown_secret =
        Some(json!({"name": "x", "source_type": "postgres", "config": {"uri": db.url}, "secret": "nobody"}));
    expect(
        &mut driven,
        &runner,
        &CREATE_CONNECTION,
        &[],
        unknown_secret,
        missing,
        "not_found",
    )
    .await;

    // 400 and 409 of each route's own.
    let bad = StatusCode::BAD_REQUEST;
    let taken = StatusCode::CONFLICT;
    let source = |alias: &str, uri: &str| Some(json!({"alias": alias, "uri": uri}));
    expect(
        &mut driven,
        &runner,
        &CREATE_SOURCE,
        &[],
        source("1st", &items),
        bad,
        "invalid_alias",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &CREATE_SOURCE,
        &[],
        source("items", &items),
        taken,
        "conflict",
    )
    .await;
    let condition = Some(json!({"conditions": [{"column": "nothing", "op": "eq", "value": "1"}]}));
    expect(
        &mut driven,
        &runner,
        &PREVIEW,
        &["items"],
        condition,
        bad,
        "unknown_column",
    )
    .await;
    let config =
        |name: &str| Some(json!({"name": name, "source_type": "postgres", "config": {"uri": db.url}}));
    expect(
        &mut driven,
        &runner,
        &CREATE_CONNECTION,
        &[],
        config("2nd-shop"),
        bad,
        "invalid_name",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &CREATE_CONNECTION,
        &[],
        config("shop"),
        taken,
        "conflict",
    )
    .await;
    let sql = Some(json!({"sql": "SELEC nothing"}));
    expect(&mut driven, &runner, &QUERY, &[], sql, bad, "invalid_sql").await;
    let unknown_column = Some(recipe_body("r4", "items", "nobody"));
    let dry_run = Some(json!({"recipe": recipe_body("r4", "items", "nobody")}));
    expect(
        &mut driven,
        &runner,
        &DRY_RUN,
        &[],
        dry_run,
        bad,
        "invalid_recipe",
    )
    .await;
    let too_many = Some(json!({"recipe": recipe_body("r4", "items", "items"), "sample_rows": 1001}));
    expect(
        &mut driven,
        &runner,
        &DRY_RUN,
        &[],
        too_many,
        bad,
        "invalid_request",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &CREATE_RECIPE,
        &[],
        unknown_column.clone(),
        bad,
        "invalid_recipe",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &REPLACE_RECIPE,
        &["r2"],
        unknown_column,
        bad,
        "invalid_recipe",
    )
    .await;
    let existing_name = Some(recipe_body("r1", "items", "items"));
    expect(
        &mut driven,
        &runner,
        &CREATE_RECIPE,
        &[],
        existing_name.clone(),
        taken,
        "conflict",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &REPLACE_RECIPE,
        &["r2"],
        existing_name,
        taken,
        "conflict",
    )
    .await;
    let recipe = Some(json!({"type": "recon", "recipe": recipe_body("r5", "items", "nobody")}));
    expect(&mut driven, &runner, &SUBMIT, &[], recipe, bad, "invalid_recipe").await;
    let mut with_param = recipe_body("r6", "items", "items");
    with_param["params"] = json!([{"name": "day", "type": "date"}]);
    let missing_param = Some(json!({"type": "recon", "recipe": with_param}));
    expect(
        &mut driven,
        &runner,
        &SUBMIT,
        &[],
        missing_param,
        bad,
        "invalid_params",
    )
    .await;
    // Schedules: a bad timing, a parameter the recipe does not take, a recipe or a schedule
    // nobody made, a name taken, one Idempotency-Key for two bodies.
    let mut bad_cron = schedule_body("s_bad", "r1");
    bad_cron["cron"] = json!("61 * * * *");
    expect(
        &mut driven,
        &runner,
        &CREATE_SCHEDULE,
        &[],
        Some(bad_cron),
        bad,
        "invalid_schedule",
    )
    .await;
    let mut bad_param = schedule_body("s_bad", "r1");
    bad_param["params"] = json!({"nope": "1"});
    expect(
        &mut driven,
        &runner,
        &CREATE_SCHEDULE,
        &[],
        Some(bad_param),
        bad,
        "invalid_params",
    )
    .await;
    let nobodys = Some(schedule_body("s_bad", "nobody"));
    expect(
        &mut driven,
        &runner,
        &CREATE_SCHEDULE,
        &[],
        nobodys,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let not_a_tick = Some(json!({"at": "2026-01-01T00:30:00Z"}));
    expect(
        &mut driven,
        &runner,
        &FIRE_TICK,
        &["sch1"],
        not_a_tick,
        bad,
        "invalid_request",
    )
    .await;
    for route in [
        &SCHEDULE,
        &PAUSE_SCHEDULE,
        &RESUME_SCHEDULE,
        &DELETE_SCHEDULE,
        &FIRE_TICK,
    ] {
        let body = (route == &FIRE_TICK).then(|| json!({"at": "2026-01-01"}));
        expect(
            &mut driven,
            &runner,
            route,
            &["nobody"],
            body,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let taken_name = Some(schedule_body("sch1", "r1"));
    expect(
        &mut driven,
        &runner,
        &CREATE_SCHEDULE,
        &[],
        taken_name,
        taken,
        "conflict",
    )
    .await;
    let (status, first) = runner
        .call_with_key(
            Method::POST,
            "/api/schedules",
            "once",
            schedule_body("s_once", "r1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = runner
        .call_with_key(
            Method::POST,
            "/api/schedules",
            "once",
            schedule_body("s_once", "r1"),
        )
        .await;
    assert_eq!(
        (status, &again["id"]),
        (StatusCode::CREATED, &first["id"]),
        "the same key and body: the same schedule"
    );
    let (status, answer) = runner
        .call_with_key(
            Method::POST,
            "/api/schedules",
            "once",
            schedule_body("s_twice", "r1"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "idempotency_conflict", "{answer}");
    driven.record(&CREATE_SCHEDULE, status, answer["error"]["code"].as_str());

    // 409: one Idempotency-Key, two bodies.
    let query = |sql: &str| json!({"type": "query", "sql": sql});
    let (status, first) = runner
        .call_with_key(Method::POST, "/api/jobs", "once", query("SELECT 1 AS one"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, answer) = runner
        .call_with_key(Method::POST, "/api/jobs", "once", query("SELECT 2 AS two"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "idempotency_conflict", "{answer}");
    driven.record(&SUBMIT, status, answer["error"]["code"].as_str());
    let job = runner
        .wait_for_job(first["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    for query in ["limit=0", "state=forgotten"] {
        let (status, answer) = runner
            .call(
                Method::GET,
                &format!("/api/recipes/r_carry/open-items?{query}"),
                None,
            )
            .await;
        assert_eq!(status, bad, "{answer}");
        driven.record(&OPEN_ITEMS, status, answer["error"]["code"].as_str());
    }
    expect(
        &mut driven,
        &runner,
        &RESOLVE_ITEM,
        &["r_carry", &ids.item],
        note(" "),
        bad,
        "invalid_request",
    )
    .await;
    succeed(&runner, &RESOLVE_ITEM, &["r_carry", &ids.item], note("settled")).await;
    expect(
        &mut driven,
        &runner,
        &RESOLVE_ITEM,
        &["r_carry", &ids.item],
        note("settled again"),
        taken,
        "item_closed",
    )
    .await;
    for (query, status) in [
        ("limit=0", bad),
        ("since=yesterday", bad),
        ("recipe=rcp_nobody", StatusCode::NOT_FOUND),
    ] {
        let (answered, answer) = runner
            .call(Method::GET, &format!("/api/jobs?{query}"), None)
            .await;
        assert_eq!(answered, status, "{query}: {answer}");
        driven.record(&JOBS, answered, answer["error"]["code"].as_str());
    }
    expect(
        &mut driven,
        &runner,
        &CANCEL,
        &[&ids.job],
        None,
        taken,
        "job_finished",
    )
    .await;
    let secret = |name: &str, value: &str| Some(json!({"name": name, "value": value}));
    expect(
        &mut driven,
        &runner,
        &CREATE_SECRET,
        &[],
        secret("s1", "v"),
        taken,
        "conflict",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &CREATE_SECRET,
        &[],
        secret("1st", "v"),
        bad,
        "invalid_name",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &CREATE_SECRET,
        &[],
        secret("s2", ""),
        bad,
        "invalid_request",
    )
    .await;
    let empty = Some(json!({"value": ""}));
    expect(
        &mut driven,
        &runner,
        &UPDATE_SECRET,
        &["s1"],
        empty,
        bad,
        "invalid_request",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &DELETE_SECRET,
        &["s1"],
        None,
        taken,
        "conflict",
    )
    .await;
    for (route, name) in [(&UPDATE_SOURCE, "items"), (&UPDATE_CONNECTION, id.as_str())] {
        let neither = Some(json!({}));
        expect(
            &mut driven,
            &runner,
            route,
            &[name],
            neither,
            bad,
            "invalid_request",
        )
        .await;
    }

    // 403 `not_allowed`: a file source whose file became a link out of the file roots.
    let files = TempDir::new().unwrap();
    let linked = files.path().join("linked.csv");
    std::fs::write(&linked, "id\n1\n").unwrap();
    let uri = url::Url::from_file_path(&linked).unwrap().to_string();
    succeed(&runner, &CREATE_SOURCE, &[], source("linked", &uri)).await;
    std::fs::remove_file(&linked).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &linked).unwrap();
    let refused = StatusCode::FORBIDDEN;
    expect(
        &mut driven,
        &runner,
        &PREVIEW,
        &["linked"],
        Some(json!({})),
        refused,
        "not_allowed",
    )
    .await;

    // 502: a source whose server nobody runs, a table dropped after it was cached, results gone.
    let gateway = StatusCode::BAD_GATEWAY;
    expect(
        &mut driven,
        &runner,
        &PREVIEW,
        &["gone"],
        Some(json!({})),
        gateway,
        "source_unavailable",
    )
    .await;
    let sql = Some(json!({"sql": "SELECT count(*) FROM gone"}));
    expect(&mut driven, &runner, &QUERY, &[], sql, gateway, "query_failed").await;
    let unreachable = recipe_body("r6", "items", "gone");
    expect(
        &mut driven,
        &runner,
        &CREATE_RECIPE,
        &[],
        Some(unreachable.clone()),
        gateway,
        "query_failed",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &REPLACE_RECIPE,
        &["r2"],
        Some(unreachable.clone()),
        gateway,
        "query_failed",
    )
    .await;
    let dry_run = Some(json!({"recipe": unreachable.clone()}));
    expect(
        &mut driven,
        &runner,
        &DRY_RUN,
        &[],
        dry_run,
        gateway,
        "query_failed",
    )
    .await;
    let job = Some(json!({"type": "recon", "recipe": unreachable}));
    expect(&mut driven, &runner, &SUBMIT, &[], job, gateway, "query_failed").await;
    // A cached view that now fails when read (same columns, so discovery keeps it).
    let boom = [id.as_str(), "public", "boom"];
    succeed(&runner, &REFRESH_TABLE, &boom, None).await;
    db.execute("CREATE OR REPLACE VIEW boom AS SELECT id, 1 / (id - 5) AS x FROM items")
        .await;
    expect(
        &mut driven,
        &runner,
        &REFRESH_TABLE,
        &boom,
        None,
        gateway,
        "refresh_failed",
    )
    .await;
    let refresh_all = format!("{}?data=true", path(&REFRESH, &[&id]));
    let (status, answer) = runner.call(Method::POST, &refresh_all, None).await;
    assert_eq!(status, gateway, "{answer}");
    assert_eq!(answer["error"]["code"], "refresh_failed", "{answer}");
    driven.record(&REFRESH, status, Some("refresh_failed"));
    succeed(&runner, &PURGE_TABLE, &boom, None).await;
    // A result file that is not parquet any more.
    let output_dir = runner
        .data_dir
        .path()
        .join("results")
        .join(&ids.job)
        .join("matched");
    let part = kalla_e2e::files_under(&output_dir)
        .into_iter()
        .find(|file| file.extension().is_some_and(|e| e == "parquet"))
        .expect("a parquet file of the matched output");
    let intact = std::fs::read(&part).unwrap();
    std::fs::write(&part, b"not parquet").unwrap();
    expect(
        &mut driven,
        &runner,
        &RESULTS,
        &[&ids.job, "matched"],
        None,
        gateway,
        "results_unavailable",
    )
    .await;
    std::fs::write(&part, intact).unwrap();
    succeed(&runner, &RESULTS, &[&ids.job, "matched"], None).await;

    // 409: a refresh another runner holds the lease of, and results of a job that failed.
    let lease = sqlx::PgPool::connect(&metadata_url)
        .await
        .expect("the metadata DB");
    sqlx::query(
        "UPDATE tables SET refresh_lease = 'another-runner', refresh_lease_expires_at = '9999-12-31T00:00:00Z' \
         WHERE table_name = 'items'",
    )
    .execute(&lease)
    .await
    .expect("take the lease");
    let running = StatusCode::CONFLICT;
    let items_table = [id.as_str(), "public", "items"];
    expect(
        &mut driven,
        &runner,
        &REFRESH_TABLE,
        &items_table,
        None,
        running,
        "refresh_running",
    )
    .await;
    let sql = Some(json!({"sql": "SELECT count(*) FROM shop.public.items"}));
    expect(&mut driven, &runner, &QUERY, &[], sql, running, "refresh_running").await;
    sqlx::query("UPDATE tables SET refresh_lease = NULL, refresh_lease_expires_at = NULL")
        .execute(&lease)
        .await
        .expect("release the lease");
    succeed(&runner, &REFRESH_TABLE, &items_table, None).await;
    sqlx::query(
        "UPDATE tables SET refresh_lease = 'another-runner', refresh_lease_expires_at = '9999-12-31T00:00:00Z' \
         WHERE table_name = 'items'",
    )
    .execute(&lease)
    .await
    .expect("take the lease again");
    let (status, answer) = runner.call(Method::POST, &refresh_all, None).await;
    assert_eq!(status, running, "{answer}");
    driven.record(&REFRESH, status, answer["error"]["code"].as_str());
    sqlx::query("UPDATE tables SET refresh_lease = NULL, refresh_lease_expires_at = NULL")
        .execute(&lease)
        .await
        .expect("release the lease");
    let failed = runner
        .submit_job(json!({"type": "query", "sql": "SELECT count(*) FROM gone"}))
        .await;
    let job = runner.wait_for_job(&failed, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "failed", "{job}");
    expect(
        &mut driven,
        &runner,
        &RESULTS,
        &[&failed, "result"],
        None,
        running,
        "no_results",
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &DELETE_RESULTS,
        &[&failed],
        None,
        running,
        "no_results",
    )
    .await;
    succeed(&runner, &DELETE_RESULTS, &[&ids.carry_job], None).await;
    expect(
        &mut driven,
        &runner,
        &RESULTS,
        &[&ids.carry_job, "matched"],
        None,
        StatusCode::GONE,
        "results_deleted",
    )
    .await;

    // 429: one job runs (slowly), one waits, and the queue of one is full.
    let slow = json!({"type": "query", "sql": "SELECT count(*) FROM slow"});
    let running_job = runner.start_job(slow.clone()).await;
    let waiting_job = runner.submit_job(slow.clone()).await;
    let full = expect(
        &mut driven,
        &runner,
        &SUBMIT,
        &[],
        Some(slow),
        StatusCode::TOO_MANY_REQUESTS,
        "queue_full",
    )
    .await;
    assert!(
        full["error"]["message"].as_str().unwrap().contains("full"),
        "{full}"
    );
    let tick = Some(json!({"at": "2025-01-01"}));
    expect(
        &mut driven,
        &runner,
        &FIRE_TICK,
        &["sch1"],
        tick,
        StatusCode::TOO_MANY_REQUESTS,
        "queue_full",
    )
    .await;
    for job in [&waiting_job, &running_job] {
        succeed(&runner, &CANCEL, &[job], None).await;
    }
    for job in [&waiting_job, &running_job] {
        runner.wait_for_job(job, Duration::from_secs(60)).await;
    }

    // 500 `secret_unreadable`: a runner whose key is not the one the secrets were sealed with.
    drop(runner);
    let other_key = kalla_e2e::cluster::cluster_key();
    let runner = Runner::start_in(
        TempDir::new().unwrap(),
        Some(&metadata_url),
        &["--secret-key", &other_key],
    )
    .await;
    let unsealable = StatusCode::INTERNAL_SERVER_ERROR;
    let secret = "secret_unreadable";
    expect(
        &mut driven,
        &runner,
        &PREVIEW,
        &["items"],
        Some(json!({})),
        unsealable,
        secret,
    )
    .await;
    expect(&mut driven, &runner, &HEALTH, &[&id], None, unsealable, secret).await;
    expect(
        &mut driven,
        &runner,
        &REFRESH_TABLE,
        &items_table,
        None,
        unsealable,
        secret,
    )
    .await;
    let (status, answer) = runner.call(Method::POST, &refresh_all, None).await;
    assert_eq!(status, unsealable, "{answer}");
    driven.record(&REFRESH, status, answer["error"]["code"].as_str());
    let sql = Some(json!({"sql": "SELECT count(*) FROM items"}));
    expect(&mut driven, &runner, &QUERY, &[], sql, unsealable, secret).await;
    let recipe = recipe_body("r7", "items", "items");
    expect(
        &mut driven,
        &runner,
        &CREATE_RECIPE,
        &[],
        Some(recipe.clone()),
        unsealable,
        secret,
    )
    .await;
    expect(
        &mut driven,
        &runner,
        &REPLACE_RECIPE,
        &["r2"],
        Some(recipe),
        unsealable,
        secret,
    )
    .await;
    let dry_run = Some(json!({"recipe": recipe_body("r7", "items", "items")}));
    expect(&mut driven, &runner, &DRY_RUN, &[], dry_run, unsealable, secret).await;
    let job = Some(json!({"type": "recon", "recipe_id": "r1"}));
    expect(&mut driven, &runner, &SUBMIT, &[], job, unsealable, secret).await;
    let tick = Some(json!({"at": "2024-01-01"}));
    expect(
        &mut driven,
        &runner,
        &FIRE_TICK,
        &["sch1"],
        tick,
        unsealable,
        secret,
    )
    .await;

    // 503: the metadata DB stopped. Every protected route answers 503 `metadata_unavailable`
    // (each waits for its pool's timeout, so they are asked all at once), and /ready says so.
    // The configured token says who it is without the metadata DB; a named one needs it.
    let body = json!({"name": "asks_whoami", "role": "viewer"});
    let (status, named) = runner.call(Method::POST, "/api/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    let named = named["token"].as_str().expect("a token").to_string();
    metadata.stop_server("fast");
    let routes = protected_routes(&ids)
        .into_iter()
        .filter(|(route, ..)| route != &WHOAMI);
    let answers = futures::future::join_all(routes.map(|(route, parameters, body)| {
        let target = path(&route, &parameters);
        let call = runner.spawn_call(route.0.clone(), &target, body);
        async move { (route, call.await.expect("the request task")) }
    }))
    .await;
    for (route, (status, answer)) in answers {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{route:?}: {answer}");
        assert_eq!(
            answer["error"]["code"], "metadata_unavailable",
            "{route:?}: {answer}"
        );
        driven.record(&route, status, Some("metadata_unavailable"));
    }
    let (status, answer) = runner.call_as(Some(&named), Method::GET, WHOAMI.1, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "whoami: {answer}");
    assert_eq!(answer["error"]["code"], "metadata_unavailable", "{answer}");
    driven.record(&WHOAMI, status, Some("metadata_unavailable"));
    let (status, answer) = runner.call(Method::GET, "/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    driven.record(&READY, status, None);

    let unprovoked = driven.unprovoked();
    assert!(
        unprovoked.is_empty(),
        "documented error statuses no step of this test provoked:\n{}",
        unprovoked.join("\n")
    );
}
