//! `neverust start`: resolve the configuration, open the store, serve the API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, reload};

use super::StartArgs;
use crate::api::{self, ApiState, LogLevelSetter};
use crate::config::{Config, LogFormat, PartialConfig};
use crate::durability::DurabilityConfig;
use crate::exchange::EngineConfig;
use crate::market::proving::{CircomSlotProver, CircuitProver, SlotProver};
use crate::market::validation::ValidatorConfig;
use crate::market::{MarketConfig, MarketPorts};
use crate::metrics::Metrics;
use crate::net::p2p::P2pConfig;
use crate::proofs::circuit::Params;
use crate::proofs::proving::{SlotInputs, SlotProofs};
use crate::runtime::{Compute, NodeRng};
use crate::services::{Services, ServicesConfig};
use crate::store::{BlockStore, LmdbStore, SharedStore};

/// Directory of the LMDB store inside the data directory.
pub const STORE_DIR: &str = "store";
/// Lock file inside the data directory, held while a node runs.
pub const LOCK_FILE: &str = "node.lock";

fn resolve(args: &StartArgs) -> anyhow::Result<Config> {
    let env = PartialConfig::from_env(std::env::vars())?;
    let file_path = args.config.clone().or_else(|| std::env::var_os("NEVERUST_CONFIG").map(Into::into));
    let file = match &file_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            Some(PartialConfig::from_toml(&path.display().to_string(), &text)?)
        }
        None => None,
    };
    Ok(Config::resolve(file, env, args.layer())?)
}

/// Installs the log subscriber; returns the setter that changes its filter at run time.
fn init_logging(config: &Config) -> anyhow::Result<LogLevelSetter> {
    let filter = EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("log-level {:?} is not a valid filter", config.log_level))?;
    let (filter, handle) = reload::Layer::new(filter);
    let output = fmt::layer().with_writer(std::io::stderr);
    let output = match config.log_format {
        LogFormat::Json => output.json().boxed(),
        LogFormat::Pretty => output.pretty().boxed(),
        LogFormat::Plain => output.with_ansi(false).boxed(),
        LogFormat::Auto => output.with_ansi(std::io::stderr().is_terminal()).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(output).init();
    Ok(Arc::new(move |directives: &str| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    let config = resolve(&args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let log_level = init_logging(&config)?;
    let unknown = PartialConfig::unknown_env_vars(std::env::vars());
    if !unknown.is_empty() {
        tracing::warn!(?unknown, "ignoring environment variables that name no setting");
    }
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let _lock = lock_data_dir(data_dir)?;
    let access = api::ApiAccess::new(api_token(&config)?.as_deref(), config.api_cors_origin.clone());
    let marketplace = super::chain::connect(&config).await.context("connecting to the marketplace")?;
    // Checked at start so a bad file stops the node now, not at its first proof; the
    // marketplace's sales prove with it.
    let proving = load_proving(&config)?;
    if let Some(proving) = &proving {
        tracing::info!(circuit = %proving.describe(), "proving circuit loaded");
    }
    let keypair = crate::identity::load_or_create(data_dir)?;
    let peer_id = crate::identity::peer_id(&keypair).to_string();

    let store_dir = data_dir.join(STORE_DIR);
    let store = LmdbStore::open(&store_dir, config.storage_quota.0)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    let space = store.space().await?;
    tracing::info!(
        data_dir = %data_dir.display(),
        peer_id = %peer_id,
        quota_bytes = space.quota_max_bytes,
        used_bytes = space.quota_used_bytes,
        block_size_bytes = config.block_size.0,
        "store open"
    );
    let metrics = Arc::new(Metrics::new());
    metrics.observe_space(&space);
    let store: SharedStore = Arc::new(store);
    let market = marketplace.map(|marketplace| MarketPorts {
        marketplace,
        prover: proving.map(|proving| proving.slot_prover(store.clone())),
    });
    let market_config = MarketConfig {
        validator: config.validator.then_some(ValidatorConfig {
            groups: config.validator_groups,
            group_index: config.validator_group_index,
            max_slots: config.validator_max_slots,
        }),
        ..MarketConfig::default()
    };
    let services_config = ServicesConfig {
        block_size_bytes: config.block_size_bytes(),
        p2p: P2pConfig {
            listen_addrs: config.listen_addrs.clone(),
            bootstrap: config.bootstrap_node.clone(),
            announce_addrs: config.announce_addrs.clone(),
            relays: config.relay_node.clone(),
            relay_server: config.relay_server,
            autonat_private_addrs: config.autonat_private_addrs,
            ..P2pConfig::default()
        },
        engine: EngineConfig::default(),
        durability: DurabilityConfig {
            check_interval: Duration::from_secs(config.repair_check_interval),
            repair_after: Duration::from_secs(config.repair_after),
            ..DurabilityConfig::default()
        },
        market,
        market_config,
    };
    let Services { datasets, network, fetcher, durability, market, recovery } =
        Services::start(store, keypair, services_config, metrics).await.context("starting the node")?;
    if recovery.uploads_rolled_back > 0 {
        tracing::warn!(
            uploads = recovery.uploads_rolled_back,
            bytes = recovery.bytes_released,
            "rolled back uploads interrupted by a crash"
        );
    }
    let mut state = ApiState::new(datasets, peer_id, data_dir.clone(), config.listen_addrs.clone())
        .with_limits(api::ApiLimits {
            header_timeout: Duration::from_secs(config.api_header_timeout),
            upload_idle_timeout: Duration::from_secs(config.api_upload_idle_timeout),
            max_uploads: config.api_max_uploads,
        });
    state.access = access;
    state.log_level = Some(log_level);
    state.network = Some(network);
    state.fetcher = Some(fetcher);
    state.durability = Some(durability);
    state.market = market;
    let state = Arc::new(state);
    let address = SocketAddr::new(config.api_bindaddr, config.api_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the API to {address}"))?;
    tracing::info!(
        token_required = state.access.requires_token(),
        "API listening on http://{}/api/archivist/v1",
        listener.local_addr()?
    );
    api::serve(listener, state, shutdown_signal()).await.context("serving the API")?;
    tracing::info!("stopped");
    Ok(())
}

/// The API's access token: `api-token`, or the text of `api-token-file`, which gets a random
/// token when it does not exist yet.
fn api_token(config: &Config) -> anyhow::Result<Option<String>> {
    if let Some(token) = &config.api_token {
        return Ok(Some(token.clone()));
    }
    let Some(path) = &config.api_token_file else {
        return Ok(None);
    };
    if !path.exists() {
        crate::secret_file::create(path, &format!("{}\n", api::access::random_token()))
            .map_err(anyhow::Error::msg)?;
        tracing::info!(file = %path.display(), "wrote a new API access token");
    }
    let token = crate::secret_file::read(path).map_err(anyhow::Error::msg)?;
    crate::config::check_api_token(&token).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(token))
}

/// The proving circuit the configuration names.
pub enum Proving {
    Native(Box<crate::proofs::prover::Prover>),
    Circom(Box<crate::proofs::circom::CircomProver>),
}

impl Proving {
    /// The prover of the slots this node sells, over its store.
    fn slot_prover(self, store: SharedStore) -> Arc<dyn SlotProver> {
        let rng = NodeRng::from_seed(rand::random());
        match self {
            Proving::Native(prover) => {
                let proofs = SlotProofs::new(store, Compute::Pool, Arc::new(*prover))
                    .expect("a loaded key's circuit synthesizes");
                Arc::new(CircuitProver::new(proofs, rng))
            }
            Proving::Circom(prover) => {
                let inputs = SlotInputs::new(store, Compute::Pool, Params::ARCHIVIST);
                Arc::new(CircomSlotProver::new(Arc::new(*prover), inputs, rng))
            }
        }
    }

    /// The circuit and its key's hash, as the log shows them.
    pub fn describe(&self) -> String {
        match self {
            Proving::Native(prover) => {
                format!("storage-proof circuit {:?}, key hash {}", prover.params(), prover.key_hash())
            }
            Proving::Circom(prover) => {
                format!(
                    "circom circuit of {} constraints, zkey hash {}",
                    prover.constraints(),
                    prover.zkey_hash()
                )
            }
        }
    }
}

fn load_proving(config: &Config) -> anyhow::Result<Option<Proving>> {
    let hash = config.proving_key_hash.as_deref();
    if let (Some(r1cs), Some(wasm), Some(zkey)) =
        (&config.circom_r1cs, &config.circom_wasm, &config.circom_zkey)
    {
        let prover = crate::proofs::circom::CircomProver::load(r1cs, wasm, zkey)
            .context("loading the circom circuit")?;
        if let Some(expected) = hash
            && !prover.zkey_hash().eq_ignore_ascii_case(expected)
        {
            anyhow::bail!("{}: hash {}, expected {expected}", zkey.display(), prover.zkey_hash());
        }
        return Ok(Some(Proving::Circom(Box::new(prover))));
    }
    if let Some(path) = &config.proving_key {
        let prover = crate::proofs::prover::Prover::load(path, hash).context("loading the proving key")?;
        return Ok(Some(Proving::Native(Box::new(prover))));
    }
    Ok(None)
}

/// Holds an exclusive lock on the data directory for the life of the node, so a second node
/// cannot open the same store (its crash recovery would roll back this node's uploads).
pub(super) fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another node is already using the data dir {}", data_dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
