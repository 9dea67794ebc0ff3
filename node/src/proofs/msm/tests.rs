use super::*;
use ark_bn254::{Fr, G1Affine, G1Projective, G2Projective};
use ark_ec::{CurveGroup, VariableBaseMSM};
use ark_ff::{PrimeField, UniformRand};
use ark_std::rand::{Rng, SeedableRng, rngs::StdRng};
use proptest::prelude::*;

fn random_points<G: CurveGroup<ScalarField = Fr>>(n: usize, rng: &mut StdRng) -> Vec<G::Affine> {
    // Multiples of one random point, cheaper to make than independent random points and as
    // good for an MSM, whose algorithm never looks at how the bases relate.
    let step = G::rand(rng);
    let mut point = step * Fr::rand(rng);
    let points: Vec<G> = (0..n)
        .map(|_| {
            point += step;
            point
        })
        .collect();
    G::normalize_batch(&points)
}

fn bigints(scalars: &[Fr]) -> Vec<BigInt<4>> {
    scalars.iter().map(|s| s.into_bigint()).collect()
}

/// The digits of every window weigh back to the scalar, and each lies in ±2^(c-1).
#[test]
fn signed_digits_recompose_the_scalar() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut scalars: Vec<Fr> = (0..200).map(|_| Fr::rand(&mut rng)).collect();
    scalars.extend([Fr::ZERO, Fr::ONE, -Fr::ONE, Fr::from(u64::MAX), -Fr::from(2u64)]);
    for c in [1, 2, 5, 8, 13, 16, 17, 18] {
        let windows = (SCALAR_BITS + 1).div_ceil(c);
        for scalar in &scalars {
            let bigint = scalar.into_bigint();
            let mut total = Fr::ZERO;
            for w in (0..windows).rev() {
                let d = digit(&bigint, w * c, c);
                assert!(d.unsigned_abs() <= 1 << (c - 1), "c = {c}: digit {d}");
                total = total * Fr::from(1u64 << c) + Fr::from(d);
            }
            assert_eq!(total, *scalar, "c = {c}");
        }
    }
}

/// Each window width gives arkworks' answer, in G1 and G2: the XYZZ-only windows (c < 10)
/// and the batched affine ones.
#[test]
fn equals_arkworks_for_every_window_width() {
    let mut rng = StdRng::seed_from_u64(2);
    let n = 1500;
    let g1 = random_points::<G1Projective>(n, &mut rng);
    let g2 = random_points::<G2Projective>(n, &mut rng);
    let scalars = bigints(&(0..n).map(|_| Fr::rand(&mut rng)).collect::<Vec<_>>());
    let expected1 = G1Projective::msm_bigint(&g1, &scalars);
    let expected2 = G2Projective::msm_bigint(&g2, &scalars);
    for c in [3, 9, 10, 11, 13] {
        assert_eq!(msm_with_window(&g1, &scalars, c), expected1, "G1, c = {c}");
        assert_eq!(msm_with_window(&g2, &scalars, c), expected2, "G2, c = {c}");
    }
    assert_eq!(msm(&g1, &scalars), expected1);
    assert_eq!(msm(&[], &scalars[..0]), G1Projective::ZERO);
}

/// The cases a chord addition cannot make: a bucket meeting its own point (a doubling) or
/// its negation (the identity), identity bases, zero scalars, scalars ±1 (many points in
/// one bucket: the XYZZ fallback), and scalars next to the modulus.
#[test]
fn degenerate_inputs_equal_arkworks() {
    let mut rng = StdRng::seed_from_u64(3);
    let n = 1200;
    let mut bases = random_points::<G1Projective>(n, &mut rng);
    let mut scalars: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut rng)).collect();
    let shared = Fr::rand(&mut rng);
    for i in 0..n {
        match i % 8 {
            // The same point with the same scalar as its neighbour: a doubling in a bucket.
            0 if i > 0 => {
                bases[i] = bases[i - 1];
                scalars[i] = scalars[i - 1];
            }
            // The neighbour's negation: the bucket returns to the identity.
            1 if i > 1 => {
                bases[i] = -bases[i - 1];
                scalars[i] = scalars[i - 1];
            }
            2 => bases[i] = G1Affine::identity(),
            3 => scalars[i] = Fr::ZERO,
            4 => scalars[i] = if i % 16 == 4 { Fr::ONE } else { -Fr::ONE },
            5 => scalars[i] = -Fr::from(i as u64),
            6 => scalars[i] = shared,
            _ => {}
        }
    }
    let scalars = bigints(&scalars);
    let expected = G1Projective::msm_bigint(&bases, &scalars);
    for c in [4, 10, 12, 14] {
        assert_eq!(msm_with_window(&bases, &scalars, c), expected, "c = {c}");
    }

    // Every scalar the same small number: all points in one bucket of each window.
    let ones = vec![Fr::from(3u64).into_bigint(); n];
    assert_eq!(msm_with_window(&bases, &ones, 12), G1Projective::msm_bigint(&bases, &ones));
    // One point many times over: every affine addition in its bucket is a doubling.
    let same = vec![bases[5]; 600];
    let scalars = bigints(&vec![shared; 600]);
    assert_eq!(msm_with_window(&same, &scalars, 11), bases[5] * (shared * Fr::from(600u64)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random sizes, seeds and scalar mixes (full-size, small and negated-small) agree with
    /// arkworks, in G1 and G2.
    #[test]
    fn random_msms_equal_arkworks(n in 1usize..700, seed: u64, small in 0u32..4, c in prop::sample::select(vec![2usize, 7, 10, 11])) {
        let mut rng = StdRng::seed_from_u64(seed);
        let scalars: Vec<Fr> = (0..n)
            .map(|_| match rng.gen_range(0..4) {
                k if k < small => Fr::from(rng.gen_range(0..1u64 << 20)),
                k if k == small => -Fr::from(rng.r#gen::<u32>()),
                _ => Fr::rand(&mut rng),
            })
            .collect();
        let scalars = bigints(&scalars);
        let g1 = random_points::<G1Projective>(n, &mut rng);
        prop_assert_eq!(msm_with_window(&g1, &scalars, c), G1Projective::msm_bigint(&g1, &scalars));
        let g2 = random_points::<G2Projective>(n.min(200), &mut rng);
        prop_assert_eq!(
            msm_with_window(&g2, &scalars[..n.min(200)], c),
            G2Projective::msm_bigint(&g2, &scalars[..n.min(200)])
        );
    }
}

/// The window width grows with the number of points and stays in range.
#[test]
fn window_width_grows_with_size() {
    let widths: Vec<usize> = [1, 100, 10_000, 100_000, 1 << 17, 1 << 21].map(window_bits).to_vec();
    assert!(widths.windows(2).all(|w| w[0] <= w[1]), "{widths:?}");
    assert!(widths.iter().all(|c| (4..=18).contains(c)), "{widths:?}");
}
