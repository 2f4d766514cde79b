//! The Ballista scheduler's REST API as the runner reads it: health, executors, a job and its
//! stages. One client, so every call shares its connections and its timeout.

use std::time::Duration;

use ballista_api_types::dto::{JobResponse, QueryStagesResponse};
use serde::Deserialize;

/// Scheduler answers are small and local; a slow one is treated as absent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct SchedulerApi {
    http: reqwest::Client,
    url: String,
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
    /// The API at `url` (`http://host:port`).
    pub fn new(url: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the scheduler answers, or what went wrong.
    pub async fn check(&self) -> Result<(), String> {
        let url = format!("{}/api/state", self.url);
        match self.http.get(&url).timeout(REQUEST_TIMEOUT).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("scheduler answered {} at {url}", response.status())),
            Err(error) => Err(format!("scheduler unreachable at {url}: {error}")),
        }
    }

    pub async fn executors(&self) -> Result<Vec<Executor>, reqwest::Error> {
        self.get("/api/executors").await
    }

    pub async fn job(&self, job_id: &str) -> Result<JobResponse, reqwest::Error> {
        self.get(&format!("/api/job/{job_id}")).await
    }

    pub async fn stages(&self, job_id: &str) -> Result<QueryStagesResponse, reqwest::Error> {
        self.get(&format!("/api/job/{job_id}/stages")).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, reqwest::Error> {
        self.http
            .get(format!("{}{path}", self.url))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
}
