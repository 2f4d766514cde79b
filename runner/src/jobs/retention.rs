//! Deleting a finished job's result files: by request, or by the sweep once they are older than
//! `--results-retention-days`. The job's row, summary and inputs stay (marked with when its
//! results went), and so do the open items it left, which live apart from results.

use std::time::Duration;

use super::views::view;
use super::{JobError, JobView, Jobs};
use crate::job_outputs::OutputError;
use crate::metadata::{JobStatus, ago};

/// Jobs whose results a sweep deletes per query of the metadata DB.
const SWEEP_BATCH: i64 = 100;

impl Jobs {
    /// Deletes a succeeded job's result files; again is no error.
    pub async fn delete_results(&self, id: &str) -> Result<JobView, JobError> {
        let job = self.inner.db.job(id).await?;
        if job.status != JobStatus::Succeeded {
            return Err(OutputError::NoResults(id.to_string()).into());
        }
        self.remove_results(id).await?;
        Ok(view(self.inner.db.job(id).await?))
    }

    /// Marks the job's results deleted, so no reader gets a part of them, then deletes its files;
    /// if they cannot be deleted, the mark goes again so a later sweep retries.
    async fn remove_results(&self, id: &str) -> Result<(), JobError> {
        self.inner.db.mark_results_deleted(id).await?;
        let removed = self.delete_result_files(id).await;
        if removed.is_err() {
            self.inner.db.clear_results_deleted(id).await?;
        }
        tracing::info!(job = %id, removed = removed?, "deleted the job's results");
        Ok(())
    }

    async fn delete_result_files(&self, id: &str) -> Result<usize, JobError> {
        let dir = self.results_dir(id);
        let store = kalla_core::storage::object_store_for(dir.url(), &self.inner.settings.s3)
            .map_err(super::failed)?;
        dir.delete_all(&store).await.map_err(super::failed)
    }

    /// Deletes the results of jobs finished longer than `retention` ago, looking a few times per
    /// `retention` (at least every second, at most every hour). Runners sweeping together at
    /// worst delete the same files twice.
    pub(super) async fn sweep_results(self, retention: Duration) {
        let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.stopping() {
                return;
            }
            if let Err(error) = self.sweep_once(retention).await {
                tracing::warn!(%error, "cannot sweep old results; trying again later");
            }
        }
    }

    /// Deletes every expired job's results, a batch at a time; a job whose files cannot be
    /// deleted is passed over (and tried at the next sweep).
    async fn sweep_once(&self, retention: Duration) -> Result<(), JobError> {
        loop {
            let due = self
                .inner
                .db
                .expired_results(&ago(retention), SWEEP_BATCH)
                .await?;
            let mut failures = 0;
            for job in &due {
                if let Err(error) = self.remove_results(&job.id).await {
                    tracing::warn!(job = %job.id, %error, "cannot delete an expired job's results");
                    failures += 1;
                }
            }
            if (due.len() as i64) < SWEEP_BATCH || failures == due.len() {
                return Ok(());
            }
        }
    }
}
