//! Groth16 proving of the storage-proof circuit: proving keys (a development setup from a
//! seed, or a key file from a ceremony), key files with the hash a network's configuration
//! names, proving and verifying.
//!
//! A key file is a short header (a magic line, then the circuit's [`Params`] as one JSON
//! line) followed by the arkworks uncompressed serialization of the proving key, which holds
//! the verifying key too. Its hash is the SHA-256 of the whole file, in hex: what a network
//! names (Archivist's `zkeyHash`) so every host proves under the key the verifier contract was
//! deployed with.

use std::path::Path;

use ark_bn254::{Bn254, Fr};
use ark_ff::{AdditiveGroup, FftField, Field, UniformRand};
use ark_groth16::{Groth16, Proof, ProvingKey};
use ark_poly::{EvaluationDomain, GeneralEvaluationDomain};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, OptimizationGoal, SynthesisError, SynthesisMode,
};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_snark::SNARK;
use ark_std::rand::{SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

use super::circuit::{InputError, Params, ProofInput, StorageProofCircuit};
use super::groth16::{Verifier, create_proof};
use super::poseidon2_gadget::with_rows;

const MAGIC: &[u8] = b"neverust-groth16-proving-key v1\n";

/// Why a proof could not be made or a key read.
#[derive(Debug, thiserror::Error)]
pub enum ProverError {
    #[error(transparent)]
    Input(#[from] InputError),
    /// The input fits the circuit's shape but not its statement (wrong data, path or root).
    #[error("the proof input does not satisfy the storage-proof circuit")]
    Unsatisfied,
    #[error("proving failed: {0}")]
    Synthesis(String),
    #[error("proving key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

/// The storage-proof circuit's proving key and verifier, for one [`Params`].
#[derive(Clone)]
pub struct Prover {
    params: Params,
    key: ProvingKey<Bn254>,
    verifier: Verifier,
}

impl Prover {
    /// A setup whose secret randomness comes from `seed`. **Unfit for production**: anyone who
    /// knows the seed can forge proofs for any input. For development networks, tests and
    /// the simulator; production keys come from a ceremony and are loaded with [`Prover::load`].
    pub fn development_setup(params: Params, seed: u64) -> Result<Prover, ProverError> {
        params.check()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let (key, _) = Groth16::<Bn254>::circuit_specific_setup(StorageProofCircuit::shape(params), &mut rng)
            .map_err(|e| ProverError::Synthesis(e.to_string()))?;
        Ok(Prover::from_key(params, key))
    }

    fn from_key(params: Params, key: ProvingKey<Bn254>) -> Prover {
        let verifier = Verifier::new(key.vk.clone());
        Prover { params, key, verifier }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// A proof for `input`, its blinding drawn from `randomness` (32 fresh random bytes: they
    /// keep the proof zero-knowledge; the same bytes give the same proof). The statement is
    /// checked natively first and the proof verified after (milliseconds each, against
    /// seconds of proving), so a wrong input is an error naming what does not hold, never a
    /// proof the chain would reject.
    pub fn prove(&self, input: &ProofInput, randomness: [u8; 32]) -> Result<Proof<Bn254>, ProverError> {
        input.check(&self.params)?;
        let synthesis = |e: SynthesisError| ProverError::Synthesis(e.to_string());
        // Values only: the constraint matrices are not built, the witness map takes each
        // constraint's A and B values as the circuit records them.
        let cs = ConstraintSystem::<Fr>::new_ref();
        cs.set_optimization_goal(OptimizationGoal::Constraints);
        cs.set_mode(SynthesisMode::Prove { construct_matrices: false, generate_lc_assignments: false });
        let circuit = StorageProofCircuit::assigned(self.params, input)?;
        let (built, rows) = with_rows(|| circuit.generate_constraints(cs.clone()));
        built.map_err(synthesis)?;
        let rows = rows.ok_or_else(|| ProverError::Synthesis("a constraint without values".into()))?;
        let assignment = {
            let cs = cs.borrow().ok_or_else(|| ProverError::Synthesis("constraint system in use".into()))?;
            let missing = |_| ProverError::Synthesis("assignment missing".into());
            [cs.instance_assignment().map_err(missing)?, cs.witness_assignment().map_err(missing)?].concat()
        };
        let public_count = cs.num_instance_variables() - 1;
        drop(cs);
        let key = &self.key;
        let domain = GeneralEvaluationDomain::<Fr>::new(rows.len() + public_count + 1);
        if assignment.len() != key.a_query.len() || domain.map(|d| d.size()) != Some(key.h_query.len() + 1) {
            return Err(ProverError::Synthesis(format!(
                "the circuit ({} constraints, {} variables) is not the proving key's",
                rows.len(),
                assignment.len()
            )));
        }
        // r and s drawn as arkworks' `Groth16::prove` draws them.
        let mut rng = StdRng::from_seed(randomness);
        let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
        let proof = create_proof(key, r, s, &assignment, public_count, || {
            quotient(&rows, &assignment[..=public_count])
        });
        if !self.verify(&input.public_inputs(), &proof) {
            return Err(ProverError::Unsatisfied);
        }
        Ok(proof)
    }

    /// Whether `proof` proves the statement for these public inputs.
    pub fn verify(&self, public_inputs: &[Fr; 3], proof: &Proof<Bn254>) -> bool {
        self.verifier.verify(public_inputs, proof)
    }

    /// The key file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(serde_json::to_vec(&self.params).expect("params serialize"));
        bytes.push(b'\n');
        self.key.serialize_uncompressed(&mut bytes).expect("writing to a Vec cannot fail");
        bytes
    }

    /// Reads a key file's bytes. Curve points are taken as written (no subgroup checks: a
    /// key file is trusted by its hash, and checking every point of a large key takes
    /// longer than proving).
    pub fn from_bytes(bytes: &[u8]) -> Result<Prover, String> {
        let rest = bytes.strip_prefix(MAGIC).ok_or("not a Neverust proving key file")?;
        let end = rest.iter().position(|&b| b == b'\n').ok_or("truncated header")?;
        let params: Params =
            serde_json::from_slice(&rest[..end]).map_err(|e| format!("malformed parameters: {e}"))?;
        params.check().map_err(|e| e.to_string())?;
        let mut body = &rest[end + 1..];
        let key = ProvingKey::<Bn254>::deserialize_uncompressed_unchecked(&mut body)
            .map_err(|e| format!("malformed key: {e}"))?;
        if !body.is_empty() {
            return Err(format!("{} bytes after the key", body.len()));
        }
        if key.vk.gamma_abc_g1.len() != 4 {
            return Err(format!(
                "a key for {} public inputs, not 3",
                key.vk.gamma_abc_g1.len().saturating_sub(1)
            ));
        }
        Ok(Prover::from_key(params, key))
    }

    /// Writes the key file; returns its hash.
    pub fn save(&self, path: &Path) -> Result<String, ProverError> {
        let bytes = self.to_bytes();
        std::fs::write(path, &bytes).map_err(|e| key_file_error(path, e.to_string()))?;
        Ok(key_hash(&bytes))
    }

    /// Reads a key file; when `expected_hash` is given, the file must have that hash.
    pub fn load(path: &Path, expected_hash: Option<&str>) -> Result<Prover, ProverError> {
        let bytes = std::fs::read(path).map_err(|e| key_file_error(path, e.to_string()))?;
        if let Some(expected) = expected_hash {
            let actual = key_hash(&bytes);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(key_file_error(path, format!("hash {actual}, expected {expected}")));
            }
        }
        Prover::from_bytes(&bytes).map_err(|reason| key_file_error(path, reason))
    }

    /// The hash of this key's file.
    pub fn key_hash(&self) -> String {
        key_hash(&self.to_bytes())
    }
}

fn key_file_error(path: &Path, reason: String) -> ProverError {
    ProverError::KeyFile { path: path.display().to_string(), reason }
}

/// The SHA-256 of a key file, in lowercase hex.
pub fn key_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The coefficients of h = (A·B - C) / Z over the circuit's domain, as libsnark's reduction
/// (arkworks' `LibsnarkReduction`) computes them, from each constraint's A and B values
/// (`rows`; C = A·B when the assignment satisfies them) and the public inputs with the
/// constant one (`inputs`: the domain's last rows, `input · 0 = 0`).
fn quotient(rows: &[[Fr; 2]], inputs: &[Fr]) -> Vec<Fr> {
    use ark_std::{cfg_iter, cfg_iter_mut};
    #[cfg(feature = "parallel")]
    use rayon::prelude::*;
    let domain =
        GeneralEvaluationDomain::<Fr>::new(rows.len() + inputs.len()).expect("checked against the key");
    let size = domain.size();
    let column = |side: usize| {
        let mut values: Vec<Fr> = cfg_iter!(rows).map(|row| row[side]).collect();
        if side == 0 {
            values.extend_from_slice(inputs);
        }
        values.resize(size, Fr::ZERO);
        values
    };
    let mut c: Vec<Fr> = cfg_iter!(rows).map(|[a, b]| *a * b).collect();
    c.resize(size, Fr::ZERO);
    let coset = domain.get_coset(Fr::GENERATOR).expect("BN254's domains have cosets");
    let on_coset = |mut values: Vec<Fr>| {
        domain.ifft_in_place(&mut values);
        coset.fft_in_place(&mut values);
        values
    };
    let (mut ab, c) = ark_std::cfg_join!(
        || {
            let (a, b) = ark_std::cfg_join!(|| on_coset(column(0)), || on_coset(column(1)));
            domain.mul_polynomials_in_evaluation_domain(&a, &b)
        },
        || on_coset(c)
    );
    let vanishing_inverse = domain
        .evaluate_vanishing_polynomial(Fr::GENERATOR)
        .inverse()
        .expect("the generator is off the domain");
    cfg_iter_mut!(ab).zip(c).for_each(|(ab, c)| *ab = (*ab - c) * vanishing_inverse);
    coset.ifft_in_place(&mut ab);
    ab
}

/// Whether `input` satisfies the circuit of `params` (a full synthesis with values, no proof).
pub fn satisfied(params: Params, input: &ProofInput) -> Result<bool, ProverError> {
    let circuit = StorageProofCircuit::assigned(params, input)?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    circuit.generate_constraints(cs.clone()).map_err(|e| ProverError::Synthesis(e.to_string()))?;
    cs.is_satisfied().map_err(|e| ProverError::Synthesis(e.to_string()))
}

/// Constraints, public inputs (with the constant one) and private variables of the circuit
/// of `params`.
pub fn circuit_size(params: Params) -> Result<(usize, usize, usize), ProverError> {
    params.check()?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_mode(SynthesisMode::Setup);
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    StorageProofCircuit::shape(params)
        .generate_constraints(cs.clone())
        .map_err(|e| ProverError::Synthesis(e.to_string()))?;
    Ok((cs.num_constraints(), cs.num_instance_variables(), cs.num_witness_variables()))
}

#[cfg(test)]
mod tests;
