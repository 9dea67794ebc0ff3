//! Crash torture: a real node killed with SIGKILL at random moments of a mixed workload
//! (uploads of many sizes, deletes, protects, fetches from a peer), again and again. After each
//! kill the store checker (`neverust check`) must find nothing wrong; after each restart every
//! acknowledged dataset is listed and reads back identical, nothing acknowledged deleted is
//! listed, and whatever else is listed is whole (an operation in flight at the kill may or may
//! not have happened, but never half).
//!
//! `NEVERUST_CRASH_KILLS` sets the number of kills (50 by default); `NEVERUST_CRASH_SEED` the
//! seed of the schedule and the workload.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Node, random};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the workload was told, and what it sent without an answer.
#[derive(Default)]
struct Ledger {
    /// Acknowledged datasets (upload 200, protect 201) and their content.
    stored: BTreeMap<String, Vec<u8>>,
    /// Acknowledged deletes.
    deleted: BTreeSet<String>,
    /// Deletes sent without an answer: the dataset may or may not be gone.
    deleting: BTreeSet<String>,
    /// Protected dataset → its source. Protecting a source again gives the same dataset, so a
    /// protect in flight may bring back one deleted before.
    protected_from: BTreeMap<String, String>,
    /// The SHA-256 of every content the node may hold: acknowledged, in flight at a kill, or
    /// fetched from the peer. A listed dataset must read back as one of them.
    possible: BTreeSet<[u8; 32]>,
}

fn digest(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs random operations against the node on `port` until `stop` (or the node dies).
fn workload(
    port: u16,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
    peer: Arc<Vec<(String, Vec<u8>)>>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let v1 = |path: &str| format!("http://127.0.0.1:{port}/api/archivist/v1{path}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let stored: Vec<(String, usize)> =
            ledger.lock().unwrap().stored.iter().map(|(c, d)| (c.clone(), d.len())).collect();
        let choice = rng.random_range(0..10);
        let outcome = if choice < 5 || stored.is_empty() {
            // Mostly several MiB, so that kills often land in an upload.
            let len = match rng.random_range(0..4) {
                0 => rng.random_range(1..4096),
                1 => rng.random_range(4096..300_000),
                _ => rng.random_range(2 << 20..8 << 20),
            };
            let data = random(len, rng.random());
            ledger.lock().unwrap().possible.insert(digest(&data));
            client.post(v1("/data")).body(data.clone()).send().map(|r| {
                if r.status() == 200 {
                    let cid = r.text().unwrap_or_default().trim().to_string();
                    if !cid.is_empty() {
                        let mut ledger = ledger.lock().unwrap();
                        ledger.deleted.remove(&cid);
                        ledger.stored.insert(cid, data);
                    }
                }
            })
        } else if choice < 7 || stored.len() > 12 {
            let (cid, _) = &stored[rng.random_range(0..stored.len())];
            ledger.lock().unwrap().deleting.insert(cid.clone());
            client.delete(v1(&format!("/data/{cid}"))).send().map(|r| {
                let mut ledger = ledger.lock().unwrap();
                ledger.deleting.remove(cid);
                if r.status() == 204 {
                    ledger.stored.remove(cid);
                    ledger.deleted.insert(cid.clone());
                }
            })
        } else if choice < 9 {
            let (cid, len) = &stored[rng.random_range(0..stored.len())];
            if *len < 4 * 65_536 {
                continue; // too small to give each of the two data slots two blocks
            }
            {
                let mut ledger = ledger.lock().unwrap();
                let again: Vec<String> =
                    ledger.protected_from.iter().filter(|(_, s)| *s == cid).map(|(p, _)| p.clone()).collect();
                for protected in again {
                    ledger.deleted.remove(&protected);
                }
            }
            client.post(v1(&format!("/data/{cid}/protect?k=2&m=1"))).send().map(|r| {
                if r.status() == 201 {
                    let item: serde_json::Value = r.json().unwrap_or_default();
                    let mut ledger = ledger.lock().unwrap();
                    // The source may be gone by now (deleted concurrently): keep what is known.
                    if let (Some(protected), Some(data)) =
                        (item["cid"].as_str(), ledger.stored.get(cid).cloned())
                    {
                        ledger.deleted.remove(protected);
                        ledger.stored.insert(protected.to_string(), data);
                        ledger.protected_from.insert(protected.to_string(), cid.clone());
                    }
                }
            })
        } else {
            let (cid, data) = &peer[rng.random_range(0..peer.len())];
            client.get(v1(&format!("/data/{cid}/network/stream"))).send().map(|r| {
                if r.status() == 200 {
                    if let Ok(body) = r.bytes() {
                        assert!(body == *data, "a fetch from the peer gave other bytes");
                    }
                }
            })
        };
        if outcome.is_err() {
            return; // the node is gone
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let kills = env_or("NEVERUST_CRASH_KILLS", 50);
    let seed = env_or("NEVERUST_CRASH_SEED", 1);
    let dir = tempfile::tempdir().unwrap();
    // Kill moments are wall-clock: a seed gives the same workload, not the same interleaving.
    eprintln!("crash torture: {kills} kills, NEVERUST_CRASH_SEED={seed}");

    // A peer that stays up, with datasets the tortured node fetches.
    let peer = Node::start(&dir.path().join("peer"), &[]);
    let peer_data: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            let data = random(200_000 + i * 70_000, 900 + i as u64);
            (peer.upload(&data), data)
        })
        .collect();
    let peer_data = Arc::new(peer_data);
    let bootstrap = peer.address();

    let data_dir = dir.path().join("tortured");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    ledger.lock().unwrap().possible.extend(peer_data.iter().map(|(_, d)| digest(d)));
    let mut schedule = ChaCha8Rng::seed_from_u64(seed);
    let mut killed_mid_upload = 0;
    for kill in 0..kills {
        let node = Node::start(&data_dir, &["--bootstrap-node", &bootstrap]);
        verify(&node, &mut ledger.lock().unwrap(), kill);

        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (ledger, peer, stop) = (ledger.clone(), peer_data.clone(), stop.clone());
            let (port, seed) = (node.api_port, seed * 1000 + kill);
            std::thread::spawn(move || workload(port, seed, ledger, peer, stop))
        };
        std::thread::sleep(Duration::from_millis(schedule.random_range(50..900)));
        // The checker runs on the store right after the kill (and must find nothing wrong).
        let report = node.kill9();
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("the workload thread");
        if !report.contains(" 0 interrupted uploads") {
            killed_mid_upload += 1;
        }
    }
    let node = Node::start(&data_dir, &["--bootstrap-node", &bootstrap]);
    verify(&node, &mut ledger.lock().unwrap(), kills);
    let ledger = ledger.lock().unwrap();
    eprintln!(
        "{kills} kills, {killed_mid_upload} of them mid-upload; {} datasets acknowledged and kept, {} deletes",
        ledger.stored.len(),
        ledger.deleted.len()
    );
    assert!(killed_mid_upload > 0, "no kill landed in an upload: the schedule exercises nothing");
}

/// The node's datasets against the ledger; deletes the kill left unanswered are settled by
/// what the node lists.
fn verify(node: &Node, ledger: &mut Ledger, kill: u64) {
    let listed: BTreeSet<String> = node.json("/data")["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["cid"].as_str().unwrap().to_string())
        .collect();
    for cid in std::mem::take(&mut ledger.deleting) {
        if !listed.contains(&cid) {
            ledger.stored.remove(&cid);
            ledger.deleted.insert(cid);
        }
    }
    for (cid, data) in &ledger.stored {
        assert!(listed.contains(cid), "after kill {kill}: acknowledged {cid} is not listed");
        assert!(node.download(cid) == *data, "after kill {kill}: {cid} reads back other bytes");
    }
    for cid in &ledger.deleted {
        assert!(!listed.contains(cid), "after kill {kill}: deleted {cid} is listed");
    }
    for cid in listed.difference(&ledger.stored.keys().cloned().collect()) {
        let data = node.download(cid);
        assert!(
            ledger.possible.contains(&digest(&data)),
            "after kill {kill}: {cid} is listed but is not whole ({} bytes)",
            data.len()
        );
    }
}
