use super::*;
use crate::proofs::stand_in::{StandInInputs, StandInProver};

const KEY: &str = include_str!("../fixtures/proof_main_verification_key.json");
const PROOF: &str = include_str!("../fixtures/proof.json");
const PUBLIC: &str = include_str!("../fixtures/public.json");

fn archivist() -> (Verifier, Proof<Bn254>, Vec<Fr>) {
    let verifier = Verifier::from_snarkjs(KEY).expect("Archivist's key reads");
    let proof = proof_from_snarkjs(PROOF).expect("Archivist's proof reads");
    let inputs = public_inputs_from_snarkjs(PUBLIC).expect("Archivist's public inputs read");
    (verifier, proof, inputs)
}

/// Archivist's example proof verifies under Archivist's deployed key.
#[test]
fn archivist_example_proof_verifies() {
    let (verifier, proof, inputs) = archivist();
    assert_eq!(verifier.input_count(), 3);
    assert_eq!(inputs[2], Fr::from(3u64), "the example proves slot 3");
    assert!(verifier.verify(&inputs, &proof));
}

/// Changing any public signal, or the proof, makes it invalid.
#[test]
fn archivist_example_proof_rejects_changes() {
    let (verifier, proof, inputs) = archivist();
    for i in 0..inputs.len() {
        let mut changed = inputs.clone();
        changed[i] += Fr::from(1u64);
        assert!(!verifier.verify(&changed, &proof), "changed input {i} still verifies");
    }
    assert!(!verifier.verify(&inputs[..2], &proof), "too few inputs");
    let mut swapped = proof.clone();
    std::mem::swap(&mut swapped.a, &mut swapped.c);
    assert!(!verifier.verify(&inputs, &swapped));
}

/// The chain form of a proof carries the same points back.
#[test]
fn proof_chain_form_round_trips() {
    let (_, proof, _) = archivist();
    let chain = proof_to_chain(&proof);
    assert_eq!(proof_from_chain(&chain).unwrap(), proof);
    // snarkjs' c0 is the real part: the chain form keeps it in `real`.
    let text: serde_json::Value = serde_json::from_str(PROOF).unwrap();
    assert_eq!(chain.b.x.real.to_string(), text["pi_b"][0][0].as_str().unwrap());
    assert_eq!(chain.b.x.imag.to_string(), text["pi_b"][0][1].as_str().unwrap());
}

/// Malformed keys and proofs are errors, not panics.
#[test]
fn malformed_input_is_an_error() {
    let check = |text: &str, expect: fn(&FormatError) -> bool| {
        let error = proof_from_snarkjs(text).unwrap_err();
        assert!(expect(&error), "{text}: {error:?}");
    };
    check("{", |e| matches!(e, FormatError::Json(_)));
    // y off the curve
    check(r#"{"pi_a":["1","3","1"],"pi_b":[["0","0"],["0","0"],["1","0"]],"pi_c":["1","2","1"]}"#, |e| {
        matches!(e, FormatError::NotOnCurve("pi_a"))
    });
    // a coordinate of the modulus itself
    check(
        r#"{"pi_a":["21888242871839275222246405745257275088696311157297823662689037894645226208583","2","1"],
            "pi_b":[["0","0"],["0","0"],["1","0"]],"pi_c":["1","2","1"]}"#,
        |e| matches!(e, FormatError::NotInField { .. }),
    );
    let mut key: serde_json::Value = serde_json::from_str(KEY).unwrap();
    key["curve"] = "bls12381".into();
    assert!(matches!(Verifier::from_snarkjs(&key.to_string()), Err(FormatError::Unsupported(_))));
    let mut chain = proof_to_chain(&archivist().1);
    chain.a.y += U256::from(1);
    assert_eq!(proof_from_chain(&chain).unwrap_err(), FormatError::NotOnCurve("a"));
}

/// The stand-in circuit proves any inputs, and its proofs are bound to them.
#[test]
fn stand_in_proofs_verify_for_their_inputs_only() {
    let prover = StandInProver::setup(1);
    let inputs = StandInInputs { entropy: Fr::from(7u64), root: Fr::from(11u64), slot: Fr::from(2u64) };
    let proof = prover.prove(inputs, 5);
    assert!(prover.verifier().verify(&inputs.to_vec(), &proof));
    let other = StandInInputs { slot: Fr::from(3u64), ..inputs };
    assert!(!prover.verifier().verify(&other.to_vec(), &proof));
    assert_eq!(prover.prove(inputs, 5), proof, "same seed, same proof");
    assert_eq!(StandInProver::setup(1).verifier().key(), prover.verifier().key(), "deterministic setup");
    assert!(!StandInProver::setup(2).verifier().verify(&inputs.to_vec(), &proof), "another setup");
}

/// The field moduli the verifier contract hard-codes are BN254's.
#[test]
fn moduli_match_the_contract() {
    let source = include_str!("../../../../contracts/Groth16Verifier.sol");
    assert!(source.contains(&<Fq as PrimeField>::MODULUS.to_string()), "base field modulus");
    assert!(source.contains(&<Fr as PrimeField>::MODULUS.to_string()), "scalar field modulus");
}
