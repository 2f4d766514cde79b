//! The open items of `carry_forward` recipes as the API shows them: paged by state and side,
//! aged in run days, and resolved by hand with a note kept in their history.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::metadata::{MetadataDb, MetadataError, OpenItemRecord};

/// Most items one page returns.
pub const MAX_PAGE_ITEMS: i64 = 1000;
/// Longest resolution note.
const MAX_NOTE_CHARS: usize = 2000;

#[derive(Debug, Error)]
pub enum OpenItemsError {
    #[error("{0}")]
    Invalid(String),
    #[error("open item {id} is already closed ({state})")]
    Closed { id: String, state: String },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Which items a page holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    #[default]
    Open,
    /// Matched, referred or resolved.
    Closed,
    Matched,
    Referred,
    Resolved,
    All,
}

impl ItemState {
    fn stored(self) -> Option<&'static str> {
        match self {
            ItemState::Open => Some("open"),
            ItemState::Closed => Some("closed"),
            ItemState::Matched => Some("matched"),
            ItemState::Referred => Some("referred"),
            ItemState::Resolved => Some("resolved"),
            ItemState::All => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemSide {
    Left,
    Right,
}

/// An item: rows of one side under one first-pass key that a run left unmatched.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenItemView {
    pub id: String,
    pub side: String,
    /// The key's parts as text (null for a null part).
    pub key: Vec<Option<String>>,
    /// Rows with this key in the last run that saw it.
    pub rows: i64,
    /// `open`; or closed: `matched` (by `closed_by_job`), `referred` (`closed_by_job` put it in
    /// duplicates, exceptions or ambiguous) or `resolved` by hand.
    pub state: String,
    /// Run dates.
    pub first_seen: String,
    pub last_seen: String,
    pub runs_seen: i64,
    /// In run days: from first seen to the recipe's latest run (open), or to its last run (closed).
    pub age_days: i64,
    pub first_job: String,
    pub last_job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by_job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// Its events, oldest first: opened, then matched, referred or resolved (with the note and who).
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenItemsPage {
    pub items: Vec<OpenItemView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Which page of a recipe's items.
pub struct PageRequest<'a> {
    pub state: ItemState,
    pub side: Option<ItemSide>,
    pub after: Option<&'a str>,
    pub limit: i64,
}

pub async fn page(
    db: &MetadataDb,
    recipe_id: &str,
    request: PageRequest<'_>,
) -> Result<OpenItemsPage, OpenItemsError> {
    let side = request.side.map(|side| match side {
        ItemSide::Left => "left",
        ItemSide::Right => "right",
    });
    let records = db
        .open_items(
            recipe_id,
            request.state.stored(),
            side,
            request.after,
            request.limit + 1,
        )
        .await?;
    let latest = db.carried_forward(recipe_id).await?.map(|c| c.run_date);
    let more = records.len() as i64 > request.limit;
    let items: Vec<OpenItemView> = records
        .into_iter()
        .take(request.limit as usize)
        .map(|record| view(record, latest.as_deref()))
        .collect();
    let next_after = more.then(|| items.last().map(|item| item.id.clone())).flatten();
    Ok(OpenItemsPage { items, next_after })
}

pub async fn resolve(
    db: &MetadataDb,
    recipe_id: &str,
    id: &str,
    note: &str,
    by: &str,
) -> Result<OpenItemView, OpenItemsError> {
    let note = note.trim();
    if note.is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        return Err(OpenItemsError::Invalid(format!(
            "note must say why the item is resolved, in 1 to {MAX_NOTE_CHARS} characters"
        )));
    }
    let Some(resolved) = db.resolve_open_item(recipe_id, id, note, Some(by)).await? else {
        let item = db.open_item(recipe_id, id).await?;
        return Err(OpenItemsError::Closed {
            id: id.to_string(),
            state: item.state,
        });
    };
    let latest = db.carried_forward(recipe_id).await?.map(|c| c.run_date);
    Ok(view(resolved, latest.as_deref()))
}

fn view(record: OpenItemRecord, latest_run_date: Option<&str>) -> OpenItemView {
    let until = match record.state.as_str() {
        "open" => latest_run_date.unwrap_or(&record.last_seen),
        _ => &record.last_seen,
    };
    OpenItemView {
        age_days: days_between(&record.first_seen, until),
        key: serde_json::from_str(&record.key_json).unwrap_or_default(),
        history: serde_json::from_str(&record.history_json).unwrap_or_default(),
        id: record.id,
        side: record.side,
        rows: record.rows_seen,
        state: record.state,
        first_seen: record.first_seen,
        last_seen: record.last_seen,
        runs_seen: record.runs_seen,
        first_job: record.first_job,
        last_job: record.last_job,
        closed_by_job: record.closed_by_job,
        closed_at: record.closed_at,
    }
}

fn days_between(from: &str, to: &str) -> i64 {
    let date = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
    match (date(from), date(to)) {
        (Some(from), Some(to)) => (to - from).num_days(),
        _ => 0,
    }
}
