//! The chain: the marketplace contracts' bindings, and their reverts decoded.

pub mod contracts;
pub mod revert;

pub use revert::Revert;
