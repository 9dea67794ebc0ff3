//! The simulator's in-process chain (`ModeledChain`, revm running the committed contracts):
//! transactions a second, for a cheap transaction (a token mint) and for the costliest kind
//! the marketplace takes (verifying a Groth16 proof: four pairings), each mined in blocks of
//! 100.
//!
//! `cargo bench -p neverust-benches --bench chain`

use alloy_primitives::{Address, U256};
use alloy_sol_types::{SolCall, SolConstructor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use neverust::chain::contracts::{Groth16Verifier, TestToken};
use neverust::proofs::groth16::{fr_to_u256, proof_to_chain};
use neverust::proofs::stand_in::{StandInInputs, StandInProver};
use neverust_sim::evm::{ChainParams, ModeledChain, TxRequest};

const SENDER: Address = Address::repeat_byte(0x5e);
const BLOCK_TXS: u64 = 100;

fn chain() -> ModeledChain {
    ModeledChain::new(ChainParams::default(), &[(SENDER, U256::from(10u128.pow(30)))])
}

fn tx(chain: &ModeledChain, to: Option<Address>, data: Vec<u8>, gas_limit: u64) -> TxRequest {
    TxRequest {
        from: SENDER,
        to,
        data: data.into(),
        value: U256::ZERO,
        nonce: chain.pending_nonce(SENDER),
        gas_limit,
        max_fee_per_gas: 2 * u128::from(chain.next_base_fee()) + 1,
        max_priority_fee_per_gas: 1,
    }
}

fn deploy(chain: &mut ModeledChain, code: Vec<u8>) -> Address {
    let hash = chain.submit(tx(chain, None, code, 10_000_000)).unwrap();
    let next = chain.head().timestamp + 1;
    chain.mine(next);
    chain.receipt(&hash).unwrap().contract_address.unwrap()
}

/// Submits `BLOCK_TXS` transactions calling `to` with `data` and mines them in one block.
fn block_of(chain: &mut ModeledChain, to: Address, data: &[u8], gas_limit: u64) {
    for _ in 0..BLOCK_TXS {
        chain.submit(tx(chain, Some(to), data.to_vec(), gas_limit)).unwrap();
    }
    let next = chain.head().timestamp + 12;
    let block = chain.mine(next);
    assert_eq!(block.transactions.len() as u64, BLOCK_TXS);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("modeled_chain");
    group.throughput(Throughput::Elements(BLOCK_TXS));
    group.sample_size(20);

    let mut mints = chain();
    let token = deploy(
        &mut mints,
        [TestToken::BYTECODE.as_ref(), &TestToken::constructorCall {}.abi_encode()].concat(),
    );
    let mint = TestToken::mintCall { holder: SENDER, amount: U256::from(1) }.abi_encode();
    group.bench_function("token_mint_tx", |b| b.iter(|| block_of(&mut mints, token, &mint, 100_000)));

    let mut proofs = chain();
    let prover = StandInProver::setup(1);
    let key = Groth16Verifier::constructorCall { key: prover.verifier().to_chain() }.abi_encode();
    let verifier = deploy(&mut proofs, [Groth16Verifier::BYTECODE.as_ref(), &key].concat());
    let inputs = StandInInputs { entropy: 1u64.into(), root: 2u64.into(), slot: 3u64.into() };
    let proof = proof_to_chain(&prover.prove(inputs, 1)).into();
    let verify =
        Groth16Verifier::verifyCall { proof, pubSignals: inputs.to_vec().iter().map(fr_to_u256).collect() }
            .abi_encode();
    group.bench_function("groth16_verify_tx", |b| {
        b.iter(|| block_of(&mut proofs, verifier, &verify, 1_000_000))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
