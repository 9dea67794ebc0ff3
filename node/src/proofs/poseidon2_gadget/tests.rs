use ark_ff::PrimeField;
use ark_relations::gr1cs::{ConstraintSystem, ConstraintSystemRef};
use proptest::prelude::*;

use super::*;
use crate::merkle::poseidon2 as native;

fn element() -> impl Strategy<Value = Fr> {
    any::<[u8; 32]>().prop_map(|bytes| Fr::from_le_bytes_mod_order(&bytes))
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![Just(Key::None), Just(Key::BottomLayer), Just(Key::Odd), Just(Key::OddAndBottomLayer)]
}

fn witnesses(cs: &ConstraintSystemRef<Fr>, values: &[Fr]) -> Vec<Num> {
    values.iter().map(|v| Num::witness(cs, Some(*v)).unwrap()).collect()
}

/// The circuit's result, required to equal a public input `claimed`: satisfied only when
/// the claim is right.
fn claim(cs: &ConstraintSystemRef<Fr>, result: &Num, claimed: Fr) -> bool {
    let public = Num::input(cs, Some(claimed)).unwrap();
    result.enforce_equal(cs, &public).unwrap();
    cs.is_satisfied().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_permutation_equals_the_native_one(a in element(), b in element(), c in element()) {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let mut state: [Num; 3] = witnesses(&cs, &[a, b, c]).try_into().unwrap();
        permute(&cs, &mut state).unwrap();
        let mut expected = [a, b, c];
        native::permute(&mut expected);
        let values: Vec<Fr> = state.iter().map(|n| n.value().unwrap()).collect();
        prop_assert_eq!(values, expected.to_vec());
        prop_assert_eq!(cs.num_constraints(), 240);
        prop_assert!(claim(&cs, &state[0], expected[0]));
    }

    #[test]
    fn the_compression_equals_the_native_one(left in element(), right in element(), key in key()) {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let [l, r]: [Num; 2] = witnesses(&cs, &[left, right]).try_into().unwrap();
        let digest = compress_with(&cs, &l, &r, key).unwrap();
        let expected = native::compress(&left, &right, key);
        prop_assert_eq!(digest.value(), Some(expected));
        prop_assert!(claim(&cs, &digest, expected));
    }

    #[test]
    fn the_sponge_equals_the_native_one(elements in prop::collection::vec(element(), 0..9)) {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let nums = witnesses(&cs, &elements);
        let digest = sponge(&cs, &nums).unwrap();
        let expected = native::sponge(&elements);
        prop_assert_eq!(digest.value(), Some(expected));
        prop_assert!(claim(&cs, &digest, expected));
    }

    #[test]
    fn a_wrong_digest_is_not_satisfied(left in element(), right in element(), off in element()) {
        prop_assume!(off != Fr::ZERO);
        let cs = ConstraintSystem::<Fr>::new_ref();
        let [l, r]: [Num; 2] = witnesses(&cs, &[left, right]).try_into().unwrap();
        let digest = compress_with(&cs, &l, &r, Key::None).unwrap();
        prop_assert!(!claim(&cs, &digest, native::compress(&left, &right, Key::None) + off));
    }
}

/// A cell's digest, in the circuit, from its bytes as the native hash reads them.
#[test]
fn a_cell_hashes_as_natively() {
    let cell: Vec<u8> = (0..native::CELL_SIZE_BYTES).map(|i| (i * 7 + 3) as u8).collect();
    let elements = native::bytes_to_elements(&cell);
    let cs = ConstraintSystem::<Fr>::new_ref();
    let digest = sponge(&cs, &witnesses(&cs, &elements)).unwrap();
    assert_eq!(digest.value(), Some(native::hash_bytes(&cell)));
    assert!(claim(&cs, &digest, native::hash_bytes(&cell)));
}

/// A product whose witness lies breaks the system: the gadget's values are checked, not
/// trusted.
#[test]
fn a_lying_witness_is_caught() {
    let cs = ConstraintSystem::<Fr>::new_ref();
    let x = Num::witness(&cs, Some(Fr::from(3u64))).unwrap();
    let lie = Num::witness(&cs, Some(Fr::from(10u64))).unwrap();
    cs.enforce_r1cs_constraint(|| x.lc().clone(), || x.lc().clone(), || lie.lc().clone()).unwrap();
    assert!(!cs.is_satisfied().unwrap());
}
