//! The store checker: reads a whole store and says what is wrong with it, and repairs what the
//! store alone can repair (`neverust check --data-dir D [--repair]`, on a stopped node).
//!
//! What it checks, against a recount from the records themselves:
//! - every block's bytes against its CID;
//! - every leaf a listed dataset or held slot covers: present, decodable, its block present,
//!   its proof leading from the block to the tree's root at its index;
//! - every held slot's blocks against the slot root its manifest names (Poseidon2);
//! - every block's reference count against the references its records and pending uploads
//!   hold; blocks nothing refers to; each tree record's counts of records and writers; the
//!   used-bytes and block counters against the blocks stored.
//!
//! Local repairs ([`Problem::locally_repairable`]): counts are rewritten from the recount and
//! blocks nothing refers to are deleted. What only the network can give back (a corrupt or
//! missing block, a missing or broken leaf, a slot whose blocks do not give its root) is listed,
//! with the records that need it. A recount is complete only when every record and leaf could
//! be read: while one cannot ([`Problem::hides_references`]), or while the store is in an older
//! format, repairing is refused, since counts lowered and blocks deleted on an incomplete
//! recount would destroy data the unreadable record still names. Uploads a crash interrupted
//! are not damage: the node rolls them back when it next opens the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use bytes::Bytes;

use super::engine::{
    FORMAT, FORMAT_CURRENT, TOTAL_BLOCKS, TreeRecord, USED_BYTES, UploadRecord, decode_leaf, decode_slot,
    indexed_key, set_meta, u64_of,
};
use super::kv::{KvEngine, KvRead, KvWrite, Table};
use super::{LeafEntry, StoreError};
use crate::content::{Block, Cid, Manifest, cid_to_string, digest_of};
use crate::merkle::poseidon2::{self, CELL_SIZE_BYTES, SlotTree};

/// One thing wrong with a store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A block whose bytes do not hash to its CID.
    CorruptBlock { cid: String },
    /// A block a record or pending upload refers to that is not stored.
    MissingBlock { cid: String },
    /// A leaf a listed record covers that is not stored.
    MissingLeaf { tree: String, index: u64 },
    /// A leaf that cannot be decoded, or whose proof does not lead to its tree's root.
    BadLeaf { tree: String, index: u64, reason: &'static str },
    /// A held slot whose blocks do not give the slot root its manifest names.
    SlotRootMismatch { manifest: String, slot: u32 },
    /// A key or record that cannot be decoded.
    Malformed { table: &'static str, key: String, reason: String },
    /// A reference count other than the references held.
    WrongRefCount { cid: String, stored: u64, counted: u64 },
    /// A stored block nothing refers to.
    OrphanBlock { cid: String, bytes: u64 },
    /// A tree record whose counts of records and writers differ from the recount.
    WrongTreeRecord { tree: String, stored: (u64, u64), counted: (u64, u64) },
    /// A counter other than the recount.
    WrongCounter { name: &'static str, stored: u64, counted: u64 },
    /// A store written in an older format, whose counts the node upgrades when it next starts.
    OldFormat { format: u64 },
}

impl Problem {
    /// Whether `--repair` fixes it from the store alone (the rest must come from the network).
    pub fn locally_repairable(&self) -> bool {
        matches!(
            self,
            Problem::WrongRefCount { .. }
                | Problem::OrphanBlock { .. }
                | Problem::WrongTreeRecord { .. }
                | Problem::WrongCounter { .. }
        )
    }

    /// Whether the problem keeps the recount from seeing every reference (a record or leaf that
    /// cannot be read names blocks nobody can count), so that local repairs would be unsafe.
    pub fn hides_references(&self) -> bool {
        matches!(
            self,
            Problem::MissingLeaf { .. }
                | Problem::BadLeaf { reason: LEAF_UNDECODABLE, .. }
                | Problem::Malformed { .. }
                | Problem::OldFormat { .. }
        )
    }
}

const LEAF_UNDECODABLE: &str = "the entry cannot be decoded";

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptBlock { cid } => write!(f, "block {cid}: its bytes do not match its CID"),
            Problem::MissingBlock { cid } => write!(f, "block {cid}: referred to but not stored"),
            Problem::MissingLeaf { tree, index } => write!(f, "tree {tree} leaf {index}: not stored"),
            Problem::BadLeaf { tree, index, reason } => write!(f, "tree {tree} leaf {index}: {reason}"),
            Problem::SlotRootMismatch { manifest, slot } => {
                write!(f, "held slot {slot} of {manifest}: its blocks do not give the manifest's slot root")
            }
            Problem::Malformed { table, key, reason } => write!(f, "{table} entry {key}: {reason}"),
            Problem::WrongRefCount { cid, stored, counted } => {
                write!(f, "block {cid}: reference count {stored}, {counted} references held")
            }
            Problem::OrphanBlock { cid, bytes } => {
                write!(f, "block {cid} ({bytes} bytes): nothing refers to it")
            }
            Problem::WrongTreeRecord { tree, stored, counted } => write!(
                f,
                "tree {tree}: record says {} records and {} writers, recount {} and {}",
                stored.0, stored.1, counted.0, counted.1
            ),
            Problem::WrongCounter { name, stored, counted } => {
                write!(f, "counter {name}: {stored}, recount {counted}")
            }
            Problem::OldFormat { format } => {
                write!(f, "store format {format}: start the node once to upgrade it, then check again")
            }
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub blocks: u64,
    pub block_bytes: u64,
    pub datasets: u64,
    pub held_slots: u64,
    pub leaves_checked: u64,
    /// Uploads a crash interrupted, rolled back when the node next opens the store.
    pub interrupted_uploads: u64,
    pub problems: Vec<Problem>,
    /// Set by [`repair`] when it changed nothing because the recount is incomplete.
    pub repair_refused: bool,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} blocks ({} bytes), {} datasets, {} held slots, {} leaves checked, {} interrupted uploads \
             (rolled back at the next start)",
            self.blocks,
            self.block_bytes,
            self.datasets,
            self.held_slots,
            self.leaves_checked,
            self.interrupted_uploads
        )?;
        if self.is_clean() {
            return writeln!(f, "no problems found");
        }
        if self.repair_refused {
            writeln!(
                f,
                "nothing repaired: records or leaves that cannot be read name blocks the recount cannot see; \
                 fetch or delete those datasets first"
            )?;
        }
        let (local, network): (Vec<_>, Vec<_>) = self.problems.iter().partition(|p| p.locally_repairable());
        if !local.is_empty() {
            writeln!(f, "{} problems --repair fixes here:", local.len())?;
            for problem in local {
                writeln!(f, "  {problem}")?;
            }
        }
        if !network.is_empty() {
            writeln!(
                f,
                "{} problems only the network can repair (fetch the datasets again):",
                network.len()
            )?;
            for problem in network {
                writeln!(f, "  {problem}")?;
            }
        }
        Ok(())
    }
}

/// What the recount found, for [`repair`].
#[derive(Default)]
struct Recount {
    report: Report,
    /// Block key → references held by records and pending uploads.
    refs: HashMap<Vec<u8>, u64>,
    /// Block key → stored bytes.
    blocks: HashMap<Vec<u8>, u64>,
    /// Tree key → (records naming it, uploads writing it).
    trees: BTreeMap<Vec<u8>, (u64, u64)>,
    /// Tree key → the end of the leaves its records cover.
    tree_ends: HashMap<Vec<u8>, u64>,
    /// The keys of the `Refs` and `Trees` tables, as read.
    stored_refs: HashMap<Vec<u8>, u64>,
    stored_trees: BTreeSet<Vec<u8>>,
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_name(key: &[u8]) -> String {
    Cid::try_from(key).map(|c| cid_to_string(&c)).unwrap_or_else(|_| hex(key))
}

/// Checks the store read by `r`.
pub fn check(r: &dyn KvRead) -> Result<Report, StoreError> {
    Ok(recount(r)?.report)
}

fn recount(r: &dyn KvRead) -> Result<Recount, StoreError> {
    let mut out = Recount::default();
    let mut problems = BTreeSet::new();

    // Blocks, against their CIDs.
    r.scan(Table::Blocks, &[], &mut |key, value| {
        out.blocks.insert(key.to_vec(), value.len() as u64);
        match Cid::try_from(key) {
            Ok(cid) if Block::verified(cid, Bytes::copy_from_slice(value)).is_some() => {}
            Ok(cid) => {
                problems.insert(Problem::CorruptBlock { cid: cid_to_string(&cid) });
            }
            Err(_) => {
                problems.insert(Problem::Malformed {
                    table: "blocks",
                    key: hex(key),
                    reason: "not a CID".into(),
                });
            }
        }
        true
    })?;
    out.report.blocks = out.blocks.len() as u64;
    out.report.block_bytes = out.blocks.values().sum();

    // Pending uploads hold a reference per block written; each writes at most one tree.
    r.scan(Table::Pending, &[], &mut |_, value| {
        *out.refs.entry(value.to_vec()).or_default() += 1;
        true
    })?;
    r.scan(Table::Uploads, &[], &mut |key, value| {
        out.report.interrupted_uploads += 1;
        match UploadRecord::decode(value) {
            Ok(record) => {
                if let Some(tree) = record.tree {
                    out.trees.entry(tree.to_bytes()).or_default().1 += 1;
                }
            }
            Err(e) => {
                problems.insert(Problem::Malformed {
                    table: "uploads",
                    key: hex(key),
                    reason: e.to_string(),
                });
            }
        }
        true
    })?;

    // Listed records: every leaf they cover, its block and proof; each holds one reference
    // per leaf. `checked` keeps a leaf shared by a dataset and its slots from being checked twice.
    let mut records: Vec<(Cid, std::ops::Range<u64>, Option<(Cid, u32, Manifest)>)> = Vec::new();
    let mut manifest_entries = 0u64;
    r.scan(Table::Manifests, &[], &mut |key, value| {
        manifest_entries += 1;
        match Manifest::decode(value) {
            Ok(manifest) => {
                out.report.datasets += 1;
                records.push((manifest.tree_cid, 0..manifest.blocks_count(), None));
            }
            Err(e) => {
                problems.insert(Problem::Malformed {
                    table: "manifests",
                    key: key_name(key),
                    reason: e.to_string(),
                });
            }
        }
        true
    })?;
    let format = u64_of(r.get(Table::Meta, FORMAT)?);
    if format < FORMAT_CURRENT && manifest_entries > 0 {
        problems.insert(Problem::OldFormat { format });
    }
    r.scan(Table::Slots, &[], &mut |key, value| {
        let held = decode_slot(key, value).and_then(|held| {
            Manifest::decode(&held.manifest)
                .map(|manifest| (held.clone(), manifest))
                .map_err(|e| StoreError::Backend(e.to_string()))
        });
        match held {
            Ok((held, manifest)) => {
                out.report.held_slots += 1;
                records.push((
                    manifest.tree_cid,
                    held.leaves,
                    Some((held.manifest_cid, held.slot, manifest)),
                ));
            }
            Err(e) => {
                problems.insert(Problem::Malformed { table: "slots", key: hex(key), reason: e.to_string() });
            }
        }
        true
    })?;
    // Each leaf's block, once decoded (`None`: missing or undecodable).
    let mut checked: HashMap<(Cid, u64), Option<Cid>> = HashMap::new();
    for (tree, leaves, slot) in records {
        out.trees.entry(tree.to_bytes()).or_default().0 += 1;
        let end = out.tree_ends.entry(tree.to_bytes()).or_default();
        *end = (*end).max(leaves.end);
        // A held slot's blocks, while every one of them is there, verified and of the
        // manifest's block size (a slot with any other damage is reported by its leaves).
        let block_size = slot.as_ref().map_or(0, |(_, _, m)| m.block_size_bytes as usize);
        let mut slot_blocks = Some(Vec::new());
        for index in leaves {
            let block = match checked.get(&(tree, index)) {
                Some(block) => *block,
                None => {
                    out.report.leaves_checked += 1;
                    let block = check_leaf(r, &tree, index, &out.blocks, &mut problems)?.map(|l| l.block_cid);
                    checked.insert((tree, index), block);
                    block
                }
            };
            let Some(block) = block else {
                slot_blocks = None;
                continue;
            };
            let block_key = block.to_bytes();
            *out.refs.entry(block_key.clone()).or_default() += 1;
            if let (Some(_), Some(blocks)) = (&slot, &mut slot_blocks) {
                let data = r.get(Table::Blocks, &block_key)?.map(Bytes::from);
                match data.and_then(|d| Block::verified(block, d)) {
                    Some(b) if b.data().len() == block_size || b.data().is_empty() => {
                        blocks.push(b.into_data())
                    }
                    _ => slot_blocks = None,
                }
            }
        }
        if let (Some((manifest_cid, slot, manifest)), Some(blocks)) = (&slot, slot_blocks)
            && let Some(root) = slot_root(manifest, *slot)
            && !blocks.is_empty()
        {
            let tree = SlotTree::from_stored_blocks(&blocks, block_size, CELL_SIZE_BYTES);
            if tree.root() != root {
                problems
                    .insert(Problem::SlotRootMismatch { manifest: cid_to_string(manifest_cid), slot: *slot });
            }
        }
    }

    // Counts against the recount.
    let mut stored_refs = HashMap::new();
    r.scan(Table::Refs, &[], &mut |key, value| {
        stored_refs.insert(key.to_vec(), u64_of(Some(value.to_vec())));
        true
    })?;
    out.stored_refs = stored_refs;
    let stored_refs = &out.stored_refs;
    for (key, &counted) in &out.refs {
        if !out.blocks.contains_key(key) {
            problems.insert(Problem::MissingBlock { cid: key_name(key) });
        }
        let stored = stored_refs.get(key).copied().unwrap_or(0);
        if stored != counted {
            problems.insert(Problem::WrongRefCount { cid: key_name(key), stored, counted });
        }
    }
    for (key, &stored) in stored_refs {
        if !out.refs.contains_key(key) {
            problems.insert(Problem::WrongRefCount { cid: key_name(key), stored, counted: 0 });
        }
    }
    for (key, &bytes) in &out.blocks {
        if !out.refs.contains_key(key) {
            problems.insert(Problem::OrphanBlock { cid: key_name(key), bytes });
        }
    }
    r.scan(Table::Trees, &[], &mut |key, _| {
        out.stored_trees.insert(key.to_vec());
        true
    })?;
    for key in out.stored_trees.iter().chain(out.trees.keys()).collect::<BTreeSet<_>>() {
        let counted = out.trees.get(key).copied().unwrap_or((0, 0));
        let stored = match Cid::try_from(key.as_slice()) {
            Ok(tree) => match TreeRecord::load(r, &tree) {
                Ok(record) => (record.manifests, record.writers),
                Err(e) => {
                    problems.insert(Problem::Malformed {
                        table: "trees",
                        key: key_name(key),
                        reason: e.to_string(),
                    });
                    continue;
                }
            },
            Err(_) => {
                problems.insert(Problem::Malformed {
                    table: "trees",
                    key: hex(key),
                    reason: "not a CID".into(),
                });
                continue;
            }
        };
        if stored != counted {
            problems.insert(Problem::WrongTreeRecord { tree: key_name(key), stored, counted });
        }
    }
    for (name, counted) in [("used_bytes", out.report.block_bytes), ("total_blocks", out.report.blocks)] {
        let key = if name == "used_bytes" { USED_BYTES } else { TOTAL_BLOCKS };
        let stored = u64_of(r.get(Table::Meta, key)?);
        if stored != counted {
            problems.insert(Problem::WrongCounter { name, stored, counted });
        }
    }
    out.report.problems = problems.into_iter().collect();
    Ok(out)
}

/// The Poseidon2 slot root a verifiable manifest names for `slot`.
fn slot_root(manifest: &Manifest, slot: u32) -> Option<poseidon2::F> {
    let root = manifest.erasure.as_ref()?.verification.as_ref()?.slot_roots.get(slot as usize)?;
    poseidon2::from_bytes(&crate::content::poseidon2_digest_of(root)?)
}

/// Checks leaf `index` of `tree`: the entry, its block, and its proof. Returns the entry when
/// it decodes (its block is then counted as referenced, stored or not).
fn check_leaf(
    r: &dyn KvRead,
    tree: &Cid,
    index: u64,
    blocks: &HashMap<Vec<u8>, u64>,
    problems: &mut BTreeSet<Problem>,
) -> Result<Option<LeafEntry>, StoreError> {
    let name = || cid_to_string(tree);
    let Some(bytes) = r.get(Table::Leaves, &indexed_key(&tree.to_bytes(), index))? else {
        problems.insert(Problem::MissingLeaf { tree: name(), index });
        return Ok(None);
    };
    let Ok(leaf) = decode_leaf(&bytes) else {
        problems.insert(Problem::BadLeaf { tree: name(), index, reason: LEAF_UNDECODABLE });
        return Ok(None);
    };
    let proven = match (digest_of(tree), digest_of(&leaf.block_cid)) {
        (Some(root), Some(digest)) => leaf.proof.index == index && leaf.proof.verify(&digest, &root),
        _ => false,
    };
    if !proven {
        problems.insert(Problem::BadLeaf {
            tree: name(),
            index,
            reason: "its proof does not lead to the tree's root",
        });
    }
    if !blocks.contains_key(&leaf.block_cid.to_bytes()) {
        problems.insert(Problem::MissingBlock { cid: cid_to_string(&leaf.block_cid) });
    }
    Ok(Some(leaf))
}

/// Repairs what the store alone can repair, in one transaction, and checks again: the report
/// lists what is left (what only the network can give back). Changes nothing, and says so,
/// while the recount is incomplete ([`Problem::hides_references`]).
pub fn repair<E: KvEngine>(engine: &E) -> Result<Report, StoreError> {
    let recount = engine.read(recount)?;
    let problems = &recount.report.problems;
    if problems.iter().any(Problem::hides_references) {
        let refused = problems.iter().any(Problem::locally_repairable);
        return Ok(Report { repair_refused: refused, ..recount.report });
    }
    if problems.iter().any(Problem::locally_repairable) {
        engine.write(|w| apply(w, &recount))?;
    }
    engine.read(check)
}

/// Writes the recount (read in a transaction before this one; the checked node is stopped, so
/// nothing changed in between).
fn apply(w: &mut dyn KvWrite, recount: &Recount) -> Result<(), StoreError> {
    for key in recount.stored_refs.keys() {
        if !recount.refs.contains_key(key) {
            w.delete(Table::Refs, key)?;
        }
    }
    for (key, &counted) in &recount.refs {
        w.put(Table::Refs, key, &counted.to_le_bytes())?;
    }
    let (mut blocks, mut bytes) = (0u64, 0u64);
    for (key, &size) in &recount.blocks {
        if recount.refs.contains_key(key) {
            blocks += 1;
            bytes += size;
        } else {
            w.delete(Table::Blocks, key)?;
        }
    }
    for key in recount.stored_trees.iter().chain(recount.trees.keys()).collect::<BTreeSet<_>>() {
        let Ok(tree) = Cid::try_from(key.as_slice()) else { continue };
        let Ok(mut record) = TreeRecord::load(w, &tree) else { continue };
        let (manifests, writers) = recount.trees.get(key).copied().unwrap_or((0, 0));
        if (record.manifests, record.writers) != (manifests, writers) {
            record.manifests = manifests;
            record.writers = writers;
            // A record rebuilt from nothing must know the leaves it owns, so they go with it.
            let end = recount.tree_ends.get(key).copied().unwrap_or(0);
            record.leaves_count = record.leaves_count.max(end);
            record.save(w, &tree)?;
        }
    }
    set_meta(w, USED_BYTES, bytes)?;
    set_meta(w, TOTAL_BLOCKS, blocks)
}

#[cfg(test)]
mod tests;
