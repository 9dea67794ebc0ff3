//! Protecting a stored dataset: erasure coding into slots, and the slot trees that make it
//! verifiable.
//!
//! The protected dataset is a new dataset beside the original (which stays listed until the
//! user deletes it). Its tree holds, in Archivist's layout ([`crate::erasure`]): the original
//! blocks (same CIDs, so they are stored once), empty blocks standing for the zero padding up to
//! a multiple of `K`, then the parity. Its manifest carries K, M, the original tree and size,
//! the slot roots, the cell size and the verification root.
//!
//! Work goes a group of columns at a time ([`PROTECT_BATCH_BYTES`] of blocks in memory): read
//! the group's data blocks, encode each column's parity and hash every block (SHA-256 for the
//! dataset tree, a Poseidon2 cell tree for its slot) on the compute port, write the group.

use bytes::Bytes;

use super::{Dataset, Datasets, PendingUpload};
use crate::content::{
    Block, Cid, Codec, ErasureInfo, Manifest, VerificationInfo, cid_to_string, manifest_cid, poseidon2_cid,
};
use crate::erasure::{Coder, CodingError, Layout, Params, ParamsError};
use crate::merkle::Digest;
use crate::merkle::poseidon2::{self, CELL_SIZE_BYTES, F, Poseidon2Tree, SlotTree};
use crate::store::StoreError;

/// Blocks held in memory per group of columns while protecting.
pub const PROTECT_BATCH_BYTES: usize = 32 << 20;

/// Archivist's indexing strategies, as manifests number them.
const STRATEGY_LINEAR: u32 = 0;
const STRATEGY_STEPPED: u32 = 1;

/// Why a dataset could not be protected. In every case nothing new was listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectError {
    #[error("{0} is not stored on this node")]
    NotFound(String),
    #[error("{0} is already erasure-coded")]
    AlreadyProtected(String),
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error(
        "blocks of {0} bytes cannot be split into slot cells: the block size must be a power of two \
         and a multiple of {CELL_SIZE_BYTES}"
    )]
    BlockSize(u32),
    #[error(transparent)]
    Coding(#[from] CodingError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored manifest of {0} is unreadable")]
    BadManifest(String),
}

impl Datasets {
    /// Erasure-codes the stored dataset `cid` with `k` data and `m` parity slots and stores the
    /// protected, verifiable dataset; returns it. Protecting the same dataset twice with the same
    /// parameters gives the same dataset.
    pub async fn protect(&self, cid: Cid, k: u32, m: u32) -> Result<Dataset, ProtectError> {
        let params = Params::new(k, m)?;
        let dataset = self
            .get(cid)
            .await
            .map_err(|_| ProtectError::BadManifest(cid_to_string(&cid)))?
            .ok_or_else(|| ProtectError::NotFound(cid_to_string(&cid)))?;
        let original = dataset.manifest;
        if original.protected() {
            return Err(ProtectError::AlreadyProtected(cid_to_string(&cid)));
        }
        let block_size = original.block_size_bytes as usize;
        if !block_size.is_power_of_two() || block_size < CELL_SIZE_BYTES {
            return Err(ProtectError::BlockSize(original.block_size_bytes));
        }
        let layout = Layout::new(params, original.blocks_count());
        let upload = self.store.begin_upload().await?;
        let guard = PendingUpload { store: self.store.clone(), id: upload, armed: true };
        match self.run_protect(upload, &original, layout).await {
            Ok(dataset) => {
                let mut guard = guard;
                guard.armed = false;
                self.metrics.datasets_protected.inc();
                tracing::info!(
                    original = %cid_to_string(&cid), protected = %cid_to_string(&dataset.cid),
                    k, m, blocks = layout.total, "dataset protected"
                );
                Ok(dataset)
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    async fn run_protect(
        &self,
        upload: crate::store::UploadId,
        original: &Manifest,
        layout: Layout,
    ) -> Result<Dataset, ProtectError> {
        let block_size = original.block_size_bytes as usize;
        let slots = layout.params.slots() as usize;
        let group = (PROTECT_BATCH_BYTES / (block_size * slots)).max(1) as u64;
        let mut leaves: Vec<Digest> = vec![[0; 32]; layout.total as usize];
        let mut block_roots: Vec<F> = vec![F::from(0u64); layout.total as usize];
        let mut coder = Coder::new(layout.params, block_size)?;
        let empty = Block::new(Bytes::new());
        let empty_root = poseidon2::empty_block_root(block_size, CELL_SIZE_BYTES);

        let mut first_step = 0;
        while first_step < layout.steps {
            let columns = group.min(layout.steps - first_step);
            // rows[r][c]: the block at row r of column first_step + c; None for padding.
            let mut rows: Vec<Vec<Option<Bytes>>> = Vec::with_capacity(slots);
            for row in 0..layout.params.k() {
                let start = layout.index(first_step, row);
                let real = layout.blocks.saturating_sub(start).min(columns);
                let mut blocks: Vec<Option<Bytes>> = if real > 0 {
                    self.store
                        .get_tree_blocks(original.tree_cid, start, real)
                        .await?
                        .into_iter()
                        .map(Some)
                        .collect()
                } else {
                    Vec::new()
                };
                blocks.resize(columns as usize, None);
                rows.push(blocks);
            }
            let bytes = (columns as usize * slots * block_size) as u64;
            let (coder_back, hashed) = self
                .compute
                .run_hashing(bytes, move || encode_group(coder, rows, columns as usize, block_size))
                .await;
            coder = coder_back;
            let hashed = hashed?;
            for (row, hashed_row) in hashed.into_iter().enumerate() {
                let start = layout.index(first_step, row as u32);
                let mut to_write = Vec::with_capacity(columns as usize);
                for (column, hashed) in hashed_row.into_iter().enumerate() {
                    let index = (start + column as u64) as usize;
                    let (block, root) = match hashed {
                        Some((block, root)) => (block, root),
                        None => (empty.clone(), empty_root),
                    };
                    leaves[index] = *block.digest();
                    block_roots[index] = root;
                    to_write.push(block);
                }
                self.store.put_upload_blocks(upload, start, to_write).await?;
            }
            first_step += columns;
        }

        let tree_id = self.store_tree(upload, leaves).await?;
        let steps = layout.steps as usize;
        let slot_roots: Vec<F> = self
            .compute
            .run(move || {
                block_roots
                    .chunks(steps)
                    .map(|roots| {
                        SlotTree::from_block_roots(roots.to_vec(), block_size, CELL_SIZE_BYTES).root()
                    })
                    .collect()
            })
            .await;
        let verify_root = Poseidon2Tree::build(slot_roots.clone()).expect("a dataset has slots").root();

        let mut manifest =
            Manifest::new(tree_id, original.block_size_bytes, layout.total * block_size as u64);
        manifest.filename = original.filename.clone();
        manifest.mimetype = original.mimetype.clone();
        manifest.erasure = Some(ErasureInfo {
            ec_k: layout.params.k(),
            ec_m: layout.params.m(),
            original_tree_cid: original.tree_cid,
            original_dataset_size_bytes: original.dataset_size_bytes,
            protected_strategy: STRATEGY_STEPPED,
            verification: Some(VerificationInfo {
                verify_root: poseidon2_cid(Codec::DatasetRoot, &poseidon2::to_bytes(&verify_root)),
                slot_roots: slot_roots
                    .iter()
                    .map(|root| poseidon2_cid(Codec::SlotRoot, &poseidon2::to_bytes(root)))
                    .collect(),
                cell_size_bytes: CELL_SIZE_BYTES as u32,
                verifiable_strategy: STRATEGY_LINEAR,
            }),
        });
        let encoded = manifest.encode();
        let cid = manifest_cid(&encoded);
        self.store.commit_upload(upload, cid, Bytes::from(encoded)).await?;
        Ok(Dataset { cid, manifest })
    }
}

/// A hashed block and the root of its cell tree; `None` stands for a padding block.
type Hashed = Option<(Block, F)>;

/// Encodes the parity of `columns` columns whose data rows are `rows` (padding as `None`) and
/// hashes every real block; returns the coder and the hashed blocks by row (data rows, then
/// parity rows).
fn encode_group(
    mut coder: Coder,
    mut rows: Vec<Vec<Option<Bytes>>>,
    columns: usize,
    block_size: usize,
) -> (Coder, Result<Vec<Vec<Hashed>>, CodingError>) {
    let (k, m) = (coder.params().k() as usize, coder.params().m() as usize);
    let zero = vec![0u8; block_size];
    let mut parity_rows: Vec<Vec<Option<Bytes>>> = vec![Vec::with_capacity(columns); m];
    for column in 0..columns {
        let data: Vec<&[u8]> = rows[..k].iter().map(|row| row[column].as_deref().unwrap_or(&zero)).collect();
        match coder.encode(&data) {
            Ok(parity) => {
                for (row, shard) in parity.into_iter().enumerate() {
                    parity_rows[row].push(Some(Bytes::from(shard)));
                }
            }
            Err(e) => return (coder, Err(e)),
        }
    }
    rows.extend(parity_rows);
    let hashed = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|block| {
                    block.map(|data| {
                        let root = poseidon2::block_tree(&data, CELL_SIZE_BYTES).root();
                        (Block::new(data), root)
                    })
                })
                .collect()
        })
        .collect();
    (coder, Ok(hashed))
}
