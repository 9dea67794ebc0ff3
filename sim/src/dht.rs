//! `ModeledDht`: the simulated discovery port, a model of Kademlia provider records.
//!
//! Not a Kademlia implementation: a provider record is stored on the `replication` live
//! nodes the provider can reach that are closest (by XOR of SHA-256 digests) to the key at the time it is provided, and lives
//! until its TTL passes or every node holding it has stopped (records are kept in memory, as
//! libp2p's record store keeps them, so a crash loses them too). A node with no connection
//! cannot provide (its routing table is empty). Lookups answer providers in a seeded random
//! order. A lookup costs
//! `ceil(log2(nodes) / 2)` sequential hops of one mean round trip each, and finds a record
//! only through holders the asker can reach.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use neverust::content::Cid;
use neverust::discovery::{Discovery, DiscoveryError, PeerRecord};
use neverust::net::PeerId;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::net::Fabric;
use crate::trace::Trace;

pub struct ModeledDht {
    fabric: Arc<Fabric>,
    trace: Arc<Trace>,
    replication: usize,
    record_ttl: Duration,
    /// SHA-256 of each node's peer ID: its place in the key space.
    positions: Vec<[u8; 32]>,
    state: Mutex<DhtState>,
}

struct DhtState {
    /// Orders lookup answers (Kademlia returns providers as responses arrive).
    rng: ChaCha8Rng,
    /// key → provider → record.
    records: BTreeMap<Vec<u8>, BTreeMap<usize, Record>>,
    lookups: u64,
    records_lost: u64,
}

struct Record {
    expires: Instant,
    holders: BTreeSet<usize>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn distance(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

impl ModeledDht {
    pub fn new(
        fabric: Arc<Fabric>,
        peers: &[PeerId],
        replication: usize,
        record_ttl: Duration,
        seed: u64,
        trace: Arc<Trace>,
    ) -> Arc<ModeledDht> {
        let positions = peers.iter().map(|p| digest(p.as_bytes())).collect();
        let state = DhtState {
            rng: ChaCha8Rng::seed_from_u64(seed),
            records: BTreeMap::new(),
            lookups: 0,
            records_lost: 0,
        };
        Arc::new(ModeledDht { fabric, trace, replication, record_ttl, positions, state: Mutex::new(state) })
    }

    /// The discovery port of node `index`.
    pub fn view(self: &Arc<ModeledDht>, index: usize) -> Arc<DhtView> {
        Arc::new(DhtView { dht: self.clone(), index })
    }

    /// A node stopped: the records it held in memory are gone.
    pub fn node_stopped(&self, index: usize) {
        let mut state = self.state.lock().expect("dht lock");
        let mut lost = 0;
        for providers in state.records.values_mut() {
            providers.retain(|_, record| {
                record.holders.remove(&index);
                let keep = !record.holders.is_empty();
                lost += u64::from(!keep);
                keep
            });
        }
        state.records.retain(|_, providers| !providers.is_empty());
        state.records_lost += lost;
    }

    pub fn stats(&self) -> (u64, u64) {
        let state = self.state.lock().expect("dht lock");
        (state.lookups, state.records_lost)
    }

    fn live_nodes(&self) -> usize {
        (0..self.positions.len()).filter(|&i| self.fabric.is_alive(i)).count()
    }

    /// Sequential hops of a lookup among `live` nodes, each one mean round trip.
    fn lookup_cost(&self) -> Duration {
        let live = self.live_nodes().max(2) as f64;
        let hops = (live.log2() / 2.0).ceil().max(1.0);
        self.fabric.mean_rtt().mul_f64(hops)
    }

    /// The `replication` live nodes closest to `key` that `from` can reach (itself included).
    fn closest_reachable(&self, from: usize, key: &[u8]) -> BTreeSet<usize> {
        let target = digest(key);
        let mut live: Vec<usize> =
            (0..self.positions.len()).filter(|&i| i == from || self.fabric.reaches(from, i)).collect();
        live.sort_by_key(|&i| distance(&self.positions[i], &target));
        live.into_iter().take(self.replication).collect()
    }
}

/// One node's view of the modeled DHT.
pub struct DhtView {
    dht: Arc<ModeledDht>,
    index: usize,
}

#[async_trait]
impl Discovery for DhtView {
    async fn provide(&self, cid: Cid) -> Result<(), DiscoveryError> {
        // An empty routing table (no connection yet) has nobody to store the record on.
        if !self.dht.fabric.has_connections(self.index) {
            return Err(DiscoveryError::NoPeers);
        }
        tokio::time::sleep(self.dht.lookup_cost()).await;
        let key = cid.to_bytes();
        let holders = self.dht.closest_reachable(self.index, &key);
        let expires = Instant::now() + self.dht.record_ttl;
        self.dht.trace.record(format_args!("provide {} {}", self.index, holders.len()));
        let mut state = self.dht.state.lock().expect("dht lock");
        state.records.entry(key).or_default().insert(self.index, Record { expires, holders });
        Ok(())
    }

    async fn withdraw(&self, cid: Cid) {
        let mut state = self.dht.state.lock().expect("dht lock");
        if let Some(providers) = state.records.get_mut(&cid.to_bytes()) {
            providers.remove(&self.index);
        }
    }

    async fn find_providers(&self, cid: Cid, limit: usize) -> Result<Vec<PeerRecord>, DiscoveryError> {
        tokio::time::sleep(self.dht.lookup_cost()).await;
        let now = Instant::now();
        let fabric = &self.dht.fabric;
        let found: Vec<usize> = {
            let mut guard = self.dht.state.lock().expect("dht lock");
            let state = &mut *guard;
            state.lookups += 1;
            let Some(providers) = state.records.get_mut(&cid.to_bytes()) else { return Ok(Vec::new()) };
            providers.retain(|_, r| r.expires > now);
            let mut found: Vec<usize> = providers
                .iter()
                .filter(|(p, r)| {
                    **p != self.index
                        && r.holders.iter().any(|&h| h == self.index || fabric.reaches(self.index, h))
                })
                .map(|(p, _)| *p)
                .collect();
            found.shuffle(&mut state.rng);
            found.truncate(limit);
            found
        };
        self.dht.trace.record(format_args!("find_providers {} {}", self.index, found.len()));
        Ok(found.into_iter().map(|p| PeerRecord { peer: fabric.peer(p), addrs: Vec::new() }).collect())
    }

    async fn closest_peers(&self, key: &[u8], limit: usize) -> Result<Vec<PeerRecord>, DiscoveryError> {
        tokio::time::sleep(self.dht.lookup_cost()).await;
        let fabric = &self.dht.fabric;
        let target = digest(key);
        let mut reachable: Vec<usize> = (0..self.dht.positions.len())
            .filter(|&i| i != self.index && fabric.reaches(self.index, i))
            .collect();
        if reachable.is_empty() {
            return Err(DiscoveryError::NoPeers);
        }
        reachable.sort_by_key(|&i| distance(&self.dht.positions[i], &target));
        reachable.truncate(limit);
        Ok(reachable.into_iter().map(|p| PeerRecord { peer: fabric.peer(p), addrs: Vec::new() }).collect())
    }

    async fn find_peer(&self, peer: &PeerId) -> Result<Option<PeerRecord>, DiscoveryError> {
        tokio::time::sleep(self.dht.lookup_cost()).await;
        let fabric = &self.dht.fabric;
        let found = fabric.index_of(peer).filter(|&i| fabric.reaches(self.index, i));
        Ok(found.map(|_| PeerRecord { peer: peer.clone(), addrs: Vec::new() }))
    }
}
