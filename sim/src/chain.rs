//! The chain of a simulated run: `SimChainNet` makes blocks on the simulated clock over an
//! [`EvmBackend`] (`ModeledChain`, revm in process, or a real Anvil), and `SimChain` is each
//! account's adapter of the node's `Chain` port over it.
//!
//! `SimChain` does the chores the production adapter (`node/src/chain/rpc.rs`) does, the same
//! way: every request costs a round trip drawn from the scenario's latency, and while the
//! account's endpoint is down it fails and is tried again with back-off (5 more times from
//! 200 ms, doubling), then reported unreachable; transactions go one at a time with a nonce
//! kept here, estimated first (a revert comes back as the contract's error), padded, sent with
//! twice the base fee, and sent again with fees 12.5 % higher when not mined within 4 blocks;
//! one given up on is replaced by the account's next transaction.
//! The pool may forget a transaction (the scenario's `tx-drop`): it is then never mined, and
//! the sender's re-sending is what gets it through. These are models, named as such.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256};
use async_trait::async_trait;
use neverust::chain::contracts::{Marketplace, TestToken};
use neverust::chain::{BlockHead, Chain, ChainError, ChainLog, LogFilter, Receipt, Revert, Transaction};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::trace::Trace;
use neverust_sim::evm::{CallOutcome, EvmBackend, TxRequest};

/// Tries of a request while the endpoint is down, after the first.
const RETRIES: u32 = 5;
const RETRY_DELAY_MIN: Duration = Duration::from_millis(200);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
/// Blocks without a receipt after which a transaction is sent again with higher fees.
const REPLACE_AFTER_BLOCKS: u64 = 4;
const REPLACEMENTS_MAX: u32 = 5;
/// The tip every simulated transaction offers (wei per gas).
const TIP_WEI: u128 = 1_000_000;

/// What the chain did in a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainStats {
    /// `revm` or `anvil`.
    pub backend: String,
    pub blocks: u64,
    pub transactions: u64,
    pub reverted: u64,
    /// Requests to endpoints (calls, estimates, reads).
    pub requests: u64,
    /// Transactions the pool forgot.
    pub dropped: u64,
    /// Transactions sent again with higher fees.
    pub resent: u64,
    /// Requests refused while an endpoint was down.
    pub refused: u64,
}

/// The chain's faults, drawn for the run.
pub struct ChainFaults {
    pub rpc_latency_ms: [f64; 2],
    pub tx_drop: f64,
    /// Per account, the windows (from the run's start) its endpoint is down.
    pub down: BTreeMap<Address, Vec<(Duration, Duration)>>,
}

/// The simulated chain: a backend, its blocks, their receipts.
pub struct SimChainNet {
    backend: Mutex<Box<dyn EvmBackend>>,
    chain_id: u64,
    head: watch::Sender<BlockHead>,
    /// Mined receipts, with their blocks' timestamps.
    receipts: Mutex<BTreeMap<B256, (neverust_sim::evm::Receipt, u64)>>,
    /// What the trace says of a transaction once mined: sender, nonce, function.
    sent: Mutex<BTreeMap<B256, (Address, u64, &'static str)>>,
    faults: ChainFaults,
    rng: Mutex<ChaCha8Rng>,
    trace: Arc<Trace>,
    start: tokio::time::Instant,
    stats: Mutex<ChainStats>,
}

impl SimChainNet {
    pub fn new(
        backend: Box<dyn EvmBackend>,
        backend_name: &str,
        chain_id: u64,
        faults: ChainFaults,
        rng: ChaCha8Rng,
        trace: Arc<Trace>,
    ) -> Arc<SimChainNet> {
        let head = backend.head();
        let (head, _) = watch::channel(BlockHead { number: head.number, timestamp: head.timestamp });
        Arc::new(SimChainNet {
            backend: Mutex::new(backend),
            chain_id,
            head,
            receipts: Mutex::new(BTreeMap::new()),
            sent: Mutex::new(BTreeMap::new()),
            faults,
            rng: Mutex::new(rng),
            trace,
            start: tokio::time::Instant::now(),
            stats: Mutex::new(ChainStats { backend: backend_name.to_string(), ..ChainStats::default() }),
        })
    }

    /// The backend, for setting up (funding accounts, premining) and for the oracle, which
    /// reads chain state directly.
    pub fn backend(&self) -> std::sync::MutexGuard<'_, Box<dyn EvmBackend>> {
        self.backend.lock().expect("chain backend")
    }

    pub fn stats(&self) -> ChainStats {
        self.stats.lock().expect("chain stats").clone()
    }

    /// An account's adapter of the chain port.
    pub fn account(self: &Arc<Self>, account: Address) -> Arc<SimChain> {
        Arc::new(SimChain { net: self.clone(), account, nonces: tokio::sync::Mutex::new(Nonces::default()) })
    }

    /// Makes a block every `block_time` of simulated time, the first `block_time` from now,
    /// each `block_time` seconds after the head's timestamp.
    pub fn make_blocks(self: &Arc<Self>, block_time: Duration) {
        let net = self.clone();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            loop {
                next += block_time;
                tokio::time::sleep_until(next).await;
                let timestamp = net.head.borrow().timestamp + block_time.as_secs();
                net.mine(timestamp);
            }
        });
    }

    /// Makes one block now at `timestamp` (setting up: premining).
    pub fn mine(&self, timestamp: u64) {
        let (block, receipts) = self.backend().mine(timestamp);
        self.trace.record(format_args!(
            "chain block {} t {} txs {}",
            block.number,
            block.timestamp,
            receipts.len()
        ));
        let mut stats = self.stats.lock().expect("chain stats");
        stats.blocks += 1;
        let mut sent = self.sent.lock().expect("sent");
        let mut mined = self.receipts.lock().expect("receipts");
        for receipt in receipts {
            stats.transactions += 1;
            let (from, nonce, function) = sent.remove(&receipt.tx_hash).unwrap_or((receipt.from, 0, "?"));
            let outcome = if receipt.success {
                "ok".to_string()
            } else {
                stats.reverted += 1;
                Revert::decode(&receipt.output).name().to_string()
            };
            let events: Vec<&str> = receipt.logs.iter().map(|log| event_name(log.topics())).collect();
            self.trace.record(format_args!(
                "chain tx {from} nonce {nonce} {function} {outcome} [{}]",
                events.join(" ")
            ));
            mined.insert(receipt.tx_hash, (receipt, block.timestamp));
        }
        drop((stats, sent, mined));
        self.head.send_replace(BlockHead { number: block.number, timestamp: block.timestamp });
    }

    fn latency(&self) -> Duration {
        let [low, high] = self.faults.rpc_latency_ms;
        let ms = if high > low { self.rng.lock().expect("chain rng").random_range(low..=high) } else { low };
        Duration::from_secs_f64(ms / 1000.0)
    }

    fn is_down(&self, account: Address) -> bool {
        let now = self.start.elapsed();
        self.faults
            .down
            .get(&account)
            .is_some_and(|windows| windows.iter().any(|(from, to)| (*from..*to).contains(&now)))
    }

    fn drops(&self) -> bool {
        self.faults.tx_drop > 0.0 && self.rng.lock().expect("chain rng").random_bool(self.faults.tx_drop)
    }
}

/// The function a transaction calls, by its selector, for the trace.
fn function_name(data: &[u8]) -> &'static str {
    let Some(selector) = data.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else { return "create" };
    Marketplace::MarketplaceCalls::name_by_selector(selector)
        .or_else(|| TestToken::TestTokenCalls::name_by_selector(selector))
        .unwrap_or("create")
}

fn event_name(topics: &[B256]) -> &'static str {
    let Some(topic) = topics.first() else { return "anonymous" };
    Marketplace::MarketplaceEvents::name_by_selector(topic.0)
        .or_else(|| TestToken::TestTokenEvents::name_by_selector(topic.0))
        .unwrap_or("unknown")
}

/// One account's chain port over the simulated chain.
pub struct SimChain {
    net: Arc<SimChainNet>,
    account: Address,
    /// The lock also keeps transactions one at a time.
    nonces: tokio::sync::Mutex<Nonces>,
}

/// The account's nonce, as far as the adapter knows it (as in the production adapter).
#[derive(Default)]
struct Nonces {
    /// The next nonce to use; `None` when it must be read from the chain.
    next: Option<u64>,
    /// A transaction given up on as not mined, with its last fees (max fee, tip): the next
    /// transaction takes its nonce, with higher fees, unless it was mined after all.
    stuck: Option<(u64, u128, u128)>,
}

impl SimChain {
    /// One request to the endpoint: a round trip of latency, failing while the endpoint is
    /// down (tried again with back-off, then unreachable).
    async fn request<T>(
        &self,
        what: &str,
        work: impl FnOnce(&mut dyn EvmBackend) -> T,
    ) -> Result<T, ChainError> {
        let mut delay = RETRY_DELAY_MIN;
        let mut tries = 0;
        loop {
            tokio::time::sleep(self.net.latency()).await;
            if !self.net.is_down(self.account) {
                break;
            }
            self.net.stats.lock().expect("chain stats").refused += 1;
            tries += 1;
            if tries > RETRIES {
                return Err(ChainError::Unreachable {
                    endpoint: format!("the simulated endpoint of {}", self.account),
                    reason: format!("{what}: no answer (tried {tries} times)"),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_DELAY_MAX);
        }
        self.net.stats.lock().expect("chain stats").requests += 1;
        let mut backend = self.net.backend();
        Ok(work(&mut **backend))
    }

    fn receipt(&self, hashes: &[B256]) -> Option<(neverust_sim::evm::Receipt, u64)> {
        let mined = self.net.receipts.lock().expect("receipts");
        hashes.iter().find_map(|h| mined.get(h).cloned())
    }

    /// Sends `tx` and waits for it to be mined, sending it again with higher fees while it is
    /// not; `tx` ends with the last fees offered.
    async fn send_and_wait(&self, tx: &mut TxRequest) -> Result<Receipt, ChainError> {
        let mut sent: Vec<B256> = Vec::new();
        for attempt in 0..=REPLACEMENTS_MAX {
            if attempt > 0 {
                (tx.max_fee_per_gas, tx.max_priority_fee_per_gas) =
                    bumped(tx.max_fee_per_gas, tx.max_priority_fee_per_gas);
                self.net.stats.lock().expect("chain stats").resent += 1;
            }
            if self.net.drops() {
                self.net.stats.lock().expect("chain stats").dropped += 1;
                self.net
                    .trace
                    .record(format_args!("chain tx {} nonce {} dropped by the pool", tx.from, tx.nonce));
            } else {
                let submit = tx.clone();
                match self.request("eth_sendRawTransaction", move |b| b.submit(submit)).await? {
                    Ok(hash) => {
                        self.net
                            .sent
                            .lock()
                            .expect("sent")
                            .insert(hash, (tx.from, tx.nonce, function_name(&tx.data)));
                        sent.push(hash);
                    }
                    // An earlier send of this nonce was mined meanwhile: its receipt comes.
                    // Or a replacement was refused: an earlier send may still be mined.
                    Err(_) if !sent.is_empty() => {}
                    Err(message) => return Err(ChainError::Rpc(message)),
                }
            }
            let mut head = self.net.head.subscribe();
            let start = head.borrow().number;
            loop {
                if let Some((receipt, timestamp)) = self.receipt(&sent) {
                    // The receipt itself is one more request.
                    self.request("eth_getTransactionReceipt", |_| ()).await?;
                    return finish(receipt, timestamp, tx.gas_limit);
                }
                if head.borrow().number >= start + REPLACE_AFTER_BLOCKS {
                    break;
                }
                if head.changed().await.is_err() {
                    return Err(ChainError::Rpc("the chain stopped".into()));
                }
            }
        }
        Err(ChainError::NotMined { nonce: tx.nonce, attempts: REPLACEMENTS_MAX + 1 })
    }
}

/// Fees 12.5 % higher (and at least 1 wei): what a pool takes as a replacement.
fn bumped(max_fee: u128, tip: u128) -> (u128, u128) {
    (max_fee + max_fee / 8 + 1, tip + tip / 8 + 1)
}

/// A mined transaction as the port gives it: the receipt, or why it failed.
fn finish(
    receipt: neverust_sim::evm::Receipt,
    timestamp: u64,
    gas_limit: u64,
) -> Result<Receipt, ChainError> {
    if !receipt.success && receipt.gas_used >= gas_limit {
        return Err(ChainError::OutOfGas { tx: receipt.tx_hash, gas_limit });
    }
    if !receipt.success {
        return Err(ChainError::Revert(Revert::decode(&receipt.output)));
    }
    let block = receipt.block_number;
    let logs = receipt
        .logs
        .iter()
        .map(|log| ChainLog {
            block,
            address: log.address,
            topics: log.topics().to_vec(),
            data: log.data.data.clone(),
        })
        .collect();
    Ok(Receipt {
        tx_hash: receipt.tx_hash,
        block,
        timestamp,
        gas_used: receipt.gas_used,
        contract_address: receipt.contract_address,
        logs,
    })
}

fn call_result(outcome: CallOutcome) -> Result<Bytes, ChainError> {
    match outcome {
        CallOutcome::Success(data) => Ok(data),
        CallOutcome::Revert(data) => Err(ChainError::Revert(Revert::decode(&data))),
        CallOutcome::Halt(reason) => Err(ChainError::Rpc(reason)),
    }
}

#[async_trait]
impl Chain for SimChain {
    fn account(&self) -> Address {
        self.account
    }

    fn chain_id(&self) -> u64 {
        self.net.chain_id
    }

    async fn head(&self) -> Result<BlockHead, ChainError> {
        let block = self.request("eth_getBlockByNumber", |b| b.head()).await?;
        Ok(BlockHead { number: block.number, timestamp: block.timestamp })
    }

    async fn next_block(&self, number: u64) -> Result<BlockHead, ChainError> {
        let mut head = self.net.head.subscribe();
        while head.borrow().number <= number {
            if head.changed().await.is_err() {
                return Err(ChainError::Rpc("the chain stopped".into()));
            }
        }
        self.head().await
    }

    async fn call(&self, to: Address, data: Bytes) -> Result<Bytes, ChainError> {
        let from = self.account;
        call_result(self.request("eth_call", move |b| b.call(from, to, data)).await?)
    }

    async fn send(&self, tx: Transaction) -> Result<Receipt, ChainError> {
        let mut nonces = self.nonces.lock().await;
        let mut request = TxRequest {
            from: self.account,
            to: tx.to,
            data: tx.data,
            value: U256::ZERO,
            nonce: 0,
            gas_limit: 0,
            max_fee_per_gas: 0,
            max_priority_fee_per_gas: TIP_WEI,
        };
        let probe = request.clone();
        let estimate = match self.request("eth_estimateGas", move |b| b.estimate_gas(&probe)).await? {
            Ok(gas) => gas,
            Err(outcome) => {
                return Err(call_result(outcome).err().unwrap_or(ChainError::Rpc("estimate failed".into())));
            }
        };
        request.gas_limit = estimate + estimate * tx.gas_padding_percent / 100;
        let base_fee = self.request("eth_getBlockByNumber", |b| b.next_base_fee()).await?;
        request.max_fee_per_gas = 2 * u128::from(base_fee) + TIP_WEI;
        let account = self.account;
        request.nonce = match nonces.next {
            Some(nonce) => nonce,
            None => {
                let mined = self.request("eth_getTransactionCount", move |b| b.mined_nonce(account)).await?;
                match nonces.stuck {
                    // Still not mined: take its place.
                    Some((stuck, ..)) if stuck == mined => mined,
                    _ => self.request("eth_getTransactionCount", move |b| b.pending_nonce(account)).await?,
                }
            }
        };
        if let Some((stuck, max_fee, tip)) = nonces.stuck
            && stuck == request.nonce
        {
            let (max_fee, tip) = bumped(max_fee, tip);
            request.max_fee_per_gas = request.max_fee_per_gas.max(max_fee);
            request.max_priority_fee_per_gas = request.max_priority_fee_per_gas.max(tip);
        }
        let balance = self.request("eth_getBalance", move |b| b.balance(account)).await?;
        let needed = U256::from(request.gas_limit) * U256::from(request.max_fee_per_gas);
        if balance < needed {
            return Err(ChainError::InsufficientFunds { account, balance, needed });
        }
        let nonce = request.nonce;
        // Unknown until this send ends: one given up half way leaves it to be read again.
        nonces.next = None;
        let result = self.send_and_wait(&mut request).await;
        match &result {
            Ok(_) | Err(ChainError::Revert(_) | ChainError::OutOfGas { .. }) => {
                *nonces = Nonces { next: Some(nonce + 1), stuck: None }
            }
            Err(ChainError::NotMined { .. }) => {
                nonces.stuck = Some((nonce, request.max_fee_per_gas, request.max_priority_fee_per_gas))
            }
            Err(_) => {}
        }
        result
    }

    async fn logs(&self, filter: LogFilter) -> Result<Vec<ChainLog>, ChainError> {
        let logs = self
            .request("eth_getLogs", move |b| b.logs(filter.address, filter.from_block, filter.to_block))
            .await?;
        Ok(logs
            .into_iter()
            .map(|(block, log)| ChainLog {
                block,
                address: log.address,
                topics: log.topics().to_vec(),
                data: log.data.data.clone(),
            })
            .collect())
    }

    async fn balance(&self, who: Address) -> Result<U256, ChainError> {
        self.request("eth_getBalance", move |b| b.balance(who)).await
    }

    async fn code(&self, at: Address) -> Result<Bytes, ChainError> {
        self.request("eth_getCode", move |b| b.code(at)).await
    }
}
