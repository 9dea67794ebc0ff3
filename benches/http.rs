//! End-to-end HTTP upload and download of a 1 GiB file through the REST API of an in-process
//! node (LMDB store in a temp dir, real loopback sockets, streaming client); and the same upload
//! to a node over the in-memory store, which leaves the disk out.
//!
//! `cargo bench -p neverust-benches --bench http`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use neverust::api::{ApiState, serve};
use neverust::dataset::Datasets;
use neverust::metrics::Metrics;
use neverust::runtime::Compute;
use neverust::store::LmdbStore;
use neverust_benches::{random_bytes, sha256_single_core};

const FILE_BYTES: usize = 1 << 30;
const PIECE_BYTES: usize = 1 << 20;

struct Server {
    base: String,
    _dir: tempfile::TempDir,
}

/// A node over LMDB in a temp dir, or over the in-memory store (`memory`): the HTTP path,
/// chunking and hashing without the disk.
async fn start(memory: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: neverust::store::SharedStore = match memory {
        true => neverust::store::memory(8 << 30),
        false => Arc::new(LmdbStore::open(dir.path(), 8 << 30).unwrap()),
    };
    let datasets = Datasets::new(store, Compute::Pool, 64 << 10, Arc::new(Metrics::new()));
    let state = Arc::new(ApiState::new(datasets, "bench".into(), dir.path().into(), vec![]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/archivist/v1", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, std::future::pending()));
    Server { base, _dir: dir }
}

async fn upload(client: &reqwest::Client, base: &str, data: &Bytes) -> String {
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
        .step_by(PIECE_BYTES)
        .map(|at| Ok(data.slice(at..(at + PIECE_BYTES).min(data.len()))))
        .collect();
    let response = client
        .post(format!("{base}/data"))
        .header("Content-Length", data.len())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.text().await.unwrap()
}

fn http(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(start(false));
    let in_memory = runtime.block_on(start(true));
    let client = reqwest::Client::new();
    let data = Bytes::from(random_bytes(FILE_BYTES, 3));
    let mut group = c.benchmark_group("http");
    group
        .throughput(Throughput::Bytes(FILE_BYTES as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(40));
    for (name, node) in [("upload_1GiB", &server), ("upload_1GiB_memory_store", &in_memory)] {
        group.bench_function(name, |b| {
            b.iter_custom(|n| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..n {
                        let started = Instant::now();
                        let cid = upload(&client, &node.base, &data).await;
                        total += started.elapsed();
                        client.delete(format!("{}/data/{cid}", node.base)).send().await.unwrap();
                    }
                    total
                })
            })
        });
    }
    let cid = runtime.block_on(upload(&client, &server.base, &data));
    group.bench_function("download_1GiB", |b| {
        b.iter_custom(|n| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..n {
                    let response = client.get(format!("{}/data/{cid}", server.base)).send().await.unwrap();
                    let mut body = response.bytes_stream();
                    let mut received = 0;
                    while let Some(chunk) = body.next().await {
                        received += chunk.unwrap().len();
                    }
                    assert_eq!(received, FILE_BYTES);
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, sha256_single_core, http);
criterion_main!(benches);
