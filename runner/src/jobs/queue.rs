//! The workers that take jobs off the queue, run them, and record how each ended.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::run::RunSummary;
use super::{JobError, Jobs, MAX_ATTEMPTS};
use crate::metadata::{JobEnd, JobRecord, JobStatus, retry_while_unavailable};

/// How long a job's end is retried while the metadata DB is unavailable; a job still unrecorded
/// after that is taken over by a runner once its lease passes.
const RECORD_PATIENCE: Duration = Duration::from_secs(600);

impl Jobs {
    pub(super) async fn work(self) {
        loop {
            let next = self.inner.waiting.lock().await.recv().await;
            let Some(id) = next else { return };
            if self.stopping() {
                return; // handed over: another runner takes the job
            }
            if let Err(error) = self.run(&id).await {
                self.lost_track(&id, error).await;
            }
        }
    }

    async fn run(&self, id: &str) -> Result<(), JobError> {
        let until = self.lease_end();
        if !self.inner.db.start_job(id, self.lease(&until)).await? {
            return Ok(()); // cancelled while queued, or taken over by another runner
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
                let summary = succeeded(started.elapsed(), &summary);
                self.end(&job.id, JobStatus::Succeeded, Some(&summary), None)
                    .await;
            }
            Ok(Err(error)) => {
                let latest = self.inner.db.job(id).await?;
                self.cancel_ballista_jobs(&latest).await;
                if runs_again(&error, job.attempts) {
                    tracing::warn!(job = %id, attempt = job.attempts, %error, "running the job again after its last finished pass");
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
        self.enqueue(id.to_string());
        Ok(())
    }

    pub(super) async fn end(
        &self,
        id: &str,
        status: JobStatus,
        summary: Option<&serde_json::Value>,
        error: Option<&str>,
    ) {
        let counts = summary.map(|s| s.to_string());
        let result_url = (status == JobStatus::Succeeded).then(|| self.results_dir(id).as_str().to_string());
        let end = JobEnd {
            owner: Some(self.runner_id()),
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
                    record_metrics(&job, summary);
                    self.notify(&job, event).await;
                }
            }
            Ok(false) => {} // cancelled meanwhile, or taken over by another runner
            Err(error) => {
                tracing::error!(job = %id, %error, "cannot record how a job ended; a runner takes it over when its lease passes")
            }
        }
    }
}

/// Counts a finished job by type and status, times it from start (or queueing) to end, and
/// counts the rows of each output it wrote.
fn record_metrics(job: &JobRecord, summary: Option<&Value>) {
    let labels = [
        ("type", job.job_type.clone()),
        ("status", job.status.as_str().to_string()),
    ];
    metrics::counter!("kalla_jobs_finished_total", &labels).increment(1);
    let time = |at: &str| chrono::DateTime::parse_from_rfc3339(at).ok();
    let began = job.started_at.as_deref().unwrap_or(&job.created_at);
    if let (Some(began), Some(ended)) = (time(began), job.finished_at.as_deref().and_then(time)) {
        let seconds = (ended - began).num_milliseconds().max(0) as f64 / 1e3;
        metrics::histogram!("kalla_job_duration_seconds", &labels).record(seconds);
    }
    let outputs = summary.and_then(|s| s["outputs"].as_object());
    for (output, rows) in outputs.into_iter().flatten() {
        metrics::counter!("kalla_job_output_rows_total", "type" => job.job_type.clone(), "output" => output.clone())
            .increment(rows.as_u64().unwrap_or(0));
    }
}

/// Whether a job that failed with `error` on attempt `attempts` is run again: only a stall (the
/// cluster lost an executor), and only while attempts are left.
fn runs_again(error: &JobError, attempts: i64) -> bool {
    matches!(error, JobError::Stalled(_)) && attempts < MAX_ATTEMPTS
}

/// The summary a succeeded job stores: how long it ran, rows per output, each pass's time, and
/// a reconciliation's rows per output of each of its passes, skew and open items.
fn succeeded(duration: Duration, summary: &RunSummary) -> Value {
    let mut stored = json!({
        "duration_ms": duration.as_millis() as u64,
        "outputs": summary.counts,
        "timings_ms": summary.timings,
    });
    if !summary.pass_counts.is_empty() {
        stored["passes"] = json!(summary.pass_counts);
    }
    if let Some(skew) = &summary.skew {
        stored["skew"] = json!(skew);
    }
    if let Some(open_items) = &summary.open_items {
        stored["open_items"] = json!(open_items);
    }
    stored
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::jobs::run::PassCounts;

    #[test]
    fn only_stalls_run_again_and_not_forever() {
        let stalled = JobError::Stalled("lost an executor".into());
        assert!(runs_again(&stalled, 1));
        assert!(runs_again(&stalled, MAX_ATTEMPTS - 1));
        assert!(!runs_again(&stalled, MAX_ATTEMPTS));
        assert!(!runs_again(&JobError::Failed("bad SQL".into()), 1));
    }

    #[test]
    fn a_summary_has_counts_and_timings() {
        let mut summary = RunSummary::default();
        summary.counts.insert("matched".into(), 7);
        summary.timings.insert("classify".into(), 12);
        let stored = succeeded(Duration::from_millis(1500), &summary);
        assert_eq!(
            stored,
            json!({"duration_ms": 1500, "outputs": {"matched": 7}, "timings_ms": {"classify": 12}})
        );
        summary.pass_counts.push(PassCounts {
            pass: "pass_1".into(),
            outputs: BTreeMap::from([("matched".into(), 7)]),
            passed_on: None,
        });
        let stored = succeeded(Duration::from_millis(1500), &summary);
        assert_eq!(
            stored["passes"],
            json!([{"pass": "pass_1", "outputs": {"matched": 7}}])
        );
    }
}
