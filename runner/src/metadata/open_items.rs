//! The `open_items` and `carried_forward` tables: what the runs of a `carry_forward` recipe left
//! unmatched, item by item, and which run's items the next run reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Row, Transaction};

use super::{MetadataDb, MetadataError, new_id, now};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenItemRecord {
    pub id: String,
    pub recipe_id: String,
    pub side: String,
    /// The first pass's key on `side`, a JSON array of text values.
    pub key_json: String,
    /// Rows of the side with this key in the last run that saw it.
    pub rows_seen: i64,
    /// `open`, `matched`, `referred` or `resolved`.
    pub state: String,
    /// Run dates (`YYYY-MM-DD`).
    pub first_seen: String,
    pub last_seen: String,
    pub runs_seen: i64,
    pub first_job: String,
    pub last_job: String,
    pub closed_by_job: Option<String>,
    pub closed_at: Option<String>,
    /// Its events, oldest first (a JSON array).
    pub history_json: String,
    pub updated_at: String,
}

impl FromRow<'_, AnyRow> for OpenItemRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            recipe_id: row.try_get("recipe_id")?,
            side: row.try_get("side")?,
            key_json: row.try_get("key_json")?,
            rows_seen: row.try_get("rows_seen")?,
            state: row.try_get("state")?,
            first_seen: row.try_get("first_seen")?,
            last_seen: row.try_get("last_seen")?,
            runs_seen: row.try_get("runs_seen")?,
            first_job: row.try_get("first_job")?,
            last_job: row.try_get("last_job")?,
            closed_by_job: row.try_get("closed_by_job")?,
            closed_at: row.try_get("closed_at")?,
            history_json: row.try_get("history_json")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const COLUMNS: &str = "id, recipe_id, side, key_json, rows_seen, state, first_seen, last_seen, runs_seen, \
                       first_job, last_job, closed_by_job, closed_at, history_json, updated_at";

/// The run of a recipe whose open items its next run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedForward {
    pub job_id: String,
    pub run_date: String,
}

/// Where a run of a carry_forward recipe stands, fixed at its first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarryStart {
    /// The run whose open items it reads, if any.
    pub read: Option<String>,
    /// It recorded its own open items already (it is running again).
    pub recorded: bool,
}

/// Rows a run left unmatched on one side under one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeenItem {
    pub side: String,
    pub key_json: String,
    pub rows: i64,
}

/// A run's open items to record.
pub struct CarryRun<'a> {
    pub recipe_id: &'a str,
    pub job_id: &'a str,
    pub run_date: &'a str,
    /// The run whose items it read, if any.
    pub read: Option<&'a str>,
    /// What it left unmatched.
    pub open: &'a [SeenItem],
    /// Of the items it read, those (side, key) its `matched` output holds.
    pub matched: &'a HashSet<(String, String)>,
}

/// What recording a run's open items came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Carried {
    Recorded,
    /// The run recorded them before (it is running again).
    AlreadyRecorded,
    /// Another run recorded its items after this one read them.
    Overtaken {
        by: String,
    },
}

/// What one run did to a recipe's open items.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CarryCounts {
    /// Items it opened.
    pub opened: i64,
    /// Items open before that it left open.
    pub still_open: i64,
    /// Items it matched.
    pub matched: i64,
    /// Items it decided otherwise (duplicates, exceptions, ambiguous): closed, to be found there.
    pub referred: i64,
}

fn event(
    event: &str,
    job: Option<&str>,
    run_date: Option<&str>,
    note: Option<&str>,
    by: Option<&str>,
) -> Value {
    let mut value = json!({"at": now(), "event": event});
    for (name, field) in [("job", job), ("run_date", run_date), ("note", note), ("by", by)] {
        if let Some(field) = field {
            value[name] = json!(field);
        }
    }
    value
}

fn appended(history_json: &str, event: Value) -> String {
    let mut history: Vec<Value> = serde_json::from_str(history_json).unwrap_or_default();
    history.push(event);
    Value::Array(history).to_string()
}

impl MetadataDb {
    pub async fn carried_forward(&self, recipe_id: &str) -> Result<Option<CarriedForward>, MetadataError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT job_id, run_date FROM carried_forward WHERE recipe_id = $1")
                .bind(recipe_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(job_id, run_date)| CarriedForward { job_id, run_date }))
    }

    /// Where the run `job_id` starts from: on its first attempt, the recipe's carried-forward run
    /// becomes the one it reads, for every later attempt too.
    pub async fn begin_carry(&self, recipe_id: &str, job_id: &str) -> Result<CarryStart, MetadataError> {
        sqlx::query(
            "INSERT INTO carry_runs (job_id, recipe_id, read_job_id, recorded_at) \
             VALUES ($1, $2, (SELECT job_id FROM carried_forward WHERE recipe_id = $2), NULL) \
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job_id)
        .bind(recipe_id)
        .execute(self.pool())
        .await?;
        let (read, recorded_at): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT read_job_id, recorded_at FROM carry_runs WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(self.pool())
                .await?;
        Ok(CarryStart {
            read,
            recorded: recorded_at.is_some(),
        })
    }

    /// The (side, key) of the recipe's open items.
    pub async fn open_item_keys(&self, recipe_id: &str) -> Result<Vec<(String, String)>, MetadataError> {
        Ok(
            sqlx::query_as("SELECT side, key_json FROM open_items WHERE recipe_id = $1 AND state = 'open'")
                .bind(recipe_id)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// The (side, key) of the items of `job_id`'s run that were resolved by hand since.
    pub async fn resolved_items(
        &self,
        recipe_id: &str,
        job_id: &str,
    ) -> Result<Vec<(String, String)>, MetadataError> {
        Ok(sqlx::query_as(
            "SELECT side, key_json FROM open_items WHERE recipe_id = $1 AND last_job = $2 AND state = 'resolved'",
        )
        .bind(recipe_id)
        .bind(job_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Records what a run left open, in one transaction, if no other run recorded its items since
    /// this one read them: items seen again are updated, new ones opened (but for those resolved
    /// since the read), and the open items it read but left no rows of closed as matched or
    /// referred. Only open items change: one resolved meanwhile stays resolved.
    pub async fn record_carry(&self, run: CarryRun<'_>) -> Result<Carried, MetadataError> {
        let mut tx = self.pool().begin().await?;
        if let Some(outcome) = claim_carry(&mut tx, &run).await? {
            tx.rollback().await?;
            return Ok(outcome);
        }
        let open: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT id, side, key_json, history_json FROM open_items WHERE recipe_id = $1 AND state = 'open'",
        )
        .bind(run.recipe_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut open: HashMap<(String, String), (String, String)> = open
            .into_iter()
            .map(|(id, side, key, history)| ((side, key), (id, history)))
            .collect();
        let resolved: HashSet<(String, String)> = sqlx::query_as(
            "SELECT side, key_json FROM open_items WHERE recipe_id = $1 AND last_job = $2 AND state = 'resolved'",
        )
        .bind(run.recipe_id)
        .bind(run.read.unwrap_or_default())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let now = now();
        for item in run.open {
            let key = (item.side.clone(), item.key_json.clone());
            match open.remove(&key) {
                Some((id, _)) => {
                    sqlx::query(
                        "UPDATE open_items SET rows_seen = $1, last_seen = $2, last_job = $3, \
                         runs_seen = runs_seen + 1, updated_at = $4 WHERE id = $5 AND state = 'open'",
                    )
                    .bind(item.rows)
                    .bind(run.run_date)
                    .bind(run.job_id)
                    .bind(&now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                None if resolved.contains(&key) => {}
                None => insert_item(&mut tx, &run, item, &now).await?,
            }
        }
        for ((side, key), (id, history)) in open {
            let state = if run.matched.contains(&(side, key)) {
                "matched"
            } else {
                "referred"
            };
            let history = appended(
                &history,
                event(state, Some(run.job_id), Some(run.run_date), None, None),
            );
            sqlx::query(
                "UPDATE open_items SET state = $1, closed_by_job = $2, closed_at = $3, history_json = $4, \
                 updated_at = $3 WHERE id = $5 AND state = 'open'",
            )
            .bind(state)
            .bind(run.job_id)
            .bind(&now)
            .bind(history)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE carry_runs SET recorded_at = $1 WHERE job_id = $2")
            .bind(&now)
            .bind(run.job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Carried::Recorded)
    }

    /// What the run `job_id` did to the recipe's open items.
    pub async fn carry_counts(&self, recipe_id: &str, job_id: &str) -> Result<CarryCounts, MetadataError> {
        let count = |condition: &'static str| async move {
            let (count,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM open_items WHERE recipe_id = $1 AND {condition}"
            ))
            .bind(recipe_id)
            .bind(job_id)
            .fetch_one(self.pool())
            .await?;
            Ok::<_, MetadataError>(count)
        };
        Ok(CarryCounts {
            opened: count("first_job = $2").await?,
            still_open: count("last_job = $2 AND first_job <> $2 AND state = 'open'").await?,
            matched: count("closed_by_job = $2 AND state = 'matched'").await?,
            referred: count("closed_by_job = $2 AND state = 'referred'").await?,
        })
    }

    /// Open items per run date first seen.
    pub async fn open_items_by_first_seen(
        &self,
        recipe_id: &str,
    ) -> Result<BTreeMap<String, i64>, MetadataError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT first_seen, COUNT(*) FROM open_items WHERE recipe_id = $1 AND state = 'open' \
             GROUP BY first_seen",
        )
        .bind(recipe_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// A page of the recipe's items in id order, after `after`: only those in `state` (`closed`:
    /// any but open) and on `side`, when given.
    pub async fn open_items(
        &self,
        recipe_id: &str,
        state: Option<&str>,
        side: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OpenItemRecord>, MetadataError> {
        let state_condition = match state {
            Some("closed") => "state <> 'open' AND $2 = $2",
            Some(_) => "state = $2",
            None => "$2 = $2",
        };
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM open_items WHERE recipe_id = $1 AND {state_condition} \
             AND ($3 = '' OR side = $3) AND id > $4 ORDER BY id LIMIT $5"
        ))
        .bind(recipe_id)
        .bind(state.unwrap_or_default())
        .bind(side.unwrap_or_default())
        .bind(after.unwrap_or_default())
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn open_item(&self, recipe_id: &str, id: &str) -> Result<OpenItemRecord, MetadataError> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM open_items WHERE recipe_id = $1 AND id = $2"
        ))
        .bind(recipe_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| MetadataError::NotFound {
            kind: "open item",
            name: id.to_string(),
        })
    }

    /// Closes an open item by hand, with a note in its history; `None` if it is not open.
    pub async fn resolve_open_item(
        &self,
        recipe_id: &str,
        id: &str,
        note: &str,
        by: Option<&str>,
    ) -> Result<Option<OpenItemRecord>, MetadataError> {
        let item = self.open_item(recipe_id, id).await?;
        if item.state != "open" {
            return Ok(None);
        }
        let history = appended(&item.history_json, event("resolved", None, None, Some(note), by));
        let now = now();
        let updated = sqlx::query(
            "UPDATE open_items SET state = 'resolved', closed_at = $1, history_json = $2, updated_at = $1 \
             WHERE id = $3 AND state = 'open' AND history_json = $4",
        )
        .bind(&now)
        .bind(history)
        .bind(id)
        .bind(&item.history_json)
        .execute(self.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        self.open_item(recipe_id, id).await.map(Some)
    }
}

/// Makes `run` the recipe's carried-forward run if it still follows the run it read; otherwise
/// says why not.
async fn claim_carry(
    tx: &mut Transaction<'_, Any>,
    run: &CarryRun<'_>,
) -> Result<Option<Carried>, MetadataError> {
    let now = now();
    let claimed = match run.read {
        None => {
            sqlx::query(
                "INSERT INTO carried_forward (recipe_id, job_id, run_date, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (recipe_id) DO NOTHING",
            )
            .bind(run.recipe_id)
            .bind(run.job_id)
            .bind(run.run_date)
            .bind(&now)
            .execute(&mut **tx)
            .await?
        }
        Some(read) => {
            sqlx::query(
                "UPDATE carried_forward SET job_id = $1, run_date = $2, updated_at = $3 \
                 WHERE recipe_id = $4 AND job_id = $5",
            )
            .bind(run.job_id)
            .bind(run.run_date)
            .bind(&now)
            .bind(run.recipe_id)
            .bind(read)
            .execute(&mut **tx)
            .await?
        }
    };
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let recorded: Option<(Option<String>,)> =
        sqlx::query_as("SELECT recorded_at FROM carry_runs WHERE job_id = $1")
            .bind(run.job_id)
            .fetch_optional(&mut **tx)
            .await?;
    if matches!(recorded, Some((Some(_),))) {
        return Ok(Some(Carried::AlreadyRecorded));
    }
    let (by,): (String,) = sqlx::query_as("SELECT job_id FROM carried_forward WHERE recipe_id = $1")
        .bind(run.recipe_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(Carried::Overtaken { by }))
}

async fn insert_item(
    tx: &mut Transaction<'_, Any>,
    run: &CarryRun<'_>,
    item: &SeenItem,
    now: &str,
) -> Result<(), MetadataError> {
    let history = json!([event("opened", Some(run.job_id), Some(run.run_date), None, None)]).to_string();
    sqlx::query(&format!(
        "INSERT INTO open_items ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, 'open', $6, $6, 1, $7, $7, NULL, NULL, $8, $9)"
    ))
    .bind(new_id("oi"))
    .bind(run.recipe_id)
    .bind(&item.side)
    .bind(&item.key_json)
    .bind(item.rows)
    .bind(run.run_date)
    .bind(run.job_id)
    .bind(history)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
