//! Chain helpers of the end-to-end tests: a miner that runs a chain faster than the clock,
//! and development keys as files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use neverust::chain::Chain;
use neverust::chain::anvil::Anvil;
use neverust::chain::rpc::RpcChain;

/// Mines a block every `every` of wall time, `step` seconds of chain time later, until
/// dropped: a chain that runs many times faster than the clock.
pub struct Miner {
    running: Arc<AtomicBool>,
}

impl Miner {
    pub fn start(chain: Arc<RpcChain>, every: Duration, step: u64) -> Miner {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        tokio::spawn(async move {
            while flag.load(Ordering::Relaxed) {
                let head = chain.head().await.unwrap();
                chain.raw::<_, serde_json::Value>("evm_mine", (head.timestamp + step,)).await.unwrap();
                tokio::time::sleep(every).await;
            }
        });
        Miner { running }
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// A file holding Anvil's development key `index`, as `--eth-private-key` reads it.
pub fn dev_key_file(dir: &std::path::Path, anvil: &Anvil, index: usize) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("key{index}"));
    std::fs::write(&path, format!("{}\n", anvil.dev_keys()[index])).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}
