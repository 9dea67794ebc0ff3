//! snarkjs' Groth16 `.zkey` files: a circuit's proving key (with its verifying key).
//!
//! Layout (integers little-endian): `zkey`, version 1, a section count, then sections of
//! `(type: u32, size: u64, bytes)`. Section 1 names the protocol (1 = Groth16); section 2 is
//! the Groth16 header (base and scalar field sizes and moduli, variable count, public count,
//! domain size, then α₁, β₁, β₂, γ₂, δ₁, δ₂); section 3 the `IC` points of the verifying key;
//! 5, 6, 7 the A, B₁ and B₂ queries (one point a variable); 8 the C query (the private
//! variables'); 9 the H query (one point per element of the evaluation domain, for circom's
//! reduction). Coordinates are 32-byte little-endian integers in Montgomery form; G2
//! coordinates are `c0` then `c1`; the point at infinity is all zeroes.

use ark_bn254::{Bn254, Fq, Fq2, Fr, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::{BigInt, BigInteger, PrimeField, Zero};
use ark_groth16::{ProvingKey, VerifyingKey};

use super::{CircomError, Reader};

/// A proving key read from a zkey, with the sizes the prover checks a circuit against.
pub struct Zkey {
    pub key: ProvingKey<Bn254>,
    pub variables: usize,
    pub public: usize,
    pub domain_size: usize,
}

impl Zkey {
    pub fn read(bytes: &[u8]) -> Result<Zkey, CircomError> {
        let sections = super::sections(bytes, b"zkey", 1)?;
        let mut protocol = Reader::new(super::section(&sections, 1, "zkey protocol")?);
        if protocol.u32()? != 1 {
            return Err(CircomError::Format("the zkey is not a Groth16 key".into()));
        }
        let mut header = Reader::new(super::section(&sections, 2, "Groth16 header")?);
        let base_bytes = header.u32()? as usize;
        let base_modulus = header.bytes(base_bytes)?.to_vec();
        let scalar_bytes = header.u32()? as usize;
        let scalar_modulus = header.bytes(scalar_bytes)?.to_vec();
        if base_modulus != Fq::MODULUS.to_bytes_le() || scalar_modulus != Fr::MODULUS.to_bytes_le() {
            return Err(CircomError::Format("the zkey is not over BN254".into()));
        }
        let variables = header.u32()? as usize;
        let public = header.u32()? as usize;
        let domain_size = header.u32()? as usize;
        let alpha_g1 = g1(&mut header)?;
        let beta_g1 = g1(&mut header)?;
        let beta_g2 = g2(&mut header)?;
        let gamma_g2 = g2(&mut header)?;
        let delta_g1 = g1(&mut header)?;
        let delta_g2 = g2(&mut header)?;

        let points = |id: u32, what: &'static str, count: usize| -> Result<Vec<G1Affine>, CircomError> {
            let mut section = Reader::new(super::section(&sections, id, what)?);
            (0..count).map(|_| g1(&mut section)).collect()
        };
        let ic = points(3, "zkey IC", public + 1)?;
        let a_query = points(5, "zkey A query", variables)?;
        let b_g1_query = points(6, "zkey B1 query", variables)?;
        let mut b2 = Reader::new(super::section(&sections, 7, "zkey B2 query")?);
        let b_g2_query = (0..variables).map(|_| g2(&mut b2)).collect::<Result<Vec<_>, _>>()?;
        let l_query = points(8, "zkey C query", variables.saturating_sub(public + 1))?;
        let h_query = points(9, "zkey H query", domain_size)?;

        let vk = VerifyingKey { alpha_g1, beta_g2, gamma_g2, delta_g2, gamma_abc_g1: ic };
        let key = ProvingKey { vk, beta_g1, delta_g1, a_query, b_g1_query, b_g2_query, h_query, l_query };
        Ok(Zkey { key, variables, public, domain_size })
    }
}

fn fq(reader: &mut Reader) -> Result<Fq, CircomError> {
    let bytes = reader.bytes(32)?;
    let limbs: [u64; 4] =
        std::array::from_fn(|i| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes")));
    let montgomery = BigInt::new(limbs);
    if montgomery >= Fq::MODULUS {
        return Err(CircomError::Format("a coordinate is not below the base field's modulus".into()));
    }
    Ok(Fq::new_unchecked(montgomery))
}

fn g1(reader: &mut Reader) -> Result<G1Affine, CircomError> {
    let (x, y) = (fq(reader)?, fq(reader)?);
    if x.is_zero() && y.is_zero() {
        return Ok(G1Affine::zero());
    }
    let point = G1Affine::new_unchecked(x, y);
    point.is_on_curve().then_some(point).ok_or(CircomError::Format("a G1 point is not on the curve".into()))
}

fn g2(reader: &mut Reader) -> Result<G2Affine, CircomError> {
    let x = Fq2::new(fq(reader)?, fq(reader)?);
    let y = Fq2::new(fq(reader)?, fq(reader)?);
    if x.is_zero() && y.is_zero() {
        return Ok(G2Affine::zero());
    }
    let point = G2Affine::new_unchecked(x, y);
    point.is_on_curve().then_some(point).ok_or(CircomError::Format("a G2 point is not on the curve".into()))
}
