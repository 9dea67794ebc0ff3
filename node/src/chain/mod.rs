//! The chain port: what node logic needs from an EVM chain, and the marketplace on top of it.
//!
//! [`Chain`] is the port: the account the node sends from, the chain's head (its time), calls,
//! transactions, logs and balances. Adapters do the chain's chores behind it (nonces, gas
//! estimation with padding, fees, replacing stuck transactions, retrying failed requests), so
//! node logic sees one call per intent and a typed error when it fails:
//!
//! | adapter | where |
//! |---|---|
//! | `rpc::RpcChain` | production: JSON-RPC over HTTP or WebSocket (alloy), a key from a file (feature `production`) |
//! | `SimChain` | the simulator: `ModeledChain` (revm) in process, or a real Anvil stepped from the simulated clock |
//!
//! On top: [`market::Marketplace`], the marketplace's calls and views, typed;
//! [`events::EventFollower`], its events from a block on, without gaps; [`deploy`], the
//! contracts' deployment.

pub mod anvil;
pub mod contracts;
pub mod deploy;
pub mod events;
pub mod market;
pub mod revert;
#[cfg(feature = "production")]
pub mod rpc;
pub mod walk;

use std::fmt;

use alloy_primitives::{Address, B256, Bytes, U256};
use async_trait::async_trait;

pub use revert::Revert;

/// A block's number and timestamp (seconds): the chain's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockHead {
    pub number: u64,
    pub timestamp: u64,
}

/// A transaction to send. The adapter chooses the nonce and the fees, and the gas limit:
/// the estimate plus `gas_padding_percent`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    /// `None` creates a contract from `data`.
    pub to: Option<Address>,
    pub data: Bytes,
    pub gas_padding_percent: u64,
}

/// A mined, successful transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Receipt {
    pub tx_hash: B256,
    pub block: u64,
    /// The block's timestamp.
    pub timestamp: u64,
    pub gas_used: u64,
    /// The contract a creation made.
    pub contract_address: Option<Address>,
    pub logs: Vec<ChainLog>,
}

/// A log (an event) a contract emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLog {
    pub block: u64,
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
}

/// Which logs: one contract's, in blocks `from_block..=to_block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogFilter {
    pub address: Address,
    pub from_block: u64,
    pub to_block: u64,
}

/// Why a chain operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The contract refused: a call, a transaction's gas estimate, or a mined transaction
    /// that reverted. Nothing changed on chain (a mined transaction cost gas).
    #[error("{0}")]
    Revert(Revert),
    /// The endpoint could not be reached, or kept failing after retries.
    #[error("the chain endpoint {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The endpoint answered with an error that is not a revert.
    #[error("the chain endpoint refused the request: {0}")]
    Rpc(String),
    /// The endpoint is on another chain than the one configured.
    #[error("the chain endpoint is on chain {actual}, not the configured chain {expected}")]
    WrongChain { expected: u64, actual: u64 },
    /// No contract where one was expected.
    #[error("no contract at {0} on this chain")]
    NoContract(Address),
    /// A contract is there, but it does not answer as the one expected.
    #[error("the contract at {address} is not the one expected: {reason}")]
    WrongContract { address: Address, reason: String },
    /// The account cannot pay for gas.
    #[error("account {account} has {balance} wei, not enough to pay for gas ({needed} wei needed)")]
    InsufficientFunds { account: Address, balance: U256, needed: U256 },
    /// A transaction sent (and re-sent with higher fees) was not mined in time; it may still be.
    #[error("transaction with nonce {nonce} was not mined after {attempts} attempts")]
    NotMined { nonce: u64, attempts: u32 },
    /// A mined transaction ran out of gas: its padding was too small for the state it met.
    #[error("transaction {tx} ran out of gas when mined (limit {gas_limit}); it changed nothing")]
    OutOfGas { tx: B256, gas_limit: u64 },
    /// The account's key could not be read or made.
    #[error("account key: {0}")]
    Key(String),
}

impl ChainError {
    /// The revert, when the contract refused.
    pub fn revert(&self) -> Option<&Revert> {
        match self {
            ChainError::Revert(revert) => Some(revert),
            _ => None,
        }
    }

    /// True when the contract refused with `error`.
    pub fn is<E: alloy_sol_types::SolError>(&self, error: E) -> bool {
        self.revert().is_some_and(|revert| revert.is(error))
    }

    /// True when trying again later may succeed (the endpoint, not the request, failed).
    pub fn is_transient(&self) -> bool {
        matches!(self, ChainError::Unreachable { .. } | ChainError::NotMined { .. })
    }
}

/// The chain port. One implementation per account: every transaction is sent from
/// [`Chain::account`].
#[async_trait]
pub trait Chain: Send + Sync {
    /// The account transactions are sent from.
    fn account(&self) -> Address;

    /// The chain's id (EIP-155).
    fn chain_id(&self) -> u64;

    /// The newest block.
    async fn head(&self) -> Result<BlockHead, ChainError>;

    /// Waits for a block newer than `number` and returns the newest head.
    async fn next_block(&self, number: u64) -> Result<BlockHead, ChainError>;

    /// Runs a call in the newest block, changing nothing (`eth_call`).
    async fn call(&self, to: Address, data: Bytes) -> Result<Bytes, ChainError>;

    /// Sends a transaction and waits until it is mined. A transaction that would revert is
    /// not sent (its estimate fails with the revert); one that reverts when mined is a
    /// [`ChainError::Revert`] too.
    async fn send(&self, tx: Transaction) -> Result<Receipt, ChainError>;

    /// Logs of one contract over a range of blocks, in chain order.
    async fn logs(&self, filter: LogFilter) -> Result<Vec<ChainLog>, ChainError>;

    /// An account's ether, in wei.
    async fn balance(&self, who: Address) -> Result<U256, ChainError>;

    /// The code deployed at an address (empty when there is none).
    async fn code(&self, at: Address) -> Result<Bytes, ChainError>;
}

impl fmt::Debug for dyn Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chain({} on {})", self.account(), self.chain_id())
    }
}

/// Waits until the chain's time reaches `timestamp`; the first head at or after it.
pub async fn wait_until(chain: &dyn Chain, timestamp: u64) -> Result<BlockHead, ChainError> {
    let mut head = chain.head().await?;
    while head.timestamp < timestamp {
        head = chain.next_block(head.number).await?;
    }
    Ok(head)
}

/// Runs `step` until it succeeds or the chain refuses it: while the endpoint fails (down, or
/// not answering), waits `pause` and tries again, as a node does.
pub async fn persist<T, F, Fut>(pause: std::time::Duration, what: &str, mut step: F) -> Result<T, ChainError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ChainError>>,
{
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() => {
                tracing::debug!(what, %error, "the chain endpoint failed; trying again");
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err(error),
        }
    }
}
