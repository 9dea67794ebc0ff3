//! Merkle trees over block hashes: the SHA-256 dataset tree and its inclusion proofs.
//!
//! The tree is Archivist's: binary, each parent is `SHA-256(left ‖ right ‖ key)` where the key
//! byte says where the node sits (see [`Key`]); a layer with an odd count pairs its last node
//! with the zero hash. The root of a one-leaf tree is that leaf compressed with zero.

mod sha256;

pub use self::sha256::{Digest, Key, MerkleProof, MerkleTree, ProofError, ZERO, compress};
