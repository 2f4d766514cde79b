//! `/api/secrets`: named secrets (values go in, never out), and `/api/keys`: where a rotation of
//! the secrets key and the cluster key stands.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiPath, Errors, codes};
use super::{ApiError, AppState, Created, created};
use crate::metadata::SecretRecord;
use crate::registry::{Credentials, RegistryError};
use crate::secrets::ResealStatus;

/// New credentials for a source or connection: a password, or the name of a secret.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredentials {
    /// A password sealed for this record alone.
    password: Option<String>,
    /// The name of a stored secret to use instead.
    secret: Option<String>,
}

impl UpdateCredentials {
    pub fn credentials(&self) -> Result<Credentials<'_>, RegistryError> {
        match (self.password.as_deref(), self.secret.as_deref()) {
            (Some(password), None) if !password.is_empty() => Ok(Credentials::Password(password)),
            (None, Some(secret)) => Ok(Credentials::Secret(secret)),
            (Some(_), Some(_)) => Err(RegistryError::TwoPasswords),
            _ => Err(RegistryError::NoCredentials),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    name: String,
    /// The secret itself (a password); sealed at once, never shown again.
    value: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    /// The new value; what uses the secret reads it from its next connection on.
    value: String,
}

/// A named secret: never its value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretView {
    id: String,
    name: String,
    created_at: String,
    updated_at: String,
    /// Sources and connections that use it.
    used_by: i64,
}

impl From<SecretRecord> for SecretView {
    fn from(record: SecretRecord) -> Self {
        Self {
            id: record.id,
            name: record.name,
            created_at: record.created_at,
            updated_at: record.updated_at,
            used_by: record.used_by,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/secrets",
    tag = "secrets",
    request_body = CreateSecret,
    responses(
        (status = 201, description = "The secret, without its value", body = SecretView),
        Errors<(codes::InvalidName, codes::InvalidRequest, codes::Conflict)>,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateSecret>,
) -> Result<Created<SecretView>, ApiError> {
    let record = state.secrets.create(&request.name, &request.value).await?;
    let location = format!("/api/secrets/{}", record.name);
    Ok(created(StatusCode::CREATED, location, record.into()))
}

#[utoipa::path(
    get,
    path = "/api/secrets",
    tag = "secrets",
    responses((status = 200, description = "Every named secret, without values", body = Vec<SecretView>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<SecretView>>, ApiError> {
    let records = state.secrets.list().await?;
    Ok(Json(records.into_iter().map(SecretView::from).collect()))
}

#[utoipa::path(
    get,
    path = "/api/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 200, description = "The secret, without its value", body = SecretView),
        Errors<codes::NotFound>,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SecretView>, ApiError> {
    Ok(Json(state.secrets.get(&name).await?.into()))
}

#[utoipa::path(
    put,
    path = "/api/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    request_body = UpdateSecret,
    responses(
        (status = 200, description = "The secret, without its value", body = SecretView),
        Errors<(codes::InvalidRequest, codes::NotFound)>,
    )
)]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateSecret>,
) -> Result<Json<SecretView>, ApiError> {
    Ok(Json(state.secrets.update(&name, &request.value).await?.into()))
}

#[utoipa::path(
    delete,
    path = "/api/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 204, description = "Deleted"),
        Errors<(codes::NotFound, codes::Conflict)>,
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.secrets.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a rotation of the two keys stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeysView {
    /// The secrets key's ring, and the secrets an older key of it still seals.
    secrets_key: ResealStatus,
    /// Keys in the runner's cluster key ring (the first seals scan grants).
    cluster_keys: usize,
}

#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "secrets",
    responses((status = 200, description = "How many keys each ring holds, and the secrets not yet sealed under the current secrets key", body = KeysView))
)]
pub async fn keys(State(state): State<AppState>) -> Result<Json<KeysView>, ApiError> {
    keys_view(&state, state.secrets.status().await?)
}

#[utoipa::path(
    post,
    path = "/api/keys/reseal",
    tag = "secrets",
    responses((status = 200, description = "Every secret an older key sealed, sealed again under the current one (the runner also does this by itself during a rotation)", body = KeysView))
)]
pub async fn reseal(State(state): State<AppState>) -> Result<Json<KeysView>, ApiError> {
    keys_view(&state, state.secrets.reseal().await?)
}

fn keys_view(state: &AppState, secrets_key: ResealStatus) -> Result<Json<KeysView>, ApiError> {
    Ok(Json(KeysView {
        secrets_key,
        cluster_keys: state.registry.context().key.key_count(),
    }))
}
