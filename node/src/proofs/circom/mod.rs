//! Proving with circom-compiled circuits: an `.r1cs` (the constraints), a snarkjs `.zkey`
//! (the proving key, from a network's ceremony) and circom's `.wasm` witness generator, as
//! Archivist's node takes them (`--circom-r1cs`, `--circom-zkey`, `--circom-wasm`). Proofs
//! verify under the zkey's verifying key, in Rust and in the verifier contract.

mod r1cs;
mod reduction;
mod witness;
mod zkey;

use std::path::Path;

use ark_bn254::{Bn254, Fr};
use ark_groth16::Proof;
use ark_groth16::r1cs_to_qap::R1CSToQAP;
use ark_poly::{EvaluationDomain, GeneralEvaluationDomain};
use ark_std::UniformRand;
use ark_std::rand::{SeedableRng, rngs::StdRng};
use serde_json::Value;

pub use self::r1cs::R1cs;
pub use self::reduction::CircomReduction;
pub use self::witness::WitnessCalculator;
pub use self::zkey::Zkey;
use super::groth16::{Verifier, create_proof};
use super::prover::key_hash;

/// Why circom artifacts could not be read or a proof made.
#[derive(Debug, thiserror::Error)]
pub enum CircomError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("malformed file: {0}")]
    Format(String),
    #[error("witness generator: {0}")]
    Wasm(String),
    #[error("bad input: {0}")]
    Input(String),
    #[error("the r1cs, zkey and witness generator are not of one circuit: {0}")]
    Mismatch(String),
    #[error("the witness does not satisfy the circuit's constraints")]
    Unsatisfied,
    #[error("proving failed: {0}")]
    Proving(String),
}

/// A circom circuit ready to prove: its constraints, proving key and witness generator.
pub struct CircomProver {
    r1cs: R1cs,
    zkey: Zkey,
    witness: WitnessCalculator,
    verifier: Verifier,
    zkey_hash: String,
}

impl CircomProver {
    /// Reads the three artifacts and checks that they belong together.
    pub fn load(r1cs: &Path, wasm: &Path, zkey: &Path) -> Result<CircomProver, CircomError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| CircomError::File { path: path.display().to_string(), reason: e.to_string() })
        };
        fn in_file(path: &Path) -> impl Fn(CircomError) -> CircomError + '_ {
            move |e| CircomError::File { path: path.display().to_string(), reason: e.to_string() }
        }
        let zkey_bytes = read(zkey)?;
        let prover = CircomProver::from_parts(
            R1cs::read(&read(r1cs)?).map_err(in_file(r1cs))?,
            Zkey::read(&zkey_bytes).map_err(in_file(zkey))?,
            WitnessCalculator::new(&read(wasm)?).map_err(in_file(wasm))?,
        )?;
        Ok(CircomProver { zkey_hash: key_hash(&zkey_bytes), ..prover })
    }

    fn from_parts(r1cs: R1cs, zkey: Zkey, witness: WitnessCalculator) -> Result<CircomProver, CircomError> {
        let mismatch = |what: String| Err(CircomError::Mismatch(what));
        if r1cs.wires != zkey.variables {
            return mismatch(format!(
                "{} wires in the r1cs, {} variables in the zkey",
                r1cs.wires, zkey.variables
            ));
        }
        if r1cs.public != zkey.public {
            return mismatch(format!(
                "{} public signals in the r1cs, {} in the zkey",
                r1cs.public, zkey.public
            ));
        }
        let domain =
            GeneralEvaluationDomain::<Fr>::new(r1cs.constraints() + r1cs.public + 1).map(|d| d.size());
        if domain != Some(zkey.domain_size) {
            return mismatch(format!(
                "the r1cs needs a domain of {domain:?}, the zkey has {}",
                zkey.domain_size
            ));
        }
        let verifier = Verifier::new(zkey.key.vk.clone());
        Ok(CircomProver { r1cs, zkey, witness, verifier, zkey_hash: String::new() })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The SHA-256 of the zkey file, in hex (what Archivist's configuration calls `zkeyHash`).
    pub fn zkey_hash(&self) -> &str {
        &self.zkey_hash
    }

    pub fn constraints(&self) -> usize {
        self.r1cs.constraints()
    }

    /// The witness of `inputs` (a circom input JSON object: signal names to numbers, decimal
    /// strings or arrays of them), checked against the constraints.
    pub fn witness(&self, inputs: &Value) -> Result<Vec<Fr>, CircomError> {
        let witness = self.witness.calculate(&named_inputs(inputs)?)?;
        if !self.r1cs.is_satisfied(&witness) {
            return Err(CircomError::Unsatisfied);
        }
        Ok(witness)
    }

    /// A proof for `inputs`, blinded from `randomness`; returns the public signals with it.
    pub fn prove(
        &self,
        inputs: &Value,
        randomness: [u8; 32],
    ) -> Result<(Vec<Fr>, Proof<Bn254>), CircomError> {
        let witness = self.witness(inputs)?;
        let mut rng = StdRng::from_seed(randomness);
        let (r, s) = (Fr::rand(&mut rng), Fr::rand(&mut rng));
        let (public_count, constraints) = (self.r1cs.public, self.r1cs.constraints());
        let mut failure = None;
        let proof = create_proof(&self.zkey.key, r, s, &witness, public_count, || {
            CircomReduction::witness_map_from_matrices::<Fr, GeneralEvaluationDomain<Fr>>(
                &self.r1cs.matrices,
                public_count + 1,
                constraints,
                &witness,
            )
            .unwrap_or_else(|e| {
                failure = Some(e);
                Vec::new()
            })
        });
        if let Some(e) = failure {
            return Err(CircomError::Proving(e.to_string()));
        }
        let public = witness[1..=self.r1cs.public].to_vec();
        if !self.verifier.verify(&public, &proof) {
            return Err(CircomError::Proving("the proof does not verify under the zkey's key".into()));
        }
        Ok((public, proof))
    }
}

/// A circom input object as (qualified signal name, flattened values): nested arrays are
/// flattened row by row; nested objects name their fields `outer.inner`.
pub fn named_inputs(inputs: &Value) -> Result<Vec<(String, Vec<Fr>)>, CircomError> {
    fn flatten(value: &Value, out: &mut Vec<Fr>) -> Result<(), CircomError> {
        match value {
            Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out)),
            Value::Number(n) => {
                let n =
                    n.as_u64().ok_or_else(|| CircomError::Input(format!("{n} is not a natural number")))?;
                out.push(Fr::from(n));
                Ok(())
            }
            Value::String(s) => {
                let value = crate::merkle::poseidon2::from_decimal(s)
                    .ok_or_else(|| CircomError::Input(format!("{s:?} is not a decimal field element")))?;
                out.push(value);
                Ok(())
            }
            other => Err(CircomError::Input(format!("unexpected value {other}"))),
        }
    }
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, Vec<Fr>)>) -> Result<(), CircomError> {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields {
                    let name = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                    walk(&name, field, out)?;
                }
                Ok(())
            }
            _ if prefix.is_empty() => Err(CircomError::Input("the input is not a JSON object".into())),
            _ => {
                let mut values = Vec::new();
                flatten(value, &mut values)?;
                out.push((prefix.to_owned(), values));
                Ok(())
            }
        }
    }
    let mut out = Vec::new();
    walk("", inputs, &mut out)?;
    Ok(out)
}

/// Cursor over a little-endian binary file.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CircomError> {
        if self.bytes.len() < n {
            return Err(CircomError::Format("truncated".into()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, CircomError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, CircomError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }

    /// A 32-byte little-endian integer below the scalar field's modulus.
    fn field(&mut self) -> Result<Fr, CircomError> {
        use ark_ff::PrimeField;
        let bytes = self.bytes(32)?;
        let value = Fr::from_le_bytes_mod_order(bytes);
        (ark_ff::BigInteger::to_bytes_le(&value.into_bigint()) == bytes)
            .then_some(value)
            .ok_or_else(|| CircomError::Format("a coefficient is not below the field's modulus".into()))
    }
}

/// The sections of an iden3 binary file (`magic`, `version`, then `(type, size, bytes)`), by
/// type.
fn sections<'a>(bytes: &'a [u8], magic: &[u8; 4], version: u32) -> Result<Vec<(u32, &'a [u8])>, CircomError> {
    let mut reader = Reader::new(bytes);
    if reader.bytes(4)? != magic {
        return Err(CircomError::Format(format!("not a {} file", String::from_utf8_lossy(magic))));
    }
    let found = reader.u32()?;
    if found != version {
        return Err(CircomError::Format(format!("version {found}, expected {version}")));
    }
    let count = reader.u32()?;
    let mut sections = Vec::new();
    for _ in 0..count {
        let kind = reader.u32()?;
        let size =
            usize::try_from(reader.u64()?).map_err(|_| CircomError::Format("section too large".into()))?;
        sections.push((kind, reader.bytes(size)?));
    }
    Ok(sections)
}

fn section<'a>(sections: &[(u32, &'a [u8])], kind: u32, what: &str) -> Result<&'a [u8], CircomError> {
    sections
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, bytes)| *bytes)
        .ok_or_else(|| CircomError::Format(format!("no {what} section")))
}

#[cfg(test)]
mod tests;
