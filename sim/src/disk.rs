//! `SimDisk`: the simulated disk under a node's store, with a fault overlay.
//!
//! It implements the store's key-value engine interface, so the node's real store logic
//! (`neverust::store::KvStore`) runs on it unchanged. Faults (madsim has no disk model):
//!
//! - a lying sync (a volatile write cache): commits are acknowledged but only become durable
//!   at the next flush; a crash rolls back everything since, and with torn writes on, blocks
//!   the last lost commit was writing may survive half-written;
//! - bit rot: a stored block silently gets a flipped bit;
//! - latent read errors: a stored block becomes unreadable;
//! - misdirected writes: a block lands on another block's place;
//! - a full disk: writes beyond its capacity fail.
//!
//! Honest disks behave like LMDB with fsync on commit: a commit is atomic and durable. Every
//! damage done by a fault is logged, so the oracle can tell it from damage done by node logic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use neverust::content::Cid;
use neverust::store::{KvEngine, KvRead, KvWrite, StoreError, Table};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

type Key = (Table, Vec<u8>);
/// Previous values (and whether the key was unreadable) of a transaction's writes.
type Undo = Vec<(Key, Option<Vec<u8>>, bool)>;

/// Fault settings of one disk.
#[derive(Clone, Debug, Default)]
pub struct DiskProfile {
    pub lying_fsync: bool,
    pub torn_writes: bool,
    pub misdirected_write: f64,
    pub capacity_bytes: Option<u64>,
}

pub struct SimDisk {
    state: Mutex<DiskState>,
}

struct DiskState {
    map: BTreeMap<Key, Vec<u8>>,
    used_bytes: u64,
    /// Commits acknowledged but not durable yet (lying disks only), oldest first.
    unsynced: Vec<Undo>,
    unreadable: BTreeSet<Key>,
    /// Blocks damaged by injected faults (the oracle forgives these).
    damaged: BTreeSet<Vec<u8>>,
    profile: DiskProfile,
    rng: ChaCha8Rng,
    stats: DiskStats,
}

/// Faults injected and their effects.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DiskStats {
    pub commits_lost: u64,
    pub torn_blocks: u64,
    pub bit_rot: u64,
    pub latent_errors: u64,
    pub read_errors: u64,
    pub misdirected_writes: u64,
    pub full_refusals: u64,
}

impl SimDisk {
    pub fn new(profile: DiskProfile, rng: ChaCha8Rng) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            state: Mutex::new(DiskState {
                map: BTreeMap::new(),
                used_bytes: 0,
                unsynced: Vec::new(),
                unreadable: BTreeSet::new(),
                damaged: BTreeSet::new(),
                profile,
                rng,
                stats: DiskStats::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().expect("disk lock")
    }

    pub fn stats(&self) -> DiskStats {
        self.lock().stats.clone()
    }

    /// Whether this disk has a capacity limit (is built to fill up).
    pub fn is_small(&self) -> bool {
        self.lock().profile.capacity_bytes.is_some()
    }

    /// The write cache reaches the platters.
    pub fn flush(&self) {
        self.lock().unsynced.clear();
    }

    /// Power is cut: what was only in the write cache is lost (possibly torn).
    pub fn crash(&self) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let lost = std::mem::take(&mut state.unsynced);
        state.stats.commits_lost += lost.len() as u64;
        let torn_candidates: Vec<Key> = match (state.profile.torn_writes, lost.last()) {
            (true, Some(last)) => {
                last.iter().filter(|(k, _, _)| k.0 == Table::Blocks).map(|(k, _, _)| k.clone()).collect()
            }
            _ => Vec::new(),
        };
        // The half-written values of the last commit, before rolling back.
        let torn: Vec<(Key, Vec<u8>)> = torn_candidates
            .into_iter()
            .filter_map(|k| state.map.get(&k).cloned().map(|v| (k, v)))
            .filter(|_| state.rng.random_bool(0.5))
            .collect();
        for undo in lost.into_iter().rev() {
            for (key, old, unreadable) in undo.into_iter().rev() {
                restore(state, key, old, unreadable);
            }
        }
        for (key, mut value) in torn {
            let half = value.len() / 2;
            value[half..].fill(0);
            state.stats.torn_blocks += 1;
            state.damaged.insert(key.1.clone());
            put_raw(state, key, value);
        }
    }

    /// Flips one bit of a random stored block.
    pub fn rot(&self) -> bool {
        let key = random_block(&mut self.lock());
        key.is_some_and(|key| self.rot_block(&key.1))
    }

    /// Flips one bit of the stored block `key` (a block CID), if stored here.
    pub fn rot_block(&self, key: &[u8]) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(value) = state.map.get_mut(&(Table::Blocks, key.to_vec())) else { return false };
        if value.is_empty() {
            return false;
        }
        let at = state.rng.random_range(0..value.len());
        value[at] ^= 1 << state.rng.random_range(0..8);
        state.damaged.insert(key.to_vec());
        state.stats.bit_rot += 1;
        true
    }

    /// Flips one bit in each of a `share` of the stored blocks (at least one when `share` is
    /// above zero), picked at random; returns how many.
    pub fn rot_share(&self, share: f64) -> usize {
        let keys: Vec<Vec<u8>> = {
            let mut state = self.lock();
            let mut keys: Vec<Vec<u8>> = state
                .map
                .range((Table::Blocks, Vec::new())..)
                .take_while(|((t, _), v)| *t == Table::Blocks && !v.is_empty())
                .map(|((_, k), _)| k.clone())
                .collect();
            let count = ((keys.len() as f64 * share).ceil() as usize).min(keys.len());
            keys.shuffle(&mut state.rng);
            keys.truncate(count);
            keys
        };
        keys.iter().filter(|key| self.rot_block(key)).count()
    }

    /// Makes a random stored block unreadable.
    pub fn latent_error(&self) -> bool {
        let key = random_block(&mut self.lock());
        key.is_some_and(|key| self.latent_block(&key.1))
    }

    /// Makes the stored block `key` unreadable, if stored here.
    pub fn latent_block(&self, key: &[u8]) -> bool {
        let mut state = self.lock();
        let key = (Table::Blocks, key.to_vec());
        if !state.map.contains_key(&key) {
            return false;
        }
        state.damaged.insert(key.1.clone());
        state.unreadable.insert(key);
        state.stats.latent_errors += 1;
        true
    }

    /// Whether the disk durably holds the manifest `cid` (the oracle's view of the truth).
    pub fn holds_manifest(&self, cid: &Cid) -> bool {
        self.lock().map.contains_key(&(Table::Manifests, cid.to_bytes()))
    }

    /// Whether the disk holds an intact copy of dataset `cid`: its manifest, and each of its
    /// blocks (keys as stored: block CIDs) present, readable and undamaged by any fault.
    pub fn holds_intact(&self, cid: &Cid, blocks: &[Vec<u8>]) -> bool {
        let state = self.lock();
        state.map.contains_key(&(Table::Manifests, cid.to_bytes()))
            && blocks.iter().all(|b| {
                let key = (Table::Blocks, b.clone());
                state.map.contains_key(&key) && !state.unreadable.contains(&key) && !state.damaged.contains(b)
            })
    }

    /// Whether the disk holds slot `slot` of protected dataset `cid` intact: its slot record,
    /// and each of its blocks present, readable and undamaged.
    pub fn holds_slot(&self, cid: &Cid, slot: u32, blocks: &[Vec<u8>]) -> bool {
        let mut key = cid.to_bytes();
        key.extend_from_slice(&slot.to_be_bytes());
        let state = self.lock();
        state.map.contains_key(&(Table::Slots, key))
            && blocks.iter().all(|b| {
                let key = (Table::Blocks, b.clone());
                state.map.contains_key(&key) && !state.unreadable.contains(&key) && !state.damaged.contains(b)
            })
    }

    /// Stored blocks that do not hash to their CID although no fault touched them: damage
    /// done by node logic.
    pub fn unexplained_corruption(&self) -> Vec<String> {
        let state = self.lock();
        let mut bad = Vec::new();
        for ((table, key), value) in state.map.range((Table::Blocks, Vec::new())..) {
            if *table != Table::Blocks {
                break;
            }
            let Ok(cid) = Cid::try_from(key.as_slice()) else {
                bad.push(format!("unparsable block key {key:02x?}"));
                continue;
            };
            let digest: [u8; 32] = Sha256::digest(value).into();
            if cid.hash().digest() != digest && !state.damaged.contains(key) {
                bad.push(neverust::content::cid_to_string(&cid));
            }
        }
        bad
    }
}

fn random_block(state: &mut DiskState) -> Option<Key> {
    let keys: Vec<&Key> = state
        .map
        .range((Table::Blocks, Vec::new())..)
        .take_while(|((t, _), _)| *t == Table::Blocks)
        .map(|(k, _)| k)
        .collect();
    if keys.is_empty() {
        return None;
    }
    let pick = state.rng.random_range(0..keys.len());
    Some(keys[pick].clone())
}

fn put_raw(state: &mut DiskState, key: Key, value: Vec<u8>) -> Option<Vec<u8>> {
    state.used_bytes += value.len() as u64;
    let old = state.map.insert(key, value);
    if let Some(old) = &old {
        state.used_bytes -= old.len() as u64;
    }
    old
}

fn restore(state: &mut DiskState, key: Key, old: Option<Vec<u8>>, unreadable: bool) {
    if unreadable {
        state.unreadable.insert(key.clone());
    }
    match old {
        Some(value) => {
            put_raw(state, key, value);
        }
        None => {
            if let Some(value) = state.map.remove(&key) {
                state.used_bytes -= value.len() as u64;
            }
        }
    }
}

/// The store engine over a shared [`SimDisk`] (the disk outlives node restarts).
pub struct SimDiskEngine(pub Arc<SimDisk>);

struct Txn<'a> {
    state: &'a mut DiskState,
    undo: Undo,
}

fn read_error(key: &Key) -> StoreError {
    StoreError::Backend(format!("read error in {} (simulated latent sector error)", key.0.name()))
}

fn get(state: &DiskState, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let key = (table, key.to_vec());
    if state.unreadable.contains(&key) {
        return Err(read_error(&key));
    }
    Ok(state.map.get(&key).cloned())
}

fn scan(
    state: &DiskState,
    table: Table,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StoreError> {
    for (key, v) in state.map.range((table, prefix.to_vec())..) {
        if key.0 != table || !key.1.starts_with(prefix) {
            break;
        }
        if state.unreadable.contains(key) {
            return Err(read_error(key));
        }
        if !visit(&key.1, v) {
            break;
        }
    }
    Ok(())
}

struct Reader<'a>(&'a DiskState);

impl KvRead for Reader<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        get(self.0, table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        scan(self.0, table, prefix, visit)
    }
}

impl KvRead for Txn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        get(self.state, table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        scan(self.state, table, prefix, visit)
    }
}

impl KvWrite for Txn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut key = (table, key.to_vec());
        let replaced = self.state.map.get(&key).map_or(0, |old| old.len() as u64);
        if let Some(capacity) = self.state.profile.capacity_bytes
            && (self.state.used_bytes + value.len() as u64).saturating_sub(replaced) > capacity
        {
            self.state.stats.full_refusals += 1;
            return Err(StoreError::Backend("no space left on device (simulated full disk)".into()));
        }
        if table == Table::Blocks
            && self.state.profile.misdirected_write > 0.0
            && self.state.rng.random_bool(self.state.profile.misdirected_write)
            && let Some(other) = random_block(self.state)
        {
            self.state.stats.misdirected_writes += 1;
            self.state.damaged.insert(key.1.clone());
            self.state.damaged.insert(other.1.clone());
            key = other;
        } else if table == Table::Blocks {
            // Written whole and in place: whatever damage the old value had is gone.
            self.state.damaged.remove(&key.1);
        }
        let unreadable = self.state.unreadable.remove(&key);
        let old = put_raw(self.state, key.clone(), value.to_vec());
        self.undo.push((key, old, unreadable));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        let key = (table, key.to_vec());
        let old = self.state.map.remove(&key);
        if let Some(value) = &old {
            self.state.used_bytes -= value.len() as u64;
        }
        let unreadable = self.state.unreadable.remove(&key);
        let existed = old.is_some();
        self.undo.push((key, old, unreadable));
        Ok(existed)
    }
}

impl KvEngine for SimDiskEngine {
    fn read<T>(&self, f: impl FnOnce(&dyn KvRead) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let state = self.0.lock();
        let result = f(&Reader(&state));
        if result.is_err() {
            drop(state);
            self.0.lock().stats.read_errors += 1;
        }
        result
    }

    fn write<T>(&self, f: impl FnOnce(&mut dyn KvWrite) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.0.lock();
        let mut txn = Txn { state: &mut guard, undo: Vec::new() };
        let result = f(&mut txn);
        let Txn { state, undo } = txn;
        if result.is_err() {
            for (key, old, unreadable) in undo.into_iter().rev() {
                restore(state, key, old, unreadable);
            }
        } else if state.profile.lying_fsync && !undo.is_empty() {
            state.unsynced.push(undo);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn disk(profile: DiskProfile) -> Arc<SimDisk> {
        SimDisk::new(profile, ChaCha8Rng::seed_from_u64(1))
    }

    fn put(engine: &SimDiskEngine, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        engine.write(|t| t.put(Table::Meta, key, value))
    }

    fn read(engine: &SimDiskEngine, key: &[u8]) -> Option<Vec<u8>> {
        engine.read(|r| r.get(Table::Meta, key)).unwrap()
    }

    #[test]
    fn an_honest_disk_keeps_every_commit_through_a_crash() {
        let d = disk(DiskProfile::default());
        let engine = SimDiskEngine(d.clone());
        put(&engine, b"a", b"1").unwrap();
        d.crash();
        assert_eq!(read(&engine, b"a"), Some(b"1".to_vec()));
    }

    #[test]
    fn a_lying_disk_loses_what_it_had_not_flushed() {
        let d = disk(DiskProfile { lying_fsync: true, ..DiskProfile::default() });
        let engine = SimDiskEngine(d.clone());
        put(&engine, b"a", b"1").unwrap();
        d.flush();
        put(&engine, b"a", b"2").unwrap();
        put(&engine, b"b", b"3").unwrap();
        d.crash();
        assert_eq!(read(&engine, b"a"), Some(b"1".to_vec()));
        assert_eq!(read(&engine, b"b"), None);
        assert_eq!(d.stats().commits_lost, 2);
    }

    #[test]
    fn a_full_disk_refuses_and_a_failed_write_leaves_nothing() {
        let d = disk(DiskProfile { capacity_bytes: Some(4), ..DiskProfile::default() });
        let engine = SimDiskEngine(d.clone());
        let err = engine
            .write(|t| {
                t.put(Table::Meta, b"a", b"12")?;
                t.put(Table::Meta, b"b", b"345")
            })
            .unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        assert_eq!(read(&engine, b"a"), None);
        assert_eq!(d.stats().full_refusals, 1);
    }
}
