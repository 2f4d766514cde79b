//! Callbacks: a job's state POSTed to the URL its submitter gave, as it starts, progresses and ends.

use std::time::Duration;

use serde_json::json;

use super::{JobError, Jobs};
use crate::metadata::JobRecord;

const CALLBACK_ATTEMPTS: u32 = 5;

/// Refuses a callback URL that is not plain `http://` or `https://`.
pub(super) fn check_callback_url(url: &str) -> Result<(), JobError> {
    let parsed =
        url::Url::parse(url).map_err(|e| JobError::InvalidRequest(format!("callback_url {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(JobError::InvalidRequest(
            "callback_url must be an http:// or https:// URL".into(),
        ));
    }
    Ok(())
}

/// How long to wait after failed attempt `attempt` (from 0): doubling from half a second.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500) * 2_u32.pow(attempt)
}

impl Jobs {
    /// POSTs the job's state to its callback URL, retrying with backoff, without holding up the job.
    pub(super) async fn notify(&self, job: &JobRecord, event: &'static str) {
        let Some(url) = job.callback_url.clone() else {
            return;
        };
        let body = json!({
            "event": event,
            "job": self.detailed_view(job.clone()).await,
        });
        let http = self.inner.http.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            for attempt in 0..CALLBACK_ATTEMPTS {
                match http.post(&url).json(&body).send().await {
                    Ok(response) if response.status().is_success() => return,
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

    #[test]
    fn only_web_callbacks_are_taken() {
        for good in ["http://hooks.internal/kalla", "https://example.com/x?y=1"] {
            assert!(check_callback_url(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("file:///etc/passwd", "http:// or https://"),
            ("ftp://h/x", "http:// or https://"),
            ("not a url", "callback_url \"not a url\""),
        ] {
            let error = check_callback_url(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn retries_back_off_doubling() {
        let waits: Vec<u64> = (0..CALLBACK_ATTEMPTS)
            .map(|a| backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000]);
    }
}
