//! A stand-in for the storage-proof circuit: the same three public inputs (entropy, dataset
//! root, slot index) and a one-constraint statement, `w = entropy · root + slot`, that anyone
//! can prove for any inputs. It proves nothing about storage. Tests and the simulator use it
//! to exercise everything around proofs (setup, proving, the verifier contract, submitting
//! proofs on chain) at the cost of a few milliseconds a proof.

use ark_bn254::{Bn254, Fr};
use ark_groth16::{Groth16, Proof, ProvingKey};
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, LinearCombination, SynthesisError};
use ark_snark::SNARK;
use ark_std::rand::SeedableRng;
use ark_std::rand::rngs::StdRng;

use super::groth16::Verifier;

/// The public inputs, in the verifier's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandInInputs {
    pub entropy: Fr,
    pub root: Fr,
    pub slot: Fr,
}

impl StandInInputs {
    pub fn to_vec(self) -> Vec<Fr> {
        vec![self.entropy, self.root, self.slot]
    }
}

struct StandInCircuit(StandInInputs);

impl ConstraintSynthesizer<Fr> for StandInCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let StandInInputs { entropy, root, slot } = self.0;
        let e = cs.new_input_variable(|| Ok(entropy))?;
        let r = cs.new_input_variable(|| Ok(root))?;
        let s = cs.new_input_variable(|| Ok(slot))?;
        let w = cs.new_witness_variable(|| Ok(entropy * root + slot))?;
        cs.enforce_r1cs_constraint(
            || LinearCombination::from(e),
            || LinearCombination::from(r),
            || LinearCombination::from(w) - s,
        )
    }
}

/// Proving key and verifier of the stand-in circuit, from a deterministic setup.
#[derive(Clone)]
pub struct StandInProver {
    key: ProvingKey<Bn254>,
    verifier: Verifier,
}

impl StandInProver {
    /// A setup whose toxic waste comes from `seed`: anyone who knows the seed can forge
    /// proofs. For tests and the simulator only.
    pub fn setup(seed: u64) -> StandInProver {
        let zero = StandInInputs { entropy: Fr::from(0u64), root: Fr::from(0u64), slot: Fr::from(0u64) };
        let mut rng = StdRng::seed_from_u64(seed);
        let (key, vk) = Groth16::<Bn254>::circuit_specific_setup(StandInCircuit(zero), &mut rng)
            .expect("the stand-in circuit is satisfiable by construction");
        StandInProver { key, verifier: Verifier::new(vk) }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// A proof for `inputs`; `seed` draws its randomness (the same seed, the same proof).
    pub fn prove(&self, inputs: StandInInputs, seed: u64) -> Proof<Bn254> {
        let mut rng = StdRng::seed_from_u64(seed);
        Groth16::<Bn254>::prove(&self.key, StandInCircuit(inputs), &mut rng)
            .expect("the stand-in circuit is satisfiable for any inputs")
    }
}
