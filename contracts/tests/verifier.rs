//! The Groth16 verifier contract: Archivist's deployed key and example proof, the storage-proof
//! circuit's own key and proofs, the stand-in circuit's proofs, and inputs that must be
//! refused without a revert.

mod harness;

use alloy_primitives::{Address, U256};
use alloy_sol_types::SolConstructor;
use harness::*;
use neverust::chain::contracts::{Groth16Verifier as V, Marketplace as M};
use neverust::proofs::groth16::{
    Verifier, fr_to_u256, proof_from_snarkjs, proof_to_chain, public_inputs_from_snarkjs,
};
use neverust::proofs::stand_in::StandInInputs;

const KEY: &str = include_str!("../../node/src/proofs/fixtures/proof_main_verification_key.json");
const PROOF: &str = include_str!("../../node/src/proofs/fixtures/proof.json");
const PUBLIC: &str = include_str!("../../node/src/proofs/fixtures/public.json");
/// BN254's scalar field modulus: public inputs must be below it.
const R: &str = "21888242871839275222246405745257275088548364400416034343698204186575808495617";

fn deploy(h: &mut Harness, key: V::VerifyingKey) -> Address {
    h.create(V::BYTECODE.as_ref(), V::constructorCall { key }.abi_encode()).expect("the verifier deploys")
}

fn verify(h: &mut Harness, verifier: Address, proof: &M::Groth16Proof, inputs: Vec<U256>) -> bool {
    let proof = V::Groth16Proof::from(proof.clone());
    h.view_of(verifier, DEPLOYER, V::verifyCall { proof, pubSignals: inputs }).expect("verify never reverts")
}

fn archivist(h: &mut Harness) -> (Address, M::Groth16Proof, Vec<U256>) {
    let key = Verifier::from_snarkjs(KEY).unwrap().to_chain();
    let verifier = deploy(h, key);
    let proof = proof_to_chain(&proof_from_snarkjs(PROOF).unwrap());
    let inputs = public_inputs_from_snarkjs(PUBLIC).unwrap().iter().map(fr_to_u256).collect();
    (verifier, proof, inputs)
}

#[test]
fn archivist_example_proof_verifies_on_chain() {
    let mut h = Harness::bare();
    let (verifier, proof, inputs) = archivist(&mut h);
    assert_eq!(h.view_of(verifier, DEPLOYER, V::inputCountCall {}).unwrap(), U256::from(3));
    assert!(verify(&mut h, verifier, &proof, inputs));
}

#[test]
fn changed_signals_and_proofs_are_rejected() {
    let mut h = Harness::bare();
    let (verifier, proof, inputs) = archivist(&mut h);
    for i in 0..3 {
        let mut changed = inputs.clone();
        changed[i] += U256::from(1);
        assert!(!verify(&mut h, verifier, &proof, changed), "signal {i} changed");
    }
    assert!(!verify(&mut h, verifier, &proof, inputs[..2].to_vec()), "too few signals");
    assert!(!verify(&mut h, verifier, &proof, [inputs.clone(), vec![U256::ZERO]].concat()), "too many");
    let mut outside = inputs.clone();
    outside[2] += U256::from_str_radix(R, 10).unwrap();
    assert!(!verify(&mut h, verifier, &proof, outside), "a signal at or above r, even if equal mod r");
    let mut moved = proof.clone();
    moved.a.y += U256::from(1); // off the curve: the precompile fails, the verifier answers false
    assert!(!verify(&mut h, verifier, &moved, inputs.clone()));
    let mut swapped = proof.clone();
    std::mem::swap(&mut swapped.b.x.real, &mut swapped.b.x.imag); // the G2 coordinate order matters
    assert!(!verify(&mut h, verifier, &swapped, inputs));
}

#[test]
fn stand_in_proofs_verify_on_chain() {
    let mut h = Harness::bare();
    let key = h.prover.verifier().to_chain();
    let verifier = deploy(&mut h, key);
    let inputs = StandInInputs { entropy: 5u64.into(), root: 6u64.into(), slot: 7u64.into() };
    let proof = proof_to_chain(&h.prover.prove(inputs, 1));
    let signals: Vec<U256> = inputs.to_vec().iter().map(fr_to_u256).collect();
    assert!(verify(&mut h, verifier, &proof, signals.clone()));
    let mut other = signals;
    other[0] = U256::from(4);
    assert!(!verify(&mut h, verifier, &proof, other));
}

#[test]
fn a_key_without_points_is_refused() {
    let mut h = Harness::bare();
    let mut key = Verifier::from_snarkjs(KEY).unwrap().to_chain();
    key.ic.clear();
    let result = h.create(V::BYTECODE.as_ref(), V::constructorCall { key }.abi_encode());
    assert_eq!(result.unwrap_err().name(), "Groth16_InvalidVerifyingKey");
}

/// The storage-proof circuit's own verifying key (a development setup of Archivist's
/// parameters) deploys into the verifier, and a proof of Archivist's proof input made in Rust
/// verifies on chain, for its public inputs only.
#[test]
fn storage_proofs_verify_on_chain() {
    use neverust::proofs::circuit::{Params, ProofInput};
    use neverust::proofs::prover::Prover;

    let mut h = Harness::bare();
    let prover = Prover::development_setup(Params::ARCHIVIST, 11).unwrap();
    let verifier = deploy(&mut h, prover.verifier().to_chain());
    let input =
        ProofInput::from_json(include_str!("../../node/src/merkle/fixtures/archivist-proof-input.json"))
            .unwrap();
    let proof = proof_to_chain(&prover.prove(&input, [5; 32]).unwrap());
    let signals: Vec<U256> = input.public_inputs().iter().map(fr_to_u256).collect();
    assert!(verify(&mut h, verifier, &proof, signals.clone()));
    for i in 0..3 {
        let mut changed = signals.clone();
        changed[i] += U256::from(1);
        assert!(!verify(&mut h, verifier, &proof, changed), "signal {i} changed");
    }
}
