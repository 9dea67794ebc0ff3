//! Datasets: storing a byte stream as blocks, a tree and a manifest, and reading it back.
//!
//! Upload pipeline (one upload): the body is cut into blocks by the [`Chunker`]; each batch of
//! blocks is hashed on the compute port, then written to the store in one transaction while the
//! next batch is read and hashed. When the stream ends the dataset tree is built, its leaves and
//! proofs are stored, and the manifest is committed last. Any failure (a broken stream, the
//! quota, a dropped request) rolls the upload back; a crash is rolled back at the next open.

mod network;
mod protect;
mod upload;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use crate::content::{Cid, Codec, Manifest, ManifestError, manifest_cid};
use crate::erasure::{Coder, CodingError, Layout, Params};
use crate::metrics::Metrics;
use crate::runtime::Compute;
use crate::store::{SharedStore, StoreError};

pub use self::network::{FETCH_WINDOW_BLOCKS, FetchError, Fetcher, local_manifest};
pub use self::protect::{PROTECT_BATCH_BYTES, ProtectError};
use self::upload::PendingUpload;
pub use self::upload::{UploadError, UploadMeta};

/// Bytes hashed and written per store transaction during an upload.
pub const UPLOAD_BATCH_BYTES: usize = 16 << 20;
/// Bytes read from the store per step of a download.
pub const DOWNLOAD_BATCH_BYTES: usize = 2 << 20;
/// Download steps read ahead of the consumer.
pub const DOWNLOAD_READ_AHEAD: usize = 2;

/// A stored dataset: its manifest and the CID naming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub cid: Cid,
    pub manifest: Manifest,
}

/// Errors of looking a dataset up or reading it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Neither a dataset nor a block with this CID is stored here.
    #[error("{0} is not stored on this node")]
    NotFound(String),
    /// A stored manifest does not decode: the store is damaged.
    #[error("stored manifest {cid} is unreadable: {error}")]
    BadManifest { cid: String, error: ManifestError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's dataset service over a block store.
#[derive(Clone)]
pub struct Datasets {
    store: SharedStore,
    compute: Compute,
    block_size_bytes: usize,
    upload_batch_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Datasets {
    pub fn new(
        store: SharedStore,
        compute: Compute,
        block_size_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Datasets {
        assert!(block_size_bytes > 0 && block_size_bytes <= crate::content::BLOCK_SIZE_MAX_BYTES);
        Datasets { store, compute, block_size_bytes, upload_batch_bytes: UPLOAD_BATCH_BYTES, metrics }
    }

    /// Sets the bytes per upload transaction (smaller batches: less memory, more commits).
    pub fn with_upload_batch_bytes(mut self, upload_batch_bytes: usize) -> Datasets {
        self.upload_batch_bytes = upload_batch_bytes.max(1);
        self
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn compute(&self) -> Compute {
        self.compute
    }

    pub fn block_size_bytes(&self) -> usize {
        self.block_size_bytes
    }

    /// The dataset named by `cid`, if stored here.
    pub async fn get(&self, cid: Cid) -> Result<Option<Dataset>, ReadError> {
        if Codec::of(&cid) != Some(Codec::Manifest) {
            return Ok(None);
        }
        let Some(encoded) = self.store.get_manifest(cid).await? else {
            return Ok(None);
        };
        decode_dataset(cid, &encoded).map(Some)
    }

    /// Every dataset stored here, in CID byte order.
    pub async fn list(&self) -> Result<Vec<Dataset>, ReadError> {
        let manifests = self.store.list_manifests().await?;
        manifests.iter().map(|(cid, encoded)| decode_dataset(*cid, encoded)).collect()
    }

    /// Deletes a dataset; `false` if it is not stored here.
    pub async fn delete(&self, cid: Cid) -> Result<bool, ReadError> {
        Ok(self.store.delete_dataset(cid).await?)
    }

    /// Whether a dataset or a block with this CID is stored here.
    pub async fn exists(&self, cid: Cid) -> Result<bool, ReadError> {
        match Codec::of(&cid) {
            Some(Codec::Manifest) => Ok(self.store.get_manifest(cid).await?.is_some()),
            _ => Ok(self.store.has_block(cid).await?),
        }
    }

    /// Streams bytes `range` of a dataset (clamped to its size), verified block by block.
    ///
    /// Blocks are read ahead on a separate task, [`DOWNLOAD_READ_AHEAD`] steps deep; dropping
    /// the stream stops the reader.
    pub fn read(
        &self,
        manifest: &Manifest,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        let size = manifest.content_size_bytes();
        let range = range.start.min(size)..range.end.min(size);
        let block = u64::from(manifest.block_size_bytes);
        let per_step = (DOWNLOAD_BATCH_BYTES as u64 / block).max(1);
        let (tx, rx) = tokio::sync::mpsc::channel(DOWNLOAD_READ_AHEAD);
        let store = self.store.clone();
        let manifest = manifest.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut index = range.start / block;
            let end_index = range.end.div_ceil(block);
            while index < end_index {
                let count = per_step.min(end_index - index);
                let step = match read_blocks(&store, &manifest, index, count, &metrics).await {
                    Ok(blocks) => blocks,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for (offset, data) in step.into_iter().enumerate() {
                    let at = (index + offset as u64) * block;
                    let from = range.start.saturating_sub(at).min(block) as usize;
                    let to = (range.end - at).min(block) as usize;
                    let piece = data.slice(from..to);
                    metrics.download_bytes.inc_by(piece.len() as u64);
                    if tx.send(Ok(piece)).await.is_err() {
                        return; // the consumer went away
                    }
                }
                index += count;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}

/// Blocks `index..index + count` of a dataset's tree, verified. A block of a protected dataset
/// that is missing here or corrupt is rebuilt from the other blocks of its column.
async fn read_blocks(
    store: &SharedStore,
    manifest: &Manifest,
    index: u64,
    count: u64,
    metrics: &Metrics,
) -> Result<Vec<Bytes>, StoreError> {
    let tree = manifest.tree_cid;
    match store.get_tree_blocks(tree, index, count).await {
        Err(e) if manifest.protected() && recoverable(&e) => {
            let mut blocks = Vec::with_capacity(count as usize);
            for i in index..index + count {
                blocks.push(match store.get_tree_blocks(tree, i, 1).await {
                    Ok(mut one) => one.remove(0),
                    Err(e) if recoverable(&e) => {
                        let block = recover_block(store, manifest, i).await.map_err(|_| e)?;
                        metrics.blocks_recovered.inc();
                        block
                    }
                    Err(e) => return Err(e),
                });
            }
            Ok(blocks)
        }
        result => result,
    }
}

/// Whether erasure decoding may stand in for a block the store failed to give.
fn recoverable(error: &StoreError) -> bool {
    matches!(error, StoreError::Corrupt(_) | StoreError::MissingLeaf { .. })
}

/// Rebuilds block `index` of a protected dataset from the blocks of its column held here.
pub(crate) async fn recover_block(
    store: &SharedStore,
    manifest: &Manifest,
    index: u64,
) -> Result<Bytes, RecoverError> {
    let layout = erasure_layout(manifest)?;
    let mut found = std::collections::BTreeMap::new();
    for source in layout.rebuild_sources(index) {
        if let Ok(mut one) = store.get_tree_blocks(manifest.tree_cid, source, 1).await {
            found.insert(source, one.remove(0));
        }
    }
    let mut coder = Coder::new(layout.params, manifest.block_size_bytes as usize)?;
    Ok(Bytes::from(coder.rebuild(&layout, index, |i| found.get(&i).map(|b| b.to_vec()))?))
}

/// Why a block of a protected dataset could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("the manifest's erasure parameters are invalid: {0}")]
    BadParams(String),
    #[error(transparent)]
    Coding(#[from] CodingError),
}

/// The slot roots a verifiable manifest names, in slot order; `None` when it names none or
/// one is not a Poseidon2 digest.
pub fn slot_roots(manifest: &Manifest) -> Option<Vec<crate::merkle::poseidon2::F>> {
    let verification = manifest.erasure.as_ref()?.verification.as_ref()?;
    verification
        .slot_roots
        .iter()
        .map(|cid| crate::merkle::poseidon2::from_bytes(&crate::content::poseidon2_digest_of(cid)?))
        .collect()
}

/// The erasure layout a protected manifest describes, checked against its tree size.
pub fn erasure_layout(manifest: &Manifest) -> Result<Layout, RecoverError> {
    let erasure = manifest.erasure.as_ref().ok_or_else(|| RecoverError::BadParams("not protected".into()))?;
    let params =
        Params::new(erasure.ec_k, erasure.ec_m).map_err(|e| RecoverError::BadParams(e.to_string()))?;
    let blocks = crate::content::blocks_count(
        erasure.original_dataset_size_bytes,
        u64::from(manifest.block_size_bytes),
    );
    let block_size = manifest.block_size_bytes as usize;
    if !block_size.is_power_of_two() || block_size < crate::merkle::poseidon2::CELL_SIZE_BYTES {
        return Err(RecoverError::BadParams(format!(
            "block size {block_size} is not a power of two of at least 2 KiB"
        )));
    }
    if let Some(verification) = &erasure.verification
        && verification.slot_roots.len() != params.slots() as usize
    {
        return Err(RecoverError::BadParams(format!(
            "{} slot roots for {} slots",
            verification.slot_roots.len(),
            params.slots()
        )));
    }
    let layout = Layout::new(params, blocks);
    if layout.total != manifest.blocks_count() {
        return Err(RecoverError::BadParams(format!(
            "{} blocks in the tree where K={}, M={} over {blocks} blocks make {}",
            manifest.blocks_count(),
            erasure.ec_k,
            erasure.ec_m,
            layout.total
        )));
    }
    Ok(layout)
}

fn decode_dataset(cid: Cid, encoded: &[u8]) -> Result<Dataset, ReadError> {
    debug_assert_eq!(manifest_cid(encoded), cid, "manifest stored under another CID");
    let manifest = Manifest::decode(encoded)
        .map_err(|error| ReadError::BadManifest { cid: crate::content::cid_to_string(&cid), error })?;
    Ok(Dataset { cid, manifest })
}

#[cfg(test)]
mod tests;
