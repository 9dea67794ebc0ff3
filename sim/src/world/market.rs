//! The marketplace run by the nodes themselves (`[chain.market]`): the deployment (the
//! stand-in circuit's verifier, as the modeled prover proves it), every node's account funded,
//! the node program's market ports, storage requests from clients, and the oracle's checks of
//! the market: tokens conserved, no honest host slashed, started requests finished and paid
//! (or failed only as the contract allows, the client refunded), freed slots filled again in
//! time; and the market's probes.

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::SolCall;
use async_trait::async_trait;
use neverust::chain::Chain;
use neverust::chain::contracts::Marketplace::MarketplaceEvents;
use neverust::chain::contracts::{Marketplace as M, TestToken};
use neverust::chain::deploy::{self, Deployment};
use neverust::chain::events::market_event;
use neverust::chain::market::{Groth16Proof, Marketplace, RequestId, slot_id};
use neverust::content::{Cid, Manifest};
use neverust::market::availability::NewAvailability;
use neverust::market::proving::{ModeledProver, SlotProver};
use neverust::market::purchasing::{PurchaseState, StorageParams};
use neverust::market::validation::ValidatorConfig;
use neverust::market::{Market, MarketConfig, MarketPorts};
use neverust::proofs::circuit::Params;
use neverust::proofs::proving::{ProvingError, SlotInputs};
use neverust::proofs::stand_in::StandInProver;
use neverust_sim::evm::{CallOutcome, TxRequest};

use super::*;
use crate::chain::SimChainNet;
use crate::scenario::MarketModel;

/// Tokens each node starts with.
const TOKENS: u128 = 1_000_000_000_000_000_000_000;

/// A node's account: a named address, nobody's key.
pub(super) fn account(index: usize) -> Address {
    Address::from_slice(&keccak256(format!("neverust-sim node {index}"))[12..])
}

/// The market of a run.
pub(super) struct MarketRun {
    pub(super) model: MarketModel,
    net: Arc<SimChainNet>,
    deployer: Address,
    block_time: Duration,
    deployment: tokio::sync::watch::Sender<Option<Deployment>>,
    stand_in: Arc<StandInProver>,
    /// Constraints of the modeled circuit (its proving time).
    constraints: u64,
    /// Requests made, by the client node that made them.
    requests: Mutex<Vec<(RequestId, usize)>>,
    /// Nodes' down intervals, in simulated time since the start: (node, from, to).
    downtimes: Mutex<Vec<(usize, Duration, Option<Duration>)>>,
    /// The chain's timestamp at the simulated start.
    chain_start: u64,
    start: tokio::time::Instant,
}

impl MarketRun {
    /// Deploys and funds in the background; nodes wait for it before they start their market.
    pub(super) fn start(
        model: MarketModel,
        net: Arc<SimChainNet>,
        deployer: Address,
        block_time: Duration,
        nodes: usize,
        seed: u64,
    ) -> Arc<MarketRun> {
        let params = Params::ARCHIVIST.with_samples(model.samples);
        let constraints =
            neverust::proofs::prover::circuit_size(params).map(|(c, _, _)| c as u64).unwrap_or(0);
        let chain_start = net.backend().head().timestamp;
        let run = Arc::new(MarketRun {
            model,
            net,
            deployer,
            block_time,
            deployment: tokio::sync::watch::channel(None).0,
            stand_in: Arc::new(StandInProver::setup(seed)),
            constraints,
            requests: Mutex::new(Vec::new()),
            downtimes: Mutex::new(Vec::new()),
            chain_start,
            start: tokio::time::Instant::now(),
        });
        let task = run.clone();
        tokio::spawn(async move {
            match task.deploy(nodes).await {
                Ok(deployment) => {
                    task.deployment.send_replace(Some(deployment));
                }
                Err(e) => tracing::error!(error = %e, "deploying the marketplace failed"),
            }
        });
        run
    }

    async fn deploy(&self, nodes: usize) -> Result<Deployment, String> {
        let deployer = self.net.account(self.deployer);
        let mut config = deploy::default_config();
        config.proofs.period = self.model.proof_period.0.as_secs();
        config.proofs.timeout = (config.proofs.period / 4).max(1);
        config.proofs.downtime = self.model.proof_downtime;
        let deployment = deploy::deploy(&*deployer, &config, self.stand_in.verifier().to_chain(), None)
            .await
            .map_err(|e| format!("deploying: {e}"))?;
        // Every node's tokens in one go: the mints go to the pool together, with consecutive
        // nonces, and land in the next blocks.
        {
            let mut backend = self.net.backend();
            let first = backend.pending_nonce(self.deployer);
            let fee = u128::from(backend.next_base_fee()) * 2 + 1_000_000;
            for (nonce, index) in (first..).zip(0..nodes) {
                let mint = TestToken::mintCall { holder: account(index), amount: U256::from(TOKENS) };
                let tx = TxRequest {
                    from: self.deployer,
                    to: Some(deployment.token),
                    data: mint.abi_encode().into(),
                    value: U256::ZERO,
                    nonce,
                    gas_limit: 200_000,
                    max_fee_per_gas: fee,
                    max_priority_fee_per_gas: 1_000_000,
                };
                backend.submit(tx).map_err(|e| format!("minting: {e}"))?;
            }
        }
        let last = account(nodes.saturating_sub(1));
        let mut head = deployer.head().await.map_err(|e| e.to_string())?;
        loop {
            let balance = neverust::chain::market::view(
                &*deployer,
                deployment.token,
                TestToken::balanceOfCall { account: last },
            )
            .await
            .map_err(|e| format!("minting: {e}"))?;
            if !balance.is_zero() {
                return Ok(deployment);
            }
            head = deployer.next_block(head.number).await.map_err(|e| e.to_string())?;
        }
    }

    async fn deployment(&self) -> Deployment {
        let mut watch = self.deployment.subscribe();
        loop {
            if let Some(deployment) = watch.borrow_and_update().clone() {
                return deployment;
            }
            if watch.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub(super) fn is_validator(&self, index: usize) -> bool {
        (index as u64) < self.model.validators
    }

    fn is_lazy(&self, index: usize) -> bool {
        let first_host = self.model.validators as usize;
        index >= first_host && index < first_host + self.model.lazy_hosts as usize
    }

    /// The market ports and settings of node `index`, once the marketplace is deployed.
    pub(super) async fn ports(
        &self,
        index: usize,
        store: SharedStore,
        compute: Compute,
        client: bool,
    ) -> (MarketPorts, MarketConfig) {
        let deployment = self.deployment().await;
        let chain: Arc<dyn Chain> = self.net.account(account(index));
        let marketplace = loop {
            match Marketplace::connect(chain.clone(), deployment.marketplace).await {
                Ok(market) => break market,
                Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
            }
        };
        let sells = !client && !self.is_validator(index);
        let prover: Option<Arc<dyn SlotProver>> = sells.then(|| {
            let inputs = SlotInputs::new(store, compute, Params::ARCHIVIST.with_samples(self.model.samples));
            let modeled: Arc<dyn SlotProver> =
                Arc::new(ModeledProver::new(inputs, self.constraints, self.stand_in.clone()));
            if self.is_lazy(index) {
                Arc::new(LazyProver { inner: modeled, filled: Mutex::new(Default::default()) })
            } else {
                modeled
            }
        });
        let config = MarketConfig {
            validator: self.is_validator(index).then_some(ValidatorConfig {
                groups: None,
                group_index: 0,
                max_slots: 0,
            }),
            ..MarketConfig::default()
        };
        (MarketPorts { marketplace, prover }, config)
    }

    /// Offers the node's availability, unless it already has one (after a restart).
    pub(super) async fn offer(&self, world: &World, index: usize, node: &Node) {
        let Some(market) = &node.market else { return };
        if !market.sells() || !market.availabilities().is_empty() {
            return;
        }
        let offer = NewAvailability {
            total_size: Some(self.model.availability.0),
            maximum_duration: Some(self.model.duration.0.as_secs() * 2),
            minimum_price_per_byte_per_second: Some(self.model.price.to_string()),
            maximum_collateral_per_byte: Some(self.model.collateral.to_string()),
            ..NewAvailability::default()
        };
        if let Err(e) = market.add_availability(offer).await {
            world.trace.record(format_args!("availability-refused {index} {e}"));
        }
    }

    /// A client uploads fresh data and requests storage for it.
    pub(super) async fn request(self: Arc<Self>, world: Arc<World>, index: usize, seed: u64, size: u64) {
        let Some(node) = world.node(index) else { return };
        let Some(market) = node.market.clone() else { return };
        let bytes = super::workload::data(seed, size);
        let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        let dataset = match node.datasets.upload(body, UploadMeta::default()).await {
            Ok(dataset) => dataset,
            Err(e) => {
                world.trace.record(format_args!("request-upload-failed {index} {e}"));
                return;
            }
        };
        let params = StorageParams {
            duration: Some(self.model.duration.0.as_secs()),
            price_per_byte_per_second: Some(U256::from(self.model.price)),
            proof_probability: Some(U256::from(1)),
            collateral_per_byte: Some(U256::from(self.model.collateral)),
            expiry: Some(self.model.expiry.0.as_secs()),
            nodes: Some(self.model.nodes),
            tolerance: Some(self.model.tolerance),
        };
        match market.request_storage(dataset.cid, params).await {
            Ok(id) => {
                world.trace.record(format_args!("storage-requested {index} {id}"));
                world.probe("storage-requested");
                self.requests.lock().expect("requests").push((id, index));
                if self.model.drop_copy {
                    drop_copy_once_started(&world, index, &market, id, dataset.cid).await;
                }
            }
            Err(e) => world.trace.record(format_args!("request-refused {index} {e}")),
        }
    }

    /// The nodes selling a slot of the first request made (not ended), by slot.
    pub(super) fn hosts_of_first_request(&self, world: &World) -> Vec<usize> {
        let Some((first, _)) = self.requests.lock().expect("requests").first().copied() else {
            return Vec::new();
        };
        let mut hosts: Vec<(u64, usize)> = Vec::new();
        for index in world.live_nodes() {
            let Some(market) = world.node(index).and_then(|n| n.market) else { continue };
            for sale in market.sales() {
                if sale.request_id == first && !sale.state.is_final() {
                    hosts.push((sale.slot_index, index));
                }
            }
        }
        hosts.sort();
        hosts.into_iter().map(|(_, index)| index).collect()
    }

    pub(super) fn node_down(&self, index: usize) {
        let at = self.start.elapsed();
        self.downtimes.lock().expect("downtimes").push((index, at, None));
    }

    pub(super) fn node_up(&self, index: usize) {
        let at = self.start.elapsed();
        for entry in self.downtimes.lock().expect("downtimes").iter_mut().rev() {
            if entry.0 == index && entry.2.is_none() {
                entry.2 = Some(at);
                break;
            }
        }
    }

    /// Whether node `index` was down at any time in chain time `from..to`.
    fn was_down(&self, index: usize, from: u64, to: u64) -> bool {
        let sim = |chain: u64| Duration::from_secs(chain.saturating_sub(self.chain_start));
        let (from, to) = (sim(from), sim(to));
        let now = self.start.elapsed();
        self.downtimes
            .lock()
            .expect("downtimes")
            .iter()
            .any(|&(node, down, up)| node == index && down < to && up.unwrap_or(now) > from)
    }

    fn read<C: SolCall>(&self, to: Address, call: C) -> Option<C::Return> {
        match self.net.backend().call(self.deployer, to, call.abi_encode().into()) {
            CallOutcome::Success(data) => C::abi_decode_returns(&data).ok(),
            _ => None,
        }
    }

    /// The oracle's market checks, and the market's probes.
    pub(super) fn check(&self, world: &World) -> Vec<Verdict> {
        let Some(deployment) = self.deployment.borrow().clone() else {
            return vec![Verdict {
                name: "market".into(),
                passed: false,
                detail: "the marketplace was never deployed".into(),
            }];
        };
        let nodes = world.peers.len();
        let node_of = |address: Address| (0..nodes).find(|&i| account(i) == address);
        let head = self.net.backend().head();
        let logs: Vec<(u64, MarketplaceEvents)> = self
            .net
            .backend()
            .logs(deployment.marketplace, 0, head.number)
            .into_iter()
            .filter_map(|(block, log)| {
                let log = neverust::chain::ChainLog {
                    block,
                    address: log.address,
                    topics: log.topics().to_vec(),
                    data: log.data.data.clone(),
                };
                market_event(&log).map(|event| (block, event))
            })
            .collect();

        // Payments: every token is in an account or held by the marketplace.
        let token = deployment.token;
        let supply = self.read(token, TestToken::totalSupplyCall {}).unwrap_or_default();
        let mut holders: Vec<Address> = (0..nodes).map(account).collect();
        holders.extend([self.deployer, deployment.marketplace]);
        let sum: U256 = holders
            .iter()
            .map(|h| self.read(token, TestToken::balanceOfCall { account: *h }).unwrap_or_default())
            .sum();
        let mut verdicts = vec![Verdict {
            name: "payments".into(),
            passed: sum == supply,
            detail: format!("token supply {supply}, balances (the marketplace's included) sum to {sum}"),
        }];

        // Slashing: no host slashed for a period in which it was up the whole time.
        let period = self.model.proof_period.0.as_secs();
        let mut marks = Vec::new();
        for index in 0..nodes {
            if let Some(node) = world.node(index)
                && let Some(market) = &node.market
            {
                marks.extend(market.validator_marks());
            }
        }
        let unjust: Vec<String> = marks
            .iter()
            .filter_map(|mark| {
                let host = node_of(mark.host)?;
                let (from, to) = (mark.period * period, (mark.period + 1) * period);
                (!self.was_down(host, from, to)).then(|| format!("node {host} in period {}", mark.period))
            })
            .collect();
        for index in 0..nodes {
            let restored = world.node(index).and_then(|n| n.market).map_or(0, |m| m.slots_restored());
            for _ in 0..restored {
                world.probe("slot-restored");
            }
        }
        if !marks.is_empty() {
            world.probe("proof-missed");
            world.probe("host-slashed");
        }
        verdicts.push(Verdict {
            name: "slashing".into(),
            passed: unjust.is_empty(),
            detail: if unjust.is_empty() {
                format!("{} missed proofs marked, each of a host that was down in its period", marks.len())
            } else {
                format!("hosts slashed while up for the whole period: {}", unjust.join(", "))
            },
        });

        // Requests: started ones that ended are finished with their hosts paid, or failed (only
        // the contract fails a request: more than maxSlotLoss slots free at once) with the
        // client refunded; freed slots of running requests are filled again within the bound.
        let requests = self.requests.lock().expect("requests").clone();
        let mut problems = Vec::new();
        let (mut finished, mut failed, mut running) = (0, 0, 0);
        for (id, client) in &requests {
            let state =
                self.read(deployment.marketplace, M::requestStateCall { requestId: *id }).unwrap_or(0);
            let end =
                self.read(deployment.marketplace, M::requestEndCall { requestId: *id }).unwrap_or(u64::MAX);
            let started = logs
                .iter()
                .any(|(_, e)| matches!(e, MarketplaceEvents::RequestFulfilled(f) if f.requestId == *id));
            if !started {
                continue;
            }
            let slots = self.model.nodes;
            match state {
                3 => {
                    finished += 1;
                    world.probe("request-finished");
                    for slot in 0..slots {
                        let sid = slot_id(*id, slot);
                        let slot_state =
                            self.read(deployment.marketplace, M::slotStateCall { slotId: sid }).unwrap_or(0);
                        if slot_state == 4 {
                            world.probe("payout-withdrawn");
                            continue;
                        }
                        // Unpaid: only excusable if its host is not up now.
                        let host = self
                            .read(deployment.marketplace, M::getHostCall { slotId: sid })
                            .unwrap_or_default();
                        if node_of(host).is_some_and(|h| world.life(h) == Life::Up) {
                            problems.push(format!("request {id} slot {slot}: its host (up) was not paid"));
                        }
                    }
                }
                4 => {
                    failed += 1;
                    world.probe("request-failed");
                    let left = self.read(deployment.marketplace, M::requestFundsCall { requestId: *id });
                    let withdrawn =
                        left.is_some_and(|funds| funds.clientFunds.is_zero() && funds.forfeited.is_zero());
                    if !withdrawn && world.life(*client) == Life::Up {
                        problems.push(format!("request {id} failed and its client (up) was not refunded"));
                    }
                }
                1 if head.timestamp > end + period => {
                    problems.push(format!("request {id} still started after its end"));
                }
                _ => running += 1,
            }
        }
        let bound = self.model.repair_bound.0.as_secs();
        let blocks_per_bound = bound / self.block_time.as_secs().max(1);
        for (i, (block, event)) in logs.iter().enumerate() {
            let MarketplaceEvents::SlotFreed(freed) = event else { continue };
            world.probe("slot-freed");
            let refilled = logs[i + 1..].iter().find_map(|(b, e)| match e {
                MarketplaceEvents::SlotFilled(f)
                    if f.requestId == freed.requestId && f.slotIndex == freed.slotIndex =>
                {
                    Some(*b)
                }
                _ => None,
            });
            let ended = logs[i + 1..].iter().find_map(|(b, e)| match e {
                MarketplaceEvents::RequestFailed(f) if f.requestId == freed.requestId => Some(*b),
                _ => None,
            });
            match refilled {
                Some(b) if b - block <= blocks_per_bound => world.probe("slot-repaired-by-market"),
                Some(b) => problems.push(format!(
                    "slot {} of request {} refilled {} blocks after it was freed (bound {blocks_per_bound})",
                    freed.slotIndex,
                    freed.requestId,
                    b - block
                )),
                None if ended.is_some() => {}
                None => {
                    let request_end = self
                        .read(deployment.marketplace, M::requestEndCall { requestId: freed.requestId })
                        .unwrap_or(0);
                    // Blocks from the freeing to now, or to the request's end if it ended.
                    let after_end =
                        head.timestamp.saturating_sub(request_end) / self.block_time.as_secs().max(1);
                    let waited = (head.number - block).saturating_sub(after_end);
                    if waited > blocks_per_bound {
                        problems.push(format!(
                            "slot {} of request {} not refilled {waited} blocks after it was freed (bound {blocks_per_bound})",
                            freed.slotIndex, freed.requestId
                        ));
                    }
                }
            }
        }
        for (_, event) in &logs {
            match event {
                MarketplaceEvents::SlotFilled(_) => world.probe("slot-filled"),
                MarketplaceEvents::ProofSubmitted(_) => world.probe("proof-submitted"),
                _ => {}
            }
        }
        verdicts.push(Verdict {
            name: "requests".into(),
            passed: problems.is_empty(),
            detail: if problems.is_empty() {
                format!(
                    "{} requests made: {finished} finished with their hosts paid, {failed} failed with the client refunded, {running} running; freed slots refilled within {bound}s",
                    requests.len()
                )
            } else {
                problems.join("; ")
            },
        });
        verdicts
    }
}

/// Waits for request `id` to start, then deletes the client's copies of its dataset: the
/// upload `original` and the erasure-coded dataset the request stores.
async fn drop_copy_once_started(world: &World, index: usize, market: &Market, id: RequestId, original: Cid) {
    loop {
        let Some(purchase) = market.purchase(id) else { return };
        match purchase.state {
            PurchaseState::Started => break,
            PurchaseState::Pending | PurchaseState::Submitted | PurchaseState::Unknown => {
                tokio::time::sleep(Duration::from_secs(10)).await
            }
            _ => return,
        }
    }
    let Some(node) = world.node(index) else { return };
    let request = market.purchase(id).expect("a purchase seen").request();
    if let Ok(protected) = Cid::try_from(request.content.cid.as_ref()) {
        let _ = node.datasets.delete(protected).await;
    }
    let _ = node.datasets.delete(original).await;
    world.trace.record(format_args!("copy-dropped {index} {id}"));
}

/// A planted bug (`lazy-hosts`): proves the fill, then never again, though the data is here.
struct LazyProver {
    inner: Arc<dyn SlotProver>,
    filled: Mutex<BTreeSet<(Cid, u32)>>,
}

#[async_trait]
impl SlotProver for LazyProver {
    async fn check(&self, manifest_cid: Cid, manifest: &Manifest, slot: u32) -> Result<(), ProvingError> {
        self.inner.check(manifest_cid, manifest, slot).await
    }

    async fn prove(
        &self,
        manifest_cid: Cid,
        manifest: &Manifest,
        slot: u32,
        challenge: B256,
    ) -> Result<Groth16Proof, ProvingError> {
        if !self.filled.lock().expect("filled").insert((manifest_cid, slot)) {
            return Err(ProvingError::NotVerifiable("a lazy host (planted bug) does not prove".into()));
        }
        self.inner.prove(manifest_cid, manifest, slot, challenge).await
    }

    fn forget(&self, manifest_cid: Cid, slot: u32) {
        self.inner.forget(manifest_cid, slot)
    }
}
