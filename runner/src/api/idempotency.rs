//! `Idempotency-Key` on POSTs that make something: the first request with a key makes the
//! resource; the same key and body, sent again or by many clients at once, get that resource;
//! the same key with another body is a 409. A request that fails frees its key.

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorCode, json_rejection};
use crate::metadata::{Claim, MetadataDb};

/// The header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest key accepted.
const MAX_KEY_CHARS: usize = 255;
/// How long a request waits for one with the same key and body that is being served.
const WAIT_FOR_IN_FLIGHT: Duration = Duration::from_secs(10);

/// A request's key, the route it was sent to (`POST /api/jobs`), and the SHA-256 of the route
/// and the body, which the key is bound to.
pub struct IdempotencyKey {
    key: String,
    route: String,
    request_sha256: String,
}

/// A JSON body with the `Idempotency-Key` it came with, if any.
pub struct IdempotentJson<T> {
    pub value: T,
    pub key: Option<IdempotencyKey>,
}

impl<S, T> FromRequest<S> for IdempotentJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let key = key_of(request.headers())?;
        let route = format!("{} {}", request.method(), request.uri().path());
        let is_json = json_content_type(request.headers());
        let body = Bytes::from_request(request, state).await.map_err(|rejection| {
            let code = match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
                _ => ErrorCode::InvalidRequest,
            };
            ApiError::new(code, rejection.body_text())
        })?;
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let Json(value) = Json::<T>::from_bytes(&body).map_err(json_rejection)?;
        let key = key.map(|key| IdempotencyKey {
            key,
            request_sha256: hex::encode(
                Sha256::new()
                    .chain_update(&route)
                    .chain_update([0u8])
                    .chain_update(&body)
                    .finalize(),
            ),
            route,
        });
        Ok(Self { value, key })
    }
}

/// Whether the body is declared JSON (`application/json` or `application/…+json`), as axum's
/// `Json` requires.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The request's `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !visible {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the Idempotency-Key header must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// What [`once`] gives: the id of the resource the request made, or of the one an earlier
/// request with the same key and body made.
pub enum Once<T> {
    Made(T),
    Earlier(String),
}

/// Runs `make` (which returns what it made and its id) unless `key` names a resource an earlier
/// request with the same key and body made; without a key, always runs it.
pub async fn once<T, E, Fut>(
    db: &MetadataDb,
    key: Option<&IdempotencyKey>,
    make: impl FnOnce() -> Fut,
    id_of: impl Fn(&T) -> String,
) -> Result<Once<T>, ApiError>
where
    Fut: Future<Output = Result<T, E>>,
    ApiError: From<E>,
{
    let Some(key) = key else {
        return Ok(Once::Made(make().await?));
    };
    let started = tokio::time::Instant::now();
    loop {
        match db
            .claim_idempotency_key(&key.route, &key.key, &key.request_sha256)
            .await?
        {
            Claim::Claimed => break,
            Claim::Made(id) => return Ok(Once::Earlier(id)),
            Claim::OtherRequest => {
                return Err(ApiError::new(
                    ErrorCode::IdempotencyConflict,
                    format!("Idempotency-Key {:?} was used with another request body", key.key),
                ));
            }
            Claim::InFlight if started.elapsed() >= WAIT_FOR_IN_FLIGHT => {
                return Err(ApiError::new(
                    ErrorCode::IdempotencyConflict,
                    format!(
                        "a request with Idempotency-Key {:?} is still being served; retry",
                        key.key
                    ),
                ));
            }
            Claim::InFlight => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    match make().await {
        Ok(made) => {
            db.settle_idempotency_key(&key.route, &key.key, &id_of(&made))
                .await?;
            Ok(Once::Made(made))
        }
        Err(error) => {
            if let Err(release) = db.release_idempotency_key(&key.route, &key.key).await {
                tracing::warn!(error = %release, "an idempotency key stays claimed until it is abandoned");
            }
            Err(error.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let with = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).unwrap());
            key_of(&headers)
        };
        assert_eq!(key_of(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            with(b"order-42/retry").unwrap().as_deref(),
            Some("order-42/retry")
        );
        let bad: [&[u8]; 3] = [b"two words", b"caf\xc3\xa9", &[b'k'; MAX_KEY_CHARS + 1]];
        for bad in bad {
            let error = with(bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(error.message.contains("Idempotency-Key"), "{}", error.message);
        }
    }
}
