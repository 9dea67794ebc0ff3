//! Storage proofs: Groth16 over BN254.
//!
//! - [`groth16`]: keys and proofs in the forms they travel in (snarkjs JSON files, the
//!   marketplace's `Groth16Proof` struct, uint256 public inputs), and verification.
//! - [`poseidon2_gadget`]: Archivist's Poseidon2 (permutation, sponge, keyed compression)
//!   as constraints, equal to the native functions: the storage-proof circuit's hash.
//! - [`stand_in`]: a tiny circuit with the storage proof's public inputs that proves nothing
//!   about storage, for tests and the simulator until the storage-proof circuit is in place.

pub mod groth16;
pub mod poseidon2_gadget;
pub mod stand_in;
