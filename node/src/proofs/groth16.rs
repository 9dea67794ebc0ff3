//! Groth16 over BN254: verifying keys and proofs in the forms they travel in, and
//! verification.
//!
//! Three forms meet here: arkworks' types (proving and verifying in Rust), snarkjs' JSON
//! files (Archivist's verifying key and example proof: decimal strings, G2 coordinates as
//! `[c0, c1]` = real then imaginary part), and the marketplace's ABI structs (`Groth16Proof`,
//! the verifier's `VerifyingKey`: `uint256`s, `Fp2Element { real, imag }`). Every conversion
//! into arkworks checks that coordinates lie in the field and points on the curve and in the
//! right subgroup, so a malformed key or proof is an error, never a panic.
//!
//! [`create_proof`] makes a proof from a satisfied assignment with the project's own
//! multi-scalar multiplication ([`super::msm`]), the witness map running beside it.

use alloy_primitives::U256;
use ark_bn254::{Bn254, Fq, Fq2, Fr, G1Affine, G2Affine};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{BigInt, PrimeField};
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey, prepare_verifying_key};
use serde::Deserialize;

use crate::chain::contracts::{Groth16Verifier, Marketplace};

/// A proof as the marketplace takes it.
pub type ChainProof = Marketplace::Groth16Proof;
/// A verifying key as the verifier contract's constructor takes it.
pub type ChainVerifyingKey = Groth16Verifier::VerifyingKey;

/// Why a key, proof or input could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum FormatError {
    /// The text is not the JSON expected.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A number is not a decimal integer below the field's modulus.
    #[error("{what}: {value:?} is not an element of the field")]
    NotInField { what: &'static str, value: String },
    /// A point is not on BN254 or not in its prime-order subgroup.
    #[error("{0} is not a valid curve point")]
    NotOnCurve(&'static str),
    /// The key's curve or protocol is not Groth16 over BN254.
    #[error("unsupported key: {0}")]
    Unsupported(String),
}

/// A verifying key ready for verification, with its number of public inputs.
#[derive(Clone, Debug)]
pub struct Verifier {
    key: VerifyingKey<Bn254>,
    prepared: PreparedVerifyingKey<Bn254>,
}

impl Verifier {
    pub fn new(key: VerifyingKey<Bn254>) -> Verifier {
        let prepared = prepare_verifying_key(&key);
        Verifier { key, prepared }
    }

    /// Reads a snarkjs `verification_key.json`.
    pub fn from_snarkjs(json: &str) -> Result<Verifier, FormatError> {
        Ok(Verifier::new(verifying_key_from_snarkjs(json)?))
    }

    pub fn key(&self) -> &VerifyingKey<Bn254> {
        &self.key
    }

    /// How many public inputs proofs under this key take.
    pub fn input_count(&self) -> usize {
        self.key.gamma_abc_g1.len() - 1
    }

    /// True when `proof` is valid for `inputs`. The wrong number of inputs is simply not a
    /// valid proof (as in the verifier contract).
    pub fn verify(&self, inputs: &[Fr], proof: &Proof<Bn254>) -> bool {
        if inputs.len() != self.input_count() {
            return false;
        }
        Groth16::<Bn254>::verify_proof(&self.prepared, proof, inputs).unwrap_or(false)
    }

    /// The key as the verifier contract's constructor takes it.
    pub fn to_chain(&self) -> ChainVerifyingKey {
        let key = &self.key;
        ChainVerifyingKey {
            alpha1: g1_to_chain_verifier(&key.alpha_g1),
            beta2: g2_to_chain_verifier(&key.beta_g2),
            gamma2: g2_to_chain_verifier(&key.gamma_g2),
            delta2: g2_to_chain_verifier(&key.delta_g2),
            ic: key.gamma_abc_g1.iter().map(g1_to_chain_verifier).collect(),
        }
    }
}

/// A Groth16 proof under `key` for a satisfied `assignment` (the constant one, the
/// `public_count` public inputs, then the private variables), blinded by `r` and `s`.
/// `witness_map` computes h, the quotient polynomial's coefficients, in the form `key`'s H
/// query was made for (libsnark's reduction or circom's). The five multi-scalar
/// multiplications and the witness map run side by side; each also uses every core.
pub fn create_proof(
    key: &ProvingKey<Bn254>,
    r: Fr,
    s: Fr,
    assignment: &[Fr],
    public_count: usize,
    witness_map: impl FnOnce() -> Vec<Fr> + Send,
) -> Proof<Bn254> {
    use super::msm::msm;
    let scalars: Vec<BigInt<4>> = assignment[1..].iter().map(|x| x.into_bigint()).collect();
    let private = &scalars[public_count..];
    let h_sum = || {
        let h: Vec<BigInt<4>> = witness_map().iter().map(|x| x.into_bigint()).collect();
        msm(&key.h_query, &h)
    };
    let (h_sum, (l_sum, (a_sum, (b1_sum, b2_sum)))) = ark_std::cfg_join!(h_sum, || ark_std::cfg_join!(
        || msm(&key.l_query, private),
        || ark_std::cfg_join!(|| msm(&key.a_query[1..], &scalars), || ark_std::cfg_join!(
            || msm(&key.b_g1_query[1..], &scalars),
            || msm(&key.b_g2_query[1..], &scalars)
        ))
    ));
    // A = α + Σ aᵢ·Aᵢ(τ) + r·δ, B = β + Σ aᵢ·Bᵢ(τ) + s·δ (in G1 and G2),
    // C = Σ private aᵢ·Lᵢ + h(τ)t(τ)/δ + s·A + r·B - r·s·δ.
    let a = a_sum + key.a_query[0] + key.vk.alpha_g1 + key.delta_g1 * r;
    let b1 = b1_sum + key.b_g1_query[0] + key.beta_g1 + key.delta_g1 * s;
    let b2 = b2_sum + key.b_g2_query[0] + key.vk.beta_g2 + key.vk.delta_g2 * s;
    let c = l_sum + h_sum + a * s + b1 * r - key.delta_g1 * (r * s);
    Proof { a: a.into_affine(), b: b2.into_affine(), c: c.into_affine() }
}

#[derive(Deserialize)]
struct SnarkjsKey {
    protocol: String,
    curve: String,
    #[serde(rename = "nPublic")]
    public_count: usize,
    vk_alpha_1: Vec<String>,
    vk_beta_2: Vec<Vec<String>>,
    vk_gamma_2: Vec<Vec<String>>,
    vk_delta_2: Vec<Vec<String>>,
    #[serde(rename = "IC")]
    ic: Vec<Vec<String>>,
}

#[derive(Deserialize)]
struct SnarkjsProof {
    pi_a: Vec<String>,
    pi_b: Vec<Vec<String>>,
    pi_c: Vec<String>,
}

fn json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, FormatError> {
    serde_json::from_str(text).map_err(|e| FormatError::Json(e.to_string()))
}

/// Reads a snarkjs `verification_key.json` (Groth16, BN254 — snarkjs calls it bn128).
pub fn verifying_key_from_snarkjs(text: &str) -> Result<VerifyingKey<Bn254>, FormatError> {
    let key: SnarkjsKey = json(text)?;
    if key.protocol != "groth16" || !matches!(key.curve.as_str(), "bn128" | "bn254") {
        return Err(FormatError::Unsupported(format!("{} over {}", key.protocol, key.curve)));
    }
    if key.ic.len() != key.public_count + 1 {
        return Err(FormatError::Unsupported(format!(
            "{} IC points for {} public inputs",
            key.ic.len(),
            key.public_count
        )));
    }
    Ok(VerifyingKey {
        alpha_g1: g1_from_strings("vk_alpha_1", &key.vk_alpha_1)?,
        beta_g2: g2_from_strings("vk_beta_2", &key.vk_beta_2)?,
        gamma_g2: g2_from_strings("vk_gamma_2", &key.vk_gamma_2)?,
        delta_g2: g2_from_strings("vk_delta_2", &key.vk_delta_2)?,
        gamma_abc_g1: key.ic.iter().map(|p| g1_from_strings("IC", p)).collect::<Result<_, _>>()?,
    })
}

/// Reads a snarkjs `proof.json`.
pub fn proof_from_snarkjs(text: &str) -> Result<Proof<Bn254>, FormatError> {
    let proof: SnarkjsProof = json(text)?;
    Ok(Proof {
        a: g1_from_strings("pi_a", &proof.pi_a)?,
        b: g2_from_strings("pi_b", &proof.pi_b)?,
        c: g1_from_strings("pi_c", &proof.pi_c)?,
    })
}

/// Reads a snarkjs `public.json`: the public inputs, in order.
pub fn public_inputs_from_snarkjs(text: &str) -> Result<Vec<Fr>, FormatError> {
    let values: Vec<String> = json(text)?;
    values.iter().map(|v| fr_from_decimal("public input", v)).collect()
}

/// The proof as the marketplace takes it.
pub fn proof_to_chain(proof: &Proof<Bn254>) -> ChainProof {
    let (ax, ay) = g1_coordinates(&proof.a);
    let (cx, cy) = g1_coordinates(&proof.c);
    let [bxr, bxi, byr, byi] = g2_coordinates(&proof.b);
    ChainProof {
        a: Marketplace::G1Point { x: ax, y: ay },
        b: Marketplace::G2Point {
            x: Marketplace::Fp2Element { real: bxr, imag: bxi },
            y: Marketplace::Fp2Element { real: byr, imag: byi },
        },
        c: Marketplace::G1Point { x: cx, y: cy },
    }
}

/// A proof taken from the chain (a transaction's arguments), checked.
pub fn proof_from_chain(proof: &ChainProof) -> Result<Proof<Bn254>, FormatError> {
    Ok(Proof {
        a: g1_checked("a", proof.a.x, proof.a.y)?,
        b: g2_checked("b", [proof.b.x.real, proof.b.x.imag, proof.b.y.real, proof.b.y.imag])?,
        c: g1_checked("c", proof.c.x, proof.c.y)?,
    })
}

/// A public input as the verifier contract takes it.
pub fn fr_to_u256(value: &Fr) -> U256 {
    U256::from_limbs(value.into_bigint().0)
}

/// A `uint256` as a field element, or `None` when it is not below the field's modulus.
pub fn fr_from_u256(value: U256) -> Option<Fr> {
    Fr::from_bigint(BigInt(value.into_limbs()))
}

fn fq_from_u256(what: &'static str, value: U256) -> Result<Fq, FormatError> {
    Fq::from_bigint(BigInt(value.into_limbs()))
        .ok_or_else(|| FormatError::NotInField { what, value: value.to_string() })
}

fn u256_from_decimal(what: &'static str, text: &str) -> Result<U256, FormatError> {
    U256::from_str_radix(text, 10).map_err(|_| FormatError::NotInField { what, value: text.to_string() })
}

fn fr_from_decimal(what: &'static str, text: &str) -> Result<Fr, FormatError> {
    fr_from_u256(u256_from_decimal(what, text)?)
        .ok_or_else(|| FormatError::NotInField { what, value: text.to_string() })
}

fn fq_from_decimal(what: &'static str, text: &str) -> Result<U256, FormatError> {
    let value = u256_from_decimal(what, text)?;
    fq_from_u256(what, value)?;
    Ok(value)
}

/// A snarkjs G1 point: `[x, y, z]` in projective form, affine when `z` is 1.
fn g1_from_strings(what: &'static str, point: &[String]) -> Result<G1Affine, FormatError> {
    match point {
        [x, y, z] if z == "1" => g1_checked(what, fq_from_decimal(what, x)?, fq_from_decimal(what, y)?),
        [x, y, z] if x == "0" && y == "1" && z == "0" => Ok(G1Affine::zero()),
        _ => Err(FormatError::Json(format!("{what}: expected [x, y, 1]"))),
    }
}

/// A snarkjs G2 point: `[[x.c0, x.c1], [y.c0, y.c1], [1, 0]]`.
fn g2_from_strings(what: &'static str, point: &[Vec<String>]) -> Result<G2Affine, FormatError> {
    match point {
        [x, y, z] if x.len() == 2 && y.len() == 2 && z.len() == 2 && z[0] == "1" && z[1] == "0" => {
            g2_checked(
                what,
                [
                    fq_from_decimal(what, &x[0])?,
                    fq_from_decimal(what, &x[1])?,
                    fq_from_decimal(what, &y[0])?,
                    fq_from_decimal(what, &y[1])?,
                ],
            )
        }
        _ => Err(FormatError::Json(format!("{what}: expected [[x0, x1], [y0, y1], [1, 0]]"))),
    }
}

fn g1_checked(what: &'static str, x: U256, y: U256) -> Result<G1Affine, FormatError> {
    if x.is_zero() && y.is_zero() {
        return Ok(G1Affine::zero()); // the EVM's encoding of the point at infinity
    }
    let point = G1Affine::new_unchecked(fq_from_u256(what, x)?, fq_from_u256(what, y)?);
    if point.is_on_curve() && point.is_in_correct_subgroup_assuming_on_curve() {
        Ok(point)
    } else {
        Err(FormatError::NotOnCurve(what))
    }
}

/// A G2 point from `[x.real, x.imag, y.real, y.imag]`.
fn g2_checked(what: &'static str, [xr, xi, yr, yi]: [U256; 4]) -> Result<G2Affine, FormatError> {
    if [xr, xi, yr, yi].iter().all(U256::is_zero) {
        return Ok(G2Affine::zero());
    }
    let x = Fq2::new(fq_from_u256(what, xr)?, fq_from_u256(what, xi)?);
    let y = Fq2::new(fq_from_u256(what, yr)?, fq_from_u256(what, yi)?);
    let point = G2Affine::new_unchecked(x, y);
    if point.is_on_curve() && point.is_in_correct_subgroup_assuming_on_curve() {
        Ok(point)
    } else {
        Err(FormatError::NotOnCurve(what))
    }
}

fn fq_to_u256(value: &Fq) -> U256 {
    U256::from_limbs(value.into_bigint().0)
}

fn g1_coordinates(point: &G1Affine) -> (U256, U256) {
    match point.xy() {
        Some((x, y)) => (fq_to_u256(&x), fq_to_u256(&y)),
        None => (U256::ZERO, U256::ZERO),
    }
}

/// `[x.real, x.imag, y.real, y.imag]`, zeros for the point at infinity.
fn g2_coordinates(point: &G2Affine) -> [U256; 4] {
    match point.xy() {
        Some((x, y)) => [fq_to_u256(&x.c0), fq_to_u256(&x.c1), fq_to_u256(&y.c0), fq_to_u256(&y.c1)],
        None => [U256::ZERO; 4],
    }
}

fn g1_to_chain_verifier(point: &G1Affine) -> Groth16Verifier::G1Point {
    let (x, y) = g1_coordinates(point);
    Groth16Verifier::G1Point { x, y }
}

fn g2_to_chain_verifier(point: &G2Affine) -> Groth16Verifier::G2Point {
    let [xr, xi, yr, yi] = g2_coordinates(point);
    Groth16Verifier::G2Point {
        x: Groth16Verifier::Fp2Element { real: xr, imag: xi },
        y: Groth16Verifier::Fp2Element { real: yr, imag: yi },
    }
}

#[cfg(test)]
mod tests;
