//! Jobs: reconciliation runs and large queries, queued in the metadata DB, run on the cluster by
//! a fixed number of workers, their outputs written by the executors under `results/{job_id}/`.
//!
//! A job is marked succeeded only after every output is completely written: each pass returns
//! one summary row per file its tasks wrote, files no summary names (left by retried tasks) are
//! removed, and only then are the counts stored with the job.
//!
//! Each finished pass is recorded with what it wrote. A job is held by one runner under a lease;
//! a job whose runner stopped or died is taken over by a runner once its lease passes, and takes
//! over its running Ballista job if the scheduler still has it, else runs again from the pass
//! that was interrupted; so does a job that stalled after the cluster lost an executor.
//!
//! - [`submit`]: what a job request must be before it is queued;
//! - [`queue`]: the workers taking jobs off the queue, and recording how each ended;
//! - [`run`]: running a job's passes on the cluster, and taking over an interrupted one's;
//! - [`carry`]: the open items a `carry_forward` recipe's run reads, and those it leaves;
//! - [`outputs`]: keeping exactly the files finished passes wrote, publishing or discarding them;
//! - [`leases`]: holding jobs under leases, and taking over those no live runner holds;
//! - [`recovery`]: what becomes of a job its runner left unfinished;
//! - [`retention`]: deleting a finished job's result files, by request or once they are too old;
//! - [`views`]: jobs as the API shows them, with a running job's progress;
//! - [`callbacks`]: telling a job's callback URL how it goes.

mod callbacks;
mod carry;
mod leases;
mod outputs;
mod queue;
mod recovery;
mod retention;
mod run;
mod submit;
mod views;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kalla_core::cache::CacheDir;
use kalla_core::recon::Recipe;
use kalla_core::recon::params::ParamError;
use kalla_core::storage::S3Settings;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::catalog::{Catalog, CatalogError};
use crate::cluster::ClusterEndpoint;
use crate::job_outputs::{JobOutputs, OutputError};
use crate::metadata::{Backend, JobEnd, JobFilter, JobStatus, MetadataDb, MetadataError, new_id};
use crate::recipes::{RecipeError, Recipes};
use crate::stall::StallWatch;

pub use callbacks::{CallbackSettings, SIGNATURE_HEADER, signature};
pub use views::JobView;
use views::view;

/// A job interrupted this many times (runner restarts, lost executors) is failed instead of run again.
const MAX_ATTEMPTS: i64 = 3;

#[derive(Debug, Error)]
pub enum JobError {
    #[error("the job queue is full ({0} jobs waiting); retry later")]
    QueueFull(usize),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("job {id} is already {status}")]
    Finished { id: String, status: &'static str },
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Failed(String),
    /// The cluster lost an executor and the job stopped progressing: worth running again.
    #[error("{0}")]
    Stalled(String),
}

fn failed(error: impl std::fmt::Display) -> JobError {
    JobError::Failed(error.to_string())
}

/// `POST /api/jobs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobRequest {
    Recon {
        recipe_id: Option<String>,
        recipe: Option<Box<Recipe>>,
        /// Values of the recipe's parameters, by name; declared defaults fill the rest.
        #[serde(default)]
        #[schema(value_type = Object)]
        params: serde_json::Map<String, serde_json::Value>,
        callback_url: Option<String>,
    },
    Query {
        sql: String,
        #[serde(default)]
        live: bool,
        callback_url: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Results go to `root/results/{job_id}/`.
    pub root: CacheDir,
    pub s3: S3Settings,
    pub concurrency: usize,
    pub queue_capacity: usize,
    /// After an executor is lost, a job with no finished task for this long is run again.
    pub stall_timeout: Duration,
    /// A reconciliation's rows are paired in shuffle partitions of about this many bytes.
    pub pair_partition_bytes: u64,
    pub callbacks: CallbackSettings,
    /// How long a runner holds a job without renewing: a job of a runner that died is taken
    /// over by another after this.
    pub lease: Duration,
    /// How long a finished job's result files are kept; `None`: until deleted by hand.
    pub results_retention: Option<Duration>,
}

#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    db: MetadataDb,
    catalog: Catalog,
    recipes: Recipes,
    cluster: ClusterEndpoint,
    settings: JobSettings,
    outputs: JobOutputs,
    queue: mpsc::Sender<String>,
    waiting: tokio::sync::Mutex<mpsc::Receiver<String>>,
    /// Jobs running in this runner, to abort on cancel.
    running: Mutex<HashMap<String, AbortHandle>>,
    /// `None` on the embedded cluster, whose executor cannot be lost on its own.
    stall: Option<StallWatch>,
    /// Who holds this runner's jobs: one id per process.
    runner_id: String,
    /// Set when the runner hands its jobs over on shutdown: it starts and takes over no more.
    stopping: AtomicBool,
}

impl Jobs {
    /// Starts the workers, and the renewal of leases that takes over the jobs no runner holds
    /// (first of all those a previous runner left).
    pub async fn start(
        db: MetadataDb,
        catalog: Catalog,
        recipes: Recipes,
        cluster: ClusterEndpoint,
        settings: JobSettings,
    ) -> Result<Self, JobError> {
        if db.backend() == Backend::Sqlite {
            // A SQLite metadata DB serves one runner: what a previous process held is free now.
            db.release_all_leases().await?;
        }
        let (queue, waiting) = mpsc::channel(settings.queue_capacity.max(1));
        let stall = cluster
            .rest
            .clone()
            .map(|scheduler| StallWatch::new(scheduler, settings.stall_timeout));
        let runner_id = new_id("runner");
        tracing::info!(runner = %runner_id, lease_secs = settings.lease.as_secs_f64(), "holding jobs under leases");
        let outputs = JobOutputs::new(db.clone(), settings.root.clone());
        let jobs = Self {
            inner: Arc::new(Inner {
                db,
                outputs,
                catalog,
                recipes,
                cluster,
                queue,
                waiting: tokio::sync::Mutex::new(waiting),
                running: Mutex::default(),
                stall,
                settings,
                runner_id,
                stopping: AtomicBool::new(false),
            }),
        };
        for _ in 0..jobs.inner.settings.concurrency.max(1) {
            tokio::spawn(jobs.clone().work());
        }
        tokio::spawn(jobs.clone().keep_leases());
        if let Some(retention) = jobs.inner.settings.results_retention {
            tokio::spawn(jobs.clone().sweep_results(retention));
        }
        Ok(jobs)
    }

    /// Whether `POST /api/jobs` would be refused for a full queue.
    pub fn queue_full(&self) -> bool {
        self.inner.queue.capacity() == 0
    }

    pub async fn get(&self, id: &str) -> Result<JobView, JobError> {
        Ok(self.detailed_view(self.inner.db.job(id).await?).await)
    }

    pub async fn list(
        &self,
        filter: &JobFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<JobView>, JobError> {
        let records = self.inner.db.list_jobs(filter, limit, offset).await?;
        Ok(records.into_iter().map(view).collect())
    }

    /// Cancels a queued or running job, including its Ballista jobs; its partial outputs are removed.
    pub async fn cancel(&self, id: &str) -> Result<JobView, JobError> {
        let job = self.inner.db.job(id).await?;
        if job.status.is_finished() {
            return Err(JobError::Finished {
                id: id.to_string(),
                status: job.status.as_str(),
            });
        }
        let ended = self
            .inner
            .db
            .finish_job(
                id,
                JobEnd {
                    owner: None,
                    status: JobStatus::Cancelled,
                    counts_json: None,
                    result_url: None,
                    error: Some("cancelled by request"),
                },
            )
            .await?;
        if !ended {
            let now = self.inner.db.job(id).await?;
            return Err(JobError::Finished {
                id: id.to_string(),
                status: now.status.as_str(),
            });
        }
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(task) = running {
            task.abort();
        }
        let job = self.inner.db.job(id).await?;
        self.cancel_ballista_jobs(&job).await;
        self.discard_results(id).await;
        tracing::info!(job = %id, "job cancelled");
        self.notify(&job, "error").await;
        Ok(view(job))
    }

    /// The directory of a job's results.
    pub fn results_dir(&self, id: &str) -> CacheDir {
        self.inner.outputs.results_dir(id)
    }

    /// A succeeded job's output directory, checked against the outputs the job has.
    pub async fn output_dir(&self, id: &str, output: &str) -> Result<CacheDir, JobError> {
        Ok(self.inner.outputs.output_dir(id, output).await?)
    }

    pub fn s3(&self) -> &S3Settings {
        &self.inner.settings.s3
    }
}

/// A job record as the metadata DB would hold it, for unit tests.
#[cfg(test)]
pub(crate) fn test_job(job_type: &str, status: JobStatus) -> crate::metadata::JobRecord {
    crate::metadata::JobRecord {
        id: "job_test".into(),
        job_type: job_type.into(),
        status,
        recipe_id: None,
        spec_json: "{}".into(),
        callback_url: None,
        phase: None,
        ballista_job_ids: Vec::new(),
        passes_json: "[]".into(),
        inputs_json: None,
        attempts: 1,
        owner: None,
        counts_json: None,
        result_url: None,
        error: None,
        created_at: "2026-12-01T00:00:00Z".into(),
        started_at: None,
        finished_at: None,
        results_deleted_at: None,
    }
}
