//! Fetching datasets from peers: find providers, fetch the manifest, stream the blocks in
//! order while storing them, and list the dataset once every block is held.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use super::{Dataset, Datasets};
use crate::content::{Block, Cid, Manifest, block_cid as block_cid_of, cid_to_string, tree_cid};
use crate::discovery::Discovery;
use crate::erasure::Coder;
use crate::exchange::wire::BlockAddress;
use crate::exchange::{Exchange, Fetched};
use crate::merkle::{Digest, MerkleTree};
use crate::net::{Network, PeerId};
use crate::store::{LeafEntry, StoreError};

/// Blocks wanted ahead of the next one to stream (bounds memory while the consumer is slow).
pub const FETCH_WINDOW_BLOCKS: u64 = 256;
/// Blocks written to the store per transaction while fetching.
const FETCH_WRITE_BATCH_BLOCKS: usize = 64;
/// Providers asked for at most.
const PROVIDERS_MAX: usize = 16;
/// Provider lookups before a missing block or manifest fails the fetch.
const LOOKUPS_MAX: u32 = 3;
/// Wait before the second lookup (doubled before the third).
const LOOKUP_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// Why a dataset could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("no peer provides {0}")]
    NoProviders(String),
    #[error("block {index} of {cid} is not available from any provider")]
    Unavailable { cid: String, index: u64 },
    #[error("the manifest received for {cid} is invalid: {error}")]
    BadManifest { cid: String, error: String },
    /// The reader of the stream went away; the partial download was rolled back.
    #[error("the download of {0} was abandoned by its reader")]
    Abandoned(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Dataset retrieval over the network.
#[derive(Clone)]
pub struct Fetcher {
    datasets: Datasets,
    exchange: Exchange,
    network: Arc<dyn Network>,
    discovery: Arc<dyn Discovery>,
    /// Woken when an announcement fails, so the node's advertiser tries again soon.
    advertise_failed: Arc<tokio::sync::Notify>,
}

impl Fetcher {
    pub fn new(
        datasets: Datasets,
        exchange: Exchange,
        network: Arc<dyn Network>,
        discovery: Arc<dyn Discovery>,
    ) -> Fetcher {
        Fetcher { datasets, exchange, network, discovery, advertise_failed: Arc::default() }
    }

    /// The dataset service fetched datasets are stored into.
    pub fn datasets(&self) -> &Datasets {
        &self.datasets
    }

    /// Waits until an announcement fails (see [`Fetcher::advertise`]).
    pub async fn advertise_failed(&self) {
        self.advertise_failed.notified().await;
    }

    /// Announces every stored dataset (manifest and tree CIDs) to the DHT; returns how many
    /// datasets there are and how many of them failed to be announced.
    pub async fn advertise_all(&self) -> Result<(usize, usize), StoreError> {
        let mut datasets = self.datasets.list().await.map_err(|e| StoreError::Backend(e.to_string()))?;
        // Held slots too: their holders must stay findable, or checkers take them for lost.
        for held in self.datasets.store().list_slots().await? {
            if let Ok(manifest) = Manifest::decode(&held.manifest)
                && !datasets.iter().any(|d| d.cid == held.manifest_cid)
            {
                datasets.push(Dataset { cid: held.manifest_cid, manifest });
            }
        }
        let mut failed = 0;
        for dataset in &datasets {
            if !self.advertise(dataset).await {
                failed += 1;
            }
        }
        Ok((datasets.len(), failed))
    }

    /// Announces one dataset; `false` if the DHT refused (no peers yet, say), in which case
    /// the node's advertiser is woken to try again.
    pub async fn advertise(&self, dataset: &Dataset) -> bool {
        let mut announced = true;
        for cid in [dataset.cid, dataset.manifest.tree_cid] {
            if let Err(e) = self.discovery.provide(cid).await {
                tracing::debug!(cid = %cid_to_string(&cid), error = %e, "advertising failed");
                announced = false;
            }
        }
        if !announced {
            self.advertise_failed.notify_one();
        }
        announced
    }

    /// Connected providers of `cid`, dialling the ones found through the DHT.
    pub async fn providers(&self, cid: Cid) -> Vec<PeerId> {
        self.providers_up_to(cid, PROVIDERS_MAX).await
    }

    /// Up to `limit` connected providers of `cid`.
    pub async fn providers_up_to(&self, cid: Cid, limit: usize) -> Vec<PeerId> {
        let records = self.discovery.find_providers(cid, limit).await.unwrap_or_default();
        let mut connected = Vec::new();
        for record in records {
            match self.network.dial(&record.peer, &record.addrs).await {
                Ok(()) => connected.push(record.peer),
                Err(e) => tracing::debug!(peer = %record.peer, error = %e, "provider unreachable"),
            }
        }
        connected
    }

    /// The manifest of a dataset stored here, whole or as a held slot.
    pub async fn local_manifest(&self, cid: Cid) -> Option<(Manifest, Bytes)> {
        let encoded = local_manifest(self.datasets.store(), cid).await?;
        Some((decode(cid, &encoded).ok()?, encoded))
    }

    /// The dataset's manifest and its encoded bytes: local if stored here, else from a provider.
    pub async fn manifest(&self, cid: Cid) -> Result<(Manifest, Bytes), FetchError> {
        if let Some(encoded) = local_manifest(self.datasets.store(), cid).await {
            let manifest = decode(cid, &encoded)?;
            return Ok((manifest, encoded));
        }
        // Provider records spread through the DHT for a while after a dataset is stored, and a
        // provider may fail us: look up again, a little later, before giving up.
        for attempt in 1..=LOOKUPS_MAX {
            let providers = self.providers(cid).await;
            if let Some(found) = self.manifest_from(cid, providers).await {
                return found;
            }
            if attempt < LOOKUPS_MAX {
                tokio::time::sleep(LOOKUP_RETRY_DELAY * attempt).await;
            }
        }
        Err(FetchError::NoProviders(cid_to_string(&cid)))
    }

    /// Block `index` of a protected dataset rebuilt from the other blocks of its column, fetched
    /// from `providers` (each verified against the tree root by the exchange).
    async fn rebuild(
        &self,
        manifest: &Manifest,
        index: u64,
        providers: &[PeerId],
    ) -> Result<Block, FetchError> {
        let unavailable = || FetchError::Unavailable { cid: cid_to_string(&manifest.tree_cid), index };
        let layout = super::erasure_layout(manifest).map_err(|_| unavailable())?;
        if layout.is_padding(index) {
            return Ok(Block::new(Bytes::new())); // padding is stored as the empty block
        }
        let found = self.fetch_leaves(manifest.tree_cid, &layout.rebuild_sources(index), providers).await;
        let mut coder =
            Coder::new(layout.params, manifest.block_size_bytes as usize).map_err(|_| unavailable())?;
        let data = coder
            .rebuild(&layout, index, |i| found.get(&i).map(|b| b.to_vec()))
            .map_err(|_| unavailable())?;
        Ok(Block::new(Bytes::from(data)))
    }

    /// Leaves `indices` of `tree`: those held here (a host repairing a slot holds another slot
    /// of the same dataset), the others from `providers` as far as they serve them (each
    /// verified against the tree root by the exchange).
    pub async fn fetch_leaves(
        &self,
        tree: Cid,
        indices: &[u64],
        providers: &[PeerId],
    ) -> BTreeMap<u64, Bytes> {
        let mut found = BTreeMap::new();
        let store = self.datasets.store();
        let mut wanted = Vec::new();
        for &index in indices {
            // Read back verified against the block's CID; a damaged block counts as missing.
            let local = match store.get_leaf(tree, index).await {
                Ok(Some(leaf)) => store.get_block(leaf.block_cid).await.ok().flatten(),
                _ => None,
            };
            match local {
                Some(data) => {
                    found.insert(index, data);
                }
                None => wanted.push(index),
            }
        }
        if wanted.is_empty() || providers.is_empty() {
            return found;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let addresses = wanted.iter().map(|&index| BlockAddress::Leaf { tree, index }).collect();
        self.exchange.want(addresses, providers.to_vec(), tx).await;
        for _ in &wanted {
            match rx.recv().await {
                Some(Fetched::Block { address: BlockAddress::Leaf { index, .. }, data, .. }) => {
                    found.insert(index, data);
                }
                Some(_) => {}
                None => break,
            }
        }
        found
    }

    /// The manifest `cid` asked of `peers` (who may know it before the DHT does); `None` if none
    /// of them has it.
    pub async fn manifest_from(
        &self,
        cid: Cid,
        peers: Vec<PeerId>,
    ) -> Option<Result<(Manifest, Bytes), FetchError>> {
        if peers.is_empty() {
            return None;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.exchange.want(vec![BlockAddress::Cid(cid)], peers, tx).await;
        match rx.recv().await {
            Some(Fetched::Block { data, .. }) => Some(decode(cid, &data).map(|manifest| (manifest, data))),
            _ => None,
        }
    }

    /// Streams the dataset's bytes in order while fetching and storing its blocks. When the
    /// stream ends without error the dataset is stored and listed here. Dropping the stream
    /// abandons the fetch and rolls back what was stored.
    pub fn stream(
        &self,
        cid: Cid,
        manifest: Manifest,
        encoded: Bytes,
    ) -> impl Stream<Item = Result<Bytes, FetchError>> + Send + 'static {
        let (tx, rx) = mpsc::channel(8);
        let fetcher = self.clone();
        tokio::spawn(async move {
            if let Err(e) = fetcher.fetch(cid, &manifest, encoded, &tx).await {
                tracing::warn!(cid = %cid_to_string(&cid), error = %e, "network download failed");
                let _ = tx.send(Err(e)).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }

    async fn fetch(
        &self,
        cid: Cid,
        manifest: &Manifest,
        encoded: Bytes,
        out: &mpsc::Sender<Result<Bytes, FetchError>>,
    ) -> Result<(), FetchError> {
        let store = self.datasets.store().clone();
        let tree = manifest.tree_cid;
        let blocks_count = manifest.blocks_count();
        let block_size = u64::from(manifest.block_size_bytes);
        let mut providers = Vec::new();
        for attempt in 1..=LOOKUPS_MAX {
            providers = self.providers(tree).await;
            providers.extend(self.providers(cid).await);
            providers.sort();
            providers.dedup();
            if !providers.is_empty() {
                break;
            }
            if attempt < LOOKUPS_MAX {
                tokio::time::sleep(LOOKUP_RETRY_DELAY * attempt).await;
            }
        }
        if providers.is_empty() {
            return Err(FetchError::NoProviders(cid_to_string(&tree)));
        }
        let upload = store.begin_upload().await?;
        let result = async {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let (mut next_want, mut next_emit, mut lookups) = (0u64, 0u64, 0u32);
            let mut arrived: BTreeMap<u64, (Block, Option<LeafEntry>)> = BTreeMap::new();
            let mut batch: Vec<(Block, Option<LeafEntry>)> = Vec::new();
            // Digests of every block in order, and the rebuilt blocks whose leaves (proofs) can
            // only be written once the whole tree is known.
            let mut digests: Vec<Digest> = Vec::with_capacity(blocks_count.min(1 << 20) as usize);
            let mut rebuilt: Vec<u64> = Vec::new();
            while next_emit < blocks_count {
                let until = (next_emit + FETCH_WINDOW_BLOCKS).min(blocks_count);
                if next_want < until {
                    let addresses =
                        (next_want..until).map(|index| BlockAddress::Leaf { tree, index }).collect();
                    self.exchange.want(addresses, providers.clone(), tx.clone()).await;
                    next_want = until;
                }
                match rx.recv().await.expect("the driver outlives fetches") {
                    Fetched::Block {
                        address: BlockAddress::Leaf { index, .. },
                        cid: block_cid,
                        data,
                        proof: Some(proof),
                    } => {
                        let block = Block::verified(block_cid, data)
                            .ok_or(FetchError::Unavailable { cid: cid_to_string(&cid), index })?;
                        arrived.insert(index, (block, Some(LeafEntry { block_cid, proof })));
                    }
                    Fetched::Unavailable { address: BlockAddress::Leaf { index, .. } }
                        if lookups < LOOKUPS_MAX =>
                    {
                        lookups += 1;
                        let more = self.providers(tree).await;
                        providers.extend(more);
                        providers.sort();
                        providers.dedup();
                        self.exchange
                            .want(vec![BlockAddress::Leaf { tree, index }], providers.clone(), tx.clone())
                            .await;
                    }
                    Fetched::Unavailable { address: BlockAddress::Leaf { index, .. } }
                        if manifest.protected() =>
                    {
                        let block = self
                            .rebuild(manifest, index, &providers)
                            .await
                            .map_err(|_| FetchError::Unavailable { cid: cid_to_string(&cid), index })?;
                        self.datasets.metrics().blocks_recovered.inc();
                        rebuilt.push(index);
                        arrived.insert(index, (block, None));
                    }
                    Fetched::Unavailable { address: BlockAddress::Leaf { index, .. } } => {
                        return Err(FetchError::Unavailable { cid: cid_to_string(&cid), index });
                    }
                    other => unreachable!("leaf wants yield leaf outcomes: {other:?}"),
                }
                while let Some(entry) = arrived.remove(&next_emit) {
                    // A protected dataset's tree goes on past its content (padding, parity):
                    // all of it is stored, only the content is streamed.
                    let end = ((next_emit + 1) * block_size).min(manifest.content_size_bytes());
                    let piece =
                        entry.0.data().slice(0..(end.saturating_sub(next_emit * block_size)) as usize);
                    self.datasets.metrics().download_bytes.inc_by(piece.len() as u64);
                    digests.push(*entry.0.digest());
                    batch.push(entry);
                    next_emit += 1;
                    if !piece.is_empty() && out.send(Ok(piece)).await.is_err() {
                        self.exchange
                            .cancel(
                                (next_emit..next_want)
                                    .map(|index| BlockAddress::Leaf { tree, index })
                                    .collect(),
                            )
                            .await;
                        return Err(FetchError::Abandoned(cid_to_string(&cid)));
                    }
                    if batch.len() == FETCH_WRITE_BATCH_BLOCKS {
                        flush(&store, upload, tree, next_emit, &mut batch).await?;
                    }
                }
            }
            flush(&store, upload, tree, next_emit, &mut batch).await?;
            if !rebuilt.is_empty() {
                // Every block is known now: the tree gives the rebuilt blocks their proofs, and
                // checks them all once more against the root.
                let whole = MerkleTree::build(digests).expect("a dataset has blocks");
                if tree_cid(&whole.root()) != tree {
                    return Err(FetchError::Unavailable { cid: cid_to_string(&cid), index: rebuilt[0] });
                }
                for index in rebuilt {
                    let leaf =
                        LeafEntry { block_cid: block_cid_of(&whole.leaf(index)), proof: whole.proof(index) };
                    store.put_tree_leaves(upload, tree, index, vec![leaf]).await?;
                }
            }
            store.commit_upload(upload, cid, encoded).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(cid = %cid_to_string(&cid), blocks = blocks_count, "stored dataset fetched from the network");
                self.advertise(&Dataset { cid, manifest: manifest.clone() }).await;
                Ok(())
            }
            Err(e) => {
                let _ = store.abort_upload(upload).await;
                Err(e)
            }
        }
    }
}

/// Writes the in-order run of blocks that ends just before `next_index`, and the leaves known
/// so far (a rebuilt block's leaf comes once the whole tree is known).
async fn flush(
    store: &crate::store::SharedStore,
    upload: crate::store::UploadId,
    tree: Cid,
    next_index: u64,
    batch: &mut Vec<(Block, Option<LeafEntry>)>,
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let first = next_index - batch.len() as u64;
    let (blocks, leaves): (Vec<Block>, Vec<Option<LeafEntry>>) = std::mem::take(batch).into_iter().unzip();
    store.put_upload_blocks(upload, first, blocks).await?;
    let mut run_start = first;
    let mut run = Vec::new();
    for (offset, leaf) in leaves.into_iter().enumerate() {
        match leaf {
            Some(leaf) => run.push(leaf),
            None => {
                if !run.is_empty() {
                    store.put_tree_leaves(upload, tree, run_start, std::mem::take(&mut run)).await?;
                }
                run_start = first + offset as u64 + 1;
            }
        }
    }
    if !run.is_empty() {
        store.put_tree_leaves(upload, tree, run_start, run).await?;
    }
    Ok(())
}

/// The encoded manifest `cid` if this node stores the dataset or holds a slot of it.
pub async fn local_manifest(store: &crate::store::SharedStore, cid: Cid) -> Option<Bytes> {
    if let Some(encoded) = store.get_manifest(cid).await.ok().flatten() {
        return Some(encoded);
    }
    let held = store.list_slots().await.ok()?;
    held.into_iter().find(|slot| slot.manifest_cid == cid).map(|slot| slot.manifest)
}

fn decode(cid: Cid, encoded: &[u8]) -> Result<Manifest, FetchError> {
    Manifest::decode(encoded)
        .map_err(|e| FetchError::BadManifest { cid: cid_to_string(&cid), error: e.to_string() })
}
