//! The REST API (production): Archivist v1 compatible routes under `/api/archivist/v1`, plus
//! `/health`, `/metrics`, our OpenAPI document, the `/api/v1/storage/*` aliases, and the web UI
//! at `/` (`ui.rs`).
//!
//! Every error is JSON `{"error": "..."}` with the status that says what went wrong: 400 for a
//! malformed CID or a broken upload, 404 for content not stored here, 408 for an upload that
//! stalled, 413 over quota, 414 for an over-long request target, 416 for an unsatisfiable range,
//! 401 without the access token (when one is configured: `access.rs`), 422 for invalid header values, 500 for a damaged store, 503 when too many uploads run at once;
//! the framework's own rejections are rewritten into the same shape (`layers::json_errors`).

pub mod access;
mod conn;
mod error;
pub mod headers;
mod layers;
mod market;
mod routes;
mod server;
#[cfg(test)]
mod tests;
mod ui;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, patch, post};

use crate::dataset::Datasets;

pub use self::access::ApiAccess;
pub use self::error::ApiError;
pub use self::server::{ApiLimits, serve};

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
    /// What a client may hold open.
    pub limits: ApiLimits,
    /// Uploads in progress, at most `limits.max_uploads`.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// The access token and the origins allowed to call the API (none of either by default).
    pub access: ApiAccess,
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
            limits: ApiLimits::default(),
            uploads: Arc::new(tokio::sync::Semaphore::new(ApiLimits::default().max_uploads)),
            access: ApiAccess::default(),
        }
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: ApiLimits) -> ApiState {
        self.uploads = Arc::new(tokio::sync::Semaphore::new(limits.max_uploads));
        self.limits = limits;
        self
    }
}

/// All routes, with request metrics, the access token and CORS.
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
        .route("/debug/peer/{peer_id}", get(routes::debug_peer))
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
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), access::require_token))
        .layer(middleware::from_fn(layers::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), access::cors))
        .layer(middleware::from_fn(layers::limit_uri))
        .layer(middleware::from_fn_with_state(state.clone(), layers::track))
        .with_state(state)
}
