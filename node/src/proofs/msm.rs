//! Multi-scalar multiplication (Σ sᵢ·Pᵢ) over BN254's G1 and G2, the bulk of a Groth16
//! proof's cost: Pippenger's bucket method with signed digits, whose buckets are kept in
//! affine coordinates and added in batches that share one field inversion.
//!
//! - **Signed (Booth) digits.** A scalar is cut into windows of `c` bits and each window
//!   read as a digit in `[-2^(c-1), 2^(c-1)]`, computed from the window's bits and the bit
//!   below it alone (no carry runs between windows). A negative digit adds the negated
//!   point, so a window needs `2^(c-1)` buckets instead of `2^c - 1`.
//! - **Batched affine additions.** Adding a point to an affine bucket costs one field
//!   inversion; Montgomery's trick shares one inversion among a whole batch (three
//!   multiplications each), so an addition costs about 5M + 1S, against 8M + 2S for the
//!   mixed extended-Jacobian (XYZZ) additions arkworks' MSM makes. A batch holds at most one
//!   addition per bucket: a point meeting a busy bucket waits for the next batch, and what
//!   cannot be batched (equal or opposite points, and the rare runs of points that all meet
//!   one bucket) is added in XYZZ coordinates instead, which handle every case.
//! - Windows with few buckets (the top one, whose bits run out) are summed in XYZZ
//!   coordinates directly: batches would be too small to pay for their inversion.
//! - With the `parallel` feature, windows are summed on all cores.
//!
//! The result equals arkworks' `VariableBaseMSM::msm_bigint` for every input (the tests
//! compare them on random and degenerate inputs).

use ark_ec::AffineRepr;
use ark_ec::short_weierstrass::{Affine, Bucket, Projective, SWCurveConfig};
use ark_ff::{AdditiveGroup, BigInt, Field, Zero};
#[cfg(feature = "parallel")]
use rayon::prelude::*;

/// Scalars are below BN254's scalar modulus, so below 2^254: windows of `c` bits with signed
/// digits cover them when `windows · c ≥ 255` (the top digit's sign bit is then zero).
const SCALAR_BITS: usize = 254;

/// Windows with fewer buckets than this are summed in XYZZ coordinates.
const MIN_AFFINE_BUCKETS: usize = 512;

/// The most additions one inversion is shared among. Larger batches amortize the inversion
/// better but meet busy buckets more often.
const MAX_BATCH: usize = 1024;

/// Σ scalars[i]·bases[i] over the shorter of the two slices. Identity bases and zero scalars
/// contribute nothing.
pub fn msm<P: SWCurveConfig>(bases: &[Affine<P>], scalars: &[BigInt<4>]) -> Projective<P> {
    let n = bases.len().min(scalars.len());
    let (bases, scalars) = (&bases[..n], &scalars[..n]);
    if n == 0 {
        return Projective::ZERO;
    }
    msm_with_window(bases, scalars, window_bits(n))
}

/// [`msm`] with windows of `c` bits.
fn msm_with_window<P: SWCurveConfig>(bases: &[Affine<P>], scalars: &[BigInt<4>], c: usize) -> Projective<P> {
    let windows = (SCALAR_BITS + 1).div_ceil(c);
    #[cfg(feature = "parallel")]
    let sums: Vec<Projective<P>> =
        (0..windows).into_par_iter().map(|w| window_sum(bases, scalars, w * c, c)).collect();
    #[cfg(not(feature = "parallel"))]
    let sums: Vec<Projective<P>> = (0..windows).map(|w| window_sum(bases, scalars, w * c, c)).collect();
    // Σ 2^(w·c)·sum_w, from the top window down.
    sums.iter().rev().fold(Projective::ZERO, |mut total, sum| {
        for _ in 0..c {
            total.double_in_place();
        }
        total + sum
    })
}

/// The window width that minimizes the work for `n` points: each window costs an addition
/// per point (affine, ~6 multiplications) and two XYZZ additions per bucket (~12 each) to
/// sum its buckets.
fn window_bits(n: usize) -> usize {
    (4..=18)
        .min_by_key(|&c| {
            let windows = (SCALAR_BITS + 1).div_ceil(c);
            windows * (6 * n + 24 * (1usize << (c - 1)))
        })
        .expect("a non-empty range")
}

/// The signed digit of `scalar`'s window starting at bit `start`, `c` bits wide:
/// `b[start-1] + Σ_{k<c-1} 2^k·b[start+k] - 2^(c-1)·b[start+c-1]` (Booth recoding). Over all
/// windows the digits sum, weighted by `2^start`, to the scalar.
fn digit(scalar: &BigInt<4>, start: usize, c: usize) -> i64 {
    // The c + 1 bits from start - 1 up: v = b[start-1] + 2·(the window's bits).
    let v = if start == 0 { bits(scalar, 0, c) << 1 } else { bits(scalar, start - 1, c + 1) };
    ((v + 1) >> 1) as i64 - ((v >> c) << c) as i64
}

/// `len` (at most 32) bits of `scalar` from bit `from` up; bits past the top are zero.
fn bits(scalar: &BigInt<4>, from: usize, len: usize) -> u64 {
    let (limb, shift) = (from / 64, from % 64);
    let limbs = &scalar.0;
    let low = limbs.get(limb).map_or(0, |l| l >> shift);
    let high = match (shift, limbs.get(limb + 1)) {
        (0, _) | (_, None) => 0,
        (_, Some(next)) => next << (64 - shift),
    };
    (low | high) & ((1u64 << len) - 1)
}

/// Σ digit_i·P_i over one window: the buckets, then Σ b·bucket[b].
fn window_sum<P: SWCurveConfig>(
    bases: &[Affine<P>],
    scalars: &[BigInt<4>],
    start: usize,
    c: usize,
) -> Projective<P> {
    // Bits left above `start` bound the digits of the top windows.
    let buckets = 1usize << (c - 1).min(SCALAR_BITS.saturating_sub(start));
    let points =
        bases.iter().zip(scalars).filter(|(base, _)| !base.is_zero()).filter_map(|(base, scalar)| {
            let d = digit(scalar, start, c);
            (d != 0).then(|| ((d.unsigned_abs() - 1) as usize, if d < 0 { -*base } else { *base }))
        });
    if buckets < MIN_AFFINE_BUCKETS {
        let mut sums = vec![Bucket::<P>::ZERO; buckets];
        for (b, point) in points {
            sums[b] += &point;
        }
        return weighted_sum(buckets, |b| (sums[b], None)).into();
    }
    let mut acc = AffineBuckets::new(buckets);
    for (b, point) in points {
        acc.add(b, point);
    }
    acc.finish()
}

/// Σ (b + 1)·bucket(b) for b < count, by running sums from the top bucket down. `bucket`
/// gives a bucket's XYZZ part and, optionally, an affine part.
fn weighted_sum<P: SWCurveConfig>(
    count: usize,
    mut bucket: impl FnMut(usize) -> (Bucket<P>, Option<Affine<P>>),
) -> Bucket<P> {
    let (mut running, mut total) = (Bucket::<P>::ZERO, Bucket::<P>::ZERO);
    for b in (0..count).rev() {
        let (xyzz, affine) = bucket(b);
        if let Some(point) = affine {
            running += &point;
        }
        running += &xyzz;
        total += &running;
    }
    total
}

/// A window's buckets in affine coordinates, filled through batches of additions.
struct AffineBuckets<P: SWCurveConfig> {
    /// Each bucket's sum so far (the identity while empty).
    sums: Vec<Affine<P>>,
    /// Buckets with an addition in the current batch.
    busy: Vec<bool>,
    /// The current batch: (bucket, point to add to it).
    batch: Vec<(usize, Affine<P>)>,
    /// Points that met a busy bucket, for a later batch.
    waiting: Vec<(usize, Affine<P>)>,
    /// Points added in XYZZ coordinates instead, by bucket, summed at the end.
    xyzz: Vec<(usize, Affine<P>)>,
    batch_size: usize,
    /// Scratch for the batch inversion.
    denominators: Vec<P::BaseField>,
    products: Vec<P::BaseField>,
}

impl<P: SWCurveConfig> AffineBuckets<P> {
    fn new(buckets: usize) -> Self {
        // A batch of k additions among B buckets meets a busy bucket about k/2B of the time.
        let batch_size = (buckets / 8).clamp(16, MAX_BATCH);
        AffineBuckets {
            sums: vec![Affine::identity(); buckets],
            busy: vec![false; buckets],
            batch: Vec::with_capacity(batch_size),
            waiting: Vec::new(),
            xyzz: Vec::new(),
            batch_size,
            denominators: Vec::with_capacity(batch_size),
            products: Vec::with_capacity(batch_size),
        }
    }

    fn add(&mut self, b: usize, point: Affine<P>) {
        if self.busy[b] {
            self.waiting.push((b, point));
        } else if self.sums[b].is_zero() {
            self.sums[b] = point;
        } else {
            self.busy[b] = true;
            self.batch.push((b, point));
            if self.batch.len() == self.batch_size {
                self.flush();
            }
        }
    }

    /// Makes the batch's additions, sharing one inversion.
    fn flush(&mut self) {
        self.denominators.clear();
        for &(b, point) in &self.batch {
            let sum = &self.sums[b];
            let dx = point.x - sum.x;
            if dx.is_zero() {
                // Equal or opposite points: not an affine chord addition.
                self.xyzz.push((b, point));
                self.denominators.push(P::BaseField::ONE);
            } else {
                self.denominators.push(dx);
            }
        }
        invert_all(&mut self.denominators, &mut self.products);
        for (&(b, point), inverse) in self.batch.iter().zip(&self.denominators) {
            self.busy[b] = false;
            let sum = self.sums[b];
            if point.x == sum.x {
                continue;
            }
            let lambda = (point.y - sum.y) * inverse;
            let x = lambda.square() - sum.x - point.x;
            let y = lambda * (sum.x - x) - sum.y;
            self.sums[b] = Affine::new_unchecked(x, y);
        }
        self.batch.clear();
    }

    fn finish(mut self) -> Projective<P> {
        self.flush();
        while !self.waiting.is_empty() {
            let waiting = std::mem::take(&mut self.waiting);
            let before = waiting.len();
            for (b, point) in waiting {
                self.add(b, point);
            }
            self.flush();
            // Points that keep meeting the same few buckets (small scalars share their
            // digits) are not worth more batches of a handful of additions.
            if self.waiting.len() * 2 > before {
                self.xyzz.append(&mut self.waiting);
            }
        }
        let mut extra = Vec::new();
        if !self.xyzz.is_empty() {
            extra = vec![Bucket::<P>::ZERO; self.sums.len()];
            for &(b, point) in &self.xyzz {
                extra[b] += &point;
            }
        }
        let sums = &self.sums;
        weighted_sum(sums.len(), |b| (extra.get(b).copied().unwrap_or(Bucket::ZERO), Some(sums[b]))).into()
    }
}

/// Replaces each element (none zero) by its inverse: one inversion and three
/// multiplications per element (Montgomery's trick). `products` is scratch space.
fn invert_all<F: Field>(values: &mut [F], products: &mut Vec<F>) {
    products.clear();
    let mut product = F::ONE;
    for value in values.iter() {
        product *= value;
        products.push(product);
    }
    let Some(mut inverse) = product.inverse() else {
        unreachable!("a product of non-zero field elements is non-zero")
    };
    for k in (0..values.len()).rev() {
        let before = if k == 0 { F::ONE } else { products[k - 1] };
        let value = values[k];
        values[k] = inverse * before;
        inverse *= value;
    }
}

#[cfg(test)]
mod tests;
