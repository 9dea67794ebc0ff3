//! The SHA-256 dataset tree.

use sha2::{Digest as _, Sha256 as Hasher};

use super::tree::{Compression, Key, Proof, Tree, path_len};

/// A 32-byte SHA-256 digest: a leaf or a node of the tree.
pub type Digest = [u8; 32];

/// The hash that pads an odd layer.
pub const ZERO: Digest = [0; 32];

/// `SHA-256(left ‖ right ‖ key)`.
pub fn compress(left: &Digest, right: &Digest, key: Key) -> Digest {
    let mut hasher = Hasher::new();
    hasher.update(left);
    hasher.update(right);
    hasher.update([key as u8]);
    hasher.finalize().into()
}

/// The SHA-256 keyed compression of the dataset tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sha256;

impl Compression for Sha256 {
    type Digest = Digest;
    const ZERO: Digest = ZERO;
    fn compress(left: &Digest, right: &Digest, key: Key) -> Digest {
        compress(left, right, key)
    }
}

/// A complete dataset tree.
pub type MerkleTree = Tree<Sha256>;

/// The path from one block's hash to the dataset root.
pub type MerkleProof = Proof<Sha256>;

/// Why a proof could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("encoded proof is truncated or has a partial path element")]
    Malformed,
    #[error("proof path length {path} does not fit a tree of {leaves} leaves")]
    PathLength { path: usize, leaves: u64 },
}

impl Proof<Sha256> {
    /// `index u64 LE ‖ leaves_count u64 LE ‖ path (32 bytes each)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 32 * self.path.len());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.leaves_count.to_le_bytes());
        for node in &self.path {
            out.extend_from_slice(node);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<MerkleProof, ProofError> {
        if bytes.len() < 16 || !(bytes.len() - 16).is_multiple_of(32) {
            return Err(ProofError::Malformed);
        }
        let index = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let leaves_count = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let path: Vec<Digest> = bytes[16..].chunks(32).map(|c| c.try_into().expect("32 bytes")).collect();
        if path.len() != path_len(leaves_count) {
            return Err(ProofError::PathLength { path: path.len(), leaves: leaves_count });
        }
        Ok(MerkleProof { index, leaves_count, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::tree::path_len;
    use proptest::prelude::*;

    fn leaf(i: u64) -> Digest {
        Hasher::digest(i.to_le_bytes()).into()
    }

    /// Roots computed by hand from the definition, independent of `build`.
    #[test]
    fn small_trees_match_the_definition() {
        let (a, b, c) = (leaf(0), leaf(1), leaf(2));
        let one = MerkleTree::build(vec![a]).unwrap();
        assert_eq!(one.root(), compress(&a, &ZERO, Key::OddAndBottomLayer));
        let two = MerkleTree::build(vec![a, b]).unwrap();
        assert_eq!(two.root(), compress(&a, &b, Key::BottomLayer));
        let three = MerkleTree::build(vec![a, b, c]).unwrap();
        let left = compress(&a, &b, Key::BottomLayer);
        let right = compress(&c, &ZERO, Key::OddAndBottomLayer);
        assert_eq!(three.root(), compress(&left, &right, Key::None));
        assert!(MerkleTree::build(vec![]).is_none());
    }

    #[test]
    fn path_lengths() {
        // (leaves, path length)
        for (n, len) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (16_384, 14)] {
            assert_eq!(path_len(n), len, "{n} leaves");
            let tree = MerkleTree::build((0..n).map(leaf).collect()).unwrap();
            assert_eq!(tree.proof(n - 1).path.len(), len, "{n} leaves, built");
        }
    }

    proptest! {
        #[test]
        fn every_proof_verifies_and_every_flip_fails(n in 1u64..70, pick in any::<u64>(), bit in 0usize..256) {
            let tree = MerkleTree::build((0..n).map(leaf).collect()).unwrap();
            let index = pick % n;
            let proof = tree.proof(index);
            prop_assert!(proof.verify(&leaf(index), &tree.root()));
            prop_assert_eq!(MerkleProof::decode(&proof.encode()).unwrap(), proof.clone());

            let mut bad_leaf = leaf(index);
            bad_leaf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!proof.verify(&bad_leaf, &tree.root()));

            let mut bad_path = proof.clone();
            let at = (bit / 8) % bad_path.path.len();
            bad_path.path[at][bit % 32] ^= 1;
            prop_assert!(!bad_path.verify(&leaf(index), &tree.root()));

            if n > 1 {
                let mut wrong_index = proof.clone();
                wrong_index.index = (index + 1) % n;
                prop_assert!(!wrong_index.verify(&leaf(index), &tree.root()));
            }
        }
    }
}
