use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::merkle::tree::{fold, path_len};

fn dec(text: &str) -> F {
    from_decimal(text).expect("a decimal field element")
}

/// The test vectors of Archivist's reference implementation, codex-storage/nim-poseidon2:
/// `tests/poseidon2/testPermutation.nim` (permute(0, 1, 2)) and `tests/poseidon2/testSponge.nim`
/// ("sponge with rate=2": the sponge over 1..n for n = 0..7).
#[test]
fn permutation_and_sponge_match_the_reference_vectors() {
    let mut state = [F::from(0u64), F::from(1u64), F::from(2u64)];
    permute(&mut state);
    assert_eq!(
        state,
        [
            dec("21882471761025344482456282050943515707267606647948403374880378562101343146243"),
            dec("9030699330013392132529464674294378792132780497765201297316864012141442630280"),
            dec("9137931384593657624554037900714196568304064431583163402259937475584578975855"),
        ]
    );
    let expected = [
        "15335097698975718583905618186682475632756177170667436996250626760551196078076",
        "5101758095924000127790537496504070769319625501671400349336709520206095219618",
        "7306734450287348725566606192910189982345130476287345231433021147457815478255",
        "18511919414269811073023003336929505285555117419480831606637506641708579940507",
        "17917165106036607360653786499368288558581739128065811663709392730081030901634",
        "4630821736691665506072583795473163860465039714428126246168623896083265248907",
        "2020506076765964149531002674962673761843846094901604358961533722934321735239",
        "11732533243633999579592740965735640217427639382365959787508754341969556105663",
    ];
    for (n, digest) in expected.iter().enumerate() {
        let elements: Vec<F> = (1..=n as u64).map(F::from).collect();
        assert_eq!(sponge(&elements), dec(digest), "sponge over 1..{n}");
    }
}

#[test]
fn bytes_become_padded_31_byte_elements() {
    assert_eq!(bytes_to_elements(&[]), vec![F::from(1u64)]);
    assert_eq!(bytes_to_elements(&[7]), vec![F::from(7u64 + 256)]);
    let full = [0xffu8; 31];
    let elements = bytes_to_elements(&full);
    assert_eq!(elements.len(), 2, "a whole chunk still gets an end marker");
    assert_eq!(elements[1], F::from(1u64));
    assert_eq!(bytes_to_elements(&[0u8; CELL_SIZE_BYTES]).len(), 67);
}

#[test]
fn sponge_pads_with_a_single_one() {
    // Odd count: the pad completes the last pair.
    let mut state = [F::from(5u64), F::from(1u64), sponge_iv()];
    permute(&mut state);
    assert_eq!(sponge(&[F::from(5u64)]), state[0]);
    // Even count: the pad is a pair of its own.
    let mut state = [F::from(5u64), F::from(6u64), sponge_iv()];
    permute(&mut state);
    state[0] += F::ONE;
    permute(&mut state);
    assert_eq!(sponge(&[F::from(5u64), F::from(6u64)]), state[0]);
    assert_eq!(sponge_iv(), F::from(0x1_0000_0000_0000_0302u128));
}

#[test]
fn elements_round_trip_through_bytes() {
    let x = dec("20744935707483803411869804102043283881376973626291244537230284476834672019997");
    assert_eq!(from_bytes(&to_bytes(&x)), Some(x));
    assert_eq!(from_bytes(&[0xff; 32]), None, "above the modulus");
}

/// Archivist's proof input for slot 3 of 11 (archivist-node `tests/circuits/fixtures/input.json`,
/// MIT/Apache-2.0): from its entropy and slot root our sampler picks the cells it holds; each
/// cell's digest folded along its path gives the slot root, and the slot root folded along the
/// slot proof gives the dataset root.
#[test]
fn reproduces_an_archivist_proof_input() {
    let input: Value = serde_json::from_str(include_str!("../fixtures/archivist-proof-input.json")).unwrap();
    let text = |v: &Value| v.as_str().expect("a decimal string").to_owned();
    let entropy = dec(&text(&input["entropy"]));
    let slot_root = dec(&text(&input["slotRoot"]));
    let dataset_root = dec(&text(&input["dataSetRoot"]));
    let cells = input["nCellsPerSlot"].as_u64().unwrap();
    let slots = input["nSlotsPerDataSet"].as_u64().unwrap();
    let slot_index = input["slotIndex"].as_u64().unwrap();
    let cell_data = input["cellData"].as_array().unwrap();
    let paths = input["merklePaths"].as_array().unwrap();

    let picked = sample_cells(&entropy, &slot_root, cell_data.len() as u64, cells);
    let cells_per_block = 32; // 64 KiB blocks of 2 KiB cells
    for ((cell, elements), path) in picked.iter().zip(cell_data).zip(paths) {
        let elements: Vec<F> = elements.as_array().unwrap().iter().map(|e| dec(&text(e))).collect();
        assert_eq!(elements.len(), 67);
        let path: Vec<F> = path.as_array().unwrap().iter().map(|e| dec(&text(e))).collect();
        let proof = CellProof::from_path(*cell, cells_per_block, cells / cells_per_block, &path);
        assert_eq!(proof.reconstruct_root(&sponge(&elements)), slot_root, "cell {cell}");
    }

    let slot_proof: Vec<F> = input["slotProof"].as_array().unwrap().iter().map(|e| dec(&text(e))).collect();
    let depth = path_len(slots);
    assert!(slot_proof[depth..].iter().all(|node| *node == F::ZERO), "padding beyond the depth");
    assert_eq!(fold::<Poseidon2>(slot_index, slots, &slot_root, &slot_proof[..depth]), dataset_root);
}

fn field(seed: u64) -> F {
    hash_bytes(&seed.to_le_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any leaf's proof verifies; a flipped bit in the leaf or any path node, or a wrong index,
    /// fails.
    #[test]
    fn tree_proofs_verify_and_flips_fail(n in 1u64..40, pick in any::<u64>(), bit in 0usize..254) {
        let tree = Poseidon2Tree::build((0..n).map(field).collect()).unwrap();
        let index = pick % n;
        let proof = tree.proof(index);
        prop_assert!(proof.verify(&field(index), &tree.root()));

        let flip = |f: &F| {
            let mut bytes = to_bytes(f);
            bytes[bit / 8] ^= 1 << (bit % 8);
            F::from_le_bytes_mod_order(&bytes)
        };
        prop_assert!(!proof.verify(&flip(&field(index)), &tree.root()));
        let mut bad = proof.clone();
        let at = bit % bad.path.len();
        bad.path[at] = flip(&bad.path[at]);
        prop_assert!(!bad.verify(&field(index), &tree.root()));
        if n > 1 {
            let mut wrong = proof.clone();
            wrong.index = (index + 1) % n;
            prop_assert!(!wrong.verify(&field(index), &tree.root()));
        }
    }

    /// A cell of a slot built from blocks proves into the slot root, and no other bytes do.
    #[test]
    fn cell_proofs_reach_the_slot_root(blocks in 1usize..6, seed in any::<u64>(), pick in any::<u64>()) {
        let block_size = 4 * CELL_SIZE_BYTES;
        let data: Vec<Vec<u8>> = (0..blocks)
            .map(|b| (0..block_size).map(|i| (seed as usize).wrapping_mul(31).wrapping_add(b * 7 + i) as u8).collect())
            .collect();
        let slot = SlotTree::build(data.iter().map(Vec::as_slice), block_size, CELL_SIZE_BYTES);
        prop_assert_eq!(slot.cells(), (blocks as u64).next_power_of_two() * 4);
        let cell = pick % (blocks as u64 * 4);
        let (block, offset) = (cell / 4, (cell % 4) as usize * CELL_SIZE_BYTES);
        let proof = slot.cell_proof(cell, &data[block as usize]);
        let bytes = &data[block as usize][offset..offset + CELL_SIZE_BYTES];
        prop_assert!(proof.verify(&hash_bytes(bytes), &slot.root()));
        let mut wrong = bytes.to_vec();
        wrong[(pick % CELL_SIZE_BYTES as u64) as usize] ^= 1;
        prop_assert!(!proof.verify(&hash_bytes(&wrong), &slot.root()));
    }
}
