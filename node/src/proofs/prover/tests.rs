use super::*;
use crate::proofs::groth16::{proof_from_chain, proof_to_chain};

fn archivist_input() -> ProofInput {
    ProofInput::from_json(include_str!("../../merkle/fixtures/archivist-proof-input.json")).unwrap()
}

/// Archivist's proof input proves under a development setup of Archivist's parameters; the
/// proof holds for its own public inputs only; the key survives a file round trip, and a
/// file with another hash is refused.
#[test]
fn archivist_input_proves_and_verifies() {
    let prover = Prover::development_setup(Params::ARCHIVIST, 7).unwrap();
    let input = archivist_input();
    let proof = prover.prove(&input, [1; 32]).unwrap();
    let inputs = input.public_inputs();
    assert!(prover.verify(&inputs, &proof));
    // Our MSMs and witness map make arkworks' proof, bit for bit, from the same randomness.
    let circuit = StorageProofCircuit::assigned(Params::ARCHIVIST, &input).unwrap();
    let by_arkworks = Groth16::<Bn254>::prove(&prover.key, circuit, &mut StdRng::from_seed([1; 32])).unwrap();
    assert_eq!(proof, by_arkworks);
    assert!(prover.verifier().verify(&inputs, &proof_from_chain(&proof_to_chain(&proof)).unwrap()));
    for changed in 0..3 {
        let mut other = inputs;
        other[changed] += Fr::from(1u64);
        assert!(!prover.verify(&other, &proof), "public input {changed} changed");
    }

    // A proof for another entropy cannot be made from this slot's old answer.
    let mut stale = input.clone();
    stale.entropy += Fr::from(1u64);
    let error = prover.prove(&stale, [2; 32]).unwrap_err().to_string();
    assert!(error.contains("sample 1: cell") && error.contains("do not lead to the slot root"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proving.key");
    let hash = prover.save(&path).unwrap();
    assert_eq!(hash, prover.key_hash());
    assert_eq!(hash.len(), 64);
    let loaded = Prover::load(&path, Some(&hash)).unwrap();
    assert_eq!(loaded.params(), &Params::ARCHIVIST);
    assert_eq!(loaded.verifier().key(), prover.verifier().key());
    assert!(loaded.verify(&inputs, &loaded.prove(&input, [3; 32]).unwrap()));
    let wrong = "0".repeat(64);
    let error = Prover::load(&path, Some(&wrong)).err().unwrap().to_string();
    assert!(error.contains(&format!("hash {hash}, expected {wrong}")), "{error}");

    // The same seed, the same key.
    assert_eq!(Prover::development_setup(Params::ARCHIVIST, 7).unwrap().key_hash(), hash);
}

#[test]
fn malformed_key_files_are_refused() {
    let prover = Prover::development_setup(Params::ARCHIVIST.with_samples(1), 1).unwrap();
    let bytes = prover.to_bytes();
    assert!(Prover::from_bytes(&bytes).is_ok());
    assert_eq!(Prover::from_bytes(b"hello").err().unwrap(), "not a Neverust proving key file");
    assert!(Prover::from_bytes(&bytes[..bytes.len() - 10]).err().unwrap().starts_with("malformed key"));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Prover::from_bytes(&longer).err().unwrap(), "1 bytes after the key");
    let other = Prover::development_setup(Params::ARCHIVIST.with_samples(1), 2).unwrap();
    assert_ne!(other.key_hash(), prover.key_hash());

    // A one-sample key whose header claims five samples loads (the header is trusted with
    // the file's hash), but proving with it is refused before any work on the key.
    let header_end = MAGIC.len() + bytes[MAGIC.len()..].iter().position(|&b| b == b'\n').unwrap();
    let mut relabelled = MAGIC.to_vec();
    relabelled.extend(serde_json::to_vec(&Params::ARCHIVIST).unwrap());
    relabelled.extend(&bytes[header_end..]);
    let mislabelled = Prover::from_bytes(&relabelled).unwrap();
    let error = mislabelled.prove(&archivist_input(), [1; 32]).unwrap_err().to_string();
    assert!(error.contains("is not the proving key's"), "{error}");
}

/// The witness map from the rows the circuit records (each constraint's A and B values)
/// equals arkworks' from the constraint matrices; a setup's synthesis records none.
#[test]
fn quotient_from_recorded_rows_equals_the_matrix_witness_map() {
    use ark_groth16::r1cs_to_qap::{LibsnarkReduction, R1CSToQAP};
    let input = archivist_input();
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Prove { construct_matrices: true, generate_lc_assignments: false });
    let circuit = StorageProofCircuit::assigned(Params::ARCHIVIST, &input).unwrap();
    let (built, rows) = with_rows(|| circuit.generate_constraints(cs.clone()));
    built.unwrap();
    cs.finalize();
    let rows = rows.unwrap();
    assert_eq!(rows.len(), cs.num_constraints());
    let inputs = cs.borrow().unwrap().instance_assignment().unwrap().to_vec();
    let expected = LibsnarkReduction::witness_map::<Fr, GeneralEvaluationDomain<Fr>>(cs.clone()).unwrap();
    assert_eq!(quotient(&rows, &inputs), expected);

    let setup = ConstraintSystem::<Fr>::new_ref();
    setup.set_mode(SynthesisMode::Setup);
    let (built, rows) =
        with_rows(|| StorageProofCircuit::shape(Params::ARCHIVIST).generate_constraints(setup));
    built.unwrap();
    assert!(rows.is_none());
}
