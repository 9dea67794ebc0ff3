//! Marketplace routes: availabilities and sales (hosts), storage requests and purchases
//! (clients), in Archivist's shapes; and the seed's `marketplace/list` and `marketplace/buy`.

use std::sync::Arc;

use alloy_primitives::B256;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::chain::ChainError;
use crate::chain::market::{Request, request_id};
use crate::content::{Cid, cid_to_string, parse_cid};
use crate::market::availability::NewAvailability;
use crate::market::purchasing::{Purchase, RequestError, StorageParams};
use crate::market::sales::Sale;
use crate::market::{Market, MarketError};

type Shared = State<Arc<ApiState>>;

fn market(s: &ApiState) -> Result<&Market, ApiError> {
    s.market.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the marketplace is not enabled: start the node with --eth-provider and the marketplace",
        )
    })
}

impl From<MarketError> for ApiError {
    fn from(e: MarketError) -> ApiError {
        use crate::market::availability::AvailabilityError;
        match &e {
            MarketError::Availability(AvailabilityError::Unknown(_)) => ApiError::not_found(e.to_string()),
            MarketError::Request(RequestError::UnknownDataset(_)) => ApiError::not_found(e.to_string()),
            MarketError::Availability(_) | MarketError::Request(_) | MarketError::NoProver => {
                ApiError::unprocessable(e.to_string())
            }
            MarketError::Chain(ChainError::InsufficientFunds { .. } | ChainError::Revert(_)) => {
                ApiError::unprocessable(e.to_string())
            }
            MarketError::Chain(ChainError::Unreachable { .. } | ChainError::NotMined { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            MarketError::Chain(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
            MarketError::Store(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// A JSON body, with a 400 naming what is wrong with it.
fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn hex_id(text: &str, what: &str) -> Result<B256, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a {what} (0x and 64 hex digits)")))
}

/// Archivist's `StorageRequest` JSON.
pub fn request_json(request: &Request) -> Value {
    let cid = Cid::try_from(request.content.cid.as_ref())
        .map(|cid| cid_to_string(&cid))
        .unwrap_or_else(|_| request.content.cid.to_string());
    let ask = &request.ask;
    json!({
        "id": request_id(request).to_string(),
        "client": request.client.to_string(),
        "ask": {
            "slots": ask.slots,
            "slotSize": ask.slotSize,
            "duration": ask.duration,
            "proofProbability": ask.proofProbability.to_string(),
            "pricePerBytePerSecond": ask.pricePerBytePerSecond.to_string(),
            "collateralPerByte": ask.collateralPerByte.to_string(),
            "maxSlotLoss": ask.maxSlotLoss,
        },
        "content": { "cid": cid, "merkleRoot": request.content.merkleRoot.to_string() },
        "expiry": request.expiry,
        "nonce": request.nonce.to_string(),
    })
}

fn purchase_json(purchase: &Purchase) -> Value {
    json!({
        "requestId": purchase.request_id.to_string(),
        "state": purchase.state.name(),
        "error": purchase.error,
        "request": request_json(&purchase.request()),
    })
}

fn sale_json(sale: &Sale) -> Value {
    json!({
        "id": sale.slot_id().to_string(),
        "slotIndex": sale.slot_index,
        "requestId": sale.request_id.to_string(),
        "request": request_json(&sale.request()),
        "state": sale.state.name(),
        "error": sale.error,
        "repair": sale.repair,
        "proofs": sale.proofs,
        "reservation": sale.availability.map(|a| json!({ "availabilityId": a, "size": sale.taken })),
    })
}

pub async fn availabilities(State(s): Shared) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(market(&s)?.availabilities())))
}

pub async fn add_availability(State(s): Shared, bytes: Bytes) -> Result<Response, ApiError> {
    let new: NewAvailability = body(&bytes)?;
    let availability = market(&s)?.add_availability(new).await?;
    Ok((StatusCode::CREATED, Json(json!(availability))).into_response())
}

pub async fn update_availability(
    State(s): Shared,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<StatusCode, ApiError> {
    let id = id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not an availability id")))?;
    market(&s)?.update_availability(id, body(&bytes)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The sales taking bytes from an availability.
pub async fn reservations(State(s): Shared, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: u64 =
        id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not an availability id")))?;
    let market = market(&s)?;
    if !market.availabilities().iter().any(|a| a.id == id) {
        return Err(ApiError::not_found(format!("no availability {id}")));
    }
    let sales: Vec<Value> = market
        .sales()
        .iter()
        .filter(|sale| sale.availability == Some(id) && !sale.state.is_final())
        .map(|sale| json!({ "slotId": sale.slot_id().to_string(), "requestId": sale.request_id.to_string(), "slotIndex": sale.slot_index, "size": sale.taken }))
        .collect();
    Ok(Json(json!(sales)))
}

/// Slot ids of the sales that have not ended.
pub async fn sales_slots(State(s): Shared) -> Result<Json<Value>, ApiError> {
    let ids: Vec<String> = market(&s)?
        .sales()
        .iter()
        .filter(|sale| !sale.state.is_final())
        .map(|sale| sale.slot_id().to_string())
        .collect();
    Ok(Json(json!(ids)))
}

pub async fn sales_slot(State(s): Shared, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = hex_id(&id, "slot id")?;
    let sale = market(&s)?.sale(id).ok_or_else(|| ApiError::not_found(format!("no sale of slot {id}")))?;
    Ok(Json(sale_json(&sale)))
}

pub async fn request_storage(
    State(s): Shared,
    Path(cid): Path<String>,
    bytes: Bytes,
) -> Result<String, ApiError> {
    let cid = parse_cid(&cid).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let params: StorageParams = body(&bytes)?;
    let id = market(&s)?.request_storage(cid, params).await?;
    Ok(id.to_string())
}

pub async fn purchases(State(s): Shared) -> Result<Json<Value>, ApiError> {
    let ids: Vec<String> = market(&s)?.purchases().iter().map(|p| p.request_id.to_string()).collect();
    Ok(Json(json!(ids)))
}

pub async fn purchase(State(s): Shared, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = hex_id(&id, "purchase id")?;
    let purchase =
        market(&s)?.purchase(id).ok_or_else(|| ApiError::not_found(format!("no purchase {id}")))?;
    Ok(Json(purchase_json(&purchase)))
}

/// `POST /api/v1/marketplace/buy`: a storage request, the dataset's CID in the body.
pub async fn buy(State(s): Shared, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let mut value: Value = body(&bytes)?;
    let cid = value
        .as_object_mut()
        .and_then(|fields| fields.remove("cid"))
        .and_then(|cid| cid.as_str().map(str::to_owned))
        .ok_or_else(|| ApiError::unprocessable("cid is required"))?;
    let cid = parse_cid(&cid).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let params: StorageParams = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let id = market(&s)?.request_storage(cid, params).await?;
    Ok(Json(json!({ "requestId": id.to_string() })))
}
