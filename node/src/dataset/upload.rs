//! The upload pipeline.

use std::collections::VecDeque;
use std::fmt::Display;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::task::JoinHandle;

use super::{Dataset, Datasets};
use crate::content::{Block, Chunker, Cid, Manifest, block_cid, manifest_cid, tree_cid};
use crate::merkle::{Digest, MerkleTree};
use crate::store::{LeafEntry, SharedStore, StoreError, UploadId};

/// Leaves (block CID + proof) written per store transaction after the tree is built.
const LEAVES_BATCH_COUNT: usize = 8192;

/// What the uploader says about the data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadMeta {
    pub filename: Option<String>,
    pub mimetype: Option<String>,
}

/// Why an upload did not become a dataset. In every case the upload was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The body broke off (client disconnect, truncated body).
    #[error("upload stream failed after {received_bytes} bytes: {message}")]
    Stream { received_bytes: u64, message: String },
    /// The store refused (quota) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rolls an upload back if it is dropped before it commits (a cancelled request).
pub(super) struct PendingUpload {
    pub(super) store: SharedStore,
    pub(super) id: UploadId,
    pub(super) armed: bool,
}

impl PendingUpload {
    pub(super) async fn abort(mut self) {
        self.armed = false;
        if let Err(e) = self.store.abort_upload(self.id).await {
            tracing::error!(upload = self.id, error = %e, "rolling back an upload failed; it is rolled back at the next start");
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if self.armed {
            let (store, id) = (self.store.clone(), self.id);
            tokio::spawn(async move {
                if let Err(e) = store.abort_upload(id).await {
                    tracing::error!(upload = id, error = %e, "rolling back a cancelled upload failed");
                }
            });
        }
    }
}

/// Batches hashed or written at once per upload, besides the one being read. With two, one
/// batch can be hashed while another is written (and two hashed at once on two cores), so the
/// HTTP body, SHA-256 and the store's writes overlap instead of taking turns.
const IN_FLIGHT_BATCHES: usize = 2;

/// The state of one upload between batches.
struct Pipeline {
    store: SharedStore,
    upload: UploadId,
    /// Digests of the blocks written so far, in order.
    leaves: Vec<Digest>,
    /// Index of the next block submitted.
    next_index: u64,
    /// Batches being hashed and written, oldest first; each yields its blocks' digests.
    in_flight: VecDeque<JoinHandle<Result<Vec<Digest>, StoreError>>>,
}

impl Pipeline {
    /// Starts hashing and writing `batch`, once fewer than [`IN_FLIGHT_BATCHES`] are under way.
    async fn submit(&mut self, datasets: &Datasets, batch: Vec<Bytes>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.in_flight.len() >= IN_FLIGHT_BATCHES {
            self.finish_oldest().await?;
        }
        let bytes = batch.iter().map(|b| b.len() as u64).sum();
        let first = self.next_index;
        self.next_index += batch.len() as u64;
        let (store, upload, compute) = (self.store.clone(), self.upload, datasets.compute);
        self.in_flight.push_back(tokio::spawn(async move {
            let blocks: Vec<Block> =
                compute.run_hashing(bytes, move || batch.into_iter().map(Block::new).collect()).await;
            let digests = blocks.iter().map(|b| *b.digest()).collect();
            store.put_upload_blocks(upload, first, blocks).await?;
            Ok(digests)
        }));
        Ok(())
    }

    async fn finish_oldest(&mut self) -> Result<(), StoreError> {
        let Some(handle) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let digests = handle.await.expect("block writer panicked")?;
        self.leaves.extend(digests);
        Ok(())
    }

    /// Waits for every batch under way (all of them, even after a failure, so that a rollback
    /// comes after the last write); the first failure is returned.
    async fn wait(&mut self) -> Result<(), StoreError> {
        let mut result = Ok(());
        while !self.in_flight.is_empty() {
            if let Err(e) = self.finish_oldest().await
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }
}

impl Datasets {
    /// Stores `body` as a dataset and returns it. Never holds more than about two batches of
    /// the body in memory.
    pub async fn upload<S, E>(&self, body: S, meta: UploadMeta) -> Result<Dataset, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let upload = self.store.begin_upload().await?;
        let guard = PendingUpload { store: self.store.clone(), id: upload, armed: true };
        let mut pipeline = Pipeline {
            store: self.store.clone(),
            upload,
            leaves: Vec::new(),
            next_index: 0,
            in_flight: VecDeque::new(),
        };
        match self.run_upload(&mut pipeline, body, meta).await {
            Ok(dataset) => {
                let mut guard = guard;
                guard.armed = false;
                self.metrics.uploads_completed.inc();
                Ok(dataset)
            }
            Err(e) => {
                let _ = pipeline.wait().await; // let the last write land before rolling back
                guard.abort().await;
                self.metrics.uploads_failed.inc();
                Err(e)
            }
        }
    }

    async fn run_upload<S, E>(
        &self,
        pipeline: &mut Pipeline,
        mut body: S,
        meta: UploadMeta,
    ) -> Result<Dataset, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let blocks_per_batch = (self.upload_batch_bytes / self.block_size_bytes).max(1);
        let mut chunker = Chunker::new(self.block_size_bytes);
        let mut batch = Vec::with_capacity(blocks_per_batch);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| UploadError::Stream {
                received_bytes: chunker.total_bytes(),
                message: e.to_string(),
            })?;
            self.metrics.upload_bytes.inc_by(piece.len() as u64);
            chunker.push(piece, &mut batch);
            if batch.len() >= blocks_per_batch {
                pipeline.submit(self, std::mem::take(&mut batch)).await?;
            }
        }
        let (last, size_bytes) = chunker.finish();
        batch.extend(last);
        pipeline.submit(self, batch).await?;
        pipeline.wait().await?;
        self.commit(pipeline, size_bytes, meta).await
    }

    /// Builds the tree, stores leaves and proofs, and commits the manifest.
    async fn commit(
        &self,
        pipeline: &mut Pipeline,
        size_bytes: u64,
        meta: UploadMeta,
    ) -> Result<Dataset, UploadError> {
        let leaves = std::mem::take(&mut pipeline.leaves);
        let tree_id = self.store_tree(pipeline.upload, leaves).await?;
        let mut manifest = Manifest::new(tree_id, self.block_size_bytes as u32, size_bytes);
        manifest.filename = meta.filename;
        manifest.mimetype = meta.mimetype;
        let encoded = manifest.encode();
        let cid = manifest_cid(&encoded);
        self.store.commit_upload(pipeline.upload, cid, Bytes::from(encoded)).await?;
        Ok(Dataset { cid, manifest })
    }

    /// Builds the dataset tree over `leaves` and stores its leaves and proofs for `upload`;
    /// returns the tree's CID.
    pub(super) async fn store_tree(&self, upload: UploadId, leaves: Vec<Digest>) -> Result<Cid, StoreError> {
        let tree = self
            .compute
            .run(move || MerkleTree::build(leaves).expect("a dataset has at least one block"))
            .await;
        self.store_tree_leaves(upload, std::sync::Arc::new(tree)).await
    }

    /// Stores the leaves and proofs of a built dataset tree for `upload`; returns its CID.
    pub async fn store_tree_leaves(
        &self,
        upload: UploadId,
        tree: std::sync::Arc<MerkleTree>,
    ) -> Result<Cid, StoreError> {
        let tree_id = tree_cid(&tree.root());
        let blocks_count = tree.leaves_count();
        let mut first = 0;
        while first < blocks_count {
            let end = (first + LEAVES_BATCH_COUNT as u64).min(blocks_count);
            let t = tree.clone();
            let entries = self
                .compute
                .run(move || {
                    (first..end)
                        .map(|i| LeafEntry { block_cid: block_cid(&t.leaf(i)), proof: t.proof(i) })
                        .collect::<Vec<_>>()
                })
                .await;
            self.store.put_tree_leaves(upload, tree_id, first, entries).await?;
            first = end;
        }
        Ok(tree_id)
    }
}
