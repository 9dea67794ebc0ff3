//! Erasure coding and slot trees, each beside the raw library (or primitive) it is built on,
//! measured in the same run.
//!
//! `cargo bench -p neverust-benches --bench durability`
//!
//! - `ec_encode/<K>+<M>/<block>`: parity of a whole dataset column by column — `raw_simd` and
//!   `raw_erasure` call `reed-solomon-simd` and `reed-solomon-erasure` directly, `coder` is
//!   `neverust::erasure::Coder` (the library the node uses, plus its checks and copies).
//!   Throughput counts the data bytes encoded.
//! - `ec_decode/<K>+<M>/<block>`: rebuilding M lost data blocks in every column, same three.
//!   Throughput counts the data bytes of the columns.
//! - `poseidon2/cell_hash`: one 2 KiB cell digest (the raw primitive of slot trees);
//!   `poseidon2/slot_build_1MiB`: a slot tree over 16 blocks of 64 KiB (cells, block trees,
//!   slot tree). Throughput in bytes, so the two compare directly.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use neverust::erasure::{Coder, Params};
use neverust::merkle::poseidon2::{CELL_SIZE_BYTES, SlotTree, hash_bytes};
use neverust_benches::random_bytes;
use reed_solomon_erasure::galois_8::ReedSolomon;

/// Data bytes per measured dataset: enough columns that per-call overheads show.
const DATASET_BYTES: usize = 24 << 20;

fn columns(k: usize, block: usize) -> Vec<Vec<Vec<u8>>> {
    let steps = DATASET_BYTES / (k * block);
    let data = random_bytes(steps * k * block, 3);
    data.chunks(k * block).map(|column| column.chunks(block).map(<[u8]>::to_vec).collect()).collect()
}

const SHAPES: [(usize, usize); 2] = [(3, 2), (10, 6)];
const BLOCKS: [usize; 2] = [64 << 10, 512 << 10];

fn ec_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ec_encode");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for (k, m) in SHAPES {
        for block in BLOCKS {
            let cols = columns(k, block);
            let shape = format!("{k}+{m}/{}KiB", block >> 10);
            group.throughput(Throughput::Bytes((cols.len() * k * block) as u64));
            group.bench_function(BenchmarkId::new("raw_simd", &shape), |b| {
                let mut encoder = reed_solomon_simd::ReedSolomonEncoder::new(k, m, block).unwrap();
                b.iter(|| {
                    for column in &cols {
                        encoder.reset(k, m, block).unwrap();
                        for shard in column {
                            encoder.add_original_shard(shard).unwrap();
                        }
                        std::hint::black_box(encoder.encode().unwrap().recovery(0));
                    }
                })
            });
            group.bench_function(BenchmarkId::new("raw_erasure", &shape), |b| {
                let rs = ReedSolomon::new(k, m).unwrap();
                let mut parity = vec![vec![0u8; block]; m];
                b.iter(|| {
                    for column in &cols {
                        rs.encode_sep(column, &mut parity).unwrap();
                    }
                })
            });
            group.bench_function(BenchmarkId::new("coder", &shape), |b| {
                let mut coder = Coder::new(Params::new(k as u32, m as u32).unwrap(), block).unwrap();
                b.iter(|| {
                    for column in &cols {
                        std::hint::black_box(coder.encode(column).unwrap());
                    }
                })
            });
        }
    }
    group.finish();
}

fn ec_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ec_decode");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for (k, m) in SHAPES {
        for block in BLOCKS {
            let cols = columns(k, block);
            let shape = format!("{k}+{m}/{}KiB", block >> 10);
            let mut coder = Coder::new(Params::new(k as u32, m as u32).unwrap(), block).unwrap();
            // Full columns, data then parity; the first M data blocks of each are lost.
            let full: Vec<Vec<Vec<u8>>> = cols
                .iter()
                .map(|column| {
                    let mut all = column.clone();
                    all.extend(coder.encode(column).unwrap());
                    all
                })
                .collect();
            group.throughput(Throughput::Bytes((cols.len() * k * block) as u64));
            group.bench_function(BenchmarkId::new("raw_simd", &shape), |b| {
                let mut decoder = reed_solomon_simd::ReedSolomonDecoder::new(k, m, block).unwrap();
                b.iter(|| {
                    for column in &full {
                        decoder.reset(k, m, block).unwrap();
                        for (row, shard) in column.iter().enumerate().skip(m) {
                            if row < k {
                                decoder.add_original_shard(row, shard).unwrap();
                            } else {
                                decoder.add_recovery_shard(row - k, shard).unwrap();
                            }
                        }
                        std::hint::black_box(decoder.decode().unwrap().restored_original(0));
                    }
                })
            });
            group.bench_function(BenchmarkId::new("raw_erasure", &shape), |b| {
                let rs = ReedSolomon::new(k, m).unwrap();
                b.iter(|| {
                    for column in &full {
                        let mut shards = lose_first(column, m);
                        rs.reconstruct_data(&mut shards).unwrap();
                        std::hint::black_box(&shards);
                    }
                })
            });
            group.bench_function(BenchmarkId::new("coder", &shape), |b| {
                b.iter(|| {
                    for column in &full {
                        let mut shards = lose_first(column, m);
                        coder.reconstruct(&mut shards).unwrap();
                        std::hint::black_box(&shards);
                    }
                })
            });
        }
    }
    group.finish();
}

/// A column with its first `m` blocks lost.
fn lose_first(column: &[Vec<u8>], m: usize) -> Vec<Option<Vec<u8>>> {
    column.iter().enumerate().map(|(row, shard)| (row >= m).then(|| shard.clone())).collect()
}

fn poseidon2(c: &mut Criterion) {
    let mut group = c.benchmark_group("poseidon2");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    let cell = random_bytes(CELL_SIZE_BYTES, 4);
    group.throughput(Throughput::Bytes(CELL_SIZE_BYTES as u64));
    group.bench_function("cell_hash", |b| b.iter(|| hash_bytes(&cell)));
    let block = 64 << 10;
    let slot = random_bytes(16 * block, 5);
    group.throughput(Throughput::Bytes(slot.len() as u64));
    group.bench_function("slot_build_1MiB", |b| {
        b.iter(|| SlotTree::build(slot.chunks(block), block, CELL_SIZE_BYTES).root())
    });
    group.finish();
}

criterion_group!(benches, ec_encode, ec_decode, poseidon2);
criterion_main!(benches);
