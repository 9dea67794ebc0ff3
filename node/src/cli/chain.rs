//! The chain on the command line: `neverust deploy`, and connecting a node to its
//! marketplace at start (with a clear error for each way that can fail).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy::primitives::{Address, U256};
use anyhow::{Context, bail};
use clap::Args;

use crate::chain::deploy::{self, Deployment};
use crate::chain::market::Marketplace;
use crate::chain::rpc::{self, LOCAL_CHAIN_IDS, RpcChain};
use crate::chain::{Chain, ChainError};
use crate::config::Config;
use crate::proofs::groth16::Verifier;

/// The key of the first development account of Anvil (and Hardhat): public knowledge, funded
/// on every fresh local chain; the deployer there unless a key is given.
pub(super) const LOCAL_DEPLOYER_KEY: &str =
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Archivist's deployed storage-proof verifying key (`SampleAndProve(32, 8, 5, 67, 5)`).
const ARCHIVIST_VERIFYING_KEY: &str = include_str!("../proofs/fixtures/proof_main_verification_key.json");
/// What `--fund` gives an account on a local chain.
const FUND_ETHER_WEI: u128 = 100 * 10u128.pow(18);
const FUND_TOKENS: u128 = 1_000_000 * 10u128.pow(18);

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The chain's JSON-RPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8545", value_name = "URL")]
    pub eth_provider: String,
    /// File with the deployer's private key in hex [default on a local chain: its first development account].
    #[arg(long, value_name = "FILE")]
    pub eth_private_key: Option<PathBuf>,
    /// Where to write the deployment, which `neverust start --deployment` reads.
    #[arg(short, long, default_value = "deployment.json", value_name = "FILE")]
    pub output: PathBuf,
    /// The storage-proof circuit's verifying key, snarkjs JSON [default: Archivist's deployed key].
    #[arg(long, value_name = "FILE")]
    pub verifying_key: Option<PathBuf>,
    /// A proving key file (`neverust proving-key`): the verifier takes its verifying key, and
    /// the marketplace its hash as the network's key hash. Instead of --verifying-key.
    #[arg(long, value_name = "FILE", conflicts_with = "verifying_key")]
    pub proving_key: Option<PathBuf>,
    /// An existing ERC20 token to pay in, instead of deploying the test token.
    #[arg(long, value_name = "ADDRESS")]
    pub token: Option<Address>,
    /// Seconds per proof period [default: 120].
    #[arg(long, value_name = "SECONDS")]
    pub proof_period: Option<u64>,
    /// Seconds after a period's end in which its missed proofs can be marked [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub proof_timeout: Option<u64>,
    /// How many of the 256 pointer values require no proof [default: 64].
    #[arg(long, value_name = "N")]
    pub proof_downtime: Option<u8>,
    /// On a local chain, give this account 100 ether and 1,000,000 test tokens (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub fund: Vec<Address>,
}

/// `neverust deploy`: mines past block 256 on a local chain, deploys the test token (unless
/// given one), the verifier and the marketplace, funds accounts on a local chain, and writes
/// the deployment.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let endpoint = &args.eth_provider;
    let chain_id = rpc::chain_id(endpoint).await?;
    let local = LOCAL_CHAIN_IDS.contains(&chain_id);
    let key = match &args.eth_private_key {
        Some(path) => rpc::read_key(path)?,
        None if local => LOCAL_DEPLOYER_KEY.parse().expect("a valid key"),
        None => bail!("--eth-private-key is needed to deploy on chain {chain_id} (not a local chain)"),
    };
    if !args.fund.is_empty() && !local {
        bail!("--fund works on local chains only; chain {chain_id} is not one");
    }
    let chain = RpcChain::connect(endpoint, key, Some(chain_id)).await?;
    let started = std::time::Instant::now();
    let head = chain.head().await?;
    if head.number <= 256 {
        if !local {
            bail!(
                "chain {chain_id} is at block {}: the marketplace needs 256 blocks of history",
                head.number
            );
        }
        // Challenges read block hashes 256 blocks back.
        let blocks = 257 - head.number;
        chain.raw::<_, serde_json::Value>("anvil_mine", (format!("{blocks:#x}"),)).await?;
        println!("mined {blocks} blocks (the marketplace needs 256 blocks of history)");
    }
    let mut config = deploy::default_config();
    let verifier = match (&args.verifying_key, &args.proving_key) {
        (_, Some(path)) => {
            let prover =
                crate::proofs::prover::Prover::load(path, None).context("loading the proving key")?;
            config.proofs.zkeyHash = prover.key_hash().to_owned();
            prover.verifier().clone()
        }
        (Some(path), None) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Verifier::from_snarkjs(&text).context("the verifying key")?
        }
        (None, None) => Verifier::from_snarkjs(ARCHIVIST_VERIFYING_KEY).context("the verifying key")?,
    };
    config.proofs.period = args.proof_period.unwrap_or(config.proofs.period);
    config.proofs.timeout = args.proof_timeout.unwrap_or(config.proofs.timeout);
    config.proofs.downtime = args.proof_downtime.unwrap_or(config.proofs.downtime);
    let deployment = deploy::deploy(&chain, &config, verifier.to_chain(), args.token).await?;
    // Written before funding: whatever happens next, the contracts are not lost.
    write_deployment(&args.output, &deployment)?;
    let test_token = args.token.is_none().then_some(deployment.token);
    for account in &args.fund {
        fund(&chain, test_token, *account).await?;
        if test_token.is_some() {
            println!("funded {account} with ether and test tokens");
        } else {
            println!("funded {account} with ether (tokens of --token are not ours to mint)");
        }
    }
    println!(
        "deployed on chain {chain_id} in {:.1} s: token {}, verifier {}, marketplace {} (block {})\nwrote {}",
        started.elapsed().as_secs_f64(),
        deployment.token,
        deployment.verifier,
        deployment.marketplace,
        deployment.block,
        args.output.display()
    );
    Ok(())
}

/// On a local chain, gives `account` 100 ether, and 1,000,000 of the test token when given it
/// (the test token lets anyone mint).
pub(super) async fn fund(
    chain: &RpcChain,
    test_token: Option<Address>,
    account: Address,
) -> anyhow::Result<()> {
    chain.raw::<_, serde_json::Value>("anvil_setBalance", (account, U256::from(FUND_ETHER_WEI))).await?;
    if let Some(token) = test_token {
        deploy::mint(chain, token, account, U256::from(FUND_TOKENS)).await?;
    }
    Ok(())
}

fn write_deployment(path: &Path, deployment: &Deployment) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(deployment).expect("a deployment serialises") + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub(super) fn read_deployment(path: &Path) -> anyhow::Result<Deployment> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the deployment {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a deployment file", path.display()))
}

/// Connects a starting node to its marketplace, when the configuration names a chain:
/// reaches the endpoint (or fails after retries), checks the chain id, reads or makes the
/// account's key, checks that a marketplace answers at the address, and that the account can
/// pay for gas.
pub async fn connect(config: &Config) -> anyhow::Result<Option<Marketplace>> {
    let Some(endpoint) = &config.eth_provider else { return Ok(None) };
    let deployment = config.deployment.as_deref().map(read_deployment).transpose()?;
    let chain_id = rpc::chain_id(endpoint).await?;
    if let Some(deployment) = &deployment
        && deployment.chain_id != chain_id
    {
        return Err(ChainError::WrongChain { expected: deployment.chain_id, actual: chain_id }.into());
    }
    let local = LOCAL_CHAIN_IDS.contains(&chain_id);
    let key = match &config.eth_private_key {
        Some(path) => rpc::read_key(path)?,
        None if local => rpc::read_or_create_key(&rpc::key_path(&config.data_dir))?,
        None => bail!(
            "eth-private-key is needed on chain {chain_id}: a node makes its own key only on a local chain"
        ),
    };
    let chain: Arc<dyn Chain> = Arc::new(RpcChain::connect(endpoint, key, Some(chain_id)).await?);
    let address = match (&config.marketplace_address, &deployment) {
        (Some(text), _) => text.parse().context("marketplace-address")?,
        (None, Some(deployment)) => deployment.marketplace,
        (None, None) => unreachable!("the configuration names a marketplace with a chain"),
    };
    let market = Marketplace::connect(chain.clone(), address).await?;
    if let Some(deployment) = &deployment
        && market.token() != deployment.token
    {
        bail!(
            "the marketplace at {address} pays in token {}, not the deployment's {}",
            market.token(),
            deployment.token
        );
    }
    let account = chain.account();
    let ether = chain.balance(account).await?;
    if ether.is_zero() {
        let hint = if local {
            format!(" (on a local chain, a deployment made with `neverust deploy --fund {account}` funds it)")
        } else {
            String::new()
        };
        bail!("account {account} has no ether on chain {chain_id} to pay for gas: fund it{hint}");
    }
    let tokens = market.token_balance(account).await?;
    tracing::info!(%account, chain_id, marketplace = %address, %ether, %tokens, "marketplace connected");
    Ok(Some(market))
}
