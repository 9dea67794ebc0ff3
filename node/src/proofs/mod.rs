//! Storage proofs: Groth16 over BN254.
//!
//! - [`circuit`]: the storage-proof circuit, Archivist's `SampleAndProve` statement (cells
//!   sampled from the chain's entropy, proven to the slot root and the slot to the dataset
//!   root), and its proof input in Archivist's layout.
//! - [`input`]: the proof input built from a slot held here, without I/O.
//! - [`prover`]: proving keys (development setup, key files with their hash), proving and
//!   verifying the storage-proof circuit.
//! - [`proving`]: proofs of slots held here: blocks from the store, input and proof through
//!   the compute port.
//! - `circom` (production builds): proving with circom-compiled circuits (`.r1cs`, snarkjs
//!   `.zkey`, the `.wasm` witness generator run in wasmi).
//! - [`msm`]: multi-scalar multiplication for the prover (Pippenger, batched affine buckets).
//! - [`groth16`]: keys and proofs in the forms they travel in (snarkjs JSON files, the
//!   marketplace's `Groth16Proof` struct, uint256 public inputs), and verification.
//! - [`poseidon2_gadget`]: Archivist's Poseidon2 (permutation, sponge, keyed compression)
//!   as constraints, equal to the native functions: the storage-proof circuit's hash.
//! - [`stand_in`]: a tiny circuit with the storage proof's public inputs that proves nothing
//!   about storage, for tests and the simulator where a real proof's cost is not the point.

#[cfg(feature = "circom")]
pub mod circom;
pub mod circuit;
pub mod groth16;
pub mod input;
pub mod msm;
pub mod poseidon2_gadget;
pub mod prover;
pub mod proving;
pub mod stand_in;
