//! The Ballista scheduler's REST API as the runner reads it: health, executors, a job and its
//! stages. One client, so every call shares its connections and its timeout; with mutual TLS it
//! is made again when the runner's certificate files change.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ballista_api_types::dto::{JobResponse, QueryStagesResponse};
use kalla_core::cluster_tls::{ClusterTls, PemFiles};
use serde::Deserialize;

/// Scheduler answers are small and local; a slow one is treated as absent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct SchedulerApi {
    http: Arc<Mutex<Client>>,
    tls: Option<Arc<ClusterTls>>,
    url: String,
}

/// The HTTP client, and the certificate files it was made with.
struct Client {
    http: reqwest::Client,
    files: Option<PemFiles>,
}

/// An executor registered with the scheduler.
#[derive(Debug, Deserialize)]
pub struct Executor {
    pub id: String,
    pub specification: ExecutorSpecification,
}

#[derive(Debug, Deserialize)]
pub struct ExecutorSpecification {
    pub vcores: usize,
}

impl SchedulerApi {
    /// The API at `url` (`http://host:port`, or `https://` reached with `tls`).
    pub fn new(url: String, tls: Option<Arc<ClusterTls>>) -> Self {
        let client = Client {
            http: reqwest::Client::new(),
            files: None,
        };
        Self {
            http: Arc::new(Mutex::new(client)),
            tls,
            url,
        }
    }

    /// The client for the certificate files as they are now.
    fn http(&self) -> Result<reqwest::Client, String> {
        let Some(tls) = &self.tls else {
            return Ok(self.lock().http.clone());
        };
        let files = tls.pem_files().map_err(|e| e.to_string())?;
        let mut client = self.lock();
        if client.files.as_ref() != Some(&files) {
            client.http =
                tls_client(&files).map_err(|e| format!("cannot use the cluster certificate: {e}"))?;
            client.files = Some(files);
        }
        Ok(client.http.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Client> {
        self.http.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the scheduler answers, or what went wrong.
    pub async fn check(&self) -> Result<(), String> {
        let url = format!("{}/api/state", self.url);
        match self.http()?.get(&url).timeout(REQUEST_TIMEOUT).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("scheduler answered {} at {url}", response.status())),
            Err(error) => Err(format!("scheduler unreachable at {url}: {error}")),
        }
    }

    pub async fn executors(&self) -> Result<Vec<Executor>, ApiError> {
        self.get("/api/executors").await
    }

    pub async fn job(&self, job_id: &str) -> Result<JobResponse, ApiError> {
        self.get(&format!("/api/job/{job_id}")).await
    }

    pub async fn stages(&self, job_id: &str) -> Result<QueryStagesResponse, ApiError> {
        self.get(&format!("/api/job/{job_id}/stages")).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        Ok(self
            .http()
            .map_err(ApiError::Certificate)?
            .get(format!("{}{path}", self.url))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

/// An HTTPS client that trusts only the cluster's CA and presents the runner's certificate.
fn tls_client(files: &PemFiles) -> Result<reqwest::Client, reqwest::Error> {
    // PEM files need not end in a newline: keep the key's block apart from the chain's.
    let identity = [files.cert.as_slice(), b"\n", files.key.as_slice()].concat();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false);
    // During a CA rollover the bundle holds the old CA and the new one.
    for ca in reqwest::Certificate::from_pem_bundle(&files.ca)? {
        builder = builder.add_root_certificate(ca);
    }
    builder.identity(reqwest::Identity::from_pem(&identity)?).build()
}

/// Why the scheduler's API did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Certificate(String),
}
