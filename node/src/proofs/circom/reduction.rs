//! The R1CS-to-QAP reduction of circom and snarkjs, for proving under a snarkjs proving key.
//!
//! snarkjs' setup builds its H query for a quotient evaluated on the coset of odd powers of a
//! `2n`-th root of unity, rather than the libsnark reduction's division by the vanishing
//! polynomial on another coset; a proof under a snarkjs key must compute that quotient. The
//! domain covers the constraints and one row per public input (snarkjs' `x · 0 = 0` rows
//! that tie the inputs to the key), and C is the product of A and B on the constraints.

use ark_ff::PrimeField;
use ark_groth16::r1cs_to_qap::{R1CSToQAP, evaluate_constraint};
use ark_poly::EvaluationDomain;
use ark_relations::gr1cs::{ConstraintSystemRef, SynthesisError};
use ark_relations::utils::matrix::Matrix;

/// circom's reduction. It only proves: keys come from a snarkjs setup, never from this one.
pub struct CircomReduction;

impl R1CSToQAP for CircomReduction {
    #[allow(clippy::type_complexity)]
    fn instance_map_with_evaluation<F: PrimeField, D: EvaluationDomain<F>>(
        _cs: ConstraintSystemRef<F>,
        _t: &F,
    ) -> Result<(Vec<F>, Vec<F>, Vec<F>, F, usize, usize), SynthesisError> {
        Err(SynthesisError::Unsatisfiable)
    }

    fn witness_map_from_matrices<F: PrimeField, D: EvaluationDomain<F>>(
        matrices: &[Matrix<F>],
        num_inputs: usize,
        num_constraints: usize,
        full_assignment: &[F],
    ) -> Result<Vec<F>, SynthesisError> {
        let domain = D::new(num_constraints + num_inputs).ok_or(SynthesisError::PolynomialDegreeTooLarge)?;
        let size = domain.size();
        let (mut a, mut b) = (vec![F::zero(); size], vec![F::zero(); size]);
        for (i, (a_row, b_row)) in matrices[0].iter().zip(&matrices[1]).take(num_constraints).enumerate() {
            a[i] = evaluate_constraint(a_row, full_assignment);
            b[i] = evaluate_constraint(b_row, full_assignment);
        }
        a[num_constraints..num_constraints + num_inputs].copy_from_slice(&full_assignment[..num_inputs]);
        let mut c = vec![F::zero(); size];
        for i in 0..num_constraints {
            c[i] = a[i] * b[i];
        }

        // Each of A, B, C to coefficients, then evaluated on the coset ω·H, ω a 2n-th root
        // of unity.
        let shift = D::new(2 * size).ok_or(SynthesisError::PolynomialDegreeTooLarge)?.element(1);
        for values in [&mut a, &mut b, &mut c] {
            domain.ifft_in_place(values);
            D::distribute_powers_and_mul_by_const(values, shift, F::one());
            domain.fft_in_place(values);
        }
        Ok(a.iter().zip(&b).zip(&c).map(|((a, b), c)| *a * b - c).collect())
    }

    fn h_query_scalars<F: PrimeField, D: EvaluationDomain<F>>(
        _max_power: usize,
        _t: F,
        _zt: F,
        _delta_inverse: F,
    ) -> Result<Vec<F>, SynthesisError> {
        Err(SynthesisError::Unsatisfiable)
    }
}
