//! `neverust devnet`: a whole local network in one command — Anvil, the contracts deployed,
//! N nodes on loopback (a bootstrap node that buys storage, hosts that sell it, a validator),
//! every account funded — until Ctrl-C. With `--dir` the network's state (the chain, the
//! deployment, the proving key, every node's data and keys) is kept for the next start.
//!
//! Every node is a real `neverust start` process (this same binary) with its own data
//! directory and log file; the chain is a real Anvil process (the project's pinned npm
//! package, see `chain::anvil`).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use super::chain::{DeployArgs, LOCAL_DEPLOYER_KEY, read_deployment};
use crate::chain::Chain;
use crate::chain::rpc::{self, RpcChain};

#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Nodes to start: a bootstrap node (it buys storage), hosts (they sell it) and, with 3 or
    /// more, a validator.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Keep the network's state here (chain, contracts, proving key, every node's data and keys)
    /// and start from it next time [default: a temporary directory, removed at exit].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// API port of the first node; node i serves its API and web UI on PORT + i.
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub api_port: u16,
    /// Port of the chain's JSON-RPC endpoint (Anvil).
    #[arg(long, default_value_t = 8545, value_name = "PORT")]
    pub chain_port: u16,
    /// Seconds between the chain's blocks.
    #[arg(long, default_value_t = 1, value_name = "SECONDS")]
    pub block_time: u64,
    /// Cells sampled per storage proof (the development proving key's circuit; Archivist's is 5).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub proof_samples: usize,
    /// Seconds per proof period of the marketplace.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub proof_period: u64,
    /// Storage quota of each node.
    #[arg(long, default_value = "4GiB", value_name = "SIZE")]
    pub storage_quota: crate::config::ByteSize,
}

/// What a node is for in the devnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    /// The first node: others bootstrap from it; it has no availability, so it buys.
    Bootstrap,
    /// Sells storage: started with the proving key, offers half its quota.
    Host,
    /// Marks missed proofs.
    Validator,
}

fn role(index: u16, nodes: u16) -> Role {
    match index {
        0 => Role::Bootstrap,
        i if nodes >= 3 && i == nodes - 1 => Role::Validator,
        _ => Role::Host,
    }
}

/// A node of the devnet, as `devnet.json` lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeInfo {
    name: String,
    role: Role,
    api: String,
    ui: String,
    peer_id: String,
    account: Address,
    data_dir: PathBuf,
    log: PathBuf,
}

/// A child process, stopped (SIGTERM, then SIGKILL after a grace period) when dropped.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, command: &mut Command, log: &Path) -> anyhow::Result<Process> {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process { name: name.to_string(), child, log: log.to_path_buf() })
    }

    /// `Some(status)` once the process has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    /// The last lines of its log, to say why it stopped.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

/// Stops processes in reverse order of starting (nodes before the chain they use).
struct Processes(Vec<Process>);

impl Processes {
    fn stop(&mut self) {
        const GRACE: Duration = Duration::from_secs(10);
        for process in self.0.iter().rev() {
            process.terminate();
        }
        let deadline = Instant::now() + GRACE;
        for process in self.0.iter_mut().rev() {
            while process.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if process.exited().is_none() {
                eprintln!("{} did not stop within {GRACE:?}: killing it", process.name);
                let _ = process.child.kill();
                let _ = process.child.wait();
            }
        }
        self.0.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The state directory: `--dir`, kept, or a temporary one removed when dropped.
struct StateDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `neverust devnet`.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    let nodes = args.nodes;
    let last_api_port = u32::from(args.api_port) + u32::from(nodes) - 1;
    if args.api_port == 0 || last_api_port > u32::from(u16::MAX) {
        bail!("--api-port {} leaves no room for {nodes} nodes' API ports", args.api_port);
    }
    for port in [args.chain_port].into_iter().chain((0..nodes).map(|i| args.api_port + i)) {
        if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_err() {
            bail!(
                "port {port} on 127.0.0.1 is taken (another devnet or node?): choose others with --api-port and --chain-port"
            );
        }
    }
    let state = match &args.dir {
        Some(dir) => StateDir { path: dir.clone(), keep: true },
        None => StateDir {
            path: std::env::temp_dir().join(format!("neverust-devnet-{}", std::process::id())),
            keep: false,
        },
    };
    let dir = &state.path;
    std::fs::create_dir_all(dir.join("chain")).with_context(|| format!("creating {}", dir.display()))?;
    let mut processes = Processes(Vec::new());

    // The chain.
    let anvil = crate::chain::anvil::binary().map_err(anyhow::Error::msg)?;
    let chain_state = dir.join("chain").join("state.json");
    let mut command = Command::new(&anvil);
    command
        .args(["--host", "127.0.0.1", "--port", &args.chain_port.to_string()])
        .args(["--block-time", &args.block_time.to_string()])
        .arg("--state")
        .arg(&chain_state)
        .args(["--state-interval", "10"]);
    processes.0.push(Process::spawn("anvil", &mut command, &dir.join("anvil.log"))?);
    let endpoint = format!("http://127.0.0.1:{}", args.chain_port);
    let chain_id = wait_for_chain(&endpoint, &mut processes.0[0]).await?;
    println!("chain {chain_id} at {endpoint} (Anvil; log {})", dir.join("anvil.log").display());

    // Every node's account, made before the nodes start so the deployment can fund them.
    let mut accounts = Vec::new();
    for i in 0..nodes {
        let data_dir = dir.join(node_name(i));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        accounts.push(rpc::read_or_create_key(&rpc::key_path(&data_dir))?.address());
    }

    // The contracts, deployed once and kept in the chain's state.
    let proving_key = dir.join("proving.key");
    if !proving_key.exists() {
        super::proving_key(super::ProvingKeyArgs {
            output: proving_key.clone(),
            samples: args.proof_samples,
            seed: Some(0),
        })?;
    }
    let deployment_file = dir.join("deployment.json");
    let deployer =
        RpcChain::connect(&endpoint, LOCAL_DEPLOYER_KEY.parse().expect("a valid key"), Some(chain_id))
            .await?;
    let deployed = match deployment_file.exists().then(|| read_deployment(&deployment_file)).transpose()? {
        Some(deployment) if !deployer.code(deployment.marketplace).await?.is_empty() => Some(deployment),
        _ => None,
    };
    let deployment = match deployed {
        Some(deployment) => {
            println!("contracts already deployed: marketplace {}", deployment.marketplace);
            for &account in &accounts {
                if deployer.balance(account).await?.is_zero() {
                    super::chain::fund(&deployer, Some(deployment.token), account).await?;
                    println!("funded {account} with ether and test tokens");
                }
            }
            deployment
        }
        None => {
            super::chain::deploy(DeployArgs {
                eth_provider: endpoint.clone(),
                eth_private_key: None,
                output: deployment_file.clone(),
                verifying_key: None,
                proving_key: Some(proving_key.clone()),
                token: None,
                proof_period: Some(args.proof_period),
                proof_timeout: None,
                proof_downtime: None,
                fund: accounts.clone(),
            })
            .await
            .context("deploying the contracts")?;
            read_deployment(&deployment_file)?
        }
    };

    // The nodes: the bootstrap node first, then the others at once, bootstrapping from it.
    let ws = format!("ws://127.0.0.1:{}", args.chain_port);
    let exe = std::env::current_exe().context("finding this program")?;
    let mut infos: Vec<NodeInfo> = Vec::new();
    let mut bootstrap: Option<String> = None;
    for batch in [0..1.min(nodes), 1..nodes] {
        let mut started = Vec::new();
        for i in batch {
            let name = node_name(i);
            let data_dir = dir.join(&name);
            let api_port = args.api_port + i;
            let mut command = Command::new(&exe);
            command
                .arg("start")
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--api-port", &api_port.to_string()])
                .args(["--listen-addrs", "/ip4/127.0.0.1/tcp/0", "--autonat-private-addrs"])
                .args(["--log-format", "plain", "--storage-quota", &args.storage_quota.0.to_string()])
                .args(["--eth-provider", &ws])
                .arg("--deployment")
                .arg(&deployment_file)
                .env_remove("NEVERUST_CONFIG");
            if let Some(address) = &bootstrap {
                command.args(["--bootstrap-node", address]);
            }
            let role = role(i, nodes);
            match role {
                Role::Host => {
                    command.arg("--proving-key").arg(&proving_key);
                }
                Role::Validator => {
                    command.arg("--validator");
                }
                Role::Bootstrap => {}
            }
            let log = dir.join(format!("{name}.log"));
            processes.0.push(Process::spawn(&name, &mut command, &log)?);
            started.push((i, role, processes.0.len() - 1));
        }
        for (i, role, process) in started {
            let api = format!("http://127.0.0.1:{}", args.api_port + i);
            let info = wait_for_node(&api, &mut processes.0[process]).await?;
            let peer_id = info["id"].as_str().unwrap_or_default().to_string();
            if i == 0 {
                let address = info["addrs"][0].as_str().context("the bootstrap node has no address")?;
                bootstrap = Some(format!("{address}/p2p/{peer_id}"));
            }
            if role == Role::Host {
                offer_space(&api, args.storage_quota.0 / 2).await?;
            }
            infos.push(NodeInfo {
                name: node_name(i),
                role,
                ui: format!("{api}/"),
                api: format!("{api}/api/archivist/v1"),
                peer_id,
                account: accounts[usize::from(i)],
                data_dir: dir.join(node_name(i)),
                log: processes.0[process].log.clone(),
            });
        }
    }
    let summary = json!({
        "chain": endpoint,
        "chainId": chain_id,
        "deployment": deployment,
        "dir": dir,
        "nodes": infos,
    });
    let summary_file = dir.join("devnet.json");
    std::fs::write(&summary_file, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", summary_file.display()))?;

    println!();
    for node in &infos {
        let role = format!("{:?}", node.role).to_lowercase();
        println!(
            "  {:<8} {role:<10} web UI {:<24} API {}  account {}",
            node.name, node.ui, node.api, node.account
        );
    }
    println!();
    println!(
        "devnet ready: {nodes} nodes, marketplace {} on chain {chain_id} ({endpoint})",
        deployment.marketplace
    );
    if state.keep {
        println!("state kept in {} (devnet.json lists the nodes; logs beside them)", dir.display());
    } else {
        println!("state in {} (removed at exit; --dir keeps it)", dir.display());
    }
    println!("Ctrl-C stops the network");

    let outcome = watch(&mut processes).await;
    println!("stopping the devnet");
    processes.stop();
    outcome
}

fn node_name(index: u16) -> String {
    format!("node-{index}")
}

/// Waits for a signal to stop (Ctrl-C, SIGTERM) or a process of the network to exit, which is
/// an error: a devnet with a dead node is not the network that was asked for.
async fn watch(processes: &mut Processes) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            _ = &mut interrupt => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for process in &mut processes.0 {
            if let Some(status) = process.exited() {
                bail!(
                    "{} exited ({status}); the end of {}:\n{}",
                    process.name,
                    process.log.display(),
                    process.log_tail()
                );
            }
        }
    }
}

/// How long a process of the network may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until the chain answers; its chain id.
async fn wait_for_chain(endpoint: &str, anvil: &mut Process) -> anyhow::Result<u64> {
    let began = Instant::now();
    loop {
        if let Some(status) = anvil.exited() {
            bail!("Anvil exited ({status}):\n{}", anvil.log_tail());
        }
        if let Ok(id) = rpc::chain_id(endpoint).await {
            return Ok(id);
        }
        if began.elapsed() > START_TIMEOUT {
            bail!("Anvil did not answer at {endpoint} within {START_TIMEOUT:?}:\n{}", anvil.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a node's API answers and it listens for peers; its `/debug/info`.
async fn wait_for_node(api: &str, node: &mut Process) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let began = Instant::now();
    loop {
        if let Some(status) = node.exited() {
            bail!("{} exited ({status}); the end of {}:\n{}", node.name, node.log.display(), node.log_tail());
        }
        let info = client.get(format!("{api}/api/archivist/v1/debug/info")).send().await;
        if let Ok(response) = info
            && let Ok(info) = response.json::<Value>().await
            && info["addrs"].as_array().is_some_and(|a| !a.is_empty())
        {
            return Ok(info);
        }
        if began.elapsed() > START_TIMEOUT {
            bail!("{} did not come up at {api} within {START_TIMEOUT:?}:\n{}", node.name, node.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A host's offer, unless it has one already (a restarted devnet keeps its availabilities).
async fn offer_space(api: &str, bytes: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{api}/api/archivist/v1/sales/availability");
    let existing: Value = client.get(&url).send().await?.error_for_status()?.json().await?;
    if existing.as_array().is_some_and(|a| !a.is_empty()) {
        return Ok(());
    }
    let offer = json!({
        "totalSize": bytes,
        "maximumDuration": 30 * 24 * 3600,
        "minimumPricePerBytePerSecond": "1",
        "maximumCollateralPerByte": "1000",
    });
    let response = client.post(&url).json(&offer).send().await?;
    if !response.status().is_success() {
        bail!("offering space at {api}: {} {}", response.status(), response.text().await.unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_position() {
        let roles = |n| (0..n).map(|i| role(i, n)).collect::<Vec<_>>();
        assert_eq!(roles(1), [Role::Bootstrap]);
        assert_eq!(roles(2), [Role::Bootstrap, Role::Host]);
        assert_eq!(roles(3), [Role::Bootstrap, Role::Host, Role::Validator]);
        assert_eq!(roles(5), [Role::Bootstrap, Role::Host, Role::Host, Role::Host, Role::Validator]);
    }
}
