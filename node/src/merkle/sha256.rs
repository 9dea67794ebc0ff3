//! The SHA-256 dataset tree.

use sha2::{Digest as _, Sha256};

/// A 32-byte SHA-256 digest: a leaf or a node of the tree.
pub type Digest = [u8; 32];

/// The hash that pads an odd layer.
pub const ZERO: Digest = [0; 32];

/// The key byte of the keyed compression: where the compressed pair sits in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Key {
    None = 0,
    BottomLayer = 1,
    Odd = 2,
    OddAndBottomLayer = 3,
}

impl Key {
    fn new(bottom: bool, odd: bool) -> Key {
        match (bottom, odd) {
            (false, false) => Key::None,
            (true, false) => Key::BottomLayer,
            (false, true) => Key::Odd,
            (true, true) => Key::OddAndBottomLayer,
        }
    }
}

/// `SHA-256(left ‖ right ‖ key)`.
pub fn compress(left: &Digest, right: &Digest, key: Key) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(left);
    hasher.update(right);
    hasher.update([key as u8]);
    hasher.finalize().into()
}

/// A complete dataset tree, every layer kept so proofs are cheap.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    /// `layers[0]` are the leaves; the last layer holds the root alone.
    layers: Vec<Vec<Digest>>,
}

impl MerkleTree {
    /// Builds the tree over `leaves`; `None` when there are no leaves.
    pub fn build(leaves: Vec<Digest>) -> Option<MerkleTree> {
        if leaves.is_empty() {
            return None;
        }
        let mut layers = vec![leaves];
        loop {
            let below = layers.last().expect("at least the leaves");
            let bottom = layers.len() == 1;
            if below.len() == 1 && !bottom {
                break;
            }
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => compress(left, right, Key::new(bottom, false)),
                    [last] => compress(last, &ZERO, Key::new(bottom, true)),
                    _ => unreachable!("chunks(2)"),
                })
                .collect();
            layers.push(above);
        }
        Some(MerkleTree { layers })
    }

    pub fn root(&self) -> Digest {
        self.layers.last().expect("a built tree has a root")[0]
    }

    /// Leaf `index`. Panics if out of range.
    pub fn leaf(&self, index: u64) -> Digest {
        self.layers[0][index as usize]
    }

    pub fn leaves_count(&self) -> u64 {
        self.layers[0].len() as u64
    }

    /// The inclusion proof of leaf `index`. Panics if `index` is out of range.
    pub fn proof(&self, index: u64) -> MerkleProof {
        assert!(index < self.leaves_count(), "leaf {index} out of range");
        let mut path = Vec::with_capacity(self.layers.len() - 1);
        let mut i = index as usize;
        for layer in &self.layers[..self.layers.len() - 1] {
            path.push(layer.get(i ^ 1).copied().unwrap_or(ZERO));
            i >>= 1;
        }
        MerkleProof { index, leaves_count: self.leaves_count(), path }
    }
}

/// Why a proof could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("encoded proof is truncated or has a partial path element")]
    Malformed,
    #[error("proof path length {path} does not fit a tree of {leaves} leaves")]
    PathLength { path: usize, leaves: u64 },
}

/// The path from one leaf to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleProof {
    pub index: u64,
    pub leaves_count: u64,
    pub path: Vec<Digest>,
}

impl MerkleProof {
    /// Folds `leaf` along the path, giving the root it implies.
    pub fn reconstruct_root(&self, leaf: &Digest) -> Digest {
        let (mut j, mut m) = (self.index, self.leaves_count);
        let mut h = *leaf;
        let mut bottom = true;
        for sibling in &self.path {
            h = if j & 1 == 1 {
                compress(sibling, &h, Key::new(bottom, false))
            } else if j == m - 1 {
                compress(&h, sibling, Key::new(bottom, true))
            } else {
                compress(&h, sibling, Key::new(bottom, false))
            };
            bottom = false;
            j >>= 1;
            m = m.div_ceil(2);
        }
        h
    }

    /// Whether `leaf` at this proof's index belongs to the tree with `root`.
    pub fn verify(&self, leaf: &Digest, root: &Digest) -> bool {
        self.index < self.leaves_count
            && self.path.len() == expected_path_len(self.leaves_count)
            && &self.reconstruct_root(leaf) == root
    }

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
        if path.len() != expected_path_len(leaves_count) {
            return Err(ProofError::PathLength { path: path.len(), leaves: leaves_count });
        }
        Ok(MerkleProof { index, leaves_count, path })
    }
}

/// Number of compressions from a leaf to the root: one for a single leaf, `ceil(log2 n)` else.
fn expected_path_len(leaves_count: u64) -> usize {
    match leaves_count {
        0 => 0,
        1 => 1,
        n => (u64::BITS - (n - 1).leading_zeros()) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(i: u64) -> Digest {
        Sha256::digest(i.to_le_bytes()).into()
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
            assert_eq!(expected_path_len(n), len, "{n} leaves");
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
