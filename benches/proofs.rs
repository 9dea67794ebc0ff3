//! Storage proofs with the storage-proof circuit: its size, the time to build a proof input
//! from a slot, to prove (Groth16, all cores) and to verify, for 5, 20 and 100 samples.
//!
//! `cargo bench -p neverust-benches --bench proofs` (`NEVERUST_PROOF_SAMPLES=5,20` to leave
//! out the 100-sample circuit, whose setup alone takes minutes). Each size's constraint
//! count, setup time and proving-key size are printed before its timings, and then one
//! period's work of a host selling ten slots, each challenged (input build and proof for each):
//! its wall time and the CPU time the process spent on it, all threads together.
//!
//! `msm/…` compares the prover's multi-scalar multiplication (`neverust::proofs::msm`) with
//! arkworks' on 2^17 random points of G1 and 2^16 of G2 (a 5-sample proof's sizes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use neverust::merkle::poseidon2::{self, CELL_SIZE_BYTES, F, SlotTree};
use neverust::proofs::circuit::Params;
use neverust::proofs::input::{build_input, sampled_blocks};
use neverust::proofs::prover::{Prover, circuit_size};
use neverust_benches::random_bytes;

const BLOCK: usize = 64 << 10;
/// A 1 MiB slot: 16 blocks, 512 cells (Archivist's fixture has this shape).
const SLOT_BLOCKS: usize = 16;
const SLOTS: u64 = 11;
/// The slots a host sells, for the per-period figure.
const HOST_SLOTS: u64 = 10;

/// CPU time this process has spent so far, user and system, all threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn sample_counts() -> Vec<usize> {
    std::env::var("NEVERUST_PROOF_SAMPLES")
        .unwrap_or_else(|_| "5,20,100".into())
        .split(',')
        .map(|n| n.trim().parse().expect("NEVERUST_PROOF_SAMPLES: comma-separated counts"))
        .collect()
}

fn proofs(c: &mut Criterion) {
    // Ten slots of 1 MiB (a host's), and an eleventh slot's root.
    let data: Vec<Vec<u8>> =
        (0..HOST_SLOTS).map(|slot| random_bytes(SLOT_BLOCKS * BLOCK, 11 + slot)).collect();
    let slot_blocks: Vec<BTreeMap<u64, &[u8]>> =
        data.iter().map(|d| d.chunks(BLOCK).enumerate().map(|(i, b)| (i as u64, b)).collect()).collect();
    let trees: Vec<SlotTree> =
        slot_blocks.iter().map(|b| SlotTree::build(b.values().copied(), BLOCK, CELL_SIZE_BYTES)).collect();
    let slot_roots: Vec<F> = (0..SLOTS)
        .map(|slot| match trees.get(slot as usize) {
            Some(tree) => tree.root(),
            None => poseidon2::hash_bytes(&slot.to_le_bytes()),
        })
        .collect();
    let (tree, blocks) = (&trees[3], &slot_blocks[3]);
    let entropy = F::from(1_234_567u64);

    let mut group = c.benchmark_group("proofs");
    group.sample_size(10);
    for samples in sample_counts() {
        let params = Params::ARCHIVIST.with_samples(samples);
        let (constraints, _, witnesses) = circuit_size(params).unwrap();
        let started = Instant::now();
        let prover = Prover::development_setup(params, 1).unwrap();
        let setup = started.elapsed();
        println!(
            "storage-proof circuit, {samples} samples: {constraints} constraints, {witnesses} private \
             variables; development setup {setup:.1?}; proving key {:.1} MiB",
            prover.to_bytes().len() as f64 / (1 << 20) as f64
        );

        // One period of a host with ten slots, each challenged (proof probability 1).
        let (wall, cpu) = (Instant::now(), cpu_time());
        for slot in 0..HOST_SLOTS as usize {
            let needed: BTreeMap<u64, &[u8]> = sampled_blocks(&params, &entropy, &trees[slot])
                .into_iter()
                .map(|b| (b, slot_blocks[slot][&b]))
                .collect();
            let input =
                build_input(&params, entropy, &slot_roots, slot as u64, &trees[slot], &needed).unwrap();
            prover.prove(&input, [7; 32]).unwrap();
        }
        println!(
            "a host's period with {HOST_SLOTS} slots challenged, {samples} samples: {:.1?} wall, {:.1?} CPU",
            wall.elapsed(),
            cpu_time() - cpu
        );

        let build = || {
            let needed: BTreeMap<u64, &[u8]> =
                sampled_blocks(&params, &entropy, tree).into_iter().map(|b| (b, blocks[&b])).collect();
            build_input(&params, entropy, &slot_roots, 3, tree, &needed).unwrap()
        };
        group.bench_function(BenchmarkId::new("input_build", samples), |b| b.iter(build));
        let input = build();
        group.bench_function(BenchmarkId::new("prove", samples), |b| {
            b.iter(|| prover.prove(&input, [7; 32]).unwrap())
        });
        let proof = prover.prove(&input, [7; 32]).unwrap();
        let public = input.public_inputs();
        group.bench_function(BenchmarkId::new("verify", samples), |b| {
            b.iter(|| assert!(prover.verify(&public, &proof)))
        });
    }
    group.finish();
}

fn msm(c: &mut Criterion) {
    use ark_bn254::{Fr, G1Projective, G2Projective};
    use ark_ec::{CurveGroup, VariableBaseMSM};
    use ark_ff::{PrimeField, UniformRand};
    use ark_std::rand::{SeedableRng, rngs::StdRng};
    fn points<G: CurveGroup>(n: usize, rng: &mut StdRng) -> Vec<G::Affine> {
        let step = G::rand(rng);
        let mut point = step;
        let points: Vec<G> = (0..n)
            .map(|_| {
                point += step;
                point
            })
            .collect();
        G::normalize_batch(&points)
    }
    let mut rng = StdRng::seed_from_u64(5);
    let scalars: Vec<_> = (0..1 << 17).map(|_| Fr::rand(&mut rng).into_bigint()).collect();
    let g1 = points::<G1Projective>(1 << 17, &mut rng);
    let g2 = points::<G2Projective>(1 << 16, &mut rng);
    let mut group = c.benchmark_group("msm");
    group.sample_size(10);
    group.bench_function("g1_2^17/ours", |b| b.iter(|| neverust::proofs::msm::msm(&g1, &scalars)));
    group.bench_function("g1_2^17/arkworks", |b| b.iter(|| G1Projective::msm_bigint(&g1, &scalars)));
    group.bench_function("g2_2^16/ours", |b| b.iter(|| neverust::proofs::msm::msm(&g2, &scalars)));
    group.bench_function("g2_2^16/arkworks", |b| b.iter(|| G2Projective::msm_bigint(&g2, &scalars)));
    group.finish();
}

criterion_group!(benches, proofs, msm);
criterion_main!(benches);
