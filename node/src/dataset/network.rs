//! Fetching datasets from peers: find providers, fetch the manifest, stream the blocks in
//! order while storing them, and list the dataset once every block is held.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use super::{Dataset, Datasets};
use crate::content::{Block, Cid, Manifest, cid_to_string};
use crate::discovery::Discovery;
use crate::exchange::wire::BlockAddress;
use crate::exchange::{Exchange, Fetched};
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

    /// Waits until an announcement fails (see [`Fetcher::advertise`]).
    pub async fn advertise_failed(&self) {
        self.advertise_failed.notified().await;
    }

    /// Announces every stored dataset (manifest and tree CIDs) to the DHT; returns how many
    /// datasets there are and how many of them failed to be announced.
    pub async fn advertise_all(&self) -> Result<(usize, usize), StoreError> {
        let datasets = self.datasets.list().await.map_err(|e| StoreError::Backend(e.to_string()))?;
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
        let records = self.discovery.find_providers(cid, PROVIDERS_MAX).await.unwrap_or_default();
        let mut connected = Vec::new();
        for record in records {
            match self.network.dial(&record.peer, &record.addrs).await {
                Ok(()) => connected.push(record.peer),
                Err(e) => tracing::debug!(peer = %record.peer, error = %e, "provider unreachable"),
            }
        }
        connected
    }

    /// The dataset's manifest and its encoded bytes: local if stored here, else from a provider.
    pub async fn manifest(&self, cid: Cid) -> Result<(Manifest, Bytes), FetchError> {
        if let Some(encoded) = self.datasets.store().get_manifest(cid).await? {
            let manifest = decode(cid, &encoded)?;
            return Ok((manifest, encoded));
        }
        // Provider records spread through the DHT for a while after a dataset is stored, and a
        // provider may fail us: look up again, a little later, before giving up.
        for attempt in 1..=LOOKUPS_MAX {
            let providers = self.providers(cid).await;
            if !providers.is_empty() {
                let (tx, mut rx) = mpsc::unbounded_channel();
                self.exchange.want(vec![BlockAddress::Cid(cid)], providers, tx).await;
                if let Some(Fetched::Block { data, .. }) = rx.recv().await {
                    return Ok((decode(cid, &data)?, data));
                }
            }
            if attempt < LOOKUPS_MAX {
                tokio::time::sleep(LOOKUP_RETRY_DELAY * attempt).await;
            }
        }
        Err(FetchError::NoProviders(cid_to_string(&cid)))
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
            let mut arrived: BTreeMap<u64, (Block, LeafEntry)> = BTreeMap::new();
            let mut batch: Vec<(Block, LeafEntry)> = Vec::new();
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
                        arrived.insert(index, (block, LeafEntry { block_cid, proof }));
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

/// Writes the in-order run of blocks that ends just before `next_index`.
async fn flush(
    store: &crate::store::SharedStore,
    upload: crate::store::UploadId,
    tree: Cid,
    next_index: u64,
    batch: &mut Vec<(Block, LeafEntry)>,
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let first = next_index - batch.len() as u64;
    let (blocks, leaves): (Vec<Block>, Vec<LeafEntry>) = std::mem::take(batch).into_iter().unzip();
    store.put_upload_blocks(upload, first, blocks).await?;
    store.put_tree_leaves(upload, tree, first, leaves).await
}

fn decode(cid: Cid, encoded: &[u8]) -> Result<Manifest, FetchError> {
    Manifest::decode(encoded)
        .map_err(|e| FetchError::BadManifest { cid: cid_to_string(&cid), error: e.to_string() })
}
