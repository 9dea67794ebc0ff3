//! One suite, run against every store adapter.

use bytes::Bytes;

use super::*;
use crate::content::{Block, Manifest, block_cid, manifest_cid, tree_cid};
use crate::merkle::MerkleTree;

const QUOTA: u64 = 64 * 1024;

/// A store under test and, for disk adapters, how to reopen it as after a crash.
trait Harness {
    fn store(&self) -> SharedStore;
    /// Drops the current handle (without any cleanup) and opens the same data again.
    fn reopen(&mut self) -> SharedStore;
    /// Overwrites a block's bytes behind the store's back, as bit rot would.
    fn rot(&self, cid: &Cid, data: &[u8]);
}

fn rot_in<E: KvEngine>(store: &KvStore<E>, cid: &Cid, data: &[u8]) {
    store.engine().write(|w| w.put(Table::Blocks, &cid.to_bytes(), data)).unwrap();
}

struct Mem(Arc<MemStore>);

impl Harness for Mem {
    fn store(&self) -> SharedStore {
        self.0.clone()
    }
    fn reopen(&mut self) -> SharedStore {
        self.0.clone() // memory survives only as long as the process: "reopen" is the same map
    }
    fn rot(&self, cid: &Cid, data: &[u8]) {
        rot_in(&self.0, cid, data)
    }
}

fn mem() -> Mem {
    Mem(Arc::new(MemStore::new(MemEngine::default(), QUOTA, Compute::Inline)))
}

#[cfg(feature = "production")]
struct Lmdb {
    dir: tempfile::TempDir,
    store: Option<Arc<LmdbStore>>,
}

#[cfg(feature = "production")]
impl Harness for Lmdb {
    fn store(&self) -> SharedStore {
        self.store.clone().expect("open")
    }
    fn reopen(&mut self) -> SharedStore {
        self.store = None;
        self.store = Some(Arc::new(LmdbStore::open(self.dir.path(), QUOTA).unwrap()));
        self.store()
    }
    fn rot(&self, cid: &Cid, data: &[u8]) {
        rot_in(self.store.as_ref().expect("open"), cid, data)
    }
}

#[cfg(feature = "production")]
fn lmdb() -> Lmdb {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LmdbStore::open(dir.path(), QUOTA).unwrap());
    Lmdb { dir, store: Some(store) }
}

fn blocks(tag: u8, count: usize) -> Vec<Block> {
    (0..count).map(|i| Block::new(Bytes::from(vec![tag.wrapping_add(i as u8); 1024]))).collect()
}

/// Uploads `blocks` through the whole protocol, optionally stopping before commit.
async fn upload(store: &SharedStore, blocks: &[Block], name: &str, commit: bool) -> (UploadId, Cid) {
    let id = store.begin_upload().await.unwrap();
    store.put_upload_blocks(id, 0, blocks.to_vec()).await.unwrap();
    let tree = MerkleTree::build(blocks.iter().map(|b| *b.digest()).collect()).unwrap();
    let tree_id = tree_cid(&tree.root());
    let leaves = (0..tree.leaves_count())
        .map(|i| LeafEntry { block_cid: block_cid(&tree.leaf(i)), proof: tree.proof(i) })
        .collect();
    store.put_tree_leaves(id, tree_id, 0, leaves).await.unwrap();
    let mut manifest = Manifest::new(tree_id, 1024, blocks.len() as u64 * 1024);
    manifest.filename = Some(name.into());
    let encoded = manifest.encode();
    let cid = manifest_cid(&encoded);
    if commit {
        assert_eq!(store.commit_upload(id, cid, encoded.into()).await.unwrap(), Committed::New);
    }
    (id, cid)
}

async fn used(store: &SharedStore) -> u64 {
    store.space().await.unwrap().quota_used_bytes
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod mem_suite {
            $( #[tokio::test] async fn $name() { super::$name(super::mem()).await } )*
        }
        #[cfg(feature = "production")]
        mod lmdb_suite {
            $( #[tokio::test] async fn $name() { super::$name(super::lmdb()).await } )*
        }
    };
}

suite!(
    commit_lists_and_reads,
    abort_releases_everything,
    quota_is_all_or_nothing,
    shared_blocks_counted_once,
    crash_before_commit_is_rolled_back,
    aborted_writer_keeps_a_sibling_tree,
    detects_corruption_on_read,
    slots_hold_their_own_references,
    records_and_reservations_survive_a_reopen
);

async fn commit_lists_and_reads(h: impl Harness) {
    let store = h.store();
    let bs = blocks(1, 5);
    let (_, cid) = upload(&store, &bs, "a", true).await;
    assert_eq!(store.list_manifests().await.unwrap().len(), 1);
    let manifest = Manifest::decode(&store.get_manifest(cid).await.unwrap().unwrap()).unwrap();
    let read = store.get_tree_blocks(manifest.tree_cid, 1, 3).await.unwrap();
    assert_eq!(read, bs[1..4].iter().map(|b| b.data().clone()).collect::<Vec<_>>());
    assert_eq!(store.get_block(*bs[0].cid()).await.unwrap().as_ref(), Some(bs[0].data()));
    assert_eq!(
        store.space().await.unwrap(),
        Space {
            total_blocks: 5,
            quota_max_bytes: QUOTA,
            quota_used_bytes: 5 * 1024,
            quota_reserved_bytes: 0
        }
    );
    assert!(matches!(
        store.get_tree_blocks(manifest.tree_cid, 4, 2).await,
        Err(StoreError::MissingLeaf { index: 5, .. })
    ));
}

async fn abort_releases_everything(h: impl Harness) {
    let store = h.store();
    let (id, cid) = upload(&store, &blocks(2, 4), "b", false).await;
    assert_eq!(used(&store).await, 4 * 1024, "pending blocks count against the quota");
    assert!(store.list_manifests().await.unwrap().is_empty(), "nothing listed before commit");
    store.abort_upload(id).await.unwrap();
    assert_eq!(store.space().await.unwrap().total_blocks, 0);
    assert_eq!(used(&store).await, 0);
    assert!(store.get_manifest(cid).await.unwrap().is_none());
    assert!(matches!(store.abort_upload(id).await, Err(StoreError::UnknownUpload(_))));
}

async fn quota_is_all_or_nothing(h: impl Harness) {
    let store = h.store();
    upload(&store, &blocks(3, 60), "c", true).await;
    let id = store.begin_upload().await.unwrap();
    let err = store.put_upload_blocks(id, 0, blocks(100, 10)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QuotaExceeded { needed_bytes: 10240, available_bytes: 4096, max_bytes: QUOTA }
        ),
        "{err}"
    );
    assert_eq!(used(&store).await, 60 * 1024, "the refused batch left nothing behind");
    assert_eq!(store.space().await.unwrap().total_blocks, 60);
    store.put_upload_blocks(id, 0, blocks(100, 4)).await.unwrap();
    assert_eq!(used(&store).await, QUOTA);
}

async fn shared_blocks_counted_once(h: impl Harness) {
    let store = h.store();
    let bs = blocks(4, 3);
    let (_, a) = upload(&store, &bs, "a", true).await;
    let (_, b) = upload(&store, &bs, "b", true).await; // same tree, another manifest
    assert_eq!(used(&store).await, 3 * 1024);
    assert!(store.delete_dataset(a).await.unwrap());
    assert_eq!(used(&store).await, 3 * 1024, "b still needs the blocks");
    assert!(store.delete_dataset(b).await.unwrap());
    assert_eq!(store.space().await.unwrap().total_blocks, 0);
    assert_eq!(used(&store).await, 0);
    assert!(!store.has_block(*bs[0].cid()).await.unwrap());
}

async fn crash_before_commit_is_rolled_back(mut h: impl Harness) {
    let store = h.store();
    let (_, kept) = upload(&store, &blocks(5, 3), "kept", true).await;
    let (_, lost) = upload(&store, &blocks(60, 5), "lost", false).await;
    drop(store);
    let store = h.reopen();
    let recovery = store.recover().await.unwrap();
    assert_eq!(recovery, Recovery { uploads_rolled_back: 1, bytes_released: 5 * 1024 });
    assert!(store.get_manifest(lost).await.unwrap().is_none());
    assert!(store.get_manifest(kept).await.unwrap().is_some());
    assert_eq!(used(&store).await, 3 * 1024);
    assert_eq!(store.recover().await.unwrap(), Recovery::default(), "recovery is idempotent");
}

async fn aborted_writer_keeps_a_sibling_tree(h: impl Harness) {
    // Two uploads of the same bytes race; one is aborted after writing the tree's leaves.
    let store = h.store();
    let bs = blocks(7, 4);
    let (first, _) = upload(&store, &bs, "same", false).await;
    let (second, cid) = upload(&store, &bs, "same", false).await;
    store.abort_upload(first).await.unwrap();
    assert_eq!(store.commit_upload(second, cid, store_manifest(&bs, "same")).await.unwrap(), Committed::New);
    let manifest = Manifest::decode(&store.get_manifest(cid).await.unwrap().unwrap()).unwrap();
    assert_eq!(store.get_tree_blocks(manifest.tree_cid, 0, 4).await.unwrap().len(), 4);
    assert_eq!(used(&store).await, 4 * 1024);
    assert!(store.delete_dataset(cid).await.unwrap());
    assert_eq!(used(&store).await, 0);
}

fn store_manifest(bs: &[Block], name: &str) -> Bytes {
    let tree = MerkleTree::build(bs.iter().map(|b| *b.digest()).collect()).unwrap();
    let mut manifest = Manifest::new(tree_cid(&tree.root()), 1024, bs.len() as u64 * 1024);
    manifest.filename = Some(name.into());
    manifest.encode().into()
}

async fn detects_corruption_on_read(h: impl Harness) {
    let store = h.store();
    let bs = blocks(8, 2);
    let (_, cid) = upload(&store, &bs, "rot", true).await;
    let tree = Manifest::decode(&store.get_manifest(cid).await.unwrap().unwrap()).unwrap().tree_cid;
    let mut flipped = bs[1].data().to_vec();
    flipped[100] ^= 0x10;
    h.rot(bs[1].cid(), &flipped);
    assert!(store.get_block(*bs[0].cid()).await.unwrap().is_some());
    assert!(matches!(store.get_block(*bs[1].cid()).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(store.get_tree_blocks(tree, 0, 2).await, Err(StoreError::Corrupt(_))));
}

/// Writes leaves `range` of the tree over `all` as a slot of `manifest_cid`, and commits it.
async fn hold_slot(
    store: &SharedStore,
    all: &[Block],
    manifest_cid: Cid,
    slot: u32,
    range: std::ops::Range<u64>,
) -> Committed {
    let id = store.begin_upload().await.unwrap();
    let part = all[range.start as usize..range.end as usize].to_vec();
    store.put_upload_blocks(id, range.start, part).await.unwrap();
    let tree = MerkleTree::build(all.iter().map(|b| *b.digest()).collect()).unwrap();
    let leaves = range
        .clone()
        .map(|i| LeafEntry { block_cid: block_cid(&tree.leaf(i)), proof: tree.proof(i) })
        .collect();
    store.put_tree_leaves(id, tree_cid(&tree.root()), range.start, leaves).await.unwrap();
    let manifest = store_manifest(all, "protected");
    store.commit_slot(id, HeldSlot { manifest_cid, slot, leaves: range, manifest }).await.unwrap()
}

async fn slots_hold_their_own_references(h: impl Harness) {
    let store = h.store();
    let bs = blocks(40, 8);
    let (_, cid) = upload(&store, &bs, "protected", true).await;
    let tree = Manifest::decode(&store.get_manifest(cid).await.unwrap().unwrap()).unwrap().tree_cid;
    assert_eq!(hold_slot(&store, &bs, cid, 1, 2..4).await, Committed::New);
    assert_eq!(hold_slot(&store, &bs, cid, 1, 2..4).await, Committed::AlreadyStored);
    let held = store.list_slots().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].manifest_cid, held[0].slot, held[0].leaves.clone()), (cid, 1, 2..4));

    // The dataset goes; the slot keeps its two blocks and their leaves.
    assert!(store.delete_dataset(cid).await.unwrap());
    assert_eq!(used(&store).await, 2 * 1024);
    assert_eq!(store.get_tree_blocks(tree, 2, 2).await.unwrap().len(), 2);
    assert!(store.get_leaf(tree, 3).await.unwrap().is_some());
    assert!(store.get_block(*bs[0].cid()).await.unwrap().is_none());
    assert!(matches!(store.get_tree_blocks(tree, 0, 1).await, Err(StoreError::MissingLeaf { .. })));

    // The slot goes: nothing is left.
    assert!(store.delete_slot(cid, 1).await.unwrap());
    assert!(!store.delete_slot(cid, 1).await.unwrap());
    assert_eq!(used(&store).await, 0);
    assert!(store.get_leaf(tree, 3).await.unwrap().is_none());
    assert!(store.list_slots().await.unwrap().is_empty());
}

/// A store written before references were counted per record: two manifests of one tree held a
/// single reference per block. Opening it upgrades the counts, so deleting one manifest keeps
/// the other's blocks.
#[tokio::test]
async fn old_format_shared_trees_are_upgraded_at_open() {
    let h = mem();
    let store = h.store();
    let bs = blocks(60, 3);
    let (_, first) = upload(&store, &bs, "a", true).await;
    let (_, second) = upload(&store, &bs, "b", true).await;
    // Rewind to format 0: one reference per block, no format mark.
    h.0.engine()
        .write(|w| {
            for b in &bs {
                w.put(Table::Refs, &b.cid().to_bytes(), &1u64.to_le_bytes())?;
            }
            w.delete(Table::Meta, b"format").map(|_| ())
        })
        .unwrap();
    store.recover().await.unwrap();
    assert!(store.delete_dataset(first).await.unwrap());
    let tree = Manifest::decode(&store.get_manifest(second).await.unwrap().unwrap()).unwrap().tree_cid;
    assert_eq!(store.get_tree_blocks(tree, 0, 3).await.unwrap().len(), 3);
    assert!(store.delete_dataset(second).await.unwrap());
    assert_eq!(used(&store).await, 0);
    // A second open changes nothing.
    store.recover().await.unwrap();
    assert_eq!(used(&store).await, 0);
}

async fn records_and_reservations_survive_a_reopen(mut h: impl Harness) {
    let store = h.store();
    let put = |key: &str, value: &str| RecordWrite::Put { key: key.into(), value: value.into() };
    store
        .write_records(vec![put("sale/1", "a"), put("sale/2", "b"), put("avail/1", "c")], 1000)
        .await
        .unwrap();
    assert_eq!(store.space().await.unwrap().quota_reserved_bytes, 1000);

    // Reserved bytes count against the quota, for records and uploads alike.
    let over = store.write_records(vec![put("sale/3", "d")], (QUOTA - 999) as i64).await;
    assert!(
        matches!(over, Err(StoreError::QuotaExceeded { available_bytes, .. }) if available_bytes == QUOTA - 1000)
    );
    let upload_id = store.begin_upload().await.unwrap();
    let big = vec![Block::new(Bytes::from(vec![7u8; (QUOTA - 999) as usize]))];
    assert!(matches!(
        store.put_upload_blocks(upload_id, 0, big).await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    store.abort_upload(upload_id).await.unwrap();

    drop(store);
    let store = h.reopen();
    let sales = store.records(b"sale/".to_vec()).await.unwrap();
    assert_eq!(sales, vec![(b"sale/1".to_vec(), b"a".to_vec()), (b"sale/2".to_vec(), b"b".to_vec())]);
    store.write_records(vec![RecordWrite::Delete { key: b"sale/1".to_vec() }], -400).await.unwrap();
    assert_eq!(store.records(b"sale/".to_vec()).await.unwrap().len(), 1);
    assert_eq!(store.space().await.unwrap().quota_reserved_bytes, 600);
    // Releasing more than is reserved stops at zero.
    store.write_records(Vec::new(), -5000).await.unwrap();
    assert_eq!(store.space().await.unwrap().quota_reserved_bytes, 0);
}
