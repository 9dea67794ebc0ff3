//! The command line (production): `neverust start | upload | download | deploy | proving-key | devnet | check`.

mod chain;
mod check;
mod client;
mod devnet;
mod start;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ByteSize, LogFormat, PartialConfig};

/// Neverust: a storage node for the Archivist/Codex family of durability networks.
#[derive(Debug, Parser)]
#[command(name = "neverust", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of `StartArgs` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Start(StartArgs),
    /// Upload a file to a running node; prints the dataset's CID.
    Upload(UploadArgs),
    /// Download a dataset from a running node.
    Download(DownloadArgs),
    /// Deploy the marketplace contracts (test token, verifier, marketplace) and write where
    /// they are, for `start --deployment`.
    Deploy(chain::DeployArgs),
    /// Make a proving key of the storage-proof circuit by a development setup (its toxic
    /// waste comes from a seed: for development networks and tests, never for real value).
    ProvingKey(ProvingKeyArgs),
    /// Check a stopped node's store: every block against its CID, every leaf against its tree,
    /// held slots against their roots, reference counts and space against a recount.
    Check(check::CheckArgs),
    /// Run a local network until Ctrl-C: Anvil, the contracts deployed, a bootstrap node, hosts
    /// offering space and a validator on loopback, every account funded.
    Devnet(devnet::DevnetArgs),
}

#[derive(Debug, Args)]
pub struct ProvingKeyArgs {
    /// Where to write the key file, which `start --proving-key` and `deploy --proving-key` read.
    #[arg(short, long, default_value = "proving.key", value_name = "FILE")]
    pub output: PathBuf,
    /// Cells sampled per proof [default: 5, Archivist's].
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub samples: usize,
    /// Seed of the setup [default: a random one].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// Settings of `start`. Each also reads from the environment (`NEVERUST_<NAME>`, e.g.
/// `NEVERUST_API_PORT`) and from the TOML file (`api-port = 8080`); flags win over the
/// environment, which wins over the file.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// TOML configuration file (keys as the flags' long names).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the node keeps its store and key [default: the platform data dir, e.g. ~/.local/share/neverust].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the REST API binds to [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub api_bindaddr: Option<IpAddr>,
    /// Port of the REST API [default: 8080].
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// Multiaddrs to listen on for peers (repeatable or comma-separated) [default: /ip4/0.0.0.0/tcp/0, a free port].
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub listen_addrs: Vec<String>,
    /// A bootstrap node's multiaddr with /p2p/<peer id> (repeatable).
    #[arg(long = "bootstrap-node", value_name = "MULTIADDR")]
    pub bootstrap_node: Vec<String>,
    /// Multiaddrs to announce to peers instead of the listen addresses, e.g. a port forward (repeatable or comma-separated).
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub announce_addrs: Vec<String>,
    /// A relay to hold a reservation on, as a multiaddr with /p2p/<peer id>, when this node cannot be dialled directly (repeatable). Without one, a node that AutoNAT finds private reserves on its bootstrap nodes.
    #[arg(long = "relay-node", value_name = "MULTIADDR")]
    pub relay_node: Vec<String>,
    /// Relay circuits for peers that cannot be dialled directly (true or false) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub relay_server: Option<bool>,
    /// Let AutoNAT confirm private and loopback addresses too, for a LAN or a cluster on one machine.
    #[arg(long)]
    pub autonat_private_addrs: bool,
    /// Seconds a client has to send a request's headers; also how long an idle kept-alive connection stays open [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub api_header_timeout: Option<u64>,
    /// Seconds an upload may send nothing before it is abandoned and rolled back (408) [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub api_upload_idle_timeout: Option<u64>,
    /// Uploads read at once; more are answered 503 with Retry-After [default: 16].
    #[arg(long, value_name = "N")]
    pub api_max_uploads: Option<usize>,
    /// Access token every API request but /health must carry (Authorization: Bearer), at least 16 characters. A flag shows in the process list: prefer --api-token-file or NEVERUST_API_TOKEN. Wins over --api-token-file [default: none; a token is required when --api-bindaddr is not loopback].
    #[arg(long, value_name = "TOKEN")]
    pub api_token: Option<String>,
    /// File holding the API access token, readable by its owner only; a random token is written there when the file does not exist.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Origin whose web pages may call the API (CORS), e.g. https://app.example.com, or * for any (repeatable or comma-separated) [default: none].
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    pub api_cors_origin: Vec<String>,
    /// Seconds between checks that the slots of protected datasets held here are still held by their hosts [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub repair_check_interval: Option<u64>,
    /// Seconds a slot may be missing before it is rebuilt on another host (lazy repair) [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub repair_after: Option<u64>,
    /// Most bytes of blocks to store, e.g. 20GiB [default: 20GiB].
    #[arg(long, value_name = "SIZE")]
    pub storage_quota: Option<ByteSize>,
    /// Block size for new uploads, a multiple of 2KiB, e.g. 64KiB [default: 64KiB].
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<ByteSize>,
    /// Log filter: a level (trace, debug, info, warn, error) or directives like `neverust=debug` [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: auto (pretty on a terminal), pretty, plain or json [default: auto].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// The chain's JSON-RPC endpoint, http:// or ws://, e.g. ws://localhost:8545 [default: none, no chain].
    #[arg(long, value_name = "URL")]
    pub eth_provider: Option<String>,
    /// File with the account's private key in hex, readable by its owner only [default on a local chain: DATA_DIR/eth.key, made on first start].
    #[arg(long, value_name = "FILE")]
    pub eth_private_key: Option<PathBuf>,
    /// The marketplace contract's address.
    #[arg(long, value_name = "ADDRESS")]
    pub marketplace_address: Option<String>,
    /// The file `neverust deploy` wrote (chain id and contract addresses), instead of --marketplace-address.
    #[arg(long, value_name = "FILE")]
    pub deployment: Option<PathBuf>,
    /// Proving key file of the storage-proof circuit (a ceremony's, or a development setup's).
    #[arg(long, value_name = "FILE")]
    pub proving_key: Option<PathBuf>,
    /// A circom-compiled proving circuit's constraints (with --circom-wasm and --circom-zkey).
    #[arg(long, value_name = "FILE")]
    pub circom_r1cs: Option<PathBuf>,
    /// The circom circuit's WASM witness generator.
    #[arg(long, value_name = "FILE")]
    pub circom_wasm: Option<PathBuf>,
    /// The circom circuit's snarkjs proving key (the network's published zkey).
    #[arg(long, value_name = "FILE")]
    pub circom_zkey: Option<PathBuf>,
    /// SHA-256 (hex) the proving key or zkey file must have (the network's zkeyHash).
    #[arg(long, value_name = "HEX")]
    pub proving_key_hash: Option<String>,
    /// Validate: mark missed proofs of filled slots, for a share of the slashed collateral.
    #[arg(long)]
    pub validator: bool,
    /// Split the slots among this many validators (2..=65535) [default: every slot].
    #[arg(long, value_name = "N")]
    pub validator_groups: Option<u16>,
    /// The group this validator takes, below --validator-groups [default: 0].
    #[arg(long, value_name = "N")]
    pub validator_group_index: Option<u16>,
    /// Slots a validator tracks at most [default: 0, no limit].
    #[arg(long, value_name = "N")]
    pub validator_max_slots: Option<usize>,
    /// Print the merged configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl StartArgs {
    fn layer(&self) -> PartialConfig {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        PartialConfig {
            data_dir: self.data_dir.clone(),
            api_bindaddr: self.api_bindaddr,
            api_port: self.api_port,
            listen_addrs: list(&self.listen_addrs),
            bootstrap_node: list(&self.bootstrap_node),
            announce_addrs: list(&self.announce_addrs),
            relay_node: list(&self.relay_node),
            relay_server: self.relay_server,
            autonat_private_addrs: self.autonat_private_addrs.then_some(true),
            api_header_timeout: self.api_header_timeout,
            api_upload_idle_timeout: self.api_upload_idle_timeout,
            api_max_uploads: self.api_max_uploads,
            api_token: self.api_token.clone(),
            api_token_file: self.api_token_file.clone(),
            api_cors_origin: list(&self.api_cors_origin),
            repair_check_interval: self.repair_check_interval,
            repair_after: self.repair_after,
            storage_quota: self.storage_quota,
            block_size: self.block_size,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            eth_provider: self.eth_provider.clone(),
            eth_private_key: self.eth_private_key.clone(),
            marketplace_address: self.marketplace_address.clone(),
            deployment: self.deployment.clone(),
            proving_key: self.proving_key.clone(),
            circom_r1cs: self.circom_r1cs.clone(),
            circom_wasm: self.circom_wasm.clone(),
            circom_zkey: self.circom_zkey.clone(),
            proving_key_hash: self.proving_key_hash.clone(),
            validator: self.validator.then_some(true),
            validator_groups: self.validator_groups,
            validator_group_index: self.validator_group_index,
            validator_max_slots: self.validator_max_slots,
        }
    }
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The file to upload.
    pub file: PathBuf,
    #[command(flatten)]
    pub api: ApiTarget,
    /// MIME type to record, e.g. image/png.
    #[arg(long, value_name = "TYPE")]
    pub mime_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The dataset's CID.
    pub cid: String,
    /// Where to write the data (written to FILE.part, renamed when complete) [default: stdout].
    /// A directory keeps the dataset's own filename (its base name only, never a path from the
    /// manifest), or the CID when it has none.
    #[arg(short, long, value_name = "FILE|DIR")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiTarget,
}

/// The running node a client command talks to.
#[derive(Debug, Args)]
pub struct ApiTarget {
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub api_url: String,
    /// File holding the node's API access token (its --api-token-file); NEVERUST_API_TOKEN gives the token itself [default: none].
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Start(args) => start::run(args).await,
        Command::Upload(args) => client::upload(args).await,
        Command::Download(args) => client::download(args).await,
        Command::Deploy(args) => chain::deploy(args).await,
        Command::ProvingKey(args) => proving_key(args),
        Command::Devnet(args) => devnet::run(args).await,
        Command::Check(args) => check::run(args),
    }
}

/// `neverust proving-key`.
fn proving_key(args: ProvingKeyArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let params = crate::proofs::circuit::Params::ARCHIVIST.with_samples(args.samples);
    let started = std::time::Instant::now();
    let prover =
        crate::proofs::prover::Prover::development_setup(params, args.seed.unwrap_or_else(rand::random))
            .context("setting up the storage-proof circuit")?;
    let hash = prover.save(&args.output).with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "wrote {} in {:.1} s: storage-proof circuit {params:?}, key hash {hash}",
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
