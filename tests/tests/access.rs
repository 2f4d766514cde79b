//! Who may do what, against a real runner: each role gets exactly the routes of the table below
//! (which must list every route the OpenAPI document protects, with the role it documents),
//! tokens stop working when they expire or are revoked, and the audit log tells who did what,
//! refusals included, without a secret in it.

use std::collections::BTreeMap;
use std::time::Duration;

use kalla_e2e::runner::{Runner, concrete_path};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VIEWER: u8 = 0;
const OPERATOR: u8 = 1;
const ADMIN: u8 = 2;
const ROLES: [(&str, u8); 3] = [("viewer", VIEWER), ("operator", OPERATOR), ("admin", ADMIN)];

/// Every protected route and the least role that may call it, as the issue asks: viewers read,
/// preview and fetch results; operators also run recipes, jobs, schedules, refreshes and SQL;
/// admins also manage tokens, connections, sources and secrets, follow key rotations and read the
/// audit log.
const ROUTES: &[(&str, &str, u8)] = &[
    ("GET", "/api/sources", VIEWER),
    ("GET", "/api/sources/{alias}", VIEWER),
    ("POST", "/api/sources/{alias}/load-scoped", VIEWER),
    ("GET", "/api/connections", VIEWER),
    ("GET", "/api/connections/{id}", VIEWER),
    ("GET", "/api/connections/{id}/health", VIEWER),
    ("GET", "/api/information_schema", VIEWER),
    ("GET", "/api/recipes", VIEWER),
    ("GET", "/api/recipes/{id}", VIEWER),
    ("GET", "/api/recipes/{id}/open-items", VIEWER),
    ("GET", "/api/jobs", VIEWER),
    ("GET", "/api/jobs/{id}", VIEWER),
    ("GET", "/api/jobs/{id}/results/{output}", VIEWER),
    ("GET", "/api/schedules", VIEWER),
    ("GET", "/api/schedules/{id}", VIEWER),
    ("GET", "/api/whoami", VIEWER),
    ("POST", "/api/connections/{id}/refresh", OPERATOR),
    ("DELETE", "/api/connections/{id}/cache", OPERATOR),
    (
        "POST",
        "/api/connections/{id}/tables/{schema}/{table}/refresh",
        OPERATOR,
    ),
    (
        "DELETE",
        "/api/connections/{id}/tables/{schema}/{table}/cache",
        OPERATOR,
    ),
    ("POST", "/api/query", OPERATOR),
    ("POST", "/api/recipes", OPERATOR),
    ("POST", "/api/dry-runs", OPERATOR),
    ("PUT", "/api/recipes/{id}", OPERATOR),
    ("DELETE", "/api/recipes/{id}", OPERATOR),
    ("POST", "/api/recipes/{id}/open-items/{item}/resolve", OPERATOR),
    ("POST", "/api/jobs", OPERATOR),
    ("DELETE", "/api/jobs/{id}", OPERATOR),
    ("DELETE", "/api/jobs/{id}/results", OPERATOR),
    ("POST", "/api/schedules", OPERATOR),
    ("POST", "/api/schedules/{id}/pause", OPERATOR),
    ("POST", "/api/schedules/{id}/resume", OPERATOR),
    ("DELETE", "/api/schedules/{id}", OPERATOR),
    ("POST", "/api/schedules/{id}/ticks", OPERATOR),
    ("POST", "/api/sources", ADMIN),
    ("PATCH", "/api/sources/{alias}", ADMIN),
    ("DELETE", "/api/sources/{alias}", ADMIN),
    ("POST", "/api/connections", ADMIN),
    ("PATCH", "/api/connections/{id}", ADMIN),
    ("DELETE", "/api/connections/{id}", ADMIN),
    ("POST", "/api/secrets", ADMIN),
    ("GET", "/api/secrets", ADMIN),
    ("GET", "/api/secrets/{name}", ADMIN),
    ("PUT", "/api/secrets/{name}", ADMIN),
    ("DELETE", "/api/secrets/{name}", ADMIN),
    ("GET", "/api/keys", ADMIN),
    ("POST", "/api/keys/reseal", ADMIN),
    ("POST", "/api/tokens", ADMIN),
    ("GET", "/api/tokens", ADMIN),
    ("DELETE", "/api/tokens/{name}", ADMIN),
    ("GET", "/api/audit", ADMIN),
];

/// `(METHOD, pattern)` → the role name the document gives each protected operation.
async fn documented_roles(runner: &Runner) -> BTreeMap<(String, String), String> {
    let (status, document) = runner.call_as(None, Method::GET, "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut roles = BTreeMap::new();
    for (pattern, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if operation["security"].is_null() {
                continue;
            }
            let role = operation["x-kalla-role"].as_str().unwrap_or("(none)").to_string();
            roles.insert((method.to_uppercase(), pattern.clone()), role);
        }
    }
    roles
}

/// Makes a token of `role` named `name` with the runner's (bootstrap, admin) token; its value.
async fn issue(runner: &Runner, name: &str, role: &str, expires_in_secs: Option<u64>) -> String {
    let body = json!({"name": name, "role": role, "expires_in_secs": expires_in_secs});
    let (status, answer) = runner.call(Method::POST, "/api/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["role"], role, "{answer}");
    answer["token"]
        .as_str()
        .expect("the value, shown once")
        .to_string()
}

#[tokio::test]
async fn each_role_gets_exactly_its_routes() {
    let runner = Runner::start(None).await;
    let documented = documented_roles(&runner).await;
    let table: BTreeMap<(String, String), String> = ROUTES
        .iter()
        .map(|(method, pattern, least)| {
            let role = ROLES.iter().find(|(_, rank)| rank == least).unwrap().0;
            ((method.to_string(), pattern.to_string()), role.to_string())
        })
        .collect();
    for (route, role) in &documented {
        assert_eq!(
            table.get(route),
            Some(role),
            "{route:?}: the document says {role}; the test's table must say the same"
        );
    }
    assert_eq!(
        table.len(),
        documented.len(),
        "the table lists routes the document lacks"
    );

    let mut tokens = Vec::new();
    for (role, rank) in ROLES {
        tokens.push((
            issue(&runner, &format!("{role}_user"), role, None).await,
            role,
            rank,
        ));
    }
    for (method, pattern, least) in ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let path = concrete_path(pattern);
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        let (status, answer) = runner.call_as(None, method.clone(), &path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token: {answer}"
        );
        for (token, role, rank) in &tokens {
            let (status, answer) = runner
                .call_as(Some(token), method.clone(), &path, body.clone())
                .await;
            if rank >= least {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{method} {path} as a {role}: {status} {answer}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as a {role}: {answer}"
                );
                assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains(&format!("{role}_user")), "{message}");
            }
        }
    }

    for (token, role, _) in &tokens {
        let (status, caller) = runner
            .call_as(Some(token), Method::GET, "/api/whoami", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{caller}");
        assert_eq!(caller, json!({"name": format!("{role}_user"), "role": role}));
    }

    let (status, listed) = runner.call(Method::GET, "/api/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = listed.to_string();
    for (token, role, _) in &tokens {
        assert!(listed.contains(&format!("{role}_user")), "{listed}");
        assert!(
            !listed.contains(token.as_str()),
            "a token's value is shown only once"
        );
    }
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let runner = Runner::start(None).await;
    let brief = issue(&runner, "brief", "viewer", Some(1)).await;
    let kept = issue(&runner, "kept", "operator", None).await;
    let read = |token: String| {
        let runner = &runner;
        async move {
            runner
                .call_as(Some(&token), Method::GET, "/api/sources", None)
                .await
        }
    };
    assert_eq!(read(brief.clone()).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, answer) = read(brief).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"brief\" has expired"),
        "{answer}"
    );

    assert_eq!(read(kept.clone()).await.0, StatusCode::OK);
    let (status, revoked) = runner.call(Method::DELETE, "/api/tokens/kept", None).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, answer) = read(kept).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"kept\" was revoked"),
        "{answer}"
    );

    // A revoked name stays taken, so the audit log's names stay unambiguous.
    let again = json!({"name": "kept", "role": "viewer"});
    let (status, answer) = runner.call(Method::POST, "/api/tokens", Some(again)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    for (name, code) in [("bootstrap", "invalid_name"), ("1x", "invalid_name")] {
        let body = json!({"name": name, "role": "viewer"});
        let (status, answer) = runner.call(Method::POST, "/api/tokens", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    let body = json!({"name": "x", "role": "superuser"});
    let (status, answer) = runner.call(Method::POST, "/api/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown role: {answer}");
}

#[tokio::test]
async fn the_audit_log_tells_who_did_what() {
    let runner = Runner::start(None).await;
    let analyst = issue(&runner, "analyst", "viewer", None).await;
    let ops = issue(&runner, "ops", "operator", None).await;
    let password = "s3cret-Pw-in-a-config";
    let connection = json!({
        "name": "shop",
        "source_type": "postgres",
        "config": {"host": "127.0.0.1", "port": 1, "database": "x", "user": "u", "password": password},
    });
    let (status, created) = runner
        .call(Method::POST, "/api/connections", Some(connection))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let connection_id = created["id"].as_str().unwrap().to_string();

    let recipe = json!({"name": "r", "left": {"source": "a", "key": ["id"]}, "right": {"source": "b", "key": ["id"]}, "rules": []});
    let (status, _) = runner
        .call_as(Some(&analyst), Method::POST, "/api/recipes", Some(recipe))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = runner
        .call_as(Some(&analyst), Method::GET, "/api/sources", None)
        .await;
    assert_eq!(status, StatusCode::OK, "a read is not recorded");
    let (status, _) = runner.call_as(None, Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = runner
        .call_as(Some("kalla_wrong"), Method::DELETE, "/api/sources/x", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = runner
        .call_as(Some(&ops), Method::DELETE, "/api/recipes/no_such", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let target = format!("/api/connections/{connection_id}");
    let (status, _) = runner.call(Method::DELETE, &target, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = runner
        .call_as(Some(&analyst), Method::GET, "/api/audit", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, entries) = runner.call(Method::GET, "/api/audit", None).await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    let text = entries.to_string();
    for secret in [password, analyst.as_str(), ops.as_str(), runner.token.as_str()] {
        assert!(!text.contains(secret), "the audit log holds a secret: {text}");
    }
    let seen: Vec<(Value, String, String, Value, i64, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["token_name"].clone(),
                e["method"].as_str().unwrap().to_string(),
                e["route"].as_str().unwrap().to_string(),
                e["resource"].clone(),
                e["status"].as_i64().unwrap(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let entry = |token: Option<&str>,
                 method: &str,
                 route: &str,
                 resource: Option<&str>,
                 status: i64,
                 outcome: &str| {
        (
            json!(token),
            method.to_string(),
            route.to_string(),
            json!(resource),
            status,
            outcome.to_string(),
        )
    };
    let expected = vec![
        entry(
            Some("bootstrap"),
            "POST",
            "/api/tokens",
            Some("analyst"),
            201,
            "succeeded",
        ),
        entry(
            Some("bootstrap"),
            "POST",
            "/api/tokens",
            Some("ops"),
            201,
            "succeeded",
        ),
        entry(
            Some("bootstrap"),
            "POST",
            "/api/connections",
            Some(&connection_id),
            201,
            "succeeded",
        ),
        entry(Some("analyst"), "POST", "/api/recipes", None, 403, "refused"),
        entry(None, "GET", "/api/sources", None, 401, "refused"),
        entry(None, "DELETE", "/api/sources/{alias}", Some("x"), 401, "refused"),
        entry(
            Some("ops"),
            "DELETE",
            "/api/recipes/{id}",
            Some("no_such"),
            404,
            "failed",
        ),
        entry(
            Some("bootstrap"),
            "DELETE",
            "/api/connections/{id}",
            Some(&connection_id),
            204,
            "succeeded",
        ),
        entry(Some("analyst"), "GET", "/api/audit", None, 403, "refused"),
    ];
    assert_eq!(seen, expected);

    let (_, refused) = runner.call(Method::GET, "/api/audit?outcome=refused", None).await;
    assert_eq!(refused.as_array().unwrap().len(), 4, "{refused}");
    let (_, by_ops) = runner.call(Method::GET, "/api/audit?token=ops", None).await;
    assert_eq!(by_ops.as_array().unwrap().len(), 1, "{by_ops}");

    // Pages of two walk the same entries, newest first.
    let mut paged = Vec::new();
    let mut before = String::new();
    loop {
        let (status, page) = runner
            .call(Method::GET, &format!("/api/audit?limit=2{before}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else { break };
        before = format!("&before={}", last["id"].as_str().unwrap());
        paged.extend(page.iter().map(|e| e["id"].clone()));
    }
    let all: Vec<Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    // The reads of the audit log above were not changes, so the log is as it was.
    assert_eq!(paged, all);
}

#[tokio::test]
async fn the_cli_makes_lists_and_revokes_tokens_and_reads_the_audit_log() {
    let runner = Runner::start(None).await;
    let value = runner.kalla(
        &runner.token,
        &["tokens", "create", "night_ops", "--role", "operator"],
    );
    let value = value.trim();
    assert!(value.starts_with("kalla_"), "{value}");
    let (status, _) = runner.call_as(Some(value), Method::GET, "/api/jobs", None).await;
    assert_eq!(status, StatusCode::OK, "the printed value is the token");
    let listed = runner.kalla(&runner.token, &["tokens", "list"]);
    assert!(
        listed.contains("night_ops") && listed.contains("operator"),
        "{listed}"
    );
    assert!(!listed.contains(value), "{listed}");
    runner.kalla(&runner.token, &["tokens", "revoke", "night_ops"]);
    let (status, _) = runner.call_as(Some(value), Method::GET, "/api/jobs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audit = runner.kalla(&runner.token, &["audit", "--outcome", "succeeded"]);
    assert!(
        audit.contains("/api/tokens/night_ops") && audit.contains("bootstrap"),
        "{audit}"
    );
    assert!(
        !audit.contains("refused"),
        "filtered to succeeded entries: {audit}"
    );
}
