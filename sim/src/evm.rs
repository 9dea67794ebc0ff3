//! `ModeledChain`: an EVM chain in one process. The execution is real: revm runs the same
//! compiled contracts production deploys (`contracts/artifacts/`). The chain around it is
//! modeled: the caller decides when a block is made and what its timestamp is (the
//! simulator's clock, or a test's time jumps), transactions wait in a pool in arrival order,
//! block hashes are a hash of the block's number, timestamp, parent and transactions (not
//! Ethereum's header hash), and transactions carry no signatures (the sender is given).
//!
//! What follows Anvil, so that a run over this model and a run over a real Anvil agree:
//! chain id, the Prague rules (revm's), EIP-1559 base fees from block to block, gas charged
//! to the sender (the base fee burned, the tip to the block's beneficiary), the pool's
//! checks at submission (nonce not below the account's, enough balance for the gas limit at
//! the fee cap, a fee cap not below the base fee, replacement only with fees 10 % higher),
//! transactions mined in arrival order while they fit in the block's gas limit, nonce gaps
//! waiting in the pool, and calls (`eth_call`) evaluated in the environment of the head block.

pub mod anvil;

use std::collections::BTreeMap;

use revm::context::result::{ExecutionResult, Output};
use revm::context::{BlockEnv, Context, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::handler::{MainnetContext, MainnetEvm};
use revm::primitives::hardfork::SpecId;
use revm::primitives::{Address, B256, Bytes, Log, TxKind, U256, keccak256};
use revm::state::AccountInfo;
use revm::{DatabaseRef, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};

type Db = CacheDB<EmptyDB>;
type Evm = MainnetEvm<MainnetContext<Db>>;

/// Anvil's defaults where the chain follows them.
pub const ANVIL_CHAIN_ID: u64 = 31337;
pub const ANVIL_BLOCK_GAS_LIMIT: u64 = 30_000_000;
/// EIP-1559: the base fee moves by at most 1/8 a block, towards half-full blocks.
const BASE_FEE_CHANGE_DENOMINATOR: u128 = 8;
const ELASTICITY_MULTIPLIER: u64 = 2;

/// The chain's fixed parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainParams {
    pub chain_id: u64,
    pub genesis_timestamp: u64,
    pub block_gas_limit: u64,
    /// The genesis block's base fee, in wei.
    pub genesis_base_fee: u64,
}

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            chain_id: ANVIL_CHAIN_ID,
            genesis_timestamp: 1_700_000_000,
            block_gas_limit: ANVIL_BLOCK_GAS_LIMIT,
            genesis_base_fee: 1_000_000_000,
        }
    }
}

/// A transaction as submitted: the sender is given, nothing is signed.
#[derive(Clone, Debug, PartialEq)]
pub struct TxRequest {
    pub from: Address,
    /// `None` creates a contract from `data`.
    pub to: Option<Address>,
    pub data: Bytes,
    pub value: U256,
    pub nonce: u64,
    pub gas_limit: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// What a mined transaction left.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub tx_hash: B256,
    pub block_number: u64,
    pub from: Address,
    pub to: Option<Address>,
    pub contract_address: Option<Address>,
    pub success: bool,
    pub gas_used: u64,
    pub effective_gas_price: u128,
    pub logs: Vec<Log>,
    /// The return data, or the revert data of a reverted transaction.
    pub output: Bytes,
}

/// A mined block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Block {
    pub number: u64,
    pub timestamp: u64,
    pub hash: B256,
    pub base_fee: u64,
    pub gas_used: u64,
    pub transactions: Vec<B256>,
}

/// The result of a call that changes nothing (`eth_call`).
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    Success(Bytes),
    /// Reverted with this data (a custom error, `Error(string)`, `Panic(uint256)`, or nothing).
    Revert(Bytes),
    /// Stopped by the EVM itself: out of gas, an invalid opcode...
    Halt(String),
}

/// Why the pool refused a transaction at submission.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PoolError {
    #[error("nonce too low: the account's next nonce is {expected}, got {got}")]
    NonceTooLow { expected: u64, got: u64 },
    #[error("insufficient funds for gas * price + value: have {have}, want {want}")]
    InsufficientFunds { have: U256, want: U256 },
    #[error("max fee per gas {max_fee} is below the block's base fee {base_fee}")]
    FeeCapTooLow { max_fee: u128, base_fee: u64 },
    #[error("priority fee above the fee cap")]
    TipAboveFeeCap,
    #[error("gas limit {gas_limit} above the block gas limit {block_gas_limit}")]
    GasLimitTooHigh { gas_limit: u64, block_gas_limit: u64 },
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    #[error("intrinsic gas too low")]
    IntrinsicGasTooLow,
}

/// An EVM chain whose blocks the caller makes.
pub struct ModeledChain {
    params: ChainParams,
    /// The state. An EVM is built over it for each block and each call (revm's EVM is not
    /// `Send`; the state is, and building is cheap).
    db: Db,
    blocks: Vec<Block>,
    receipts: BTreeMap<B256, Receipt>,
    /// Submitted, not mined yet, in arrival order.
    pool: Vec<(B256, TxRequest)>,
}

impl ModeledChain {
    /// A chain with only its genesis block, where `alloc` holds ether.
    pub fn new(params: ChainParams, alloc: &[(Address, U256)]) -> ModeledChain {
        let mut db = Db::default();
        for (address, balance) in alloc {
            db.insert_account_info(*address, AccountInfo::default().with_balance(*balance));
        }
        let genesis = Block {
            number: 0,
            timestamp: params.genesis_timestamp,
            hash: keccak256(format!("genesis {} {}", params.chain_id, params.genesis_timestamp)),
            base_fee: params.genesis_base_fee,
            gas_used: 0,
            transactions: Vec::new(),
        };
        let mut chain =
            ModeledChain { params, db, blocks: Vec::new(), receipts: BTreeMap::new(), pool: Vec::new() };
        chain.append(genesis);
        chain
    }

    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    pub fn head(&self) -> &Block {
        self.blocks.last().expect("the genesis block is always there")
    }

    pub fn block(&self, number: u64) -> Option<&Block> {
        self.blocks.get(usize::try_from(number).ok()?)
    }

    pub fn receipt(&self, tx_hash: &B256) -> Option<&Receipt> {
        self.receipts.get(tx_hash)
    }

    /// Transactions waiting in the pool.
    pub fn pending(&self) -> usize {
        self.pool.len()
    }

    /// The base fee the next block will have.
    pub fn next_base_fee(&self) -> u64 {
        next_base_fee(self.head(), self.params.block_gas_limit)
    }

    pub fn balance(&self, who: Address) -> U256 {
        self.account(who).map_or(U256::ZERO, |a| a.balance)
    }

    /// The account's nonce in the head block's state.
    pub fn nonce(&self, who: Address) -> u64 {
        self.account(who).map_or(0, |a| a.nonce)
    }

    /// The nonce a new transaction from `who` should take: past its pooled transactions.
    pub fn pending_nonce(&self, who: Address) -> u64 {
        let mut next = self.nonce(who);
        while self.pool.iter().any(|(_, tx)| tx.from == who && tx.nonce == next) {
            next += 1;
        }
        next
    }

    /// Sets an account's ether (Anvil's `anvil_setBalance`).
    pub fn set_balance(&mut self, who: Address, balance: U256) {
        let db = &mut self.db;
        let info = db.basic_ref(who).ok().flatten().unwrap_or_default().with_balance(balance);
        db.insert_account_info(who, info);
    }

    /// The code deployed at `at` (empty when none).
    pub fn code(&self, at: Address) -> Bytes {
        let db = &self.db;
        let Some(info) = db.basic_ref(at).ok().flatten() else { return Bytes::new() };
        let code = match info.code {
            Some(code) if !code.is_empty() => Some(code),
            _ => db.code_by_hash_ref(info.code_hash).ok(),
        };
        code.map(|c| c.original_bytes()).unwrap_or_default()
    }

    fn account(&self, who: Address) -> Option<AccountInfo> {
        self.db.basic_ref(who).ok().flatten()
    }

    /// Checks a transaction as a pool would and queues it; a transaction with the sender
    /// and nonce of a pooled one replaces it when its fees are at least 10 % higher.
    pub fn submit(&mut self, tx: TxRequest) -> Result<B256, PoolError> {
        let account_nonce = self.nonce(tx.from);
        if tx.nonce < account_nonce {
            return Err(PoolError::NonceTooLow { expected: account_nonce, got: tx.nonce });
        }
        if tx.gas_limit > self.params.block_gas_limit {
            return Err(PoolError::GasLimitTooHigh {
                gas_limit: tx.gas_limit,
                block_gas_limit: self.params.block_gas_limit,
            });
        }
        if tx.gas_limit < 21_000 {
            return Err(PoolError::IntrinsicGasTooLow);
        }
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas {
            return Err(PoolError::TipAboveFeeCap);
        }
        let base_fee = self.next_base_fee();
        if tx.max_fee_per_gas < u128::from(base_fee) {
            return Err(PoolError::FeeCapTooLow { max_fee: tx.max_fee_per_gas, base_fee });
        }
        let want = U256::from(tx.gas_limit) * U256::from(tx.max_fee_per_gas) + tx.value;
        let have = self.balance(tx.from);
        if have < want {
            return Err(PoolError::InsufficientFunds { have, want });
        }
        let hash = tx_hash(&tx, self.params.chain_id);
        if let Some(slot) = self.pool.iter_mut().find(|(_, p)| p.from == tx.from && p.nonce == tx.nonce) {
            let bumped = |old: u128, new: u128| new * 10 >= old * 11;
            if !bumped(slot.1.max_fee_per_gas, tx.max_fee_per_gas)
                || !bumped(slot.1.max_priority_fee_per_gas, tx.max_priority_fee_per_gas)
            {
                return Err(PoolError::ReplacementUnderpriced);
            }
            *slot = (hash, tx);
        } else {
            self.pool.push((hash, tx));
        }
        Ok(hash)
    }

    /// Drops a pooled transaction (a pool that forgets it), as Anvil's
    /// `anvil_dropTransaction`; true when it was there.
    pub fn drop_transaction(&mut self, hash: &B256) -> bool {
        let before = self.pool.len();
        self.pool.retain(|(h, _)| h != hash);
        self.pool.len() != before
    }

    /// Makes the next block at `timestamp` (after the head's): pooled transactions run in
    /// arrival order, each once its sender's nonce reaches it and while the block has gas
    /// left; the others stay in the pool.
    pub fn mine(&mut self, timestamp: u64) -> &Block {
        let head = self.head().clone();
        assert!(
            timestamp > head.timestamp,
            "block timestamps must increase: {timestamp} after {}",
            head.timestamp
        );
        let number = head.number + 1;
        let base_fee = next_base_fee(&head, self.params.block_gas_limit);
        let mut evm = self.build(self.block_env(number, timestamp, base_fee));
        let mut gas_used = 0u64;
        let mut transactions = Vec::new();
        loop {
            let state = &evm.ctx.journaled_state.database;
            let next = self.pool.iter().position(|(_, tx)| {
                tx.nonce == nonce_in(state, tx.from)
                    && gas_used + tx.gas_limit <= self.params.block_gas_limit
                    && tx.max_fee_per_gas >= u128::from(base_fee)
            });
            let Some(index) = next else { break };
            let (hash, tx) = self.pool.remove(index);
            // None: no longer valid at execution (its balance spent by an earlier one): dropped.
            if let Some(receipt) = execute(&mut evm, self.params.chain_id, &tx, hash, number, base_fee) {
                gas_used += receipt.gas_used;
                transactions.push(hash);
                self.receipts.insert(hash, receipt);
            }
        }
        self.restore(evm);
        let hash = block_hash(&head.hash, number, timestamp, &transactions);
        self.append(Block { number, timestamp, hash, base_fee, gas_used, transactions });
        self.head()
    }

    /// Mines `count` blocks without waiting transactions in mind, `interval` seconds apart
    /// (Anvil's `anvil_mine`).
    pub fn mine_many(&mut self, count: u64, interval: u64) {
        for _ in 0..count {
            let next = self.head().timestamp + interval;
            self.mine(next);
        }
    }

    /// Runs a call against the head block's state and environment, changing nothing.
    pub fn call(&mut self, from: Address, to: Address, data: Bytes) -> CallOutcome {
        let head = self.head().clone();
        let env = self.block_env(head.number, head.timestamp, 0);
        self.call_in(env, from, to, data)
    }

    /// Runs a call against the head block's state in the environment of the next block, made
    /// at `timestamp`: what a transaction sees when it runs first in that block.
    pub fn call_in_next_block(
        &mut self,
        timestamp: u64,
        from: Address,
        to: Address,
        data: Bytes,
    ) -> CallOutcome {
        let number = self.head().number + 1;
        let env = self.block_env(number, timestamp, 0);
        self.call_in(env, from, to, data)
    }

    fn call_in(&mut self, env: BlockEnv, from: Address, to: Address, data: Bytes) -> CallOutcome {
        match self.dry_run(env, from, TxKind::Call(to), data, U256::ZERO) {
            Ok(result) => outcome(result),
            Err(e) => CallOutcome::Halt(e),
        }
    }

    /// The gas `tx` needs in the head block's state: what it spends before refunds, plus
    /// the 1/64 of every call's gas the EVM holds back, plus a margin; or why it fails.
    pub fn estimate_gas(&mut self, tx: &TxRequest) -> Result<u64, CallOutcome> {
        let head = self.head().clone();
        let block = self.block_env(head.number, head.timestamp, 0);
        let kind = tx.to.map_or(TxKind::Create, TxKind::Call);
        match self.dry_run(block, tx.from, kind, tx.data.clone(), tx.value) {
            Ok(ExecutionResult::Success { gas, .. }) => {
                let spent = gas.total_gas_spent();
                Ok(spent + spent / 63 + 2_300)
            }
            Ok(other) => Err(outcome(other)),
            Err(e) => Err(CallOutcome::Halt(e)),
        }
    }

    /// Runs a transaction in `env` on the current state without keeping its changes: free
    /// of charge, with the block's whole gas limit.
    fn dry_run(
        &mut self,
        env: BlockEnv,
        from: Address,
        kind: TxKind,
        data: Bytes,
        value: U256,
    ) -> Result<ExecutionResult, String> {
        let tx = TxEnv::builder()
            .caller(from)
            .kind(kind)
            .data(data)
            .value(value)
            .nonce(self.nonce(from))
            .gas_limit(self.params.block_gas_limit)
            .gas_price(0)
            .chain_id(Some(self.params.chain_id))
            .build_fill();
        let mut evm = self.build(env);
        let result = evm.transact(tx);
        self.restore(evm);
        result.map(|r| r.result).map_err(|e| e.to_string())
    }

    /// Logs of blocks `from..=to`, with their block numbers, in chain order.
    pub fn logs(&self, from: u64, to: u64) -> Vec<(u64, &Log)> {
        let mut out = Vec::new();
        for number in from..=to.min(self.head().number) {
            let Some(block) = self.block(number) else { continue };
            for hash in &block.transactions {
                let receipt = &self.receipts[hash];
                out.extend(receipt.logs.iter().map(|log| (number, log)));
            }
        }
        out
    }

    fn append(&mut self, block: Block) {
        // BLOCKHASH answers from this table (for the 256 most recent blocks).
        self.db.cache.block_hashes.insert(U256::from(block.number), block.hash);
        self.blocks.push(block);
    }

    /// An EVM over the state, in block `block`; [`ModeledChain::restore`] gives the state back.
    fn build(&mut self, block: BlockEnv) -> Evm {
        let chain_id = self.params.chain_id;
        let mut evm = Context::mainnet()
            .modify_cfg_chained(|cfg| {
                cfg.set_spec_and_mainnet_gas_params(SpecId::PRAGUE);
                cfg.chain_id = chain_id;
            })
            .with_db(std::mem::take(&mut self.db))
            .build_mainnet();
        evm.ctx.block = block;
        evm
    }

    fn restore(&mut self, mut evm: Evm) {
        self.db = std::mem::take(&mut evm.ctx.journaled_state.database);
    }

    fn block_env(&self, number: u64, timestamp: u64, base_fee: u64) -> BlockEnv {
        BlockEnv {
            number: U256::from(number),
            timestamp: U256::from(timestamp),
            basefee: base_fee,
            gas_limit: self.params.block_gas_limit,
            prevrandao: Some(keccak256(number.to_be_bytes())),
            ..BlockEnv::default()
        }
    }
}

/// Runs a pooled transaction in the block being made; `None` when it is no longer valid.
fn execute(
    evm: &mut Evm,
    chain_id: u64,
    tx: &TxRequest,
    hash: B256,
    number: u64,
    base_fee: u64,
) -> Option<Receipt> {
    let env = TxEnv::builder()
        .caller(tx.from)
        .kind(tx.to.map_or(TxKind::Create, TxKind::Call))
        .data(tx.data.clone())
        .value(tx.value)
        .nonce(tx.nonce)
        .gas_limit(tx.gas_limit)
        .max_fee_per_gas(tx.max_fee_per_gas)
        .gas_priority_fee(Some(tx.max_priority_fee_per_gas))
        .chain_id(Some(chain_id))
        .build_fill();
    let result = evm.transact_commit(env).ok()?;
    let effective_gas_price = tx.max_fee_per_gas.min(u128::from(base_fee) + tx.max_priority_fee_per_gas);
    let gas_used = result.tx_gas_used();
    let (success, output, logs, contract_address) = match result {
        ExecutionResult::Success { output: Output::Create(code, address), logs, .. } => {
            (true, code, logs, address)
        }
        ExecutionResult::Success { output: Output::Call(data), logs, .. } => (true, data, logs, None),
        ExecutionResult::Revert { output, .. } => (false, output, Vec::new(), None),
        ExecutionResult::Halt { .. } => (false, Bytes::new(), Vec::new(), None),
    };
    Some(Receipt {
        tx_hash: hash,
        block_number: number,
        from: tx.from,
        to: tx.to,
        contract_address,
        success,
        gas_used,
        effective_gas_price,
        logs,
        output,
    })
}

fn nonce_in(db: &Db, who: Address) -> u64 {
    db.basic_ref(who).ok().flatten().map_or(0, |a| a.nonce)
}

fn outcome(result: ExecutionResult) -> CallOutcome {
    match result {
        ExecutionResult::Success { output, .. } => CallOutcome::Success(output.into_data()),
        ExecutionResult::Revert { output, .. } => CallOutcome::Revert(output),
        ExecutionResult::Halt { reason, .. } => CallOutcome::Halt(format!("{reason:?}")),
    }
}

/// EIP-1559's base fee of the block after `parent`.
pub fn next_base_fee(parent: &Block, gas_limit: u64) -> u64 {
    let target = gas_limit / ELASTICITY_MULTIPLIER;
    let base = u128::from(parent.base_fee);
    let used = u128::from(parent.gas_used);
    let target = u128::from(target);
    let next = if used == target {
        base
    } else if used > target {
        let delta = (base * (used - target) / target / BASE_FEE_CHANGE_DENOMINATOR).max(1);
        base + delta
    } else {
        base - base * (target - used) / target / BASE_FEE_CHANGE_DENOMINATOR
    };
    u64::try_from(next).unwrap_or(u64::MAX)
}

/// A modeled transaction hash: the transaction's fields, hashed (there is no signature).
fn tx_hash(tx: &TxRequest, chain_id: u64) -> B256 {
    let mut bytes = Vec::with_capacity(128 + tx.data.len());
    bytes.extend_from_slice(&chain_id.to_be_bytes());
    bytes.extend_from_slice(tx.from.as_slice());
    bytes.extend_from_slice(tx.to.unwrap_or_default().as_slice());
    bytes.extend_from_slice(&tx.nonce.to_be_bytes());
    bytes.extend_from_slice(&tx.gas_limit.to_be_bytes());
    bytes.extend_from_slice(&tx.max_fee_per_gas.to_be_bytes());
    bytes.extend_from_slice(&tx.max_priority_fee_per_gas.to_be_bytes());
    bytes.extend_from_slice(&tx.value.to_be_bytes::<32>());
    bytes.extend_from_slice(&tx.data);
    keccak256(bytes)
}

/// A modeled block hash: parent, number, timestamp and transactions, hashed.
fn block_hash(parent: &B256, number: u64, timestamp: u64, transactions: &[B256]) -> B256 {
    let mut bytes = Vec::with_capacity(48 + 32 * transactions.len());
    bytes.extend_from_slice(parent.as_slice());
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes.extend_from_slice(&timestamp.to_be_bytes());
    for hash in transactions {
        bytes.extend_from_slice(hash.as_slice());
    }
    keccak256(bytes)
}

/// An EVM chain the simulator steps block by block: [`ModeledChain`] in process, or a real
/// Anvil ([`anvil::AnvilBackend`]). Both answer the same questions the same way, so a run
/// over either gives the same trace.
pub trait EvmBackend: Send {
    fn head(&self) -> Block;
    /// The base fee the next block will have.
    fn next_base_fee(&self) -> u64;
    /// The nonce a new transaction from `who` takes (past its pooled ones).
    fn pending_nonce(&mut self, who: Address) -> u64;
    /// How many transactions of `who` are mined (the nonce in the head block's state).
    fn mined_nonce(&mut self, who: Address) -> u64;
    fn balance(&mut self, who: Address) -> U256;
    fn code(&mut self, at: Address) -> Bytes;
    fn set_balance(&mut self, who: Address, balance: U256);
    /// Queues a transaction; its hash, or why the pool refused it.
    fn submit(&mut self, tx: TxRequest) -> Result<B256, String>;
    /// Makes the next block at `timestamp`; the receipts of the transactions it took.
    fn mine(&mut self, timestamp: u64) -> (Block, Vec<Receipt>);
    /// A call in the head block's state and environment.
    fn call(&mut self, from: Address, to: Address, data: Bytes) -> CallOutcome;
    fn estimate_gas(&mut self, tx: &TxRequest) -> Result<u64, CallOutcome>;
    /// Logs of `address` in blocks `from..=to`, with their block numbers.
    fn logs(&mut self, address: Address, from: u64, to: u64) -> Vec<(u64, Log)>;
}

impl EvmBackend for ModeledChain {
    fn head(&self) -> Block {
        ModeledChain::head(self).clone()
    }

    fn next_base_fee(&self) -> u64 {
        ModeledChain::next_base_fee(self)
    }

    fn pending_nonce(&mut self, who: Address) -> u64 {
        ModeledChain::pending_nonce(self, who)
    }

    fn mined_nonce(&mut self, who: Address) -> u64 {
        ModeledChain::nonce(self, who)
    }

    fn balance(&mut self, who: Address) -> U256 {
        ModeledChain::balance(self, who)
    }

    fn code(&mut self, at: Address) -> Bytes {
        ModeledChain::code(self, at)
    }

    fn set_balance(&mut self, who: Address, balance: U256) {
        ModeledChain::set_balance(self, who, balance)
    }

    fn submit(&mut self, tx: TxRequest) -> Result<B256, String> {
        ModeledChain::submit(self, tx).map_err(|e| e.to_string())
    }

    fn mine(&mut self, timestamp: u64) -> (Block, Vec<Receipt>) {
        let block = ModeledChain::mine(self, timestamp).clone();
        let receipts = block.transactions.iter().map(|h| self.receipts[h].clone()).collect();
        (block, receipts)
    }

    fn call(&mut self, from: Address, to: Address, data: Bytes) -> CallOutcome {
        ModeledChain::call(self, from, to, data)
    }

    fn estimate_gas(&mut self, tx: &TxRequest) -> Result<u64, CallOutcome> {
        ModeledChain::estimate_gas(self, tx)
    }

    fn logs(&mut self, address: Address, from: u64, to: u64) -> Vec<(u64, Log)> {
        ModeledChain::logs(self, from, to)
            .into_iter()
            .filter(|(_, log)| log.address == address)
            .map(|(n, log)| (n, log.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
