//! The network port: how node logic talks to peers.
//!
//! Only the trait lives here; node logic (the block exchange) is written against it. The
//! production adapter (libp2p: TCP + QUIC, Noise, Yamux/Mplex) and the simulator's adapter
//! (madsim endpoints behind a link model) implement it. No libp2p type crosses this boundary.

use std::fmt;

#[cfg(feature = "production")]
pub mod p2p;

use async_trait::async_trait;
use bytes::Bytes;

/// A peer's identity: the bytes of its libp2p peer ID (a multihash of its public key).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(Vec<u8>);

impl PeerId {
    pub fn from_bytes(bytes: Vec<u8>) -> PeerId {
        PeerId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for PeerId {
    /// Base58btc, as libp2p prints peer IDs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = cid::multibase::encode(cid::multibase::Base::Base58Btc, &self.0);
        f.write_str(&text[1..]) // drop the multibase prefix 'z'
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// What the network reports to node logic.
#[derive(Clone, Debug)]
pub enum NetEvent {
    Connected(PeerId),
    Disconnected(PeerId),
    /// A whole, size-checked protocol message from a peer.
    Message {
        from: PeerId,
        payload: Bytes,
    },
}

/// Errors of network operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    #[error("message of {size_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge { size_bytes: usize, limit_bytes: usize },
    #[error("dial failed: {0}")]
    Dial(String),
    #[error("network closed")]
    Closed,
}

/// The network port.
#[async_trait]
pub trait Network: Send + Sync + 'static {
    fn local_peer_id(&self) -> PeerId;
    /// Peers with an open connection, in ID order.
    fn connected_peers(&self) -> Vec<PeerId>;
    /// Connects to `peer`, at `addrs` (multiaddrs) if given, else at addresses found by lookup.
    async fn dial(&self, peer: &PeerId, addrs: &[String]) -> Result<(), NetError>;
    /// Closes every connection to `peer` and refuses it from now on (it misbehaved).
    async fn disconnect(&self, peer: &PeerId);
    /// Sends one protocol message to a connected peer.
    async fn send(&self, to: &PeerId, payload: Bytes) -> Result<(), NetError>;
    /// The next event; `None` once the network has shut down.
    async fn next_event(&self) -> Option<NetEvent>;
}
