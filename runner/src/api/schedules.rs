//! `/api/schedules`: recipes run on a timetable; create (with `Idempotency-Key`), list, show with
//! next run times and recent ticks, pause, resume, delete, and fire a past tick by hand.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::error::{ApiJson, ApiPath, Errors, codes};
use super::idempotency::{IdempotentJson, Once, once};
use super::{AppState, Created, created};
use crate::api::ApiError;
use crate::metadata::TickRecord;
use crate::schedules::{FireRequest, ScheduleRequest, ScheduleView};

#[utoipa::path(
    post,
    path = "/api/schedules",
    tag = "schedules",
    request_body = ScheduleRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "1 to 255 visible ASCII characters: the same key and body, sent again (for a day), \
                        get the schedule the first request made; the same key with another body is a 409.")
    ),
    responses(
        (status = 201, description = "The schedule, with its next run times", body = ScheduleView),
        Errors<(
            codes::InvalidSchedule,
            codes::InvalidParams,
            codes::InvalidRequest,
            codes::NotFound,
            codes::Conflict,
            codes::IdempotencyConflict,
        )>,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    IdempotentJson { value: request, key }: IdempotentJson<ScheduleRequest>,
) -> Result<Created<ScheduleView>, ApiError> {
    let made = once(
        &state.metadata,
        key.as_ref(),
        || state.schedules.create(request),
        |schedule: &ScheduleView| schedule.id.clone(),
    )
    .await?;
    let schedule = match made {
        Once::Made(schedule) => schedule,
        Once::Earlier(id) => state.schedules.get(&id).await?,
    };
    Ok(created(
        StatusCode::CREATED,
        format!("/api/schedules/{}", schedule.id),
        schedule,
    ))
}

#[utoipa::path(
    get,
    path = "/api/schedules",
    tag = "schedules",
    responses(
        (status = 200, description = "Every schedule, by name", body = Vec<ScheduleView>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    Ok(Json(state.schedules.list().await?))
}

#[utoipa::path(
    get,
    path = "/api/schedules/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id (`sch_…`) or name")),
    responses(
        (status = 200, description = "The schedule, its next run times and its latest ticks", body = ScheduleView),
        Errors<codes::NotFound>,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(state.schedules.get(&id).await?))
}

#[utoipa::path(
    post,
    path = "/api/schedules/{id}/pause",
    tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id (`sch_…`) or name")),
    responses(
        (status = 200, description = "Paused: its ticks are not run, then or later", body = ScheduleView),
        Errors<codes::NotFound>,
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(state.schedules.set_paused(&id, true).await?))
}

#[utoipa::path(
    post,
    path = "/api/schedules/{id}/resume",
    tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id (`sch_…`) or name")),
    responses(
        (status = 200, description = "Running again from its next tick", body = ScheduleView),
        Errors<codes::NotFound>,
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(state.schedules.set_paused(&id, false).await?))
}

#[utoipa::path(
    delete,
    path = "/api/schedules/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id (`sch_…`) or name")),
    responses(
        (status = 204, description = "Deleted; the jobs it made stay"),
        Errors<codes::NotFound>,
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.schedules.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/schedules/{id}/ticks",
    tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id (`sch_…`) or name")),
    request_body = FireRequest,
    responses(
        (status = 201, description = "The tick's job was made now, with the tick's date in its parameters", body = TickRecord),
        (status = 200, description = "The tick already has its job (fired or ticked before): that job", body = TickRecord),
        Errors<(
            codes::InvalidRequest,
            codes::InvalidParams,
            codes::NotAllowed,
            codes::NotFound,
            codes::QueueFull,
            codes::SecretUnreadable,
        )>,
    )
)]
pub async fn fire(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<FireRequest>,
) -> Result<Created<TickRecord>, ApiError> {
    let fired = state.schedules.fire(&id, &request.at).await?;
    let status = if fired.made {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(created(status, format!("/api/jobs/{}", fired.job_id), fired.tick))
}
