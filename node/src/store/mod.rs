//! The block store port and its adapters.
//!
//! [`BlockStore`] is what node logic sees: blocks, dataset-tree leaves with their proofs,
//! manifests, uploads in progress, and the quota. Its semantics are written once, in
//! [`engine`], over a small transactional key-value interface ([`kv`]); each adapter only
//! supplies that interface:
//!
//! - [`LmdbStore`] (feature `production`): LMDB through heed; every write is one transaction,
//!   durable (fsync) when it commits.
//! - [`MemStore`]: in memory, with the same transactions (undo on error); for tests and the
//!   simulator's disk model to build on.
//!
//! **Crash rule.** A dataset is listed only once its manifest is committed, and the manifest is
//! committed last. Blocks written for an upload that never committed belong to a *pending
//! upload* record; [`BlockStore::recover`] (run when a store opens) releases them, so a crash
//! mid-upload leaves neither a half dataset nor leaked space.

pub mod check;
mod engine;
mod kv;
#[cfg(feature = "production")]
mod lmdb;
mod mem;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::content::{Block, Cid};
use crate::merkle::MerkleProof;
use crate::runtime::Compute;

pub use self::engine::KvStore;
pub use self::kv::{KvEngine, KvRead, KvWrite, Table};
#[cfg(feature = "production")]
pub use self::lmdb::{LmdbEngine, LmdbStore};
pub use self::mem::{MemEngine, MemStore};

/// Identifies an upload in progress.
pub type UploadId = u64;

/// A dataset-tree leaf as stored: the block's CID and its inclusion proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafEntry {
    pub block_cid: Cid,
    pub proof: MerkleProof,
}

/// A summary of space, as `GET /space` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    /// Distinct blocks held.
    pub total_blocks: u64,
    pub quota_max_bytes: u64,
    /// Bytes of distinct blocks held.
    pub quota_used_bytes: u64,
    /// Bytes promised to storage contracts but not yet written.
    pub quota_reserved_bytes: u64,
}

/// What [`BlockStore::recover`] cleaned up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Uploads that had not committed and were rolled back.
    pub uploads_rolled_back: u64,
    /// Bytes released by the roll-back.
    pub bytes_released: u64,
}

/// What committing an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// A new dataset is listed.
    New,
    /// The same manifest was already stored; the upload's blocks were released.
    AlreadyStored,
}

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Writing would exceed the quota; nothing of the failed write was kept.
    #[error(
        "storage quota exceeded: {needed_bytes} more bytes needed, {available_bytes} available of {max_bytes}"
    )]
    QuotaExceeded { needed_bytes: u64, available_bytes: u64, max_bytes: u64 },
    /// The upload is unknown (never begun, already committed or aborted).
    #[error("unknown upload {0}")]
    UnknownUpload(UploadId),
    /// A dataset's tree lacks a leaf or a block the manifest promises: the store is damaged.
    #[error("dataset tree {tree} is missing leaf {index}")]
    MissingLeaf { tree: String, index: u64 },
    /// Stored bytes do not hash to their CID (bit rot, a torn write): the store is damaged.
    #[error("block {0} is corrupt on disk")]
    Corrupt(String),
    /// The underlying database failed (I/O error, map full, ...).
    #[error("database error: {0}")]
    Backend(String),
}

/// The disk port: everything node logic stores.
#[async_trait]
pub trait BlockStore: Send + Sync + 'static {
    /// Starts an upload; its blocks are held by a pending record until commit or abort.
    async fn begin_upload(&self) -> Result<UploadId, StoreError>;
    /// Durably stores `blocks` as leaves `first_index..` of `upload`, checking the quota.
    async fn put_upload_blocks(
        &self,
        upload: UploadId,
        first_index: u64,
        blocks: Vec<Block>,
    ) -> Result<(), StoreError>;
    /// Stores tree leaves (block CID + proof) for the upload's tree, from `first_index` on.
    async fn put_tree_leaves(
        &self,
        upload: UploadId,
        tree: Cid,
        first_index: u64,
        leaves: Vec<LeafEntry>,
    ) -> Result<(), StoreError>;
    /// Lists the dataset: writes the manifest and hands the blocks to the tree, atomically.
    async fn commit_upload(
        &self,
        upload: UploadId,
        manifest_cid: Cid,
        manifest: Bytes,
    ) -> Result<Committed, StoreError>;
    /// Rolls an upload back, releasing its blocks and leaves.
    async fn abort_upload(&self, upload: UploadId) -> Result<(), StoreError>;
    /// Rolls back every pending upload (run at open, after a crash).
    async fn recover(&self) -> Result<Recovery, StoreError>;

    async fn get_manifest(&self, cid: Cid) -> Result<Option<Bytes>, StoreError>;
    /// Every listed dataset: manifest CID and encoded manifest, in CID byte order.
    async fn list_manifests(&self) -> Result<Vec<(Cid, Bytes)>, StoreError>;
    /// Removes a dataset; its blocks go when no other dataset uses them. `false` if unknown.
    async fn delete_dataset(&self, manifest_cid: Cid) -> Result<bool, StoreError>;

    /// Lists a slot held here: hands the upload's blocks and leaves (those of the slot's range of
    /// the protected dataset's tree) to the slot record, atomically.
    async fn commit_slot(&self, upload: UploadId, slot: HeldSlot) -> Result<Committed, StoreError>;
    /// Drops a held slot; its blocks go when nothing else uses them. `false` if not held.
    async fn delete_slot(&self, manifest_cid: Cid, slot: u32) -> Result<bool, StoreError>;
    /// Every slot held here, by manifest CID and slot index.
    async fn list_slots(&self) -> Result<Vec<HeldSlot>, StoreError>;

    /// A block's bytes, verified against its CID.
    async fn get_block(&self, cid: Cid) -> Result<Option<Bytes>, StoreError>;
    async fn has_block(&self, cid: Cid) -> Result<bool, StoreError>;
    async fn get_leaf(&self, tree: Cid, index: u64) -> Result<Option<LeafEntry>, StoreError>;
    /// Blocks `first_index..first_index + count` of a tree, verified against their CIDs.
    async fn get_tree_blocks(
        &self,
        tree: Cid,
        first_index: u64,
        count: u64,
    ) -> Result<Vec<Bytes>, StoreError>;

    /// For each of leaves `0..count` of a tree: whether its block is held here.
    async fn tree_presence(&self, tree: Cid, count: u64) -> Result<Vec<bool>, StoreError>;

    async fn space(&self) -> Result<Space, StoreError>;

    /// Writes node records kept beside the data (the marketplace's availabilities,
    /// reservations, sales and purchases) and changes the reserved bytes by `reserve`, in one
    /// transaction. Reserved bytes count against the quota like used ones: a positive
    /// `reserve` is refused with [`StoreError::QuotaExceeded`] (and nothing written) when used
    /// plus reserved bytes would pass the quota; a negative one releases, never below zero.
    async fn write_records(&self, writes: Vec<RecordWrite>, reserve: i64) -> Result<(), StoreError>;
    /// The records whose key starts with `prefix`, in key order.
    async fn records(&self, prefix: Vec<u8>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
}

/// One change of [`BlockStore::write_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordWrite {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// A slot of a protected dataset held by this node: its leaves of the dataset's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldSlot {
    pub manifest_cid: Cid,
    pub slot: u32,
    /// The leaves of the protected tree the slot covers.
    pub leaves: std::ops::Range<u64>,
    /// The encoded manifest of the protected dataset.
    pub manifest: Bytes,
}

/// A shared handle to a store.
pub type SharedStore = Arc<dyn BlockStore>;

/// Opens an in-memory store with `quota_max_bytes`; blocking work runs inline.
pub fn memory(quota_max_bytes: u64) -> SharedStore {
    Arc::new(MemStore::new(MemEngine::default(), quota_max_bytes, Compute::Inline))
}
