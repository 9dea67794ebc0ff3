//! Assembling a node's services from its adapters (production): the dataset service over a
//! store, the libp2p network, the block exchange and network retrieval. The binary, the
//! benchmarks and embedded uses all start a node this way.

use std::sync::Arc;

use libp2p::identity::Keypair;

use crate::dataset::{Datasets, Fetcher};
use crate::exchange::{EngineConfig, Exchange};
use crate::metrics::Metrics;
use crate::net::p2p::{P2pConfig, P2pError, P2pNetwork};
use crate::runtime::Compute;
use crate::store::SharedStore;

/// A running node's services.
#[derive(Clone)]
pub struct Services {
    pub datasets: Datasets,
    pub network: Arc<P2pNetwork>,
    pub fetcher: Fetcher,
}

/// What [`Services::start`] needs besides the store and the key.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    pub block_size_bytes: usize,
    pub p2p: P2pConfig,
    pub engine: EngineConfig,
}

impl Services {
    /// Starts the network and the block exchange over `store`.
    pub async fn start(
        store: SharedStore,
        keypair: Keypair,
        config: ServicesConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Services, P2pError> {
        let network = P2pNetwork::start(keypair, config.p2p).await?;
        let datasets = Datasets::new(store.clone(), Compute::Pool, config.block_size_bytes, metrics.clone());
        let exchange = Exchange::start(network.clone(), store, config.engine, metrics);
        let fetcher = Fetcher::new(datasets.clone(), exchange, network.clone(), network.clone());
        Ok(Services { datasets, network, fetcher })
    }
}
