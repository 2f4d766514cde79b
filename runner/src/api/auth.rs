//! Who a request acts as (its bearer token, 401 without a live one) and whether that token's role
//! may call the route (403 otherwise). Health, readiness, metrics and the document need neither.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ErrorCode;
use super::{ApiError, AppState};
use crate::access::{AccessError, Principal, Role, bearer_token};

/// Puts the token's [`Principal`] in the request (for the route) and in the response (for the
/// audit log), or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(presented) = bearer(request.headers()) else {
        return unauthorized("missing `Authorization: Bearer <token>` header");
    };
    let principal = match state.tokens.authenticate(presented).await {
        Ok(principal) => principal,
        Err(AccessError::Metadata(error)) => return ApiError::from(error).into_response(),
        Err(error) => return unauthorized(&error.to_string()),
    };
    request.extensions_mut().insert(principal.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(principal);
    response
}

/// Answers 403 unless the request's principal has at least the `required` role.
pub async fn require_role(State(required): State<Role>, request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<Principal>() else {
        return unauthorized("missing `Authorization: Bearer <token>` header");
    };
    if principal.role < required {
        let message = format!(
            "this route needs the {} role; token {:?} is a {}",
            required.as_str(),
            principal.name,
            principal.role.as_str()
        );
        return ApiError::new(ErrorCode::Forbidden, message).into_response();
    }
    next.run(request).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthorized, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_headers_name_a_token() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(bearer(&headers("Bearer kalla_x ")), Some("kalla_x"));
        assert_eq!(bearer(&headers("Basic a2FsbGE=")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
