//! circom's `.r1cs` files: the constraint system a circom circuit compiles to.
//!
//! Layout (all integers little-endian): `r1cs`, version 1, a section count, then sections of
//! `(type: u32, size: u64, bytes)`. Section 1 is the header (field size in bytes, the prime,
//! wire count, public outputs, public inputs, private inputs, label count, constraint count);
//! section 2 the constraints, each three linear combinations A, B, C written as a term count
//! and `(wire: u32, coefficient)` pairs, coefficients as plain little-endian integers. Wire 0
//! is the constant one, then the public outputs, the public inputs and the private signals:
//! the order of a witness.

use ark_bn254::Fr;
use ark_ff::{BigInteger, PrimeField};
use ark_relations::utils::matrix::Matrix;

use super::{CircomError, Reader};

/// A circuit's constraints, as the prover needs them.
#[derive(Clone, Debug)]
pub struct R1cs {
    pub wires: usize,
    /// Public signals (outputs, then inputs), not counting the constant one.
    pub public: usize,
    /// A, B and C, one row a constraint, as the prover takes them.
    pub matrices: [Matrix<Fr>; 3],
}

impl R1cs {
    pub fn constraints(&self) -> usize {
        self.matrices[0].len()
    }

    pub fn read(bytes: &[u8]) -> Result<R1cs, CircomError> {
        let sections = super::sections(bytes, b"r1cs", 1)?;
        let mut header = Reader::new(super::section(&sections, 1, "r1cs header")?);
        let field_bytes = header.u32()? as usize;
        if field_bytes != 32 || header.bytes(32)? != Fr::MODULUS.to_bytes_le().as_slice() {
            return Err(CircomError::Format("the r1cs is not over BN254's scalar field".into()));
        }
        let wires = header.u32()? as usize;
        let outputs = header.u32()? as usize;
        let inputs = header.u32()? as usize;
        let _private_inputs = header.u32()?;
        let _labels = header.u64()?;
        let constraints = header.u32()? as usize;

        let mut body = Reader::new(super::section(&sections, 2, "r1cs constraints")?);
        let mut matrices: [Matrix<Fr>; 3] = Default::default();
        for _ in 0..constraints {
            for matrix in &mut matrices {
                let terms = body.u32()? as usize;
                let mut row = Vec::with_capacity(terms.min(body.remaining() / 36));
                for _ in 0..terms {
                    let wire = body.u32()? as usize;
                    let coefficient = body.field()?;
                    if wire >= wires {
                        return Err(CircomError::Format(format!("wire {wire} of {wires}")));
                    }
                    row.push((coefficient, wire));
                }
                matrix.push(row);
            }
        }
        Ok(R1cs { wires, public: outputs + inputs, matrices })
    }

    /// Whether a witness (wire values, the constant one first) satisfies every constraint.
    pub fn is_satisfied(&self, witness: &[Fr]) -> bool {
        let eval = |row: &[(Fr, usize)]| row.iter().map(|(c, w)| *c * witness[*w]).sum::<Fr>();
        let [a, b, c] = &self.matrices;
        witness.len() == self.wires
            && (0..self.constraints()).all(|i| eval(&a[i]) * eval(&b[i]) == eval(&c[i]))
    }
}
