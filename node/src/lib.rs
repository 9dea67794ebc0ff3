//! Neverust: a storage node for the Archivist/Codex family of durability networks.
//!
//! The node's logic is written once against narrow ports, so the same code runs in
//! production (tokio, LMDB, libp2p, HTTP) and under the deterministic simulator (`sim/`); both
//! assemble a node with [`node::Node::start`], passing their adapters:
//!
//! | port | here | production adapter | simulator adapter |
//! |---|---|---|---|
//! | time, tasks | `tokio` (the `madsim-tokio` crate) | tokio | madsim |
//! | compute | [`runtime::Compute`] | blocking pool | inline |
//! | randomness | [`runtime::NodeRng`] | seeded from the OS once, at start | seeded from the scenario |
//! | disk | [`store::BlockStore`] | [`store::LmdbStore`] (feature `production`) | `SimDisk`: memory with a fault overlay |
//! | network | [`net::Network`] | libp2p | `SimNetwork`: simulated links |
//! | discovery | [`discovery::Discovery`] | Kademlia | modeled DHT |
//!
//! Modules, one concern each: [`content`] (CIDs, chunker, manifest), [`merkle`] (dataset
//! trees and proofs, Poseidon2 slot trees), [`erasure`] (Reed-Solomon over blocks), [`store`]
//! (the block store port and its adapters), [`dataset`] (storing a byte stream as a dataset,
//! protecting it, reading it back), [`metrics`], [`config`]; and, with the
//! `production` feature, [`api`] (REST), [`cli`] and [`identity`].

pub mod chain;
pub mod config;
pub mod content;
pub mod dataset;
pub mod discovery;
pub mod durability;
pub mod erasure;
pub mod exchange;
pub mod market;
pub mod merkle;
pub mod metrics;
pub mod net;
pub mod node;
pub mod proofs;
pub mod runtime;
pub mod store;

#[cfg(feature = "production")]
pub mod api;
#[cfg(feature = "production")]
pub mod cli;
#[cfg(feature = "production")]
pub mod identity;
#[cfg(feature = "production")]
pub mod reference;
#[cfg(feature = "production")]
pub mod secret_file;
#[cfg(feature = "production")]
pub mod services;

/// The version of this build, as `neverust --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
