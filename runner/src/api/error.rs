//! API errors: every code the API answers with (its status and meaning, in one table), the code
//! each domain error maps to, and the body `{"error": {"code", "message"}}`.

use std::collections::BTreeMap;
use std::fmt::Display;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalla_core::preview::PreviewError;
use kalla_core::recon::params::ParamError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::{Content, Ref, RefOr};

use crate::access::AccessError;
use crate::cache::CacheError;
use crate::catalog::CatalogError;
use crate::connections::ConnectionError;
use crate::job_outputs::OutputError;
use crate::jobs::JobError;
use crate::metadata::Kind;
use crate::metadata::MetadataError;
use crate::open_items::OpenItemsError;
use crate::query::QueryError;
use crate::recipes::RecipeError;
use crate::registry::RegistryError;
use crate::results::ResultsError;
use crate::schedules::ScheduleError;
use crate::secrets::SecretError;
use crate::sources::SourceError;

/// The OpenAPI extension on each error response that lists the codes it stands for.
pub const CODES_EXTENSION: &str = "x-error-codes";

/// Declares [`ErrorCode`] and, in [`codes`], one marker type per code for route documents
/// (`Errors<(codes::NotFound, codes::Conflict)>`).
macro_rules! error_codes {
    ($($variant:ident = ($status:ident, $code:literal, $meaning:literal),)*) => {
        /// Every error the API answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(Self::$variant,)*];

            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }

            /// The `code` of the error body: stable and machine-readable.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// What the code means, for the document.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)*
                }
            }
        }

        /// One type per [`ErrorCode`], to name a route's codes in its `#[utoipa::path]`.
        // The codes every route shares are added by the document's modifiers: no route names
        // their types.
        #[allow(dead_code)]
        pub mod codes {
            $(
                pub struct $variant;
                impl super::Code for $variant {
                    const CODE: super::ErrorCode = super::ErrorCode::$variant;
                }
            )*
        }
    };
}

error_codes! {
    InvalidRequest = (BAD_REQUEST, "invalid_request", "a parameter or the body is malformed; the message names the problem"),
    InvalidLimit = (BAD_REQUEST, "invalid_limit", "`limit` is out of its range"),
    InvalidAlias = (BAD_REQUEST, "invalid_alias", "the alias is not an identifier"),
    InvalidSource = (BAD_REQUEST, "invalid_source", "the URI or source type is not one Kalla reads"),
    InvalidName = (BAD_REQUEST, "invalid_name", "the name is not an identifier"),
    InvalidConnection = (BAD_REQUEST, "invalid_connection", "the source type or settings are not usable"),
    UnknownColumn = (BAD_REQUEST, "unknown_column", "a condition names a column the source does not have"),
    InvalidCondition = (BAD_REQUEST, "invalid_condition", "a condition's operator or value does not fit its column"),
    InvalidOrder = (BAD_REQUEST, "invalid_order", "`order_by` names an unknown column or direction, or sorts deeper than a sorted read reaches"),
    InvalidSql = (BAD_REQUEST, "invalid_sql", "the SQL does not parse, is not one query, or names unknown columns"),
    InvalidRecipe = (BAD_REQUEST, "invalid_recipe", "the recipe does not fit its sources; the message names the field"),
    InvalidSchedule = (BAD_REQUEST, "invalid_schedule", "the schedule's name, cron, every or timezone is not usable; the message names which"),
    InvalidParams = (BAD_REQUEST, "invalid_params", "a recipe parameter is missing, not declared, not of its type, or not a plain name where it stands in a source location; the message names it"),
    Unauthorized = (UNAUTHORIZED, "unauthorized", "the `Authorization: Bearer <token>` header is missing, or its token unknown, expired or revoked"),
    Forbidden = (FORBIDDEN, "forbidden", "the token's role may not call this route; the message names the role it needs"),
    NotAllowed = (FORBIDDEN, "not_allowed", "the file, bucket or host is outside what this Kalla may reach (`--file-roots`, `--allowed-buckets`, `--allowed-hosts`); the message names the rule"),
    NotFound = (NOT_FOUND, "not_found", "the resource named in the path or body does not exist"),
    UnknownTable = (NOT_FOUND, "unknown_table", "the SQL names a table that is neither a connection's nor a source"),
    UnknownOutput = (NOT_FOUND, "unknown_output", "the job has no output of that name"),
    Conflict = (CONFLICT, "conflict", "the name is taken, or (deleting a secret) something still uses it"),
    RefreshRunning = (CONFLICT, "refresh_running", "a refresh of the table is running; retry when it has finished"),
    JobFinished = (CONFLICT, "job_finished", "the job has already finished"),
    IdempotencyConflict = (CONFLICT, "idempotency_conflict", "the `Idempotency-Key` was used with another request body, or its first request is still being served"),
    ItemClosed = (CONFLICT, "item_closed", "the open item is already closed: matched, referred or resolved"),
    NoResults = (CONFLICT, "no_results", "the job has not succeeded, so it has no results"),
    ResultsDeleted = (GONE, "results_deleted", "the job's result files were deleted, by request or by the retention sweep"),
    BodyTooLarge = (PAYLOAD_TOO_LARGE, "body_too_large", "the body is larger than 1 MiB"),
    QueueFull = (TOO_MANY_REQUESTS, "queue_full", "the job queue is full; retry after `Retry-After` seconds"),
    Internal = (INTERNAL_SERVER_ERROR, "internal", "a bug in Kalla: please report it with the message"),
    SecretUnreadable = (INTERNAL_SERVER_ERROR, "secret_unreadable", "a stored secret cannot be opened with the runner's `KALLA_SECRET_KEY`"),
    SourceUnavailable = (BAD_GATEWAY, "source_unavailable", "the source's database cannot be reached or its table is gone"),
    QueryFailed = (BAD_GATEWAY, "query_failed", "the cluster or a source failed while the query ran"),
    RefreshFailed = (BAD_GATEWAY, "refresh_failed", "the cache refresh failed; the previous version keeps serving"),
    ResultsUnavailable = (BAD_GATEWAY, "results_unavailable", "the job's result files cannot be read"),
    MetadataUnavailable = (SERVICE_UNAVAILABLE, "metadata_unavailable", "the metadata database cannot be reached; retry later"),
}

/// A marker type of [`codes`].
pub trait Code {
    const CODE: ErrorCode;
}

/// One code, or a tuple of codes: the error codes a route answers with.
pub trait CodeList {
    fn codes() -> Vec<ErrorCode>;
}

impl<C: Code> CodeList for C {
    fn codes() -> Vec<ErrorCode> {
        vec![C::CODE]
    }
}

macro_rules! code_tuples {
    ($(($($code:ident),+))*) => {
        $(impl<$($code: Code),+> CodeList for ($($code,)+) {
            fn codes() -> Vec<ErrorCode> {
                vec![$($code::CODE),+]
            }
        })*
    };
}

code_tuples! {
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
    (A, B, C, D, E, F, G)
    (A, B, C, D, E, F, G, H)
    (A, B, C, D, E, F, G, H, I)
    (A, B, C, D, E, F, G, H, I, J)
}

/// The error responses of a route, for `responses(…)` in its `#[utoipa::path]`: one response per
/// status, listing its codes. Codes every route shares (malformed requests, the token, the
/// metadata DB, bugs) are added to the document by [`super::openapi`]; a route names its own.
pub struct Errors<T>(std::marker::PhantomData<T>);

impl<T: CodeList> utoipa::IntoResponses for Errors<T> {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let mut responses = BTreeMap::new();
        add_error_responses(&mut responses, &T::codes());
        responses
    }
}

/// Adds `codes` to `responses`, merging them into the response of their status where one exists.
pub fn add_error_responses(
    responses: &mut BTreeMap<String, RefOr<utoipa::openapi::Response>>,
    codes: &[ErrorCode],
) {
    for &code in codes {
        let key = code.status().as_u16().to_string();
        let mut listed = responses.get(&key).map(documented_codes).unwrap_or_default();
        if !listed.contains(&code) {
            listed.push(code);
        }
        responses.insert(key, RefOr::T(error_response(&listed)));
    }
}

/// The codes an error response of the document lists.
pub fn documented_codes(response: &RefOr<utoipa::openapi::Response>) -> Vec<ErrorCode> {
    let RefOr::T(response) = response else {
        return Vec::new();
    };
    let listed = response
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get(CODES_EXTENSION))
        .and_then(|codes| codes.as_array())
        .cloned()
        .unwrap_or_default();
    ErrorCode::ALL
        .iter()
        .copied()
        .filter(|code| listed.iter().any(|listed| listed == code.as_str()))
        .collect()
}

fn error_response(codes: &[ErrorCode]) -> utoipa::openapi::Response {
    let description = codes
        .iter()
        .map(|code| format!("`{}`: {}", code.as_str(), code.meaning()))
        .collect::<Vec<_>>()
        .join("; ");
    let names: Vec<&str> = codes.iter().map(|code| code.as_str()).collect();
    let body = Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))));
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .extensions(Some(
            Extensions::builder()
                .add(CODES_EXTENSION, serde_json::json!(names))
                .build(),
        ))
        .build()
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
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
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: self.message,
            },
        });
        let mut response = if self.code == ErrorCode::QueueFull {
            (status, [(axum::http::header::RETRY_AFTER, "5")], body).into_response()
        } else {
            (status, body).into_response()
        };
        // For the check that every answer is one its route documents.
        response.extensions_mut().insert(self.code);
        response
    }
}

/// A domain error as the API answers it: its code, and its message (fit for users).
trait HasCode: Display {
    fn code(&self) -> ErrorCode;
}

impl<E: HasCode> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl HasCode for MetadataError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Duplicate { .. } | Self::InUse { .. } => ErrorCode::Conflict,
            _ => ErrorCode::MetadataUnavailable,
        }
    }
}

impl HasCode for OpenItemsError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::Closed { .. } => ErrorCode::ItemClosed,
            Self::Metadata(error) => error.code(),
        }
    }
}

impl HasCode for PreviewError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownColumn { .. } => ErrorCode::UnknownColumn,
            Self::InvalidCondition { .. } | Self::InvalidValue(_) => ErrorCode::InvalidCondition,
            Self::InvalidLimit(_) => ErrorCode::InvalidLimit,
            Self::NotAllowed(_) => ErrorCode::NotAllowed,
            Self::Unreachable(_) | Self::Gone(_) => ErrorCode::SourceUnavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl HasCode for RegistryError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Metadata(error) => error.code(),
            Self::Secret(error) => error.code(),
            Self::InvalidName {
                kind: Kind::Source, ..
            } => ErrorCode::InvalidAlias,
            Self::InvalidName {
                kind: Kind::Connection,
                ..
            }
            | Self::ReservedName => ErrorCode::InvalidName,
            Self::UnknownEngine {
                kind: Kind::Connection,
                ..
            } => ErrorCode::InvalidConnection,
            Self::UnknownEngine { .. } | Self::CannotInferEngine { .. } | Self::EngineMismatch { .. } => {
                ErrorCode::InvalidSource
            }
            Self::TwoPasswords | Self::NoCredentials => ErrorCode::InvalidRequest,
        }
    }
}

impl HasCode for SourceError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Registry(error) => error.code(),
            Self::Preview(error) => error.code(),
            Self::InvalidUri(_) => ErrorCode::InvalidSource,
            Self::NotAllowed(_) => ErrorCode::NotAllowed,
        }
    }
}

impl HasCode for SecretError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Metadata(error) => error.code(),
            Self::Unseal(_) | Self::NoPasswordSlot(_) => ErrorCode::SecretUnreadable,
            Self::InvalidName(_) => ErrorCode::InvalidName,
            Self::EmptyValue => ErrorCode::InvalidRequest,
        }
    }
}

impl HasCode for ConnectionError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Metadata(error) => error.code(),
            Self::Registry(error) => error.code(),
            Self::InvalidConfig(_) => ErrorCode::InvalidConnection,
            Self::NotAllowed(_) => ErrorCode::NotAllowed,
            Self::Unreachable(_) => ErrorCode::SourceUnavailable,
        }
    }
}

impl HasCode for CacheError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Registry(error) => error.code(),
            Self::Metadata(error) => error.code(),
            Self::RefreshRunning(_) => ErrorCode::RefreshRunning,
            Self::RefreshFailed { .. } => ErrorCode::RefreshFailed,
        }
    }
}

impl HasCode for QueryError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Catalog(error) => error.code(),
            Self::InvalidLimit(_) => ErrorCode::InvalidLimit,
        }
    }
}

impl HasCode for CatalogError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Cache(error) => error.code(),
            Self::Registry(error) => error.code(),
            Self::Output(error) => error.code(),
            Self::Metadata(error) => error.code(),
            Self::InvalidSql(_) => ErrorCode::InvalidSql,
            Self::UnknownTable(_) => ErrorCode::UnknownTable,
            Self::NotAllowed(_) => ErrorCode::NotAllowed,
            Self::Failed(_) => ErrorCode::QueryFailed,
            // A location naming parameters the reader did not give: the request's to give.
            Self::Params { .. } => ErrorCode::InvalidParams,
        }
    }
}

impl HasCode for ScheduleError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidSchedule,
            Self::NoSuchTick(_) => ErrorCode::InvalidRequest,
            Self::Job(error) => error.code(),
            Self::Recipe(error) => error.code(),
            Self::Metadata(error) => error.code(),
        }
    }
}

impl HasCode for ParamError {
    fn code(&self) -> ErrorCode {
        match self {
            // The recipe's own mistakes, found when it is stored.
            Self::InvalidDeclaration { .. } | Self::Undeclared { .. } => ErrorCode::InvalidRecipe,
            Self::Missing { .. }
            | Self::IllTyped { .. }
            | Self::Unknown { .. }
            | Self::UnsafeInLocation { .. }
            | Self::BadLocation(_) => ErrorCode::InvalidParams,
        }
    }
}

impl HasCode for RecipeError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Metadata(error) => error.code(),
            Self::Invalid(_) => ErrorCode::InvalidRecipe,
            Self::Params(error) => error.code(),
            // A source the recipe names that does not exist is the recipe's mistake.
            Self::Source {
                error: CatalogError::UnknownTable(_),
                ..
            } => ErrorCode::InvalidRecipe,
            Self::Source { error, .. } => error.code(),
            Self::Sample(_) => ErrorCode::QueryFailed,
            Self::Unreadable(..) => ErrorCode::Internal,
        }
    }
}

impl HasCode for AccessError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Metadata(error) => error.code(),
            Self::UnknownToken | Self::Expired(_) | Self::Revoked(_) => ErrorCode::Unauthorized,
            Self::InvalidName(_) => ErrorCode::InvalidName,
            Self::InvalidExpiry => ErrorCode::InvalidRequest,
        }
    }
}

impl HasCode for JobError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Recipe(error) => error.code(),
            Self::Catalog(error) => error.code(),
            Self::Params(error) => error.code(),
            Self::Metadata(error) => error.code(),
            Self::QueueFull(_) => ErrorCode::QueueFull,
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::Finished { .. } => ErrorCode::JobFinished,
            Self::Output(error) => error.code(),
            Self::Failed(_) | Self::Stalled(_) => ErrorCode::Internal,
        }
    }
}

impl HasCode for OutputError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Metadata(error) => error.code(),
            Self::UnknownOutput { .. } => ErrorCode::UnknownOutput,
            Self::Ambiguous(_) => ErrorCode::InvalidSql,
            Self::NoResults(_) | Self::NoRun(_) => ErrorCode::NoResults,
            Self::ResultsDeleted { .. } => ErrorCode::ResultsDeleted,
        }
    }
}

impl HasCode for ResultsError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidLimit(_) => ErrorCode::InvalidLimit,
            Self::InvalidOffset(_) => ErrorCode::InvalidRequest,
            Self::InvalidFilter(_) => ErrorCode::InvalidCondition,
            Self::Filter(error) => error.code(),
            Self::InvalidOrder(_) => ErrorCode::InvalidOrder,
            Self::Read(_) => ErrorCode::ResultsUnavailable,
        }
    }
}

/// An axum extractor of request parts whose rejections are API errors (400 naming the bad part).
macro_rules! api_parts_extractor {
    ($(#[$doc:meta])* $name:ident wraps $inner:ident) => {
        $(#[$doc])*
        pub struct $name<T>(pub T);

        impl<S, T> FromRequestParts<S> for $name<T>
        where
            T: DeserializeOwned + Send,
            S: Send + Sync,
        {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                match axum::extract::$inner::<T>::from_request_parts(parts, state).await {
                    Ok(axum::extract::$inner(value)) => Ok(Self(value)),
                    Err(rejection) => Err(ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())),
                }
            }
        }
    };
}

api_parts_extractor!(
    /// `Query<T>` whose rejections are API errors (400 naming the bad parameter).
    ApiQuery wraps Query
);
api_parts_extractor!(
    /// `Path<T>` whose rejections are API errors (400 naming the bad segment).
    ApiPath wraps Path
);

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

pub(super) fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(ErrorCode::BodyTooLarge, rejection.body_text());
    }
    ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())
}

/// A list's `limit`: `default` when absent, else between 1 and `max` (400 otherwise).
pub fn checked_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {max}, got {limit}"),
        ));
    }
    Ok(limit)
}

pub async fn no_such_route() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}
