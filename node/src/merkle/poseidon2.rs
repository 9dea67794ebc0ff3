//! Poseidon2 over BN254: the sponge, the keyed compression and the slot trees of storage proofs.
//!
//! The permutation is Poseidon2 with state width t = 3, S-box x⁵, 8 full and 56 partial rounds,
//! the external matrix circ(2, 1, 1), the internal matrix `1 + diag(1, 1, 2)` and Archivist's
//! round constants ([`constants`]). On top of it, as Archivist defines them:
//!
//! - `compress(x, y, key)` is the first element of `permute(x, y, key)`;
//! - the sponge has rate 2 and starts from `(0, 0, IV)` with `IV = 2⁶⁴ + 256·t + rate`; it
//!   absorbs element pairs into the first two state elements, permuting after each, and pads with
//!   a single one (`10*` padding): after an odd count the pad completes the last pair, after an
//!   even count it is a pair of its own;
//! - bytes become field elements in 31-byte little-endian chunks, after `10*` padding the bytes
//!   themselves (a `0x01` byte, then zeros up to a multiple of 31), so a 2 KiB cell is 67
//!   elements.
//!
//! A cell's digest is the sponge over its bytes; a block's cells form a block tree, a slot's
//! block roots (padded with the roots of all-zero blocks to a power of two) form the slot tree, and
//! the slot roots form the verification tree. Every tree uses the keyed compression of
//! [`super::tree`].

use std::sync::LazyLock;

use ark_ff::{AdditiveGroup, BigInteger, Field, PrimeField};

use super::tree::{Compression, Key, Proof, Tree, fold, path_len};

/// An element of the BN254 scalar field: a digest or a node of a slot tree.
pub type F = ark_bn254::Fr;

/// Bytes per field element when hashing bytes (248 bits: always below the modulus).
pub const BYTES_PER_ELEMENT: usize = 31;

/// Archivist's cell size.
pub const CELL_SIZE_BYTES: usize = 2048;

mod constants;

/// The round constants, parsed once.
struct RoundConstants {
    external: [[F; 3]; 8],
    internal: [F; 56],
}

static ROUND_CONSTANTS: LazyLock<RoundConstants> = LazyLock::new(|| {
    let parse = |hex: &str| {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex constant"))
            .collect();
        F::from_be_bytes_mod_order(&bytes)
    };
    RoundConstants {
        external: std::array::from_fn(|round| {
            std::array::from_fn(|i| parse(constants::EXTERNAL[3 * round + i]))
        }),
        internal: std::array::from_fn(|round| parse(constants::INTERNAL[round])),
    }
});

/// The round constants: four full rounds' worth, then the 56 partial rounds', then four
/// full rounds' (for the in-circuit permutation, which must use the very same).
pub(crate) fn round_constants() -> (&'static [[F; 3]; 8], &'static [F; 56]) {
    let constants = &*ROUND_CONSTANTS;
    (&constants.external, &constants.internal)
}

fn sbox(x: &mut F) {
    let x4 = x.square().square();
    *x *= x4;
}

/// The external linear layer, circ(2, 1, 1): each element plus the sum of all.
fn external_mix(state: &mut [F; 3]) {
    let sum = state[0] + state[1] + state[2];
    state.iter_mut().for_each(|x| *x += sum);
}

fn full_round(state: &mut [F; 3], constants: &[F; 3]) {
    for (x, c) in state.iter_mut().zip(constants) {
        *x += c;
        sbox(x);
    }
    external_mix(state);
}

fn partial_round(state: &mut [F; 3], constant: &F) {
    state[0] += constant;
    sbox(&mut state[0]);
    let sum = state[0] + state[1] + state[2];
    state[2].double_in_place();
    state.iter_mut().for_each(|x| *x += sum);
}

/// The Poseidon2 permutation of a width-3 state.
pub fn permute(state: &mut [F; 3]) {
    let constants = &*ROUND_CONSTANTS;
    external_mix(state);
    for round in &constants.external[..4] {
        full_round(state, round);
    }
    for constant in &constants.internal {
        partial_round(state, constant);
    }
    for round in &constants.external[4..] {
        full_round(state, round);
    }
}

/// The keyed two-to-one compression: the first element of `permute(left, right, key)`.
pub fn compress(left: &F, right: &F, key: Key) -> F {
    let mut state = [*left, *right, F::from(key as u64)];
    permute(&mut state);
    state[0]
}

/// The Poseidon2 keyed compression of slot trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poseidon2;

impl Compression for Poseidon2 {
    type Digest = F;
    const ZERO: F = F::ZERO;
    fn compress(left: &F, right: &F, key: Key) -> F {
        compress(left, right, key)
    }
}

/// A slot tree, block tree or verification tree.
pub type Poseidon2Tree = Tree<Poseidon2>;

/// A path in a Poseidon2 tree.
pub type Poseidon2Proof = Proof<Poseidon2>;

/// The sponge's initial capacity element: `2⁶⁴ + 256·t + rate` for t = 3, rate 2.
pub(crate) fn sponge_iv() -> F {
    F::from(1u128 << 64) + F::from(256u64 * 3 + 2)
}

/// The rate-2 sponge over field elements.
pub fn sponge(elements: &[F]) -> F {
    let mut state = [F::ZERO, F::ZERO, sponge_iv()];
    let mut pairs = elements.chunks_exact(2);
    for pair in &mut pairs {
        state[0] += pair[0];
        state[1] += pair[1];
        permute(&mut state);
    }
    match pairs.remainder() {
        [last] => {
            state[0] += last;
            state[1] += F::ONE;
        }
        _ => state[0] += F::ONE,
    }
    permute(&mut state);
    state[0]
}

/// `bytes` as field elements: `10*`-padded to a multiple of 31 bytes, each 31-byte chunk read
/// little-endian.
pub fn bytes_to_elements(bytes: &[u8]) -> Vec<F> {
    let mut elements = Vec::with_capacity(bytes.len() / BYTES_PER_ELEMENT + 1);
    let mut chunks = bytes.chunks_exact(BYTES_PER_ELEMENT);
    for chunk in &mut chunks {
        elements.push(F::from_le_bytes_mod_order(chunk));
    }
    let mut last = [0u8; BYTES_PER_ELEMENT];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 1;
    elements.push(F::from_le_bytes_mod_order(&last));
    elements
}

/// The sponge over `bytes` (Archivist's `Sponge.digest(bytes)`): a cell's digest.
pub fn hash_bytes(bytes: &[u8]) -> F {
    sponge(&bytes_to_elements(bytes))
}

/// A field element as 32 little-endian bytes (how digests go into CIDs and onto the wire).
pub fn to_bytes(element: &F) -> [u8; 32] {
    element.into_bigint().to_bytes_le().try_into().expect("BN254 elements are 32 bytes")
}

/// The field element with these 32 little-endian bytes; `None` unless they are below the modulus.
pub fn from_bytes(bytes: &[u8; 32]) -> Option<F> {
    let element = F::from_le_bytes_mod_order(bytes);
    (to_bytes(&element) == *bytes).then_some(element)
}

/// A field element from its decimal text (as proof inputs write them): digits only.
pub fn from_decimal(text: &str) -> Option<F> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The tree over the cells of one block. `block` must be a whole number of cells.
pub fn block_tree(block: &[u8], cell_size_bytes: usize) -> Poseidon2Tree {
    assert!(
        !block.is_empty() && block.len().is_multiple_of(cell_size_bytes),
        "a block of {} bytes is not a whole number of {cell_size_bytes}-byte cells",
        block.len()
    );
    Poseidon2Tree::build(block.chunks(cell_size_bytes).map(hash_bytes).collect()).expect("a block has cells")
}

/// A slot's tree: the tree over the roots of its blocks' cell trees, padded to a power of two
/// with the root of an all-zero block. Cell proofs need the cell's block (hosts hold it), so
/// only block roots and the tree above them are kept: 64 bytes a block.
#[derive(Clone, Debug)]
pub struct SlotTree {
    cells_per_block: u64,
    cell_size_bytes: usize,
    blocks: u64,
    tree: Poseidon2Tree,
}

impl SlotTree {
    /// The slot tree of `blocks`, each of `block_size_bytes` (a whole number of cells).
    pub fn build<'a>(
        blocks: impl IntoIterator<Item = &'a [u8]>,
        block_size_bytes: usize,
        cell_size_bytes: usize,
    ) -> SlotTree {
        let roots: Vec<F> = blocks
            .into_iter()
            .map(|block| {
                assert_eq!(block.len(), block_size_bytes, "slot blocks are whole blocks");
                block_tree(block, cell_size_bytes).root()
            })
            .collect();
        SlotTree::from_block_roots(roots, block_size_bytes, cell_size_bytes)
    }

    /// The slot tree over a slot's blocks as the store holds them, where an empty block is
    /// the layout's padding (zeroes in the tree).
    pub fn from_stored_blocks<B: AsRef<[u8]>>(
        blocks: &[B],
        block_size_bytes: usize,
        cell_size_bytes: usize,
    ) -> SlotTree {
        let zero = vec![0u8; block_size_bytes];
        SlotTree::build(
            blocks.iter().map(|b| if b.as_ref().is_empty() { zero.as_slice() } else { b.as_ref() }),
            block_size_bytes,
            cell_size_bytes,
        )
    }

    /// The slot tree over already computed block roots.
    pub fn from_block_roots(roots: Vec<F>, block_size_bytes: usize, cell_size_bytes: usize) -> SlotTree {
        assert!(!roots.is_empty(), "a slot has blocks");
        let blocks = roots.len() as u64;
        let mut leaves = roots;
        let padding = empty_block_root(block_size_bytes, cell_size_bytes);
        leaves.resize(leaves.len().next_power_of_two(), padding);
        SlotTree {
            cells_per_block: (block_size_bytes / cell_size_bytes) as u64,
            cell_size_bytes,
            blocks,
            tree: Poseidon2Tree::build(leaves).expect("a slot has blocks"),
        }
    }

    pub fn root(&self) -> F {
        self.tree.root()
    }

    /// Blocks of the slot, without padding.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Cells the sampler draws from: the padded slot's.
    pub fn cells(&self) -> u64 {
        self.tree.leaves_count() * self.cells_per_block
    }

    pub fn cells_per_block(&self) -> u64 {
        self.cells_per_block
    }

    /// The proof of `cell`, which lies in `block` (its bytes; zeroes for a padding block).
    pub fn cell_proof(&self, cell: u64, block: &[u8]) -> CellProof {
        self.cell_proof_in(cell, &block_tree(block, self.cell_size_bytes))
    }

    /// The proof of `cell`, given the cell tree of its block (see [`block_tree`]), so
    /// several cells of one block share one tree.
    pub fn cell_proof_in(&self, cell: u64, block_tree: &Poseidon2Tree) -> CellProof {
        let (block_index, in_block) = (cell / self.cells_per_block, cell % self.cells_per_block);
        let block_proof = block_tree.proof(in_block);
        CellProof {
            cell,
            cells_per_block: self.cells_per_block,
            slot_blocks: self.tree.leaves_count(),
            block_path: block_proof.path,
            slot_path: self.tree.proof(block_index).path,
        }
    }
}

/// The root of the cell tree of an all-zero block: what pads a slot tree.
pub fn empty_block_root(block_size_bytes: usize, cell_size_bytes: usize) -> F {
    block_tree(&vec![0u8; block_size_bytes], cell_size_bytes).root()
}

/// The path from a cell's digest to its slot root: through its block's cell tree, then the slot
/// tree (two trees, each with its own bottom layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellProof {
    pub cell: u64,
    pub cells_per_block: u64,
    /// Leaves of the slot tree (a power of two).
    pub slot_blocks: u64,
    pub block_path: Vec<F>,
    pub slot_path: Vec<F>,
}

impl CellProof {
    /// Splits a combined path (block part, then slot part, then any zero padding up to the
    /// circuit's maximum depth, as Archivist's proof inputs carry it).
    pub fn from_path(cell: u64, cells_per_block: u64, slot_blocks: u64, path: &[F]) -> CellProof {
        let (block_depth, slot_depth) = (path_len(cells_per_block), path_len(slot_blocks));
        CellProof {
            cell,
            cells_per_block,
            slot_blocks,
            block_path: path[..block_depth].to_vec(),
            slot_path: path[block_depth..block_depth + slot_depth].to_vec(),
        }
    }

    /// The combined path, block part first.
    pub fn path(&self) -> Vec<F> {
        [self.block_path.as_slice(), &self.slot_path].concat()
    }

    /// Folds a cell digest up to the slot root it implies.
    pub fn reconstruct_root(&self, cell_digest: &F) -> F {
        let block = self.cell / self.cells_per_block;
        let in_block = self.cell % self.cells_per_block;
        let block_root = fold::<Poseidon2>(in_block, self.cells_per_block, cell_digest, &self.block_path);
        fold::<Poseidon2>(block, self.slot_blocks, &block_root, &self.slot_path)
    }

    /// Whether the cell with `cell_digest` belongs to the slot with `slot_root`.
    pub fn verify(&self, cell_digest: &F, slot_root: &F) -> bool {
        self.cells_per_block > 0
            && self.cell < self.cells_per_block * self.slot_blocks
            && self.block_path.len() == path_len(self.cells_per_block)
            && self.slot_path.len() == path_len(self.slot_blocks)
            && self.reconstruct_root(cell_digest) == *slot_root
    }
}

/// Cells in a slot of `blocks` blocks of `cells_per_block` cells, as the sampler counts them
/// (the slot padded to a power of two blocks).
pub fn slot_cells(blocks: u64, cells_per_block: u64) -> u64 {
    blocks.next_power_of_two() * cells_per_block
}

/// The cell index of sample `counter` (counting from 1): the low `log2(cells)` bits of
/// `sponge(entropy, slot_root, counter)`. `cells` must be a power of two.
pub fn sample_cell(entropy: &F, slot_root: &F, counter: u64, cells: u64) -> u64 {
    assert!(cells.is_power_of_two(), "{cells} cells is not a power of two");
    let digest = sponge(&[*entropy, *slot_root, F::from(counter)]);
    digest.into_bigint().as_ref()[0] & (cells - 1)
}

/// The cells of sample counters `1..=samples`.
pub fn sample_cells(entropy: &F, slot_root: &F, samples: u64, cells: u64) -> Vec<u64> {
    (1..=samples).map(|counter| sample_cell(entropy, slot_root, counter, cells)).collect()
}

#[cfg(test)]
mod tests;
