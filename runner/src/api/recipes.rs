//! `/api/recipes`: create (checked against the sources), list, show, replace and delete recipes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kalla_core::recon::Recipe;

use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::recipes::RecipeView;

pub async fn create(
    State(state): State<AppState>,
    ApiJson(recipe): ApiJson<Recipe>,
) -> Result<(StatusCode, Json<RecipeView>), ApiError> {
    Ok((StatusCode::CREATED, Json(state.recipes.create(recipe).await?)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<RecipeView>>, ApiError> {
    Ok(Json(state.recipes.list().await?))
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RecipeView>, ApiError> {
    Ok(Json(state.recipes.get(&id).await?))
}

pub async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(recipe): ApiJson<Recipe>,
) -> Result<Json<RecipeView>, ApiError> {
    Ok(Json(state.recipes.update(&id, recipe).await?))
}

pub async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.recipes.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
