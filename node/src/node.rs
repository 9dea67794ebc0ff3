//! A node assembled from its ports: the dataset service, the block exchange, retrieval from
//! peers and the periodic re-advertisement of what it stores.
//!
//! Production (`services.rs`: libp2p, LMDB) and the simulator (simulated network, modeled
//! DHT, simulated disk) both start a node here, so what differs between them is only the
//! adapters passed in.

use std::sync::Arc;
use std::time::Duration;

use crate::dataset::{Datasets, Fetcher};
use crate::discovery::{Discovery, PeerRecord};
use crate::durability::{Durability, DurabilityConfig};
use crate::exchange::{EngineConfig, Exchange};
use crate::market::{Market, MarketConfig, MarketPorts};
use crate::metrics::Metrics;
use crate::net::Network;
use crate::runtime::{Compute, NodeRng};
use crate::store::{Recovery, SharedStore, StoreError};

/// How often stored datasets are announced again, so that provider records lost with
/// departed DHT peers come back.
pub const READVERTISE_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// First retry of an announcement that failed (no peers yet, at start); doubles up to the
/// re-advertise interval.
pub const ADVERTISE_RETRY_MIN: Duration = Duration::from_secs(10);
/// How often a node with no peer at all dials its bootstrap nodes again.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(30);

/// Settings of the node logic.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub block_size_bytes: usize,
    pub engine: EngineConfig,
    pub readvertise_interval: Duration,
    pub compute: Compute,
    /// Peers to dial whenever this node has no peer at all (at start, after an outage).
    pub bootstrap: Vec<PeerRecord>,
    /// Seeds every random choice of the node logic.
    pub seed: u64,
    pub durability: DurabilityConfig,
    /// Used in market mode.
    pub market: MarketConfig,
}

/// The adapters a node runs over: what production and the simulator pass differently
/// (see the ports table in ARCHITECTURE.md).
#[derive(Clone)]
pub struct Ports {
    /// The disk port.
    pub store: SharedStore,
    pub network: Arc<dyn Network>,
    pub discovery: Arc<dyn Discovery>,
    pub metrics: Arc<Metrics>,
    /// The marketplace (market mode), or `None` for cluster mode.
    pub market: Option<MarketPorts>,
}

/// A running node's services.
#[derive(Clone)]
pub struct Node {
    pub datasets: Datasets,
    pub fetcher: Fetcher,
    pub durability: Durability,
    /// Purchasing, sales and validation, in market mode.
    pub market: Option<Market>,
}

impl Node {
    /// Rolls back uploads a crash cut short, then starts the block exchange over `network`
    /// and a task that advertises every stored dataset now and every
    /// `readvertise_interval` after; when announcing fails (before any peer is connected,
    /// say, here or when a new dataset is stored), it tries again after
    /// [`ADVERTISE_RETRY_MIN`], doubling. A third task dials the bootstrap nodes whenever
    /// the node has no peer (checked every [`RECONNECT_INTERVAL`]), so a node cut off by an
    /// outage finds its way back, and announces every stored dataset and held slot again as
    /// soon as it is connected once more.
    pub async fn start(ports: Ports, config: NodeConfig) -> Result<(Node, Recovery), StoreError> {
        let Ports { store, network, discovery, metrics, market } = ports;
        crate::market::zero_state_gauges(&metrics.market);
        let recovery = store.recover().await?;
        let datasets = Datasets::new(store.clone(), config.compute, config.block_size_bytes, metrics.clone());
        let exchange = Exchange::start(network.clone(), store, config.engine, metrics.clone());
        let fetcher = Fetcher::new(datasets.clone(), exchange.clone(), network.clone(), discovery.clone());
        let mut rng = NodeRng::from_seed(config.seed);
        let durability = Durability::start(
            fetcher.clone(),
            exchange,
            network.clone(),
            discovery,
            rng.child(),
            config.durability,
            metrics.clone(),
        );
        let market = match market {
            Some(ports) => Some(
                Market::start(
                    ports,
                    fetcher.clone(),
                    durability.clone(),
                    config.market,
                    rng.child(),
                    metrics,
                )
                .await?,
            ),
            None => None,
        };
        let (watcher, bootstrap) = (fetcher.clone(), config.bootstrap.clone());
        tokio::spawn(async move {
            let mut cut_off = false;
            loop {
                if network.connected_peers().is_empty() {
                    cut_off = true;
                    for record in &bootstrap {
                        if let Err(e) = network.dial(&record.peer, &record.addrs).await {
                            tracing::debug!(peer = %record.peer, error = %e, "bootstrap node unreachable");
                        }
                    }
                }
                if cut_off && !network.connected_peers().is_empty() {
                    // Provider records may have lapsed while cut off: renew them at once, so
                    // the other holders of our datasets find us before they count us gone.
                    cut_off = false;
                    if let Err(e) = watcher.advertise_all().await {
                        tracing::warn!(error = %e, "listing datasets to advertise failed");
                    }
                }
                tokio::time::sleep(RECONNECT_INTERVAL).await;
            }
        });
        let advertiser = fetcher.clone();
        tokio::spawn(async move {
            let interval = config.readvertise_interval;
            let mut retry = ADVERTISE_RETRY_MIN.min(interval);
            loop {
                let complete = match advertiser.advertise_all().await {
                    Ok((count, 0)) => {
                        tracing::debug!(datasets = count, "advertised stored datasets");
                        true
                    }
                    Ok((count, failed)) => {
                        tracing::debug!(
                            datasets = count,
                            failed,
                            "some datasets could not be advertised yet"
                        );
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listing datasets to advertise failed");
                        false
                    }
                };
                if complete {
                    retry = ADVERTISE_RETRY_MIN.min(interval);
                    tokio::select! {
                        () = tokio::time::sleep(interval) => continue,
                        () = advertiser.advertise_failed() => {} // a new dataset was not announced
                    }
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(interval);
            }
        });
        Ok((Node { datasets, fetcher, durability, market }, recovery))
    }
}
