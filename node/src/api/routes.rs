//! Route handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::headers::{self, RangeRequest};
use super::{ApiError, ApiState, OPENAPI_YAML};
use crate::content::{Cid, Codec, Manifest, blocks_count, cid_to_string, parse_cid};
use crate::dataset::{Dataset, UploadMeta};

type Shared = State<Arc<ApiState>>;

fn cid_param(text: &str) -> Result<Cid, ApiError> {
    parse_cid(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    headers
        .get(&name)
        .map(|v| v.to_str().map_err(|_| ApiError::unprocessable(format!("{name} is not visible ASCII"))))
        .transpose()
}

/// `{treeCid, datasetSize, blockSize, protected, filename?, mimetype?}`, and for a protected
/// dataset `ecK, ecM, originalTreeCid, originalDatasetSize, verifyRoot, slotRoots, cellSize`.
pub fn manifest_json(m: &Manifest) -> Value {
    let mut v = json!({
        "treeCid": cid_to_string(&m.tree_cid),
        "datasetSize": m.dataset_size_bytes,
        "blockSize": m.block_size_bytes,
        "protected": m.protected(),
    });
    if let Some(erasure) = &m.erasure {
        v["ecK"] = json!(erasure.ec_k);
        v["ecM"] = json!(erasure.ec_m);
        v["originalTreeCid"] = json!(cid_to_string(&erasure.original_tree_cid));
        v["originalDatasetSize"] = json!(erasure.original_dataset_size_bytes);
        if let Some(verification) = &erasure.verification {
            v["verifyRoot"] = json!(cid_to_string(&verification.verify_root));
            v["slotRoots"] = json!(verification.slot_roots.iter().map(cid_to_string).collect::<Vec<_>>());
            v["cellSize"] = json!(verification.cell_size_bytes);
        }
    }
    if let Some(name) = &m.filename {
        v["filename"] = json!(name);
    }
    if let Some(mime) = &m.mimetype {
        v["mimetype"] = json!(mime);
    }
    v
}

fn data_item(d: &Dataset) -> Value {
    json!({ "cid": cid_to_string(&d.cid), "manifest": manifest_json(&d.manifest) })
}

pub async fn upload(State(s): Shared, headers: HeaderMap, body: Body) -> Result<String, ApiError> {
    let mimetype = header_text(&headers, header::CONTENT_TYPE)?
        .map(headers::mime_type)
        .transpose()
        .map_err(ApiError::unprocessable)?;
    let filename = match headers.get(header::CONTENT_DISPOSITION) {
        Some(value) => {
            headers::disposition_header_filename(value.as_bytes()).map_err(ApiError::unprocessable)?
        }
        None => None,
    };
    let _slot = s.uploads.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} uploads are in progress, the most this node reads at once; retry shortly",
                s.limits.max_uploads
            ),
        )
        .retry_after(1)
    })?;
    if let Some(length) = header_text(&headers, header::CONTENT_LENGTH)?.and_then(|v| v.parse::<u64>().ok()) {
        refuse_if_too_large(&s, length).await?;
    }
    let idle = s.limits.upload_idle_timeout;
    let stalled = Arc::new(AtomicBool::new(false));
    let body = with_idle_timeout(body.into_data_stream(), idle, stalled.clone());
    let dataset = match s.datasets.upload(body, UploadMeta { filename, mimetype }).await {
        Ok(dataset) => dataset,
        Err(e) if stalled.load(Ordering::Relaxed) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("upload abandoned, nothing stored: no data for {} s ({e})", idle.as_secs()),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(cid = %cid_to_string(&dataset.cid), size_bytes = dataset.manifest.dataset_size_bytes, "stored dataset");
    if let Some(fetcher) = s.fetcher.clone() {
        let stored = dataset.clone();
        tokio::spawn(async move { fetcher.advertise(&stored).await });
    }
    Ok(cid_to_string(&dataset.cid))
}

/// The pieces of `body`, ending in an error (and `stalled` set) when none arrives for `idle`.
fn with_idle_timeout<S, E>(
    body: S,
    idle: Duration,
    stalled: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    Box::pin(futures::stream::unfold(Some(body), move |body| {
        let stalled = stalled.clone();
        async move {
            let mut body = body?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(piece))) => Some((Ok(piece), Some(body))),
                Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
                Ok(None) => None,
                Err(_) => {
                    stalled.store(true, Ordering::Relaxed);
                    Some((Err(format!("the client sent nothing for {} s", idle.as_secs())), None))
                }
            }
        }
    }))
}

/// Answers 413 before reading a body whose announced length cannot fit.
async fn refuse_if_too_large(s: &ApiState, length_bytes: u64) -> Result<(), ApiError> {
    let block = s.datasets.block_size_bytes() as u64;
    let needed = blocks_count(length_bytes, block) * block;
    let space = s.datasets.store().space().await?;
    let available = space.quota_max_bytes.saturating_sub(space.quota_used_bytes + space.quota_reserved_bytes);
    if needed > available {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "storage quota exceeded: the upload needs {needed} bytes, {available} of {} available",
                space.quota_max_bytes
            ),
        ));
    }
    Ok(())
}

pub async fn list_data(State(s): Shared) -> Result<Json<Value>, ApiError> {
    let datasets = s.datasets.list().await?;
    Ok(Json(json!({ "content": datasets.iter().map(data_item).collect::<Vec<_>>() })))
}

pub async fn download(
    State(s): Shared,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cid = cid_param(&cid)?;
    let not_here = || ApiError::not_found(format!("{} is not stored on this node", cid_to_string(&cid)));
    match Codec::of(&cid) {
        Some(Codec::Manifest) => {
            let dataset = s.datasets.get(cid).await?.ok_or_else(not_here)?;
            serve_dataset(&s, &dataset.manifest, &headers)
        }
        Some(Codec::Block) => {
            let data = s.datasets.store().get_block(cid).await?.ok_or_else(not_here)?;
            s.datasets.metrics().download_bytes.inc_by(data.len() as u64);
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
        }
        _ => Err(not_here()),
    }
}

fn serve_dataset(s: &ApiState, manifest: &Manifest, headers: &HeaderMap) -> Result<Response, ApiError> {
    let size = manifest.content_size_bytes();
    let request = match header_text(headers, header::RANGE)? {
        Some(value) => headers::range(value, size),
        None => RangeRequest::Whole,
    };
    let (status, range) = match request {
        RangeRequest::Whole => (StatusCode::OK, 0..size),
        RangeRequest::Part(range) => (StatusCode::PARTIAL_CONTENT, range),
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range outside the {size} bytes of the dataset"),
            )
            .into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return Ok(response);
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, range.end - range.start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, manifest.mimetype.as_deref().unwrap_or("application/octet-stream"));
    if status == StatusCode::PARTIAL_CONTENT {
        response =
            response.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", range.start, range.end - 1));
    }
    if let Some(value) = manifest.filename.as_deref().and_then(headers::disposition_for)
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        response = response.header(header::CONTENT_DISPOSITION, value);
    }
    let body = Body::from_stream(s.datasets.read(manifest, range));
    Ok(response.body(body).expect("valid response parts"))
}

fn fetcher(s: &ApiState) -> Result<&crate::dataset::Fetcher, ApiError> {
    s.fetcher
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no peer-to-peer network is running"))
}

impl From<crate::dataset::FetchError> for ApiError {
    fn from(e: crate::dataset::FetchError) -> ApiError {
        use crate::dataset::FetchError;
        match e {
            FetchError::NoProviders(_) | FetchError::Unavailable { .. } => ApiError::not_found(e.to_string()),
            FetchError::BadManifest { .. } => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
            FetchError::Store(e) => e.into(),
            FetchError::Abandoned(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// The manifest of a dataset, from this node or from the network (not stored until the data is).
pub async fn network_manifest(State(s): Shared, Path(cid): Path<String>) -> Result<Json<Value>, ApiError> {
    let cid = manifest_cid_param(&cid)?;
    let (manifest, _) = fetcher(&s)?.manifest(cid).await?;
    Ok(Json(data_item(&Dataset { cid, manifest })))
}

/// Starts fetching a dataset into this node and answers at once with its manifest.
pub async fn fetch_in_background(State(s): Shared, Path(cid): Path<String>) -> Result<Json<Value>, ApiError> {
    let cid = manifest_cid_param(&cid)?;
    let fetcher = fetcher(&s)?.clone();
    let (manifest, encoded) = fetcher.manifest(cid).await?;
    if s.datasets.get(cid).await?.is_none() {
        let stream = fetcher.stream(cid, manifest.clone(), encoded);
        tokio::spawn(async move {
            use futures::StreamExt as _;
            let mut stream = std::pin::pin!(stream);
            while let Some(piece) = stream.next().await {
                if piece.is_err() {
                    break; // logged by the fetcher
                }
            }
        });
    }
    Ok(Json(data_item(&Dataset { cid, manifest })))
}

/// Streams a dataset: from this node if stored here, else from the network while storing it.
pub async fn network_stream(
    State(s): Shared,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cid = manifest_cid_param(&cid)?;
    if let Some(dataset) = s.datasets.get(cid).await? {
        return serve_dataset(&s, &dataset.manifest, &headers);
    }
    let (manifest, encoded) = fetcher(&s)?.manifest(cid).await?;
    let mut response = Response::builder()
        .header(header::CONTENT_LENGTH, manifest.content_size_bytes())
        .header(header::CONTENT_TYPE, manifest.mimetype.as_deref().unwrap_or("application/octet-stream"));
    if let Some(value) = manifest.filename.as_deref().and_then(headers::disposition_for)
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        response = response.header(header::CONTENT_DISPOSITION, value);
    }
    let body = Body::from_stream(fetcher(&s)?.stream(cid, manifest, encoded));
    Ok(response.body(body).expect("valid response parts"))
}

fn manifest_cid_param(text: &str) -> Result<Cid, ApiError> {
    let cid = cid_param(text)?;
    if Codec::of(&cid) != Some(Codec::Manifest) {
        return Err(ApiError::bad_request(format!("{text} is not a manifest (dataset) CID")));
    }
    Ok(cid)
}

/// `?k=..&m=..` of the protect route.
#[derive(Debug, serde::Deserialize)]
pub struct ProtectQuery {
    k: Option<String>,
    m: Option<String>,
}

/// Erasure-codes a stored dataset into K + M slots and starts placing the slots on distinct
/// peers; answers with the protected dataset.
pub async fn protect(
    State(s): Shared,
    Path(cid): Path<String>,
    Query(query): Query<ProtectQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let cid = manifest_cid_param(&cid)?;
    let number = |name: &str, value: Option<String>| -> Result<u32, ApiError> {
        let value =
            value.ok_or_else(|| ApiError::bad_request(format!("query parameter {name} is required")))?;
        value.parse().map_err(|_| ApiError::bad_request(format!("{name}={value} is not a whole number")))
    };
    let (k, m) = (number("k", query.k)?, number("m", query.m)?);
    let dataset = s.datasets.protect(cid, k, m).await?;
    if let Some(durability) = &s.durability {
        durability.place(&dataset);
    }
    Ok((StatusCode::CREATED, Json(data_item(&dataset))))
}

/// The slots of protected datasets held by this node.
pub async fn slots(State(s): Shared) -> Result<Json<Value>, ApiError> {
    let held = s.datasets.store().list_slots().await?;
    let slots: Vec<Value> = held
        .iter()
        .map(|slot| {
            json!({
                "manifest": cid_to_string(&slot.manifest_cid),
                "slot": slot.slot,
                "firstBlock": slot.leaves.start,
                "blocks": slot.leaves.end - slot.leaves.start,
            })
        })
        .collect();
    Ok(Json(json!({ "slots": slots })))
}

pub async fn delete_data(State(s): Shared, Path(cid): Path<String>) -> Result<StatusCode, ApiError> {
    let cid = cid_param(&cid)?;
    if Codec::of(&cid) == Some(Codec::Block) && s.datasets.exists(cid).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this block belongs to a stored dataset; delete the dataset by its manifest CID",
        ));
    }
    if s.datasets.delete(cid).await? {
        tracing::info!(cid = %cid_to_string(&cid), "deleted dataset");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("{} is not stored on this node", cid_to_string(&cid))))
    }
}

pub async fn exists(State(s): Shared, Path(cid): Path<String>) -> Result<Json<Value>, ApiError> {
    let cid = cid_param(&cid)?;
    Ok(Json(json!({ "cid": cid_to_string(&cid), "exists": s.datasets.exists(cid).await? })))
}

pub async fn status(State(s): Shared, Path(cid): Path<String>) -> Result<Json<Value>, ApiError> {
    let cid = cid_param(&cid)?;
    let dataset =
        s.datasets.get(cid).await?.ok_or_else(|| {
            ApiError::not_found(format!("{} is not stored on this node", cid_to_string(&cid)))
        })?;
    let manifest = &dataset.manifest;
    let has_blocks = s.datasets.store().tree_presence(manifest.tree_cid, manifest.blocks_count()).await?;
    let status = if has_blocks.iter().all(|&held| held) { "Completed" } else { "Failure" };
    // `expiry` is the end of a storage contract; locally stored data has none (0).
    Ok(Json(json!({ "cid": cid_to_string(&cid), "status": status, "expiry": 0, "hasBlocks": has_blocks })))
}

#[derive(serde::Deserialize)]
pub struct LogLevelQuery {
    level: String,
}

/// Archivist's level names (`TRACE`…`FATAL`, with `NOTICE`) or tracing filter directives.
pub async fn set_log_level(
    State(s): Shared,
    axum::extract::Query(query): axum::extract::Query<LogLevelQuery>,
) -> Result<StatusCode, ApiError> {
    let setter = s.log_level.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this node does not own its log output")
    })?;
    let filter = match query.level.to_ascii_uppercase().as_str() {
        "NOTICE" => "info".to_string(),
        "FATAL" => "error".to_string(),
        "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR" => query.level.to_ascii_lowercase(),
        _ => query.level.clone(),
    };
    setter(&filter)
        .map_err(|e| ApiError::bad_request(format!("invalid log level {:?}: {e}", query.level)))?;
    tracing::info!(filter = %filter, "log level changed");
    Ok(StatusCode::OK)
}

pub async fn space(State(s): Shared) -> Result<Json<crate::store::Space>, ApiError> {
    Ok(Json(s.datasets.store().space().await?))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

pub async fn peer_id(State(s): Shared, headers: HeaderMap) -> Response {
    if wants_json(&headers) {
        Json(json!({ "id": s.peer_id })).into_response()
    } else {
        s.peer_id.clone().into_response()
    }
}

/// The node's signed peer record: `spr:` and base64, as text or `{"spr": ...}`.
pub async fn spr(State(s): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    let network = s.network.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no peer-to-peer network is running")
    })?;
    let record = network.signed_peer_record();
    Ok(if wants_json(&headers) {
        Json(json!({ "spr": record })).into_response()
    } else {
        record.into_response()
    })
}

pub async fn debug_info(State(s): Shared) -> Json<Value> {
    use crate::net::Network as _;
    let (addrs, announce, spr, reachability, nodes) = match &s.network {
        Some(network) => {
            let rtt = network.round_trips();
            let nodes: Vec<Value> = network
                .connected_peers()
                .iter()
                .map(|p| {
                    let id = p.to_string();
                    json!({ "nodeId": id, "peerId": id, "record": "", "address": "", "seen": true,
                            "rttMs": rtt.get(p).map(|d| d.as_secs_f64() * 1000.0) })
                })
                .collect();
            (
                network.listen_addrs(),
                network.announce_addrs(),
                network.signed_peer_record(),
                json!(network.reachability()),
                nodes,
            )
        }
        None => (Vec::new(), Vec::new(), String::new(), Value::Null, Vec::new()),
    };
    let local = json!({ "nodeId": s.peer_id, "peerId": s.peer_id, "record": spr, "address": announce.first().cloned().unwrap_or_default(), "seen": true });
    Json(json!({
        "id": s.peer_id,
        "addrs": addrs,
        "configuredListenAddrs": s.listen_addrs,
        "repo": s.data_dir.display().to_string(),
        "spr": spr,
        "announceAddresses": announce,
        "reachability": reachability,
        "ethAddress": s.market.as_ref().map(|m| m.marketplace().account().to_string()),
        "table": { "localNode": local, "nodes": nodes },
        "archivist": { "version": format!("neverust-{}", crate::VERSION), "revision": "", "contracts": "" },
    }))
}

/// `GET /debug/peer/{peerId}`: a peer's addresses, looked up in the DHT (Archivist's
/// `DebugPeerRecord`). `seqNo` is 0: the DHT's routing entries carry addresses, not the peer's
/// signed record and its sequence number.
pub async fn debug_peer(State(s): Shared, Path(peer_id): Path<String>) -> Result<Json<Value>, ApiError> {
    use crate::discovery::Discovery as _;
    use crate::net::Network as _;
    let network = s.network.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no peer-to-peer network is running")
    })?;
    let peer: libp2p::PeerId =
        peer_id.parse().map_err(|e| ApiError::bad_request(format!("invalid peer id {peer_id:?}: {e}")))?;
    let port_peer = crate::net::PeerId::from_bytes(peer.to_bytes());
    let addresses = if port_peer == network.local_peer_id() {
        network.announce_addrs()
    } else {
        let record = network.find_peer(&port_peer).await.map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("looking up {peer_id} failed: {e}"))
        })?;
        record.ok_or_else(|| ApiError::not_found(format!("peer {peer_id} was not found in the DHT")))?.addrs
    };
    Ok(Json(json!({ "peerId": peer.to_string(), "seqNo": 0, "addresses": addresses })))
}

/// Dials a peer at the given multiaddrs (comma-separated or repeated `addrs`).
pub async fn connect(
    State(s): Shared,
    Path(peer_id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<String, ApiError> {
    let network = s.network.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no peer-to-peer network is running")
    })?;
    let peer: libp2p::PeerId =
        peer_id.parse().map_err(|e| ApiError::bad_request(format!("invalid peer id {peer_id:?}: {e}")))?;
    let addrs: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "addrs")
        .flat_map(|(_, value)| percent_decode(value).split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .collect();
    use crate::net::Network as _;
    network
        .dial(&crate::net::PeerId::from_bytes(peer.to_bytes()), &addrs)
        .await
        .map_err(|e| ApiError::bad_request(format!("could not connect to {peer_id}: {e}")))?;
    Ok("Successfully connected to peer".into())
}

/// Decodes `%XX` escapes (and `+` as space) of a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| {
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, other) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn metrics(State(s): Shared) -> Result<Response, ApiError> {
    let metrics = s.datasets.metrics();
    metrics.observe_space(&s.datasets.store().space().await?);
    if let Some(network) = &s.network {
        use crate::net::Network as _;
        metrics.peer_count.set(network.connected_peers().len() as i64);
    }
    Ok((
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.encode(),
    )
        .into_response())
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /api/archivist/v1/openapi.yaml")
}
