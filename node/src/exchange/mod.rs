//! Block exchange: Archivist's `/archivist/blockexc/1.0.0` protocol.
//!
//! [`wire`] is the message codec. The exchange engine (want lists, presences, verified
//! deliveries, peer scoring) is written against the network port, with no libp2p types.

pub mod engine;
pub mod wire;

pub use self::engine::{Answer, Engine, EngineConfig, Event};

/// The protocol name peers negotiate.
pub const PROTOCOL: &str = "/archivist/blockexc/1.0.0";
