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
        Node::start_with(quota_bytes, super::ApiLimits::default()).await
    }

    async fn start_with(quota_bytes: u64, limits: super::ApiLimits) -> Node {
        Node::start_with_access(quota_bytes, limits, super::ApiAccess::default()).await
    }

    async fn start_with_access(quota_bytes: u64, limits: super::ApiLimits, access: super::ApiAccess) -> Node {
        let store = store::memory(quota_bytes);
        let datasets = Datasets::new(store.clone(), Compute::Inline, BLOCK, Arc::new(Metrics::new()))
            .with_upload_batch_bytes(4 * BLOCK);
        let mut state =
            ApiState::new(datasets, "12D3KooWTest".into(), "/tmp/x".into(), vec![]).with_limits(limits);
        state.access = access;
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
    assert_eq!(
        got.headers()["content-disposition"],
        "attachment; filename=\"cat.png\"; filename*=UTF-8''cat.png"
    );
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
        "/api/archivist/v1/debug/peer/{peerId}",
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
        "/",
        "/ui/{file}",
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

/// What the framework answers by itself (extractor rejections, 405, body and URI limits) has the
/// API's error shape too.
#[tokio::test]
async fn framework_rejections_are_json_errors() {
    let node = Node::start(1 << 30).await;
    let long_cid = "z".repeat(20 << 10);
    let manifest = node.upload(bytes(10)).await.text().await.unwrap();
    // (method, path, body bytes, status, words the message must contain)
    let cases: [(&str, String, usize, StatusCode, &str); 7] = [
        ("GET", format!("/data/{long_cid}"), 0, StatusCode::URI_TOO_LONG, "request target"),
        ("DELETE", format!("/data/{long_cid}"), 0, StatusCode::URI_TOO_LONG, "request target"),
        ("GET", format!("/data/{long_cid}/exists"), 0, StatusCode::URI_TOO_LONG, "request target"),
        ("POST", "/debug/chronicles/loglevel".into(), 0, StatusCode::BAD_REQUEST, "level"),
        ("POST", format!("/data/{manifest}/protect?k=2&m=1&m=1"), 0, StatusCode::BAD_REQUEST, "duplicate"),
        ("PUT", "/data".into(), 0, StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        ("POST", "/sales/availability".into(), 3 << 20, StatusCode::PAYLOAD_TOO_LARGE, "length limit"),
    ];
    for (method, path, body_bytes, want_status, want_words) in cases {
        let response = node
            .client
            .request(method.parse().unwrap(), node.v1(&path))
            .body(vec![b'{'; body_bytes])
            .send()
            .await
            .unwrap();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        let allow = response.headers().get("allow").cloned();
        let (status, message) = error_of(response).await;
        let shown = &path[..path.len().min(60)];
        assert_eq!(status, want_status, "{method} {shown}: {message}");
        assert_eq!(content_type, "application/json", "{method} {shown}");
        assert!(
            message.to_lowercase().contains(want_words),
            "{method} {shown}: {message:?} lacks {want_words:?}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(allow.unwrap(), "GET,HEAD,POST", "405 keeps its Allow header");
        }
    }
}

/// Requests the HTTP layer refuses before routing (over 64 KiB of request target, a malformed
/// request line) are answered as JSON errors too, and the node goes on serving.
#[tokio::test]
async fn requests_the_http_layer_refuses_are_json_errors() {
    let node = Node::start(1 << 30).await;
    let huge_cid = "z".repeat(100 << 10);
    for (request, status) in [
        (format!("GET /api/archivist/v1/data/{huge_cid} HTTP/1.1\r\nHost: x\r\n\r\n"), "414"),
        (format!("DELETE /api/archivist/v1/data/{huge_cid}/exists HTTP/1.1\r\nHost: x\r\n\r\n"), "414"),
        ("GET /health HTTP/1.1\r\nHost x\r\n\r\n".to_string(), "400"),
    ] {
        let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let answer = answer_until_closed(&mut socket, Duration::from_secs(10)).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        let json: Value = serde_json::from_str(body).expect("a JSON body");
        assert!(json["error"].is_string(), "{body}");
    }
    let health = node.client.get(format!("{}/health", node.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// Filenames as real clients send them: RFC 8187 `filename*`, raw UTF-8 in `filename`; answered
/// with an ASCII `filename` and `filename*`; a stored path is kept but never served as one.
#[tokio::test]
async fn filenames_in_any_language_and_never_as_paths() {
    let node = Node::start(1 << 30).await;
    // (Content-Disposition bytes, stored filename, download's Content-Disposition)
    let cases: [(&[u8], &str, &str); 3] = [
        (
            b"attachment; filename*=UTF-8''%E2%82%AC%20rates.txt",
            "\u{20ac} rates.txt",
            "attachment; filename=\"_ rates.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt",
        ),
        (
            "attachment; filename=\"r\u{e9}sum\u{e9}.pdf\"".as_bytes(),
            "r\u{e9}sum\u{e9}.pdf",
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
        ),
        (
            b"attachment; filename=\"../../etc/passwd\"",
            "../../etc/passwd",
            "attachment; filename=\"passwd\"; filename*=UTF-8''passwd",
        ),
    ];
    for (disposition, stored, served) in cases {
        let response = node
            .client
            .post(node.v1("/data"))
            .header("Content-Disposition", reqwest::header::HeaderValue::from_bytes(disposition).unwrap())
            .body(bytes(100))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{stored}");
        let cid = response.text().await.unwrap();
        let list: Value = node.get_json("/data").await;
        let item = list["content"].as_array().unwrap().iter().find(|i| i["cid"] == cid.as_str()).unwrap();
        assert_eq!(item["manifest"]["filename"], stored, "kept as sent");
        let download = node.get(&format!("/data/{cid}")).await;
        assert_eq!(download.headers()["content-disposition"].to_str().unwrap(), served);
    }
}

/// Sends the head of an upload announcing 1 MiB and `sent` bytes of its body, then stalls.
async fn stalled_upload(node: &Node, sent: usize) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head =
        format!("POST /api/archivist/v1/data HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 1 << 20);
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&vec![7u8; sent]).await.unwrap();
    socket
}

/// What a connection answers before the server closes it (within `wait`).
async fn answer_until_closed(socket: &mut tokio::net::TcpStream, wait: Duration) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(wait, socket.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_and_rolled_back() {
    let limits = super::ApiLimits { upload_idle_timeout: Duration::from_secs(1), ..Default::default() };
    let node = Node::start_with(1 << 30, limits).await;
    let used = node.used_bytes().await;
    let mut socket = stalled_upload(&node, 300 << 10).await;
    let answer = answer_until_closed(&mut socket, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/json") && answer.contains("no data for 1 s"), "{answer}");
    node.await_used(used).await;
    let metrics = node.metrics_text().await;
    assert!(metrics.lines().any(|l| l == "uploads_failed_total 1"), "{metrics}");
    assert!(node.get_json("/data").await["content"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn headers_sent_too_slowly_close_the_connection() {
    let limits = super::ApiLimits { header_timeout: Duration::from_secs(1), ..Default::default() };
    let node = Node::start_with(1 << 30, limits).await;
    let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // never finished
    let answer = answer_until_closed(&mut socket, Duration::from_secs(10)).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // The node still serves others.
    let health = node.client.get(format!("{}/health", node.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn uploads_beyond_the_cap_wait_their_turn() {
    let limits = super::ApiLimits {
        max_uploads: 1,
        upload_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let node = Node::start_with(1 << 30, limits).await;
    let mut stalled = stalled_upload(&node, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the first upload holds the only slot
    let refused = node.upload(bytes(100)).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let (status, message) = error_of(refused).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains("1 uploads are in progress"), "{message}");
    answer_until_closed(&mut stalled, Duration::from_secs(10)).await; // cut off: the slot is free
    assert_eq!(node.upload(bytes(100)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn debug_peer_needs_a_network() {
    let node = Node::start(1 << 30).await;
    let (status, message) = error_of(node.get("/debug/peer/12D3KooWTest").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
}

#[tokio::test]
async fn with_a_token_every_route_but_health_needs_it() {
    use base64::Engine as _;
    let token = "tok-0123456789abcdef";
    let access = super::ApiAccess::new(Some(token), vec![]);
    let node = Node::start_with_access(1 << 20, super::ApiLimits::default(), access).await;
    let paths =
        ["/api/archivist/v1/data", "/api/archivist/v1/space", "/metrics", "/", "/ui/app.js", "/nowhere"];
    for path in paths {
        let url = format!("{}{path}", node.base);
        let refused = node.client.get(&url).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            refused.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm="),
            "{path}"
        );
        let body: Value = refused.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
        let wrong = node.client.get(&url).bearer_auth("tok-0123456789abcdeX").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        let right = node.client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_ne!(right.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // A browser sends the token as Basic authentication's password, any user name.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("me:{token}"));
    let space = node.client.get(node.v1("/space")).header("authorization", format!("Basic {basic}"));
    assert_eq!(space.send().await.unwrap().status(), StatusCode::OK);
    let upload = node.client.post(node.v1("/data")).body(vec![7u8; 10_000]);
    assert_eq!(upload.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(node.used_bytes().await, 0, "a refused upload stores nothing");
    let upload = node.client.post(node.v1("/data")).bearer_auth(token).body(vec![7u8; 10_000]);
    assert_eq!(upload.send().await.unwrap().status(), StatusCode::OK);
    // /health answers without it.
    let health = node.client.get(format!("{}/health", node.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Refusals are counted like every answer.
    let metrics = node.client.get(format!("{}/metrics", node.base)).bearer_auth(token).send().await.unwrap();
    assert!(metrics.text().await.unwrap().contains("status=\"401\""));
}

/// A browser sends Basic credentials with other sites' requests too: those are refused unless
/// they are plain navigations; the node's own page and scripts with a bearer token are not.
#[tokio::test]
async fn browser_credentials_from_another_site_are_refused() {
    use base64::Engine as _;
    let token = "tok-0123456789abcdef";
    let node = Node::start_with_access(
        1 << 20,
        super::ApiLimits::default(),
        super::ApiAccess::new(Some(token), vec![]),
    )
    .await;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("u:{token}")));
    let own = format!("http://{}", node.addr);
    let post = |headers: &[(&str, &str)], auth: &str| {
        let mut request =
            node.client.post(node.v1("/data")).header("authorization", auth).body(vec![1u8; 100]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let forged = post(&[("origin", "https://evil.example")], &basic).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let fetched =
        post(&[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "no-cors")], &basic).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::FORBIDDEN);
    assert_eq!(node.used_bytes().await, 0, "nothing forged was stored");
    let from_the_ui =
        post(&[("origin", own.as_str()), ("sec-fetch-site", "same-origin")], &basic).await.unwrap();
    assert_eq!(from_the_ui.status(), StatusCode::OK);
    let script = post(&[("origin", "https://evil.example")], &format!("Bearer {token}")).await.unwrap();
    assert_eq!(
        script.status(),
        StatusCode::OK,
        "a bearer token is set by a program, not sent by the browser"
    );
    let link = node
        .client
        .get(node.v1("/space"))
        .header("authorization", &basic)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(link.status(), StatusCode::OK, "a link followed from elsewhere still opens");
}

#[tokio::test]
async fn cors_headers_only_for_configured_origins_and_preflights_need_no_token() {
    let token = "tok-0123456789abcdef";
    let allowed = "https://app.example.com";
    let access = super::ApiAccess::new(Some(token), vec![allowed.into()]);
    let node = Node::start_with_access(1 << 20, super::ApiLimits::default(), access).await;
    let preflight = |origin: &str| {
        node.client
            .request(reqwest::Method::OPTIONS, node.v1("/data"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let answer = preflight(allowed).await.unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_eq!(answer.headers()["access-control-allow-origin"], allowed);
    assert!(answer.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    // Answers to the allowed origin, refusals included, are readable by its pages.
    let refused = node.client.get(node.v1("/space")).header("origin", allowed).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["access-control-allow-origin"], allowed);
    let space =
        node.client.get(node.v1("/space")).header("origin", allowed).bearer_auth(token).send().await.unwrap();
    assert_eq!(space.status(), StatusCode::OK);
    assert!(
        space.headers()["access-control-expose-headers"].to_str().unwrap().contains("content-disposition")
    );
    // Without configured origins, no CORS headers at all.
    let plain = Node::start(1 << 20).await;
    let answer = plain.client.get(plain.v1("/space")).header("origin", allowed).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers().get("access-control-allow-origin").is_none());
}
