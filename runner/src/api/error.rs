//! API errors: a status and `{"error": {"code", "message"}}`, with every message fit for users.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalla_core::preview::PreviewError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::CacheError;
use crate::connections::ConnectionError;
use crate::jobs::JobError;
use crate::metadata::MetadataError;
use crate::query::QueryError;
use crate::recipes::RecipeError;
use crate::results::ResultsError;
use crate::secrets::SecretError;
use crate::sources::SourceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `not_found`, `invalid_request`, `unauthorized`.
    code: &'static str,
    /// What went wrong, for people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let status = self.status;
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (status, [(axum::http::header::RETRY_AFTER, "5")], body).into_response();
        }
        (status, body).into_response()
    }
}

impl From<MetadataError> for ApiError {
    fn from(error: MetadataError) -> Self {
        let status = match &error {
            MetadataError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            MetadataError::Duplicate { .. } => (StatusCode::CONFLICT, "conflict"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "metadata_unavailable"),
        };
        Self::new(status.0, status.1, error.to_string())
    }
}

impl From<PreviewError> for ApiError {
    fn from(error: PreviewError) -> Self {
        let (status, code) = match &error {
            PreviewError::UnknownColumn { .. } => (StatusCode::BAD_REQUEST, "unknown_column"),
            PreviewError::InvalidCondition { .. } | PreviewError::InvalidValue(_) => {
                (StatusCode::BAD_REQUEST, "invalid_condition")
            }
            PreviewError::InvalidLimit(_) => (StatusCode::BAD_REQUEST, "invalid_limit"),
            PreviewError::Unreachable(_) | PreviewError::Gone(_) => {
                (StatusCode::BAD_GATEWAY, "source_unavailable")
            }
            PreviewError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Metadata(error) => error.into(),
            SourceError::Preview(error) => error.into(),
            SourceError::InvalidAlias(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_alias", error.to_string())
            }
            SourceError::UnknownType(_)
            | SourceError::CannotInferType(_)
            | SourceError::TypeMismatch { .. }
            | SourceError::InvalidUri(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_source", error.to_string())
            }
            SourceError::Secret(error) => error.into(),
        }
    }
}

impl From<SecretError> for ApiError {
    fn from(error: SecretError) -> Self {
        match error {
            SecretError::Metadata(error) => error.into(),
            SecretError::Unseal(_) | SecretError::NoPasswordSlot(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "secret_unreadable",
                error.to_string(),
            ),
        }
    }
}

impl From<ConnectionError> for ApiError {
    fn from(error: ConnectionError) -> Self {
        match error {
            ConnectionError::Metadata(error) => error.into(),
            ConnectionError::Secret(error) => error.into(),
            ConnectionError::InvalidName(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_name", error.to_string())
            }
            ConnectionError::UnknownType(_) | ConnectionError::InvalidConfig(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_connection", error.to_string())
            }
            ConnectionError::Unreachable(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "source_unavailable", error.to_string())
            }
        }
    }
}

impl From<CacheError> for ApiError {
    fn from(error: CacheError) -> Self {
        match error {
            CacheError::Connection(error) => error.into(),
            CacheError::Metadata(error) => error.into(),
            CacheError::RefreshRunning(_) => {
                Self::new(StatusCode::CONFLICT, "refresh_running", error.to_string())
            }
            CacheError::RefreshFailed { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "refresh_failed", error.to_string())
            }
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Cache(error) => error.into(),
            QueryError::Connection(error) => error.into(),
            QueryError::Source(error) => error.into(),
            QueryError::Metadata(error) => error.into(),
            QueryError::InvalidLimit(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_limit", error.to_string())
            }
            QueryError::InvalidSql(_) => Self::new(StatusCode::BAD_REQUEST, "invalid_sql", error.to_string()),
            QueryError::UnknownTable(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_table", error.to_string())
            }
            QueryError::Failed(_) => Self::new(StatusCode::BAD_GATEWAY, "query_failed", error.to_string()),
        }
    }
}

impl From<RecipeError> for ApiError {
    fn from(error: RecipeError) -> Self {
        match error {
            RecipeError::Metadata(error) => error.into(),
            RecipeError::Invalid(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_recipe", error.to_string())
            }
            // A source the recipe names that does not exist is the recipe's mistake.
            RecipeError::Source {
                error:
                    QueryError::UnknownTable(_)
                    | QueryError::Source(SourceError::Metadata(MetadataError::NotFound { .. })),
                ..
            } => Self::new(StatusCode::BAD_REQUEST, "invalid_recipe", error.to_string()),
            RecipeError::Source { side, error } => {
                let mut api: ApiError = error.into();
                api.message = format!("{side}.source: {}", api.message);
                api
            }
            RecipeError::Unreadable(..) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string())
            }
        }
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Recipe(error) => error.into(),
            JobError::Query(error) => error.into(),
            JobError::Metadata(error) => error.into(),
            JobError::QueueFull(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", error.to_string())
            }
            JobError::InvalidRequest(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request", error.to_string())
            }
            JobError::Finished { .. } => Self::new(StatusCode::CONFLICT, "job_finished", error.to_string()),
            JobError::UnknownOutput { .. } => {
                Self::new(StatusCode::NOT_FOUND, "unknown_output", error.to_string())
            }
            JobError::NoResults(_) => Self::new(StatusCode::CONFLICT, "no_results", error.to_string()),
            JobError::Failed(_) | JobError::Stalled(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "job_failed", error.to_string())
            }
        }
    }
}

impl From<ResultsError> for ApiError {
    fn from(error: ResultsError) -> Self {
        match error {
            ResultsError::InvalidLimit(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_limit", error.to_string())
            }
            ResultsError::Read(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "results_unavailable", error.to_string())
            }
        }
    }
}

/// `Query<T>` whose rejections are API errors (400 naming the bad parameter).
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                rejection.body_text(),
            )),
        }
    }
}

/// `Json<T>` whose rejections are API errors (400 naming the problem, 413 for oversized bodies).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            rejection.body_text(),
        );
    }
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", rejection.body_text())
}

pub async fn no_such_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
