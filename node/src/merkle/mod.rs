//! Merkle trees: the SHA-256 dataset tree over block hashes, and the Poseidon2 slot trees over
//! 2 KiB cells that storage proofs open; both share one keyed tree ([`tree`]).
//!
//! The tree is Archivist's: binary, each parent is `SHA-256(left ‖ right ‖ key)` where the key
//! byte says where the node sits (see [`Key`]); a layer with an odd count pairs its last node
//! with the zero hash. The root of a one-leaf tree is that leaf compressed with zero.

pub mod poseidon2;
mod sha256;
pub mod tree;

pub use self::sha256::{Digest, MerkleProof, MerkleTree, ProofError, Sha256, ZERO, compress};
pub use self::tree::{Compression, Key, Proof, Tree};
