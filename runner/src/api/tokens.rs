//! `/api/tokens`: named tokens made, listed and revoked by admins; a token's value is shown once.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiPath, Errors, codes};
use super::{ApiError, AppState, Created, created};
use crate::access::{Principal, Role};
use crate::metadata::TokenRecord;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// An identifier, unique among tokens (revoked ones included), not `bootstrap`.
    name: String,
    role: Role,
    /// The token stops working this many seconds from now; never, if absent.
    expires_in_secs: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    record: TokenRecord,
    /// The token's value: shown only in this answer, stored only as its SHA-256.
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token, with its value (shown this once)", body = IssuedToken),
        Errors<(codes::InvalidName, codes::Conflict)>,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<Created<IssuedToken>, ApiError> {
    let expires_in = request.expires_in_secs.map(Duration::from_secs);
    let issued = state
        .tokens
        .create(&request.name, request.role, expires_in, &principal)
        .await?;
    let location = format!("/api/tokens/{}", issued.record.name);
    let body = IssuedToken {
        record: issued.record,
        token: issued.value,
    };
    Ok(created(StatusCode::CREATED, location, body))
}

#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "Every named token, revoked ones included; never a value", body = Vec<TokenRecord>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    Ok(Json(state.tokens.list().await?))
}

#[utoipa::path(
    delete,
    path = "/api/tokens/{name}",
    tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 200, description = "The token, revoked: it is refused from now on", body = TokenRecord),
        Errors<codes::NotFound>,
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TokenRecord>, ApiError> {
    Ok(Json(state.tokens.revoke(&name).await?))
}

/// Who the calling token acts as: what a client (the console) needs to offer only what the
/// token may do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Caller {
    /// The token's name (`bootstrap` for the configured token).
    name: String,
    role: Role,
}

#[utoipa::path(
    get,
    path = "/api/whoami",
    tag = "tokens",
    responses((status = 200, description = "The calling token's name and role", body = Caller))
)]
pub async fn whoami(Extension(principal): Extension<Principal>) -> Json<Caller> {
    Json(Caller {
        name: principal.name,
        role: principal.role,
    })
}
