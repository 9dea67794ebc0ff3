//! One simulated run: nodes running the real node logic over simulated ports, the scenario's
//! workloads and faults, and the oracle checking the invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use neverust::content::{Cid, block_cid, cid_to_string};
use neverust::dataset::UploadMeta;
use neverust::exchange::EngineConfig;
use neverust::metrics::Metrics;
use neverust::net::PeerId;
use neverust::node::{Node, NodeConfig};
use neverust::runtime::Compute;
use neverust::store::{KvStore, SharedStore};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dht::ModeledDht;
use crate::disk::{DiskProfile, DiskStats, SimDisk, SimDiskEngine};
use crate::net::{Fabric, LinkParams, NetStats};
use crate::scenario::{Role, Scenario, Target, WorkloadKind};
use crate::trace::Trace;

/// Pause between retries of a check download during healing.
const CHECK_RETRY: Duration = Duration::from_secs(30);
/// Samples of the timeline for the report.
const TIMELINE_SAMPLES: u32 = 100;

/// The result of one run.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub trace_hash: String,
    pub trace_events: u64,
    /// Nodes at the start (see `arrivals` for those that joined later).
    pub nodes: usize,
    pub virtual_time_s: f64,
    pub wall_time_s: f64,
    pub speed: f64,
    pub uploads_acknowledged: u64,
    pub uploads_failed: u64,
    pub downloads_completed: u64,
    pub downloads_failed: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub departures: u64,
    pub arrivals: u64,
    pub network: NetStats,
    pub dht_lookups: u64,
    pub dht_records_lost: u64,
    pub disk: DiskStats,
    pub probes: BTreeMap<String, u64>,
    pub invariants: Vec<Verdict>,
    pub expected_failure: Option<String>,
    pub timeline: Vec<Sample>,
}

impl Outcome {
    /// Failed invariants.
    pub fn failed(&self) -> Vec<&Verdict> {
        self.invariants.iter().filter(|v| !v.passed).collect()
    }

    /// Whether the run is a pass: every invariant held, or exactly the expected one failed.
    pub fn ok(&self) -> bool {
        let failed: BTreeSet<&str> = self.failed().iter().map(|v| v.name.as_str()).collect();
        match &self.expected_failure {
            None => failed.is_empty(),
            Some(expected) => failed.len() == 1 && failed.contains(expected.as_str()),
        }
    }
}

/// One invariant's result.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The state of the run at one point of virtual time.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Sample {
    pub t_s: f64,
    pub live_nodes: usize,
    pub datasets: usize,
    pub datasets_available: usize,
    pub bytes_sent: u64,
}

/// What the oracle knows about an acknowledged dataset.
struct Truth {
    cid: Cid,
    size: u64,
    digest: [u8; 32],
    /// Keys of the dataset's blocks on disk (block CIDs).
    blocks: Vec<Vec<u8>>,
    /// For a protected dataset (then `cid` and `blocks` are the protected dataset's): K, M and
    /// the block keys of each slot.
    slots: Option<SlotTruth>,
}

struct SlotTruth {
    k: usize,
    slot_blocks: Vec<Vec<Vec<u8>>>,
    /// The nodes each slot was first placed on (empty until placement completes).
    placed_on: Vec<Vec<usize>>,
}

/// A node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// A node that joins later (a churn arrival).
    Absent,
    Up,
    Down,
    Departed,
}

struct World {
    trace: Arc<Trace>,
    fabric: Arc<Fabric>,
    dht: Arc<ModeledDht>,
    peers: Vec<PeerId>,
    disks: Mutex<Vec<Arc<SimDisk>>>,
    services: Vec<Mutex<Option<Node>>>,
    life: Mutex<Vec<Life>>,
    /// Bumped at every stop, so a restart timer of an earlier stop does nothing.
    epochs: Mutex<Vec<u64>>,
    /// Each node's madsim id, by index. (Ids, not handles: a handle kept across a restart
    /// spawns onto the killed incarnation.)
    madsim_nodes: Mutex<Vec<madsim::task::NodeId>>,
    /// The clients: churn and random faults never touch them.
    clients: BTreeSet<usize>,
    block_size: usize,
    quota: u64,
    republish: Duration,
    /// The nodes' check and repair timing.
    repair: neverust::durability::DurabilityConfig,
    hash_rate: u64,
    truths: Mutex<Vec<Truth>>,
    probes: Mutex<BTreeMap<String, u64>>,
    counters: Mutex<Counters>,
    integrity_violations: Mutex<Vec<String>>,
    /// When the last partition healed, if one did.
    healed_at: Mutex<Option<tokio::time::Instant>>,
}

#[derive(Default)]
struct Counters {
    uploads_acknowledged: u64,
    uploads_failed: u64,
    downloads_completed: u64,
    downloads_failed: u64,
    crashes: u64,
    restarts: u64,
    departures: u64,
    arrivals: u64,
}

/// A peer ID for simulated node `index`: an identity multihash of its name.
fn sim_peer_id(index: usize) -> PeerId {
    let name = format!("neverust-sim-{index:05}");
    let mut bytes = vec![0x00, name.len() as u8];
    bytes.extend_from_slice(name.as_bytes());
    PeerId::from_bytes(bytes)
}

impl World {
    fn probe(&self, name: &str) {
        *self.probes.lock().expect("probes").entry(name.to_string()).or_default() += 1;
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().expect("counters"));
    }

    fn life(&self, index: usize) -> Life {
        self.life.lock().expect("life")[index]
    }

    fn live_nodes(&self) -> Vec<usize> {
        let life = self.life.lock().expect("life");
        (0..life.len()).filter(|&i| life[i] == Life::Up).collect()
    }

    fn disk(&self, index: usize) -> Arc<SimDisk> {
        self.disks.lock().expect("disks")[index].clone()
    }

    fn node(&self, index: usize) -> Option<Node> {
        self.services[index].lock().expect("services").clone()
    }

    /// Nodes (not departed) whose disk holds an intact copy of dataset `d`.
    /// Nodes (not departed) holding an intact copy of dataset `d`, or an intact slot of it.
    fn holders(&self, d: usize) -> Vec<usize> {
        let truths = self.truths.lock().expect("truths");
        let truth = &truths[d];
        let life = self.life.lock().expect("life").clone();
        let disks = self.disks.lock().expect("disks").clone();
        (0..life.len())
            .filter(|&i| life[i] != Life::Departed)
            .filter(|&i| {
                disks[i].holds_intact(&truth.cid, &truth.blocks)
                    || truth.slots.as_ref().is_some_and(|slots| {
                        (0..slots.slot_blocks.len())
                            .any(|s| disks[i].holds_slot(&truth.cid, s as u32, &slots.slot_blocks[s]))
                    })
            })
            .collect()
    }

    /// Slots of protected dataset `d` held intact by nodes in `lives`, by slot.
    fn live_slots(&self, d: usize, lives: &[Life]) -> BTreeSet<usize> {
        let truths = self.truths.lock().expect("truths");
        let truth = &truths[d];
        let Some(slots) = &truth.slots else { return BTreeSet::new() };
        let life = self.life.lock().expect("life").clone();
        let disks = self.disks.lock().expect("disks").clone();
        (0..slots.slot_blocks.len())
            .filter(|&s| {
                (0..life.len()).any(|i| {
                    lives.contains(&life[i])
                        && disks[i].holds_slot(&truth.cid, s as u32, &slots.slot_blocks[s])
                })
            })
            .collect()
    }

    /// Nodes (not departed) holding slot `slot` of dataset `d` intact.
    fn slot_holders(&self, d: usize, slot: usize) -> Vec<usize> {
        let truths = self.truths.lock().expect("truths");
        let truth = &truths[d];
        let Some(slots) = &truth.slots else { return Vec::new() };
        let life = self.life.lock().expect("life").clone();
        let disks = self.disks.lock().expect("disks").clone();
        (0..life.len())
            .filter(|&i| {
                life[i] != Life::Departed
                    && disks[i].holds_slot(&truth.cid, slot as u32, &slots.slot_blocks[slot])
            })
            .collect()
    }

    /// Whether a slot of dataset `d` is held by a node it was not placed on: it was repaired.
    fn slot_moved(&self, d: usize) -> bool {
        let placed = match self.truths.lock().expect("truths")[d].slots.as_ref() {
            Some(slots) if !slots.placed_on.is_empty() => slots.placed_on.clone(),
            _ => return false,
        };
        placed.iter().enumerate().any(|(s, on)| self.slot_holders(d, s).iter().any(|i| !on.contains(i)))
    }

    /// Whether dataset `d` can still be read: an intact copy, or (protected) any K intact slots,
    /// on nodes that have not departed.
    fn available(&self, d: usize) -> bool {
        let whole = {
            let truths = self.truths.lock().expect("truths");
            let truth = &truths[d];
            let life = self.life.lock().expect("life").clone();
            let disks = self.disks.lock().expect("disks").clone();
            (0..life.len())
                .any(|i| life[i] != Life::Departed && disks[i].holds_intact(&truth.cid, &truth.blocks))
        };
        let k = self.truths.lock().expect("truths")[d].slots.as_ref().map(|s| s.k);
        whole || k.is_some_and(|k| self.live_slots(d, &[Life::Up, Life::Down]).len() >= k)
    }

    /// Why dataset `d` has no intact copy: where its copies were and what became of them.
    fn copies_lost(&self, d: usize) -> String {
        let truths = self.truths.lock().expect("truths");
        let truth = &truths[d];
        let life = self.life.lock().expect("life").clone();
        let disks = self.disks.lock().expect("disks").clone();
        let mut notes = Vec::new();
        for i in 0..life.len() {
            if !disks[i].holds_manifest(&truth.cid) {
                continue;
            }
            notes.push(if life[i] == Life::Departed {
                format!("node {i} held it and departed")
            } else {
                format!("node {i}'s copy damaged by disk faults")
            });
        }
        if let Some(slots) = &truth.slots {
            let held: Vec<String> = (0..slots.slot_blocks.len())
                .filter_map(|s| {
                    let on: Vec<String> = (0..life.len())
                        .filter(|&i| disks[i].holds_slot(&truth.cid, s as u32, &slots.slot_blocks[s]))
                        .map(|i| format!("{i}{}", if life[i] == Life::Departed { " (departed)" } else { "" }))
                        .collect();
                    (!on.is_empty()).then(|| format!("slot {s} on {}", on.join(" ")))
                })
                .collect();
            let left = (0..slots.slot_blocks.len())
                .filter(|&s| {
                    (0..life.len()).any(|i| {
                        life[i] != Life::Departed
                            && disks[i].holds_slot(&truth.cid, s as u32, &slots.slot_blocks[s])
                    })
                })
                .count();
            notes.push(format!(
                "{left} slots left on nodes still here, {} needed of {}: {}",
                slots.k,
                slots.slot_blocks.len(),
                if held.is_empty() { "none held anywhere".into() } else { held.join("; ") }
            ));
        }
        if notes.is_empty() { "no node holds it: a commit lost in a crash".into() } else { notes.join(", ") }
    }

    /// Runs `future` on node `index` (it dies with the node).
    fn spawn_on<F>(&self, index: usize, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = self.madsim_nodes.lock().expect("nodes")[index];
        let handle = madsim::runtime::Handle::current().get_node(id).expect("a created node");
        handle.spawn(future);
    }

    /// Stops node `index`: a crash loses a lying disk's write cache; a clean stop flushes it.
    fn stop(&self, index: usize, crash: bool, permanent: bool) {
        if self.life(index) != Life::Up {
            return;
        }
        let disk = self.disk(index);
        if crash {
            disk.crash();
        } else {
            disk.flush();
        }
        *self.services[index].lock().expect("services") = None;
        self.life.lock().expect("life")[index] = if permanent { Life::Departed } else { Life::Down };
        self.epochs.lock().expect("epochs")[index] += 1;
        self.fabric.detach(index, permanent);
        self.dht.node_stopped(index);
        let id = self.madsim_nodes.lock().expect("nodes")[index];
        madsim::runtime::Handle::current().kill(id);
        self.trace.record(format_args!("stop {index} crash={crash} permanent={permanent}"));
        self.count(|c| {
            if permanent {
                c.departures += 1
            } else if crash {
                c.crashes += 1
            }
        });
    }

    /// Creates the next madsim node (nodes are created in index order) and starts it.
    fn launch(self: &Arc<World>) -> usize {
        let mut nodes = self.madsim_nodes.lock().expect("nodes");
        let index = nodes.len();
        let w = self.clone();
        let node = madsim::runtime::Handle::current()
            .create_node()
            .name(format!("node-{index}"))
            .ip(crate::net::sim_ip(index))
            .init(move || node_main(w.clone(), index))
            .build();
        nodes.push(node.id());
        index
    }

    /// Live nodes a workload may run on.
    fn candidates(&self, nodes: Option<[u64; 2]>, on: Role) -> Vec<usize> {
        self.live_nodes()
            .into_iter()
            .filter(|&i| in_range(nodes, i))
            .filter(|i| match on {
                Role::Any => true,
                Role::Clients => self.clients.contains(i),
                Role::Storage => !self.clients.contains(i),
            })
            .collect()
    }

    /// Live nodes faults may strike: not the clients.
    fn faultable(&self) -> Vec<usize> {
        self.live_nodes().into_iter().filter(|i| !self.clients.contains(i)).collect()
    }

    fn restart(&self, index: usize) {
        if self.life(index) != Life::Down {
            return;
        }
        self.life.lock().expect("life")[index] = Life::Up;
        let id = self.madsim_nodes.lock().expect("nodes")[index];
        madsim::runtime::Handle::current().restart(id);
        self.trace.record(format_args!("restart {index}"));
        self.probe("node-restarted");
        self.count(|c| c.restarts += 1);
    }
}

/// The node program: the real node logic over this node's simulated ports. madsim runs it
/// again from the top when the node restarts.
async fn node_main(world: Arc<World>, index: usize) {
    let disk = world.disk(index);
    let store: SharedStore = Arc::new(KvStore::new(SimDiskEngine(disk), world.quota, Compute::Inline));
    let network = world.fabric.attach(index).await;
    let discovery = world.dht.view(index);
    let config = NodeConfig {
        block_size_bytes: world.block_size,
        engine: EngineConfig::default(),
        readvertise_interval: world.republish,
        compute: Compute::Modeled { hash_bytes_per_sec: world.hash_rate },
        bootstrap: if index == 0 {
            Vec::new()
        } else {
            vec![neverust::discovery::PeerRecord { peer: world.peers[0].clone(), addrs: Vec::new() }]
        },
        // madsim's generator: drawn from the run's seed.
        seed: madsim::rand::random(),
        durability: world.repair,
    };
    match Node::start(store, network.clone(), discovery, config, Arc::new(Metrics::new())).await {
        Ok((node, recovery)) => {
            if recovery.uploads_rolled_back > 0 {
                world.probe("crash-rolled-back-an-upload");
            }
            *world.services[index].lock().expect("services") = Some(node);
        }
        Err(e) => {
            world.trace.record(format_args!("start-failed {index} {e}"));
            world
                .integrity_violations
                .lock()
                .expect("violations")
                .push(format!("node {index} failed to start: {e}"));
            world.fabric.detach(index, false);
            world.life.lock().expect("life")[index] = Life::Down;
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// `size` seeded random bytes.
fn data(seed: u64, size: u64) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// The block keys a dataset of `bytes` has, chunked as the node chunks (last block
/// zero-padded, an empty dataset one zero block).
fn block_keys(bytes: &[u8], block_size: usize) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut chunks = bytes.chunks(block_size).peekable();
    if chunks.peek().is_none() {
        let digest: [u8; 32] = Sha256::digest(vec![0u8; block_size]).into();
        return vec![block_cid(&digest).to_bytes()];
    }
    for chunk in chunks {
        let mut block = chunk.to_vec();
        block.resize(block_size, 0);
        let digest: [u8; 32] = Sha256::digest(&block).into();
        keys.push(block_cid(&digest).to_bytes());
    }
    keys
}

async fn upload(world: Arc<World>, index: usize, seed: u64, size: u64, protect: Option<[u32; 2]>) {
    let Some(node) = world.node(index) else { return };
    let bytes = data(seed, size);
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let blocks = block_keys(&bytes, world.block_size);
    let body = futures::stream::iter(
        bytes
            .chunks(256 << 10)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    match node.datasets.upload(body, UploadMeta::default()).await {
        Ok(dataset) => {
            world.trace.record(format_args!("uploaded {index} {}", cid_to_string(&dataset.cid)));
            if let Some([k, m]) = protect {
                protect_and_place(&world, index, &node, dataset, size, digest, k, m).await;
                return;
            }
            world.truths.lock().expect("truths").push(Truth {
                cid: dataset.cid,
                size,
                digest,
                blocks,
                slots: None,
            });
            world.count(|c| c.uploads_acknowledged += 1);
            node.fetcher.advertise(&dataset).await;
        }
        Err(e) => {
            world.trace.record(format_args!("upload-failed {index}"));
            if e.to_string().contains("no space left") {
                world.probe("disk-full-refused-an-upload");
            }
            world.count(|c| c.uploads_failed += 1);
        }
    }
}

/// Protects a fresh upload with K + M slots and has the node place them; once every slot is
/// held somewhere the uploader drops its own copies, so the slots are the only ones. The
/// dataset counts as acknowledged once placed.
#[allow(clippy::too_many_arguments)]
async fn protect_and_place(
    world: &Arc<World>,
    index: usize,
    node: &Node,
    original: neverust::dataset::Dataset,
    size: u64,
    digest: [u8; 32],
    k: u32,
    m: u32,
) {
    let protected = match node.datasets.protect(original.cid, k, m).await {
        Ok(protected) => protected,
        Err(e) => {
            world.trace.record(format_args!("protect-failed {index} {e}"));
            world.count(|c| c.uploads_failed += 1);
            return;
        }
    };
    let store = node.datasets.store().clone();
    let layout = neverust::dataset::erasure_layout(&protected.manifest).expect("a fresh protected manifest");
    let mut blocks = Vec::with_capacity(layout.total as usize);
    for i in 0..layout.total {
        let leaf =
            store.get_leaf(protected.manifest.tree_cid, i).await.ok().flatten().expect("leaf just stored");
        blocks.push(leaf.block_cid.to_bytes());
    }
    let slot_blocks: Vec<Vec<Vec<u8>>> = (0..layout.params.slots())
        .map(|s| layout.slot_blocks(s).map(|i| blocks[i as usize].clone()).collect())
        .collect();
    node.durability.place(&protected);
    world.trace.record(format_args!("protected {index} {}", cid_to_string(&protected.cid)));
    let d = {
        let mut truths = world.truths.lock().expect("truths");
        truths.push(Truth {
            cid: protected.cid,
            size,
            digest,
            blocks,
            slots: Some(SlotTruth { k: k as usize, slot_blocks, placed_on: Vec::new() }),
        });
        truths.len() - 1
    };
    world.count(|c| c.uploads_acknowledged += 1);
    // Wait (at most an hour) until every slot is held by a live node, then drop the copies.
    let slots = (k + m) as usize;
    for _ in 0..360 {
        if world.live_slots(d, &[Life::Up]).len() == slots {
            let placed: Vec<Vec<usize>> = (0..slots).map(|s| world.slot_holders(d, s)).collect();
            if let Some(truth) = world.truths.lock().expect("truths")[d].slots.as_mut() {
                truth.placed_on = placed;
            }
            let _ = node.datasets.delete(protected.cid).await;
            let _ = node.datasets.delete(original.cid).await;
            world.trace.record(format_args!("placed {index} {}", cid_to_string(&protected.cid)));
            return;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Downloads dataset `d` on node `index` by DHT discovery; `true` when the bytes are right.
async fn download(world: Arc<World>, index: usize, d: usize) -> bool {
    let Some(node) = world.node(index) else {
        world.trace.record(format_args!("download-not-running {index} {d}"));
        return false;
    };
    let (cid, size, digest) = {
        let truths = world.truths.lock().expect("truths");
        (truths[d].cid, truths[d].size, truths[d].digest)
    };
    let holder_down = {
        let life = world.life.lock().expect("life").clone();
        let disks = world.disks.lock().expect("disks").clone();
        (0..life.len()).any(|i| life[i] == Life::Down && disks[i].holds_manifest(&cid))
    };
    let started = tokio::time::Instant::now();
    let result: Result<(u64, [u8; 32]), String> = async {
        let (manifest, encoded) = node.fetcher.manifest(cid).await.map_err(|e| e.to_string())?;
        let mut stream = std::pin::pin!(node.fetcher.stream(cid, manifest, encoded));
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| e.to_string())?;
            received += piece.len() as u64;
            hasher.update(&piece);
        }
        Ok((received, hasher.finalize().into()))
    }
    .await;
    match result {
        Ok((received, got)) if received == size && got == digest => {
            world.trace.record(format_args!("downloaded {index} {d}"));
            world.count(|c| c.downloads_completed += 1);
            world.probe("download-completed");
            if holder_down {
                world.probe("download-while-a-holder-was-down");
            }
            if world.healed_at.lock().expect("healed").is_some_and(|t| t <= started) {
                world.probe("download-after-partition-healed");
            }
            true
        }
        Ok((received, _)) => {
            world.integrity_violations.lock().expect("violations").push(format!(
                "node {index} downloaded {} as {received} bytes that differ from the {size} uploaded",
                cid_to_string(&cid)
            ));
            false
        }
        Err(e) => {
            world.trace.record(format_args!("download-failed {index} {d} {e}"));
            if e.contains("corrupt") {
                world.probe("corrupt-block-detected");
            }
            if e.contains("read error") {
                world.probe("read-error-survived");
            }
            world.count(|c| c.downloads_failed += 1);
            false
        }
    }
}

/// A timed action of the fault phase.
#[derive(Clone, Debug)]
enum Action {
    Upload { size: u64, seed: u64, nodes: Option<[u64; 2]>, on: Role, protect: Option<[u32; 2]> },
    Download { nodes: Option<[u64; 2]>, on: Role },
    Arrive,
    Churn { crash: bool, permanent: bool, downtime: Duration, spare: Vec<u64>, spare_last_copy: bool },
    Crash { node: Target, restart_after: Option<Duration> },
    Depart { node: Target, every: Duration },
    Partition { split: f64, one_way: bool },
    Heal,
    Clog { count: u64, until: Duration },
    BitRot { spare_last_copy: bool },
    LatentError { spare_last_copy: bool },
    Sample,
}

/// Runs `scenario` with `seed` in a fresh madsim runtime.
///
/// Call it once per process: madsim numbers tasks from a process-wide counter, so a second
/// run in the same process schedules differently. [`run_isolated`] runs it in a child
/// process.
pub fn run(scenario: &Scenario, seed: u64) -> Outcome {
    let wall = std::time::Instant::now();
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, crate::net::madsim_config());
    let mut outcome = runtime.block_on(simulate(scenario.clone(), seed));
    outcome.wall_time_s = wall.elapsed().as_secs_f64();
    outcome.speed = outcome.virtual_time_s / outcome.wall_time_s.max(1e-9);
    outcome
}

/// Runs the scenario file `path` with `seed` in a fresh process of this program (see
/// [`run`]), which prints the outcome as JSON.
pub fn run_isolated(path: &std::path::Path, seed: u64, nodes: Option<u64>) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(exe);
    command.arg("one").arg(path).arg(seed.to_string());
    if let Some(n) = nodes {
        command.arg("--nodes").arg(n.to_string());
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("starting a run: {e}"))?;
    if !output.status.success() {
        return Err(format!("the run of seed {seed} crashed ({})", output.status));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("reading the outcome of seed {seed}: {e}"))
}

fn poisson_times(rng: &mut ChaCha8Rng, per_hour: f64, span: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    if per_hour <= 0.0 {
        return times;
    }
    let mut t = 0.0;
    loop {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        t += -u.ln() * 3600.0 / per_hour;
        if t >= span.as_secs_f64() {
            return times;
        }
        times.push(Duration::from_secs_f64(t));
    }
}

fn schedule(scenario: &Scenario, rng: &mut ChaCha8Rng, arrivals: &[Duration]) -> Vec<(Duration, Action)> {
    let duration = scenario.duration.0;
    let mut plan: Vec<(Duration, Action)> = arrivals.iter().map(|&at| (at, Action::Arrive)).collect();
    for w in &scenario.workloads {
        let count = w.count.draw(rng);
        for k in 0..count {
            let at = w.start.0 + w.every.0 * k as u32;
            if at >= duration {
                break;
            }
            let action = match w.kind {
                WorkloadKind::Upload => Action::Upload {
                    size: w.size.expect("validated").draw(rng),
                    seed: rng.random(),
                    nodes: w.nodes,
                    on: w.on,
                    protect: w.protect,
                },
                WorkloadKind::Download => Action::Download { nodes: w.nodes, on: w.on },
            };
            plan.push((at, action));
        }
    }
    let faults = &scenario.faults;
    if let Some(churn) = &faults.churn {
        let rate = churn.departures_per_hour.draw(rng);
        for at in poisson_times(rng, rate, duration) {
            let [low, high] = churn.downtime;
            let downtime =
                Duration::from_secs_f64(rng.random_range(low.0.as_secs_f64()..=high.0.as_secs_f64()));
            let action = Action::Churn {
                crash: rng.random_bool(churn.crash_share),
                permanent: rng.random_bool(churn.permanent_share),
                downtime,
                spare: churn.spare.clone(),
                spare_last_copy: churn.spare_last_copy,
            };
            plan.push((at, action));
        }
    }
    let faults_in_time = |at: Duration| at < duration;
    for c in faults.crash.iter().filter(|c| faults_in_time(c.at.0)) {
        plan.push((
            c.at.0,
            Action::Crash { node: c.node.clone(), restart_after: c.restart_after.map(|s| s.0) },
        ));
    }
    for d in faults.depart.iter().filter(|d| faults_in_time(d.at.0)) {
        plan.push((d.at.0, Action::Depart { node: d.node.clone(), every: d.every.0 }));
    }
    for p in faults.partition.iter().filter(|p| faults_in_time(p.at.0)) {
        let split = p.split.draw(rng);
        plan.push((p.at.0, Action::Partition { split, one_way: p.one_way }));
        plan.push((p.at.0 + p.duration.0, Action::Heal));
    }
    for c in faults.clog.iter().filter(|c| faults_in_time(c.at.0)) {
        let count = c.nodes.draw(rng);
        plan.push((c.at.0, Action::Clog { count, until: c.at.0 + c.duration.0 }));
    }
    if let Some(disk) = &faults.disk {
        let rate = disk.bit_rot_per_hour.draw(rng);
        for at in poisson_times(rng, rate, duration) {
            plan.push((at, Action::BitRot { spare_last_copy: disk.spare_last_copy }));
        }
        let rate = disk.latent_errors_per_hour.draw(rng);
        for at in poisson_times(rng, rate, duration) {
            plan.push((at, Action::LatentError { spare_last_copy: disk.spare_last_copy }));
        }
    }
    let total = duration + scenario.healing.0 + scenario.invariants.liveness_bound.0;
    for k in 0..=TIMELINE_SAMPLES {
        plan.push((total * k / TIMELINE_SAMPLES, Action::Sample));
    }
    plan.sort_by_key(|(at, _)| *at);
    plan
}

async fn simulate(scenario: Scenario, seed: u64) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let initial = scenario.nodes.count.draw(&mut rng) as usize;
    let arrivals = match &scenario.faults.churn {
        Some(churn) => {
            let rate = churn.arrivals_per_hour.draw(&mut rng);
            poisson_times(&mut rng, rate, scenario.duration.0)
        }
        None => Vec::new(),
    };
    let n = initial + arrivals.len();
    let clients: BTreeSet<usize> = (initial - scenario.nodes.clients as usize..initial).collect();
    let trace = Arc::new(Trace::new());
    trace.record(format_args!(
        "scenario {} seed {seed} nodes {initial} arrivals {}",
        scenario.name,
        arrivals.len()
    ));
    let peers: Vec<PeerId> = (0..n).map(sim_peer_id).collect();
    let net = &scenario.network;
    let latency = match net.latency_ms {
        crate::scenario::Param::Scalar(v) => [v, v],
        crate::scenario::Param::Range(r) => r,
    };
    let params = LinkParams {
        latency_ms: latency,
        jitter_ms: net.jitter_ms.draw(&mut rng),
        bandwidth_bytes_per_s: net.bandwidth.0 as f64,
        loss: net.loss.draw(&mut rng),
        duplicate: net.duplicate.draw(&mut rng),
        reorder: net.reorder.draw(&mut rng),
        dial_timeout: net.dial_timeout.0,
        failure_detection: net.failure_detection.0,
    };
    let slow_fraction = scenario.nodes.slow_fraction.draw(&mut rng);
    let slowness: Vec<f64> = (0..n)
        .map(
            |_| if rng.random_bool(slow_fraction.clamp(0.0, 1.0)) { scenario.nodes.slow_factor } else { 1.0 },
        )
        .collect();
    let fabric =
        Fabric::new(params, peers.clone(), slowness, ChaCha8Rng::seed_from_u64(rng.random()), trace.clone());
    let dht = ModeledDht::new(
        fabric.clone(),
        &peers,
        scenario.dht.replication as usize,
        scenario.dht.record_ttl.0,
        rng.random(),
        trace.clone(),
    );
    let disk_faults = scenario.faults.disk.clone().unwrap_or_default();
    let disks: Vec<Arc<SimDisk>> = (0..n)
        .map(|_| {
            let profile = DiskProfile {
                lying_fsync: rng.random_bool(disk_faults.lying_fsync_share),
                torn_writes: disk_faults.torn_writes,
                misdirected_write: disk_faults.misdirected_write,
                capacity_bytes: rng
                    .random_bool(disk_faults.small_disk_share)
                    .then_some(disk_faults.small_disk.0),
            };
            SimDisk::new(profile, ChaCha8Rng::seed_from_u64(rng.random()))
        })
        .collect();
    let world = Arc::new(World {
        trace: trace.clone(),
        fabric: fabric.clone(),
        dht: dht.clone(),
        peers,
        disks: Mutex::new(disks),
        services: (0..n).map(|_| Mutex::new(None)).collect(),
        life: Mutex::new((0..n).map(|i| if i < initial { Life::Up } else { Life::Absent }).collect()),
        epochs: Mutex::new(vec![0; n]),
        madsim_nodes: Mutex::new(Vec::new()),
        clients,
        block_size: scenario.block_size.0 as usize,
        quota: scenario.nodes.quota.0,
        republish: scenario.dht.republish.0,
        repair: neverust::durability::DurabilityConfig {
            check_interval: scenario.repair.check_interval.0,
            repair_after: scenario.repair.after.0,
            ..neverust::durability::DurabilityConfig::default()
        },
        hash_rate: scenario.nodes.hash_rate.0,
        truths: Mutex::new(Vec::new()),
        probes: Mutex::new(BTreeMap::new()),
        counters: Mutex::new(Counters::default()),
        integrity_violations: Mutex::new(Vec::new()),
        healed_at: Mutex::new(None),
    });
    for _ in 0..initial {
        world.launch();
    }
    {
        let w = world.clone();
        let every = disk_faults.flush_interval.0;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for disk in w.disks.lock().expect("disks").iter() {
                    disk.flush();
                }
            }
        });
    }

    let start = tokio::time::Instant::now();
    let plan = schedule(&scenario, &mut rng, &arrivals);
    let fault_end = scenario.duration.0;
    let mut timeline = Vec::new();
    let mut healing_started = false;
    let mut checks_done = false;
    let mut verdict_liveness: Option<Verdict> = None;
    for (at, action) in plan {
        if !healing_started && at >= fault_end {
            healing_started = true;
            tokio::time::sleep_until(start + fault_end).await;
            heal_all(&world);
        }
        if !checks_done && at >= fault_end + scenario.healing.0 {
            checks_done = true;
            tokio::time::sleep_until(start + fault_end + scenario.healing.0).await;
            verdict_liveness =
                Some(check_liveness(&world, &mut rng, scenario.invariants.liveness_bound.0).await);
        }
        tokio::time::sleep_until((start + at).max(tokio::time::Instant::now())).await;
        execute(&world, &mut rng, action, &mut timeline, start).await;
    }
    if !healing_started {
        tokio::time::sleep_until(start + fault_end).await;
        heal_all(&world);
    }
    if !checks_done {
        tokio::time::sleep_until(start + fault_end + scenario.healing.0).await;
        verdict_liveness = Some(check_liveness(&world, &mut rng, scenario.invariants.liveness_bound.0).await);
    }
    let virtual_time = start.elapsed();
    let network = fabric.stats();
    if network.retransmissions > 0 {
        world.probe("retransmission");
    }
    let invariants = vec![
        check_integrity(&world),
        check_durability(&world),
        check_redundancy(&world),
        verdict_liveness.expect("checked"),
        check_sometimes(&world, &scenario.invariants.sometimes),
    ];
    for v in &invariants {
        trace.record(format_args!("invariant {} {}", v.name, v.passed));
    }
    let counters = std::mem::take(&mut *world.counters.lock().expect("counters"));
    let mut disk = DiskStats::default();
    for d in world.disks.lock().expect("disks").iter() {
        let s = d.stats();
        disk.commits_lost += s.commits_lost;
        disk.torn_blocks += s.torn_blocks;
        disk.bit_rot += s.bit_rot;
        disk.latent_errors += s.latent_errors;
        disk.read_errors += s.read_errors;
        disk.misdirected_writes += s.misdirected_writes;
        disk.full_refusals += s.full_refusals;
    }
    let (dht_lookups, dht_records_lost) = dht.stats();
    let probes = world.probes.lock().expect("probes").clone();
    trace.dump(seed);
    Outcome {
        scenario: scenario.name.clone(),
        seed,
        trace_hash: trace.hash(),
        trace_events: trace.events(),
        nodes: initial,
        virtual_time_s: virtual_time.as_secs_f64(),
        wall_time_s: 0.0,
        speed: 0.0,
        uploads_acknowledged: counters.uploads_acknowledged,
        uploads_failed: counters.uploads_failed,
        downloads_completed: counters.downloads_completed,
        downloads_failed: counters.downloads_failed,
        crashes: counters.crashes,
        restarts: counters.restarts,
        departures: counters.departures,
        arrivals: counters.arrivals,
        network,
        dht_lookups,
        dht_records_lost,
        disk,
        probes,
        invariants,
        expected_failure: scenario.invariants.expect_failure.clone(),
        timeline,
    }
}

fn pick(rng: &mut ChaCha8Rng, candidates: &[usize]) -> Option<usize> {
    candidates.choose(rng).copied()
}

fn in_range(nodes: Option<[u64; 2]>, i: usize) -> bool {
    nodes.is_none_or(|[a, b]| (a as usize..=b as usize).contains(&i))
}

fn resolve_target(world: &World, rng: &mut ChaCha8Rng, target: &Target) -> Vec<usize> {
    match target {
        Target::Index(i) => vec![*i as usize],
        Target::Named(name) if name == "random" => pick(rng, &world.faultable()).into_iter().collect(),
        Target::Named(_) => {
            if world.truths.lock().expect("truths").is_empty() {
                Vec::new()
            } else {
                world.holders(0)
            }
        }
    }
}

async fn execute(
    world: &Arc<World>,
    rng: &mut ChaCha8Rng,
    action: Action,
    timeline: &mut Vec<Sample>,
    start: tokio::time::Instant,
) {
    match action {
        Action::Arrive => {
            let index = world.launch();
            world.life.lock().expect("life")[index] = Life::Up;
            world.trace.record(format_args!("arrive {index}"));
            world.count(|c| c.arrivals += 1);
        }
        Action::Upload { size, seed, nodes, on, protect } => {
            let live = world.candidates(nodes, on);
            if let Some(index) = pick(rng, &live) {
                world.spawn_on(index, upload(world.clone(), index, seed, size, protect));
            }
        }
        Action::Download { nodes, on } => {
            let datasets = world.truths.lock().expect("truths").len();
            if datasets == 0 {
                return;
            }
            let d = rng.random_range(0..datasets);
            let cid = world.truths.lock().expect("truths")[d].cid;
            let disks = world.disks.lock().expect("disks").clone();
            let live: Vec<usize> =
                world.candidates(nodes, on).into_iter().filter(|&i| !disks[i].holds_manifest(&cid)).collect();
            if let Some(index) = pick(rng, &live) {
                let w = world.clone();
                world.spawn_on(index, async move {
                    download(w, index, d).await;
                });
            }
        }
        Action::Churn { crash, permanent, downtime, spare, spare_last_copy } => {
            let mut live: Vec<usize> =
                world.faultable().into_iter().filter(|&i| !spare.contains(&(i as u64))).collect();
            if permanent && spare_last_copy {
                let datasets = world.truths.lock().expect("truths").len();
                let holders: Vec<Vec<usize>> = (0..datasets).map(|d| world.holders(d)).collect();
                live.retain(|i| holders.iter().all(|h| !h.contains(i) || h.len() >= 2));
            }
            if let Some(index) = pick(rng, &live) {
                world.stop(index, crash, permanent);
                if !permanent {
                    restart_later(world, index, downtime);
                }
            }
        }
        Action::Crash { node, restart_after } => {
            for index in resolve_target(world, rng, &node) {
                world.stop(index, true, restart_after.is_none());
                if let Some(after) = restart_after {
                    restart_later(world, index, after);
                }
            }
        }
        Action::Depart { node, every } => {
            let targets = resolve_target(world, rng, &node);
            let w = world.clone();
            tokio::spawn(async move {
                for index in targets {
                    w.stop(index, true, true);
                    tokio::time::sleep(every).await;
                }
            });
        }
        Action::Partition { split, one_way } => {
            let mut all: Vec<usize> = (0..world.peers.len()).collect();
            all.shuffle(rng);
            let cut = ((all.len() as f64) * split).round() as usize;
            let a: BTreeSet<usize> = all[..cut].iter().copied().collect();
            let b: BTreeSet<usize> = all[cut..].iter().copied().collect();
            world.fabric.partition(a, b, one_way);
        }
        Action::Heal => {
            world.fabric.heal();
            *world.healed_at.lock().expect("healed") = Some(tokio::time::Instant::now());
        }
        Action::Clog { count, until } => {
            let mut live = world.faultable();
            live.shuffle(rng);
            let nodes: BTreeSet<usize> = live.into_iter().take(count as usize).collect();
            world.fabric.clog(nodes.clone());
            let w = world.clone();
            let wake = start + until;
            tokio::spawn(async move {
                tokio::time::sleep_until(wake).await;
                w.fabric.unclog(&nodes);
                w.trace.record(format_args!("unclog {}", nodes.len()));
            });
        }
        Action::BitRot { spare_last_copy } => {
            damage(world, rng, spare_last_copy, |disk, key| match key {
                Some(key) => disk.rot_block(key),
                None => disk.rot(),
            });
        }
        Action::LatentError { spare_last_copy } => {
            damage(world, rng, spare_last_copy, |disk, key| match key {
                Some(key) => disk.latent_block(key),
                None => disk.latent_error(),
            });
        }
        Action::Sample => {
            let datasets = world.truths.lock().expect("truths").len();
            let available = (0..datasets).filter(|&d| world.available(d)).count();
            if (0..datasets).any(|d| world.slot_moved(d)) {
                world.probe("slot-repaired");
            }
            timeline.push(Sample {
                t_s: start.elapsed().as_secs_f64(),
                live_nodes: world.live_nodes().len(),
                datasets,
                datasets_available: available,
                bytes_sent: world.fabric.stats().bytes,
            });
        }
    }
}

/// Damages a block: anywhere on a random live node's disk, or (sparing last copies) a block
/// of a dataset that keeps another intact copy, on one of its holders.
fn damage(
    world: &World,
    rng: &mut ChaCha8Rng,
    spare_last_copy: bool,
    hit: impl Fn(&SimDisk, Option<&[u8]>) -> bool,
) {
    if !spare_last_copy {
        if let Some(index) = pick(rng, &world.live_nodes()) {
            hit(&world.disk(index), None);
        }
        return;
    }
    let datasets = world.truths.lock().expect("truths").len();
    let redundant: Vec<(usize, Vec<usize>)> =
        (0..datasets).map(|d| (d, world.holders(d))).filter(|(_, holders)| holders.len() >= 2).collect();
    let Some((d, holders)) = redundant.choose(rng) else { return };
    let index = holders[rng.random_range(0..holders.len())];
    let key = {
        let truths = world.truths.lock().expect("truths");
        let blocks = &truths[*d].blocks;
        blocks[rng.random_range(0..blocks.len())].clone()
    };
    hit(&world.disk(index), Some(&key));
}

fn restart_later(world: &Arc<World>, index: usize, after: Duration) {
    let w = world.clone();
    let epoch = world.epochs.lock().expect("epochs")[index];
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if w.epochs.lock().expect("epochs")[index] == epoch {
            w.restart(index);
        }
    });
}

/// Faults stop: partitions heal, clogs clear, every node that is down comes back.
fn heal_all(world: &Arc<World>) {
    world.trace.record("healing");
    world.fabric.heal();
    world.fabric.unclog_all();
    for index in 0..world.peers.len() {
        world.restart(index);
    }
}

/// Liveness: after healing, every dataset that still has an intact holder downloads, on a
/// node that lacks it, within the bound.
async fn check_liveness(world: &Arc<World>, rng: &mut ChaCha8Rng, bound: Duration) -> Verdict {
    let datasets = world.truths.lock().expect("truths").len();
    let deadline = tokio::time::Instant::now() + bound;
    let mut pending = Vec::new();
    for d in 0..datasets {
        if !world.available(d) {
            continue; // lost: durability reports it
        }
        let cid = world.truths.lock().expect("truths")[d].cid;
        let disks = world.disks.lock().expect("disks").clone();
        // Not on a disk built to fill up: a download there fails, rightly, for want of space.
        let candidates: Vec<usize> = world
            .live_nodes()
            .into_iter()
            .filter(|&i| !disks[i].holds_manifest(&cid) && !disks[i].is_small())
            .collect();
        let Some(index) = pick(rng, &candidates) else { continue };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let w = world.clone();
        world.spawn_on(index, async move {
            loop {
                if download(w.clone(), index, d).await {
                    let _ = tx.send(());
                    return;
                }
                tokio::time::sleep(CHECK_RETRY).await;
            }
        });
        pending.push((d, index, rx));
    }
    let checked = pending.len();
    let mut late = Vec::new();
    for (d, index, rx) in pending {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !matches!(tokio::time::timeout(left, rx).await, Ok(Ok(()))) {
            let cid = world.truths.lock().expect("truths")[d].cid;
            late.push(format!("{} on node {index}", cid_to_string(&cid)));
        }
    }
    Verdict {
        name: "liveness".into(),
        passed: late.is_empty(),
        detail: if late.is_empty() {
            format!("{checked} datasets downloaded after healing, each within {}s", bound.as_secs())
        } else {
            format!(
                "{} of {checked} downloads did not finish within {}s: {}",
                late.len(),
                bound.as_secs(),
                late.join(", ")
            )
        },
    }
}

fn check_integrity(world: &World) -> Verdict {
    let mut problems = world.integrity_violations.lock().expect("violations").clone();
    let life = world.life.lock().expect("life").clone();
    for (index, disk) in world.disks.lock().expect("disks").iter().enumerate() {
        if life[index] == Life::Departed {
            continue;
        }
        for cid in disk.unexplained_corruption() {
            problems.push(format!("node {index} stores block {cid} that does not verify"));
        }
    }
    Verdict {
        name: "integrity".into(),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            "every download returned the uploaded bytes; every stored block verifies (or a disk fault explains it)".into()
        } else {
            problems.join("; ")
        },
    }
}

fn check_durability(world: &World) -> Verdict {
    let datasets = world.truths.lock().expect("truths").len();
    let lost: Vec<String> = (0..datasets)
        .filter(|&d| !world.available(d))
        .map(|d| {
            let cid = world.truths.lock().expect("truths")[d].cid;
            format!("{} ({})", cid_to_string(&cid), world.copies_lost(d))
        })
        .collect();
    Verdict {
        name: "durability".into(),
        passed: lost.is_empty(),
        detail: if lost.is_empty() {
            format!(
                "all {datasets} acknowledged datasets have an intact copy on a node that has not departed"
            )
        } else {
            format!(
                "{} of {datasets} acknowledged datasets lost (no intact copy left): {}",
                lost.len(),
                lost.join(", ")
            )
        },
    }
}

/// Redundancy: after healing, every protected dataset that is not lost has all its K + M slots
/// held intact by live nodes again.
fn check_redundancy(world: &World) -> Verdict {
    let (protected, short): (usize, Vec<String>) = {
        let truths = world.truths.lock().expect("truths");
        let wanted: Vec<(usize, usize, Cid)> = truths
            .iter()
            .enumerate()
            .filter_map(|(d, t)| t.slots.as_ref().map(|s| (d, s.slot_blocks.len(), t.cid)))
            .collect();
        drop(truths);
        let short = wanted
            .iter()
            .filter(|(d, _, _)| world.available(*d))
            .filter_map(|&(d, slots, cid)| {
                let live = world.live_slots(d, &[Life::Up]);
                (live.len() < slots)
                    .then(|| format!("{} ({} of {slots} slots)", cid_to_string(&cid), live.len()))
            })
            .collect();
        (wanted.len(), short)
    };
    Verdict {
        name: "redundancy".into(),
        passed: short.is_empty(),
        detail: if short.is_empty() {
            format!("all {protected} protected datasets are back at full redundancy")
        } else {
            format!(
                "{} of {protected} protected datasets short of slots after healing: {}",
                short.len(),
                short.join(", ")
            )
        },
    }
}

fn check_sometimes(world: &World, required: &[String]) -> Verdict {
    let probes = world.probes.lock().expect("probes");
    let missing: Vec<&str> = required
        .iter()
        .filter(|p| probes.get(p.as_str()).copied().unwrap_or(0) == 0)
        .map(|p| p.as_str())
        .collect();
    Verdict {
        name: "sometimes".into(),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("{} required paths ran", required.len())
        } else {
            format!("never ran: {}", missing.join(", "))
        },
    }
}
