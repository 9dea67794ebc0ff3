//! What every request goes through: request metrics, the URI length limit, and JSON errors.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::metrics::{HttpLabels, RouteLabels};

/// The longest request target (path and query) the API reads. The longest route with a CID is
/// well under 1 KiB; anything longer is answered 414 before routing. (The HTTP layer itself
/// refuses targets over 64 KiB.)
pub const URI_MAX_BYTES: usize = 8 << 10;

/// The most of a non-JSON error body kept as the message of its JSON form.
const ERROR_TEXT_MAX_BYTES: usize = 16 << 10;

/// Counts every request by method, route template and status, and times it.
pub async fn track(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(request).await;
    let metrics = state.datasets.metrics();
    let status = response.status().as_u16();
    metrics
        .http_requests
        .get_or_create(&HttpLabels { method: method.clone(), route: route.clone(), status })
        .inc();
    metrics
        .http_request_duration_seconds
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Answers 414 for a request target longer than [`URI_MAX_BYTES`].
pub async fn limit_uri(request: Request, next: Next) -> Response {
    let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if length > URI_MAX_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("request target of {length} bytes; at most {URI_MAX_BYTES} are read"),
        )
        .into_response();
    }
    next.run(request).await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// Gives every error answer the API's shape, `{"error": "..."}` as `application/json`.
///
/// Handlers answer [`ApiError`]s already; this catches what the framework answers by itself:
/// extractor rejections (a missing or repeated query parameter, a malformed path or body), 405
/// for a known path with another method, and body limits. Their status and text are kept, and
/// so are their other headers (such as `Allow`).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, ERROR_TEXT_MAX_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = match text.is_empty() {
        true => status.canonical_reason().unwrap_or("request failed").to_lowercase(),
        false => text,
    };
    let json = serde_json::to_vec(&serde_json::json!({ "error": message })).expect("a JSON string");
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(json.len()));
    Response::from_parts(parts, Body::from(json))
}
