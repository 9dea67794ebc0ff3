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
use ark_groth16::{Groth16, Proof, ProvingKey};
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem, OptimizationGoal, SynthesisMode};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_snark::SNARK;
use ark_std::rand::{SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

use super::circuit::{InputError, Params, ProofInput, StorageProofCircuit};
use super::groth16::Verifier;

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
        let circuit = StorageProofCircuit::assigned(self.params, input)?;
        let proof = Groth16::<Bn254>::prove(&self.key, circuit, &mut StdRng::from_seed(randomness))
            .map_err(|e| ProverError::Synthesis(e.to_string()))?;
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
