//! Jobs as the API shows them: their outputs, summary and, while one runs, its phase and (on a
//! remote cluster) its Ballista job's stages and tasks.

use serde::Serialize;
use serde_json::json;

use super::Jobs;
use super::submit::RunInputs;
use crate::job_outputs::outputs_of;
use crate::metadata::{JobRecord, JobStatus};

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
    /// A reconciliation's parameter values, and where each source was read with them in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<RunInputs>,
    /// The runner that holds (or last held) the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    pub outputs: Vec<String>,
    /// A succeeded job's outputs (until its results are deleted): rows, and where to read each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<OutputView>>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// When its result files were deleted, by request or by the retention sweep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results_deleted_at: Option<String>,
}

/// One output of a succeeded job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutputView {
    pub output: String,
    pub rows: u64,
    /// The API path serving it (`?format=csv|parquet` for a download).
    pub path: String,
    /// The directory of its parquet files, for readers of the store itself.
    pub location: String,
}

impl Jobs {
    /// The job with, while it runs on a remote cluster, its Ballista job's stages.
    pub(super) async fn detailed_view(&self, record: JobRecord) -> JobView {
        let progress = match record.status {
            JobStatus::Running => Some(self.progress(&record).await),
            _ => None,
        };
        let view = view(record);
        JobView {
            progress,
            results: self.results_of(&view),
            ..view
        }
    }

    /// A succeeded job's outputs with their rows, while it has its results.
    fn results_of(&self, job: &JobView) -> Option<Vec<OutputView>> {
        if job.status != JobStatus::Succeeded || job.results_deleted_at.is_some() {
            return None;
        }
        let rows = job.summary.as_ref()?.get("outputs")?;
        let dir = self.results_dir(&job.id);
        Some(
            job.outputs
                .iter()
                .map(|output| OutputView {
                    output: output.clone(),
                    rows: rows.get(output).and_then(|r| r.as_u64()).unwrap_or(0),
                    path: format!("/api/jobs/{}/results/{output}", job.id),
                    location: dir.join(&[output]).as_str().to_string(),
                })
                .collect(),
        )
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
}

/// The job as the API shows it; while it runs, its phase.
pub(super) fn view(record: JobRecord) -> JobView {
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
        runner: record.owner,
        inputs: record
            .inputs_json
            .as_deref()
            .and_then(|inputs| serde_json::from_str(inputs).ok()),
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        results_deleted_at: record.results_deleted_at,
        results: None,
    }
}

#[cfg(test)]
mod tests {
    use kalla_core::recon::plan::OUTPUTS;

    use super::*;
    use crate::job_outputs::QUERY_OUTPUT;
    use crate::jobs::test_job;

    #[test]
    fn a_running_job_shows_its_phase_and_a_finished_one_its_summary() {
        let mut running = test_job("recon", JobStatus::Running);
        running.phase = Some("classifying".into());
        let shown = view(running);
        assert_eq!(shown.progress, Some(json!({"phase": "classifying"})));
        assert_eq!(shown.outputs, OUTPUTS.map(String::from));

        let mut done = test_job("query", JobStatus::Succeeded);
        done.counts_json = Some(r#"{"outputs": {"result": 3}}"#.into());
        let shown = view(done);
        assert_eq!(shown.progress, None);
        assert_eq!(shown.summary, Some(json!({"outputs": {"result": 3}})));
        assert_eq!(shown.outputs, [QUERY_OUTPUT]);
    }
}
