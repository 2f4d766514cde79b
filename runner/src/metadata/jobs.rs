//! The `jobs` table: every submitted job, its state, and what it produced.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{MetadataDb, MetadataError, now, unique_violation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    pub job_type: String,
    pub status: JobStatus,
    pub recipe_id: Option<String>,
    pub spec_json: String,
    pub callback_url: Option<String>,
    pub phase: Option<String>,
    /// Ballista job ids, oldest first.
    pub ballista_job_ids: Vec<String>,
    /// The passes that finished and what they wrote (JSON, the jobs module's format).
    pub passes_json: String,
    /// What a reconciliation run was given and read (JSON, the jobs module's format).
    pub inputs_json: Option<String>,
    pub attempts: i64,
    /// The runner holding the job (it queued it or took it over); none for a job left from
    /// before leases.
    pub owner: Option<String>,
    pub counts_json: Option<String>,
    pub result_url: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// When its result files were deleted, by hand or by the retention sweep.
    pub results_deleted_at: Option<String>,
}

impl FromRow<'_, AnyRow> for JobRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let ballista: String = row.try_get("ballista_job_ids")?;
        Ok(Self {
            id: row.try_get("id")?,
            job_type: row.try_get("job_type")?,
            status: JobStatus::parse(&status).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "status".into(),
                source: format!("unknown job status {status:?}").into(),
            })?,
            recipe_id: row.try_get("recipe_id")?,
            spec_json: row.try_get("spec_json")?,
            callback_url: row.try_get("callback_url")?,
            phase: row.try_get("phase")?,
            ballista_job_ids: ballista
                .split(',')
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect(),
            passes_json: row.try_get("passes_json")?,
            inputs_json: row.try_get("inputs_json")?,
            attempts: row.try_get("attempts")?,
            owner: row.try_get("owner")?,
            counts_json: row.try_get("counts_json")?,
            result_url: row.try_get("result_url")?,
            error: row.try_get("error")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            results_deleted_at: row.try_get("results_deleted_at")?,
        })
    }
}

const COLUMNS: &str = "id, job_type, status, recipe_id, spec_json, callback_url, phase, ballista_job_ids, \
                       passes_json, inputs_json, attempts, owner, counts_json, result_url, error, created_at, started_at, finished_at, \
                       results_deleted_at";

/// Which jobs a list holds: any of each part not given.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobFilter<'a> {
    pub status: Option<JobStatus>,
    pub recipe_id: Option<&'a str>,
    /// Made at or after (a stored timestamp).
    pub since: Option<&'a str>,
    /// Made before.
    pub until: Option<&'a str>,
}

/// A job to queue.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub job_type: &'a str,
    pub recipe_id: Option<&'a str>,
    pub spec_json: &'a str,
    pub inputs_json: Option<&'a str>,
    pub callback_url: Option<&'a str>,
}

/// A runner's hold on a job: no other runner takes the job over before `until` (a stored
/// timestamp) unless `owner` lets it go.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub owner: &'a str,
    pub until: &'a str,
}

/// How a job ended.
#[derive(Debug, Clone, Copy)]
pub struct JobEnd<'a> {
    /// The runner that must still hold the job for its end to count (its worker); `None` for a
    /// cancel by request, which any runner may record.
    pub owner: Option<&'a str>,
    pub status: JobStatus,
    pub counts_json: Option<&'a str>,
    pub result_url: Option<&'a str>,
    pub error: Option<&'a str>,
}

fn not_found(id: &str) -> MetadataError {
    MetadataError::NotFound {
        kind: "job",
        name: id.to_string(),
    }
}

impl MetadataDb {
    /// Queues a job, held by the runner that queued it.
    pub async fn insert_job(&self, job: NewJob<'_>, lease: Lease<'_>) -> Result<JobRecord, MetadataError> {
        sqlx::query(
            "INSERT INTO jobs (id, job_type, status, recipe_id, spec_json, callback_url, created_at, owner, \
             lease_until, inputs_json) VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(job.id)
        .bind(job.job_type)
        .bind(job.recipe_id)
        .bind(job.spec_json)
        .bind(job.callback_url)
        .bind(now())
        .bind(lease.owner)
        .bind(lease.until)
        .bind(job.inputs_json)
        .execute(self.pool())
        .await
        .map_err(|e| unique_violation(e, "job", job.id))?;
        self.job(job.id).await
    }

    pub async fn job(&self, id: &str) -> Result<JobRecord, MetadataError> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// The jobs whose id is `id` but for case (SQL folds unquoted names to lower case), at most
    /// two: more than one leaves the name ambiguous.
    pub async fn jobs_ignoring_case(&self, id: &str) -> Result<Vec<JobRecord>, MetadataError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE lower(id) = lower($1) LIMIT 2"
        ))
        .bind(id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Jobs newest first, those `filter` names.
    pub async fn list_jobs(
        &self,
        filter: &JobFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<JobRecord>, MetadataError> {
        let conditions = [
            ("status = ", filter.status.map(JobStatus::as_str)),
            ("recipe_id = ", filter.recipe_id),
            ("created_at >= ", filter.since),
            ("created_at < ", filter.until),
        ];
        let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE 1 = 1");
        let mut values = Vec::new();
        for (condition, value) in conditions {
            if let Some(value) = value {
                values.push(value);
                sql.push_str(&format!(" AND {condition}${}", values.len()));
            }
        }
        let n = values.len();
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        ));
        let mut query = sqlx::query_as(&sql);
        for value in values {
            query = query.bind(value);
        }
        Ok(query.bind(limit).bind(offset).fetch_all(self.pool()).await?)
    }

    /// How many jobs are in each status (every status listed).
    pub async fn jobs_by_status(&self) -> Result<Vec<(String, i64)>, MetadataError> {
        let found: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            .fetch_all(self.pool())
            .await?;
        Ok(JobStatus::ALL
            .iter()
            .map(|status| {
                let count = found
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| *n);
                (status.as_str().to_string(), count)
            })
            .collect())
    }

    /// Records that a finished job's result files were deleted (once: later calls change nothing).
    pub async fn mark_results_deleted(&self, id: &str) -> Result<(), MetadataError> {
        sqlx::query(
            "UPDATE jobs SET results_deleted_at = $1 WHERE id = $2 AND results_deleted_at IS NULL \
             AND status IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Takes back [`Self::mark_results_deleted`] for results that could not be deleted.
    pub async fn clear_results_deleted(&self, id: &str) -> Result<(), MetadataError> {
        sqlx::query("UPDATE jobs SET results_deleted_at = NULL WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Finished jobs, oldest first, that finished before `before` and still have their results.
    pub async fn expired_results(&self, before: &str, limit: i64) -> Result<Vec<JobRecord>, MetadataError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') \
             AND results_deleted_at IS NULL AND finished_at < $1 ORDER BY finished_at, id LIMIT $2"
        ))
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Unfinished jobs no runner holds: their lease passed (the runner died) or was let go.
    pub async fn unheld_jobs(&self) -> Result<Vec<JobRecord>, MetadataError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE status IN ('queued', 'running') \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY created_at, id"
        ))
        .bind(now())
        .fetch_all(self.pool())
        .await?)
    }

    /// Takes over an unfinished job if no runner holds it (compare-and-set on its lease, so of
    /// runners trying at once one wins); false if another runner holds it or it has ended.
    pub async fn take_over_job(&self, id: &str, lease: Lease<'_>) -> Result<bool, MetadataError> {
        let taken = sqlx::query(
            "UPDATE jobs SET owner = $1, lease_until = $2 WHERE id = $3 AND status IN ('queued', 'running') \
             AND (lease_until IS NULL OR lease_until < $4)",
        )
        .bind(lease.owner)
        .bind(lease.until)
        .bind(id)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Extends the lease of every unfinished job `lease.owner` holds; returns their ids (a job
    /// missing from them was cancelled or taken over elsewhere).
    pub async fn renew_leases(&self, lease: Lease<'_>) -> Result<Vec<String>, MetadataError> {
        let held: Vec<(String,)> = sqlx::query_as(
            "UPDATE jobs SET lease_until = $1 WHERE owner = $2 AND status IN ('queued', 'running') RETURNING id",
        )
        .bind(lease.until)
        .bind(lease.owner)
        .fetch_all(self.pool())
        .await?;
        Ok(held.into_iter().map(|(id,)| id).collect())
    }

    /// Lets go of the unfinished jobs `owner` holds, for another runner to take over now.
    pub async fn release_leases(&self, owner: &str) -> Result<u64, MetadataError> {
        let released = sqlx::query(
            "UPDATE jobs SET lease_until = NULL WHERE owner = $1 AND status IN ('queued', 'running')",
        )
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(released.rows_affected())
    }

    /// Lets go of every unfinished job: for a runner starting on a SQLite metadata DB, which no
    /// other runner can share, so whatever a previous process held is free.
    pub async fn release_all_leases(&self) -> Result<u64, MetadataError> {
        let released =
            sqlx::query("UPDATE jobs SET lease_until = NULL WHERE status IN ('queued', 'running')")
                .execute(self.pool())
                .await?;
        Ok(released.rows_affected())
    }

    /// Queued → running, by the runner holding it; false if the job is no longer queued
    /// (cancelled meanwhile) or held by another runner.
    pub async fn start_job(&self, id: &str, lease: Lease<'_>) -> Result<bool, MetadataError> {
        let started = sqlx::query(
            "UPDATE jobs SET status = 'running', started_at = $1, attempts = attempts + 1, phase = 'planning', \
             lease_until = $2 WHERE id = $3 AND status = 'queued' AND owner = $4",
        )
        .bind(now())
        .bind(lease.until)
        .bind(id)
        .bind(lease.owner)
        .execute(self.pool())
        .await?;
        Ok(started.rows_affected() == 1)
    }

    /// Running → queued again, for a job whose runner stopped before it finished.
    pub async fn requeue_job(&self, id: &str) -> Result<(), MetadataError> {
        sqlx::query("UPDATE jobs SET status = 'queued', phase = NULL WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn set_job_phase(&self, id: &str, phase: &str) -> Result<(), MetadataError> {
        sqlx::query("UPDATE jobs SET phase = $1 WHERE id = $2")
            .bind(phase)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn add_ballista_job(&self, id: &str, ballista_job_id: &str) -> Result<(), MetadataError> {
        // One statement, so ids recorded at the same time are all kept.
        sqlx::query(
            "UPDATE jobs SET ballista_job_ids = CASE WHEN ballista_job_ids = '' THEN $1 \
             ELSE ballista_job_ids || ',' || $1 END WHERE id = $2",
        )
        .bind(ballista_job_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn set_job_passes(&self, id: &str, passes_json: &str) -> Result<(), MetadataError> {
        sqlx::query("UPDATE jobs SET passes_json = $1 WHERE id = $2")
            .bind(passes_json)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records how an unfinished job ended; false if it had already ended (e.g. was cancelled)
    /// or `end.owner` no longer holds it.
    pub async fn finish_job(&self, id: &str, end: JobEnd<'_>) -> Result<bool, MetadataError> {
        const FINISH: &str = "UPDATE jobs SET status = $1, counts_json = $2, result_url = $3, error = $4, \
                              finished_at = $5, phase = NULL WHERE id = $6 AND status IN ('queued', 'running')";
        let query = match end.owner {
            Some(_) => format!("{FINISH} AND owner = $7"),
            None => FINISH.to_string(),
        };
        let update = sqlx::query(&query)
            .bind(end.status.as_str())
            .bind(end.counts_json)
            .bind(end.result_url)
            .bind(end.error)
            .bind(now())
            .bind(id);
        let update = match end.owner {
            Some(owner) => update.bind(owner),
            None => update,
        };
        Ok(update.execute(self.pool()).await?.rows_affected() == 1)
    }
}
