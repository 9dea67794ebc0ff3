//! The discovery port: advertising what this node holds and finding who holds a CID.
//!
//! Only the trait lives here. Production uses libp2p Kademlia provider records; the simulator
//! a modeled DHT (provider records with TTL and republish, lookup cost in hops × RTT).

use async_trait::async_trait;

use crate::content::Cid;
use crate::net::PeerId;

/// A peer and the addresses (multiaddrs) it can be reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    pub peer: PeerId,
    pub addrs: Vec<String>,
}

/// Errors of discovery operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    #[error("no peers to ask: the routing table is empty")]
    NoPeers,
    #[error("lookup timed out")]
    Timeout,
}

/// The discovery port.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Announces this node as a provider of `cid` (and keeps announcing until withdrawn).
    async fn provide(&self, cid: Cid) -> Result<(), DiscoveryError>;
    /// Stops announcing `cid`.
    async fn withdraw(&self, cid: Cid);
    /// Up to `limit` providers of `cid`.
    async fn find_providers(&self, cid: Cid, limit: usize) -> Result<Vec<PeerRecord>, DiscoveryError>;
    /// The addresses of `peer`, if it can be found.
    async fn find_peer(&self, peer: &PeerId) -> Result<Option<PeerRecord>, DiscoveryError>;
    /// Up to `limit` peers closest to `key` in the DHT's key space: where to place data.
    async fn closest_peers(&self, key: &[u8], limit: usize) -> Result<Vec<PeerRecord>, DiscoveryError>;
}
