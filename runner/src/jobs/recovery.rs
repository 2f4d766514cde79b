//! What becomes of a job whose runner left it unfinished (stopped or died), once another runner
//! (or the same one, restarted) has taken it over.

use super::run::PassLog;
use super::{JobError, Jobs, MAX_ATTEMPTS};
use crate::metadata::{JobRecord, JobStatus};

/// What a job a previous runner left is owed.
#[derive(Debug, PartialEq, Eq)]
enum Recovery {
    /// Queued: it waits again.
    Wait,
    /// Running: it is taken up again (its Ballista job taken over, or its pass run again).
    Resume,
    /// Interrupted too often: it fails, saying why.
    GiveUp(String),
}

fn recovery(job: &JobRecord) -> Recovery {
    if job.status != JobStatus::Running {
        return Recovery::Wait;
    }
    if job.attempts >= MAX_ATTEMPTS {
        return Recovery::GiveUp(format!(
            "the runner stopped during this job {} times; not retrying",
            job.attempts
        ));
    }
    Recovery::Resume
}

impl Jobs {
    /// A job this runner has just taken over from a runner that left it: a queued one waits
    /// again; a running one takes over its Ballista job if the scheduler still runs it, else has
    /// it cancelled and the interrupted pass's files removed, and runs again from that pass; one
    /// interrupted [`MAX_ATTEMPTS`] times is failed. Returns whether to queue the job.
    pub(super) async fn recover(&self, job: &JobRecord) -> Result<bool, JobError> {
        match recovery(job) {
            Recovery::Wait => {}
            Recovery::GiveUp(reason) => {
                self.cancel_ballista_jobs(job).await;
                self.discard_results(&job.id).await;
                self.end(&job.id, JobStatus::Failed, None, Some(&reason)).await;
                return Ok(false);
            }
            Recovery::Resume => {
                self.resume(job).await?;
                self.inner.db.requeue_job(&job.id).await?;
            }
        }
        Ok(true)
    }

    /// Leaves the job's Ballista job running if it can be taken over; else cancels it and keeps
    /// only the files of finished passes.
    async fn resume(&self, job: &JobRecord) -> Result<(), JobError> {
        if let Some(ballista) = self.followable(&PassLog::of(job)).await {
            tracing::warn!(job = %job.id, ballista, "the runner stopped during this job; taking over its Ballista job");
            return Ok(());
        }
        tracing::warn!(job = %job.id, attempt = job.attempts, "the runner stopped during this job; running it again after its last finished pass");
        self.cancel_ballista_jobs(job).await;
        self.keep_finished_passes(job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_job;

    #[test]
    fn queued_jobs_wait_and_running_ones_resume_until_given_up() {
        assert_eq!(recovery(&test_job("query", JobStatus::Queued)), Recovery::Wait);
        let mut running = test_job("recon", JobStatus::Running);
        running.attempts = MAX_ATTEMPTS - 1;
        assert_eq!(recovery(&running), Recovery::Resume);
        running.attempts = MAX_ATTEMPTS;
        let Recovery::GiveUp(reason) = recovery(&running) else {
            panic!("a job interrupted {MAX_ATTEMPTS} times is given up");
        };
        assert!(reason.contains(&format!("{MAX_ATTEMPTS} times")), "{reason}");
    }
}
