//! `/api/recipes`: create (checked against the sources), list, show, replace and delete recipes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kalla_core::recon::Recipe;

use super::error::{ApiJson, ApiPath, Errors, codes};
use super::{ApiError, AppState, Created, created};
use crate::recipes::RecipeView;

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
