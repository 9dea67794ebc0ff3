//! The chain part of a run: the accounts, the deployment, the walk of one storage request
//! through the marketplace (`neverust::chain::walk`, over each account's `SimChain`), and the
//! oracle's check that payments add up, read from the chain's state directly.

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_sol_types::SolCall;
use neverust::chain::Chain;
use neverust::chain::contracts::TestToken;
use neverust::chain::deploy::{self, Deployment};
use neverust::chain::market::{Ask, Content, Marketplace, Request, collateral_per_slot, max_price};
use neverust::chain::walk::{StandInProofs, Walk, WalkReport};
use neverust::proofs::stand_in::StandInProver;
use neverust_sim::evm::{CallOutcome, ChainParams, EvmBackend};

use super::*;
use crate::chain::{ChainFaults, ChainStats, SimChainNet};
use crate::scenario::{ChainModel, ChainWalk};

/// Ether each account starts with.
const ETHER_WEI: u128 = 1_000 * 1_000_000_000_000_000_000;

/// The accounts of the walk: named addresses, nobody's keys.
pub(super) struct Accounts {
    deployer: Address,
    client: Address,
    hosts: Vec<Address>,
    validator: Address,
}

fn named(name: &str) -> Address {
    Address::from_slice(&keccak256(format!("neverust-sim account {name}"))[12..])
}

impl Accounts {
    fn new(slots: u64) -> Accounts {
        Accounts {
            deployer: named("deployer"),
            client: named("client"),
            hosts: (0..=slots).map(|i| named(&format!("host-{i}"))).collect(),
            validator: named("validator"),
        }
    }

    fn by_name(&self, name: &str) -> Address {
        match name {
            "client" => self.client,
            "validator" => self.validator,
            host => self.hosts[host.trim_start_matches("host-").parse::<usize>().expect("validated")],
        }
    }

    fn all(&self) -> Vec<Address> {
        let mut all = vec![self.deployer, self.client, self.validator];
        all.extend(&self.hosts);
        all
    }
}

/// What the chain did in a run, for the outcome.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ChainSummary {
    #[serde(flatten)]
    pub stats: ChainStats,
    pub fills: u64,
    pub repairs: u64,
    pub proofs: u64,
    pub slashes: u64,
    /// Why the walk failed, if it did (or did not end within the run).
    pub walk_error: Option<String>,
}

pub(super) struct ChainRun {
    pub(super) net: Arc<SimChainNet>,
    accounts: Accounts,
    deployment: Mutex<Option<Deployment>>,
    walked: Mutex<Option<Result<WalkReport, String>>>,
    has_walk: bool,
}

/// Sets the chain up (funded accounts, 256 premined blocks, blocks on the clock) and starts
/// the walk at its time.
pub(super) fn start(
    model: &ChainModel,
    backend: Box<dyn EvmBackend>,
    backend_name: &str,
    rng: &mut ChaCha8Rng,
    trace: Arc<Trace>,
    node_accounts: &[Address],
) -> Arc<ChainRun> {
    let accounts = Accounts::new(model.walk.as_ref().map_or(0, |walk| walk.slots));
    let latency = match model.rpc_latency_ms {
        crate::scenario::Param::Scalar(v) => [v, v],
        crate::scenario::Param::Range(r) => r,
    };
    let mut down: BTreeMap<Address, Vec<(Duration, Duration)>> = BTreeMap::new();
    for outage in &model.endpoint_down {
        down.entry(accounts.by_name(&outage.actor))
            .or_default()
            .push((outage.at.0, outage.at.0 + outage.duration.0));
    }
    let faults = ChainFaults { rpc_latency_ms: latency, tx_drop: model.tx_drop.draw(rng), down };
    let chain_id = ChainParams::default().chain_id;
    let net = SimChainNet::new(
        backend,
        backend_name,
        chain_id,
        faults,
        ChaCha8Rng::seed_from_u64(rng.random()),
        trace,
    );
    {
        let mut backend = net.backend();
        for account in accounts.all().into_iter().chain(node_accounts.iter().copied()) {
            backend.set_balance(account, U256::from(ETHER_WEI));
        }
    }
    // The marketplace reads block hashes 256 blocks back: premine them, a second apart.
    for _ in 0..256 {
        let next = net.backend().head().timestamp + 1;
        net.mine(next);
    }
    net.make_blocks(model.block_time.0);
    let has_walk = model.walk.is_some();
    let run = Arc::new(ChainRun {
        net,
        accounts,
        deployment: Mutex::new(None),
        walked: Mutex::new(None),
        has_walk,
    });
    let Some(walk) = model.walk.clone() else { return run };
    let task = run.clone();
    let setup_seed = rng.random();
    tokio::spawn(async move {
        tokio::time::sleep(walk.at.0).await;
        let result = task.walk(&walk, setup_seed).await;
        if let Err(error) = &result {
            tracing::warn!(%error, "the chain walk failed");
        }
        *task.walked.lock().expect("walked") = Some(result);
    });
    run
}

impl ChainRun {
    /// The account that deploys and mints.
    pub(super) fn deployer(&self) -> Address {
        self.accounts.deployer
    }

    async fn walk(&self, walk: &ChainWalk, setup_seed: u64) -> Result<WalkReport, String> {
        let deployer = self.net.account(self.accounts.deployer);
        let prover = StandInProver::setup(setup_seed);
        let mut config = deploy::default_config();
        config.proofs.period = walk.proof_period.0.as_secs();
        config.proofs.timeout = (config.proofs.period / 4).max(1);
        config.proofs.downtime = walk.proof_downtime;
        let deployment = deploy::deploy(&*deployer, &config, prover.verifier().to_chain(), None)
            .await
            .map_err(|e| format!("deploying: {e}"))?;
        *self.deployment.lock().expect("deployment") = Some(deployment.clone());
        let request = Request {
            client: self.accounts.client,
            ask: Ask {
                proofProbability: U256::from(1),
                pricePerBytePerSecond: U256::from(1),
                collateralPerByte: U256::from(10),
                slots: walk.slots,
                slotSize: walk.slot_size.0,
                duration: walk.duration.0.as_secs(),
                maxSlotLoss: walk.max_slot_loss,
            },
            content: Content {
                cid: Bytes::from_static(b"zDvZRwzm-simulated-dataset"),
                merkleRoot: B256::from(U256::from(0x5eed_u64).to_le_bytes::<32>()),
            },
            expiry: walk.expiry.0.as_secs(),
            nonce: B256::ZERO,
        };
        let mint = |who: Address, amount: U256| deploy::mint(&*deployer, deployment.token, who, amount);
        mint(self.accounts.client, max_price(&request.ask)).await.map_err(|e| format!("minting: {e}"))?;
        for host in &self.accounts.hosts {
            mint(*host, collateral_per_slot(&request.ask) * U256::from(2))
                .await
                .map_err(|e| format!("minting: {e}"))?;
        }
        let market = |account: Address| {
            let chain: Arc<dyn Chain> = self.net.account(account);
            Marketplace::connect(chain, deployment.marketplace)
        };
        let mut hosts = Vec::new();
        for host in &self.accounts.hosts {
            hosts.push(market(*host).await.map_err(|e| e.to_string())?);
        }
        let walk = Walk {
            client: market(self.accounts.client).await.map_err(|e| e.to_string())?,
            hosts,
            validator: market(self.accounts.validator).await.map_err(|e| e.to_string())?,
            request,
            silent_slot: walk.silent_slot,
        };
        walk.run(Arc::new(StandInProofs::new(prover))).await.map_err(|e| e.to_string())
    }

    /// A view read from the chain's state directly (the oracle).
    fn read<C: SolCall>(&self, to: Address, call: C) -> Option<C::Return> {
        match self.net.backend().call(self.accounts.deployer, to, call.abi_encode().into()) {
            CallOutcome::Success(data) => C::abi_decode_returns(&data).ok(),
            _ => None,
        }
    }

    /// Payments: the walk ended with every balance as the rules say, the token's supply is
    /// the sum of the balances, and the marketplace holds nothing once everyone is paid.
    pub(super) fn check_payments(&self) -> Option<Verdict> {
        self.has_walk.then(|| self.check_walk_payments())
    }

    fn check_walk_payments(&self) -> Verdict {
        let fail = |detail: String| Verdict { name: "payments".into(), passed: false, detail };
        let report = match &*self.walked.lock().expect("walked") {
            None => return fail("the walk did not end within the run".into()),
            Some(Err(error)) => return fail(format!("the walk failed: {error}")),
            Some(Ok(report)) => report.clone(),
        };
        let Some(deployment) = self.deployment.lock().expect("deployment").clone() else {
            return fail("nothing deployed".into());
        };
        let token = deployment.token;
        let supply = self.read(token, TestToken::totalSupplyCall {}).unwrap_or_default();
        let mut holders = self.accounts.all();
        holders.push(deployment.marketplace);
        let sum: U256 = holders
            .iter()
            .map(|h| self.read(token, TestToken::balanceOfCall { account: *h }).unwrap_or_default())
            .sum();
        if sum != supply {
            return fail(format!("token supply {supply}, balances sum to {sum}"));
        }
        let held = self
            .read(token, TestToken::balanceOfCall { account: deployment.marketplace })
            .unwrap_or_default();
        if !held.is_zero() {
            return fail(format!("the marketplace still holds {held} after every payout"));
        }
        Verdict {
            name: "payments".into(),
            passed: true,
            detail: format!(
                "{} fills, {} repair, {} proofs, {} slashes; every balance as the rules say; supply {supply} conserved",
                report.fills, report.repairs, report.proofs, report.slashes
            ),
        }
    }

    pub(super) fn summary(&self) -> ChainSummary {
        let walked = self.walked.lock().expect("walked").clone();
        let report = walked.as_ref().and_then(|r| r.as_ref().ok()).cloned().unwrap_or_default();
        ChainSummary {
            stats: self.net.stats(),
            fills: report.fills,
            repairs: report.repairs,
            proofs: report.proofs,
            slashes: report.slashes,
            walk_error: match walked {
                None if !self.has_walk => None,
                None => Some("did not end within the run".into()),
                Some(Err(error)) => Some(error),
                Some(Ok(_)) => None,
            },
        }
    }
}
