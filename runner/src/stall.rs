//! Noticing a Ballista job that stopped making progress after the cluster lost an executor.
//!
//! Ballista 55 reruns the tasks a lost executor was running, but not always the shuffle output
//! later stages still need from it (apache/datafusion-ballista#2027), so such a job can wait
//! forever. While a job runs on a remote cluster the runner watches the scheduler's REST API:
//! once an executor that was there when the job started is gone and no task has finished for the
//! stall timeout, the job is given up on, so that it can be run again from the start.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ballista_api_types::dto::TaskStatus;
use serde::Serialize;

use crate::scheduler_api::{ApiError, SchedulerApi};

/// How often the scheduler is asked while a job runs.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches jobs through the scheduler's REST API.
#[derive(Clone)]
pub struct StallWatch {
    api: SchedulerApi,
    timeout: Duration,
}

/// A stage of a Ballista job as the scheduler reports it. A job progresses when any of this
/// changes for any stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageProgress {
    pub stage_id: String,
    pub status: String,
    pub tasks_finished: usize,
    pub tasks: usize,
}

type Progress = Vec<StageProgress>;

impl StallWatch {
    pub fn new(api: SchedulerApi, timeout: Duration) -> Self {
        Self { api, timeout }
    }

    /// The ids of the executors registered with the scheduler now.
    pub async fn executors(&self) -> Result<BTreeSet<String>, ApiError> {
        let executors = self.api.executors().await?;
        Ok(executors.into_iter().map(|e| e.id).collect())
    }

    /// Returns, with the reason, once the Ballista job `job_id` has made no progress for the
    /// stall timeout since an executor of `before` (or one that joined later) left the cluster;
    /// never returns while the job progresses or no executor is lost.
    pub async fn stalled(&self, job_id: &str, before: BTreeSet<String>) -> String {
        let mut clock = StallClock::new(before, self.timeout, Instant::now());
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            if !clock.lost_executor()
                && let Ok(now) = self.executors().await
            {
                clock.executors_now(&now, Instant::now());
                if clock.lost_executor() {
                    tracing::warn!(ballista_job = %job_id, lost = ?clock.lost, "the cluster lost an executor during a job");
                }
            }
            if let Some(progress) = self.progress(job_id).await {
                clock.progress_now(progress, Instant::now());
            }
            if let Some(reason) = clock.stalled(Instant::now()) {
                return reason;
            }
        }
    }

    /// Each stage of the job; `None` if the scheduler does not answer.
    pub async fn progress(&self, job_id: &str) -> Option<Vec<StageProgress>> {
        let stages = self.api.stages(job_id).await.ok()?;
        Some(
            stages
                .stages
                .into_iter()
                .map(|stage| {
                    let tasks: Vec<_> = stage.tasks.iter().flatten().collect();
                    let finished = tasks
                        .iter()
                        .filter(|task| matches!(task.status, TaskStatus::Successful))
                        .count();
                    StageProgress {
                        tasks_finished: finished,
                        tasks: tasks.len(),
                        stage_id: stage.stage_id,
                        status: stage.stage_status,
                    }
                })
                .collect(),
        )
    }
}

/// The decision apart from the HTTP calls, fed what the scheduler reports.
struct StallClock {
    before: BTreeSet<String>,
    timeout: Duration,
    lost: Vec<String>,
    progress: Option<Progress>,
    last_change: Instant,
}

impl StallClock {
    fn new(before: BTreeSet<String>, timeout: Duration, now: Instant) -> Self {
        Self {
            before,
            timeout,
            lost: Vec::new(),
            progress: None,
            last_change: now,
        }
    }

    fn lost_executor(&self) -> bool {
        !self.lost.is_empty()
    }

    fn executors_now(&mut self, executors: &BTreeSet<String>, now: Instant) {
        if self.lost_executor() {
            return;
        }
        self.lost = self.before.difference(executors).cloned().collect();
        // One that joins during the job may take its tasks, and be lost as well.
        self.before.extend(executors.iter().cloned());
        if self.lost_executor() {
            // The timeout counts from the loss: the job may have been waiting on it already.
            self.last_change = now;
        }
    }

    fn progress_now(&mut self, progress: Progress, now: Instant) {
        if self.progress.as_ref() != Some(&progress) {
            self.progress = Some(progress);
            self.last_change = now;
        }
    }

    fn stalled(&self, now: Instant) -> Option<String> {
        if !self.lost_executor() || now.duration_since(self.last_change) < self.timeout {
            return None;
        }
        Some(format!(
            "the cluster lost executor {} and the job made no progress for {} s after that",
            self.lost.join(", "),
            self.timeout.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn executors(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    fn finished(tasks: usize) -> Progress {
        vec![StageProgress {
            stage_id: "1".into(),
            status: "Running".into(),
            tasks_finished: tasks,
            tasks: 8,
        }]
    }

    fn after(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_job_without_progress_is_not_stalled_while_no_executor_is_lost() {
        let start = Instant::now();
        let mut clock = StallClock::new(executors(&["a", "b"]), TIMEOUT, start);
        clock.progress_now(finished(0), start);
        clock.executors_now(&executors(&["a", "b", "c"]), after(start, 100));
        assert_eq!(clock.stalled(after(start, 1000)), None);
    }

    #[test]
    fn a_lost_executor_and_no_progress_for_the_timeout_is_a_stall() {
        let start = Instant::now();
        let mut clock = StallClock::new(executors(&["a", "b"]), TIMEOUT, start);
        clock.progress_now(finished(3), start);
        clock.executors_now(&executors(&["b"]), after(start, 60));
        assert_eq!(clock.stalled(after(start, 69)), None, "counts from the loss");
        clock.progress_now(finished(3), after(start, 69));
        let reason = clock.stalled(after(start, 70)).expect("stalled");
        assert!(
            reason.contains("executor a") && reason.contains("10 s"),
            "{reason}"
        );
    }

    #[test]
    fn progress_after_a_loss_keeps_the_job_alive() {
        let start = Instant::now();
        let mut clock = StallClock::new(executors(&["a", "b"]), TIMEOUT, start);
        clock.executors_now(&executors(&["b"]), start);
        for second in 1..=5 {
            clock.progress_now(finished(second as usize), after(start, second * 8));
            assert_eq!(clock.stalled(after(start, second * 8 + 9)), None);
        }
        assert!(clock.stalled(after(start, 50)).is_some());
    }

    #[test]
    fn an_executor_that_joined_during_the_job_can_be_lost_too() {
        let start = Instant::now();
        let mut clock = StallClock::new(executors(&["a"]), TIMEOUT, start);
        clock.executors_now(&executors(&["a", "c"]), after(start, 1));
        assert_eq!(clock.stalled(after(start, 20)), None);
        clock.executors_now(&executors(&["a"]), after(start, 30));
        let reason = clock.stalled(after(start, 40)).expect("stalled");
        assert!(reason.contains("executor c"), "{reason}");
    }

    #[test]
    fn an_executor_that_comes_back_is_still_lost() {
        let start = Instant::now();
        let mut clock = StallClock::new(executors(&["a", "b"]), TIMEOUT, start);
        clock.executors_now(&executors(&["b"]), start);
        clock.executors_now(&executors(&["a", "b"]), after(start, 1));
        assert!(clock.stalled(after(start, 10)).is_some());
    }
}
