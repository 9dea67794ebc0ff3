//! Storage proofs: Groth16 over BN254.
//!
//! - [`groth16`]: keys and proofs in the forms they travel in (snarkjs JSON files, the
//!   marketplace's `Groth16Proof` struct, uint256 public inputs), and verification.
//! - [`stand_in`]: a tiny circuit with the storage proof's public inputs that proves nothing
//!   about storage, for tests and the simulator until the storage-proof circuit is in place.

pub mod groth16;
pub mod stand_in;
