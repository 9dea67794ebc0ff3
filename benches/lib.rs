//! Shared helpers of the benchmarks (see README.md).

use rand::{RngCore, SeedableRng};

/// `len` bytes of seeded random data: incompressible, and no block repeats (nothing dedupes).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}
