//! Schedules: stored recipes run on a timetable by whichever runner looks first. A tick makes one
//! job across runners and restarts: its job's id is derived from the schedule and the tick, and
//! the metadata DB keeps job ids unique, so a runner that lost the race finds the job made.
//!
//! Ticks missed while no runner was up are coalesced: the next look runs the latest of them once
//! and records how many earlier ones it stands for. A paused schedule's ticks are never run, and
//! a resumed one starts from its next tick.
//!
//! - [`timing`]: when a schedule ticks, and the date a tick gives its run.

mod timing;

use std::time::Duration;

use chrono::{DateTime, Utc};
use kalla_core::recon::params;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::time::MissedTickBehavior;

use timing::{Timing, parse_every, with_tick_date};

use crate::jobs::{JobError, JobRequest, Jobs};
use crate::metadata::{MetadataDb, MetadataError, NewSchedule, ScheduleRecord, TickRecord, timestamp};
use crate::recipes::{RecipeError, Recipes};

/// How often a runner looks for due ticks.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Next run times a schedule shows.
const NEXT_RUNS: usize = 5;
/// Ticks a schedule shows, newest first.
const RECENT_TICKS: i64 = 10;
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
    /// A tick to fire that the schedule does not have, or has yet to reach.
    #[error("{0}")]
    NoSuchTick(String),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// `POST /api/schedules`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub name: String,
    /// The stored recipe's id or name.
    pub recipe: String,
    /// A standard 5-field cron expression (minute hour day-of-month month day-of-week).
    pub cron: Option<String>,
    /// Instead of `cron`, an interval: seconds, or text with `s`, `m`, `h` or `d` (`15m`).
    pub every: Option<Every>,
    /// The IANA time zone `cron` and the tick's date are read in; UTC if not given.
    pub timezone: Option<String>,
    /// The recipe's parameters for each run; a value may name the tick's date as `{tick_date}`,
    /// `{tick_date-1}` (the day before), `{tick_date+N}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    pub callback_url: Option<String>,
}

/// An interval as a number of seconds or as text (`90s`, `15m`, `2h`, `1d`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Every {
    Seconds(i64),
    Text(String),
}

impl Every {
    fn seconds(&self) -> Result<i64, String> {
        match self {
            Self::Seconds(secs) => Ok(*secs),
            Self::Text(text) => parse_every(text),
        }
    }
}

/// `POST /api/schedules/{id}/ticks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FireRequest {
    /// One of the schedule's ticks, as an RFC 3339 time (`2026-11-30T06:00:00+01:00`), or a date
    /// (`2026-11-30`) standing for its first tick that day in the schedule's time zone.
    pub at: String,
}

/// A tick fired by hand, and whether this request made its job.
pub struct Fired {
    pub tick: TickRecord,
    /// The tick's job (the one `tick` records).
    pub job_id: String,
    pub made: bool,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    pub recipe_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<i64>,
    pub timezone: String,
    #[schema(value_type = Object)]
    pub params: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub paused: bool,
    /// The next run times (UTC); none while paused.
    pub next_runs: Vec<String>,
    /// The latest ticks handled, newest first: each one's job, or why it made none.
    pub recent_ticks: Vec<TickRecord>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone)]
pub struct Schedules {
    db: MetadataDb,
    recipes: Recipes,
    jobs: Jobs,
}

impl Schedules {
    pub fn new(db: MetadataDb, recipes: Recipes, jobs: Jobs) -> Self {
        Self { db, recipes, jobs }
    }

    /// Stores a schedule once its timing, recipe, parameters (as its next tick would give them)
    /// and callback URL check.
    pub async fn create(&self, request: ScheduleRequest) -> Result<ScheduleView, ScheduleError> {
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(ScheduleError::Invalid(format!(
                "name must be 1 to {MAX_NAME_CHARS} printable characters"
            )));
        }
        let every_secs = request
            .every
            .as_ref()
            .map(Every::seconds)
            .transpose()
            .map_err(ScheduleError::Invalid)?;
        let timezone = request.timezone.as_deref().unwrap_or("UTC");
        let timing =
            Timing::new(request.cron.as_deref(), every_secs, timezone).map_err(ScheduleError::Invalid)?;
        let recipe = self.recipes.get(&request.recipe).await?;
        let next = timing
            .next(Utc::now(), 1)
            .first()
            .copied()
            .unwrap_or_else(Utc::now);
        let given = tick_params(&request.params, &timing, next)?;
        params::resolve(&recipe.recipe.params, &given).map_err(JobError::from)?;
        if let Some(url) = &request.callback_url {
            self.jobs.check_callback(url).await?;
        }
        let params_json = Value::Object(request.params).to_string();
        let record = self
            .db
            .insert_schedule(NewSchedule {
                name,
                recipe_id: &recipe.id,
                cron: request.cron.as_deref(),
                every_secs,
                timezone,
                params_json: &params_json,
                callback_url: request.callback_url.as_deref(),
            })
            .await?;
        tracing::info!(schedule = %record.id, name = %record.name, "schedule created");
        self.view(record).await
    }

    pub async fn list(&self) -> Result<Vec<ScheduleView>, ScheduleError> {
        let mut views = Vec::new();
        for record in self.db.list_schedules().await? {
            views.push(self.view(record).await?);
        }
        Ok(views)
    }

    /// By id or name.
    pub async fn get(&self, id: &str) -> Result<ScheduleView, ScheduleError> {
        self.view(self.db.schedule(id).await?).await
    }

    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<ScheduleView, ScheduleError> {
        let existing = self.db.schedule(id).await?;
        let record = self.db.set_schedule_paused(&existing.id, paused).await?;
        self.view(record).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), ScheduleError> {
        let existing = self.db.schedule(id).await?;
        Ok(self.db.delete_schedule(&existing.id).await?)
    }

    async fn view(&self, record: ScheduleRecord) -> Result<ScheduleView, ScheduleError> {
        let next_runs = match (record.paused, timing_of(&record)) {
            (false, Ok(timing)) => timing
                .next(Utc::now(), NEXT_RUNS)
                .into_iter()
                .map(timestamp)
                .collect(),
            _ => Vec::new(),
        };
        Ok(ScheduleView {
            recent_ticks: self.db.ticks(&record.id, RECENT_TICKS).await?,
            params: serde_json::from_str(&record.params_json).unwrap_or(Value::Null),
            next_runs,
            id: record.id,
            name: record.name,
            recipe_id: record.recipe_id,
            cron: record.cron,
            every_secs: record.every_secs,
            timezone: record.timezone,
            callback_url: record.callback_url,
            paused: record.paused,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }

    /// Runs one of the schedule's past ticks now, as the ticker would have run it then (the
    /// tick's date in its parameters), paused or not: a tick missed, or a day run again. A tick
    /// has one job however often it is fired or ticked, so firing one that has a job answers
    /// that job. Ticks yet to come are refused: they run by themselves.
    pub async fn fire(&self, id: &str, at: &str) -> Result<Fired, ScheduleError> {
        let schedule = self.db.schedule(id).await?;
        let timing = timing_of(&schedule).map_err(ScheduleError::Invalid)?;
        let tick = timing.tick_named(at).map_err(ScheduleError::NoSuchTick)?;
        if tick > Utc::now() {
            return Err(ScheduleError::NoSuchTick(format!(
                "at: the tick {} is yet to come; the schedule runs it by itself",
                timestamp(tick)
            )));
        }
        let job_id = tick_job_id(&schedule.id, tick);
        let made = match self.db.job(&job_id).await {
            Ok(_) => false,
            Err(MetadataError::NotFound { .. }) => {
                let request = self.tick_request(&schedule, &timing, tick)?;
                match self.jobs.submit_as(job_id.clone(), request).await {
                    Ok(_) => true,
                    Err(JobError::Metadata(MetadataError::Duplicate { .. })) => false,
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) => return Err(error.into()),
        };
        let tick = TickRecord {
            tick_at: timestamp(tick),
            job_id: Some(job_id.clone()),
            missed: 0,
            error: None,
        };
        self.db.record_tick(&schedule.id, &tick).await?;
        tracing::info!(schedule = %schedule.id, tick = %tick.tick_at, made, "a schedule's tick fired by hand");
        Ok(Fired { tick, job_id, made })
    }

    /// Every second until the runner stops: runs each schedule's due tick.
    pub async fn run_ticks(self) {
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            look.tick().await;
            if self.jobs.stopping() {
                return;
            }
            if let Err(error) = self.run_due_ticks(Utc::now()).await {
                tracing::warn!(%error, "cannot run the schedules' due ticks; looking again");
            }
        }
    }

    async fn run_due_ticks(&self, now: DateTime<Utc>) -> Result<(), ScheduleError> {
        for (schedule, last_tick) in self.db.active_schedules().await? {
            let Ok(timing) = timing_of(&schedule) else {
                continue; // checked when stored
            };
            let from = match last_tick {
                Some(last) => last.max(schedule.ticks_from.clone()),
                None => schedule.ticks_from.clone(),
            };
            let Some((tick, count)) = timing.due(parse_stored(&from), now) else {
                continue;
            };
            self.run_tick(&schedule, &timing, tick, count - 1).await?;
        }
        Ok(())
    }

    /// Makes the tick's job, unless another runner did, and records the tick. A tick whose job
    /// cannot be made for a reason that will not pass (its recipe deleted, a source's export
    /// missing) is recorded with the reason; one refused for now (the queue full, the metadata DB
    /// away) is tried again at the next look.
    async fn run_tick(
        &self,
        schedule: &ScheduleRecord,
        timing: &Timing,
        tick: DateTime<Utc>,
        missed: u64,
    ) -> Result<(), ScheduleError> {
        let job_id = tick_job_id(&schedule.id, tick);
        let submitted = match self.tick_request(schedule, timing, tick) {
            Ok(request) => self.jobs.submit_as(job_id.clone(), request).await,
            Err(error) => Err(error),
        };
        let (job_id, error) = match submitted {
            Ok(job) => (Some(job.id), None),
            Err(JobError::Metadata(MetadataError::Duplicate { .. })) => (Some(job_id), None),
            Err(error) if retried(&error) => return Err(error.into()),
            Err(error) => (None, Some(error.to_string())),
        };
        match &error {
            None => {
                tracing::info!(schedule = %schedule.id, tick = %timestamp(tick), missed, "schedule ticked")
            }
            Some(error) => {
                tracing::warn!(schedule = %schedule.id, tick = %timestamp(tick), %error, "a schedule's tick made no job")
            }
        }
        let record = TickRecord {
            tick_at: timestamp(tick),
            job_id,
            missed: missed as i64,
            error,
        };
        Ok(self.db.record_tick(&schedule.id, &record).await?)
    }

    fn tick_request(
        &self,
        schedule: &ScheduleRecord,
        timing: &Timing,
        tick: DateTime<Utc>,
    ) -> Result<JobRequest, JobError> {
        let stored: Map<String, Value> = serde_json::from_str(&schedule.params_json)
            .map_err(|e| JobError::Failed(format!("the schedule's params cannot be read: {e}")))?;
        let params =
            tick_params(&stored, timing, tick).map_err(|e| JobError::InvalidRequest(e.to_string()))?;
        Ok(JobRequest::Recon {
            recipe_id: Some(schedule.recipe_id.clone()),
            recipe: None,
            params,
            callback_url: schedule.callback_url.clone(),
        })
    }
}

/// Whether a tick's job refused with `error` is tried again at the next look.
fn retried(error: &JobError) -> bool {
    match error {
        JobError::QueueFull(_) => true,
        JobError::Metadata(error) => error.is_unavailable(),
        _ => false,
    }
}

fn timing_of(schedule: &ScheduleRecord) -> Result<Timing, String> {
    Timing::new(schedule.cron.as_deref(), schedule.every_secs, &schedule.timezone)
}

/// The parameters a tick gives: `{tick_date…}` in text values replaced by its date.
fn tick_params(
    given: &Map<String, Value>,
    timing: &Timing,
    tick: DateTime<Utc>,
) -> Result<Map<String, Value>, ScheduleError> {
    let date = timing.date_of(tick);
    given
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) => Value::String(
                    with_tick_date(text, date)
                        .map_err(|e| ScheduleError::Invalid(format!("params.{name}: {e}")))?,
                ),
                other => other.clone(),
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// The id of a tick's job: the same on every runner.
fn tick_job_id(schedule_id: &str, tick: DateTime<Utc>) -> String {
    let digest = Sha256::digest(format!("{schedule_id}@{}", timestamp(tick)));
    format!("job_{}", &hex::encode(digest)[..21])
}

/// A stored time; one that does not parse (never written by a runner) counts as now.
fn parse_stored(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticks_job_id_is_the_same_everywhere_and_differs_per_tick() {
        let tick = DateTime::parse_from_rfc3339("2026-12-01T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = tick_job_id("sch_a", tick);
        assert_eq!(id, tick_job_id("sch_a", tick));
        assert_eq!(id.len(), "job_".len() + 21);
        assert_ne!(id, tick_job_id("sch_b", tick));
        assert_ne!(id, tick_job_id("sch_a", tick + chrono::Duration::seconds(5)));
    }

    #[test]
    fn a_tick_gives_its_date_to_text_params() {
        let timing = Timing::new(Some("0 6 * * *"), None, "Europe/Oslo").unwrap();
        let tick = DateTime::parse_from_rfc3339("2026-12-01T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let given: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"run_date": "{tick_date-1}", "limit": 5})).unwrap();
        let params = tick_params(&given, &timing, tick).unwrap();
        assert_eq!(
            Value::Object(params),
            serde_json::json!({"run_date": "2026-11-30", "limit": 5})
        );
    }
}
