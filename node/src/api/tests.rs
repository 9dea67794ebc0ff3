//! The API over real loopback sockets, against the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ApiState, serve};
use crate::dataset::Datasets;
use crate::metrics::Metrics;
use crate::runtime::Compute;
use crate::store::{self, SharedStore};

const BLOCK: usize = 4096;

struct Node {
    base: String,
    addr: std::net::SocketAddr,
    store: SharedStore,
    client: reqwest::Client,
    /// Log filters the API set.
    levels: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Node {
    async fn start(quota_bytes: u64) -> Node {
        let store = store::memory(quota_bytes);
        let datasets = Datasets::new(store.clone(), Compute::Inline, BLOCK, Arc::new(Metrics::new()))
            .with_upload_batch_bytes(4 * BLOCK);
        let mut state = ApiState::new(datasets, "12D3KooWTest".into(), "/tmp/x".into(), vec![]);
        let levels = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = levels.clone();
        state.log_level = Some(Arc::new(move |filter: &str| {
            tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
            seen.lock().unwrap().push(filter.to_string());
            Ok(())
        }));
        let state = Arc::new(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, state, std::future::pending()));
        Node { base: format!("http://{addr}"), addr, store, client: reqwest::Client::new(), levels }
    }

    fn v1(&self, path: &str) -> String {
        format!("{}/api/archivist/v1{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.v1(path)).send().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("a JSON answer")
    }

    async fn get_range(&self, path: &str, range: &str) -> reqwest::Response {
        self.client.get(self.v1(path)).header("Range", range).send().await.unwrap()
    }

    async fn metrics_text(&self) -> String {
        self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap()
    }

    async fn upload(&self, data: Vec<u8>) -> reqwest::Response {
        self.client.post(self.v1("/data")).body(data).send().await.unwrap()
    }

    async fn used_bytes(&self) -> u64 {
        self.store.space().await.unwrap().quota_used_bytes
    }

    /// Waits until the store's used bytes equal `want` (a rollback runs as the request ends).
    async fn await_used(&self, want: u64) {
        for _ in 0..200 {
            if self.used_bytes().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("used bytes stayed at {}, want {want}", self.used_bytes().await);
    }
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("errors are JSON");
    (status, body["error"].as_str().expect("an error field").to_string())
}

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn upload_download_with_headers_and_ranges() {
    let node = Node::start(1 << 30).await;
    let data = bytes(3 * BLOCK + 17);
    let response = node
        .client
        .post(node.v1("/data"))
        .header("Content-Type", "image/png")
        .header("Content-Disposition", "attachment; filename=\"cat.png\"")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let cid = response.text().await.unwrap();

    let got = node.get(&format!("/data/{cid}")).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.headers()["content-length"], data.len().to_string().as_str());
    assert_eq!(got.headers()["content-disposition"], "attachment; filename=\"cat.png\"");
    assert_eq!(got.bytes().await.unwrap(), data);

    let part = node.get_range(&format!("/data/{cid}"), "bytes=4000-4200").await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], format!("bytes 4000-4200/{}", data.len()).as_str());
    assert_eq!(part.bytes().await.unwrap(), &data[4000..=4200]);

    let outside = node.get_range(&format!("/data/{cid}"), "bytes=99999-").await;
    assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(outside.headers()["content-range"], format!("bytes */{}", data.len()).as_str());

    // The alias routes reach the same data.
    let alias = node.client.get(format!("{}/api/v1/storage/retrieve/{cid}", node.base)).send().await.unwrap();
    assert_eq!(alias.bytes().await.unwrap(), data);

    let list: Value = node.get_json("/data").await;
    let item = &list["content"][0];
    assert_eq!(item["cid"], cid.as_str());
    assert_eq!(item["manifest"]["datasetSize"], data.len());
    assert_eq!(item["manifest"]["blockSize"], BLOCK);
    assert_eq!(item["manifest"]["protected"], false);
    assert_eq!(item["manifest"]["filename"], "cat.png");
    assert_eq!(item["manifest"]["mimetype"], "image/png");
    assert!(item["manifest"]["treeCid"].as_str().unwrap().starts_with('z'));

    let exists: Value = node.get_json(&format!("/data/{cid}/exists")).await;
    assert_eq!(exists["exists"], true);
    let deleted = node.client.delete(node.v1(&format!("/data/{cid}"))).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, _) = error_of(node.get(&format!("/data/{cid}")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let space: Value = node.get_json("/space").await;
    assert_eq!(
        space,
        serde_json::json!({"totalBlocks": 0, "quotaMaxBytes": 1u64 << 30, "quotaUsedBytes": 0, "quotaReservedBytes": 0})
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let node = Node::start(1 << 30).await;
    // (method, path, header, expected status, words the message must contain)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: [Case; 7] = [
        ("GET", "/data/not-a-cid", None, StatusCode::BAD_REQUEST, "malformed CID"),
        (
            "GET",
            "/data/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
            None,
            StatusCode::NOT_FOUND,
            "not stored",
        ),
        ("DELETE", "/data/zzz", None, StatusCode::BAD_REQUEST, "malformed CID"),
        (
            "DELETE",
            "/data/zDvZRwzm1NupFAhAYJoPbRHFzhteH6omdGWzY2Ppw881VkWtjYYM",
            None,
            StatusCode::NOT_FOUND,
            "not stored",
        ),
        (
            "POST",
            "/data",
            Some(("Content-Type", "not a mime")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Content-Type",
        ),
        (
            "POST",
            "/data",
            Some(("Content-Disposition", "attachment; filename=\"open")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Content-Disposition",
        ),
        ("GET", "/nope", None, StatusCode::NOT_FOUND, "no such route"),
    ];
    for (method, path, header, want_status, want_words) in cases {
        let mut request = node.client.request(method.parse().unwrap(), node.v1(path)).body(vec![1u8; 10]);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let (status, message) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, want_status, "{method} {path}: {message}");
        assert!(message.contains(want_words), "{method} {path}: {message:?} lacks {want_words:?}");
    }
    assert_eq!(node.used_bytes().await, 0, "refused uploads stored nothing");
    assert!(node.store.list_manifests().await.unwrap().is_empty());
}

#[tokio::test]
async fn over_quota_is_413_and_stores_nothing() {
    let node = Node::start(16 * BLOCK as u64).await;
    let kept = node.upload(bytes(4 * BLOCK)).await.text().await.unwrap();
    let used = node.used_bytes().await;
    // With a Content-Length the node refuses before reading the body.
    let (status, message) = error_of(node.upload(bytes(40 * BLOCK)).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
    assert!(message.contains("quota"), "{message}");
    // Without one (chunked), it finds out while writing and rolls back.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|i| Ok(vec![i as u8; BLOCK])).collect();
    let response = node
        .client
        .post(node.v1("/data"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, _) = error_of(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    node.await_used(used).await;
    let list: Value = node.get_json("/data").await;
    assert_eq!(list["content"].as_array().unwrap().len(), 1);
    assert_eq!(list["content"][0]["cid"], kept.as_str());
}

#[tokio::test]
async fn truncated_upload_is_rolled_back() {
    let node = Node::start(1 << 30).await;
    let kept = node.upload(bytes(2 * BLOCK)).await.text().await.unwrap();
    let used = node.used_bytes().await;
    // Announce 1 MiB, send 300 KiB (many committed batches), then hang up.
    let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head =
        format!("POST /api/archivist/v1/data HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 1 << 20);
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&vec![7u8; 300 << 10]).await.unwrap();
    socket.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    node.await_used(used).await;
    let metrics = node.metrics_text().await;
    assert!(metrics.lines().any(|l| l == "uploads_failed_total 1"), "{metrics}");
    let list: Value = node.get_json("/data").await;
    assert_eq!(list["content"].as_array().unwrap().len(), 1, "only the complete dataset is listed");
    assert_eq!(list["content"][0]["cid"], kept.as_str());
}

#[tokio::test]
async fn service_routes_answer_in_their_shapes() {
    let node = Node::start(1 << 30).await;
    let cid = node.upload(bytes(10)).await.text().await.unwrap();
    let health: Value =
        node.client.get(format!("{}/health", node.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let text = node.get("/peerid").await.text().await.unwrap();
    assert_eq!(text, "12D3KooWTest");
    let json: Value = node
        .client
        .get(node.v1("/peerid"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["id"], "12D3KooWTest");
    let info: Value = node.get_json("/debug/info").await;
    for key in ["id", "addrs", "repo", "spr", "announceAddresses", "ethAddress", "table", "archivist"] {
        assert!(info.get(key).is_some(), "debug/info lacks {key}");
    }
    let metrics = node.metrics_text().await;
    for line in [
        "blocks_stored 1",
        &format!("bytes_stored {BLOCK}"),
        "peer_count 0",
        "upload_bytes_total 10",
        "uploads_completed_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "metrics lack {line:?}:\n{metrics}");
    }
    assert!(
        metrics.contains(
            "http_requests_total{method=\"POST\",route=\"/api/archivist/v1/data\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    let status: Value = node.get_json(&format!("/data/{cid}/status")).await;
    assert_eq!(
        status,
        serde_json::json!({"cid": cid, "status": "Completed", "expiry": 0, "hasBlocks": [true]})
    );
    for (level, code) in [("DEBUG", 200), ("NOTICE", 200), ("neverust=trace", 200), ("neverust=loud", 400)] {
        let response = node
            .client
            .post(node.v1(&format!("/debug/chronicles/loglevel?level={level}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code, "{level}");
    }
    assert_eq!(*node.levels.lock().unwrap(), ["debug", "info", "neverust=trace"]);
    let openapi = node.get("/openapi.yaml").await.text().await.unwrap();
    assert!(openapi.starts_with("openapi: 3"));
}

/// Every route we serve is described in our OpenAPI document, and every path we describe exists.
#[test]
fn openapi_document_matches_the_router() {
    let described: Vec<&str> = super::OPENAPI_YAML
        .lines()
        .filter(|l| l.starts_with("  /") && l.ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    let served = [
        "/api/archivist/v1/data",
        "/api/archivist/v1/data/{cid}",
        "/api/archivist/v1/data/{cid}/protect",
        "/api/archivist/v1/data/{cid}/exists",
        "/api/archivist/v1/data/{cid}/network",
        "/api/archivist/v1/data/{cid}/network/stream",
        "/api/archivist/v1/data/{cid}/network/manifest",
        "/api/archivist/v1/data/{cid}/status",
        "/api/archivist/v1/slots",
        "/api/archivist/v1/space",
        "/api/archivist/v1/peerid",
        "/api/archivist/v1/spr",
        "/api/archivist/v1/connect/{peerId}",
        "/api/archivist/v1/debug/chronicles/loglevel",
        "/api/archivist/v1/debug/info",
        "/api/archivist/v1/sales/availability",
        "/api/archivist/v1/sales/availability/{id}",
        "/api/archivist/v1/sales/availability/{id}/reservations",
        "/api/archivist/v1/sales/slots",
        "/api/archivist/v1/sales/slots/{slotId}",
        "/api/archivist/v1/storage/request/{cid}",
        "/api/archivist/v1/storage/purchases",
        "/api/archivist/v1/storage/purchases/{id}",
        "/api/archivist/v1/openapi.yaml",
        "/api/v1/storage/store",
        "/api/v1/storage/retrieve/{cid}",
        "/api/v1/marketplace/list",
        "/api/v1/marketplace/buy",
        "/health",
        "/metrics",
    ];
    assert_eq!(described, served);
}

/// A node without a chain answers the marketplace routes with 503 and what to do about it.
#[tokio::test]
async fn marketplace_routes_say_when_there_is_no_chain() {
    let node = Node::start(1 << 30).await;
    for path in ["/sales/availability", "/sales/slots", "/storage/purchases"] {
        let (status, message) = error_of(node.get(path).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(message.contains("--eth-provider"), "{path}: {message}");
    }
}
