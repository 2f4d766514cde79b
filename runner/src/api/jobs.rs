//! `/api/jobs`: submit (202, or 429 when the queue is full), list, show, cancel, read and delete
//! results.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kalla_core::json_rows::ValueStyle;
use serde::Deserialize;

use super::error::{ApiPath, ApiQuery, ErrorCode, Errors, checked_limit, codes};
use super::idempotency::{IdempotentJson, Once, once};
use super::{ApiError, AppState, Created, created};
use crate::jobs::{JobRequest, JobView};
use crate::metadata::{JobFilter, JobStatus, timestamp};
use crate::results::{self, Page, ResultFormat, Selection};

/// Most jobs one list page returns.
const MAX_LIST: i64 = 1000;

#[utoipa::path(
    post,
    path = "/api/jobs",
    tag = "jobs",
    request_body = JobRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "1 to 255 visible ASCII characters: the same key and body, sent again (for a day), \
                        get the job the first request queued instead of another; the same key with another \
                        body is a 409. A request that fails frees its key.")
    ),
    responses(
        (status = 202, description = "Queued, or queued by an earlier request with the same Idempotency-Key and body", body = JobView),
        Errors<(
            codes::InvalidRecipe,
            codes::InvalidParams,
            codes::InvalidSql,
            codes::NotAllowed,
            codes::NotFound,
            codes::IdempotencyConflict,
            codes::QueueFull,
            codes::QueryFailed,
            codes::SecretUnreadable,
        )>,
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    IdempotentJson { value: request, key }: IdempotentJson<JobRequest>,
) -> Result<Created<JobView>, ApiError> {
    let submitted = once(
        &state.metadata,
        key.as_ref(),
        || state.jobs.submit(request),
        |job: &JobView| job.id.clone(),
    )
    .await?;
    let job = match submitted {
        Once::Made(job) => job,
        Once::Earlier(id) => state.jobs.get(&id).await?,
    };
    Ok(created(
        StatusCode::ACCEPTED,
        format!("/api/jobs/{}", job.id),
        job,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(inline)]
    status: Option<JobStatus>,
    /// Only runs of this stored recipe (id or name).
    recipe: Option<String>,
    /// Only jobs made at or after this time (RFC 3339, or a date: its midnight UTC).
    since: Option<String>,
    /// Only jobs made before this time (RFC 3339, or a date: its midnight UTC).
    until: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = Vec<JobView>),
        Errors<(codes::InvalidRequest, codes::InvalidLimit, codes::NotFound)>,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let limit = checked_limit(query.limit, 50, MAX_LIST)?;
    let offset = query.offset.unwrap_or(0).max(0);
    let recipe_id = match &query.recipe {
        Some(recipe) => Some(state.recipes.get(recipe).await?.id),
        None => None,
    };
    let since = query
        .since
        .as_deref()
        .map(|t| stored_time("since", t))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .map(|t| stored_time("until", t))
        .transpose()?;
    let filter = JobFilter {
        status: query.status,
        recipe_id: recipe_id.as_deref(),
        since: since.as_deref(),
        until: until.as_deref(),
    };
    Ok(Json(state.jobs.list(&filter, limit, offset).await?))
}

/// A time given as RFC 3339 or as a date (its midnight UTC), as the metadata DB stores times.
fn stored_time(name: &str, text: &str) -> Result<String, ApiError> {
    let at = match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(at) => at.with_timezone(&chrono::Utc),
        Err(_) => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(|date| date.and_time(chrono::NaiveTime::MIN).and_utc())
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{name} must be an RFC 3339 time or a date (YYYY-MM-DD), got {text:?}"),
                )
            })?,
    };
    Ok(timestamp(at))
}

#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id (`job_…`)")),
    responses(
        (status = 200, description = "The job: status, progress, timings, counts", body = JobView),
        Errors<codes::NotFound>,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(state.jobs.get(&id).await?))
}

#[utoipa::path(
    delete,
    path = "/api/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id (`job_…`)")),
    responses(
        (status = 200, description = "The job, cancelled", body = JobView),
        Errors<(codes::NotFound, codes::JobFinished)>,
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(state.jobs.cancel(&id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    #[serde(default)]
    #[param(inline)]
    format: ResultFormat,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// Only rows matching these conditions, as JSON: the preview's `[{"column", "op", "value"}]`
    /// (`eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `between`, `in`, `like`, `is_null`, `is_not_null`).
    filter: Option<String>,
    /// Sorted over the whole output: comma-separated `column`, `column:asc` or `column:desc`
    /// (nulls last); ties broken by the other columns. Reaches at most 100,000 rows deep
    /// (`offset + limit`; a sorted download needs a `limit`).
    order_by: Option<String>,
    /// JSON pages only: also count the rows the filter matches in the whole output (`total_rows`).
    #[serde(default)]
    count: bool,
    /// JSON pages only: numbers and booleans as JSON's own, dates and timestamps as ISO 8601,
    /// 64-bit integers beyond ±2^53 and decimals as exact strings (README, "Typed results").
    #[serde(default)]
    typed: bool,
}

#[utoipa::path(
    get,
    path = "/api/jobs/{id}/results/{output}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id (`job_…`)"), ("output" = String, Path, description = "`matched`, `mismatched`, `left_only`, `right_only` or `duplicates` (recon); `result` (query)"), ResultsQuery),
    responses(
        (status = 200, description = "A page of rows (`format=json`) or the rows as a CSV or parquet download", content(
            (Page = "application/json"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.parquet"),
        )),
        Errors<(
            codes::InvalidLimit,
            codes::InvalidRequest,
            codes::InvalidCondition,
            codes::UnknownColumn,
            codes::InvalidOrder,
            codes::NotFound,
            codes::UnknownOutput,
            codes::NoResults,
            codes::ResultsDeleted,
            codes::ResultsUnavailable,
        )>,
    )
)]
pub async fn output(
    State(state): State<AppState>,
    ApiPath((id, output)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ResultsQuery>,
) -> Result<Response, ApiError> {
    if query.typed && query.format != ResultFormat::Json {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "typed: applies to JSON pages only; CSV and parquet downloads keep their own types",
        ));
    }
    if query.count && query.format != ResultFormat::Json {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "count: applies to JSON pages only",
        ));
    }
    let selection = Selection::parse(
        query.filter.as_deref(),
        query.order_by.as_deref(),
        query.offset,
        query.limit,
    )?;
    let dir = state.jobs.output_dir(&id, &output).await?;
    let s3 = state.jobs.s3();
    if query.format == ResultFormat::Json {
        let style = ValueStyle::typed(query.typed);
        let page = results::page(&dir, s3, &selection, query.count, style).await?;
        let mut page =
            serde_json::to_value(page).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        page["job_id"] = id.into();
        page["output"] = output.into();
        return Ok(Json(page).into_response());
    }
    let chunks = results::export(&dir, s3, query.format, &selection).await?;
    let (content_type, extension) = match query.format {
        ResultFormat::Parquet => ("application/vnd.apache.parquet", "parquet"),
        _ => ("text/csv; charset=utf-8", "csv"),
    };
    let disposition = format!("attachment; filename=\"{id}-{output}.{extension}\"");
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/jobs/{id}/results",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id (`job_…`)")),
    responses(
        (status = 200, description = "The job, its result files deleted (its summary and the open items it left stay); again is no error", body = JobView),
        Errors<(codes::NotFound, codes::NoResults)>,
    )
)]
pub async fn delete_results(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(state.jobs.delete_results(&id).await?))
}
