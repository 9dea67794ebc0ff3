//! Scenario files: what a run simulates. The schema is documented in `scenarios/README.md`.
//!
//! Numbers written as a two-element array (`latency-ms = [5, 80]`) are ranges: each seed draws
//! its own value ("swarm testing"), so a suite of seeds covers many configurations.

use std::fmt;
use std::time::Duration;

use neverust::config::ByteSize;
use rand::Rng;
use serde::Deserialize;

/// A parsed scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds `cargo sim suite` runs, `A..B` (end excluded).
    #[serde(default = "default_suite_seeds")]
    pub suite_seeds: String,
    /// Simulated time with workloads and faults.
    pub duration: Span,
    /// Simulated time after the faults stop, for downloads to complete and checks to run.
    #[serde(default = "default_healing")]
    pub healing: Span,
    #[serde(default = "default_block_size")]
    pub block_size: ByteSize,
    pub nodes: Nodes,
    #[serde(default)]
    pub network: NetworkModel,
    #[serde(default)]
    pub dht: DhtModel,
    #[serde(default, rename = "workload")]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub invariants: Invariants,
    #[serde(default)]
    pub repair: Repair,
    /// The chain and the marketplace on it; none for a run without a chain.
    #[serde(default)]
    pub chain: Option<ChainModel>,
}

/// The chain: blocks on the simulated clock, the endpoints' faults, and the walk of one
/// storage request through the marketplace.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChainModel {
    /// Time between blocks.
    #[serde(default = "default_block_time")]
    pub block_time: Span,
    /// Time a request to an endpoint takes, drawn per request.
    #[serde(default = "default_rpc_latency")]
    pub rpc_latency_ms: Param<f64>,
    /// Probability that the pool forgets a transaction sent to it (it is never mined; the
    /// sender sends it again with higher fees).
    #[serde(default)]
    pub tx_drop: Param<f64>,
    /// An actor's endpoint that does not answer for a while.
    #[serde(default)]
    pub endpoint_down: Vec<EndpointDown>,
    /// One storage request's life, scripted (`neverust::chain::walk`).
    #[serde(default)]
    pub walk: Option<ChainWalk>,
    /// The marketplace run by the nodes themselves: hosts, validators, requests.
    #[serde(default)]
    pub market: Option<MarketModel>,
    /// Whether `cargo sim suite --chain anvil` compares this scenario on Anvil (a scenario of
    /// hundreds of nodes makes more JSON-RPC requests than CI has time for; `cargo sim run
    /// --chain anvil` still runs it).
    #[serde(default = "default_true")]
    pub suite_on_anvil: bool,
}

/// The marketplace in the nodes (`neverust::market`): every storage node sells (an
/// availability each), the first `validators` nodes validate, and `request` workloads have
/// clients request storage with these terms.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MarketModel {
    /// Nodes 0..validators validate; faults never touch them.
    #[serde(default = "default_validators")]
    pub validators: u64,
    /// Each host's availability.
    #[serde(default = "default_availability")]
    pub availability: ByteSize,
    #[serde(default = "default_proof_period")]
    pub proof_period: Span,
    #[serde(default = "default_proof_downtime")]
    pub proof_downtime: u8,
    /// Cells a proof samples: the size of the modeled circuit (its proving time).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Slots of a request (`K + M`) and how many may be lost (`M`).
    #[serde(default = "default_request_nodes")]
    pub nodes: u64,
    #[serde(default = "default_max_slot_loss")]
    pub tolerance: u64,
    pub duration: Span,
    pub expiry: Span,
    /// Tokens per byte per second, and collateral per byte.
    #[serde(default = "default_price")]
    pub price: u64,
    #[serde(default = "default_collateral")]
    pub collateral: u64,
    /// A slot freed from a running request must be filled again within this.
    #[serde(default = "default_repair_bound")]
    pub repair_bound: Span,
    /// A planted bug, for checking the oracle: this many hosts never submit proofs after
    /// filling, though up and holding their data (they are slashed, and the slashing check
    /// must say so).
    #[serde(default)]
    pub lazy_hosts: u64,
    /// Once its request has started, the client deletes its own copies (the upload and the
    /// erasure-coded dataset): the hosts' slots are then the only copies, and repairs and
    /// restores must rebuild from them.
    #[serde(default)]
    pub drop_copy: bool,
}

fn default_validators() -> u64 {
    1
}

fn default_availability() -> ByteSize {
    ByteSize(256 << 20)
}

fn default_samples() -> usize {
    5
}

fn default_request_nodes() -> u64 {
    4
}

fn default_price() -> u64 {
    1
}

fn default_collateral() -> u64 {
    10
}

fn default_repair_bound() -> Span {
    Span(Duration::from_secs(30 * 60))
}

impl MarketModel {
    fn validate(&self) -> Result<(), String> {
        if self.validators == 0 {
            return Err("chain.market.validators: at least 1 (missed proofs are marked by validators)".into());
        }
        let k = self.nodes.saturating_sub(self.tolerance);
        if self.tolerance == 0 || k < 2 || k < self.tolerance {
            return Err(format!(
                "chain.market: nodes {} and tolerance {} do not make a request (K = nodes - tolerance, at least 2 and at least tolerance)",
                self.nodes, self.tolerance
            ));
        }
        if self.expiry.0.is_zero() || self.expiry.0 >= self.duration.0 {
            return Err("chain.market.expiry: more than 0s and less than the duration".into());
        }
        if self.proof_period.0 < Duration::from_secs(2)
            || self.samples == 0
            || self.price == 0
            || self.collateral == 0
        {
            return Err(
                "chain.market: proof-period at least 2s; samples, price and collateral more than 0".into()
            );
        }
        Ok(())
    }
}

impl ChainModel {
    fn validate(&self) -> Result<(), String> {
        if self.block_time.0 < Duration::from_secs(1) || self.block_time.0.subsec_nanos() != 0 {
            return Err("chain.block-time: whole seconds, at least 1s (block timestamps are seconds)".into());
        }
        let drop = (min_of(self.tx_drop), max_of(self.tx_drop));
        if !(0.0..1.0).contains(&drop.0) || !(0.0..1.0).contains(&drop.1) {
            return Err(format!("chain.tx-drop: {}..{} is not a probability below 1", drop.0, drop.1));
        }
        if min_of(self.rpc_latency_ms) < 0.0 {
            return Err("chain.rpc-latency-ms: negative".into());
        }
        if let Some(market) = &self.market {
            market.validate()?;
        }
        let Some(walk) = &self.walk else {
            if !self.endpoint_down.is_empty() {
                return Err(
                    "chain.endpoint-down: names actors of the walk, and there is no chain.walk".into()
                );
            }
            return Ok(());
        };
        if walk.slots == 0 || walk.silent_slot >= walk.slots || walk.max_slot_loss > walk.slots {
            return Err(format!(
                "chain.walk: slots {}, silent-slot {} and max-slot-loss {} do not fit (0 <= silent-slot < slots, max-slot-loss <= slots)",
                walk.slots, walk.silent_slot, walk.max_slot_loss
            ));
        }
        if walk.expiry.0.is_zero() || walk.expiry.0 >= walk.duration.0 {
            return Err("chain.walk.expiry: more than 0s and less than the duration".into());
        }
        if walk.proof_period.0 < Duration::from_secs(2) || walk.slot_size.0 == 0 {
            return Err("chain.walk: proof-period at least 2s, slot-size more than 0".into());
        }
        let hosts = walk.slots + 1;
        for down in &self.endpoint_down {
            let known = down.actor == "client"
                || down.actor == "validator"
                || down
                    .actor
                    .strip_prefix("host-")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n < hosts);
            if !known {
                return Err(format!(
                    "chain.endpoint-down.actor: {:?} is not client, validator or host-0..host-{}",
                    down.actor,
                    hosts - 1
                ));
            }
        }
        Ok(())
    }
}

/// An endpoint outage: every request of `actor` fails from `at` for `for`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EndpointDown {
    /// `client`, `validator` or `host-N` (N counts from 0; the last host is the spare).
    pub actor: String,
    pub at: Span,
    #[serde(rename = "for")]
    pub duration: Span,
}

/// The storage request walked through its life (`neverust::chain::walk`), and the
/// marketplace's proof timing.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ChainWalk {
    /// When the client requests storage (after the contracts are deployed).
    #[serde(default = "default_walk_at")]
    pub at: Span,
    pub slots: u64,
    #[serde(default = "default_max_slot_loss")]
    pub max_slot_loss: u64,
    pub slot_size: ByteSize,
    pub duration: Span,
    pub expiry: Span,
    /// The slot whose host stops proving once it has filled it.
    #[serde(default)]
    pub silent_slot: u64,
    /// Seconds per proof period.
    #[serde(default = "default_proof_period")]
    pub proof_period: Span,
    /// Of the 256 pointer values, how many require no proof.
    #[serde(default = "default_proof_downtime")]
    pub proof_downtime: u8,
}

fn default_block_time() -> Span {
    Span(Duration::from_secs(12))
}

fn default_rpc_latency() -> Param<f64> {
    Param::Range([2.0, 20.0])
}

fn default_walk_at() -> Span {
    Span(Duration::from_secs(60))
}

fn default_max_slot_loss() -> u64 {
    1
}

fn default_proof_period() -> Span {
    Span(Duration::from_secs(120))
}

fn default_proof_downtime() -> u8 {
    64
}

/// Timing of the nodes' slot checks and lazy repair (their `--repair-*` settings).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Repair {
    #[serde(default = "default_check_interval")]
    pub check_interval: Span,
    /// How long a slot may be missing before it is rebuilt elsewhere.
    #[serde(default = "default_repair_after")]
    pub after: Span,
    /// How long a question to a peer is waited for.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Span,
    /// How long a host is given to fetch (or rebuild) and store a slot.
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout: Span,
}

fn default_request_timeout() -> Span {
    Span(neverust::durability::DurabilityConfig::default().request_timeout)
}

fn default_hold_timeout() -> Span {
    Span(neverust::durability::DurabilityConfig::default().hold_timeout)
}

fn default_check_interval() -> Span {
    Span(Duration::from_secs(60))
}

fn default_repair_after() -> Span {
    Span(Duration::from_secs(300))
}

impl Default for Repair {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn default_suite_seeds() -> String {
    "1..4".into()
}

fn default_healing() -> Span {
    Span(Duration::from_secs(120))
}

fn default_block_size() -> ByteSize {
    ByteSize(64 << 10)
}

/// Node counts and roles. Node 0 is the bootstrap node every other node dials at start.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Nodes {
    /// Nodes at the start, the bootstrap node (node 0) and the clients included.
    pub count: Param<u64>,
    /// Clients: the last nodes of `count`. They store what they download like every node, but
    /// churn and random faults never touch them (they stand for the users of the network), and
    /// workloads with `on = "clients"` run on them.
    #[serde(default)]
    pub clients: u64,
    #[serde(default = "default_quota")]
    pub quota: ByteSize,
    /// Share of nodes whose links are `slow-factor` times slower (latency and bandwidth).
    #[serde(default)]
    pub slow_fraction: Param<f64>,
    #[serde(default = "default_slow_factor")]
    pub slow_factor: f64,
    /// SHA-256 throughput of a simulated machine, per second: hashing an upload takes this
    /// much virtual time.
    #[serde(default = "default_hash_rate")]
    pub hash_rate: ByteSize,
    /// Groth16 proving speed of a simulated machine, in constraints a second: a storage proof
    /// takes its circuit's constraints over this much virtual time.
    #[serde(default = "default_prove_rate")]
    pub prove_rate: u64,
}

/// Measured with `benches/proofs.rs` on a 2-core machine: 89,269 constraints (5 samples)
/// proven in 0.99 s.
fn default_prove_rate() -> u64 {
    90_000
}

fn default_hash_rate() -> ByteSize {
    ByteSize(1 << 30)
}

fn default_quota() -> ByteSize {
    ByteSize(4 << 30)
}

fn default_slow_factor() -> f64 {
    10.0
}

/// The link model.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NetworkModel {
    /// One-way latency of a link, drawn per link from this range.
    #[serde(default = "default_latency")]
    pub latency_ms: Param<f64>,
    /// Extra latency per message, drawn from 0..jitter.
    #[serde(default)]
    pub jitter_ms: Param<f64>,
    /// Per node, each direction (uplink and downlink), per second.
    #[serde(default = "default_bandwidth")]
    pub bandwidth: ByteSize,
    /// Probability that a segment is lost and retransmitted (a stream transport never drops
    /// a message: loss costs retransmission time, and a run of losses resets the connection).
    #[serde(default)]
    pub loss: Param<f64>,
    /// Probability that a message is delivered twice (a datagram fault; TCP and QUIC never
    /// do this: it tests that node logic is idempotent).
    #[serde(default)]
    pub duplicate: Param<f64>,
    /// Probability that a message skips the link's FIFO order (a datagram fault as above).
    #[serde(default)]
    pub reorder: Param<f64>,
    /// How long a dial to an unreachable peer takes to fail.
    #[serde(default = "default_dial_timeout")]
    pub dial_timeout: Span,
    /// How long until a dead or partitioned peer's connections are noticed as closed (ping
    /// timeout).
    #[serde(default = "default_failure_detection")]
    pub failure_detection: Span,
}

fn default_latency() -> Param<f64> {
    Param::Range([5.0, 60.0])
}

fn default_bandwidth() -> ByteSize {
    ByteSize(50 << 20)
}

fn default_dial_timeout() -> Span {
    Span(Duration::from_secs(5))
}

fn default_failure_detection() -> Span {
    Span(Duration::from_secs(20))
}

impl Default for NetworkModel {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// The modeled DHT.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DhtModel {
    /// Nodes a provider record is stored on (Kademlia's k).
    #[serde(default = "default_replication")]
    pub replication: u64,
    /// How long a provider record lives unless republished.
    #[serde(default = "default_record_ttl")]
    pub record_ttl: Span,
    /// How often a node announces its datasets again.
    #[serde(default = "default_republish")]
    pub republish: Span,
}

fn default_replication() -> u64 {
    20
}

fn default_record_ttl() -> Span {
    Span(Duration::from_secs(24 * 3600))
}

fn default_republish() -> Span {
    Span(Duration::from_secs(30 * 60))
}

impl Default for DhtModel {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// A stream of operations.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// Operations in all.
    pub count: Param<u64>,
    /// Upload sizes, drawn per upload.
    #[serde(default)]
    pub size: Option<SizeParam>,
    /// When the first operation starts.
    #[serde(default)]
    pub start: Span,
    /// Time between operations.
    #[serde(default = "default_every")]
    pub every: Span,
    /// Nodes the operations run on (indices); all live nodes if absent.
    #[serde(default)]
    pub nodes: Option<[u64; 2]>,
    /// Which role runs the operations: `any` (default), `clients` or `storage`.
    #[serde(default)]
    pub on: Role,
    /// Uploads only: erasure-code each upload with `[K, M]` and place its slots on distinct
    /// nodes; once all are placed the uploader drops its own copies, so the slots are the only
    /// ones.
    #[serde(default)]
    pub protect: Option<[u32; 2]>,
    /// Downloads only: whether the downloading node keeps the copy it fetched (as the API's
    /// network download does); `false` verifies the bytes and drops the copy, so downloads
    /// during faults add no redundancy.
    #[serde(default = "default_true")]
    pub keep: bool,
}

/// Node roles a workload can run on.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    Any,
    Clients,
    Storage,
}

fn default_every() -> Span {
    Span(Duration::from_secs(1))
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Upload fresh random bytes to a live node.
    Upload,
    /// Download an acknowledged dataset on a live node that lacks it, by DHT discovery.
    Download,
    /// Upload fresh random bytes to a live node and request storage for them on the
    /// marketplace (`[chain.market]`'s terms).
    Request,
}

/// Faults injected during the fault phase.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub churn: Option<Churn>,
    #[serde(default)]
    pub crash: Vec<Crash>,
    #[serde(default)]
    pub depart: Vec<Depart>,
    #[serde(default)]
    pub partition: Vec<Partition>,
    #[serde(default)]
    pub clog: Vec<Clog>,
    #[serde(default)]
    pub arrive: Vec<Arrive>,
    #[serde(default)]
    pub disk: Option<DiskFaults>,
}

/// New, empty nodes joining together.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Arrive {
    pub at: Span,
    pub count: u64,
}

/// Nodes leaving and coming back at random.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Churn {
    /// Departures per hour, all nodes together (a Poisson process).
    pub departures_per_hour: Param<f64>,
    /// New nodes joining per hour (a Poisson process); each starts empty and bootstraps.
    #[serde(default)]
    pub arrivals_per_hour: Param<f64>,
    /// How long a departed node stays away, drawn per departure.
    pub downtime: [Span; 2],
    /// Share of departures that are crashes (kill -9) rather than clean stops.
    #[serde(default = "default_crash_share")]
    pub crash_share: f64,
    /// Share of departures that are permanent (the node and its disk are gone).
    #[serde(default)]
    pub permanent_share: f64,
    /// Nodes churn never touches (the bootstrap node, say).
    #[serde(default)]
    pub spare: Vec<u64>,
    /// Permanent departures take only nodes whose every dataset has an intact copy elsewhere,
    /// keeping them within the redundancy the data has; `false` lets them take a last copy
    /// (the oracle then reports the loss).
    #[serde(default = "default_true")]
    pub spare_last_copy: bool,
}

fn default_crash_share() -> f64 {
    0.5
}

/// One node crashing, and restarting later (or never).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Crash {
    pub at: Span,
    pub node: Target,
    #[serde(default)]
    pub restart_after: Option<Span>,
    /// Share of the node's stored blocks that rot (a flipped bit each) while it is down: at
    /// least one when above zero.
    #[serde(default)]
    pub damage: f64,
    /// Time between crashes when `node` names several.
    #[serde(default)]
    pub every: Span,
    /// Node indices `"random"` and `"oldest"` never pick.
    #[serde(default)]
    pub spare: Vec<u64>,
}

/// Nodes leaving for good, disks and all.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Depart {
    pub at: Span,
    pub node: Target,
    /// Time between departures when `node` names several.
    #[serde(default)]
    pub every: Span,
    /// Node indices `"random"` and `"oldest"` never pick.
    #[serde(default)]
    pub spare: Vec<u64>,
}

/// Which node(s) a fault hits.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Target {
    /// A node index.
    Index(u64),
    /// `"random"`; `"oldest"`: the live node that joined first (neither picks a client, a
    /// validator or a `spare` node); `"holders-of-first-upload"`: every node holding the first
    /// dataset;
    /// `"hosts-of-first-request"`: every node selling a slot of the first storage request;
    /// `"holder-of:N"`: one live node holding the `N`-th upload (whole or a slot of it);
    /// `"repair-host-of:N"`: one live node holding a slot of the `N`-th upload it was not
    /// first placed on (a slot repaired onto it). Each picked when the fault strikes.
    Named(String),
}

impl Target {
    /// The upload a `holder-of:N` or `repair-host-of:N` target names, and whether it asks for
    /// a repair host.
    pub fn upload_holder(&self) -> Option<(usize, bool)> {
        let Target::Named(name) = self else { return None };
        if let Some(n) = name.strip_prefix("holder-of:") {
            return n.parse().ok().map(|n| (n, false));
        }
        name.strip_prefix("repair-host-of:").and_then(|n| n.parse().ok()).map(|n| (n, true))
    }
}

/// Traffic between two groups blocked (in one direction only if `one-way`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Partition {
    pub at: Span,
    pub duration: Span,
    /// Share of nodes on side A (the lowest indices after a seeded shuffle).
    #[serde(default = "default_split")]
    pub split: Param<f64>,
    #[serde(default)]
    pub one_way: bool,
}

fn default_split() -> Param<f64> {
    Param::Scalar(0.5)
}

/// Nodes whose traffic stalls completely for a while.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Clog {
    pub at: Span,
    pub duration: Span,
    pub nodes: Param<u64>,
}

/// Disk faults, per node, as rates over the fault phase.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DiskFaults {
    /// Share of disks that acknowledge a sync before the data is durable (a write cache):
    /// a crash loses what they acknowledged since their last real flush.
    #[serde(default)]
    pub lying_fsync_share: f64,
    /// How long such a disk keeps acknowledged writes only in its cache.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Span,
    /// Whether a crash can tear the block being written on such a disk.
    #[serde(default)]
    pub torn_writes: bool,
    /// Stored blocks silently flipped per hour, all disks together.
    #[serde(default)]
    pub bit_rot_per_hour: Param<f64>,
    /// Stored blocks that become unreadable per hour, all disks together.
    #[serde(default)]
    pub latent_errors_per_hour: Param<f64>,
    /// Probability that a block write lands on another block's place.
    #[serde(default)]
    pub misdirected_write: f64,
    /// Share of disks much smaller than the quota says (they fill up).
    #[serde(default)]
    pub small_disk_share: f64,
    #[serde(default = "default_small_disk")]
    pub small_disk: ByteSize,
    /// Bit rot and latent errors strike only blocks of datasets with another intact copy,
    /// keeping these faults within the redundancy the data has; `false` lets them destroy
    /// a last copy (the oracle then reports the loss).
    #[serde(default = "default_true")]
    pub spare_last_copy: bool,
}

fn default_true() -> bool {
    true
}

fn default_flush_interval() -> Span {
    Span(Duration::from_secs(30))
}

fn default_small_disk() -> ByteSize {
    ByteSize(2 << 20)
}

impl Default for DiskFaults {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// What the run must show.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Invariants {
    /// After healing, every outstanding download must complete within this bound.
    #[serde(default = "default_liveness_bound")]
    pub liveness_bound: Span,
    /// "Sometimes" probes that must have fired at least once.
    #[serde(default)]
    pub sometimes: Vec<String>,
    /// The invariant this scenario is built to break (the run passes when exactly it fails).
    #[serde(default)]
    pub expect_failure: Option<String>,
    /// The longest a slot of a protected dataset may stay missing (no live node holding it
    /// intact); unbounded when absent.
    #[serde(default)]
    pub repair_bound: Option<Span>,
    /// The most needless repairs allowed (slots copied while every slot of their dataset was
    /// held by a live node); unbounded when absent.
    #[serde(default)]
    pub needless_repairs_max: Option<u64>,
}

fn default_liveness_bound() -> Span {
    Span(Duration::from_secs(300))
}

impl Default for Invariants {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// A value, or a range `[low, high]` drawn once per seed.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Param<T> {
    Scalar(T),
    Range([T; 2]),
}

impl<T: Default> Default for Param<T> {
    fn default() -> Self {
        Param::Scalar(T::default())
    }
}

impl Param<f64> {
    pub fn draw(&self, rng: &mut impl Rng) -> f64 {
        match *self {
            Param::Scalar(v) => v,
            Param::Range([a, b]) if a < b => rng.random_range(a..=b),
            Param::Range([a, _]) => a,
        }
    }
}

impl Param<u64> {
    pub fn draw(&self, rng: &mut impl Rng) -> u64 {
        match *self {
            Param::Scalar(v) => v,
            Param::Range([a, b]) if a < b => rng.random_range(a..=b),
            Param::Range([a, _]) => a,
        }
    }
}

/// An upload size, or a range of them drawn per upload.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeParam {
    Scalar(ByteSize),
    Range([ByteSize; 2]),
}

impl SizeParam {
    pub fn draw(&self, rng: &mut impl Rng) -> u64 {
        match *self {
            SizeParam::Scalar(v) => v.0,
            SizeParam::Range([a, b]) if a.0 < b.0 => rng.random_range(a.0..=b.0),
            SizeParam::Range([a, _]) => a.0,
        }
    }
}

/// A span of simulated time: `"250ms"`, `"30s"`, `"5m"`, `"2h"`, or seconds as a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Seconds(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Seconds(s) if s >= 0.0 => Ok(Span(Duration::from_secs_f64(s))),
            Repr::Seconds(s) => Err(serde::de::Error::custom(format!("{s} is negative"))),
            Repr::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for Span {
    type Err = String;
    /// A number and a unit (`30s`, `1.5h`), or several summed (`2m30s`, `1h 15m`); a bare
    /// number is seconds.
    fn from_str(text: &str) -> Result<Span, String> {
        let text = text.trim();
        let mut rest = text;
        let mut seconds = 0.0;
        while !rest.is_empty() {
            let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (number, after) = rest.split_at(split);
            let value: f64 =
                number.parse().map_err(|_| format!("{text:?} is not a duration like 30s or 2m30s"))?;
            let after = after.trim_start();
            let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
            let (unit, tail) = after.split_at(unit_len);
            seconds += value
                * match unit {
                    "ms" => 0.001,
                    "s" => 1.0,
                    "" if number == text => 1.0,
                    "m" | "min" => 60.0,
                    "h" => 3600.0,
                    "d" => 86400.0,
                    "" => return Err(format!("{text:?}: {number} has no unit (ms, s, m, h, d)")),
                    other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h, d)")),
                };
            rest = tail.trim_start();
        }
        if text.is_empty() {
            return Err("an empty duration".into());
        }
        Ok(Span(Duration::from_secs_f64(seconds)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs_f64();
        if s >= 3600.0 {
            write!(f, "{:.1}h", s / 3600.0)
        } else if s >= 60.0 {
            write!(f, "{:.1}m", s / 60.0)
        } else {
            write!(f, "{s:.1}s")
        }
    }
}

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The sometimes-probes a scenario may require.
pub const PROBES: [&str; 25] = [
    "download-completed",
    "download-while-a-holder-was-down",
    "download-after-partition-healed",
    "crash-rolled-back-an-upload",
    "node-restarted",
    "corrupt-block-detected",
    "read-error-survived",
    "disk-full-refused-an-upload",
    "retransmission",
    "slot-repaired",
    "proof-missed-and-slashed",
    "slot-repaired-on-chain",
    "transaction-sent-again",
    "storage-requested",
    "slot-filled",
    "proof-submitted",
    "proof-missed",
    "host-slashed",
    "slot-freed",
    "slot-repaired-by-market",
    "slot-restored",
    "request-finished",
    "request-failed",
    "payout-withdrawn",
    "market-host-departed",
];

/// The invariants a run checks.
pub const INVARIANTS: [&str; 9] = [
    "integrity",
    "durability",
    "redundancy",
    "repair",
    "liveness",
    "sometimes",
    "payments",
    "slashing",
    "requests",
];

impl Scenario {
    /// Parses and validates a scenario file's text; errors name the file, the key and the line.
    pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid { path: path.into(), message };
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().into()))?;
        scenario.validate().map_err(invalid)?;
        Ok(scenario)
    }

    /// Checks values the types do not (ranges, probabilities, positive rates).
    pub fn validate(&self) -> Result<(), String> {
        let count_max = match self.nodes.count {
            Param::Scalar(n) => n,
            Param::Range([_, b]) => b,
        };
        let count_min = match self.nodes.count {
            Param::Scalar(n) => n,
            Param::Range([a, _]) => a,
        };
        if count_min < 2 {
            return Err("nodes.count: at least 2 nodes (a bootstrap node and one more)".into());
        }
        if count_max > 5000 {
            return Err("nodes.count: at most 5000 nodes".into());
        }
        if self.nodes.clients >= count_min {
            return Err(format!(
                "nodes.clients: {} leaves no storage node (nodes.count is {count_min})",
                self.nodes.clients
            ));
        }
        if self.duration.0.is_zero() {
            return Err("duration: must be more than 0s".into());
        }
        for (i, w) in self.workloads.iter().enumerate() {
            if w.on == Role::Clients && self.nodes.clients == 0 {
                return Err(format!("workload[{i}].on: \"clients\" but nodes.clients is 0"));
            }
            if matches!(w.kind, WorkloadKind::Upload | WorkloadKind::Request) && w.size.is_none() {
                return Err(format!("workload[{i}].size: an upload or request workload needs a size"));
            }
            if w.kind == WorkloadKind::Request && self.chain.as_ref().is_none_or(|c| c.market.is_none()) {
                return Err(format!("workload[{i}].kind: \"request\" needs a [chain.market]"));
            }
            if let Some([a, b]) = w.nodes
                && (a > b || b >= count_min)
            {
                return Err(format!("workload[{i}].nodes: [{a}, {b}] is not a range of node indices"));
            }
        }
        let disk = self.faults.disk.clone().unwrap_or_default();
        let mut shares = vec![
            ("network.loss", min_of(self.network.loss), max_of(self.network.loss)),
            ("network.duplicate", min_of(self.network.duplicate), max_of(self.network.duplicate)),
            ("network.reorder", min_of(self.network.reorder), max_of(self.network.reorder)),
            ("nodes.slow-fraction", min_of(self.nodes.slow_fraction), max_of(self.nodes.slow_fraction)),
            ("faults.disk.lying-fsync-share", disk.lying_fsync_share, disk.lying_fsync_share),
            ("faults.disk.misdirected-write", disk.misdirected_write, disk.misdirected_write),
            ("faults.disk.small-disk-share", disk.small_disk_share, disk.small_disk_share),
        ];
        for p in &self.faults.partition {
            shares.push(("faults.partition.split", min_of(p.split), max_of(p.split)));
        }
        for c in &self.faults.crash {
            shares.push(("faults.crash.damage", c.damage, c.damage));
        }
        for (key, low, high) in shares {
            if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) {
                return Err(format!("{key}: {low}..{high} is not a probability between 0 and 1"));
            }
        }
        let non_negative = [
            ("network.latency-ms", min_of(self.network.latency_ms)),
            ("network.jitter-ms", min_of(self.network.jitter_ms)),
            ("faults.disk.bit-rot-per-hour", min_of(disk.bit_rot_per_hour)),
            ("faults.disk.latent-errors-per-hour", min_of(disk.latent_errors_per_hour)),
        ];
        for (key, value) in non_negative {
            if value < 0.0 || value.is_nan() {
                return Err(format!("{key}: {value} is negative"));
            }
        }
        if self.network.bandwidth.0 == 0 {
            return Err("network.bandwidth: must be more than 0".into());
        }
        if self.nodes.slow_factor <= 0.0 {
            return Err("nodes.slow-factor: must be more than 0".into());
        }
        let block = self.block_size.0;
        if !(4096..=8 << 20).contains(&block) || !block.is_multiple_of(2048) {
            return Err(format!("block-size: {block} bytes is not a multiple of 2KiB between 4KiB and 8MiB"));
        }
        if let Some(chain) = &self.chain {
            chain.validate()?;
        }
        if self.dht.replication == 0 {
            return Err("dht.replication: at least 1".into());
        }
        for (key, span) in [
            ("dht.republish", self.dht.republish),
            ("dht.record-ttl", self.dht.record_ttl),
            ("faults.disk.flush-interval", disk.flush_interval),
            ("invariants.liveness-bound", self.invariants.liveness_bound),
            ("network.failure-detection", self.network.failure_detection),
        ] {
            if span.0.is_zero() {
                return Err(format!("{key}: must be more than 0s"));
            }
        }
        if let Some(churn) = &self.faults.churn {
            if churn.downtime[0] > churn.downtime[1] {
                return Err("faults.churn.downtime: [low, high] with low <= high".into());
            }
            for (key, v) in [("crash-share", churn.crash_share), ("permanent-share", churn.permanent_share)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("faults.churn.{key}: {v} is not between 0 and 1"));
                }
            }
        }
        for (key, target) in self
            .faults
            .crash
            .iter()
            .map(|c| ("faults.crash.node", &c.node))
            .chain(self.faults.depart.iter().map(|d| ("faults.depart.node", &d.node)))
        {
            match target {
                Target::Index(i) if *i >= count_min => {
                    return Err(format!("{key}: node {i} does not exist (nodes.count is {count_min})"));
                }
                Target::Named(name)
                    if !["random", "oldest", "holders-of-first-upload", "hosts-of-first-request"]
                        .contains(&name.as_str())
                        && target.upload_holder().is_none() =>
                {
                    return Err(format!(
                        "{key}: {name:?} is neither an index, \"random\", \"oldest\", \"holders-of-first-upload\", \"hosts-of-first-request\", \"holder-of:N\" nor \"repair-host-of:N\""
                    ));
                }
                _ => {}
            }
        }
        for probe in &self.invariants.sometimes {
            if !PROBES.contains(&probe.as_str()) {
                return Err(format!(
                    "invariants.sometimes: unknown probe {probe:?} (known: {})",
                    PROBES.join(", ")
                ));
            }
        }
        if let Some(expected) = &self.invariants.expect_failure
            && !INVARIANTS.contains(&expected.as_str())
        {
            return Err(format!(
                "invariants.expect-failure: unknown invariant {expected:?} (known: {})",
                INVARIANTS.join(", ")
            ));
        }
        Ok(())
    }
}

fn min_of(p: Param<f64>) -> f64 {
    match p {
        Param::Scalar(v) => v,
        Param::Range([a, b]) => a.min(b),
    }
}

fn max_of(p: Param<f64>) -> f64 {
    match p {
        Param::Scalar(v) => v,
        Param::Range([a, b]) => a.max(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"t\"\nduration = \"10s\"\n[nodes]\ncount = 3\n";

    #[test]
    fn a_minimal_scenario_takes_defaults() {
        let s = Scenario::parse("t.toml", MINIMAL).unwrap();
        assert_eq!(s.duration, Span(Duration::from_secs(10)));
        assert_eq!(s.network.latency_ms, Param::Range([5.0, 60.0]));
        assert_eq!(s.dht.replication, 20);
    }

    #[test]
    fn errors_name_the_key() {
        let typo = format!("{MINIMAL}[network]\nlatency = 5\n");
        let err = Scenario::parse("t.toml", &typo).unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("latency") && err.contains("line"), "{err}");
        let bad = format!("{MINIMAL}[network]\nloss = 1.5\n");
        assert!(Scenario::parse("t.toml", &bad).unwrap_err().to_string().contains("network.loss"));
        let upload = format!("{MINIMAL}[[workload]]\nkind = \"upload\"\ncount = 1\n");
        assert!(Scenario::parse("t.toml", &upload).unwrap_err().to_string().contains("workload[0].size"));
        let crash = format!("{MINIMAL}[[faults.crash]]\nat = \"1s\"\nnode = 9\n");
        assert!(Scenario::parse("t.toml", &crash).unwrap_err().to_string().contains("faults.crash.node"));
        let depart = |node: &str| format!("{MINIMAL}[[faults.depart]]\nat = \"1s\"\nnode = \"{node}\"\n");
        let parsed = Scenario::parse("t.toml", &depart("repair-host-of:2")).unwrap();
        assert_eq!(parsed.faults.depart[0].node.upload_holder(), Some((2, true)));
        assert!(Scenario::parse("t.toml", &depart("oldest")).is_ok());
        let parsed = Scenario::parse("t.toml", &depart("holder-of:0")).unwrap();
        assert_eq!(parsed.faults.depart[0].node.upload_holder(), Some((0, false)));
        assert!(
            Scenario::parse("t.toml", &depart("holder-of:first"))
                .unwrap_err()
                .to_string()
                .contains("holder-of:N")
        );
        let damage = format!("{MINIMAL}[[faults.crash]]\nat = \"1s\"\nnode = 1\ndamage = 1.5\n");
        assert!(Scenario::parse("t.toml", &damage).unwrap_err().to_string().contains("faults.crash.damage"));
        let span = "name = \"t\"\nduration = \"10 parsecs\"\n[nodes]\ncount = 3\n";
        assert!(Scenario::parse("t.toml", span).unwrap_err().to_string().contains("unknown unit"));
        assert_eq!("2m30s".parse::<Span>().unwrap().0, Duration::from_secs(150));
        assert_eq!("1h 15m".parse::<Span>().unwrap().0, Duration::from_secs(4500));
        assert_eq!("90".parse::<Span>().unwrap().0, Duration::from_secs(90));
        assert_eq!("1.5s".parse::<Span>().unwrap().0, Duration::from_millis(1500));
        assert!(
            "2m30".parse::<Span>().is_err()
                && "".parse::<Span>().is_err()
                && "5 parsecs".parse::<Span>().is_err()
        );
    }

    #[test]
    fn chain_sections_are_checked() {
        let walk = "[chain.walk]\nslots = 3\nslot-size = \"1MiB\"\nduration = \"1h\"\nexpiry = \"10m\"\n";
        let ok = format!("{MINIMAL}[chain]\n{walk}");
        let s = Scenario::parse("t.toml", &ok).unwrap();
        let chain = s.chain.expect("a chain");
        assert_eq!(
            (chain.block_time.0, chain.walk.as_ref().unwrap().proof_downtime),
            (Duration::from_secs(12), 64)
        );
        // (what is changed, the key the error names)
        for (change, key) in [
            ("[chain]\nblock-time = \"1500ms\"\n", "chain.block-time"),
            ("[chain]\ntx-drop = 1.0\n", "chain.tx-drop"),
            (
                "[chain]\n[[chain.endpoint-down]]\nactor = \"host-4\"\nat = \"1m\"\nfor = \"1m\"\n",
                "chain.endpoint-down.actor",
            ),
        ] {
            let text = format!("{MINIMAL}{change}{walk}");
            let err = Scenario::parse("t.toml", &text).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let late = format!("{MINIMAL}[chain]\n{}", walk.replace("\"10m\"", "\"2h\""));
        assert!(Scenario::parse("t.toml", &late).unwrap_err().to_string().contains("chain.walk.expiry"));
        let silent = format!("{MINIMAL}[chain]\n{walk}silent-slot = 3\n");
        assert!(Scenario::parse("t.toml", &silent).unwrap_err().to_string().contains("silent-slot"));

        // The market: its terms, and request workloads only with it.
        let market = "[chain]\n[chain.market]\nduration = \"1h\"\nexpiry = \"10m\"\n";
        let s = Scenario::parse("t.toml", &format!("{MINIMAL}{market}")).unwrap();
        assert_eq!(s.chain.unwrap().market.unwrap().nodes, 4);
        for (text, key) in [
            (market.replace("\"10m\"", "\"2h\""), "chain.market.expiry"),
            (format!("{market}tolerance = 3\n"), "tolerance"),
            (format!("{market}validators = 0\n"), "chain.market.validators"),
            (
                "[[workload]]\nkind = \"request\"\ncount = 1\nsize = \"1MiB\"\n".into(),
                "needs a [chain.market]",
            ),
        ] {
            let err = Scenario::parse("t.toml", &format!("{MINIMAL}{text}")).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn spans_parse() {
        for (text, secs) in [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1.5h", 5400.0)]
        {
            assert_eq!(text.parse::<Span>().unwrap().0.as_secs_f64(), secs, "{text}");
        }
    }
}
