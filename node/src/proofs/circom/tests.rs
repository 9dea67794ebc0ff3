use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::proofs::groth16::{proof_from_snarkjs, public_inputs_from_snarkjs};

fn test_circuit(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../circuits/test").join(file)
}

fn load() -> CircomProver {
    CircomProver::load(
        &test_circuit("circuit.r1cs"),
        &test_circuit("circuit.wasm"),
        &test_circuit("circuit.zkey"),
    )
    .unwrap()
}

fn input() -> Value {
    serde_json::from_str(&std::fs::read_to_string(test_circuit("input.json")).unwrap()).unwrap()
}

/// The test circuit, compiled by circom and set up by snarkjs (`circuits/build.js`), proves
/// and verifies through the circom path; its proofs and snarkjs' verify under either reading
/// of the key.
#[test]
fn the_test_circuit_proves_and_verifies() {
    let prover = load();
    assert_eq!(prover.constraints(), 9, "as `snarkjs r1cs info` counts them");
    assert_eq!(prover.zkey_hash().len(), 64);
    let snarkjs_key =
        Verifier::from_snarkjs(&std::fs::read_to_string(test_circuit("verification_key.json")).unwrap())
            .unwrap();
    assert_eq!(snarkjs_key.key(), prover.verifier().key(), "the zkey's key is the one snarkjs exports");

    let (public, proof) = prover.prove(&input(), [1; 32]).unwrap();
    assert_eq!(public, vec![Fr::from(3u64), Fr::from(4_384_052_878_969u64), Fr::from(2u64)]);
    // Our MSMs and witness map make arkworks' proof, bit for bit, from the same r and s.
    let witness = prover.witness(&input()).unwrap();
    let mut rng = StdRng::from_seed([1; 32]);
    let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
    let by_arkworks =
        ark_groth16::Groth16::<Bn254, CircomReduction>::create_proof_with_reduction_and_matrices(
            &prover.zkey.key,
            r,
            s,
            &prover.r1cs.matrices,
            prover.r1cs.public + 1,
            prover.r1cs.constraints(),
            &witness,
        )
        .unwrap();
    assert_eq!(proof, by_arkworks);
    assert!(snarkjs_key.verify(&public, &proof));
    let mut other = public.clone();
    other[2] = Fr::from(3u64);
    assert!(!snarkjs_key.verify(&other, &proof));

    let by_snarkjs =
        proof_from_snarkjs(&std::fs::read_to_string(test_circuit("proof.json")).unwrap()).unwrap();
    let signals =
        public_inputs_from_snarkjs(&std::fs::read_to_string(test_circuit("public.json")).unwrap()).unwrap();
    assert_eq!(signals, public);
    assert!(prover.verifier().verify(&signals, &by_snarkjs));
}

#[test]
fn wrong_inputs_are_errors() {
    let prover = load();
    let mut lying = input();
    lying["dataSetRoot"] = json!("4384052878970");
    let error = prover.prove(&lying, [1; 32]).unwrap_err().to_string();
    assert!(error.contains("assertion failed"), "{error}");

    let mut unknown = input();
    unknown["slot"] = json!("1");
    let error = prover.prove(&unknown, [1; 32]).unwrap_err().to_string();
    assert!(error.contains("no input signal \"slot\""), "{error}");

    let mut short = input();
    short["cells"] = json!(["1", "2", "3"]);
    let error = prover.prove(&short, [1; 32]).unwrap_err().to_string();
    assert!(error.contains("\"cells\" takes 4 values, 3 given"), "{error}");

    let mut missing = input();
    missing.as_object_mut().unwrap().remove("slotIndex");
    let error = prover.prove(&missing, [1; 32]).unwrap_err().to_string();
    assert!(error.contains("takes 7 input values, 6 given"), "{error}");

    assert!(named_inputs(&json!({"a": "12x"})).is_err());
    assert!(named_inputs(&json!([1, 2])).is_err());
    assert_eq!(
        named_inputs(&json!({"a": [[1, 2], [3, 4]], "b": {"c": "5"}})).unwrap(),
        vec![
            ("a".to_owned(), [1u64, 2, 3, 4].map(Fr::from).to_vec()),
            ("b.c".to_owned(), vec![Fr::from(5u64)])
        ]
    );
}

#[test]
fn mismatched_and_damaged_artifacts_are_refused() {
    let r1cs = std::fs::read(test_circuit("circuit.r1cs")).unwrap();
    let zkey = std::fs::read(test_circuit("circuit.zkey")).unwrap();
    assert!(R1cs::read(&r1cs[..r1cs.len() - 1]).is_err());
    assert!(R1cs::read(&zkey).unwrap_err().to_string().contains("not a r1cs file"));
    assert!(Zkey::read(&zkey[..zkey.len() - 40]).is_err());
    let missing = CircomProver::load(
        &test_circuit("circuit.r1cs"),
        &test_circuit("nothing.wasm"),
        &test_circuit("circuit.zkey"),
    );
    assert!(missing.err().unwrap().to_string().contains("nothing.wasm"));
}

/// Archivist's own witness generator (its circom circuit compiled to WASM) accepts
/// Archivist's proof input and one our input builder makes from a slot, and refuses either
/// once the entropy changes: the two circuits take the same inputs and agree on them.
#[test]
fn archivist_witness_generator_accepts_our_inputs() {
    use std::collections::BTreeMap;

    use crate::merkle::poseidon2::{self, CELL_SIZE_BYTES, SlotTree};
    use crate::proofs::circuit::{Params, ProofInput};
    use crate::proofs::input::{build_input, sampled_blocks};

    let archivist = WitnessCalculator::new(include_bytes!("../fixtures/proof_main.wasm")).unwrap();
    let fixture: Value =
        serde_json::from_str(include_str!("../../merkle/fixtures/archivist-proof-input.json")).unwrap();
    let wires = archivist.calculate(&named_inputs(&fixture).unwrap()).unwrap();
    assert!(wires.len() > 80_000, "{} wires", wires.len());

    // A slot of 16 blocks of 64 KiB, slot 5 of 7.
    let block = 64 << 10;
    let data: Vec<u8> = (0..16 * block).map(|i| (i * 31 + i / 4093) as u8).collect();
    let blocks: BTreeMap<u64, &[u8]> = data.chunks(block).enumerate().map(|(i, b)| (i as u64, b)).collect();
    let tree = SlotTree::build(blocks.values().copied(), block, CELL_SIZE_BYTES);
    let roots: Vec<Fr> = (0..7u64)
        .map(|s| if s == 5 { tree.root() } else { poseidon2::hash_bytes(&s.to_le_bytes()) })
        .collect();
    let params = Params::ARCHIVIST;
    let entropy = Fr::from(987_654_321u64);
    let needed: BTreeMap<u64, &[u8]> =
        sampled_blocks(&params, &entropy, &tree).into_iter().map(|b| (b, blocks[&b])).collect();
    let ours = build_input(&params, entropy, &roots, 5, &tree, &needed).unwrap();
    let ours: Value = serde_json::from_str(&ours.to_json()).unwrap();
    assert!(archivist.calculate(&named_inputs(&ours).unwrap()).is_ok());

    for mut input in [fixture, ours] {
        input["entropy"] = json!("1");
        let error = archivist.calculate(&named_inputs(&input).unwrap()).unwrap_err().to_string();
        assert!(error.contains("assertion failed"), "{error}");
        assert!(ProofInput::from_json(&input.to_string()).is_ok());
    }
}
