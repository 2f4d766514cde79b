//! The OpenAPI document of the runner's API, and the routes built from it.
//!
//! [`documented_api!`] takes the handlers once and makes both the document and the routes from
//! their `#[utoipa::path]` attributes, so a route cannot exist without its documentation nor
//! be documented at another path or method than it is served at.

use std::sync::OnceLock;

use axum::Json;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Response};
use utoipa::{Modify, OpenApi as _};

use super::AppState;

/// The name of the bearer-token security scheme in the document.
const BEARER: &str = "bearer";

/// Defines `ApiDoc` (the document) and `public_routes()`/`protected_routes()` (the routes) from
/// one list of handlers; protected operations require the bearer token in the document too.
macro_rules! documented_api {
    (
        public: [$($public_module:ident :: $public:ident),* $(,)?],
        protected: [$($module:ident :: $handler:ident),* $(,)?] $(,)?
    ) => {
        use $crate::api::openapi::{CommonResponses, RequireToken};

        #[derive(utoipa::OpenApi)]
        #[openapi(
            info(title = "Kalla runner API", description = "Sources, connections, queries, recipes and reconciliation jobs. Every route but health, readiness, metrics and this document needs `Authorization: Bearer <token>`."),
            paths($($public_module::$public,)* $($module::$handler,)*),
            modifiers(&CommonResponses, &RequireToken),
        )]
        pub struct ApiDoc;

        fn public_routes() -> axum::Router<AppState> {
            axum::Router::new()
                $(.merge($crate::api::openapi::route::<pastey::paste!($public_module::[<__path_ $public>]), _, _>($public_module::$public)))*
        }

        fn protected_routes() -> axum::Router<AppState> {
            axum::Router::new()
                $(.merge($crate::api::openapi::route::<pastey::paste!($module::[<__path_ $handler>]), _, _>($module::$handler)))*
        }

        /// `(path, methods)` of every operation that needs the token.
        fn protected_operations() -> Vec<(String, Vec<utoipa::openapi::path::HttpMethod>)> {
            vec![$((
                <pastey::paste!($module::[<__path_ $handler>]) as utoipa::Path>::path(),
                <pastey::paste!($module::[<__path_ $handler>]) as utoipa::Path>::methods(),
            )),*]
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
        let invalid: RefOr<Response> = Response::builder()
            .description("A parameter or the body is malformed; the message names the problem")
            .into();
        let too_large: RefOr<Response> = Response::builder()
            .description(format!(
                "The body is larger than {} MiB",
                super::MAX_BODY_BYTES / (1024 * 1024)
            ))
            .into();
        for item in openapi.paths.paths.values_mut() {
            for method in ALL_METHODS {
                let Some(operation) = operation_mut(item, &method) else {
                    continue;
                };
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                if has_body || operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    responses.entry("400".into()).or_insert_with(|| invalid.clone());
                }
                if has_body {
                    responses.entry("413".into()).or_insert_with(|| too_large.clone());
                }
            }
        }
    }
}

/// Declares the bearer token and, on every protected operation, requires it and documents the
/// 401 it answers without it.
pub(super) struct RequireToken;

impl Modify for RequireToken {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(BEARER, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let unauthorized: RefOr<Response> = Response::builder()
            .description("The `Authorization: Bearer <token>` header is missing or wrong")
            .into();
        for (path, methods) in super::protected_operations() {
            let Some(item) = openapi.paths.paths.get_mut(&path) else {
                continue;
            };
            for method in methods {
                if let Some(operation) = operation_mut(item, &method) {
                    operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
                    operation
                        .responses
                        .responses
                        .insert("401".into(), unauthorized.clone());
                }
            }
        }
    }
}

/// The document, also for tools: `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document", body = serde_json::Value)),
)]
pub async fn document() -> Json<&'static OpenApi> {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    Json(DOCUMENT.get_or_init(super::ApiDoc::openapi))
}
