//! A node assembled from its ports: the dataset service, the block exchange, retrieval from
//! peers and the periodic re-advertisement of what it stores.
//!
//! Production (`services.rs`: libp2p, LMDB) and the simulator (simulated network, modeled
//! DHT, simulated disk) both start a node here, so what differs between them is only the
//! adapters passed in.

use std::sync::Arc;
use std::time::Duration;

use crate::dataset::{Datasets, Fetcher};
use crate::discovery::Discovery;
use crate::exchange::{EngineConfig, Exchange};
use crate::metrics::Metrics;
use crate::net::Network;
use crate::runtime::Compute;
use crate::store::{Recovery, SharedStore, StoreError};

/// How often stored datasets are announced again, so that provider records lost with
/// departed DHT peers come back.
pub const READVERTISE_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// Settings of the node logic.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub block_size_bytes: usize,
    pub engine: EngineConfig,
    pub readvertise_interval: Duration,
    pub compute: Compute,
}

impl NodeConfig {
    pub fn new(block_size_bytes: usize) -> NodeConfig {
        NodeConfig {
            block_size_bytes,
            engine: EngineConfig::default(),
            readvertise_interval: READVERTISE_INTERVAL,
            compute: Compute::Pool,
        }
    }
}

/// A running node's services.
#[derive(Clone)]
pub struct Node {
    pub datasets: Datasets,
    pub fetcher: Fetcher,
}

impl Node {
    /// Rolls back uploads a crash cut short, then starts the block exchange over `network`
    /// and a task that advertises every stored dataset now and every
    /// `readvertise_interval` after.
    pub async fn start(
        store: SharedStore,
        network: Arc<dyn Network>,
        discovery: Arc<dyn Discovery>,
        config: NodeConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Node, Recovery), StoreError> {
        let recovery = store.recover().await?;
        let datasets = Datasets::new(store.clone(), config.compute, config.block_size_bytes, metrics.clone());
        let exchange = Exchange::start(network.clone(), store, config.engine, metrics);
        let fetcher = Fetcher::new(datasets.clone(), exchange, network, discovery);
        let advertiser = fetcher.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(config.readvertise_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match advertiser.advertise_all().await {
                    Ok(count) => tracing::debug!(datasets = count, "advertised stored datasets"),
                    Err(e) => tracing::warn!(error = %e, "advertising stored datasets failed"),
                }
            }
        });
        Ok((Node { datasets, fetcher }, recovery))
    }
}
