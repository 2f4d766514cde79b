//! `/api/recipes`: create (checked against the sources), list, show, replace and delete recipes;
//! page and resolve a `carry_forward` recipe's open items; `/api/dry-runs`: try one on a sample.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use kalla_core::recon::Recipe;
use serde::Deserialize;

use super::error::{ApiJson, ApiPath, ApiQuery, Errors, checked_limit, codes};
use super::{ApiError, AppState, Created, ErrorCode, created};
use crate::access::Principal;
use crate::open_items::{
    self, ItemSide, ItemState, MAX_PAGE_ITEMS, OpenItemView, OpenItemsPage, PageRequest,
};
use crate::recipes::RecipeView;
use crate::recipes::dry_run::{DEFAULT_SAMPLE_ROWS, DryRunRequest, DryRunView, MAX_SAMPLE_ROWS};

#[utoipa::path(
    post,
    path = "/api/recipes",
    tag = "recipes",
    request_body = Recipe,
    responses(
        (status = 201, description = "The recipe, checked against the sources' schemas", body = RecipeView),
        Errors<(codes::InvalidRecipe, codes::InvalidParams, codes::NotAllowed, codes::Conflict, codes::QueryFailed, codes::SecretUnreadable)>,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(recipe): ApiJson<Recipe>,
) -> Result<Created<RecipeView>, ApiError> {
    let recipe = state.recipes.create(recipe).await?;
    Ok(created(
        StatusCode::CREATED,
        format!("/api/recipes/{}", recipe.id),
        recipe,
    ))
}

#[utoipa::path(
    get,
    path = "/api/recipes",
    tag = "recipes",
    responses(
        (status = 200, description = "Every recipe", body = Vec<RecipeView>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<RecipeView>>, ApiError> {
    Ok(Json(state.recipes.list().await?))
}

#[utoipa::path(
    get,
    path = "/api/recipes/{id}",
    tag = "recipes",
    params(("id" = String, Path, description = "The recipe id (`rcp_…`)")),
    responses(
        (status = 200, description = "The recipe", body = RecipeView),
        Errors<codes::NotFound>,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RecipeView>, ApiError> {
    Ok(Json(state.recipes.get(&id).await?))
}

#[utoipa::path(
    put,
    path = "/api/recipes/{id}",
    tag = "recipes",
    params(("id" = String, Path, description = "The recipe id (`rcp_…`)")),
    request_body = Recipe,
    responses(
        (status = 200, description = "The recipe, replaced", body = RecipeView),
        Errors<(codes::InvalidRecipe, codes::InvalidParams, codes::NotAllowed, codes::NotFound, codes::Conflict, codes::QueryFailed, codes::SecretUnreadable)>,
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(recipe): ApiJson<Recipe>,
) -> Result<Json<RecipeView>, ApiError> {
    Ok(Json(state.recipes.update(&id, recipe).await?))
}

#[utoipa::path(
    delete,
    path = "/api/recipes/{id}",
    tag = "recipes",
    params(("id" = String, Path, description = "The recipe id (`rcp_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        Errors<codes::NotFound>,
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.recipes.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/dry-runs",
    tag = "recipes",
    request_body = DryRunRequest,
    responses(
        (status = 200, description = "What the recipe makes of a sample of its sources: the first `sample_rows` rows of the left side, the right rows whose key equals one of theirs in some pass, every output's count and first rows. Nothing is stored or written", body = DryRunView),
        Errors<(codes::InvalidRequest, codes::InvalidRecipe, codes::InvalidParams, codes::NotAllowed, codes::QueryFailed, codes::SecretUnreadable)>,
    )
)]
pub async fn dry_run(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DryRunRequest>,
) -> Result<Json<DryRunView>, ApiError> {
    let sample_rows = request.sample_rows.unwrap_or(DEFAULT_SAMPLE_ROWS as i64);
    if !(1..=MAX_SAMPLE_ROWS as i64).contains(&sample_rows) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("sample_rows must be between 1 and {MAX_SAMPLE_ROWS}, got {sample_rows}"),
        ));
    }
    Ok(Json(state.recipes.dry_run(request, sample_rows as usize).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OpenItemsQuery {
    /// `open` (the default), `closed`, `matched`, `referred`, `resolved` or `all`.
    #[param(inline)]
    state: Option<ItemState>,
    #[param(inline)]
    side: Option<ItemSide>,
    /// The `next_after` of the page before.
    after: Option<String>,
    /// 1 to 1000; 100 if not given.
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/recipes/{id}/open-items",
    tag = "recipes",
    params(("id" = String, Path, description = "The recipe id (`rcp_…`)"), OpenItemsQuery),
    responses(
        (status = 200, description = "A page of the recipe's items, in id order", body = OpenItemsPage),
        Errors<(codes::InvalidRequest, codes::InvalidLimit, codes::NotFound)>,
    )
)]
pub async fn open_items(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<OpenItemsQuery>,
) -> Result<Json<OpenItemsPage>, ApiError> {
    let limit = checked_limit(query.limit, 100, MAX_PAGE_ITEMS)?;
    let recipe = state.recipes.get(&id).await?;
    let request = PageRequest {
        state: query.state.unwrap_or_default(),
        side: query.side,
        after: query.after.as_deref(),
        limit,
    };
    Ok(Json(
        open_items::page(&state.metadata, &recipe.id, request).await?,
    ))
}

/// `POST /api/recipes/{id}/open-items/{item}/resolve`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// Why the item needs no match (1 to 2000 characters), kept in its history.
    note: String,
}

#[utoipa::path(
    post,
    path = "/api/recipes/{id}/open-items/{item}/resolve",
    tag = "recipes",
    params(
        ("id" = String, Path, description = "The recipe id (`rcp_…`)"),
        ("item" = String, Path, description = "The item id (`oi_…`)"),
    ),
    request_body = Resolution,
    responses(
        (status = 200, description = "The item, resolved: later runs no longer carry it", body = OpenItemView),
        Errors<(codes::InvalidRequest, codes::NotFound, codes::ItemClosed)>,
    )
)]
pub async fn resolve_open_item(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((id, item)): ApiPath<(String, String)>,
    ApiJson(resolution): ApiJson<Resolution>,
) -> Result<Json<OpenItemView>, ApiError> {
    let recipe = state.recipes.get(&id).await?;
    let resolved = open_items::resolve(
        &state.metadata,
        &recipe.id,
        &item,
        &resolution.note,
        &principal.name,
    )
    .await?;
    Ok(Json(resolved))
}
