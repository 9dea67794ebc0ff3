//! The store's semantics, written once over [`KvEngine`]: reference counts, pending uploads,
//! tree ownership and the quota.
//!
//! Ownership of block references (each reference is one count in `Refs`):
//! - a pending upload holds one reference per block it wrote (`Pending` entries);
//! - a listed record holds one reference per leaf it covers: a dataset (`Manifests`) all the
//!   leaves of its tree, a held slot (`Slots`) the leaves of its slot.
//!
//! Committing a record hands the upload's references to it; committing a record that is already
//! listed releases them instead. Deleting a record releases its own. A tree record counts the
//! records naming the tree (leaf entries go when none is left) and its *writers* (pending uploads
//! writing its leaves), so an aborted upload never deletes leaves another upload is about to
//! commit. Records over the same tree may overlap (a dataset and one of its slots): each holds
//! its own references, so either can go without the other losing a block.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::kv::{KvEngine, KvRead, KvWrite, Table};
use super::{BlockStore, Committed, HeldSlot, LeafEntry, RecordWrite, Recovery, Space, StoreError, UploadId};
use crate::content::{Block, Cid, Manifest, cid_to_string};
use crate::merkle::MerkleProof;
use crate::runtime::Compute;

pub(super) const USED_BYTES: &[u8] = b"used_bytes";
const RESERVED_BYTES: &[u8] = b"reserved_bytes";
pub(super) const TOTAL_BLOCKS: &[u8] = b"total_blocks";
const NEXT_UPLOAD: &[u8] = b"next_upload";
/// The store's format: 0 (absent) when a tree owned one reference per leaf for all the
/// manifests naming it, 1 since each listed record owns its own.
pub(super) const FORMAT: &[u8] = b"format";
pub(super) const FORMAT_CURRENT: u64 = 1;

/// A [`BlockStore`] over any [`KvEngine`].
pub struct KvStore<E> {
    engine: Arc<E>,
    quota_max_bytes: u64,
    /// Where blocking engine calls run: the blocking pool for disk engines, inline for memory.
    compute: Compute,
}

impl<E: KvEngine> KvStore<E> {
    pub fn new(engine: E, quota_max_bytes: u64, compute: Compute) -> KvStore<E> {
        KvStore { engine: Arc::new(engine), quota_max_bytes, compute }
    }

    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&E, u64) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let engine = self.engine.clone();
        let quota = self.quota_max_bytes;
        self.compute.run(move || f(&engine, quota)).await
    }
}

// ---- record layouts ----

pub(super) fn u64_of(bytes: Option<Vec<u8>>) -> u64 {
    bytes.and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

fn meta(r: &dyn KvRead, name: &[u8]) -> Result<u64, StoreError> {
    Ok(u64_of(r.get(Table::Meta, name)?))
}

pub(super) fn set_meta(w: &mut dyn KvWrite, name: &[u8], value: u64) -> Result<(), StoreError> {
    w.put(Table::Meta, name, &value.to_le_bytes())
}

fn update_meta(w: &mut dyn KvWrite, name: &[u8], f: impl FnOnce(u64) -> u64) -> Result<(), StoreError> {
    let value = meta(w, name)?;
    set_meta(w, name, f(value))
}

pub(super) fn indexed_key(prefix: &[u8], index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// `Uploads` value: blocks written, leaves written, and the tree once known.
#[derive(Debug, Default)]
pub(super) struct UploadRecord {
    blocks_count: u64,
    leaves_count: u64,
    pub(super) tree: Option<Cid>,
}

impl UploadRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 40);
        out.extend_from_slice(&self.blocks_count.to_le_bytes());
        out.extend_from_slice(&self.leaves_count.to_le_bytes());
        if let Some(tree) = &self.tree {
            out.extend_from_slice(&tree.to_bytes());
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<UploadRecord, StoreError> {
        let bad = || StoreError::Backend("malformed upload record".into());
        if bytes.len() < 16 {
            return Err(bad());
        }
        let tree =
            if bytes.len() > 16 { Some(Cid::try_from(&bytes[16..]).map_err(|_| bad())?) } else { None };
        Ok(UploadRecord {
            blocks_count: u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            leaves_count: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            tree,
        })
    }
}

/// `Trees` value: manifests naming the tree, uploads writing it, leaves stored.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TreeRecord {
    pub(super) manifests: u64,
    pub(super) writers: u64,
    pub(super) leaves_count: u64,
}

impl TreeRecord {
    pub(super) fn load(r: &dyn KvRead, tree: &Cid) -> Result<TreeRecord, StoreError> {
        let Some(bytes) = r.get(Table::Trees, &tree.to_bytes())? else {
            return Ok(TreeRecord::default());
        };
        if bytes.len() != 24 {
            return Err(StoreError::Backend("malformed tree record".into()));
        }
        let field = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Ok(TreeRecord { manifests: field(0), writers: field(1), leaves_count: field(2) })
    }

    /// Saves the record, or removes it and the tree's leaves when nothing refers to it.
    pub(super) fn save(self, w: &mut dyn KvWrite, tree: &Cid) -> Result<(), StoreError> {
        let key = tree.to_bytes();
        if self.manifests == 0 && self.writers == 0 {
            for index in 0..self.leaves_count {
                w.delete(Table::Leaves, &indexed_key(&key, index))?;
            }
            w.delete(Table::Trees, &key)?;
            return Ok(());
        }
        let mut value = Vec::with_capacity(24);
        for field in [self.manifests, self.writers, self.leaves_count] {
            value.extend_from_slice(&field.to_le_bytes());
        }
        w.put(Table::Trees, &key, &value)
    }
}

pub(super) fn encode_leaf(leaf: &LeafEntry) -> Vec<u8> {
    let cid = leaf.block_cid.to_bytes();
    let mut out = Vec::with_capacity(1 + cid.len() + 16 + 32 * leaf.proof.path.len());
    out.push(cid.len() as u8);
    out.extend_from_slice(&cid);
    out.extend_from_slice(&leaf.proof.encode());
    out
}

pub(super) fn decode_leaf(bytes: &[u8]) -> Result<LeafEntry, StoreError> {
    let bad = || StoreError::Backend("malformed leaf entry".into());
    let cid_len = *bytes.first().ok_or_else(bad)? as usize;
    let cid_bytes = bytes.get(1..1 + cid_len).ok_or_else(bad)?;
    let block_cid = Cid::try_from(cid_bytes).map_err(|_| bad())?;
    let proof = MerkleProof::decode(&bytes[1 + cid_len..]).map_err(|_| bad())?;
    Ok(LeafEntry { block_cid, proof })
}

fn load_upload(r: &dyn KvRead, upload: UploadId) -> Result<UploadRecord, StoreError> {
    let bytes = r.get(Table::Uploads, &upload.to_be_bytes())?.ok_or(StoreError::UnknownUpload(upload))?;
    UploadRecord::decode(&bytes)
}

// ---- reference counting ----

/// Adds a reference to `block`, storing it if new; returns the bytes newly stored.
fn add_ref(w: &mut dyn KvWrite, block: &Block) -> Result<u64, StoreError> {
    let key = block.cid().to_bytes();
    let refs = u64_of(w.get(Table::Refs, &key)?);
    w.put(Table::Refs, &key, &(refs + 1).to_le_bytes())?;
    if refs > 0 {
        return Ok(0);
    }
    w.put(Table::Blocks, &key, block.data())?;
    update_meta(w, TOTAL_BLOCKS, |n| n + 1)?;
    Ok(block.data().len() as u64)
}

/// Drops a reference to the block `key`, deleting it at zero.
fn release_ref(w: &mut dyn KvWrite, key: &[u8]) -> Result<(), StoreError> {
    let refs = u64_of(w.get(Table::Refs, key)?);
    if refs > 1 {
        return w.put(Table::Refs, key, &(refs - 1).to_le_bytes());
    }
    w.delete(Table::Refs, key)?;
    if let Some(data) = w.get(Table::Blocks, key)? {
        w.delete(Table::Blocks, key)?;
        update_meta(w, USED_BYTES, |n| n.saturating_sub(data.len() as u64))?;
        update_meta(w, TOTAL_BLOCKS, |n| n.saturating_sub(1))?;
    }
    Ok(())
}

/// Deletes an upload's pending entries, releasing their references if `release`.
fn drop_pending(
    w: &mut dyn KvWrite,
    upload: UploadId,
    record: &UploadRecord,
    release: bool,
) -> Result<(), StoreError> {
    let prefix = upload.to_be_bytes();
    for index in 0..record.blocks_count {
        let key = indexed_key(&prefix, index);
        if let Some(cid) = w.get(Table::Pending, &key)? {
            if release {
                release_ref(w, &cid)?;
            }
            w.delete(Table::Pending, &key)?;
        }
    }
    w.delete(Table::Uploads, &prefix)?;
    Ok(())
}

// ---- operations ----

fn put_upload_blocks(
    w: &mut dyn KvWrite,
    quota: u64,
    upload: UploadId,
    first: u64,
    blocks: &[Block],
) -> Result<(), StoreError> {
    let mut record = load_upload(w, upload)?;
    let prefix = upload.to_be_bytes();
    let mut new_bytes = 0;
    for (offset, block) in blocks.iter().enumerate() {
        let key = indexed_key(&prefix, first + offset as u64);
        assert!(
            w.get(Table::Pending, &key)?.is_none(),
            "upload {upload} wrote leaf {} twice",
            first + offset as u64
        );
        new_bytes += add_ref(w, block)?;
        w.put(Table::Pending, &key, &block.cid().to_bytes())?;
    }
    let used = meta(w, USED_BYTES)?;
    let committed = used + meta(w, RESERVED_BYTES)?;
    if committed + new_bytes > quota {
        return Err(StoreError::QuotaExceeded {
            needed_bytes: new_bytes,
            available_bytes: quota.saturating_sub(committed),
            max_bytes: quota,
        });
    }
    set_meta(w, USED_BYTES, used + new_bytes)?;
    record.blocks_count = record.blocks_count.max(first + blocks.len() as u64);
    w.put(Table::Uploads, &prefix, &record.encode())
}

fn put_tree_leaves(
    w: &mut dyn KvWrite,
    upload: UploadId,
    tree: &Cid,
    first: u64,
    leaves: &[LeafEntry],
) -> Result<(), StoreError> {
    let mut record = load_upload(w, upload)?;
    let mut tree_record = TreeRecord::load(w, tree)?;
    match &record.tree {
        None => {
            record.tree = Some(*tree);
            tree_record.writers += 1;
        }
        Some(known) => assert_eq!(known, tree, "upload {upload} switched trees"),
    }
    let key = tree.to_bytes();
    for (offset, leaf) in leaves.iter().enumerate() {
        w.put(Table::Leaves, &indexed_key(&key, first + offset as u64), &encode_leaf(leaf))?;
    }
    let end = first + leaves.len() as u64;
    record.leaves_count = record.leaves_count.max(end);
    tree_record.leaves_count = tree_record.leaves_count.max(end);
    tree_record.save(w, tree)?;
    w.put(Table::Uploads, &upload.to_be_bytes(), &record.encode())
}

fn commit_upload(
    w: &mut dyn KvWrite,
    upload: UploadId,
    manifest_cid: &Cid,
    manifest: &[u8],
) -> Result<Committed, StoreError> {
    let record = load_upload(w, upload)?;
    let decoded = Manifest::decode(manifest)
        .map_err(|e| StoreError::Backend(format!("committing a bad manifest: {e}")))?;
    let tree = record.tree.expect("an upload commits only after writing its tree");
    assert_eq!(decoded.tree_cid, tree, "manifest names another tree");
    assert_eq!(record.leaves_count, decoded.blocks_count(), "tree leaves disagree with the manifest");
    assert_eq!(record.blocks_count, decoded.blocks_count(), "blocks disagree with the manifest");

    let mut tree_record = TreeRecord::load(w, &tree)?;
    let already_listed = w.get(Table::Manifests, &manifest_cid.to_bytes())?.is_some();
    drop_pending(w, upload, &record, already_listed)?;
    tree_record.writers -= 1;
    if !already_listed {
        tree_record.manifests += 1;
        w.put(Table::Manifests, &manifest_cid.to_bytes(), manifest)?;
    }
    tree_record.save(w, &tree)?;
    Ok(if already_listed { Committed::AlreadyStored } else { Committed::New })
}

fn abort_upload(w: &mut dyn KvWrite, upload: UploadId) -> Result<(), StoreError> {
    let record = load_upload(w, upload)?;
    drop_pending(w, upload, &record, true)?;
    if let Some(tree) = &record.tree {
        let mut tree_record = TreeRecord::load(w, tree)?;
        tree_record.writers -= 1;
        tree_record.save(w, tree)?;
    }
    Ok(())
}

fn delete_dataset(w: &mut dyn KvWrite, manifest_cid: &Cid) -> Result<bool, StoreError> {
    let key = manifest_cid.to_bytes();
    let Some(encoded) = w.get(Table::Manifests, &key)? else {
        return Ok(false);
    };
    let manifest = Manifest::decode(&encoded)
        .map_err(|e| StoreError::Backend(format!("stored manifest unreadable: {e}")))?;
    w.delete(Table::Manifests, &key)?;
    release_record(w, &manifest.tree_cid, 0..manifest.blocks_count())?;
    Ok(true)
}

/// Releases the references a record held on leaves `leaves` of `tree`, and the record's count
/// in the tree record.
fn release_record(w: &mut dyn KvWrite, tree: &Cid, leaves: std::ops::Range<u64>) -> Result<(), StoreError> {
    let tree_key = tree.to_bytes();
    for index in leaves {
        let leaf = w.get(Table::Leaves, &indexed_key(&tree_key, index))?;
        let leaf = decode_leaf(&leaf.ok_or_else(|| missing_leaf(tree, index))?)?;
        release_ref(w, &leaf.block_cid.to_bytes())?;
    }
    let mut tree_record = TreeRecord::load(w, tree)?;
    tree_record.manifests -= 1;
    tree_record.save(w, tree)
}

/// Brings a store of format 0 to the current one: a tree named by n manifests held one reference
/// per leaf for all of them; each manifest now holds its own, so every leaf gains n - 1.
fn upgrade_format(w: &mut dyn KvWrite) -> Result<(), StoreError> {
    if meta(w, FORMAT)? >= FORMAT_CURRENT {
        return Ok(());
    }
    let mut shared: Vec<(Vec<u8>, TreeRecord)> = Vec::new();
    let mut bad = false;
    w.scan(Table::Trees, &[], &mut |key, _| {
        match Cid::try_from(key) {
            Ok(_) => shared.push((key.to_vec(), TreeRecord::default())),
            Err(_) => bad = true,
        }
        !bad
    })?;
    if bad {
        return Err(StoreError::Backend("malformed tree key".into()));
    }
    for (key, record) in &mut shared {
        let tree = Cid::try_from(key.as_slice()).expect("checked above");
        *record = TreeRecord::load(w, &tree)?;
        for index in 0..record.leaves_count {
            let Some(leaf) = w.get(Table::Leaves, &indexed_key(key, index))? else { continue };
            let leaf = decode_leaf(&leaf)?;
            let cid = leaf.block_cid.to_bytes();
            let refs = u64_of(w.get(Table::Refs, &cid)?);
            if refs > 0 && record.manifests > 1 {
                w.put(Table::Refs, &cid, &(refs + record.manifests - 1).to_le_bytes())?;
            }
        }
    }
    set_meta(w, FORMAT, FORMAT_CURRENT)
}

fn slot_key(manifest_cid: &Cid, slot: u32) -> Vec<u8> {
    let mut key = manifest_cid.to_bytes();
    key.extend_from_slice(&slot.to_be_bytes());
    key
}

fn commit_slot(w: &mut dyn KvWrite, upload: UploadId, slot: &HeldSlot) -> Result<Committed, StoreError> {
    let record = load_upload(w, upload)?;
    let decoded = Manifest::decode(&slot.manifest)
        .map_err(|e| StoreError::Backend(format!("committing a slot of a bad manifest: {e}")))?;
    let tree = record.tree.expect("a slot commits only after writing its leaves");
    assert_eq!(decoded.tree_cid, tree, "manifest names another tree");
    assert!(record.leaves_count >= slot.leaves.end, "slot leaves not all written");
    let key = slot_key(&slot.manifest_cid, slot.slot);
    let already_held = w.get(Table::Slots, &key)?.is_some();
    drop_pending(w, upload, &record, already_held)?;
    let mut tree_record = TreeRecord::load(w, &tree)?;
    tree_record.writers -= 1;
    if !already_held {
        tree_record.manifests += 1;
        let mut value = Vec::with_capacity(16 + slot.manifest.len());
        value.extend_from_slice(&slot.leaves.start.to_le_bytes());
        value.extend_from_slice(&slot.leaves.end.to_le_bytes());
        value.extend_from_slice(&slot.manifest);
        w.put(Table::Slots, &key, &value)?;
    }
    tree_record.save(w, &tree)?;
    Ok(if already_held { Committed::AlreadyStored } else { Committed::New })
}

pub(super) fn decode_slot(key: &[u8], value: &[u8]) -> Result<HeldSlot, StoreError> {
    let bad = || StoreError::Backend("malformed slot record".into());
    if key.len() < 4 || value.len() < 16 {
        return Err(bad());
    }
    let (cid, slot) = key.split_at(key.len() - 4);
    let field = |i: usize| u64::from_le_bytes(value[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok(HeldSlot {
        manifest_cid: Cid::try_from(cid).map_err(|_| bad())?,
        slot: u32::from_be_bytes(slot.try_into().expect("4 bytes")),
        leaves: field(0)..field(1),
        manifest: Bytes::copy_from_slice(&value[16..]),
    })
}

fn delete_slot(w: &mut dyn KvWrite, manifest_cid: &Cid, slot: u32) -> Result<bool, StoreError> {
    let key = slot_key(manifest_cid, slot);
    let Some(value) = w.get(Table::Slots, &key)? else {
        return Ok(false);
    };
    let held = decode_slot(&key, &value)?;
    let manifest = Manifest::decode(&held.manifest)
        .map_err(|e| StoreError::Backend(format!("stored slot manifest unreadable: {e}")))?;
    w.delete(Table::Slots, &key)?;
    release_record(w, &manifest.tree_cid, held.leaves)?;
    Ok(true)
}

fn missing_leaf(tree: &Cid, index: u64) -> StoreError {
    StoreError::MissingLeaf { tree: cid_to_string(tree), index }
}

fn read_block(r: &dyn KvRead, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
    let Some(data) = r.get(Table::Blocks, &cid.to_bytes())? else {
        return Ok(None);
    };
    match Block::verified(*cid, Bytes::from(data)) {
        Some(block) => Ok(Some(block.into_data())),
        None => Err(StoreError::Corrupt(cid_to_string(cid))),
    }
}

fn read_leaf(r: &dyn KvRead, tree: &Cid, index: u64) -> Result<Option<LeafEntry>, StoreError> {
    r.get(Table::Leaves, &indexed_key(&tree.to_bytes(), index))?.map(|b| decode_leaf(&b)).transpose()
}

#[async_trait]
impl<E: KvEngine> BlockStore for KvStore<E> {
    async fn begin_upload(&self) -> Result<UploadId, StoreError> {
        self.run(|e, _| {
            e.write(|w| {
                let id = meta(w, NEXT_UPLOAD)?;
                set_meta(w, NEXT_UPLOAD, id + 1)?;
                w.put(Table::Uploads, &id.to_be_bytes(), &UploadRecord::default().encode())?;
                Ok(id)
            })
        })
        .await
    }

    async fn put_upload_blocks(
        &self,
        upload: UploadId,
        first_index: u64,
        blocks: Vec<Block>,
    ) -> Result<(), StoreError> {
        self.run(move |e, quota| e.write(|w| put_upload_blocks(w, quota, upload, first_index, &blocks))).await
    }

    async fn put_tree_leaves(
        &self,
        upload: UploadId,
        tree: Cid,
        first_index: u64,
        leaves: Vec<LeafEntry>,
    ) -> Result<(), StoreError> {
        self.run(move |e, _| e.write(|w| put_tree_leaves(w, upload, &tree, first_index, &leaves))).await
    }

    async fn commit_upload(
        &self,
        upload: UploadId,
        manifest_cid: Cid,
        manifest: Bytes,
    ) -> Result<Committed, StoreError> {
        self.run(move |e, _| e.write(|w| commit_upload(w, upload, &manifest_cid, &manifest))).await
    }

    async fn abort_upload(&self, upload: UploadId) -> Result<(), StoreError> {
        self.run(move |e, _| e.write(|w| abort_upload(w, upload))).await
    }

    async fn recover(&self) -> Result<Recovery, StoreError> {
        self.run(|e, _| {
            let (uploads, used_before) = e.read(|r| {
                let mut ids = Vec::new();
                r.scan(Table::Uploads, &[], &mut |key, _| {
                    ids.push(u64::from_be_bytes(key.try_into().expect("8-byte upload key")));
                    true
                })?;
                Ok((ids, meta(r, USED_BYTES)?))
            })?;
            for &upload in &uploads {
                e.write(|w| abort_upload(w, upload))?;
            }
            e.write(upgrade_format)?;
            let used_after = e.read(|r| meta(r, USED_BYTES))?;
            Ok(Recovery {
                uploads_rolled_back: uploads.len() as u64,
                bytes_released: used_before - used_after,
            })
        })
        .await
    }

    async fn get_manifest(&self, cid: Cid) -> Result<Option<Bytes>, StoreError> {
        self.run(move |e, _| e.read(|r| Ok(r.get(Table::Manifests, &cid.to_bytes())?.map(Bytes::from)))).await
    }

    async fn list_manifests(&self) -> Result<Vec<(Cid, Bytes)>, StoreError> {
        self.run(|e, _| {
            e.read(|r| {
                let mut out = Vec::new();
                let mut bad = false;
                r.scan(Table::Manifests, &[], &mut |key, value| {
                    match Cid::try_from(key) {
                        Ok(cid) => out.push((cid, Bytes::copy_from_slice(value))),
                        Err(_) => bad = true,
                    }
                    !bad
                })?;
                if bad {
                    return Err(StoreError::Backend("malformed manifest key".into()));
                }
                Ok(out)
            })
        })
        .await
    }

    async fn delete_dataset(&self, manifest_cid: Cid) -> Result<bool, StoreError> {
        self.run(move |e, _| e.write(|w| delete_dataset(w, &manifest_cid))).await
    }

    async fn commit_slot(&self, upload: UploadId, slot: HeldSlot) -> Result<Committed, StoreError> {
        self.run(move |e, _| e.write(|w| commit_slot(w, upload, &slot))).await
    }

    async fn delete_slot(&self, manifest_cid: Cid, slot: u32) -> Result<bool, StoreError> {
        self.run(move |e, _| e.write(|w| delete_slot(w, &manifest_cid, slot))).await
    }

    async fn list_slots(&self) -> Result<Vec<HeldSlot>, StoreError> {
        self.run(|e, _| {
            e.read(|r| {
                let mut out = Vec::new();
                let mut error = None;
                r.scan(Table::Slots, &[], &mut |key, value| match decode_slot(key, value) {
                    Ok(slot) => {
                        out.push(slot);
                        true
                    }
                    Err(e) => {
                        error = Some(e);
                        false
                    }
                })?;
                error.map_or(Ok(out), Err)
            })
        })
        .await
    }

    async fn get_block(&self, cid: Cid) -> Result<Option<Bytes>, StoreError> {
        self.run(move |e, _| e.read(|r| read_block(r, &cid))).await
    }

    async fn has_block(&self, cid: Cid) -> Result<bool, StoreError> {
        self.run(move |e, _| e.read(|r| Ok(r.get(Table::Refs, &cid.to_bytes())?.is_some()))).await
    }

    async fn get_leaf(&self, tree: Cid, index: u64) -> Result<Option<LeafEntry>, StoreError> {
        self.run(move |e, _| e.read(|r| read_leaf(r, &tree, index))).await
    }

    async fn get_tree_blocks(
        &self,
        tree: Cid,
        first_index: u64,
        count: u64,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.run(move |e, _| {
            e.read(|r| {
                (first_index..first_index + count)
                    .map(|index| {
                        let leaf = read_leaf(r, &tree, index)?.ok_or_else(|| missing_leaf(&tree, index))?;
                        read_block(r, &leaf.block_cid)?.ok_or_else(|| missing_leaf(&tree, index))
                    })
                    .collect()
            })
        })
        .await
    }

    async fn tree_presence(&self, tree: Cid, count: u64) -> Result<Vec<bool>, StoreError> {
        self.run(move |e, _| {
            e.read(|r| {
                (0..count)
                    .map(|index| match read_leaf(r, &tree, index)? {
                        Some(leaf) => Ok(r.get(Table::Refs, &leaf.block_cid.to_bytes())?.is_some()),
                        None => Ok(false),
                    })
                    .collect()
            })
        })
        .await
    }

    async fn write_records(&self, writes: Vec<RecordWrite>, reserve: i64) -> Result<(), StoreError> {
        self.run(move |e, quota| {
            e.write(|w| {
                let reserved = meta(w, RESERVED_BYTES)?;
                let wanted = reserve.unsigned_abs();
                let reserved = if reserve >= 0 {
                    let committed = meta(w, USED_BYTES)? + reserved;
                    if committed.saturating_add(wanted) > quota {
                        return Err(StoreError::QuotaExceeded {
                            needed_bytes: wanted,
                            available_bytes: quota.saturating_sub(committed),
                            max_bytes: quota,
                        });
                    }
                    reserved + wanted
                } else {
                    reserved.saturating_sub(wanted)
                };
                set_meta(w, RESERVED_BYTES, reserved)?;
                for write in &writes {
                    match write {
                        RecordWrite::Put { key, value } => w.put(Table::Records, key, value)?,
                        RecordWrite::Delete { key } => {
                            w.delete(Table::Records, key)?;
                        }
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn records(&self, prefix: Vec<u8>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.run(move |e, _| {
            e.read(|r| {
                let mut out = Vec::new();
                r.scan(Table::Records, &prefix, &mut |key, value| {
                    out.push((key.to_vec(), value.to_vec()));
                    true
                })?;
                Ok(out)
            })
        })
        .await
    }

    async fn space(&self) -> Result<Space, StoreError> {
        self.run(|e, quota| {
            e.read(|r| {
                Ok(Space {
                    total_blocks: meta(r, TOTAL_BLOCKS)?,
                    quota_max_bytes: quota,
                    quota_used_bytes: meta(r, USED_BYTES)?,
                    quota_reserved_bytes: meta(r, RESERVED_BYTES)?,
                })
            })
        })
        .await
    }
}
