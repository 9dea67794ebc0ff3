//! Block exchange: Archivist's `/archivist/blockexc/1.0.0` protocol.
//!
//! [`wire`] is the message codec; [`engine`] the sans-I/O protocol state machine (want lists,
//! presences, verified deliveries, peer scoring); [`driver`] runs the engine over the network
//! port and the block store. No libp2p type appears here.

pub mod driver;
pub mod engine;
pub mod wire;

pub use self::driver::{Exchange, Fetched};
pub use self::engine::{Answer, Engine, EngineConfig, Event};

/// The protocol name peers negotiate.
pub const PROTOCOL: &str = "/archivist/blockexc/1.0.0";
