//! How a runner holds its jobs under leases in the metadata DB, so that several runners can
//! serve one metadata DB: it renews the leases of the jobs it holds, takes over the jobs no live
//! runner holds, stops work on jobs it no longer holds, and lets its jobs go when it stops.
//!
//! A runner that dies stops renewing; once its leases pass, the first runner to look takes each of
//! its jobs over with a compare-and-set on the lease, so one runner resumes it. Lease times are
//! the runners' clocks, which must agree to well within a lease.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::{JobError, Jobs};
use crate::metadata::{Lease, after};

/// The shortest time between two looks at the leases, however short the lease.
const SHORTEST_LOOK: Duration = Duration::from_millis(250);

impl Jobs {
    /// The id under which this runner holds jobs.
    pub fn runner_id(&self) -> &str {
        &self.inner.runner_id
    }

    /// Whether the runner is stopping: it has handed its jobs over and takes no more.
    pub fn stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// When a lease taken or renewed now ends, as stored.
    pub(super) fn lease_end(&self) -> String {
        after(self.inner.settings.lease)
    }

    /// This runner's lease until `until`.
    pub(super) fn lease<'a>(&'a self, until: &'a str) -> Lease<'a> {
        Lease {
            owner: &self.inner.runner_id,
            until,
        }
    }

    /// Every quarter lease until the runner stops: renews this runner's leases, then takes over
    /// the jobs no runner holds.
    pub(super) async fn keep_leases(self) {
        let mut look = tokio::time::interval((self.inner.settings.lease / 4).max(SHORTEST_LOOK));
        look.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            look.tick().await;
            if self.stopping() {
                return;
            }
            // A metadata DB that is away is looked at again next time; a lease outlives a few misses.
            if let Err(error) = self.renew_leases().await {
                tracing::warn!(%error, "cannot renew this runner's job leases");
            }
            if let Err(error) = self.take_over_unheld_jobs().await {
                tracing::warn!(%error, "cannot look for jobs no runner holds");
            }
        }
    }

    /// Renews the leases of this runner's jobs, and stops the work here on any job it turns out
    /// not to hold any more (cancelled through another runner, or taken over after this runner
    /// could not renew in time): that runner has it now.
    async fn renew_leases(&self) -> Result<(), JobError> {
        let until = self.lease_end();
        let held: HashSet<String> = self
            .inner
            .db
            .renew_leases(self.lease(&until))
            .await?
            .into_iter()
            .collect();
        let mut running = self.inner.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|id, task| {
            if held.contains(id) {
                return true;
            }
            tracing::warn!(job = %id, "this runner no longer holds the job (cancelled or taken over elsewhere); stopping its work here");
            task.abort();
            false
        });
        Ok(())
    }

    /// Takes over each unfinished job no runner holds and queues it here, after what
    /// [`Jobs::recover`] does with a job its runner left.
    async fn take_over_unheld_jobs(&self) -> Result<(), JobError> {
        for job in self.inner.db.unheld_jobs().await? {
            let until = self.lease_end();
            if !self.inner.db.take_over_job(&job.id, self.lease(&until)).await? {
                continue; // another runner was quicker, or the job ended meanwhile
            }
            tracing::warn!(job = %job.id, previous = job.owner.as_deref().unwrap_or("none"), status = job.status.as_str(), "taking over a job no runner holds");
            if self.recover(&job).await? {
                self.enqueue(job.id);
            }
        }
        Ok(())
    }

    /// Puts a job this runner holds at the end of its queue, without waiting for room: the
    /// caller may be one of the workers that make room.
    pub(super) fn enqueue(&self, id: String) {
        let queue = self.inner.queue.clone();
        tokio::spawn(async move { queue.send(id).await });
    }

    /// On shutdown: stops this runner's work on its jobs and lets them go, so another runner
    /// takes them over at once instead of after their leases (a Ballista job still running is
    /// taken over where it is).
    pub async fn hand_over(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let running: Vec<_> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, task) in running {
            task.abort();
        }
        match self.inner.db.release_leases(&self.inner.runner_id).await {
            Ok(jobs) => tracing::info!(
                jobs,
                "let go of this runner's unfinished jobs for another runner to take over"
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot let go of this runner's jobs; another runner takes them over when their leases pass")
            }
        }
    }
}
