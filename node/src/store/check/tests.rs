//! The checker against a store holding datasets, a protected dataset and a held slot, with
//! each kind of damage planted behind the store's back.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::content::block_cid;
use crate::dataset::{Dataset, Datasets, UploadMeta};
use crate::metrics::Metrics;
use crate::runtime::Compute;
use crate::store::{BlockStore, HeldSlot, MemEngine, MemStore, SharedStore};

const BLOCK: usize = 4096;

struct Fixture {
    store: Arc<MemStore>,
    plain: Dataset,
    protected: Dataset,
    /// Slot 1 of `protected`, held as a slot record too.
    slot: HeldSlot,
}

fn random(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[(i % 4) as usize] ^ seed).collect()
}

async fn fixture() -> Fixture {
    let store = Arc::new(MemStore::new(MemEngine::default(), 64 << 20, Compute::Inline));
    let shared: SharedStore = store.clone();
    shared.recover().await.unwrap(); // as the node does when it opens its store
    let datasets = Datasets::new(shared.clone(), Compute::Inline, BLOCK, Arc::new(Metrics::new()));
    let upload = |data: Vec<u8>| {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data))]);
        datasets.upload(body, UploadMeta::default())
    };
    let plain = upload(random(10 * BLOCK + 100, 1)).await.unwrap();
    let source = upload(random(8 * BLOCK, 2)).await.unwrap();
    let protected = datasets.protect(source.cid, 2, 1).await.unwrap();
    let layout = crate::dataset::erasure_layout(&protected.manifest).unwrap();
    let leaves = layout.steps..2 * layout.steps;
    let tree = protected.manifest.tree_cid;
    let blocks = shared.get_tree_blocks(tree, leaves.start, leaves.end - leaves.start).await.unwrap();
    let mut entries = Vec::new();
    for index in leaves.clone() {
        entries.push(shared.get_leaf(tree, index).await.unwrap().unwrap());
    }
    let upload = shared.begin_upload().await.unwrap();
    let blocks = blocks.into_iter().map(|b| Block::new(b)).collect();
    shared.put_upload_blocks(upload, leaves.start, blocks).await.unwrap();
    shared.put_tree_leaves(upload, tree, leaves.start, entries).await.unwrap();
    let slot = HeldSlot {
        manifest_cid: protected.cid,
        slot: 1,
        leaves,
        manifest: Bytes::from(protected.manifest.encode()),
    };
    shared.commit_slot(upload, slot.clone()).await.unwrap();
    Fixture { store, plain, protected, slot }
}

impl Fixture {
    fn check(&self) -> Report {
        self.store.engine().read(check).unwrap()
    }

    fn write(&self, f: impl FnOnce(&mut dyn KvWrite)) {
        self.store
            .engine()
            .write(|w| {
                f(w);
                Ok(())
            })
            .unwrap()
    }

    /// Leaf `index` of `dataset`'s tree.
    fn leaf(&self, dataset: &Dataset, index: u64) -> LeafEntry {
        let tree = dataset.manifest.tree_cid;
        self.store
            .engine()
            .read(|r| Ok(decode_leaf(&r.get(Table::Leaves, &leaf_key(&tree, index))?.unwrap())?))
            .unwrap()
    }
}

fn leaf_key(tree: &Cid, index: u64) -> Vec<u8> {
    indexed_key(&tree.to_bytes(), index)
}

#[tokio::test]
async fn a_sound_store_is_clean_and_repair_changes_nothing() {
    let f = fixture().await;
    let report = f.check();
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.datasets, report.held_slots, report.interrupted_uploads), (3, 1, 0));
    assert_eq!(
        report.leaves_checked,
        f.plain.manifest.blocks_count() + 8 + f.protected.manifest.blocks_count()
    );
    assert!(report.to_string().contains("no problems found"));
    let space = f.store.space().await.unwrap();
    assert_eq!(report.block_bytes, space.quota_used_bytes);
    assert_eq!(repair(f.store.engine().as_ref()).unwrap(), report);
}

#[tokio::test]
async fn an_interrupted_upload_is_not_damage() {
    let f = fixture().await;
    let upload = f.store.begin_upload().await.unwrap();
    let block = Block::new(Bytes::from(random(BLOCK, 9)));
    f.store.put_upload_blocks(upload, 0, vec![block]).await.unwrap();
    let report = f.check();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.interrupted_uploads, 1);
}

/// Damage planted behind the store's back.
struct Damage {
    corrupt: Cid,
    lost: Cid,
    miscounted: Cid,
    orphan: Block,
}

/// Plants damage the recount still sees through: a corrupt block, a lost block, a wrong
/// reference count, an orphan block, a leaf proof from another index, a wrong counter and a
/// wrong tree record.
fn plant_countable_damage(f: &Fixture) -> Damage {
    let tree = f.plain.manifest.tree_cid;
    let damage = Damage {
        corrupt: f.leaf(&f.plain, 0).block_cid,
        lost: f.leaf(&f.plain, 1).block_cid,
        miscounted: f.leaf(&f.plain, 2).block_cid,
        orphan: Block::new(Bytes::from(random(BLOCK, 7))),
    };
    let fourth = f.leaf(&f.plain, 4).block_cid;
    f.write(|w| {
        let mut bytes = w.get(Table::Blocks, &damage.corrupt.to_bytes()).unwrap().unwrap();
        bytes[10] ^= 1;
        w.put(Table::Blocks, &damage.corrupt.to_bytes(), &bytes).unwrap();
        w.delete(Table::Blocks, &damage.lost.to_bytes()).unwrap();
        w.put(Table::Refs, &damage.miscounted.to_bytes(), &5u64.to_le_bytes()).unwrap();
        w.put(Table::Blocks, &damage.orphan.cid().to_bytes(), damage.orphan.data()).unwrap();
        let mut leaf = decode_leaf(&w.get(Table::Leaves, &leaf_key(&tree, 5)).unwrap().unwrap()).unwrap();
        leaf.block_cid = fourth;
        w.put(Table::Leaves, &leaf_key(&tree, 4), &super::super::engine::encode_leaf(&leaf)).unwrap();
        set_meta(w, USED_BYTES, 12).unwrap();
        let mut record = TreeRecord::load(w, &tree).unwrap();
        record.manifests += 1;
        record.save(w, &tree).unwrap();
    });
    damage
}

#[tokio::test]
async fn each_kind_of_damage_is_found_and_repair_fixes_the_local_ones() {
    let f = fixture().await;
    let name = cid_to_string(&f.plain.manifest.tree_cid);
    let d = plant_countable_damage(&f);
    let report = f.check();
    let has = |p: &Problem| report.problems.contains(p);
    assert!(has(&Problem::CorruptBlock { cid: cid_to_string(&d.corrupt) }), "{report}");
    assert!(has(&Problem::MissingBlock { cid: cid_to_string(&d.lost) }), "{report}");
    assert!(
        has(&Problem::WrongRefCount { cid: cid_to_string(&d.miscounted), stored: 5, counted: 1 }),
        "{report}"
    );
    assert!(
        has(&Problem::OrphanBlock { cid: cid_to_string(d.orphan.cid()), bytes: BLOCK as u64 }),
        "{report}"
    );
    assert!(
        has(&Problem::BadLeaf {
            tree: name.clone(),
            index: 4,
            reason: "its proof does not lead to the tree's root"
        }),
        "{report}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::WrongCounter { name: "used_bytes", stored: 12, .. }))
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::WrongTreeRecord { stored: (2, 0), counted: (1, 0), .. }))
    );
    let text = report.to_string();
    assert!(text.contains("--repair fixes here") && text.contains("only the network"), "{text}");

    let after = repair(f.store.engine().as_ref()).unwrap();
    assert!(!after.repair_refused);
    assert!(after.problems.iter().all(|p| !p.locally_repairable()), "{after}");
    for kept in [
        Problem::CorruptBlock { cid: cid_to_string(&d.corrupt) },
        Problem::MissingBlock { cid: cid_to_string(&d.lost) },
    ] {
        assert!(after.problems.contains(&kept), "{after}");
    }
    let stored =
        |cid: &Cid| f.store.engine().read(|r| r.get(Table::Blocks, &cid.to_bytes())).unwrap().is_some();
    assert!(!stored(d.orphan.cid()), "the orphan is gone");
    assert!(stored(&d.corrupt) && stored(&d.miscounted), "blocks still named stay");
    // The space the store reports is the recount's.
    assert_eq!(f.store.space().await.unwrap().quota_used_bytes, after.block_bytes);
}

/// While a record or leaf cannot be read, the recount misses the references it holds: repair
/// changes nothing rather than delete blocks the damaged record still names.
#[tokio::test]
async fn repair_is_refused_while_a_record_or_leaf_cannot_be_read() {
    let f = fixture().await;
    let tree = f.plain.manifest.tree_cid;
    let d = plant_countable_damage(&f);
    let behind_missing_leaf = f.leaf(&f.plain, 3).block_cid;
    f.write(|w| {
        w.delete(Table::Leaves, &leaf_key(&tree, 3)).unwrap();
        w.put(Table::Manifests, &[1, 2, 3], b"not a manifest").unwrap();
    });
    let report = f.check();
    assert!(
        report.problems.contains(&Problem::MissingLeaf { tree: cid_to_string(&tree), index: 3 }),
        "{report}"
    );
    assert!(
        report.problems.iter().any(|p| matches!(p, Problem::Malformed { table: "manifests", .. })),
        "{report}"
    );
    let after = repair(f.store.engine().as_ref()).unwrap();
    assert!(after.repair_refused && after.to_string().contains("nothing repaired"), "{after}");
    assert_eq!(after.problems, report.problems);
    let stored =
        |cid: &Cid| f.store.engine().read(|r| r.get(Table::Blocks, &cid.to_bytes())).unwrap().is_some();
    assert!(stored(&behind_missing_leaf), "the block of the missing leaf is kept");
    assert!(stored(d.orphan.cid()), "nothing deleted at all");
}

/// A store of the format before per-record references is left for the node to upgrade.
#[tokio::test]
async fn an_old_format_store_is_left_to_the_node_to_upgrade() {
    let f = fixture().await;
    f.write(|w| {
        set_meta(w, super::super::engine::FORMAT, 0).unwrap();
    });
    let report = f.check();
    assert!(report.problems.contains(&Problem::OldFormat { format: 0 }), "{report}");
    assert!(report.to_string().contains("start the node once"), "{report}");
    assert!(repair(f.store.engine().as_ref()).unwrap().problems.contains(&Problem::OldFormat { format: 0 }));
}

#[tokio::test]
async fn a_held_slot_whose_blocks_do_not_give_its_root_is_found() {
    let f = fixture().await;
    // Rewrite the slot's first leaf to name a different (valid, stored) block: the leaf proof
    // breaks and so does the slot root.
    let first = f.slot.leaves.start;
    let stranger = Block::new(Bytes::from(random(BLOCK, 5)));
    let tree = f.protected.manifest.tree_cid;
    f.write(|w| {
        let mut leaf = decode_leaf(&w.get(Table::Leaves, &leaf_key(&tree, first)).unwrap().unwrap()).unwrap();
        leaf.block_cid = block_cid(stranger.digest());
        w.put(Table::Leaves, &leaf_key(&tree, first), &super::super::engine::encode_leaf(&leaf)).unwrap();
        w.put(Table::Blocks, &stranger.cid().to_bytes(), stranger.data()).unwrap();
    });
    let report = f.check();
    let slot = Problem::SlotRootMismatch { manifest: cid_to_string(&f.protected.cid), slot: 1 };
    assert!(report.problems.contains(&slot), "{report}");
    assert!(report.problems.iter().any(|p| matches!(p, Problem::BadLeaf { index, .. } if *index == first)));
}
