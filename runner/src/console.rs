//! The web console at `/console/`: hand-written HTML, CSS and ES modules from `runner/console/`,
//! embedded in the binary when it is built and served as written. No Node and no build step;
//! the pages call the API with the token the person pasted in, so they can do what it may.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The console's own policy: its scripts, styles and API calls come from this origin only; no
/// inline script, no frame, no form posting elsewhere.
pub const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The console's files: path under `/console/`, media type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
    ("app.js", JS, include_str!("../console/app.js")),
    ("api.js", JS, include_str!("../console/api.js")),
    ("dom.js", JS, include_str!("../console/dom.js")),
    ("filters.js", JS, include_str!("../console/filters.js")),
    ("sources.js", JS, include_str!("../console/sources.js")),
    ("recipes.js", JS, include_str!("../console/recipes.js")),
    ("runs.js", JS, include_str!("../console/runs.js")),
    ("results.js", JS, include_str!("../console/results.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(to_console))
        .route("/console", get(to_console))
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{name}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

async fn to_console() -> Redirect {
    Redirect::permanent("/console/")
}

fn file(name: &str) -> Response {
    let Some((_, media_type, body)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return (StatusCode::NOT_FOUND, "no such file in the console").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_POLICY),
    );
    // A new runner may bring new files under the same names: the browser asks again each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_console_imports_is_served() {
        for (_, _, body) in FILES {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let name = line
                    .rsplit_once("from \"./")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("an import not from a sibling file: {line}"));
                assert!(
                    FILES.iter().any(|(file, _, _)| *file == name),
                    "{name} is not served"
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script() {
        let page = FILES[0].2;
        assert!(!page.contains("<script>"), "an inline <script> in index.html");
        let handler = page
            .split([' ', '\n'])
            .find(|word| word.starts_with("on") && word.contains('='));
        assert_eq!(handler, None, "an inline event handler in index.html");
    }
}
