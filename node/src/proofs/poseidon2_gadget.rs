//! Archivist's Poseidon2 (BN254, width 3) as R1CS constraints: the permutation, the rate-2
//! sponge and the keyed two-to-one compression, with the same constants as the native
//! functions in `merkle::poseidon2`, which they must always equal (the tests check it on
//! random inputs).
//!
//! A value in the circuit is a [`Num`]: a linear combination of the constraint system's
//! variables, with its value when one is known (when proving; not during a setup). Additions
//! and multiplications by constants are free; each product costs one constraint, so an S-box
//! (x⁵) costs three and a permutation 8·3·3 + 56·3 = 240.

use std::cell::RefCell;

use ark_bn254::Fr;
use ark_ff::{AdditiveGroup, Field};
use ark_relations::gr1cs::{ConstraintSystemRef, LinearCombination, SynthesisError, Variable};

use crate::merkle::poseidon2::{round_constants, sponge_iv};
use crate::merkle::tree::Key;

thread_local! {
    /// While [`with_rows`] runs: the values of each constraint's A and B sides, in order, and
    /// whether every constraint had them.
    static ROWS: RefCell<Option<(Vec<[Fr; 2]>, bool)>> = const { RefCell::new(None) };
}

/// Runs `build` (a circuit's synthesis with values) and returns, with its result, the values
/// of each constraint's A and B sides in the order the constraints were made (C is their
/// product): all a prover's witness map needs, without building the constraint matrices.
/// `None` when a constraint was made without values (a synthesis for a setup).
pub fn with_rows<T>(build: impl FnOnce() -> T) -> (T, Option<Vec<[Fr; 2]>>) {
    let outer = ROWS.replace(Some((Vec::new(), true)));
    let result = build();
    let rows = ROWS.replace(outer).and_then(|(rows, complete)| complete.then_some(rows));
    (result, rows)
}

fn record_row(a: Option<Fr>, b: Option<Fr>) {
    ROWS.with_borrow_mut(|rows| {
        if let Some((rows, complete)) = rows {
            match a.zip(b) {
                Some(row) => rows.push(row.into()),
                None => *complete = false,
            }
        }
    });
}

/// A field element in a circuit.
#[derive(Clone, Debug)]
pub struct Num {
    lc: LinearCombination<Fr>,
    value: Option<Fr>,
}

impl Num {
    pub fn constant(value: Fr) -> Num {
        Num { lc: LinearCombination::from((value, Variable::One)), value: Some(value) }
    }

    /// A new private variable; `value` is `None` during a setup.
    pub fn witness(cs: &ConstraintSystemRef<Fr>, value: Option<Fr>) -> Result<Num, SynthesisError> {
        let variable = cs.new_witness_variable(|| value.ok_or(SynthesisError::AssignmentMissing))?;
        Ok(Num { lc: variable.into(), value })
    }

    /// A new public input; `value` is `None` during a setup.
    pub fn input(cs: &ConstraintSystemRef<Fr>, value: Option<Fr>) -> Result<Num, SynthesisError> {
        let variable = cs.new_input_variable(|| value.ok_or(SynthesisError::AssignmentMissing))?;
        Ok(Num { lc: variable.into(), value })
    }

    pub fn value(&self) -> Option<Fr> {
        self.value
    }

    pub fn lc(&self) -> &LinearCombination<Fr> {
        &self.lc
    }

    pub fn add(&self, other: &Num) -> Num {
        let mut lc = &self.lc + &other.lc;
        lc.compactify();
        Num { lc, value: self.value.zip(other.value).map(|(a, b)| a + b) }
    }

    pub fn sub(&self, other: &Num) -> Num {
        self.add(&other.scale(-Fr::ONE))
    }

    pub fn add_constant(&self, constant: Fr) -> Num {
        self.add(&Num::constant(constant))
    }

    pub fn scale(&self, factor: Fr) -> Num {
        Num { lc: &self.lc * factor, value: self.value.map(|v| v * factor) }
    }

    /// The value when it is a constant of the circuit (no variable in it).
    pub fn as_constant(&self) -> Option<Fr> {
        self.lc.iter().all(|(_, variable)| *variable == Variable::One).then_some(self.value).flatten()
    }

    /// The product, as a new variable: one constraint (none when either side is a constant).
    pub fn mul(&self, cs: &ConstraintSystemRef<Fr>, other: &Num) -> Result<Num, SynthesisError> {
        if let Some(factor) = other.as_constant() {
            return Ok(self.scale(factor));
        }
        if let Some(factor) = self.as_constant() {
            return Ok(other.scale(factor));
        }
        let product = Num::witness(cs, self.value.zip(other.value).map(|(a, b)| a * b))?;
        cs.enforce_r1cs_constraint(|| self.lc.clone(), || other.lc.clone(), || product.lc.clone())?;
        record_row(self.value, other.value);
        Ok(product)
    }

    /// Requires `self == other`: one constraint.
    pub fn enforce_equal(&self, cs: &ConstraintSystemRef<Fr>, other: &Num) -> Result<(), SynthesisError> {
        cs.enforce_r1cs_constraint(
            || self.lc.clone(),
            || LinearCombination::from(Variable::One),
            || other.lc.clone(),
        )?;
        record_row(self.value, Some(Fr::ONE));
        Ok(())
    }
}

/// x⁵, in three constraints.
fn sbox(cs: &ConstraintSystemRef<Fr>, x: &Num) -> Result<Num, SynthesisError> {
    let x2 = x.mul(cs, x)?;
    let x4 = x2.mul(cs, &x2)?;
    x4.mul(cs, x)
}

/// The external linear layer, circ(2, 1, 1): each element plus the sum of all.
fn external_mix(state: &mut [Num; 3]) {
    let sum = state[0].add(&state[1]).add(&state[2]);
    state.iter_mut().for_each(|x| *x = x.add(&sum));
}

/// The Poseidon2 permutation of a width-3 state, in 240 constraints.
pub fn permute(cs: &ConstraintSystemRef<Fr>, state: &mut [Num; 3]) -> Result<(), SynthesisError> {
    let (external, internal) = round_constants();
    let full_round = |state: &mut [Num; 3], constants: &[Fr; 3]| -> Result<(), SynthesisError> {
        for (x, c) in state.iter_mut().zip(constants) {
            *x = sbox(cs, &x.add_constant(*c))?;
        }
        external_mix(state);
        Ok(())
    };
    external_mix(state);
    for constants in &external[..4] {
        full_round(state, constants)?;
    }
    for constant in internal {
        // The internal linear layer, diag(1, 1, 2) + 1: each element plus the sum, the last
        // one doubled first.
        state[0] = sbox(cs, &state[0].add_constant(*constant))?;
        let sum = state[0].add(&state[1]).add(&state[2]);
        state[2] = state[2].scale(Fr::from(2u64));
        state.iter_mut().for_each(|x| *x = x.add(&sum));
    }
    for constants in &external[4..] {
        full_round(state, constants)?;
    }
    Ok(())
}

/// The keyed two-to-one compression of slot trees: the first element of
/// `permute(left, right, key)`.
pub fn compress(
    cs: &ConstraintSystemRef<Fr>,
    left: &Num,
    right: &Num,
    key: &Num,
) -> Result<Num, SynthesisError> {
    let mut state = [left.clone(), right.clone(), key.clone()];
    permute(cs, &mut state)?;
    let [first, ..] = state;
    Ok(first)
}

/// [`compress`] with a key known when the circuit is built.
pub fn compress_with(
    cs: &ConstraintSystemRef<Fr>,
    left: &Num,
    right: &Num,
    key: Key,
) -> Result<Num, SynthesisError> {
    compress(cs, left, right, &Num::constant(Fr::from(key as u64)))
}

/// The rate-2 sponge over field elements, padded as the native one (`10*` on elements).
pub fn sponge(cs: &ConstraintSystemRef<Fr>, elements: &[Num]) -> Result<Num, SynthesisError> {
    let zero = Num::constant(Fr::ZERO);
    let mut state = [zero.clone(), zero, Num::constant(sponge_iv())];
    let mut pairs = elements.chunks_exact(2);
    for pair in &mut pairs {
        state[0] = state[0].add(&pair[0]);
        state[1] = state[1].add(&pair[1]);
        permute(cs, &mut state)?;
    }
    match pairs.remainder() {
        [last] => {
            state[0] = state[0].add(last);
            state[1] = state[1].add_constant(Fr::ONE);
        }
        _ => state[0] = state[0].add_constant(Fr::ONE),
    }
    permute(cs, &mut state)?;
    let [first, ..] = state;
    Ok(first)
}

#[cfg(test)]
mod tests;
