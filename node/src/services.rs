//! Starting a production node: the libp2p network, then the node logic over it and a store
//! ([`crate::node::Node::start`], which the simulator uses with its own adapters). The
//! binary, the benchmarks and embedded uses all start a node this way.

use std::sync::Arc;

use libp2p::identity::Keypair;

use crate::dataset::{Datasets, Fetcher};
use crate::discovery::PeerRecord;
use crate::durability::{Durability, DurabilityConfig};
use crate::exchange::EngineConfig;
use crate::market::{Market, MarketConfig, MarketPorts};
use crate::metrics::Metrics;
use crate::net::p2p::{P2pConfig, P2pError, P2pNetwork};
use crate::node::{Node, NodeConfig, Ports, READVERTISE_INTERVAL};
use crate::runtime::Compute;
use crate::store::{Recovery, SharedStore, StoreError};

/// A running node's services.
#[derive(Clone)]
pub struct Services {
    pub datasets: Datasets,
    pub network: Arc<P2pNetwork>,
    pub fetcher: Fetcher,
    pub durability: Durability,
    /// Purchasing, sales and validation, in market mode.
    pub market: Option<Market>,
    /// What opening the store rolled back.
    pub recovery: Recovery,
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Network(#[from] P2pError),
    #[error("recovering the store: {0}")]
    Store(#[from] StoreError),
}

/// What [`Services::start`] needs besides the store and the key.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    pub block_size_bytes: usize,
    pub p2p: P2pConfig,
    pub engine: EngineConfig,
    pub durability: DurabilityConfig,
    /// The marketplace: market mode. Cluster-mode checks are then off.
    pub market: Option<MarketPorts>,
    pub market_config: MarketConfig,
}

impl Services {
    /// Starts the network and the block exchange over `store`.
    pub async fn start(
        store: SharedStore,
        keypair: Keypair,
        config: ServicesConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Services, StartError> {
        let network = P2pNetwork::start(keypair, config.p2p.clone()).await?;
        // Already validated by the network: multiaddrs ending in /p2p/<peer id>.
        let bootstrap = config
            .p2p
            .bootstrap
            .iter()
            .filter_map(|text| {
                let addr: libp2p::Multiaddr = text.parse().ok()?;
                let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else { return None };
                Some(PeerRecord {
                    peer: crate::net::PeerId::from_bytes(peer.to_bytes()),
                    addrs: vec![text.clone()],
                })
            })
            .collect();
        let node_config = NodeConfig {
            block_size_bytes: config.block_size_bytes,
            engine: config.engine,
            readvertise_interval: READVERTISE_INTERVAL,
            compute: Compute::Pool,
            bootstrap,
            seed: rand::random(),
            durability: DurabilityConfig {
                cluster_checks: config.market.is_none() && config.durability.cluster_checks,
                ..config.durability
            },
            market: config.market_config,
        };
        let ports = Ports {
            store,
            network: network.clone(),
            discovery: network.clone(),
            metrics,
            market: config.market,
        };
        let (Node { datasets, fetcher, durability, market }, recovery) =
            Node::start(ports, node_config).await?;
        Ok(Services { datasets, network, fetcher, durability, market, recovery })
    }
}
