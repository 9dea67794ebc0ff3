//! Who may use the API: the access token, and the web origins allowed to call it (CORS).
//!
//! With a token configured, every request but `/health` must carry it, as
//! `Authorization: Bearer <token>` (scripts, the CLI, Prometheus) or as the password of HTTP
//! Basic authentication with any user name (a browser asks for it when it opens the web UI,
//! then sends it with every request the page makes). A request without it, or with another
//! token, is answered 401 with a `WWW-Authenticate` challenge. Tokens are compared through
//! their SHA-256 digests, so the time a comparison takes says nothing about the token.
//!
//! A browser sends Basic credentials by itself, with requests other sites' pages make too
//! (cross-site request forgery): a request authenticated that way is refused (403) when it
//! comes from another site (`Sec-Fetch-Site`, or an `Origin` that is neither this API's nor a
//! configured one), except a plain navigation (a link followed to a page or a download).
//!
//! Without configured origins the API sends no CORS headers: browsers keep other sites' pages
//! from reading its answers. A configured origin (or `*`) gets its requests' answers, and its
//! preflight requests are answered here, before the token is asked for (browsers send
//! preflights without credentials).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};

/// The route that answers without a token: load balancers and container health checks probe it.
pub const PUBLIC_PATH: &str = "/health";

/// The challenge of a 401: browsers ask for a user name and password (the token).
const CHALLENGE: &str = "Basic realm=\"neverust API\", charset=\"UTF-8\"";

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// Who may use the API.
#[derive(Clone, Debug, Default)]
pub struct ApiAccess {
    /// The SHA-256 of the token every request but [`PUBLIC_PATH`] must carry; `None` admits
    /// every request (an API on loopback).
    token_digest: Option<[u8; 32]>,
    /// Origins allowed to call the API from a web page; `*` for any.
    cors_origins: Vec<String>,
}

impl ApiAccess {
    pub fn new(token: Option<&str>, cors_origins: Vec<String>) -> ApiAccess {
        ApiAccess { token_digest: token.map(digest), cors_origins }
    }

    pub fn requires_token(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Whether `headers` carry the token (always, when none is required), and whether it came
    /// as Basic credentials (which browsers send by themselves).
    fn admits(&self, headers: &HeaderMap) -> Result<Credentials, &'static str> {
        let Some(expected) = &self.token_digest else {
            return Ok(Credentials::NotRequired);
        };
        let (presented, credentials) = presented_token(headers).ok_or("this API needs its access token")?;
        let actual = digest(&presented);
        // No early exit: every byte is compared.
        let difference = expected.iter().zip(&actual).fold(0u8, |d, (a, b)| d | (a ^ b));
        if difference == 0 { Ok(credentials) } else { Err("wrong API access token") }
    }

    /// Whether a request with these headers comes from another site's page: its
    /// `Sec-Fetch-Site`, or an `Origin` that is neither the API's own (`Host`) nor configured.
    fn from_another_site(&self, headers: &HeaderMap) -> bool {
        if self.allowed_origin(headers).is_some() {
            return false;
        }
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if matches!(fetch_site, Some("cross-site" | "same-site")) {
            return true;
        }
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) != Some(host)
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, when allowed.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.cors_origins
            .iter()
            .any(|o| o == "*" || o.as_bytes() == origin.as_bytes())
            .then(|| origin.clone())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: 32 characters of URL-safe base64, 192 bits.
pub fn random_token() -> String {
    // Production only: the API is not part of the simulated node.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// How a request that was let in carried the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credentials {
    /// No token is configured.
    NotRequired,
    /// `Authorization: Bearer`: set by a program (a page's script only after a CORS preflight).
    Bearer,
    /// `Authorization: Basic`: possibly sent by a browser on its own.
    Basic,
}

/// The token of `Authorization: Bearer <token>`, or the password of `Authorization: Basic`.
fn presented_token(headers: &HeaderMap) -> Option<(String, Credentials)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some((credentials.to_string(), Credentials::Bearer));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
        let (_user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return Some((password.to_string(), Credentials::Basic));
    }
    None
}

/// A browser following a link: a top-level GET, which a page elsewhere can start but not read.
fn is_navigation(request: &Request) -> bool {
    let mode = request.headers().get("sec-fetch-mode").and_then(|v| v.to_str().ok());
    matches!(*request.method(), Method::GET | Method::HEAD) && matches!(mode, Some("navigate") | None)
}

/// Answers 401 to a request without the token, except on [`PUBLIC_PATH`].
pub async fn require_token(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if request.uri().path() == PUBLIC_PATH {
        return next.run(request).await;
    }
    match state.access.admits(request.headers()) {
        Ok(Credentials::Basic)
            if state.access.from_another_site(request.headers()) && !is_navigation(&request) =>
        {
            let message = "a request from another site's page, with the browser's credentials: refused";
            ApiError::new(StatusCode::FORBIDDEN, message).into_response()
        }
        Ok(_) => next.run(request).await,
        Err(reason) => {
            let message = format!("{reason}: send it as `Authorization: Bearer <token>`");
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
            response
        }
    }
}

/// Adds CORS headers to the answers to allowed origins and answers their preflights.
pub async fn cors(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let Some(origin) = state.access.allowed_origin(request.headers()) else {
        let mut response = next.run(request).await;
        if !state.access.cors_origins.is_empty() {
            // Answers differ by origin: caches must keep them apart.
            response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
        }
        return response;
    };
    let preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PATCH, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, content-disposition, range"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_SECS.into());
        response
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("content-disposition, content-range, content-length, retry-after"),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}
