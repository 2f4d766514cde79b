//! The OpenAPI document of the runner's API, the routes built from it, and the check that every
//! answer is one the document lists.
//!
//! [`documented_api!`] takes the handlers once and makes both the document and the routes from
//! their `#[utoipa::path]` attributes, so a route cannot exist without its documentation nor
//! be documented at another path or method than it is served at. A route's error answers come
//! from the codes it names (`Errors<…>`, see [`super::error`]) and those all protected routes
//! share; [`check_documented`] logs any answer its route's document lacks.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Json;
use axum::extract::{MatchedPath, Request};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use utoipa::openapi::OpenApi;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi as _};

use super::AppState;
use super::error::{ErrorCode, add_error_responses, documented_codes};
use crate::access::Role;

/// The name of the bearer-token security scheme in the document.
const BEARER: &str = "bearer";

/// Defines `ApiDoc` (the document), `public_routes()` and `role_routes(role)` (the routes) from
/// one list of handlers; protected operations require the bearer token, and name the least role
/// that may call them, in the document too.
macro_rules! documented_api {
    (
        public: [$($public_module:ident :: $public:ident),* $(,)?],
        $(
            $role:ident: [$($module:ident :: $handler:ident),* $(,)?]
        ),+ $(,)?
    ) => {
        use $crate::api::openapi::{CommonResponses, RequireToken};

        #[derive(utoipa::OpenApi)]
        #[openapi(
            info(title = "Kalla runner API", description = "Sources, connections, queries, recipes and reconciliation jobs. Every route but health, readiness, metrics and this document needs `Authorization: Bearer <token>`, of a token whose role (viewer, operator or admin, each allowed what the one before it is) the route names."),
            paths($($public_module::$public,)* $($($module::$handler,)*)+),
            components(schemas($crate::api::error::ErrorBody)),
            modifiers(&CommonResponses, &RequireToken),
        )]
        pub struct ApiDoc;

        fn public_routes() -> axum::Router<AppState> {
            axum::Router::new()
                $(.merge($crate::api::openapi::route::<pastey::paste!($public_module::[<__path_ $public>]), _, _>($public_module::$public)))*
        }

        /// The routes whose least role is `role`.
        fn role_routes(role: $crate::access::Role) -> axum::Router<AppState> {
            let mut routes = axum::Router::new();
            $(
                if role == $crate::access::Role::$role {
                    routes = routes
                        $(.merge($crate::api::openapi::route::<pastey::paste!($module::[<__path_ $handler>]), _, _>($module::$handler)))*;
                }
            )+
            routes
        }

        /// `(path, methods, least role)` of every operation that needs a token.
        pub(crate) fn protected_operations() -> Vec<(String, Vec<utoipa::openapi::path::HttpMethod>, $crate::access::Role)> {
            vec![$($((
                <pastey::paste!($module::[<__path_ $handler>]) as utoipa::Path>::path(),
                <pastey::paste!($module::[<__path_ $handler>]) as utoipa::Path>::methods(),
                $crate::access::Role::$role,
            ),)*)+]
        }
    };
}
pub(super) use documented_api;

/// The route of one handler, at the path and methods its `#[utoipa::path]` documents.
pub fn route<Doc, H, T>(handler: H) -> axum::Router<AppState>
where
    Doc: utoipa::Path,
    H: Handler<T, AppState>,
    T: 'static,
{
    let methods = Doc::methods()
        .into_iter()
        .fold(MethodRouter::new(), |methods, method| {
            methods.on(method_filter(&method), handler.clone())
        });
    axum::Router::new().route(&Doc::path(), methods)
}

fn method_filter(method: &HttpMethod) -> MethodFilter {
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
}

const ALL_METHODS: [HttpMethod; 8] = [
    HttpMethod::Get,
    HttpMethod::Post,
    HttpMethod::Put,
    HttpMethod::Delete,
    HttpMethod::Patch,
    HttpMethod::Head,
    HttpMethod::Options,
    HttpMethod::Trace,
];

fn operation<'a>(item: &'a PathItem, method: &HttpMethod) -> Option<&'a Operation> {
    match method {
        HttpMethod::Get => item.get.as_ref(),
        HttpMethod::Post => item.post.as_ref(),
        HttpMethod::Put => item.put.as_ref(),
        HttpMethod::Delete => item.delete.as_ref(),
        HttpMethod::Patch => item.patch.as_ref(),
        HttpMethod::Head => item.head.as_ref(),
        HttpMethod::Options => item.options.as_ref(),
        HttpMethod::Trace => item.trace.as_ref(),
    }
}

fn http_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Trace => Method::TRACE,
    }
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &HttpMethod) -> Option<&'a mut Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Head => item.head.as_mut(),
        HttpMethod::Options => item.options.as_mut(),
        HttpMethod::Trace => item.trace.as_mut(),
    }
}

/// Documents the 400 every operation with parameters or a body may answer, and the 413 of
/// every body.
pub(super) struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for method in ALL_METHODS {
                let Some(operation) = operation_mut(item, &method) else {
                    continue;
                };
                let has_body = operation.request_body.is_some();
                let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut operation.responses.responses;
                if has_body || has_parameters {
                    add_error_responses(responses, &[ErrorCode::InvalidRequest]);
                }
                if has_body {
                    add_error_responses(responses, &[ErrorCode::BodyTooLarge]);
                }
            }
        }
    }
}

/// The extension naming the least role an operation needs.
pub const ROLE_EXTENSION: &str = "x-kalla-role";

/// Declares the bearer token and, on every protected operation, requires it, names its least
/// role and documents what every protected operation may answer: 401 without a live token, 403
/// for a token of a lesser role, 503 while the metadata DB (which each of them reads) is away,
/// and 500 for a bug.
pub(super) struct RequireToken;

impl Modify for RequireToken {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        for (path, methods, role) in super::protected_operations() {
            let Some(item) = openapi.paths.paths.get_mut(&path) else {
                continue;
            };
            for method in methods {
                if let Some(operation) = operation_mut(item, &method) {
                    require_role(operation, role);
                }
            }
        }
    }
}

fn require_role(operation: &mut Operation, role: Role) {
    operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
    let mut codes = vec![
        ErrorCode::Unauthorized,
        ErrorCode::MetadataUnavailable,
        ErrorCode::Internal,
    ];
    if role > Role::Viewer {
        codes.push(ErrorCode::Forbidden);
    }
    add_error_responses(&mut operation.responses.responses, &codes);
    let extensions = operation.extensions.get_or_insert_with(Default::default);
    extensions.merge(
        Extensions::builder()
            .add(ROLE_EXTENSION, serde_json::json!(role.as_str()))
            .build(),
    );
    let needs = format!("Needs a token of the `{}` role or above.", role.as_str());
    operation.description = Some(match operation.description.take() {
        Some(description) => format!("{description}\n\n{needs}"),
        None => needs,
    });
}

/// The document, built once.
pub fn api_document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(super::ApiDoc::openapi)
}

/// What each operation documents, by method and route pattern (`/api/jobs/{id}`): its statuses,
/// each with the error codes it lists (none for a success).
type DocumentedAnswers = HashMap<(Method, String), HashMap<StatusCode, Vec<ErrorCode>>>;

fn documented_answers() -> &'static DocumentedAnswers {
    static ANSWERS: OnceLock<DocumentedAnswers> = OnceLock::new();
    ANSWERS.get_or_init(|| {
        let mut answers = HashMap::new();
        for (path, item) in &api_document().paths.paths {
            for method in ALL_METHODS {
                let Some(operation) = operation(item, &method) else {
                    continue;
                };
                let statuses = operation
                    .responses
                    .responses
                    .iter()
                    .filter_map(|(status, response)| {
                        let status = StatusCode::from_bytes(status.as_bytes()).ok()?;
                        Some((status, documented_codes(response)))
                    })
                    .collect();
                answers.insert((http_method(&method), path.clone()), statuses);
            }
        }
        answers
    })
}

/// Whether the document lists `status` (and `code`, for an error) for `method route`.
fn is_documented(method: &Method, route: &str, status: StatusCode, code: Option<ErrorCode>) -> bool {
    let Some(codes) = documented_answers()
        .get(&(method.clone(), route.to_string()))
        .and_then(|statuses| statuses.get(&status))
    else {
        return false;
    };
    code.is_none_or(|code| codes.is_empty() || codes.contains(&code))
}

/// The route pattern (`/api/jobs/{id}`) `request` was matched to; `None` for no route.
pub fn matched_route(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
}

/// Logs (and counts in `kalla_http_undocumented_answers_total`) every answer whose status or
/// error code the route's document does not list: the document must say everything a client can
/// get. The contract tests drive every documented error, and fail on any such log line.
pub async fn check_documented(request: Request, next: Next) -> Response {
    let Some(route) = matched_route(&request) else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    // A CORS preflight is the CORS layer's (or, with CORS closed, the token check's) answer about
    // the route, not an operation of it.
    if method == Method::OPTIONS {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let status = response.status();
    // 405 is the router's answer to a method the route does not have, not the route's.
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let code = response.extensions().get::<ErrorCode>().copied();
    if !is_documented(&method, &route, status, code) {
        let code = code.map_or("", ErrorCode::as_str);
        tracing::error!(%method, %route, status = status.as_u16(), code, "undocumented answer: the route's OpenAPI document lacks this status or code");
        metrics::counter!("kalla_http_undocumented_answers_total", "method" => method.to_string(), "route" => route)
            .increment(1);
    }
    response
}

/// The document, also for tools: `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document", body = serde_json::Value)),
)]
pub async fn document() -> Json<&'static OpenApi> {
    Json(api_document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_by_status_and_code() {
        let preview = "/api/sources/{alias}/load-scoped";
        let post = Method::POST;
        let unreachable = Some(ErrorCode::SourceUnavailable);
        assert!(is_documented(
            &post,
            preview,
            StatusCode::BAD_GATEWAY,
            unreachable
        ));
        // The status is documented (the metadata DB may be away), the code for it is not.
        assert!(!is_documented(
            &post,
            preview,
            StatusCode::SERVICE_UNAVAILABLE,
            unreachable
        ));
        let metadata = Some(ErrorCode::MetadataUnavailable);
        assert!(is_documented(
            &post,
            preview,
            StatusCode::SERVICE_UNAVAILABLE,
            metadata
        ));
        let finished = Some(ErrorCode::JobFinished);
        assert!(is_documented(
            &Method::DELETE,
            "/api/jobs/{id}",
            StatusCode::CONFLICT,
            finished
        ));
        let missing = Some(ErrorCode::NotFound);
        assert!(!is_documented(
            &Method::GET,
            "/api/sources",
            StatusCode::NOT_FOUND,
            missing
        ));
        assert!(is_documented(
            &Method::GET,
            "/ready",
            StatusCode::SERVICE_UNAVAILABLE,
            None
        ));
        assert!(!is_documented(
            &Method::GET,
            "/health",
            StatusCode::SERVICE_UNAVAILABLE,
            None
        ));
        assert!(!is_documented(&Method::GET, "/api/nothing", StatusCode::OK, None));
    }

    #[test]
    fn every_protected_operation_documents_the_token_the_metadata_db_and_bugs() {
        let shared = [
            ErrorCode::Unauthorized,
            ErrorCode::MetadataUnavailable,
            ErrorCode::Internal,
        ];
        for (path, methods, _) in super::super::protected_operations() {
            for method in methods {
                let method = http_method(&method);
                for code in shared {
                    assert!(
                        is_documented(&method, &path, code.status(), Some(code)),
                        "{method} {path} lacks {}",
                        code.as_str()
                    );
                }
            }
        }
    }
}
