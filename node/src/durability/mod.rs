//! Keeping protected datasets at full redundancy in cluster mode: slot placement, checks and
//! lazy repair.
//!
//! - **Placement.** Protecting a dataset ([`Durability::place`]) marks every slot as unplaced;
//!   the check below then asks a distinct connected peer to hold each one.
//! - **Holding** (any node, asked by `Hold`): fetch the manifest and the dataset tree's leaf
//!   digests (checked against the tree root), fetch the slot's blocks from providers, rebuild
//!   any block nobody serves from `K` other blocks of its column (checked against its leaf
//!   digest), check the whole slot against its slot root (Poseidon2), store it as a held slot
//!   and advertise the dataset.
//! - **Checking** (every [`DurabilityConfig::check_interval`], by every node that holds the
//!   protected dataset or a slot of it): ask the dataset's providers what they hold (slots,
//!   slots being taken, the whole dataset). The *leader*, the smallest peer ID among the nodes
//!   holding something of the dataset, then challenges one holder of each slot to prove cells
//!   sampled from fresh entropy against the slot root; the others stop there (one set of
//!   challenges a round, one repairer). A slot without a holder that proves it is *missing*.
//! - **Repair.** A slot the leader has seen missing for longer than
//!   [`DurabilityConfig::repair_after`] (lazy: a host that restarts quickly costs nothing), or
//!   never placed, is handed to a connected peer that holds nothing of the dataset. The repair
//!   is under way while that peer says it is taking the slot (and at most
//!   [`DurabilityConfig::hold_timeout`]); it is forgotten when it succeeds or this node stops
//!   leading the dataset, so a later loss of the slot is repaired in turn.
//! - **Outages.** A node without any connection sees every other holder gone: it counts
//!   nothing missing then, and starts counting from zero once connected again (by when it has
//!   announced itself again, see [`crate::node::Node::start`]).
//!
//! Messages travel in the extension field of block-exchange messages ([`wire`]).

pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::wire::{CellAnswer, DIGESTS_MAX, SlotMessage};
use crate::content::{Block, Cid, Manifest, block_cid, cid_to_string, digest_of, tree_cid};
use crate::dataset::{Dataset, Datasets, Fetcher, erasure_layout, slot_roots};
use crate::discovery::Discovery;
use crate::erasure::{Coder, Layout};
use crate::exchange::Exchange;
use crate::merkle::poseidon2::{self, CellProof, F, SlotTree};
use crate::merkle::{Digest, MerkleTree};
use crate::metrics::Metrics;
use crate::net::{Network, PeerId};
use crate::runtime::NodeRng;
use crate::store::HeldSlot;

/// Cells sampled per challenge (Archivist proves 5 a period).
pub const SAMPLES: u64 = 5;

/// Peers close to a slot's key asked for when choosing its new host.
const CANDIDATES_ASKED: usize = 8;

/// Timing of checks and repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurabilityConfig {
    /// How often each holder checks the slots of the datasets it holds.
    pub check_interval: Duration,
    /// How long a slot may be missing before it is rebuilt elsewhere.
    pub repair_after: Duration,
    /// How long a question to a peer is waited for.
    pub request_timeout: Duration,
    /// How long a host is given to fetch (or rebuild) and store a slot.
    pub hold_timeout: Duration,
    /// Whether this node places, checks and repairs slots itself (cluster mode). Off in
    /// market mode, where the marketplace does: the service then only answers peers (leaf
    /// digests, holdings, challenges) and takes the slots the node's sales ask for.
    pub cluster_checks: bool,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            check_interval: Duration::from_secs(60),
            repair_after: Duration::from_secs(5 * 60),
            request_timeout: Duration::from_secs(20),
            hold_timeout: Duration::from_secs(30 * 60),
            cluster_checks: true,
        }
    }
}

/// Why a slot could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("{0}")]
    Manifest(String),
    #[error("slot {slot} does not exist: the dataset has {slots}")]
    NoSuchSlot { slot: u32, slots: u32 },
    #[error("no peer gave the leaf digests of the dataset tree")]
    NoDigests,
    #[error("block {index} is neither served nor rebuildable: {reason}")]
    Unavailable { index: u64, reason: String },
    #[error("the slot's blocks do not hash to its slot root")]
    SlotRootMismatch,
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("already taking this slot")]
    Busy,
}

/// The running durability service of a node.
#[derive(Clone)]
pub struct Durability {
    inner: Arc<Inner>,
}

struct Inner {
    datasets: Datasets,
    fetcher: Fetcher,
    exchange: Exchange,
    network: Arc<dyn Network>,
    discovery: Arc<dyn Discovery>,
    metrics: Arc<Metrics>,
    config: DurabilityConfig,
    state: Mutex<State>,
    /// Wakes the checker early (a dataset was just protected).
    wake: tokio::sync::Notify,
}

struct State {
    rng: NodeRng,
    next_request: u64,
    /// Requests awaiting an answer: from whom, and who waits.
    pending: BTreeMap<u64, (PeerId, oneshot::Sender<SlotMessage>)>,
    /// Slots seen missing, and since when; unplaced slots count as missing forever.
    missing_since: BTreeMap<(Cid, u32), Instant>,
    /// Slots not live at the last check of each dataset this node leads (for the metrics).
    short: BTreeMap<Cid, u32>,
    /// Slots of datasets protected here not yet seen held by anyone.
    unplaced: BTreeSet<(Cid, u32)>,
    /// Slots handed to a new host, and when.
    repairing: BTreeMap<(Cid, u32), (PeerId, Instant)>,
    /// Whether the last round of checks found this node without any connection: missing
    /// time is not counted then, and starts again from zero on reconnect.
    cut_off: bool,
    /// Slot trees of the slots held here (built on first need).
    slot_trees: BTreeMap<(Cid, u32), Arc<SlotTree>>,
    /// Slots this node is taking right now.
    taking: BTreeSet<(Cid, u32)>,
}

impl Durability {
    /// Starts the service: the message handler and the periodic checker.
    pub fn start(
        fetcher: Fetcher,
        exchange: Exchange,
        network: Arc<dyn Network>,
        discovery: Arc<dyn Discovery>,
        rng: NodeRng,
        config: DurabilityConfig,
        metrics: Arc<Metrics>,
    ) -> Durability {
        let state = State {
            rng,
            next_request: 1,
            pending: BTreeMap::new(),
            missing_since: BTreeMap::new(),
            short: BTreeMap::new(),
            unplaced: BTreeSet::new(),
            repairing: BTreeMap::new(),
            cut_off: false,
            slot_trees: BTreeMap::new(),
            taking: BTreeSet::new(),
        };
        let inner = Inner {
            datasets: fetcher.datasets().clone(),
            fetcher,
            exchange,
            network,
            discovery,
            metrics,
            config,
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
        };
        let durability = Durability { inner: Arc::new(inner) };
        let receiver = durability.clone();
        tokio::spawn(async move {
            let messages = receiver.inner.exchange.extensions().await;
            receiver.receive(messages).await;
        });
        let checker = durability.clone();
        if !config.cluster_checks {
            return durability;
        }
        tokio::spawn(async move {
            loop {
                checker.check_all().await;
                tokio::select! {
                    () = tokio::time::sleep(checker.inner.config.check_interval) => {}
                    () = checker.inner.wake.notified() => {}
                }
            }
        });
        durability
    }

    /// Places the slots of a protected dataset stored here on distinct peers (in the
    /// background: the checker does it, and keeps doing it until every slot has a host).
    pub fn place(&self, dataset: &Dataset) {
        let Some(verification) = dataset.manifest.erasure.as_ref().and_then(|e| e.verification.as_ref())
        else {
            return;
        };
        let long_ago =
            Instant::now().checked_sub(self.inner.config.repair_after).unwrap_or_else(Instant::now);
        let mut state = self.inner.state.lock().expect("durability state");
        for slot in 0..verification.slot_roots.len() as u32 {
            state.missing_since.entry((dataset.cid, slot)).or_insert(long_ago);
            state.unplaced.insert((dataset.cid, slot));
        }
        drop(state);
        self.inner.wake.notify_one();
        let (fetcher, dataset) = (self.inner.fetcher.clone(), dataset.clone());
        tokio::spawn(async move { fetcher.advertise(&dataset).await });
    }

    async fn receive(&self, mut messages: mpsc::UnboundedReceiver<(PeerId, Bytes)>) {
        while let Some((from, payload)) = messages.recv().await {
            let message = match SlotMessage::decode(&payload) {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!(peer = %from, error = %e, "malformed durability message");
                    continue;
                }
            };
            if message.is_answer() {
                // Only the peer asked may answer (request ids are guessable).
                let waiter = {
                    let mut state = self.inner.state.lock().expect("durability state");
                    match state.pending.get(&message.request()) {
                        Some((asked, _)) if *asked == from => state.pending.remove(&message.request()),
                        _ => None,
                    }
                };
                if let Some((_, waiter)) = waiter {
                    let _ = waiter.send(message);
                }
                continue;
            }
            let service = self.clone();
            tokio::spawn(async move {
                if let Some(answer) = service.answer(&from, message).await {
                    service.inner.exchange.send_extension(from, answer.encode()).await;
                }
            });
        }
    }

    async fn answer(&self, from: &PeerId, message: SlotMessage) -> Option<SlotMessage> {
        Some(match message {
            SlotMessage::Hold { request, manifest, slot, sources } => {
                let fresh =
                    self.inner.state.lock().expect("durability state").taking.insert((manifest, slot));
                let result = if fresh {
                    let result = self.hold(Some(from), manifest, slot, sources).await;
                    self.inner.state.lock().expect("durability state").taking.remove(&(manifest, slot));
                    result
                } else {
                    Err(HoldError::Busy)
                };
                let error = match result {
                    Ok(()) => String::new(),
                    Err(e) => {
                        tracing::warn!(manifest = %cid_to_string(&manifest), slot, error = %e, "could not hold a slot");
                        let mut text = e.to_string();
                        // Within what the peer's decoder takes, at a character boundary.
                        let mut end = text.len().min(wire::ERROR_BYTES_MAX);
                        while !text.is_char_boundary(end) {
                            end -= 1;
                        }
                        text.truncate(end);
                        text
                    }
                };
                SlotMessage::Held { request, error }
            }
            SlotMessage::Holdings { request, manifest } => {
                let pending = {
                    let state = self.inner.state.lock().expect("durability state");
                    state.taking.iter().filter(|(cid, _)| *cid == manifest).map(|(_, slot)| *slot).collect()
                };
                let whole = self.inner.datasets.get(manifest).await.ok().flatten().is_some();
                SlotMessage::HoldingsAre { request, slots: self.slots_held(manifest).await, pending, whole }
            }
            SlotMessage::Challenge { request, manifest, slot, entropy } => SlotMessage::Proof {
                request,
                cells: self.prove(manifest, slot, &entropy).await.unwrap_or_default(),
            },
            SlotMessage::Digests { request, manifest, first, count } => SlotMessage::DigestsAre {
                request,
                digests: self.digests(manifest, first, count.min(DIGESTS_MAX)).await.unwrap_or_default(),
            },
            _ => return None,
        })
    }

    /// Sends a request and waits for its answer.
    async fn ask(
        &self,
        to: &PeerId,
        make: impl FnOnce(u64) -> SlotMessage,
        timeout: Duration,
    ) -> Option<SlotMessage> {
        let (tx, rx) = oneshot::channel();
        let request = {
            let mut state = self.inner.state.lock().expect("durability state");
            let request = state.next_request;
            state.next_request += 1;
            state.pending.insert(request, (to.clone(), tx));
            request
        };
        self.inner.exchange.send_extension(to.clone(), make(request).encode()).await;
        let answer = tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok);
        self.inner.state.lock().expect("durability state").pending.remove(&request);
        answer
    }

    async fn slots_held(&self, manifest: Cid) -> Vec<u32> {
        let held = self.inner.datasets.store().list_slots().await.unwrap_or_default();
        held.iter().filter(|s| s.manifest_cid == manifest).map(|s| s.slot).collect()
    }

    /// Leaf digests of the tree of `manifest` held here (a dataset or a slot of it).
    async fn digests(&self, manifest: Cid, first: u64, count: u32) -> Option<Vec<Digest>> {
        let (m, _) = self.inner.fetcher.local_manifest(manifest).await?;
        let end = first.saturating_add(u64::from(count)).min(m.blocks_count());
        let mut out = Vec::with_capacity(end.saturating_sub(first) as usize);
        for index in first..end {
            let leaf = self.inner.datasets.store().get_leaf(m.tree_cid, index).await.ok()??;
            out.push(digest_of(&leaf.block_cid)?);
        }
        Some(out)
    }

    /// The slot tree of a slot held here, built from its blocks on first need.
    async fn slot_tree(&self, manifest_cid: Cid, manifest: &Manifest, slot: u32) -> Option<Arc<SlotTree>> {
        if let Some(tree) =
            self.inner.state.lock().expect("durability state").slot_trees.get(&(manifest_cid, slot))
        {
            return Some(tree.clone());
        }
        let layout = erasure_layout(manifest).ok()?;
        let range = layout.slot_blocks(slot);
        let blocks = self
            .inner
            .datasets
            .store()
            .get_tree_blocks(manifest.tree_cid, range.start, layout.steps)
            .await
            .ok()?;
        let block_size = manifest.block_size_bytes as usize;
        let tree = Arc::new(build_slot_tree(&blocks, block_size));
        self.inner
            .state
            .lock()
            .expect("durability state")
            .slot_trees
            .insert((manifest_cid, slot), tree.clone());
        Some(tree)
    }

    /// The cells of a held slot sampled from `entropy`, with their paths.
    async fn prove(&self, manifest_cid: Cid, slot: u32, entropy: &[u8; 32]) -> Option<Vec<CellAnswer>> {
        if !self.slots_held(manifest_cid).await.contains(&slot) {
            return None;
        }
        let (manifest, _) = self.inner.fetcher.local_manifest(manifest_cid).await?;
        let layout = erasure_layout(&manifest).ok()?;
        let tree = self.slot_tree(manifest_cid, &manifest, slot).await?;
        let root = slot_root(&manifest, slot)?;
        let entropy = poseidon2::from_bytes(entropy)?;
        let block_size = manifest.block_size_bytes as usize;
        let mut cells = Vec::new();
        for index in poseidon2::sample_cells(&entropy, &root, SAMPLES, tree.cells()) {
            let block_index = index / tree.cells_per_block();
            let block = if block_index < layout.steps {
                let at = layout.slot_blocks(slot).start + block_index;
                let data = self
                    .inner
                    .datasets
                    .store()
                    .get_tree_blocks(manifest.tree_cid, at, 1)
                    .await
                    .ok()?
                    .remove(0);
                if data.is_empty() { Bytes::from(vec![0u8; block_size]) } else { data }
            } else {
                Bytes::from(vec![0u8; block_size])
            };
            let proof = tree.cell_proof(index, &block);
            let offset = (index % tree.cells_per_block()) as usize * poseidon2::CELL_SIZE_BYTES;
            cells.push(CellAnswer {
                index,
                data: block.slice(offset..offset + poseidon2::CELL_SIZE_BYTES),
                path: proof.path().iter().map(poseidon2::to_bytes).collect(),
            });
        }
        Some(cells)
    }

    /// Asks `host` to prove slot `slot`; whether the answer checks out against the slot root.
    async fn challenge(&self, host: &PeerId, manifest_cid: Cid, manifest: &Manifest, slot: u32) -> bool {
        let Some(root) = slot_root(manifest, slot) else { return false };
        let Ok(layout) = erasure_layout(manifest) else { return false };
        let entropy = {
            let mut state = self.inner.state.lock().expect("durability state");
            let mut bytes = [0u8; 32];
            state.rng.rng().fill(&mut bytes[..31]);
            bytes
        };
        let answer = self
            .ask(
                host,
                |request| SlotMessage::Challenge { request, manifest: manifest_cid, slot, entropy },
                self.inner.config.request_timeout,
            )
            .await;
        let Some(SlotMessage::Proof { cells, .. }) = answer else { return false };
        let cells_per_block = u64::from(manifest.block_size_bytes) / poseidon2::CELL_SIZE_BYTES as u64;
        let slot_blocks = layout.steps.next_power_of_two();
        let entropy = poseidon2::from_bytes(&entropy).expect("31 random bytes are below the modulus");
        let expected = poseidon2::sample_cells(&entropy, &root, SAMPLES, slot_blocks * cells_per_block);
        cells.len() == expected.len()
            && cells.iter().zip(&expected).all(|(cell, &index)| {
                let path: Option<Vec<F>> = cell.path.iter().map(poseidon2::from_bytes).collect();
                cell.index == index
                    && cell.data.len() == poseidon2::CELL_SIZE_BYTES
                    && path.is_some_and(|path| {
                        path.len()
                            == crate::merkle::tree::path_len(cells_per_block)
                                + crate::merkle::tree::path_len(slot_blocks)
                            && CellProof::from_path(index, cells_per_block, slot_blocks, &path)
                                .verify(&poseidon2::hash_bytes(&cell.data), &root)
                    })
            })
    }

    /// Takes slot `slot` of `manifest_cid` for this node's own reasons (a sale): fetches its
    /// blocks from the dataset's providers, or rebuilds those nobody serves from `K` other
    /// blocks of their columns, checks the whole slot against its slot root and keeps it.
    /// Done at once when the slot is already held.
    pub async fn take_slot(&self, manifest_cid: Cid, slot: u32) -> Result<(), HoldError> {
        if !self.inner.state.lock().expect("durability state").taking.insert((manifest_cid, slot)) {
            return Err(HoldError::Busy);
        }
        let result = self.hold(None, manifest_cid, slot, Vec::new()).await;
        self.inner.state.lock().expect("durability state").taking.remove(&(manifest_cid, slot));
        result
    }

    /// Drops a held slot (its blocks go when nothing else uses them) and forgets its tree.
    pub async fn drop_slot(&self, manifest_cid: Cid, slot: u32) -> Result<bool, HoldError> {
        self.inner.state.lock().expect("durability state").slot_trees.remove(&(manifest_cid, slot));
        let dropped = self.inner.datasets.store().delete_slot(manifest_cid, slot).await?;
        self.refresh_slot_gauge().await;
        Ok(dropped)
    }

    /// Fetches (or rebuilds) slot `slot` of `manifest_cid`, verifies it and keeps it. `from`,
    /// the peer asking, is asked first (for the manifest and the blocks).
    async fn hold(
        &self,
        from: Option<&PeerId>,
        manifest_cid: Cid,
        slot: u32,
        sources: Vec<PeerId>,
    ) -> Result<(), HoldError> {
        if self.slots_held(manifest_cid).await.contains(&slot) {
            return Ok(());
        }
        let fetcher = &self.inner.fetcher;
        // The peer asking has the manifest, and may be ahead of the DHT.
        let asked = match from {
            Some(from) => fetcher.manifest_from(manifest_cid, vec![from.clone()]).await,
            None => None,
        };
        let (manifest, encoded) = match asked {
            Some(found) => found,
            None => fetcher.manifest(manifest_cid).await,
        }
        .map_err(|e| HoldError::Manifest(e.to_string()))?;
        let layout = erasure_layout(&manifest).map_err(|e| HoldError::Manifest(e.to_string()))?;
        let root =
            slot_root(&manifest, slot).ok_or(HoldError::Manifest("not a verifiable dataset".into()))?;
        if slot >= layout.params.slots() {
            return Err(HoldError::NoSuchSlot { slot, slots: layout.params.slots() });
        }
        // Sources first: the sender and the peers it named (as far as they answer a dial); a
        // DHT lookup only when they do not suffice.
        let me = self.inner.network.local_peer_id();
        let mut providers: Vec<PeerId> = from.into_iter().cloned().collect();
        for source in sources.into_iter().filter(|p| *p != me && Some(p) != from) {
            if self.inner.network.dial(&source, &[]).await.is_ok() {
                providers.push(source);
            }
        }
        let range = layout.slot_blocks(slot);
        let (tree, blocks) =
            match self.fetch_slot(manifest_cid, &manifest, &layout, range.clone(), &providers).await {
                Ok(found) => found,
                Err(_) => {
                    providers.extend(fetcher.providers(manifest_cid).await);
                    providers.sort();
                    providers.dedup();
                    providers.retain(|p| *p != me);
                    self.fetch_slot(manifest_cid, &manifest, &layout, range.clone(), &providers).await?
                }
            };
        let block_size = manifest.block_size_bytes as usize;
        let slot_tree = {
            let data: Vec<Bytes> = blocks.iter().map(|b| b.data().clone()).collect();
            self.inner.datasets.compute().run(move || build_slot_tree(&data, block_size)).await
        };
        if slot_tree.root() != root {
            return Err(HoldError::SlotRootMismatch);
        }
        let store = self.inner.datasets.store();
        let upload = store.begin_upload().await?;
        let result = async {
            store.put_upload_blocks(upload, range.start, blocks).await?;
            self.inner.datasets.store_tree_leaves(upload, Arc::new(tree)).await?;
            store
                .commit_slot(
                    upload,
                    HeldSlot { manifest_cid, slot, leaves: range.clone(), manifest: encoded.clone() },
                )
                .await
        }
        .await;
        if let Err(e) = result {
            let _ = store.abort_upload(upload).await;
            return Err(e.into());
        }
        self.inner
            .state
            .lock()
            .expect("durability state")
            .slot_trees
            .insert((manifest_cid, slot), Arc::new(slot_tree));
        self.refresh_slot_gauge().await;
        tracing::info!(manifest = %cid_to_string(&manifest_cid), slot, "holding slot");
        fetcher.advertise(&Dataset { cid: manifest_cid, manifest }).await;
        Ok(())
    }

    /// The dataset tree and the blocks `range`, from `providers`.
    async fn fetch_slot(
        &self,
        manifest_cid: Cid,
        manifest: &Manifest,
        layout: &Layout,
        range: std::ops::Range<u64>,
        providers: &[PeerId],
    ) -> Result<(MerkleTree, Vec<Block>), HoldError> {
        let tree = self.fetch_tree(manifest_cid, manifest, providers).await?;
        let blocks = self.fetch_or_rebuild(manifest, layout, &tree, range, providers).await?;
        Ok((tree, blocks))
    }

    async fn refresh_slot_gauge(&self) {
        let held = self.inner.datasets.store().list_slots().await.map(|s| s.len()).unwrap_or(0);
        self.inner.metrics.slots_held.set(held as i64);
    }

    /// The dataset tree of `manifest` rebuilt from leaf digests asked of `providers`.
    async fn fetch_tree(
        &self,
        manifest_cid: Cid,
        manifest: &Manifest,
        providers: &[PeerId],
    ) -> Result<MerkleTree, HoldError> {
        let total = manifest.blocks_count();
        for provider in providers {
            let mut digests = Vec::with_capacity(total.min(1 << 20) as usize);
            while (digests.len() as u64) < total {
                let first = digests.len() as u64;
                let count = (total - first).min(u64::from(DIGESTS_MAX)) as u32;
                let make = |request| SlotMessage::Digests { request, manifest: manifest_cid, first, count };
                match self.ask(provider, make, self.inner.config.request_timeout).await {
                    Some(SlotMessage::DigestsAre { digests: got, .. }) if !got.is_empty() => {
                        digests.extend(got)
                    }
                    _ => break,
                }
            }
            if digests.len() as u64 == total
                && let Some(tree) = MerkleTree::build(digests)
                && tree_cid(&tree.root()) == manifest.tree_cid
            {
                return Ok(tree);
            }
        }
        Err(HoldError::NoDigests)
    }

    /// Blocks `range` of the dataset: fetched from providers, or rebuilt from their columns.
    async fn fetch_or_rebuild(
        &self,
        manifest: &Manifest,
        layout: &Layout,
        tree: &MerkleTree,
        range: std::ops::Range<u64>,
        providers: &[PeerId],
    ) -> Result<Vec<Block>, HoldError> {
        let wanted: Vec<u64> = range.clone().filter(|&i| !layout.is_padding(i)).collect();
        let mut found = self.inner.fetcher.fetch_leaves(manifest.tree_cid, &wanted, providers).await;
        let mut coder: Option<Coder> = None;
        let mut blocks = Vec::with_capacity((range.end - range.start) as usize);
        for index in range {
            if layout.is_padding(index) {
                blocks.push(Block::new(Bytes::new()));
                continue;
            }
            let block = match found.remove(&index) {
                Some(data) => data,
                None => {
                    let coder = match &mut coder {
                        Some(coder) => coder,
                        None => coder.insert(
                            Coder::new(layout.params, manifest.block_size_bytes as usize)
                                .map_err(|e| HoldError::Unavailable { index, reason: e.to_string() })?,
                        ),
                    };
                    self.rebuild(manifest, layout, coder, index, providers).await?
                }
            };
            let block = Block::verified(block_cid(&tree.leaf(index)), block).ok_or_else(|| {
                HoldError::Unavailable { index, reason: "rebuilt block does not match its leaf".into() }
            })?;
            blocks.push(block);
        }
        Ok(blocks)
    }

    /// Block `index` rebuilt from the other blocks of its column.
    async fn rebuild(
        &self,
        manifest: &Manifest,
        layout: &Layout,
        coder: &mut Coder,
        index: u64,
        providers: &[PeerId],
    ) -> Result<Bytes, HoldError> {
        let fetched = self
            .inner
            .fetcher
            .fetch_leaves(manifest.tree_cid, &layout.rebuild_sources(index), providers)
            .await;
        self.inner.metrics.repair_bytes.inc_by(fetched.values().map(|b| b.len() as u64).sum::<u64>());
        let data = coder
            .rebuild(layout, index, |i| fetched.get(&i).map(|b| b.to_vec()))
            .map_err(|e| HoldError::Unavailable { index, reason: e.to_string() })?;
        self.inner.metrics.blocks_recovered.inc();
        Ok(Bytes::from(data))
    }

    /// One round of checks over every protected dataset held here, whole or as a slot.
    async fn check_all(&self) {
        // Cut off (an outage, or a network not joined yet), every other holder looks gone:
        // count nothing, and start counting again from zero once connected, by when the
        // node's announcements have been renewed (see `Node::start`).
        let connected = !self.inner.network.connected_peers().is_empty();
        {
            let mut state = self.inner.state.lock().expect("durability state");
            if !connected {
                state.cut_off = true;
                return;
            }
            if std::mem::take(&mut state.cut_off) {
                let now = Instant::now();
                let State { missing_since, unplaced, repairing, .. } = &mut *state;
                for (key, since) in missing_since.iter_mut() {
                    if !unplaced.contains(key) {
                        *since = now;
                    }
                }
                repairing.clear();
                tracing::info!("reconnected: slots missing are counted again from now");
            }
        }
        let store = self.inner.datasets.store();
        let mut watched: BTreeMap<Cid, Manifest> = BTreeMap::new();
        for dataset in self.inner.datasets.list().await.unwrap_or_default() {
            if dataset.manifest.erasure.as_ref().is_some_and(|e| e.verification.is_some()) {
                watched.insert(dataset.cid, dataset.manifest);
            }
        }
        for held in store.list_slots().await.unwrap_or_default() {
            if let Ok(manifest) = Manifest::decode(&held.manifest) {
                watched.entry(held.manifest_cid).or_insert(manifest);
            }
        }
        self.refresh_slot_gauge().await;
        self.inner.state.lock().expect("durability state").short.retain(|cid, _| watched.contains_key(cid));
        for (cid, manifest) in watched {
            self.check(cid, &manifest).await;
        }
    }

    /// Checks the slots of one dataset, and repairs what has been missing too long.
    async fn check(&self, manifest_cid: Cid, manifest: &Manifest) {
        let Ok(layout) = erasure_layout(manifest) else { return };
        let me = self.inner.network.local_peer_id();
        let mut holders: BTreeMap<u32, Vec<PeerId>> = BTreeMap::new();
        let mut any_slot: BTreeSet<PeerId> = BTreeSet::new();
        let mut being_taken: BTreeSet<u32> = BTreeSet::new();
        for slot in self.slots_held(manifest_cid).await {
            holders.entry(slot).or_default().push(me.clone());
        }
        // Every holder must be heard of: ask for more providers than there are slots.
        let wanted = layout.params.slots() as usize * 2 + 16;
        let providers = self.inner.fetcher.providers_up_to(manifest_cid, wanted).await;
        // Hosts asked to repair a slot of this dataset are asked too: they may not be
        // announced yet, and what they say tells whether their repair is still under way.
        let mut asked = providers.clone();
        let in_flight: Vec<PeerId> = {
            let state = self.inner.state.lock().expect("durability state");
            state
                .repairing
                .iter()
                .filter(|((cid, _), _)| *cid == manifest_cid)
                .map(|(_, (h, _))| h.clone())
                .collect()
        };
        for host in in_flight {
            if !asked.contains(&host) {
                asked.push(host);
            }
        }
        // Slots each peer said it holds or is taking.
        let mut reported: BTreeMap<PeerId, BTreeSet<u32>> = BTreeMap::new();
        for peer in asked {
            if peer == me {
                continue;
            }
            let make = |request| SlotMessage::Holdings { request, manifest: manifest_cid };
            if let Some(SlotMessage::HoldingsAre { slots, pending, whole, .. }) =
                self.ask(&peer, make, self.inner.config.request_timeout).await
            {
                let said = reported.entry(peer.clone()).or_default();
                for slot in slots.into_iter().filter(|&s| s < layout.params.slots()) {
                    holders.entry(slot).or_default().push(peer.clone());
                    any_slot.insert(peer.clone());
                    said.insert(slot);
                }
                for slot in pending {
                    being_taken.insert(slot);
                    any_slot.insert(peer.clone());
                    said.insert(slot);
                }
                if whole {
                    any_slot.insert(peer.clone());
                }
            }
        }
        // One checker acts for all: the smallest peer ID among those holding something of the
        // dataset (a slot, or the whole of it). The others only keep the leader known.
        let mut checkers: BTreeSet<PeerId> = any_slot.clone();
        checkers.insert(me.clone());
        if checkers.first() != Some(&me) {
            // Not the leader (any more): nothing of this dataset is counted or repaired here.
            let mut state = self.inner.state.lock().expect("durability state");
            state.missing_since.retain(|(cid, _), _| *cid != manifest_cid);
            state.repairing.retain(|(cid, _), _| *cid != manifest_cid);
            state.short.remove(&manifest_cid);
            self.inner
                .metrics
                .dataset_live_slots_missing
                .set(state.short.values().map(|&n| i64::from(n)).sum());
            return;
        }
        let mut live = 0u32;
        let mut missing = Vec::new();
        for slot in 0..layout.params.slots() {
            let mut proven = false;
            for host in holders.get(&slot).into_iter().flatten() {
                if *host == me || self.challenge(host, manifest_cid, manifest, slot).await {
                    proven = true;
                    break;
                }
            }
            if proven {
                live += 1;
            } else if !being_taken.contains(&slot) {
                missing.push(slot);
            }
        }
        self.inner
            .metrics
            .dataset_live_slots
            .get_or_create(&crate::metrics::DatasetLabels { dataset: cid_to_string(&manifest_cid) })
            .set(i64::from(live));
        {
            let mut state = self.inner.state.lock().expect("durability state");
            state.short.insert(manifest_cid, layout.params.slots() - live);
            self.inner
                .metrics
                .dataset_live_slots_missing
                .set(state.short.values().map(|&n| i64::from(n)).sum());
        }

        let now = Instant::now();
        let due: Vec<u32> = {
            let mut state = self.inner.state.lock().expect("durability state");
            for slot in 0..layout.params.slots() {
                if !missing.contains(&slot) {
                    state.missing_since.remove(&(manifest_cid, slot));
                    state.repairing.remove(&(manifest_cid, slot));
                    state.unplaced.remove(&(manifest_cid, slot));
                }
            }
            // A repair stays in flight only while its host says it is taking (or holds) the
            // slot (or the question may not have reached it yet), and never past the hold
            // timeout: one that stalled, or whose host left or restarted, frees the slot for
            // another attempt at once.
            let config = &self.inner.config;
            state.repairing.retain(|(cid, slot), (host, asked)| {
                let age = now.duration_since(*asked);
                *cid != manifest_cid
                    || age < config.request_timeout
                    || (age < config.hold_timeout
                        && reported.get(host).is_some_and(|said| said.contains(slot)))
            });
            missing
                .iter()
                .copied()
                .filter(|&slot| {
                    let since = *state.missing_since.entry((manifest_cid, slot)).or_insert(now);
                    now.duration_since(since) >= self.inner.config.repair_after
                        && !state.repairing.contains_key(&(manifest_cid, slot))
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        // Candidates hold nothing of this dataset and are not being asked already: the peers
        // the DHT finds closest to the slot's key first (where a slot of this dataset belongs),
        // then any connected peer.
        let mut excluded: BTreeSet<PeerId> = any_slot.clone();
        excluded.extend(providers.iter().cloned());
        excluded.insert(me.clone());
        {
            let state = self.inner.state.lock().expect("durability state");
            excluded.extend(
                state
                    .repairing
                    .iter()
                    .filter(|((cid, _), _)| *cid == manifest_cid)
                    .map(|(_, (peer, _))| peer.clone()),
            );
        }
        let mut connected: Vec<PeerId> =
            self.inner.network.connected_peers().into_iter().filter(|p| !excluded.contains(p)).collect();
        for slot in due {
            let mut key = manifest_cid.to_bytes();
            key.extend_from_slice(&slot.to_be_bytes());
            let closest =
                self.inner.discovery.closest_peers(&key, CANDIDATES_ASKED).await.unwrap_or_default();
            let mut reachable = None;
            for record in closest.into_iter().filter(|record| !excluded.contains(&record.peer)) {
                if self.inner.network.dial(&record.peer, &record.addrs).await.is_ok() {
                    reachable = Some(record.peer);
                    break;
                }
            }
            let host = match reachable {
                Some(host) => host,
                None if !connected.is_empty() => {
                    let pick = self
                        .inner
                        .state
                        .lock()
                        .expect("durability state")
                        .rng
                        .rng()
                        .random_range(0..connected.len());
                    connected.swap_remove(pick)
                }
                None => {
                    tracing::warn!(manifest = %cid_to_string(&manifest_cid), slot, "no peer left to hold a missing slot");
                    break;
                }
            };
            excluded.insert(host.clone());
            connected.retain(|p| *p != host);
            self.inner
                .state
                .lock()
                .expect("durability state")
                .repairing
                .insert((manifest_cid, slot), (host.clone(), now));
            let sources: Vec<PeerId> =
                any_slot.iter().filter(|p| **p != host).take(wire::SOURCES_MAX).cloned().collect();
            self.inner.metrics.repairs_started.inc();
            tracing::info!(manifest = %cid_to_string(&manifest_cid), slot, host = %host, "asking a peer to hold a missing slot");
            let service = self.clone();
            tokio::spawn(async move {
                let make = |request| SlotMessage::Hold { request, manifest: manifest_cid, slot, sources };
                let answer = service.ask(&host, make, service.inner.config.hold_timeout).await;
                let metrics = &service.inner.metrics;
                match answer {
                    Some(SlotMessage::Held { error, .. }) if error.is_empty() => {
                        metrics.repairs_completed.inc();
                        let mut state = service.inner.state.lock().expect("durability state");
                        state.missing_since.remove(&(manifest_cid, slot));
                        state.unplaced.remove(&(manifest_cid, slot));
                        service.forget_repair(&mut state, manifest_cid, slot, &host);
                    }
                    other => {
                        metrics.repairs_failed.inc();
                        tracing::warn!(slot, host = %host, answer = ?other, "a peer did not take a slot");
                        let mut state = service.inner.state.lock().expect("durability state");
                        service.forget_repair(&mut state, manifest_cid, slot, &host);
                    }
                }
            });
        }
    }
}

impl Durability {
    /// Drops the record of a repair of `slot` handed to `host`, unless a later attempt (to
    /// another host) has replaced it.
    fn forget_repair(&self, state: &mut State, manifest_cid: Cid, slot: u32, host: &PeerId) {
        if state.repairing.get(&(manifest_cid, slot)).is_some_and(|(h, _)| h == host) {
            state.repairing.remove(&(manifest_cid, slot));
        }
    }
}

/// The slot root slot `slot` of a verifiable manifest names.
fn slot_root(manifest: &Manifest, slot: u32) -> Option<F> {
    slot_roots(manifest)?.get(slot as usize).copied()
}

/// The slot tree over a slot's stored blocks (empty blocks are zero padding).
fn build_slot_tree(blocks: &[Bytes], block_size: usize) -> SlotTree {
    SlotTree::from_stored_blocks(blocks, block_size, poseidon2::CELL_SIZE_BYTES)
}
