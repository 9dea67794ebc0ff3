//! A local Anvil (Foundry's development chain) as a child process: for tests, for deploying
//! on a developer's machine, and for the simulator's `--chain anvil`. Not node logic: nodes
//! reach a chain only through the [`super::Chain`] port.
//!
//! The binary comes from npm (`@foundry-rs/anvil`, pinned in `contracts/package.json`):
//! `NEVERUST_ANVIL` names it, or it is found in `contracts/node_modules`, where it is
//! installed (`npm ci --prefix contracts`) the first time it is needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::B256;

/// Anvil's chain id unless told otherwise.
pub const CHAIN_ID: u64 = 31337;

/// The `contracts/` directory of this source tree.
fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("contracts")
}

/// The platform package's binary under `contracts/node_modules`, if installed.
fn installed() -> Option<PathBuf> {
    let packages = contracts_dir().join("node_modules").join("@foundry-rs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(packages)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("anvil-")))
        .map(|p| p.join("bin").join("anvil"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// The Anvil binary: `NEVERUST_ANVIL`, or the one npm installed for this tree (installing
/// it now when it is missing).
pub fn binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NEVERUST_ANVIL") {
        return Ok(path.into());
    }
    if let Some(path) = installed() {
        return Ok(path);
    }
    let dir = contracts_dir();
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("Anvil is not installed and npm could not run to install it: {e}"))?;
    if !status.success() {
        return Err(format!("`npm ci --prefix {}` failed ({status}): Anvil is not installed", dir.display()));
    }
    installed()
        .ok_or_else(|| format!("npm installed no Anvil binary under {}", dir.join("node_modules").display()))
}

/// How long Anvil may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Anvil, killed when dropped.
pub struct Anvil {
    child: Child,
    port: u16,
    keys: Vec<B256>,
    log: PathBuf,
}

impl Anvil {
    /// Starts Anvil on a free loopback port with `args` added (`--no-mining`,
    /// `--timestamp T`, ...), and waits until it listens. Its output goes to a file in the
    /// temporary directory, removed when it stops.
    pub fn spawn(args: &[&str]) -> Result<Anvil, String> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let binary = binary()?;
        let log = std::env::temp_dir().join(format!(
            "neverust-anvil-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let output = std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdout(output)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut anvil = Anvil { child, port: 0, keys: Vec::new(), log };
        let began = Instant::now();
        loop {
            let text = std::fs::read_to_string(&anvil.log).unwrap_or_default();
            if let Some(port) = listening_port(&text) {
                anvil.port = port;
                anvil.keys = private_keys(&text);
                return Ok(anvil);
            }
            if let Ok(Some(status)) = anvil.child.try_wait() {
                return Err(format!("{} exited before listening ({status}): {text}", binary.display()));
            }
            if began.elapsed() > START_TIMEOUT {
                return Err(format!("{} did not listen within {START_TIMEOUT:?}", binary.display()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_endpoint(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The private keys of Anvil's funded development accounts.
    pub fn dev_keys(&self) -> &[B256] {
        &self.keys
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The port in Anvil's "Listening on 127.0.0.1:PORT" line.
fn listening_port(output: &str) -> Option<u16> {
    let line = output.lines().find_map(|l| l.strip_prefix("Listening on "))?;
    line.trim().rsplit(':').next()?.parse().ok()
}

/// The keys Anvil lists under "Private Keys" as `(0) 0xac09...`.
fn private_keys(output: &str) -> Vec<B256> {
    let mut keys = Vec::new();
    let listed = output.lines().skip_while(|l| !l.starts_with("Private Keys")).skip(1);
    for line in listed.filter(|l| !l.starts_with('=')) {
        match line.split_whitespace().nth(1).and_then(|key| key.parse().ok()) {
            Some(key) => keys.push(key),
            None if keys.is_empty() => continue, // the blank line under the heading
            None => break,
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_port_and_keys() {
        let output = "Available Accounts\n==================\n\n(0) 0xf39F (10000 ETH)\n\nPrivate Keys\n==================\n\n\
                      (0) 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n\
                      (1) 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d\n\nWallet\n\
                      Listening on 127.0.0.1:38571\n";
        assert_eq!(listening_port(output), Some(38571));
        let keys = private_keys(output);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].to_string(), "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d");
    }
}
