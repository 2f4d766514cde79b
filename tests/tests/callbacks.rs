//! Job callbacks against a receiver in this test: every delivery carries a signature per
//! signing key that the receiver verifies (a tampered body fails it), a redirect is not followed,
//! and hosts outside `--allowed-hosts` are refused when the job is submitted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, header};
use axum::response::IntoResponse;
use axum::routing::post;
use hmac::{Hmac, Mac};
use kalla_e2e::runner::Runner;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

const NEW_KEY: &str = "new-signing-key-0123456789abcdefghij";
const OLD_KEY: &str = "old-signing-key-0123456789abcdefghij";

/// What reached the receiver: the route, the signature header and the body.
type Deliveries = Arc<Mutex<Vec<(String, String, Bytes)>>>;

async fn receive(route: &'static str, deliveries: Deliveries, headers: HeaderMap, body: Bytes) {
    let signature = headers
        .get("kalla-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    deliveries.lock().unwrap().push((route.into(), signature, body));
}

/// A receiver on a free loopback port: `/hook` takes deliveries, `/moved` redirects to `/elsewhere`.
async fn receiver() -> (String, Deliveries) {
    let deliveries = Deliveries::default();
    let app = Router::new()
        .route(
            "/hook",
            post(|State(d): State<Deliveries>, h: HeaderMap, b: Bytes| receive("/hook", d, h, b)),
        )
        .route(
            "/moved",
            post(|State(d): State<Deliveries>, h: HeaderMap, b: Bytes| async move {
                receive("/moved", d, h, b).await;
                (AxumStatus::TEMPORARY_REDIRECT, [(header::LOCATION, "/elsewhere")]).into_response()
            }),
        )
        .route(
            "/elsewhere",
            post(|State(d): State<Deliveries>, h: HeaderMap, b: Bytes| receive("/elsewhere", d, h, b)),
        )
        .with_state(deliveries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, deliveries)
}

/// Whether `header` (`t=…,v1=…,…`) holds a signature of `body` under `key`: what a receiver does.
fn verifies(header: &str, key: &str, body: &[u8]) -> bool {
    let mut parts = header.split(',');
    let Some(timestamp) = parts.next().and_then(|t| t.strip_prefix("t=")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    parts.any(|part| part.strip_prefix("v1=") == Some(expected.as_str()))
}

async fn wait_for(deliveries: &Deliveries, route: &str, at_least: usize) -> Vec<(String, Bytes)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen: Vec<(String, Bytes)> = deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _, _)| r == route)
            .map(|(_, s, b)| (s.clone(), b.clone()))
            .collect();
        if seen.len() >= at_least {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{route} got {} deliveries",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_delivery_is_signed_and_redirects_are_not_followed() {
    let (base, deliveries) = receiver().await;
    let keys = format!("{NEW_KEY},{OLD_KEY}");
    let data_dir = tempfile::TempDir::new().unwrap();
    let runner = Runner::start_in(
        data_dir,
        None,
        &["--allow-http-callbacks", "--callback-signing-keys", &keys],
    )
    .await;
    let job = json!({"type": "query", "sql": "SELECT 1 AS x", "callback_url": format!("{base}/hook")});
    let id = runner.submit_job(job).await;
    let done = runner.wait_for_job(&id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Deliveries are sent as the job goes and may arrive in any order: wait for the last event.
    let finished = |body: &Bytes| {
        serde_json::from_slice::<Value>(body).is_ok_and(|event| event["job"]["status"] == "succeeded")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let received = loop {
        let received = wait_for(&deliveries, "/hook", 2).await;
        if received.iter().any(|(_, body)| finished(body)) {
            break received;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery says the job succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (signature, body) in &received {
        assert!(verifies(signature, NEW_KEY, body), "{signature}");
        assert!(
            verifies(signature, OLD_KEY, body),
            "both keys sign during a rotation"
        );
        assert!(!verifies(signature, "some-other-key-0123456789abcdefghij", body));
        let mut tampered = body.to_vec();
        tampered.extend_from_slice(b" ");
        assert!(!verifies(signature, NEW_KEY, &tampered), "a tampered body fails");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["job"]["id"], id.as_str(), "{event}");
        if event["event"] == "complete" {
            // It says where the output is and how many rows it has.
            let result = &event["job"]["results"][0];
            assert_eq!(
                (&result["output"], &result["rows"]),
                (&json!("result"), &json!(1)),
                "{event}"
            );
            assert!(
                result["location"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/results/{id}/result/")),
                "{event}"
            );
        }
    }
    assert!(
        received
            .iter()
            .any(|(_, body)| serde_json::from_slice::<Value>(body).unwrap()["event"] == "complete"),
        "a complete event was delivered"
    );

    let job = json!({"type": "query", "sql": "SELECT 2 AS x", "callback_url": format!("{base}/moved")});
    let id = runner.submit_job(job).await;
    runner.wait_for_job(&id, Duration::from_secs(120)).await;
    wait_for(&deliveries, "/moved", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let followed = deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _, _)| r == "/elsewhere")
        .count();
    assert_eq!(followed, 0, "a redirect is never followed");
}

#[tokio::test]
async fn callbacks_go_only_where_allowed() {
    let data_dir = tempfile::TempDir::new().unwrap();
    let runner = Runner::start_in(
        data_dir,
        None,
        &["--allowed-hosts", "hooks.example.com,10.0.0.0/8"],
    )
    .await;
    for (url, says) in [
        ("http://hooks.example.com/x", "must be https://"),
        (
            "https://169.254.169.254/latest/meta-data",
            "169.254.169.254 resolves to 169.254.169.254, a link-local address",
        ),
        ("https://127.0.0.1:9/x", "a loopback address"),
        ("https://localhost:9/x", "a loopback address"),
        ("file:///etc/passwd", "must be an https:// URL"),
    ] {
        let job = json!({"type": "query", "sql": "SELECT 1", "callback_url": url});
        let (status, answer) = runner.call(Method::POST, "/api/jobs", Some(job)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{url}: {message}");
    }
    let (status, jobs) = runner.call(Method::GET, "/api/jobs", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(0),
        "nothing was queued: {jobs}"
    );
}
