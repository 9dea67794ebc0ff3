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
}
