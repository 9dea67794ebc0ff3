use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use ark_ff::{BigInteger, PrimeField};
use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::dataset::{Datasets, UploadMeta, erasure_layout};
use crate::merkle::poseidon2::{self, CELL_SIZE_BYTES, F, SlotTree};
use crate::metrics::Metrics;
use crate::proofs::input::{build_input, sampled_blocks};
use crate::proofs::prover::{circuit_size, satisfied};
use crate::runtime::Compute;

/// Archivist's proof input for slot 3 of 11 (archivist-node `tests/circuits/fixtures/input.json`).
fn archivist_input() -> ProofInput {
    ProofInput::from_json(include_str!("../../merkle/fixtures/archivist-proof-input.json")).unwrap()
}

#[test]
fn archivist_input_satisfies_the_circuit_and_round_trips_as_json() {
    let input = archivist_input();
    assert_eq!((input.slot_index, input.cells_per_slot, input.slots_per_dataset), (3, 512, 11));
    assert!(satisfied(Params::ARCHIVIST, &input).unwrap());
    assert_eq!(input.check(&Params::ARCHIVIST), Ok(()));
    assert_eq!(ProofInput::from_json(&input.to_json()).unwrap(), input);
}

/// A change to the input: which part, and how.
#[derive(Clone, Copy, Debug)]
enum Change {
    Entropy,
    DatasetRoot,
    SlotIndex,
    SlotRoot,
    CellsPerSlot,
    SlotsPerDataset,
    /// A node of the slot's path to the dataset root, within the dataset tree's depth.
    SlotProofNode(usize),
    /// A byte of a sampled cell: (sample, byte).
    CellByte(usize, usize),
    /// A node of a sampled cell's path, within the slot tree's depth: (sample, level).
    PathNode(usize, usize),
    /// A sample answered with another cell's data and path (the index the prover chose).
    OtherCell(usize),
}

fn bump(x: &mut F) {
    *x += F::from(1u64);
}

/// `input` changed by `change`; `other` supplies another cell's data and path.
fn changed(input: &ProofInput, change: Change, other: &(Vec<F>, Vec<F>)) -> ProofInput {
    let mut input = input.clone();
    match change {
        Change::Entropy => bump(&mut input.entropy),
        Change::DatasetRoot => bump(&mut input.dataset_root),
        Change::SlotIndex => input.slot_index ^= 1,
        Change::SlotRoot => bump(&mut input.slot_root),
        Change::CellsPerSlot => input.cells_per_slot *= 2,
        Change::SlotsPerDataset => input.slots_per_dataset *= 2,
        Change::SlotProofNode(level) => bump(&mut input.slot_proof[level]),
        Change::CellByte(sample, byte) => {
            // Byte `byte` of the cell is byte `byte % 31` of element `byte / 31`.
            let element = &mut input.cells[sample][byte / 31];
            let mut bytes = element.into_bigint().to_bytes_le();
            bytes[byte % 31] ^= 0x5a;
            *element = F::from_le_bytes_mod_order(&bytes);
        }
        Change::PathNode(sample, level) => bump(&mut input.paths[sample][level]),
        Change::OtherCell(sample) => {
            input.cells[sample] = other.0.clone();
            input.paths[sample] = other.1.clone();
        }
    }
    input
}

#[test]
fn every_change_to_archivist_input_is_unsatisfied() {
    let input = archivist_input();
    // Slot 3 of 11: a dataset tree of depth 4; 512 cells: a cell path of depth 9.
    let other = (input.cells[1].clone(), input.paths[1].clone());
    let changes = [
        Change::Entropy,
        Change::DatasetRoot,
        Change::SlotIndex,
        Change::SlotRoot,
        Change::CellsPerSlot,
        Change::SlotsPerDataset,
        Change::SlotProofNode(0),
        Change::SlotProofNode(3),
        Change::CellByte(0, 0),
        Change::CellByte(4, 2047),
        Change::PathNode(2, 0),
        Change::PathNode(2, 5),
        Change::PathNode(3, 8),
        Change::OtherCell(0),
    ];
    for change in changes {
        let changed = changed(&input, change, &other);
        assert!(!satisfied(Params::ARCHIVIST, &changed).unwrap(), "{change:?} still satisfies");
        assert!(changed.check(&Params::ARCHIVIST).is_err(), "{change:?} still holds natively");
    }
    // Path nodes above the slot tree's depth are padding the circuit reads past.
    let mut padded = input.clone();
    bump(&mut padded.paths[0][20]);
    bump(&mut padded.slot_proof[6]);
    assert!(satisfied(Params::ARCHIVIST, &padded).unwrap());
    assert_eq!(padded.check(&Params::ARCHIVIST), Ok(()));
}

#[test]
fn inputs_of_the_wrong_shape_are_refused() {
    let mut input = archivist_input();
    input.paths[1].pop();
    assert_eq!(
        satisfied(Params::ARCHIVIST, &input).unwrap_err().to_string(),
        "nodes of a cell path: expected 32, got 31"
    );
    let input = archivist_input();
    let more = Params::ARCHIVIST.with_samples(6);
    assert!(matches!(
        input.check_shape(&more),
        Err(InputError::Shape { what: "sampled cells", expected: 6, got: 5 })
    ));
    assert!(ProofInput::from_json(r#"{"entropy": "12x"}"#).is_err());
}

#[test]
fn constraints_grow_with_samples() {
    let (five, inputs, _) = circuit_size(Params::ARCHIVIST).unwrap();
    assert_eq!(inputs, 4, "the constant one and three public inputs");
    let (ten, _, _) = circuit_size(Params::ARCHIVIST.with_samples(10)).unwrap();
    let per_sample = (ten - five) / 5;
    // 68 permutations a sample (34 for the cell, 2 for the index, 32 for the path) of 240
    // constraints, plus the index's 254-bit decomposition and the path's selections.
    assert!((68 * 240..68 * 240 + 1200).contains(&per_sample), "{per_sample} a sample");
    assert!(five < 90_000, "{five} constraints for 5 samples");
}

// A real stored slot: a dataset uploaded to the store and erasure-coded (K = 3, M = 2) with
// 8 KiB blocks of four 2 KiB cells; the proof input is built from the blocks the store holds.

const BLOCK: usize = 4 * CELL_SIZE_BYTES;
const SMALL: Params =
    Params { max_depth: 8, max_log2_slots: 4, block_tree_depth: 2, cell_elements: 67, samples: 3 };

struct StoredDataset {
    slot_roots: Vec<F>,
    /// Per slot: its tree and blocks.
    slots: Vec<(SlotTree, BTreeMap<u64, Bytes>)>,
}

fn stored_dataset() -> &'static StoredDataset {
    static DATASET: OnceLock<StoredDataset> = OnceLock::new();
    DATASET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let d = Datasets::new(
                crate::store::memory(1 << 30),
                Compute::Inline,
                BLOCK,
                Arc::new(Metrics::new()),
            );
            let data: Vec<u8> = (0..7 * BLOCK + 1000).map(|i| (i * 7 + i / 251) as u8).collect();
            let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data))]);
            let original = d.upload(body, UploadMeta::default()).await.unwrap();
            let protected = d.protect(original.cid, 3, 2).await.unwrap();
            let manifest = &protected.manifest;
            let layout = erasure_layout(manifest).unwrap();
            let verification = manifest.erasure.as_ref().unwrap().verification.as_ref().unwrap();
            let slot_roots: Vec<F> = verification
                .slot_roots
                .iter()
                .map(|cid| poseidon2::from_bytes(&crate::content::poseidon2_digest_of(cid).unwrap()).unwrap())
                .collect();
            let mut slots = Vec::new();
            for slot in 0..slot_roots.len() as u32 {
                let range = layout.slot_blocks(slot);
                let stored =
                    d.store().get_tree_blocks(manifest.tree_cid, range.start, layout.steps).await.unwrap();
                let blocks: BTreeMap<u64, Bytes> = stored
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| (i as u64, if b.is_empty() { Bytes::from(vec![0; BLOCK]) } else { b }))
                    .collect();
                let tree = SlotTree::build(blocks.values().map(|b| b.as_ref()), BLOCK, CELL_SIZE_BYTES);
                assert_eq!(tree.root(), slot_roots[slot as usize], "the manifest's slot root");
                slots.push((tree, blocks));
            }
            StoredDataset { slot_roots, slots }
        })
    })
}

fn stored_input(slot: usize, entropy: F) -> ProofInput {
    let dataset = stored_dataset();
    let (tree, blocks) = &dataset.slots[slot];
    // Only the sampled blocks are read.
    let needed: BTreeMap<u64, Bytes> =
        sampled_blocks(&SMALL, &entropy, tree).into_iter().map(|b| (b, blocks[&b].clone())).collect();
    build_input(&SMALL, entropy, &dataset.slot_roots, slot as u64, tree, &needed).unwrap()
}

fn change() -> impl Strategy<Value = Change> {
    let sample = 0..SMALL.samples;
    prop_oneof![
        Just(Change::Entropy),
        Just(Change::DatasetRoot),
        Just(Change::SlotIndex),
        Just(Change::SlotRoot),
        Just(Change::CellsPerSlot),
        Just(Change::SlotsPerDataset),
        (0usize..3).prop_map(Change::SlotProofNode), // 5 slots: depth 3
        (sample.clone(), 0usize..CELL_SIZE_BYTES).prop_map(|(s, b)| Change::CellByte(s, b)),
        (sample.clone(), 0usize..4).prop_map(|(s, l)| Change::PathNode(s, l)), // 4 blocks of 4 cells
        sample.prop_map(Change::OtherCell),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Honest inputs from a stored slot satisfy the circuit; any change to them does not.
    #[test]
    fn stored_slots_satisfy_the_circuit_and_changes_do_not(
        slot in 0usize..5,
        entropy in any::<[u8; 31]>(),
        change in change(),
    ) {
        let entropy = F::from_le_bytes_mod_order(&entropy);
        let input = stored_input(slot, entropy);
        prop_assert!(satisfied(SMALL, &input).unwrap());
        prop_assert_eq!(input.check(&SMALL), Ok(()));
        // Another cell of the slot, with its path: not the one the entropy picked.
        let (tree, blocks) = &stored_dataset().slots[slot];
        let target = match change {
            Change::OtherCell(sample) => sample,
            _ => 0,
        };
        let picked = input.paths[target].clone();
        let other = (0..tree.cells())
            .map(|cell| {
                let block = &blocks[&(cell / 4)];
                let offset = (cell % 4) as usize * CELL_SIZE_BYTES;
                let mut path = tree.cell_proof(cell, block).path();
                path.resize(SMALL.max_depth, F::from(0u64));
                (poseidon2::bytes_to_elements(&block[offset..offset + CELL_SIZE_BYTES]), path)
            })
            .find(|(_, path)| *path != picked)
            .unwrap();
        let changed = changed(&input, change, &other);
        prop_assert!(!satisfied(SMALL, &changed).unwrap(), "{:?} still satisfies", change);
        prop_assert!(changed.check(&SMALL).is_err(), "{:?} still holds natively", change);
    }
}
