//! The production chain adapter: Ethereum JSON-RPC over HTTP or WebSocket (alloy), with the
//! account's key from a file.
//!
//! Behind the [`Chain`] port it does the chores: every request has a timeout and is retried
//! with back-off when the endpoint fails (not when it refuses); transactions go one at a time
//! with a nonce kept here (read again from the chain after anything uncertain); each is
//! estimated first (a revert comes back as the contract's error, and nothing is sent), sent
//! with the estimate plus the caller's padding, EIP-1559 fees of twice the base fee plus the
//! endpoint's suggested tip, and the balance checked first; one not mined after a few blocks
//! (or a while, when blocks stop) is sent again with the same nonce and fees 12.5 % higher,
//! up to a limit; one given up on is replaced by the account's next transaction. The transaction
//! is signed here and sent raw, so no endpoint ever holds the key.

use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, ReceiptResponse, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockId, BlockNumberOrTag, Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::ws::WsConnect;
use alloy::transports::{RpcError, TransportErrorKind};
use async_trait::async_trait;

use super::{BlockHead, Chain, ChainError, ChainLog, LogFilter, Receipt, Revert, Transaction};

/// Chain ids of local development chains with Anvil's methods (`anvil_mine`,
/// `anvil_setBalance`) and funded development accounts: Anvil's and Hardhat's. There a node
/// may make its own key and `deploy` may mine and fund.
pub const LOCAL_CHAIN_IDS: [u64; 1] = [31337];

/// How the adapter waits and retries.
#[derive(Clone, Debug)]
pub struct RpcSettings {
    /// Longest wait for one answer.
    pub request_timeout: Duration,
    /// Tries after the first, for a request the endpoint failed.
    pub retries: u32,
    /// First pause between tries; doubles up to `retry_delay_max`.
    pub retry_delay_min: Duration,
    pub retry_delay_max: Duration,
    /// How often to look for a new block or a receipt.
    pub poll_interval: Duration,
    /// New blocks after which a transaction not mined is sent again with higher fees...
    pub replace_after_blocks: u64,
    /// ...or this long, when blocks stop coming.
    pub replace_after_time: Duration,
    /// Most times a transaction is sent again.
    pub replacements_max: u32,
}

impl RpcSettings {
    /// Defaults for `endpoint`: a loopback endpoint (a local chain) is polled often.
    pub fn for_endpoint(endpoint: &str) -> RpcSettings {
        let local = ["://127.0.0.1", "://localhost", "://[::1]"].iter().any(|h| endpoint.contains(h));
        RpcSettings {
            request_timeout: Duration::from_secs(10),
            retries: 5,
            retry_delay_min: Duration::from_millis(200),
            retry_delay_max: Duration::from_secs(5),
            poll_interval: if local { Duration::from_millis(50) } else { Duration::from_secs(1) },
            replace_after_blocks: 4,
            replace_after_time: Duration::from_secs(90),
            replacements_max: 5,
        }
    }
}

/// A chain reached over JSON-RPC, sending from one account.
pub struct RpcChain {
    endpoint: String,
    provider: DynProvider,
    wallet: EthereumWallet,
    account: Address,
    chain_id: u64,
    settings: RpcSettings,
    /// The lock also keeps transactions one at a time.
    nonces: tokio::sync::Mutex<Nonces>,
}

/// The account's nonce, as far as this adapter knows it.
#[derive(Default)]
struct Nonces {
    /// The next nonce to use; `None` when it must be read from the chain.
    next: Option<u64>,
    /// A transaction given up on as not mined, with its last fees: the next transaction
    /// takes its nonce, with higher fees, unless it was mined after all.
    stuck: Option<(u64, Fees)>,
}

/// EIP-1559 fees, in wei per gas.
#[derive(Clone, Copy, Debug)]
struct Fees {
    max_fee: u128,
    tip: u128,
}

impl Fees {
    /// 12.5 % more (and at least 1 wei more): what an endpoint takes as a replacement.
    fn bumped(self) -> Fees {
        Fees { max_fee: self.max_fee + self.max_fee / 8 + 1, tip: self.tip + self.tip / 8 + 1 }
    }

    fn max(self, other: Fees) -> Fees {
        Fees { max_fee: self.max_fee.max(other.max_fee), tip: self.tip.max(other.tip) }
    }
}

/// The endpoint's chain id, without a key (to choose or make one).
pub async fn chain_id(endpoint: &str) -> Result<u64, ChainError> {
    let settings = RpcSettings::for_endpoint(endpoint);
    let provider = provider(endpoint, &settings).await?;
    retry(endpoint, &settings, "eth_chainId", || provider.get_chain_id()).await
}

async fn provider(endpoint: &str, settings: &RpcSettings) -> Result<DynProvider, ChainError> {
    let unreachable = |reason: String| ChainError::Unreachable { endpoint: endpoint.to_string(), reason };
    let builder = ProviderBuilder::new().disable_recommended_fillers();
    if endpoint.starts_with("ws://") || endpoint.starts_with("wss://") {
        let connect = builder.connect_pubsub_with(WsConnect::new(endpoint));
        match tokio::time::timeout(settings.request_timeout, connect).await {
            Ok(Ok(provider)) => Ok(provider.erased()),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => {
                Err(unreachable(format!("no WebSocket connection within {:?}", settings.request_timeout)))
            }
        }
    } else if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        let url = endpoint.parse().map_err(|e| unreachable(format!("not a URL: {e}")))?;
        Ok(builder.connect_http(url).erased())
    } else {
        Err(unreachable("expected an http://, https://, ws:// or wss:// URL".into()))
    }
}

impl RpcChain {
    /// Connects to `endpoint` and checks its chain id against `expected_chain_id`. Fails
    /// with [`ChainError::Unreachable`] when the endpoint does not answer after the retries,
    /// rather than waiting for it.
    pub async fn connect(
        endpoint: &str,
        key: PrivateKeySigner,
        expected_chain_id: Option<u64>,
    ) -> Result<RpcChain, ChainError> {
        RpcChain::connect_with(endpoint, key, expected_chain_id, RpcSettings::for_endpoint(endpoint)).await
    }

    /// [`RpcChain::connect`], waiting and retrying as `settings` say.
    pub async fn connect_with(
        endpoint: &str,
        key: PrivateKeySigner,
        expected_chain_id: Option<u64>,
        settings: RpcSettings,
    ) -> Result<RpcChain, ChainError> {
        let provider = provider(endpoint, &settings).await?;
        let chain_id = retry(endpoint, &settings, "eth_chainId", || provider.get_chain_id()).await?;
        if let Some(expected) = expected_chain_id
            && expected != chain_id
        {
            return Err(ChainError::WrongChain { expected, actual: chain_id });
        }
        let account = key.address();
        Ok(RpcChain {
            endpoint: endpoint.to_string(),
            provider,
            wallet: EthereumWallet::from(key),
            account,
            chain_id,
            settings,
            nonces: tokio::sync::Mutex::new(Nonces::default()),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Any JSON-RPC method (Anvil's `evm_mine`, say), retried like the others.
    pub async fn raw<P, R>(&self, method: &'static str, params: P) -> Result<R, ChainError>
    where
        P: alloy::rpc::json_rpc::RpcSend + Clone,
        R: alloy::rpc::json_rpc::RpcRecv,
    {
        self.retry(method, || self.provider.raw_request(method.into(), params.clone())).await
    }

    async fn retry<T, F, Fut>(&self, what: &str, request: F) -> Result<T, ChainError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        retry(&self.endpoint, &self.settings, what, request).await
    }

    /// EIP-1559 fees for the next block: twice the base fee plus the suggested tip.
    async fn fees(&self) -> Result<Fees, ChainError> {
        let block = self
            .retry("eth_getBlockByNumber", || {
                self.provider.get_block_by_number(BlockNumberOrTag::Latest).into_future()
            })
            .await?;
        let base = block.and_then(|b| b.header.base_fee_per_gas).unwrap_or(0);
        let tip =
            self.retry("eth_maxPriorityFeePerGas", || self.provider.get_max_priority_fee_per_gas()).await?;
        Ok(Fees { max_fee: 2 * u128::from(base) + tip, tip })
    }

    /// Sends `request` with `nonce` and `fees` and waits for it to be mined, sending it
    /// again with higher fees while it is not; `fees` ends as the last fees offered.
    async fn send_and_wait(
        &self,
        request: TransactionRequest,
        nonce: u64,
        gas_limit: u64,
        fees: &mut Fees,
    ) -> Result<Receipt, ChainError> {
        let mut sent: Vec<B256> = Vec::new();
        for attempt in 0..=self.settings.replacements_max {
            if attempt > 0 {
                // When the endpoint cannot say what fees are now, more than the last will do.
                let market = self.fees().await.unwrap_or(*fees);
                *fees = fees.bumped().max(market);
                tracing::warn!(
                    nonce,
                    attempt,
                    max_fee = fees.max_fee,
                    tip = fees.tip,
                    "transaction not mined: sending it again with higher fees"
                );
            }
            let envelope = request
                .clone()
                .with_nonce(nonce)
                .with_gas_limit(gas_limit)
                .with_max_fee_per_gas(fees.max_fee)
                .with_max_priority_fee_per_gas(fees.tip)
                .build(&self.wallet)
                .await
                .map_err(|e| ChainError::Key(format!("signing: {e}")))?;
            let raw = envelope.encoded_2718();
            // Watched from before it is sent: when the endpoint took it but the answer was
            // lost, the next try is refused ("already known", "nonce too low") and this is
            // the transaction that gets mined.
            sent.push(keccak256(&raw));
            let mut nonce_used = false;
            match self.retry("eth_sendRawTransaction", || self.provider.send_raw_transaction(&raw)).await {
                Ok(_) => {}
                // A send of ours holds the nonce (in the pool, or mined): wait for it.
                Err(ChainError::Rpc(message)) if nonce_taken(&message) => {
                    nonce_used = message.to_ascii_lowercase().contains("nonce too low");
                }
                // A replacement refused (its fees unaffordable, say): an earlier send may
                // still be mined.
                Err(error) if attempt > 0 => {
                    tracing::warn!(nonce, %error, "a replacement was refused; waiting for the earlier sends")
                }
                Err(error) => return Err(error),
            }
            let start = self.head().await?.number;
            let started = tokio::time::Instant::now();
            loop {
                for hash in &sent {
                    let receipt = self
                        .retry("eth_getTransactionReceipt", || self.provider.get_transaction_receipt(*hash))
                        .await?;
                    if let Some(receipt) = receipt {
                        return self.finish(&request, receipt, gas_limit).await;
                    }
                }
                if nonce_used {
                    // Mined, and none of ours: another transaction of this account took it.
                    return Err(ChainError::Rpc(format!(
                        "nonce {nonce} was used by another transaction of account {}",
                        self.account
                    )));
                }
                if self.head().await?.number >= start + self.settings.replace_after_blocks
                    || started.elapsed() >= self.settings.replace_after_time
                {
                    break;
                }
                tokio::time::sleep(self.settings.poll_interval).await;
            }
        }
        Err(ChainError::NotMined { nonce, attempts: self.settings.replacements_max + 1 })
    }

    /// The receipt as the port gives it; for a reverted transaction, its reason.
    async fn finish(
        &self,
        request: &TransactionRequest,
        receipt: TransactionReceipt,
        gas_limit: u64,
    ) -> Result<Receipt, ChainError> {
        let tx = receipt.transaction_hash();
        let block = receipt
            .block_number()
            .ok_or_else(|| ChainError::Rpc(format!("the receipt of {tx} names no block")))?;
        if !receipt.status() && receipt.gas_used() >= gas_limit {
            return Err(ChainError::OutOfGas { tx, gas_limit });
        }
        if !receipt.status() {
            let revert = self.revert_reason(request, receipt.transaction_hash(), block).await;
            tracing::debug!(tx = %receipt.transaction_hash(), %revert, "transaction reverted when mined");
            return Err(ChainError::Revert(revert));
        }
        let logs = receipt
            .inner
            .logs()
            .iter()
            .map(|log| ChainLog {
                block: log.block_number.unwrap_or(block),
                address: log.address(),
                topics: log.topics().to_vec(),
                data: log.data().data.clone(),
            })
            .collect();
        let header = self
            .retry("eth_getBlockByNumber", || self.provider.get_block_by_number(block.into()).into_future())
            .await?;
        let timestamp = header.map(|b| b.header.timestamp).ok_or_else(|| {
            ChainError::Rpc(format!("the endpoint has no block {block}, where {tx} was mined"))
        })?;
        Ok(Receipt {
            tx_hash: receipt.transaction_hash(),
            block,
            timestamp,
            gas_used: receipt.gas_used(),
            contract_address: receipt.contract_address(),
            logs,
        })
    }
}

impl RpcChain {
    /// Why a mined transaction reverted: its trace's output where the endpoint traces
    /// (`debug_traceTransaction`: Anvil, and nodes with the debug API), else the revert of the
    /// same call on the state before its block (which may not fail the same way).
    async fn revert_reason(&self, request: &TransactionRequest, tx: B256, block: u64) -> Revert {
        let tracer = serde_json::json!({ "tracer": "callTracer" });
        let limit = self.settings.request_timeout;
        let trace: Option<serde_json::Value> = tokio::time::timeout(
            limit,
            self.provider.raw_request("debug_traceTransaction".into(), (tx, tracer)),
        )
        .await
        .ok()
        .and_then(Result::ok);
        if let Some(output) = trace.as_ref().and_then(|t| t["output"].as_str())
            && let Ok(data) = output.parse::<Bytes>()
        {
            return Revert::decode(&data);
        }
        let before = BlockId::number(block.saturating_sub(1));
        let call = self.provider.call(request.clone()).block(before).into_future();
        match tokio::time::timeout(limit, call).await.map(|answer| answer.map_err(classify)) {
            Ok(Err(ChainError::Revert(revert))) => revert,
            _ => Revert::Unknown(Bytes::new()),
        }
    }
}

#[async_trait]
impl Chain for RpcChain {
    fn account(&self) -> Address {
        self.account
    }

    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    async fn head(&self) -> Result<BlockHead, ChainError> {
        let block = self
            .retry("eth_getBlockByNumber", || {
                self.provider.get_block_by_number(BlockNumberOrTag::Latest).into_future()
            })
            .await?;
        let block = block.ok_or_else(|| ChainError::Rpc("the endpoint has no latest block".into()))?;
        Ok(BlockHead { number: block.header.number, timestamp: block.header.timestamp })
    }

    async fn next_block(&self, number: u64) -> Result<BlockHead, ChainError> {
        loop {
            let head = self.head().await?;
            if head.number > number {
                return Ok(head);
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn call(&self, to: Address, data: Bytes) -> Result<Bytes, ChainError> {
        let request = TransactionRequest::default().with_from(self.account).with_to(to).with_input(data);
        self.retry("eth_call", || self.provider.call(request.clone()).into_future()).await
    }

    async fn send(&self, tx: Transaction) -> Result<Receipt, ChainError> {
        let mut nonces = self.nonces.lock().await;
        let kind = tx.to.map_or(TxKind::Create, TxKind::Call);
        let request = TransactionRequest::default()
            .with_from(self.account)
            .with_kind(kind)
            .with_input(tx.data)
            .with_chain_id(self.chain_id);
        let estimate = self
            .retry("eth_estimateGas", || self.provider.estimate_gas(request.clone()).into_future())
            .await?;
        let gas_limit = estimate + estimate * tx.gas_padding_percent / 100;
        let mut fees = self.fees().await?;
        let nonce = match nonces.next {
            Some(nonce) => nonce,
            None => {
                let mined = self
                    .retry("eth_getTransactionCount", || {
                        self.provider.get_transaction_count(self.account).latest().into_future()
                    })
                    .await?;
                match nonces.stuck {
                    // Still not mined: take its place.
                    Some((stuck, _)) if stuck == mined => mined,
                    _ => {
                        self.retry("eth_getTransactionCount", || {
                            self.provider.get_transaction_count(self.account).pending().into_future()
                        })
                        .await?
                    }
                }
            }
        };
        if let Some((stuck, stuck_fees)) = nonces.stuck
            && stuck == nonce
        {
            fees = fees.max(stuck_fees.bumped());
        }
        let balance = self.balance(self.account).await?;
        let needed = U256::from(gas_limit) * U256::from(fees.max_fee);
        if balance < needed {
            return Err(ChainError::InsufficientFunds { account: self.account, balance, needed });
        }
        // Unknown until this send ends: one given up half way leaves it to be read again.
        nonces.next = None;
        let result = self.send_and_wait(request, nonce, gas_limit, &mut fees).await;
        match &result {
            Ok(_) | Err(ChainError::Revert(_) | ChainError::OutOfGas { .. }) => {
                *nonces = Nonces { next: Some(nonce + 1), stuck: None }
            }
            Err(ChainError::NotMined { .. }) => nonces.stuck = Some((nonce, fees)),
            Err(_) => {}
        }
        result
    }

    async fn logs(&self, filter: LogFilter) -> Result<Vec<ChainLog>, ChainError> {
        let query =
            Filter::new().address(filter.address).from_block(filter.from_block).to_block(filter.to_block);
        let logs = self.retry("eth_getLogs", || self.provider.get_logs(&query)).await?;
        Ok(logs
            .into_iter()
            .filter(|log| !log.removed)
            .map(|log| ChainLog {
                block: log.block_number.unwrap_or_default(),
                address: log.address(),
                topics: log.topics().to_vec(),
                data: log.data().data.clone(),
            })
            .collect())
    }

    async fn balance(&self, who: Address) -> Result<U256, ChainError> {
        self.retry("eth_getBalance", || self.provider.get_balance(who).into_future()).await
    }

    async fn code(&self, at: Address) -> Result<Bytes, ChainError> {
        self.retry("eth_getCode", || self.provider.get_code_at(at).into_future()).await
    }
}

/// Runs a request with a timeout, trying again with back-off while the endpoint fails.
async fn retry<T, F, Fut>(
    endpoint: &str,
    settings: &RpcSettings,
    what: &str,
    request: F,
) -> Result<T, ChainError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
{
    let mut delay = settings.retry_delay_min;
    let mut tries = 0;
    loop {
        let failure = match tokio::time::timeout(settings.request_timeout, request()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if !is_transient(&error) => return Err(classify(error)),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", settings.request_timeout),
        };
        tries += 1;
        if tries > settings.retries {
            return Err(ChainError::Unreachable {
                endpoint: endpoint.to_string(),
                reason: format!("{what}: {failure} (tried {tries} times)"),
            });
        }
        tracing::debug!(endpoint, what, failure, "chain request failed; trying again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(settings.retry_delay_max);
    }
}

/// The endpoint failed (not reachable, overloaded, gone), rather than refused the request.
fn is_transient(error: &RpcError<TransportErrorKind>) -> bool {
    match error {
        RpcError::Transport(_) | RpcError::NullResp => true,
        RpcError::ErrorResp(payload) => payload.code == 429 || payload.code == -32005,
        _ => false,
    }
}

/// A refusal as the port's error: a revert with its decoded reason, or the endpoint's message.
fn classify(error: RpcError<TransportErrorKind>) -> ChainError {
    if let RpcError::ErrorResp(payload) = &error {
        if let Some(data) = payload.as_revert_data() {
            return ChainError::Revert(Revert::decode(&data));
        }
        if payload.message.contains("revert") {
            return ChainError::Revert(Revert::Unknown(Bytes::new()));
        }
        return ChainError::Rpc(payload.message.to_string());
    }
    ChainError::Rpc(error.to_string())
}

/// The endpoint's way of saying a nonce is held: by a transaction mined, or one in the pool
/// (the same one, or one whose fees a replacement must beat).
fn nonce_taken(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("nonce too low") || message.contains("already known") || message.contains("underpriced")
}

/// Reads the account's private key (hex, optionally `0x`-prefixed) from `path`, which only
/// its owner may read.
pub fn read_key(path: &Path) -> Result<PrivateKeySigner, ChainError> {
    let text = crate::secret_file::read(path).map_err(ChainError::Key)?;
    text.parse::<PrivateKeySigner>()
        .map_err(|e| ChainError::Key(format!("{}: not a private key in hex: {e}", path.display())))
}

/// The key file a node makes in its data directory on a local chain.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("eth.key")
}

/// Reads the key at `path`, or makes a new one there (readable by its owner only).
pub fn read_or_create_key(path: &Path) -> Result<PrivateKeySigner, ChainError> {
    if path.exists() {
        return read_key(path);
    }
    // A production-only path: the key comes from the OS's randomness.
    let key = PrivateKeySigner::random();
    crate::secret_file::create(path, &format!("0x{}\n", alloy::hex::encode(key.to_bytes())))
        .map_err(ChainError::Key)?;
    Ok(key)
}
