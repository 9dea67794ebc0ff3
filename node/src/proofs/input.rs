//! Building a storage proof's input for a slot held here, without I/O.
//!
//! Proving a slot for a challenge takes two steps around the store: [`sampled_blocks`] names
//! the slot's blocks the entropy samples cells from (the caller reads them), then
//! [`build_input`] turns those blocks, the slot's tree (kept from when the slot was stored or
//! checked: 64 bytes a block) and the dataset's slot roots into the circuit's
//! [`ProofInput`]. Blocks beyond the slot's end are the zero blocks that pad its tree, and
//! need no reading.

use std::collections::BTreeMap;

use ark_bn254::Fr;
use ark_ff::{AdditiveGroup, PrimeField};

use super::circuit::{InputError, Params, ProofInput};
use crate::merkle::poseidon2::{self, CELL_SIZE_BYTES, Poseidon2Tree, SlotTree};
use crate::merkle::tree::path_len;

/// The circuit's entropy from the chain's 32-byte challenge: its first 31 bytes read
/// little-endian (Archivist's encoding; 31 bytes always lie below the modulus).
pub fn entropy_from_challenge(challenge: &[u8; 32]) -> Fr {
    Fr::from_le_bytes_mod_order(&challenge[..31])
}

/// The cells `entropy` samples from the slot with `tree`, in sample order.
pub fn sampled_cells(params: &Params, entropy: &Fr, tree: &SlotTree) -> Vec<u64> {
    poseidon2::sample_cells(entropy, &tree.root(), params.samples as u64, tree.cells())
}

/// The slot's blocks (indexes within the slot) holding the sampled cells, ascending, without
/// the padding blocks past its end.
pub fn sampled_blocks(params: &Params, entropy: &Fr, tree: &SlotTree) -> Vec<u64> {
    let mut blocks: Vec<u64> = sampled_cells(params, entropy, tree)
        .into_iter()
        .map(|cell| cell / tree.cells_per_block())
        .filter(|&block| block < tree.blocks())
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    blocks
}

/// The proof input for slot `slot_index` of the dataset with `slot_roots`, whose tree is
/// `tree`, for `entropy`. `blocks` holds at least the [`sampled_blocks`], by index within the
/// slot.
pub fn build_input(
    params: &Params,
    entropy: Fr,
    slot_roots: &[Fr],
    slot_index: u64,
    tree: &SlotTree,
    blocks: &BTreeMap<u64, impl AsRef<[u8]>>,
) -> Result<ProofInput, InputError> {
    params.check()?;
    let shape = |what, expected, got| InputError::Shape { what, expected, got };
    if slot_index >= slot_roots.len() as u64 {
        return Err(shape("slot index below the slot count", slot_roots.len(), slot_index as usize));
    }
    if slot_roots.len() > 1 << params.max_log2_slots.min(usize::BITS as usize - 1) {
        return Err(shape("slots at most 2^maxLog2NSlots", 1 << params.max_log2_slots, slot_roots.len()));
    }
    let block_depth = path_len(tree.cells_per_block());
    if block_depth != params.block_tree_depth || !tree.cells_per_block().is_power_of_two() {
        return Err(shape("block tree depth", params.block_tree_depth, block_depth));
    }
    if tree.cells() <= tree.cells_per_block() {
        // Archivist's circuit reads a slot root above the block trees: two blocks at least.
        return Err(shape("blocks of a slot, at least", 2, tree.blocks() as usize));
    }
    let depth = tree.cells().trailing_zeros() as usize;
    if depth > params.max_depth {
        return Err(shape("slot tree depth at most maxDepth", params.max_depth, depth));
    }

    let dataset = Poseidon2Tree::build(slot_roots.to_vec()).expect("a dataset has slots");
    let mut slot_proof = dataset.proof(slot_index).path;
    slot_proof.resize(params.max_log2_slots, Fr::ZERO);

    let block_size = tree.cells_per_block() as usize * CELL_SIZE_BYTES;
    let zero_block = vec![0u8; block_size];
    let mut cells = Vec::with_capacity(params.samples);
    let mut paths = Vec::with_capacity(params.samples);
    let mut block_trees = BTreeMap::new();
    for cell in sampled_cells(params, &entropy, tree) {
        let block_index = cell / tree.cells_per_block();
        let block = if block_index < tree.blocks() {
            let block = blocks.get(&block_index).ok_or_else(|| {
                InputError::Format(format!("block {block_index} of the slot was not supplied"))
            })?;
            block.as_ref()
        } else {
            &zero_block
        };
        if block.len() != block_size {
            return Err(shape("bytes of a slot block", block_size, block.len()));
        }
        let offset = (cell % tree.cells_per_block()) as usize * CELL_SIZE_BYTES;
        let elements = poseidon2::bytes_to_elements(&block[offset..offset + CELL_SIZE_BYTES]);
        if elements.len() != params.cell_elements {
            return Err(shape("field elements of a cell", params.cell_elements, elements.len()));
        }
        // A block's cell tree is built once however many samples fall in it.
        let block_tree =
            block_trees.entry(block_index).or_insert_with(|| poseidon2::block_tree(block, CELL_SIZE_BYTES));
        let mut path = tree.cell_proof_in(cell, block_tree).path();
        path.resize(params.max_depth, Fr::ZERO);
        cells.push(elements);
        paths.push(path);
    }

    Ok(ProofInput {
        entropy,
        dataset_root: dataset.root(),
        slot_index,
        slot_root: tree.root(),
        cells_per_slot: tree.cells(),
        slots_per_dataset: slot_roots.len() as u64,
        slot_proof,
        cells,
        paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_is_the_first_31_bytes_little_endian() {
        let mut challenge = [0u8; 32];
        challenge[0] = 0x87;
        challenge[1] = 0xd6;
        challenge[2] = 0x12;
        challenge[31] = 0xff; // ignored
        assert_eq!(entropy_from_challenge(&challenge), Fr::from(1_234_567u64));
    }
}
