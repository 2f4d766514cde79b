//! The `schedules` and `schedule_ticks` tables: recipes run on a timetable, and each tick a
//! runner handled.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{MetadataDb, MetadataError, new_id, now, unique_violation};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub id: String,
    pub name: String,
    pub recipe_id: String,
    pub cron: Option<String>,
    pub every_secs: Option<i64>,
    pub timezone: String,
    /// The parameters each run gives (a JSON object; values may name the tick's date).
    pub params_json: String,
    pub callback_url: Option<String>,
    pub paused: bool,
    /// Ticks before this are not run.
    pub ticks_from: String,
    pub created_at: String,
    pub updated_at: String,
}

impl FromRow<'_, AnyRow> for ScheduleRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let paused: i64 = row.try_get("paused")?;
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            recipe_id: row.try_get("recipe_id")?,
            cron: row.try_get("cron")?,
            every_secs: row.try_get("every_secs")?,
            timezone: row.try_get("timezone")?,
            params_json: row.try_get("params_json")?,
            callback_url: row.try_get("callback_url")?,
            paused: paused != 0,
            ticks_from: row.try_get("ticks_from")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const COLUMNS: &str = "id, name, recipe_id, cron, every_secs, timezone, params_json, callback_url, paused, \
                       ticks_from, created_at, updated_at";

/// A schedule to store.
pub struct NewSchedule<'a> {
    pub name: &'a str,
    pub recipe_id: &'a str,
    pub cron: Option<&'a str>,
    pub every_secs: Option<i64>,
    pub timezone: &'a str,
    pub params_json: &'a str,
    pub callback_url: Option<&'a str>,
}

/// A tick a runner handled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TickRecord {
    pub tick_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Earlier ticks, missed while no runner was up, that this one's run stands for.
    pub missed: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FromRow<'_, AnyRow> for TickRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tick_at: row.try_get("tick_at")?,
            job_id: row.try_get("job_id")?,
            missed: row.try_get("missed")?,
            error: row.try_get("error")?,
        })
    }
}

fn not_found(id: &str) -> MetadataError {
    MetadataError::NotFound {
        kind: "schedule",
        name: id.to_string(),
    }
}

impl MetadataDb {
    pub async fn insert_schedule(&self, schedule: NewSchedule<'_>) -> Result<ScheduleRecord, MetadataError> {
        let id = new_id("sch");
        let now = now();
        sqlx::query(&format!(
            "INSERT INTO schedules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9, $9)"
        ))
        .bind(&id)
        .bind(schedule.name)
        .bind(schedule.recipe_id)
        .bind(schedule.cron)
        .bind(schedule.every_secs)
        .bind(schedule.timezone)
        .bind(schedule.params_json)
        .bind(schedule.callback_url)
        .bind(&now)
        .execute(self.pool())
        .await
        .map_err(|e| unique_violation(e, "schedule", schedule.name))?;
        self.schedule(&id).await
    }

    /// The schedule with this id, or else this name.
    pub async fn schedule(&self, id_or_name: &str) -> Result<ScheduleRecord, MetadataError> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE id = $1 OR name = $1 ORDER BY id = $1 DESC LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| not_found(id_or_name))
    }

    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, MetadataError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Pauses or resumes; a resumed schedule runs no tick from before now.
    pub async fn set_schedule_paused(&self, id: &str, paused: bool) -> Result<ScheduleRecord, MetadataError> {
        let now = now();
        let query = if paused {
            "UPDATE schedules SET paused = 1, updated_at = $1 WHERE id = $2"
        } else {
            "UPDATE schedules SET paused = 0, ticks_from = $1, updated_at = $1 WHERE id = $2 AND paused = 1"
        };
        sqlx::query(query)
            .bind(&now)
            .bind(id)
            .execute(self.pool())
            .await?;
        self.schedule(id).await
    }

    /// Deletes the schedule and the record of its ticks (their jobs stay).
    pub async fn delete_schedule(&self, id: &str) -> Result<(), MetadataError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM schedule_ticks WHERE schedule_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(not_found(id));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every schedule not paused, each with the latest tick handled for it.
    pub async fn active_schedules(&self) -> Result<Vec<(ScheduleRecord, Option<String>)>, MetadataError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, (SELECT MAX(tick_at) FROM schedule_ticks t WHERE t.schedule_id = s.id) AS last_tick \
             FROM schedules s WHERE paused = 0 ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| Ok((ScheduleRecord::from_row(row)?, row.try_get("last_tick")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Records a handled tick, unless another runner recorded it first; a tick recorded without a
    /// job (it could not be made then) takes the job it was fired with later.
    pub async fn record_tick(&self, schedule_id: &str, tick: &TickRecord) -> Result<(), MetadataError> {
        sqlx::query(
            "INSERT INTO schedule_ticks (schedule_id, tick_at, job_id, missed, error, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (schedule_id, tick_at) DO UPDATE \
             SET job_id = excluded.job_id, error = excluded.error \
             WHERE schedule_ticks.job_id IS NULL AND excluded.job_id IS NOT NULL",
        )
        .bind(schedule_id)
        .bind(&tick.tick_at)
        .bind(&tick.job_id)
        .bind(tick.missed)
        .bind(&tick.error)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The schedule's ticks, newest first.
    pub async fn ticks(&self, schedule_id: &str, limit: i64) -> Result<Vec<TickRecord>, MetadataError> {
        Ok(sqlx::query_as(
            "SELECT tick_at, job_id, missed, error FROM schedule_ticks WHERE schedule_id = $1 \
             ORDER BY tick_at DESC LIMIT $2",
        )
        .bind(schedule_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
