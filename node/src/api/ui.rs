//! The web UI: a page at `/` and its assets under `/ui/`, embedded in the binary (no build step,
//! no network at run time: the files in `node/ui/` are plain HTML, CSS and JavaScript that talk
//! to this same API).
//!
//! `NEVERUST_UI_DIR` serves the files from a directory instead, read at each request, so the UI
//! can be edited without rebuilding the node.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The UI's files: name, content type, embedded bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../ui/favicon.svg")),
];

/// `GET /`: the UI's page.
pub async fn index() -> Result<Response, ApiError> {
    asset("index.html")
}

/// `GET /ui/{file}`: one of the UI's assets.
pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    asset(&name)
}

fn asset(name: &str) -> Result<Response, ApiError> {
    let Some(&(name, content_type, embedded)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Err(ApiError::not_found(format!("the web UI has no file {name:?}")));
    };
    let body = match std::env::var_os("NEVERUST_UI_DIR") {
        Some(dir) => std::fs::read(std::path::Path::new(&dir).join(name)).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the UI file {name} from NEVERUST_UI_DIR: {e}"),
            )
        })?,
        None => embedded.to_vec(),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    // The page and its assets change with the binary: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    Ok(response)
}
