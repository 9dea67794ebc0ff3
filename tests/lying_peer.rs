//! A provider that serves corrupted blocks, over real libp2p connections on loopback: the
//! client detects every bad block, never stores one, drops the liar, and completes the
//! download from the honest provider.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use libp2p_identity::Keypair;
use neverust::dataset::UploadMeta;
use neverust::discovery::Discovery;
use neverust::exchange::driver::lookup;
use neverust::exchange::wire::{BlockDelivery, Message};
use neverust::exchange::{Answer, EngineConfig};
use neverust::metrics::Metrics;
use neverust::net::p2p::{P2pConfig, P2pNetwork};
use neverust::net::{NetEvent, Network};
use neverust::services::{Services, ServicesConfig};
use neverust::store::{self, SharedStore};

const BLOCK: usize = 64 << 10;

async fn services(store: SharedStore, bootstrap: Vec<String>) -> Services {
    let config = ServicesConfig {
        block_size_bytes: BLOCK,
        p2p: P2pConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap,
            ..P2pConfig::default()
        },
        engine: EngineConfig { want_timeout: Duration::from_secs(5), ..EngineConfig::default() },
        durability: neverust::durability::DurabilityConfig::default(),
        market: None,
        market_config: neverust::market::MarketConfig::default(),
    };
    let services =
        Services::start(store, Keypair::generate_ed25519(), config, Arc::new(Metrics::new())).await.unwrap();
    while services.network.listen_addrs().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    services
}

/// Answers every want from `store`, with one byte of each block flipped.
async fn serve_lies(network: Arc<P2pNetwork>, store: SharedStore) {
    while let Some(event) = network.next_event().await {
        let NetEvent::Message { from, payload } = event else { continue };
        let Ok(message) = Message::decode(&payload) else { continue };
        let mut reply = Message::default();
        for entry in message.want_list.entries {
            if let Answer::Block { cid, data, proof } = lookup(&store, &entry.address).await {
                let mut bad = data.to_vec();
                let middle = bad.len() / 2;
                bad[middle] ^= 0x01;
                reply.payload.push(BlockDelivery {
                    cid,
                    data: Bytes::from(bad),
                    address: entry.address,
                    proof,
                });
            }
        }
        if !reply.payload.is_empty() {
            let _ = network.send(&from, Bytes::from(reply.encode())).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blocks_are_rejected_and_the_download_completes() {
    let data: Vec<u8> = (0..40 * BLOCK).map(|i| (i * 31 + i / 977) as u8).collect();

    let honest = services(store::memory(1 << 30), vec![]).await;
    let pieces = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data.clone()))]);
    let dataset = honest.datasets.upload(pieces, UploadMeta::default()).await.unwrap();
    // Alone, the honest node has no DHT to announce to.
    assert!(!honest.fetcher.advertise(&dataset).await);
    let bootstrap = honest.network.listen_addrs();

    // The liar holds the same dataset and advertises it too, but corrupts what it sends.
    let liar_store = store::memory(1 << 30);
    let liar_datasets = neverust::dataset::Datasets::new(
        liar_store.clone(),
        neverust::runtime::Compute::Inline,
        BLOCK,
        Arc::new(Metrics::new()),
    );
    let pieces = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data.clone()))]);
    liar_datasets.upload(pieces, UploadMeta::default()).await.unwrap();
    let liar_config = P2pConfig {
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: bootstrap.clone(),
        idle_timeout: Duration::from_secs(60),
        ..P2pConfig::default()
    };
    let liar = P2pNetwork::start(Keypair::generate_ed25519(), liar_config).await.unwrap();
    while liar.connected_peers().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    liar.provide(dataset.cid).await.unwrap();
    liar.provide(dataset.manifest.tree_cid).await.unwrap();
    while honest.network.connected_peers().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(honest.fetcher.advertise(&dataset).await, "announced once a peer is connected");
    tokio::spawn(serve_lies(liar.clone(), liar_store));

    let client_store = store::memory(1 << 30);
    let client = services(client_store.clone(), bootstrap).await;
    client.network.dial(&liar.local_peer_id(), &liar.listen_addrs()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the DHT records settle

    let (manifest, encoded) =
        client.fetcher.manifest(dataset.cid).await.expect("the manifest from the honest provider");
    let mut stream = std::pin::pin!(client.fetcher.stream(dataset.cid, manifest.clone(), encoded));
    let mut received = Vec::new();
    while let Some(piece) = stream.next().await {
        received.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(received, data, "the streamed bytes are the original ones");

    // What the client stored is the original too, block by block.
    let stored = client.datasets.get(dataset.cid).await.unwrap().expect("the dataset is listed");
    let mut read_back = Vec::new();
    let mut local = std::pin::pin!(client.datasets.read(&stored.manifest, 0..u64::MAX));
    while let Some(piece) = local.next().await {
        read_back.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(read_back, data);

    // The liar was caught: the client hung up on it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.network.connected_peers().contains(&liar.local_peer_id()) {
        assert!(tokio::time::Instant::now() < deadline, "the liar is still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
