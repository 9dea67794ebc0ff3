//! Shared helpers of the benchmarks (see README.md).

use rand::{RngCore, SeedableRng};

/// `len` bytes of seeded random data: incompressible, and no block repeats (nothing dedupes).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// This machine's single-core SHA-256 throughput: the reference the pipeline figures are
/// compared with. Every benchmark binary runs it, so each run reports both.
pub fn sha256_single_core(c: &mut criterion::Criterion) {
    use sha2::{Digest, Sha256};
    let data = random_bytes(64 << 20, 1);
    let mut group = c.benchmark_group("sha256");
    group.throughput(criterion::Throughput::Bytes(data.len() as u64));
    group.bench_function("single_core_64MiB", |b| b.iter(|| Sha256::digest(&data)));
    group.finish();
}
