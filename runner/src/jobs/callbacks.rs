//! Callbacks: a job's state POSTed to the URL its submitter gave, as it starts, progresses and
//! ends. Only to a host the policy allows (checked on the address the request really goes to,
//! resolved once and pinned), over https unless http is allowed, never following a redirect,
//! and signed: `Kalla-Signature: t=UNIX_SECONDS,v1=HEX` with one `v1` per signing key, each
//! the HMAC-SHA256 of `t.body`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use kalla_core::allow::HostPolicy;
use sha2::Sha256;
use url::Url;

use super::{JobError, Jobs};
use crate::metadata::JobRecord;

const CALLBACK_ATTEMPTS: u32 = 5;
/// The header carrying the signatures.
pub const SIGNATURE_HEADER: &str = "Kalla-Signature";

/// Where callbacks may go and what signs them.
#[derive(Clone)]
pub struct CallbackSettings {
    pub hosts: HostPolicy,
    pub allow_http: bool,
    /// The first signs with the others during a rotation; every key gets its own `v1`.
    pub signing_keys: Vec<String>,
}

impl std::fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("hosts", &self.hosts)
            .field("allow_http", &self.allow_http)
            .field("signing_keys", &format!("{} keys", self.signing_keys.len()))
            .finish()
    }
}

/// A callback URL checked against the settings, and the addresses it may be delivered to.
pub(super) struct Target {
    url: Url,
    host: String,
    addresses: Vec<SocketAddr>,
}

/// Resolves `url` and checks it: http(s), its scheme allowed, every address it resolves to
/// allowed.
pub(super) async fn check_callback_url(url: &str, settings: &CallbackSettings) -> Result<Target, JobError> {
    let invalid = |reason: String| JobError::InvalidRequest(format!("callback_url {url:?}: {reason}"));
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    match parsed.scheme() {
        "https" => {}
        "http" if settings.allow_http => {}
        "http" => {
            return Err(invalid(
                "must be https:// (http:// is refused unless --allow-http-callbacks)".into(),
            ));
        }
        _ => return Err(invalid("must be an https:// URL".into())),
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| invalid("has no host".into()))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses = settings
        .hosts
        .resolve(&host, port)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Target {
        url: parsed,
        host,
        addresses,
    })
}

/// The `Kalla-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(keys: &[String], timestamp: u64, body: &[u8]) -> String {
    let mut value = format!("t={timestamp}");
    for key in keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        value.push_str(",v1=");
        value.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    value
}

/// How long to wait after failed attempt `attempt` (from 0): doubling from half a second.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500) * 2_u32.pow(attempt)
}

/// A client that connects to `target`'s checked addresses only and follows no redirect.
fn pinned_client(target: &Target) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .resolve_to_addrs(target.host.trim_matches(['[', ']']), &target.addresses)
        .build()
}

impl Jobs {
    /// POSTs the job's state to its callback URL, retrying with backoff, without holding up the job.
    pub(super) async fn notify(&self, job: &JobRecord, event: &'static str) {
        let Some(url) = job.callback_url.clone() else {
            return;
        };
        let body = serde_json::json!({
            "event": event,
            "job": self.detailed_view(job.clone()).await,
        });
        let body = serde_json::to_vec(&body).expect("a job view serializes");
        let settings = self.inner.settings.callbacks.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            // Checked again at each delivery: a name may resolve elsewhere since submission.
            let target = match check_callback_url(&url, &settings).await {
                Ok(target) => target,
                Err(error) => return tracing::warn!(job = %id, %error, "callback refused"),
            };
            let client = match pinned_client(&target) {
                Ok(client) => client,
                Err(error) => return tracing::warn!(job = %id, %error, "callback client"),
            };
            for attempt in 0..CALLBACK_ATTEMPTS {
                let timestamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let delivered = client
                    .post(target.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(
                        SIGNATURE_HEADER,
                        signature(&settings.signing_keys, timestamp, &body),
                    )
                    .body(body.clone())
                    .send()
                    .await;
                match delivered {
                    Ok(response) if response.status().is_success() => return,
                    // A redirect is not followed: where it points was never checked.
                    Ok(response) => {
                        tracing::warn!(job = %id, status = %response.status(), attempt, "callback refused")
                    }
                    Err(error) => tracing::warn!(job = %id, %error, attempt, "callback failed"),
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allow_http: bool, hosts: HostPolicy) -> CallbackSettings {
        CallbackSettings {
            hosts,
            allow_http,
            signing_keys: vec!["k".into()],
        }
    }

    #[tokio::test]
    async fn only_allowed_web_callbacks_are_taken() {
        let open = settings(true, HostPolicy::any());
        assert!(
            check_callback_url("http://127.0.0.1:9/kalla", &open)
                .await
                .is_ok()
        );
        let strict = settings(false, HostPolicy::new(&[], true).unwrap());
        for (bad, says) in [
            ("file:///etc/passwd", "must be an https:// URL"),
            ("ftp://h/x", "must be an https:// URL"),
            ("not a url", "callback_url \"not a url\""),
            ("http://example.com/x", "--allow-http-callbacks"),
            ("https://169.254.169.254/latest", "link-local"),
            ("https://127.0.0.1:8443/x", "loopback"),
            ("https://[::1]/x", "loopback"),
        ] {
            let error = match check_callback_url(bad, &strict).await {
                Ok(_) => panic!("{bad} was taken"),
                Err(error) => error.to_string(),
            };
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn every_key_signs_the_timestamp_and_the_body() {
        let keys = ["new-key".to_string(), "old-key".to_string()];
        let value = signature(&keys, 1_700_000_000, b"{\"a\":1}");
        let parts: Vec<&str> = value.split(',').collect();
        assert_eq!(parts[0], "t=1700000000");
        assert_eq!(parts.len(), 3);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"old-key").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            parts[2],
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(value, signature(&keys, 1_700_000_000, b"{\"a\":2}"));
    }

    #[test]
    fn retries_back_off_doubling() {
        let waits: Vec<u64> = (0..CALLBACK_ATTEMPTS)
            .map(|a| backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000]);
    }
}
