//! Chunk + hash + store throughput, beside the machine's single-core SHA-256 throughput.
//!
//! `cargo bench -p neverust-benches --bench store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use neverust::dataset::{Datasets, UploadMeta};
use neverust::metrics::Metrics;
use neverust::runtime::Compute;
use neverust::store::{self, LmdbStore, SharedStore};
use neverust_benches::{random_bytes, sha256_single_core};

const DATA_BYTES: usize = 256 << 20;
const BLOCK_BYTES: usize = 64 << 10;

/// Uploads `data` (in 1 MiB pieces, as an HTTP body arrives) and deletes it, timing the upload.
fn upload_time(
    runtime: &tokio::runtime::Runtime,
    datasets: &Datasets,
    data: &Bytes,
    iterations: u64,
) -> Duration {
    runtime.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iterations {
            let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
                .step_by(1 << 20)
                .map(|at| Ok(data.slice(at..(at + (1 << 20)).min(data.len()))))
                .collect();
            let started = Instant::now();
            let dataset =
                datasets.upload(futures::stream::iter(pieces), UploadMeta::default()).await.unwrap();
            total += started.elapsed();
            datasets.delete(dataset.cid).await.unwrap();
        }
        total
    })
}

fn chunk_hash_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data = Bytes::from(random_bytes(DATA_BYTES, 2));
    let dir = tempfile::tempdir().unwrap();
    let lmdb: SharedStore = Arc::new(LmdbStore::open(dir.path(), 4 << 30).unwrap());
    let memory = store::memory(4 << 30);
    let mut group = c.benchmark_group("chunk_hash_store");
    group
        .throughput(Throughput::Bytes(DATA_BYTES as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (name, store, compute) in
        [("lmdb_256MiB", lmdb, Compute::Pool), ("memory_256MiB", memory, Compute::Pool)]
    {
        let datasets = Datasets::new(store, compute, BLOCK_BYTES, Arc::new(Metrics::new()));
        group.bench_function(name, |b| b.iter_custom(|n| upload_time(&runtime, &datasets, &data, n)));
    }
    group.finish();
}

criterion_group!(benches, sha256_single_core, chunk_hash_store);
criterion_main!(benches);
