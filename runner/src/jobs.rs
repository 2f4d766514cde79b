//! Jobs: reconciliation runs and large queries, queued in the metadata DB, run on the cluster by
//! a fixed number of workers, their outputs written by the executors under `results/{job_id}/`.
//!
//! A job is marked succeeded only after every output is completely written: each pass returns
//! one summary row per file its tasks wrote, files no summary names (left by retried tasks) are
//! removed, and only then are the counts stored with the job.
//!
//! Each finished pass is recorded with what it wrote. A job interrupted by a runner restart takes
//! over its running Ballista job if the scheduler still has it, else runs again from the pass
//! that was interrupted; so does a job that stalled after the cluster lost an executor.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::CancelJobParams;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::collect;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion_proto::protobuf::LogicalPlanNode;
use kalla_core::cache::sink::{SinkSpec, Split, write_empty};
use kalla_core::cache::write::WritePlanTable;
use kalla_core::cache::{CacheDir, WrittenFile, written_files};
use kalla_core::preview::predicate;
use kalla_core::recon::plan::{self, OUTPUTS};
use kalla_core::recon::{Recipe, Side};
use kalla_core::storage::{self, S3Settings};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::cluster::ClusterEndpoint;
use crate::metadata::{
    JobEnd, JobRecord, JobStatus, MetadataDb, MetadataError, NewJob, new_id, retry_while_unavailable,
};
use crate::query::{Queries, QueryError};
use crate::reattach;
use crate::recipes::{RecipeError, Recipes};
use crate::stall::StallWatch;

/// The output of a query job.
pub const QUERY_OUTPUT: &str = "result";
/// A job interrupted this many times (runner restarts, lost executors) is failed instead of run again.
const MAX_ATTEMPTS: i64 = 3;
const CALLBACK_ATTEMPTS: u32 = 5;
/// How long a job's end is retried while the metadata DB is unavailable; a job still unrecorded
/// after that is taken up by the next runner start.
const RECORD_PATIENCE: Duration = Duration::from_secs(600);

#[derive(Debug, Error)]
pub enum JobError {
    #[error("the job queue is full ({0} jobs waiting); retry later")]
    QueueFull(usize),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("job {id} is already {status}")]
    Finished { id: String, status: &'static str },
    #[error("output {output:?} does not exist; this job has: {}", available.join(", "))]
    UnknownOutput { output: String, available: Vec<String> },
    #[error("job {0} has no results yet: it has not succeeded")]
    NoResults(String),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Query(#[from] QueryError),
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
        callback_url: Option<String>,
    },
    Query {
        sql: String,
        #[serde(default)]
        live: bool,
        callback_url: Option<String>,
    },
}

/// What a query job stores.
#[derive(Debug, Serialize, Deserialize)]
struct QuerySpec {
    sql: String,
    live: bool,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ballista_job_ids: Vec<String>,
    pub attempts: i64,
    pub outputs: Vec<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
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
}

#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    db: MetadataDb,
    queries: Queries,
    recipes: Recipes,
    cluster: ClusterEndpoint,
    settings: JobSettings,
    queue: mpsc::Sender<String>,
    waiting: tokio::sync::Mutex<mpsc::Receiver<String>>,
    /// Jobs running in this runner, to abort on cancel.
    running: Mutex<HashMap<String, AbortHandle>>,
    http: reqwest::Client,
    /// `None` on the embedded cluster, whose executor cannot be lost on its own.
    stall: Option<StallWatch>,
}

impl Jobs {
    /// Starts the workers; jobs a previous runner left unfinished are taken up again first.
    pub async fn start(
        db: MetadataDb,
        queries: Queries,
        recipes: Recipes,
        cluster: ClusterEndpoint,
        settings: JobSettings,
    ) -> Result<Self, JobError> {
        let (queue, waiting) = mpsc::channel(settings.queue_capacity.max(1));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(failed)?;
        let stall = cluster
            .rest
            .clone()
            .map(|scheduler| StallWatch::new(scheduler, settings.stall_timeout));
        let jobs = Self {
            inner: Arc::new(Inner {
                db,
                queries,
                recipes,
                cluster,
                queue,
                waiting: tokio::sync::Mutex::new(waiting),
                running: Mutex::default(),
                http,
                stall,
                settings,
            }),
        };
        let resumed = jobs.recover().await?;
        for _ in 0..jobs.inner.settings.concurrency.max(1) {
            tokio::spawn(jobs.clone().work());
        }
        let queue = jobs.inner.queue.clone();
        tokio::spawn(async move {
            for id in resumed {
                if queue.send(id).await.is_err() {
                    break;
                }
            }
        });
        Ok(jobs)
    }

    /// Whether `POST /api/jobs` would be refused for a full queue.
    pub fn queue_full(&self) -> bool {
        self.inner.queue.capacity() == 0
    }

    pub async fn submit(&self, request: JobRequest) -> Result<JobView, JobError> {
        let (job_type, recipe_id, spec_json, callback_url) = match request {
            JobRequest::Recon {
                recipe_id,
                recipe,
                callback_url,
            } => {
                let (recipe_id, recipe) = match (recipe_id, recipe) {
                    (Some(id), None) => {
                        let stored = self.inner.recipes.get(&id).await?;
                        (Some(stored.id), stored.recipe)
                    }
                    (None, Some(recipe)) => (None, *recipe),
                    _ => {
                        return Err(JobError::InvalidRequest(
                            "a recon job needs exactly one of recipe_id and recipe".into(),
                        ));
                    }
                };
                self.inner.recipes.check(&recipe).await?;
                let spec = serde_json::to_string(&recipe).map_err(failed)?;
                ("recon", recipe_id, spec, callback_url)
            }
            JobRequest::Query {
                sql,
                live,
                callback_url,
            } => {
                crate::query::table_references(&sql)?;
                let spec = serde_json::to_string(&QuerySpec { sql, live }).map_err(failed)?;
                ("query", None, spec, callback_url)
            }
        };
        if let Some(url) = &callback_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| JobError::InvalidRequest(format!("callback_url {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(JobError::InvalidRequest(
                    "callback_url must be an http:// or https:// URL".into(),
                ));
            }
        }
        let permit = self
            .inner
            .queue
            .try_reserve()
            .map_err(|_| JobError::QueueFull(self.inner.settings.queue_capacity))?;
        let id = new_id("job");
        let record = self
            .inner
            .db
            .insert_job(NewJob {
                id: &id,
                job_type,
                recipe_id: recipe_id.as_deref(),
                spec_json: &spec_json,
                callback_url: callback_url.as_deref(),
            })
            .await?;
        permit.send(id);
        tracing::info!(job = %record.id, job_type, "job queued");
        Ok(view(record))
    }

    pub async fn get(&self, id: &str) -> Result<JobView, JobError> {
        Ok(self.detailed_view(self.inner.db.job(id).await?).await)
    }

    pub async fn list(
        &self,
        status: Option<JobStatus>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<JobView>, JobError> {
        let records = self.inner.db.list_jobs(status, limit, offset).await?;
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
        self.inner.settings.root.join(&["results", id])
    }

    /// A succeeded job's output directory, checked against the outputs the job has.
    pub async fn output_dir(&self, id: &str, output: &str) -> Result<CacheDir, JobError> {
        let job = self.inner.db.job(id).await?;
        let available = outputs_of(&job.job_type);
        if !available.contains(&output) {
            return Err(JobError::UnknownOutput {
                output: output.to_string(),
                available: available.iter().map(|o| o.to_string()).collect(),
            });
        }
        if job.status != JobStatus::Succeeded {
            return Err(JobError::NoResults(id.to_string()));
        }
        Ok(self.results_dir(id).join(&[output]))
    }

    pub fn s3(&self) -> &S3Settings {
        &self.inner.settings.s3
    }

    /// The job with, while it runs on a remote cluster, its Ballista job's stages.
    async fn detailed_view(&self, record: JobRecord) -> JobView {
        let progress = match record.status {
            JobStatus::Running => Some(self.progress(&record).await),
            _ => None,
        };
        JobView {
            progress,
            ..view(record)
        }
    }

    /// The job's phase and, on a remote cluster, its current Ballista job's stages and tasks.
    async fn progress(&self, record: &JobRecord) -> serde_json::Value {
        let mut progress = json!({"phase": record.phase});
        let (Some(scheduler), Some(watch), Some(ballista)) = (
            &self.inner.cluster.rest,
            &self.inner.stall,
            record.ballista_job_ids.last(),
        ) else {
            return progress;
        };
        if let Ok(job) = scheduler.job(ballista).await {
            progress["ballista_job_id"] = json!(ballista);
            progress["num_stages"] = json!(job.num_stages);
            progress["completed_stages"] = json!(job.completed_stages);
            progress["percent_complete"] = json!(job.percent_complete);
            progress["job_status"] = json!(job.job_status);
        }
        if let Some(stages) = watch.progress(ballista).await {
            progress["tasks_finished"] = json!(stages.iter().map(|s| s.tasks_finished).sum::<usize>());
            progress["tasks"] = json!(stages.iter().map(|s| s.tasks).sum::<usize>());
            progress["stages"] = json!(stages);
        }
        progress
    }

    /// Unfinished jobs of a previous runner: queued ones wait again; a running one takes over its
    /// Ballista job if the scheduler still runs it, else has it cancelled and the interrupted
    /// pass's files removed, and runs again from that pass; one interrupted [`MAX_ATTEMPTS`]
    /// times is failed.
    async fn recover(&self) -> Result<Vec<String>, JobError> {
        let mut resumed = Vec::new();
        for job in self.inner.db.unfinished_jobs().await? {
            if job.status == JobStatus::Running {
                if job.attempts >= MAX_ATTEMPTS {
                    self.cancel_ballista_jobs(&job).await;
                    self.discard_results(&job.id).await;
                    let reason = format!(
                        "the runner stopped during this job {} times; not retrying",
                        job.attempts
                    );
                    self.end(&job.id, JobStatus::Failed, None, Some(&reason)).await;
                    continue;
                }
                match self.followable(&PassLog::of(&job)).await {
                    Some(ballista) => {
                        tracing::warn!(job = %job.id, ballista, "the runner stopped during this job; taking over its Ballista job")
                    }
                    None => {
                        tracing::warn!(job = %job.id, attempt = job.attempts, "the runner stopped during this job; running it again after its last finished pass");
                        self.cancel_ballista_jobs(&job).await;
                        self.keep_finished_passes(&job).await?;
                    }
                }
                self.inner.db.requeue_job(&job.id).await?;
            }
            resumed.push(job.id);
        }
        Ok(resumed)
    }

    async fn work(self) {
        loop {
            let next = self.inner.waiting.lock().await.recv().await;
            let Some(id) = next else { return };
            if let Err(error) = self.run(&id).await {
                self.lost_track(&id, error).await;
            }
        }
    }

    async fn run(&self, id: &str) -> Result<(), JobError> {
        if !self.inner.db.start_job(id).await? {
            return Ok(()); // cancelled while queued
        }
        let job = self.inner.db.job(id).await?;
        tracing::info!(job = %id, attempt = job.attempts, "job started");
        self.notify(&job, "progress").await;
        let started = Instant::now();
        let jobs = self.clone();
        let record = job.clone();
        let task = tokio::spawn(async move { jobs.execute(&record).await });
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), task.abort_handle());
        let outcome = task.await;
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        match outcome {
            Err(join) if join.is_cancelled() => {} // cancel() recorded it
            Err(join) => {
                let reason = format!("the job's task failed: {join}");
                self.end(&job.id, JobStatus::Failed, None, Some(&reason)).await;
            }
            Ok(Ok(summary)) => {
                let summary = json!({"duration_ms": started.elapsed().as_millis() as u64, "outputs": summary.counts, "timings_ms": summary.timings});
                self.end(&job.id, JobStatus::Succeeded, Some(&summary), None)
                    .await;
            }
            Ok(Err(error)) => {
                let latest = self.inner.db.job(id).await?;
                self.cancel_ballista_jobs(&latest).await;
                if let JobError::Stalled(reason) = &error
                    && job.attempts < MAX_ATTEMPTS
                {
                    tracing::warn!(job = %id, attempt = job.attempts, %reason, "running the job again after its last finished pass");
                    self.keep_finished_passes(&latest).await?;
                    return self.run_again(id).await;
                }
                self.discard_results(id).await;
                self.end(&job.id, JobStatus::Failed, None, Some(&error.to_string()))
                    .await;
            }
        }
        Ok(())
    }

    /// Fails a job whose state could not be read or recorded (the metadata DB was away for longer
    /// than it is waited for), so that it does not stay queued or running.
    async fn lost_track(&self, id: &str, error: JobError) {
        tracing::error!(job = %id, %error, "cannot record a job's state; failing it");
        self.discard_results(id).await;
        let reason = format!("the runner could not record the job's state: {error}");
        self.end(id, JobStatus::Failed, None, Some(&reason)).await;
    }

    /// Puts a running job back at the end of the queue.
    async fn run_again(&self, id: &str) -> Result<(), JobError> {
        self.inner.db.requeue_job(id).await?;
        let queue = self.inner.queue.clone();
        let id = id.to_string();
        // Not awaited here: this worker is one of those that empty the queue.
        tokio::spawn(async move { queue.send(id).await });
        Ok(())
    }

    async fn end(
        &self,
        id: &str,
        status: JobStatus,
        summary: Option<&serde_json::Value>,
        error: Option<&str>,
    ) {
        let counts = summary.map(|s| s.to_string());
        let result_url = (status == JobStatus::Succeeded).then(|| self.results_dir(id).as_str().to_string());
        let end = JobEnd {
            status,
            counts_json: counts.as_deref(),
            result_url: result_url.as_deref(),
            error,
        };
        // The outputs are written (or the job failed): a metadata DB restarting now must not
        // leave the job running.
        let recorded = retry_while_unavailable(RECORD_PATIENCE, || self.inner.db.finish_job(id, end)).await;
        match recorded {
            Ok(true) => {
                tracing::info!(job = %id, status = status.as_str(), error = error.unwrap_or(""), "job finished");
                let event = if status == JobStatus::Succeeded {
                    "complete"
                } else {
                    "error"
                };
                if let Ok(job) = self.inner.db.job(id).await {
                    self.notify(&job, event).await;
                }
            }
            Ok(false) => {} // cancelled meanwhile
            Err(error) => {
                tracing::error!(job = %id, %error, "cannot record how a job ended; the next runner start takes it up")
            }
        }
    }

    async fn execute(&self, job: &JobRecord) -> Result<RunSummary, JobError> {
        match job.job_type.as_str() {
            "recon" => {
                let recipe: Recipe = serde_json::from_str(&job.spec_json).map_err(failed)?;
                self.reconcile(job, &recipe).await
            }
            _ => {
                let spec: QuerySpec = serde_json::from_str(&job.spec_json).map_err(failed)?;
                self.query(job, &spec).await
            }
        }
    }

    async fn reconcile(&self, job: &JobRecord, recipe: &Recipe) -> Result<RunSummary, JobError> {
        let mut summary = RunSummary::default();
        let session = self.inner.cluster.query_session().await;
        let left = self.side(&session, &recipe.left).await?;
        let right = self.side(&session, &recipe.right).await?;
        let checked = recipe
            .check(left.schema().as_arrow(), right.schema().as_arrow())
            .map_err(RecipeError::from)?;
        let left = filtered(left, &recipe.left)?;
        let right = filtered(right, &recipe.right)?;
        let dir = self.results_dir(&job.id);
        let mut log = PassLog::of(job);

        let timer = Instant::now();
        let (classified, split) = plan::classify(left, right, &checked).map_err(failed)?;
        let schemas = output_schemas(classified.schema().as_arrow(), &split);
        let table = split_write(&classified, &dir, split);
        let written = self
            .run_pass(&session, job, &mut log, "classifying", table)
            .await?;
        summary
            .timings
            .insert("classify".into(), timer.elapsed().as_millis() as u64);

        self.inner.db.set_job_phase(&job.id, "publishing").await?;
        let timer = Instant::now();
        summary.counts = self.publish(&dir, written, &schemas, &OUTPUTS).await?;
        summary
            .timings
            .insert("publish".into(), timer.elapsed().as_millis() as u64);
        Ok(summary)
    }

    async fn query(&self, job: &JobRecord, spec: &QuerySpec) -> Result<RunSummary, JobError> {
        let (frame, _) = self.inner.queries.prepare(&spec.sql, spec.live).await?;
        let dir = self.results_dir(&job.id);
        let output = dir.join(&[QUERY_OUTPUT]);
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let session = self.inner.cluster.query_session().await;
        let table = WritePlanTable::new(
            frame.logical_plan().clone(),
            SinkSpec {
                directory: output.as_str().to_string(),
                split: None,
            },
        );
        let timer = Instant::now();
        let written = self
            .run_pass(&session, job, &mut PassLog::of(job), "running", table)
            .await?;
        let mut summary = RunSummary::default();
        summary
            .timings
            .insert("query".into(), timer.elapsed().as_millis() as u64);
        let schemas = HashMap::from([(QUERY_OUTPUT.to_string(), schema)]);
        summary.counts = self.publish(&dir, written, &schemas, &[QUERY_OUTPUT]).await?;
        Ok(summary)
    }

    async fn side(&self, session: &SessionContext, side: &Side) -> Result<DataFrame, JobError> {
        Ok(self
            .inner
            .queries
            .read_source(session, &side.source, false)
            .await?)
    }

    /// Runs the job's next pass, unless an earlier run finished it; takes over the Ballista job of
    /// an interrupted run if the scheduler still runs it. Once the pass is done, files its tasks
    /// wrote that no summary names (retried tasks) are removed, and the pass is recorded.
    async fn run_pass(
        &self,
        session: &SessionContext,
        job: &JobRecord,
        log: &mut PassLog,
        phase: &str,
        table: WritePlanTable,
    ) -> Result<Vec<WrittenFile>, JobError> {
        if let Some(pass) = log.finished.get(log.next) {
            log.next += 1;
            return Ok(pass.written.clone());
        }
        self.inner.db.set_job_phase(&job.id, phase).await?;
        if job.callback_url.is_some() {
            self.notify(&self.inner.db.job(&job.id).await?, "progress").await;
        }
        let followed = match self.followable(log).await {
            // It may still end without a result: e.g. one cancelled after a stall that read as
            // running a moment longer.
            Some(ballista) => self.follow(&ballista).await.inspect_err(|error| {
                tracing::warn!(job = %job.id, %error, "cannot take over the Ballista job; running the pass again");
            }),
            None => Err(failed("no Ballista job to take over")),
        };
        log.follow = None;
        let pass = match followed {
            Ok(pass) => pass,
            Err(_) => {
                self.keep_files(&job.id, &log.finished).await?;
                self.run_on_cluster(session, job, table).await?
            }
        };
        log.finished.push(pass.clone());
        log.next += 1;
        let record = serde_json::to_string(&log.finished).map_err(failed)?;
        self.keep_files(&job.id, &log.finished).await?;
        self.inner.db.set_job_passes(&job.id, &record).await?;
        Ok(pass.written)
    }

    /// The Ballista job an interrupted run left, if the scheduler still runs it (or has finished it).
    async fn followable(&self, log: &PassLog) -> Option<String> {
        let ballista = log.follow.clone()?;
        let mut scheduler = self.inner.cluster.scheduler().await.ok()?;
        reattach::state(&mut scheduler, &ballista)
            .await
            .can_follow()
            .then_some(ballista)
    }

    async fn follow(&self, ballista: &str) -> Result<Pass, JobError> {
        let mut scheduler = self.inner.cluster.scheduler().await.map_err(failed)?;
        let batches =
            reattach::wait_for_result(&mut scheduler, ballista, self.inner.cluster.flight_endpoint())
                .await
                .map_err(failed)?;
        pass(ballista, &batches)
    }

    /// Submits a pass to the cluster and waits for it; gives up on it if it stalls after the
    /// cluster lost an executor.
    async fn run_on_cluster(
        &self,
        session: &SessionContext,
        job: &JobRecord,
        table: WritePlanTable,
    ) -> Result<Pass, JobError> {
        let plan = session
            .read_table(Arc::new(table))
            .map_err(failed)?
            .create_physical_plan()
            .await
            .map_err(failed)?;
        let distributed = plan
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .ok_or_else(|| failed("the runner's plan is not a Ballista plan"))?;
        let executors = match &self.inner.stall {
            Some(watch) => watch.executors().await.ok(),
            None => None,
        };
        let query = collect(plan.clone(), session.task_ctx());
        tokio::pin!(query);
        // Until the scheduler has accepted the query: its Ballista job id, recorded at once so
        // that the job can be cancelled or taken over.
        let ballista = tokio::select! {
            ballista = accepted(distributed) => ballista,
            finished = &mut query => {
                let batches = finished.map_err(failed)?;
                let ballista = distributed
                    .job_id()
                    .ok_or_else(|| failed("the cluster did not say which Ballista job ran this pass"))?;
                self.record_ballista_job(job, ballista.as_str()).await;
                return pass(ballista.as_str(), &batches);
            }
        };
        self.record_ballista_job(job, &ballista).await;
        let stalled = async {
            match (&self.inner.stall, executors) {
                (Some(watch), Some(executors)) => watch.stalled(&ballista, executors).await,
                _ => std::future::pending().await,
            }
        };
        let batches = tokio::select! {
            batches = &mut query => batches.map_err(failed)?,
            reason = stalled => return Err(JobError::Stalled(reason)),
        };
        pass(&ballista, &batches)
    }

    async fn record_ballista_job(&self, job: &JobRecord, ballista: &str) {
        if let Err(error) = self.inner.db.add_ballista_job(&job.id, ballista).await {
            tracing::warn!(job = %job.id, %error, "cannot record the Ballista job id");
        }
    }

    /// Removes every file of the job's results but those its finished passes wrote.
    async fn keep_files(&self, id: &str, finished: &[Pass]) -> Result<(), JobError> {
        let dir = self.results_dir(id);
        let store = storage::object_store_for(dir.url(), &self.inner.settings.s3).map_err(failed)?;
        let keep: Vec<&str> = finished
            .iter()
            .flat_map(|pass| &pass.written)
            .map(|file| file.path.as_str())
            .collect();
        let removed = dir.retain_only(&store, &keep).await.map_err(failed)?;
        if removed > 0 {
            tracing::info!(job = %id, removed, "removed files of retried or interrupted tasks");
        }
        Ok(())
    }

    async fn keep_finished_passes(&self, job: &JobRecord) -> Result<(), JobError> {
        self.keep_files(&job.id, &PassLog::of(job).finished).await
    }

    /// Keeps exactly the files the summaries name, gives every output without rows an empty
    /// file (so it has a schema), and counts rows per output.
    async fn publish(
        &self,
        dir: &CacheDir,
        written: Vec<WrittenFile>,
        schemas: &HashMap<String, SchemaRef>,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, u64>, JobError> {
        let store = storage::object_store_for(dir.url(), &self.inner.settings.s3).map_err(failed)?;
        let keep: Vec<&str> = written.iter().map(|f| f.path.as_str()).collect();
        let removed = dir.retain_only(&store, &keep).await.map_err(failed)?;
        if removed > 0 {
            tracing::info!(dir = %dir.as_str(), removed, "removed files no task reported");
        }
        let mut counts: BTreeMap<String, u64> = outputs.iter().map(|o| (o.to_string(), 0)).collect();
        for file in &written {
            if let Some(count) = counts.get_mut(output_of(&file.path)) {
                *count += file.rows;
            }
        }
        for output in outputs {
            let has_file = written.iter().any(|f| output_of(&f.path) == *output);
            if has_file {
                continue;
            }
            let schema = schemas
                .get(*output)
                .cloned()
                .ok_or_else(|| failed(format!("no schema for output {output}")))?;
            let path = dir.join(&[output]).path().map_err(failed)?;
            write_empty(&store, path, schema).await.map_err(failed)?;
        }
        Ok(counts)
    }

    async fn cancel_ballista_jobs(&self, job: &JobRecord) {
        if job.ballista_job_ids.is_empty() {
            return;
        }
        let mut scheduler = match self.inner.cluster.scheduler().await {
            Ok(scheduler) => scheduler,
            Err(error) => {
                tracing::warn!(job = %job.id, %error, "cannot cancel the job's Ballista jobs");
                return;
            }
        };
        for ballista in &job.ballista_job_ids {
            let cancelled = scheduler
                .cancel_job(CancelJobParams {
                    job_id: ballista.clone(),
                })
                .await;
            if let Err(error) = cancelled {
                tracing::warn!(job = %job.id, ballista, %error, "cannot cancel a Ballista job");
            }
        }
    }

    async fn discard_results(&self, id: &str) {
        let dir = self.results_dir(id);
        let deleted = match storage::object_store_for(dir.url(), &self.inner.settings.s3) {
            Ok(store) => dir.delete_all(&store).await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = deleted {
            tracing::warn!(job = %id, %error, "cannot remove a job's partial results");
        }
    }

    /// POSTs the job's state to its callback URL, retrying with backoff, without holding up the job.
    async fn notify(&self, job: &JobRecord, event: &'static str) {
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
                tokio::time::sleep(Duration::from_millis(500) * 2_u32.pow(attempt)).await;
            }
        });
    }
}

/// The job as the API shows it; while it runs, its phase.
fn view(record: JobRecord) -> JobView {
    JobView {
        progress: (record.status == JobStatus::Running).then(|| json!({"phase": record.phase})),
        outputs: outputs_of(&record.job_type)
            .iter()
            .map(|o| o.to_string())
            .collect(),
        summary: record
            .counts_json
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        id: record.id,
        job_type: record.job_type,
        status: record.status,
        recipe_id: record.recipe_id,
        error: record.error,
        ballista_job_ids: record.ballista_job_ids,
        attempts: record.attempts,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
    }
}

/// A finished pass of a job: its Ballista job and the files it wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pass {
    ballista_job_id: String,
    written: Vec<WrittenFile>,
}

/// The passes of one run of a job: those an earlier run finished are not run again, and the
/// first unfinished one may take over the Ballista job the interrupted run left.
struct PassLog {
    finished: Vec<Pass>,
    /// The next pass the run asks for.
    next: usize,
    /// The interrupted run's last Ballista job, if it is not a finished pass.
    follow: Option<String>,
}

impl PassLog {
    fn of(job: &JobRecord) -> Self {
        let finished: Vec<Pass> = serde_json::from_str(&job.passes_json).unwrap_or_else(|error| {
            tracing::warn!(job = %job.id, %error, "unreadable record of finished passes; running them again");
            Vec::new()
        });
        let follow = job
            .ballista_job_ids
            .last()
            .filter(|last| !finished.iter().any(|p| &p.ballista_job_id == *last))
            .cloned();
        Self {
            finished,
            next: 0,
            follow,
        }
    }
}

/// What a run produced: rows per output, and how long each pass took.
#[derive(Debug, Default)]
struct RunSummary {
    counts: BTreeMap<String, u64>,
    timings: BTreeMap<String, u64>,
}

/// The outputs a job of this type has.
pub fn outputs_of(job_type: &str) -> &'static [&'static str] {
    match job_type {
        "recon" => &OUTPUTS,
        _ => &[QUERY_OUTPUT],
    }
}

/// The output a written file belongs to: its directory's name.
fn output_of(path: &str) -> &str {
    path.rsplit('/').nth(1).unwrap_or_default()
}

fn output_schemas(schema: &Schema, split: &Split) -> HashMap<String, SchemaRef> {
    split
        .outputs
        .iter()
        .filter_map(|o| Some((o.name.clone(), Arc::new(schema.project(&o.columns).ok()?))))
        .collect()
}

fn filtered(frame: DataFrame, side: &Side) -> Result<DataFrame, JobError> {
    let fields: Vec<_> = frame.schema().fields().iter().cloned().collect();
    match predicate(&fields, &side.filters).map_err(|e| JobError::InvalidRequest(e.to_string()))? {
        Some(predicate) => frame.filter(predicate).map_err(failed),
        None => Ok(frame),
    }
}

/// The Ballista job id of a query once the scheduler has accepted it.
async fn accepted(query: &DistributedQueryExec<LogicalPlanNode>) -> String {
    loop {
        if let Some(ballista) = query.job_id() {
            return ballista.as_str().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writing `frame` into `dir`, its rows routed to outputs by `split`.
fn split_write(frame: &DataFrame, dir: &CacheDir, split: Split) -> WritePlanTable {
    WritePlanTable::new(
        frame.logical_plan().clone(),
        SinkSpec {
            directory: dir.as_str().to_string(),
            split: Some(split),
        },
    )
}

/// A finished pass: the files its summary rows name.
fn pass(ballista: &str, summary: &[RecordBatch]) -> Result<Pass, JobError> {
    Ok(Pass {
        ballista_job_id: ballista.to_string(),
        written: written_files(summary).map_err(failed)?,
    })
}
