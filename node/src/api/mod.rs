//! The REST API (production): Archivist v1 compatible routes under `/api/archivist/v1`, plus
//! `/health`, `/metrics`, our OpenAPI document and the `/api/v1/storage/*` aliases.
//!
//! Errors are JSON `{"error": "..."}` with the status that says what went wrong: 400 for a
//! malformed CID or a broken upload, 404 for content not stored here, 413 over quota, 416 for an
//! unsatisfiable range, 422 for invalid header values, 500 for a damaged store.

mod error;
mod headers;
mod market;
mod routes;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};

use crate::dataset::Datasets;
use crate::metrics::{HttpLabels, RouteLabels};

pub use self::error::ApiError;

/// The OpenAPI description of this API, served at `/api/archivist/v1/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("openapi.yaml");

/// Changes the log filter at run time; answers why a filter was refused.
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the handlers share.
pub struct ApiState {
    pub datasets: Datasets,
    pub peer_id: String,
    pub data_dir: PathBuf,
    pub listen_addrs: Vec<String>,
    /// Set when the binary owns the log subscriber; `None` in embedded uses and tests.
    pub log_level: Option<LogLevelSetter>,
    /// The peer-to-peer node, when one runs.
    pub network: Option<Arc<crate::net::p2p::P2pNetwork>>,
    /// Retrieval from peers, when a network runs.
    pub fetcher: Option<crate::dataset::Fetcher>,
    /// Slot placement and repair, when a network runs.
    pub durability: Option<crate::durability::Durability>,
    /// Purchasing, sales and validation, in market mode.
    pub market: Option<crate::market::Market>,
}

impl ApiState {
    pub fn new(
        datasets: Datasets,
        peer_id: String,
        data_dir: PathBuf,
        listen_addrs: Vec<String>,
    ) -> ApiState {
        ApiState {
            datasets,
            peer_id,
            data_dir,
            listen_addrs,
            log_level: None,
            network: None,
            fetcher: None,
            durability: None,
            market: None,
        }
    }
}

/// All routes, with request metrics.
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/data", get(routes::list_data).post(routes::upload))
        .route("/data/{cid}", get(routes::download).delete(routes::delete_data))
        .route("/data/{cid}/exists", get(routes::exists))
        .route("/data/{cid}/protect", post(routes::protect))
        .route("/data/{cid}/network", post(routes::fetch_in_background))
        .route("/data/{cid}/network/stream", get(routes::network_stream))
        .route("/data/{cid}/network/manifest", get(routes::network_manifest))
        .route("/data/{cid}/status", get(routes::status))
        .route("/debug/chronicles/loglevel", post(routes::set_log_level))
        .route("/slots", get(routes::slots))
        .route("/space", get(routes::space))
        .route("/peerid", get(routes::peer_id))
        .route("/spr", get(routes::spr))
        .route("/connect/{peer_id}", get(routes::connect))
        .route("/debug/info", get(routes::debug_info))
        .route("/sales/availability", get(market::availabilities).post(market::add_availability))
        .route("/sales/availability/{id}", patch(market::update_availability))
        .route("/sales/availability/{id}/reservations", get(market::reservations))
        .route("/sales/slots", get(market::sales_slots))
        .route("/sales/slots/{slot_id}", get(market::sales_slot))
        .route("/storage/request/{cid}", post(market::request_storage))
        .route("/storage/purchases", get(market::purchases))
        .route("/storage/purchases/{id}", get(market::purchase))
        .route("/openapi.yaml", get(routes::openapi));
    Router::new()
        .nest("/api/archivist/v1", v1)
        .route("/api/v1/storage/store", post(routes::upload))
        .route("/api/v1/storage/retrieve/{cid}", get(routes::download))
        .route("/api/v1/marketplace/list", post(market::add_availability))
        .route("/api/v1/marketplace/buy", post(market::buy))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts every request by method, route template and status, and times it.
async fn track(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
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

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
