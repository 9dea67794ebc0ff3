use super::*;
use alloy_sol_types::{SolCall, SolConstructor, SolEvent, SolInterface};
use neverust::chain::contracts::TestToken;

const ALICE: Address = Address::repeat_byte(0xa1);
const BOB: Address = Address::repeat_byte(0xb0);
const ETHER: u128 = 1_000_000_000_000_000_000;

fn chain() -> ModeledChain {
    ModeledChain::new(
        ChainParams::default(),
        &[(ALICE, U256::from(100 * ETHER)), (BOB, U256::from(100 * ETHER))],
    )
}

fn tx(chain: &ModeledChain, from: Address, to: Option<Address>, data: Vec<u8>) -> TxRequest {
    TxRequest {
        from,
        to,
        data: data.into(),
        value: U256::ZERO,
        nonce: chain.pending_nonce(from),
        gas_limit: 3_000_000,
        max_fee_per_gas: 2 * u128::from(chain.next_base_fee()),
        max_priority_fee_per_gas: 0,
    }
}

fn deploy_token(chain: &mut ModeledChain) -> Address {
    let code = [TestToken::BYTECODE.as_ref(), &TestToken::constructorCall {}.abi_encode()].concat();
    let hash = chain.submit(tx(chain, ALICE, None, code)).unwrap();
    let next = chain.head().timestamp + 1;
    chain.mine(next);
    let receipt = chain.receipt(&hash).expect("mined");
    assert!(receipt.success, "{receipt:?}");
    receipt.contract_address.expect("created")
}

fn balance_of(chain: &mut ModeledChain, token: Address, who: Address) -> U256 {
    match chain.call(ALICE, token, TestToken::balanceOfCall { account: who }.abi_encode().into()) {
        CallOutcome::Success(data) => TestToken::balanceOfCall::abi_decode_returns(&data).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// A contract deployed and called through the pool: state, logs, gas charged.
#[test]
fn deploys_calls_and_charges_gas() {
    let mut chain = chain();
    let token = deploy_token(&mut chain);
    assert_eq!(token, ALICE.create(0), "addresses follow the sender's nonce, as on any EVM chain");
    let before = chain.balance(ALICE);
    let mint = TestToken::mintCall { holder: BOB, amount: U256::from(500) }.abi_encode();
    let hash = chain.submit(tx(&chain, ALICE, Some(token), mint)).unwrap();
    let block = chain.mine(chain.head().timestamp + 12).clone();
    assert_eq!(block.transactions, vec![hash]);
    let receipt = chain.receipt(&hash).unwrap().clone();
    assert!(receipt.success);
    let paid = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert!(paid > U256::ZERO);
    assert_eq!(chain.balance(ALICE), before - paid, "the sender pays gas used at the effective price");
    let transfer = TestToken::Transfer::decode_log_data(&receipt.logs[0].data).unwrap();
    assert_eq!((transfer.to, transfer.value), (BOB, U256::from(500)));
    assert_eq!(balance_of(&mut chain, token, BOB), U256::from(500));
    assert_eq!(chain.logs(0, chain.head().number).len(), 1);
}

/// A reverting transaction is mined, charged, and leaves its revert data.
#[test]
fn reverts_are_mined_with_their_data() {
    let mut chain = chain();
    let token = deploy_token(&mut chain);
    let transfer = TestToken::transferCall { to: ALICE, value: U256::from(1) }.abi_encode();
    let hash = chain.submit(tx(&chain, BOB, Some(token), transfer.clone())).unwrap();
    chain.mine(chain.head().timestamp + 1);
    let receipt = chain.receipt(&hash).unwrap();
    assert!(!receipt.success);
    let error = TestToken::TestTokenErrors::abi_decode(&receipt.output).unwrap();
    assert!(matches!(error, TestToken::TestTokenErrors::ERC20InsufficientBalance(_)));
    assert_eq!(chain.nonce(BOB), 1, "a reverted transaction still uses its nonce");
    let estimate = chain.estimate_gas(&tx(&chain, BOB, Some(token), transfer));
    assert!(matches!(estimate, Err(CallOutcome::Revert(_))));
}

/// The pool's checks at submission, replacement, and nonce gaps.
#[test]
fn pool_checks_replaces_and_waits_for_gaps() {
    let mut chain = chain();
    let to = Some(BOB);
    let first = tx(&chain, ALICE, to, vec![]);
    chain.submit(first.clone()).unwrap();
    // A replacement needs 10 % more on both fees.
    let same = TxRequest { gas_limit: 21_000, ..first.clone() };
    assert_eq!(chain.submit(same), Err(PoolError::ReplacementUnderpriced));
    let bumped = TxRequest {
        max_fee_per_gas: first.max_fee_per_gas * 2,
        max_priority_fee_per_gas: 0,
        ..first.clone()
    };
    let bumped_hash = chain.submit(bumped).unwrap();
    assert_eq!(chain.pending(), 1);
    // A gap: nonce 2 waits until nonce 1 arrives.
    let gap = TxRequest { nonce: 2, ..first.clone() };
    chain.submit(gap).unwrap();
    chain.mine(chain.head().timestamp + 1);
    assert_eq!(chain.nonce(ALICE), 1);
    assert!(chain.receipt(&bumped_hash).is_some());
    assert_eq!(chain.pending(), 1, "nonce 2 waits for nonce 1");
    chain.submit(TxRequest { nonce: 1, ..first.clone() }).unwrap();
    chain.mine(chain.head().timestamp + 1);
    assert_eq!(chain.nonce(ALICE), 3, "both ran, in nonce order");
    assert!(matches!(
        chain.submit(TxRequest { nonce: 0, ..first.clone() }),
        Err(PoolError::NonceTooLow { .. })
    ));
    let cheap = TxRequest { nonce: 3, max_fee_per_gas: 1, ..first.clone() };
    assert!(matches!(chain.submit(cheap), Err(PoolError::FeeCapTooLow { .. })));
    let rich = TxRequest { nonce: 3, value: U256::from(1_000 * ETHER), ..first };
    assert!(matches!(chain.submit(rich), Err(PoolError::InsufficientFunds { .. })));
}

/// Base fees follow EIP-1559: an empty block lowers the next one's by 1/8.
#[test]
fn base_fee_follows_eip_1559() {
    let mut chain = chain();
    let genesis = chain.params().genesis_base_fee;
    chain.mine_many(2, 1);
    assert_eq!(chain.block(1).unwrap().base_fee, genesis - genesis / 8);
    let full = Block { gas_used: ANVIL_BLOCK_GAS_LIMIT, base_fee: 800, ..chain.head().clone() };
    assert_eq!(next_base_fee(&full, ANVIL_BLOCK_GAS_LIMIT), 900);
    let half = Block { gas_used: ANVIL_BLOCK_GAS_LIMIT / 2, ..full };
    assert_eq!(next_base_fee(&half, ANVIL_BLOCK_GAS_LIMIT), 800);
}

/// Block hashes reach BLOCKHASH for the last 256 blocks, and calls see the head block.
#[test]
fn blocks_are_chained_and_distinct() {
    let mut chain = chain();
    chain.mine_many(3, 12);
    let hashes: Vec<B256> = (0..=3).map(|n| chain.block(n).unwrap().hash).collect();
    let mut unique = hashes.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4);
    assert_eq!(chain.head().timestamp, ChainParams::default().genesis_timestamp + 36);
}
