//! The keyed binary Merkle tree both hash functions share, and its inclusion proofs.
//!
//! Each parent is `compress(left, right, key)`, where the key says where the pair sits: in the
//! bottom layer or above, and whether the right node is the zero that pads an odd layer. The root
//! of a one-leaf tree is that leaf compressed with zero.

use std::fmt::Debug;

/// The key of the keyed compression: where the compressed pair sits in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Key {
    None = 0,
    BottomLayer = 1,
    Odd = 2,
    OddAndBottomLayer = 3,
}

impl Key {
    pub fn new(bottom: bool, odd: bool) -> Key {
        match (bottom, odd) {
            (false, false) => Key::None,
            (true, false) => Key::BottomLayer,
            (false, true) => Key::Odd,
            (true, true) => Key::OddAndBottomLayer,
        }
    }
}

/// A keyed two-to-one compression: the hash function of a tree.
pub trait Compression {
    type Digest: Copy + Eq + Debug;
    /// The node that pads an odd layer.
    const ZERO: Self::Digest;
    fn compress(left: &Self::Digest, right: &Self::Digest, key: Key) -> Self::Digest;
}

/// A complete tree, every layer kept so proofs are cheap.
#[derive(Clone, Debug)]
pub struct Tree<C: Compression> {
    /// `layers[0]` are the leaves; the last layer holds the root alone.
    layers: Vec<Vec<C::Digest>>,
}

impl<C: Compression> Tree<C> {
    /// Builds the tree over `leaves`; `None` when there are no leaves.
    pub fn build(leaves: Vec<C::Digest>) -> Option<Tree<C>> {
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
                    [left, right] => C::compress(left, right, Key::new(bottom, false)),
                    [last] => C::compress(last, &C::ZERO, Key::new(bottom, true)),
                    _ => unreachable!("chunks(2)"),
                })
                .collect();
            layers.push(above);
        }
        Some(Tree { layers })
    }

    pub fn root(&self) -> C::Digest {
        self.layers.last().expect("a built tree has a root")[0]
    }

    /// Leaf `index`. Panics if out of range.
    pub fn leaf(&self, index: u64) -> C::Digest {
        self.layers[0][index as usize]
    }

    pub fn leaves_count(&self) -> u64 {
        self.layers[0].len() as u64
    }

    /// The inclusion proof of leaf `index`. Panics if `index` is out of range.
    pub fn proof(&self, index: u64) -> Proof<C> {
        assert!(index < self.leaves_count(), "leaf {index} out of range");
        let mut path = Vec::with_capacity(self.layers.len() - 1);
        let mut i = index as usize;
        for layer in &self.layers[..self.layers.len() - 1] {
            path.push(layer.get(i ^ 1).copied().unwrap_or(C::ZERO));
            i >>= 1;
        }
        Proof { index, leaves_count: self.leaves_count(), path }
    }
}

/// The path from one leaf to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof<C: Compression> {
    pub index: u64,
    pub leaves_count: u64,
    pub path: Vec<C::Digest>,
}

impl<C: Compression> Proof<C> {
    /// Folds `leaf` along the path, giving the root it implies.
    pub fn reconstruct_root(&self, leaf: &C::Digest) -> C::Digest {
        fold::<C>(self.index, self.leaves_count, leaf, &self.path)
    }

    /// Whether `leaf` at this proof's index belongs to the tree with `root`.
    pub fn verify(&self, leaf: &C::Digest, root: &C::Digest) -> bool {
        self.index < self.leaves_count
            && self.path.len() == path_len(self.leaves_count)
            && &self.reconstruct_root(leaf) == root
    }
}

/// Folds `leaf`, at `index` of a tree of `leaves_count` leaves, along `path`.
pub fn fold<C: Compression>(
    index: u64,
    leaves_count: u64,
    leaf: &C::Digest,
    path: &[C::Digest],
) -> C::Digest {
    let (mut j, mut m) = (index, leaves_count);
    let mut h = *leaf;
    let mut bottom = true;
    for sibling in path {
        h = if j & 1 == 1 {
            C::compress(sibling, &h, Key::new(bottom, false))
        } else if j == m - 1 {
            C::compress(&h, sibling, Key::new(bottom, true))
        } else {
            C::compress(&h, sibling, Key::new(bottom, false))
        };
        bottom = false;
        j >>= 1;
        m = m.div_ceil(2);
    }
    h
}

/// Number of compressions from a leaf to the root: one for a single leaf, `ceil(log2 n)` else.
pub fn path_len(leaves_count: u64) -> usize {
    match leaves_count {
        0 => 0,
        1 => 1,
        n => (u64::BITS - (n - 1).leading_zeros()) as usize,
    }
}
