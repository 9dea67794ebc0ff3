//! One simulated run: nodes running the real node logic over simulated ports, the scenario's
//! workloads and faults, and the oracle checking the invariants.
//!
//! - this file: the world (nodes, their disks and lives, the oracle's truth) and the node program;
//! - `outcome.rs`: what a run reports; `run.rs`: the schedule and the run itself;
//! - `workload.rs`: uploads, protection and downloads; `faults.rs`: faults and healing;
//! - `invariants.rs`: the oracle's checks; `chain.rs`: the chain's part (deployment, the walk
//!   of a storage request, the payments check).

mod chain;
mod faults;
mod invariants;
mod market;
mod outcome;
mod run;
mod slots;
mod workload;

use faults::*;
use invariants::*;
pub use outcome::{Outcome, Sample, Verdict};
use run::*;
pub use run::{ChainBackendKind, run, run_isolated};
use slots::*;
use workload::*;

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
use neverust::node::{Node, NodeConfig, Ports};
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
use neverust_sim::evm::{ChainParams, EvmBackend, ModeledChain};

/// Pause between retries of a check download during healing.
pub(super) const CHECK_RETRY: Duration = Duration::from_secs(30);
/// Samples of the timeline for the report.
pub(super) const TIMELINE_SAMPLES: u32 = 100;

/// What the oracle knows about an acknowledged dataset.
pub(super) struct Truth {
    cid: Cid,
    size: u64,
    digest: [u8; 32],
    /// Keys of the dataset's blocks on disk (block CIDs).
    blocks: Vec<Vec<u8>>,
    /// For a protected dataset (then `cid` and `blocks` are the protected dataset's): K, M and
    /// the block keys of each slot.
    slots: Option<SlotTruth>,
}

pub(super) struct SlotTruth {
    k: usize,
    slot_blocks: Vec<Vec<Vec<u8>>>,
    /// The nodes each slot was first placed on (empty until placement completes).
    placed_on: Vec<Vec<usize>>,
}

/// A node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// A node that joins later (a churn arrival).
    Absent,
    Up,
    Down,
    Departed,
}

pub(super) struct World {
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
    prove_rate: u64,
    truths: Mutex<Vec<Truth>>,
    probes: Mutex<BTreeMap<String, u64>>,
    counters: Mutex<Counters>,
    integrity_violations: Mutex<Vec<String>>,
    /// When the last partition healed, if one did.
    healed_at: Mutex<Option<tokio::time::Instant>>,
    /// The marketplace the nodes run, when the scenario has one.
    market: std::sync::OnceLock<Arc<market::MarketRun>>,
    /// Protected datasets' slots through the run.
    slot_watch: Mutex<SlotWatch>,
}

#[derive(Default)]
pub(super) struct Counters {
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
pub(super) fn sim_peer_id(index: usize) -> PeerId {
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
        match self.life(index) {
            Life::Up => {}
            // A node that is down leaves for good where it is: its restart timer is void.
            Life::Down if permanent => {
                self.life.lock().expect("life")[index] = Life::Departed;
                self.epochs.lock().expect("epochs")[index] += 1;
                self.trace.record(format_args!("depart-while-down {index}"));
                self.count(|c| c.departures += 1);
                return;
            }
            Life::Absent | Life::Down | Life::Departed => return,
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
        if let Some(market) = self.market.get() {
            market.node_down(index);
        }
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

    /// Live nodes faults may strike: not the clients, nor the market's validators.
    fn faultable(&self) -> Vec<usize> {
        let validator = |i: usize| self.market.get().is_some_and(|m| m.is_validator(i));
        self.live_nodes().into_iter().filter(|&i| !self.clients.contains(&i) && !validator(i)).collect()
    }

    fn restart(&self, index: usize) {
        if self.life(index) != Life::Down {
            return;
        }
        self.life.lock().expect("life")[index] = Life::Up;
        let id = self.madsim_nodes.lock().expect("nodes")[index];
        madsim::runtime::Handle::current().restart(id);
        self.trace.record(format_args!("restart {index}"));
        if let Some(market) = self.market.get() {
            market.node_up(index);
        }
        self.probe("node-restarted");
        self.count(|c| c.restarts += 1);
    }
}

/// The node program: the real node logic over this node's simulated ports. madsim runs it
/// again from the top when the node restarts.
pub(super) async fn node_main(world: Arc<World>, index: usize) {
    let disk = world.disk(index);
    let store: SharedStore = Arc::new(KvStore::new(SimDiskEngine(disk), world.quota, Compute::Inline));
    let network = world.fabric.attach(index).await;
    let discovery = world.dht.view(index);
    let compute =
        Compute::Modeled { hash_bytes_per_sec: world.hash_rate, prove_constraints_per_sec: world.prove_rate };
    let market = world.market.get().cloned();
    let (market_ports, market_config) = match &market {
        Some(run) => {
            let (ports, config) =
                run.ports(index, store.clone(), compute, world.clients.contains(&index)).await;
            (Some(ports), config)
        }
        None => (None, neverust::market::MarketConfig::default()),
    };
    let config = NodeConfig {
        block_size_bytes: world.block_size,
        engine: EngineConfig::default(),
        readvertise_interval: world.republish,
        compute,
        bootstrap: if index == 0 {
            Vec::new()
        } else {
            vec![neverust::discovery::PeerRecord { peer: world.peers[0].clone(), addrs: Vec::new() }]
        },
        // madsim's generator: drawn from the run's seed.
        seed: madsim::rand::random(),
        durability: neverust::durability::DurabilityConfig {
            cluster_checks: market.is_none() && world.repair.cluster_checks,
            ..world.repair
        },
        market: market_config,
    };
    let ports = Ports {
        store,
        network: network.clone(),
        discovery,
        metrics: Arc::new(Metrics::new()),
        market: market_ports,
    };
    match Node::start(ports, config).await {
        Ok((node, recovery)) => {
            if recovery.uploads_rolled_back > 0 {
                world.probe("crash-rolled-back-an-upload");
            }
            *world.services[index].lock().expect("services") = Some(node.clone());
            if let Some(run) = &market {
                run.offer(&world, index, &node).await;
            }
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
