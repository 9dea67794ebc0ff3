//! Networking benchmarks between in-process nodes on loopback (real libp2p TCP, Noise, Yamux):
//! `dial_ms`, `content_fetch_ms` (a 64 KiB block and a 1 MiB file, found through the DHT) and a
//! 1 GiB transfer. Each prints p50/p95/p99 besides criterion's estimates.
//!
//! `cargo bench -p neverust-benches --bench network`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use libp2p_identity::Keypair;
use neverust::dataset::{Dataset, UploadMeta};
use neverust::exchange::EngineConfig;
use neverust::metrics::Metrics;
use neverust::net::Network;
use neverust::net::p2p::{P2pConfig, P2pNetwork};
use neverust::services::{Services, ServicesConfig};
use neverust::store::{LmdbStore, SharedStore};
use neverust_benches::{random_bytes, report_percentiles, sha256_single_core};

struct Node {
    services: Services,
    _dir: tempfile::TempDir,
}

async fn node(bootstrap: Vec<String>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(LmdbStore::open(dir.path(), 8 << 30).unwrap());
    let config = ServicesConfig {
        block_size_bytes: 64 << 10,
        p2p: P2pConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap,
            ..P2pConfig::default()
        },
        engine: EngineConfig::default(),
        durability: neverust::durability::DurabilityConfig::default(),
        market: None,
        market_config: neverust::market::MarketConfig::default(),
    };
    let services =
        Services::start(store, Keypair::generate_ed25519(), config, Arc::new(Metrics::new())).await.unwrap();
    while services.network.listen_addrs().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Node { services, _dir: dir }
}

/// A provider holding `data` and a client connected to it through the bootstrap address.
async fn pair(data: &[u8]) -> (Node, Node, Dataset) {
    let provider = node(vec![]).await;
    let pieces = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    let dataset = provider.services.datasets.upload(pieces, UploadMeta::default()).await.unwrap();
    let client = node(provider.services.network.listen_addrs()).await;
    while client.services.network.connected_peers().is_empty()
        || provider.services.network.connected_peers().is_empty()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Announced once a peer is there to hold the record.
    assert!(provider.services.fetcher.advertise(&dataset).await);
    (provider, client, dataset)
}

/// Fetches the whole dataset over the network; returns the bytes received.
async fn fetch(client: &Node, dataset: &Dataset) -> usize {
    let (manifest, encoded) = client
        .services
        .fetcher
        .manifest(dataset.cid)
        .await
        .unwrap_or_else(|_| (dataset.manifest.clone(), Bytes::from(dataset.manifest.encode())));
    let mut stream = std::pin::pin!(client.services.fetcher.stream(dataset.cid, manifest, encoded));
    let mut received = 0;
    while let Some(piece) = stream.next().await {
        received += piece.unwrap().len();
    }
    received
}

fn dial_ms(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = runtime.block_on(node(vec![]));
    let (peer, addrs) = (target.services.network.local_peer_id(), target.services.network.listen_addrs());
    let mut samples = Vec::new();
    c.bench_function("dial_ms", |b| {
        b.iter_custom(|n| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    let config = P2pConfig { idle_timeout: Duration::from_secs(10), ..P2pConfig::default() };
                    let dialer = P2pNetwork::start(Keypair::generate_ed25519(), config).await.unwrap();
                    let started = Instant::now();
                    dialer.dial(&peer, &addrs).await.unwrap();
                    let took = started.elapsed();
                    samples.push(took);
                    total += took;
                }
                total
            })
        })
    });
    report_percentiles("dial_ms", &mut samples);
}

fn content_fetch_ms(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("content_fetch_ms");
    for (name, size) in [("block_64KiB", 64 << 10), ("file_1MiB", 1 << 20)] {
        let (_provider, client, dataset) = runtime.block_on(pair(&random_bytes(size, 5)));
        let mut samples = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|n| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..n {
                        let started = Instant::now();
                        assert_eq!(fetch(&client, &dataset).await, size);
                        let took = started.elapsed();
                        samples.push(took);
                        total += took;
                    }
                    total
                })
            })
        });
        report_percentiles(&format!("content_fetch_ms/{name}"), &mut samples);
    }
    group.finish();
}

fn transfer_1gib(c: &mut Criterion) {
    const SIZE: usize = 1 << 30;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_provider, client, dataset) = runtime.block_on(pair(&random_bytes(SIZE, 6)));
    let mut group = c.benchmark_group("transfer");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(60));
    group.bench_function("two_nodes_1GiB", |b| {
        b.iter_custom(|n| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..n {
                    assert_eq!(fetch(&client, &dataset).await, SIZE);
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, sha256_single_core, dial_ms, content_fetch_ms, transfer_1gib);
criterion_main!(benches);
