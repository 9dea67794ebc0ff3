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

/// Prints the 50th, 95th and 99th percentiles of `samples` in milliseconds.
pub fn report_percentiles(name: &str, samples: &mut [std::time::Duration]) {
    if samples.is_empty() {
        return;
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms over {} samples",
        ms(at(0.50)),
        ms(at(0.95)),
        ms(at(0.99)),
        samples.len()
    );
}
