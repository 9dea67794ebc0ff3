//! Erasure-coded datasets across real node processes on loopback: slots placed on distinct
//! hosts, a download that survives two dead hosts, and repair onto spare nodes.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Node, random};
use serde_json::Value;

/// Checks every 2 s, repairs a slot missing for 3 s: a cluster that heals within the test.
const FAST_REPAIR: [&str; 4] = ["--repair-check-interval", "2", "--repair-after", "3"];

fn start(dir: &std::path::Path, name: &str, bootstrap: &[String]) -> Node {
    let mut args: Vec<&str> = FAST_REPAIR.to_vec();
    for address in bootstrap {
        args.extend(["--bootstrap-node", address]);
    }
    Node::start(&dir.join(name), &args)
}

/// Polls `condition` every 100 ms for up to `secs` seconds.
fn wait_within(secs: u64, mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The slots of `manifest` a node holds.
fn slots(node: &Node, manifest: &str) -> Vec<u64> {
    let held: Value = node.json("/slots");
    held["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["manifest"] == manifest)
        .map(|s| s["slot"].as_u64().unwrap())
        .collect()
}

#[test]
fn slots_survive_two_dead_hosts_and_are_repaired_onto_spares() {
    let dir = tempfile::tempdir().unwrap();
    let uploader = start(dir.path(), "uploader", &[]);
    let hub = vec![uploader.address()];
    let mut hosts: Vec<Option<Node>> =
        (1..=5).map(|i| Some(start(dir.path(), &format!("host{i}"), &hub))).collect();
    wait_within(20, || uploader.metric("peer_count") == 5, "five hosts connected");

    // Protect K=3, M=2: the uploader places one slot on each of its five peers.
    let data = random(3 * 1024 * 1024 + 12_345, 51);
    let original = uploader.upload(&data);
    let response = reqwest::blocking::Client::new()
        .post(uploader.v1(&format!("/data/{original}/protect?k=3&m=2")))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let protected = response.json::<Value>().unwrap()["cid"].as_str().unwrap().to_owned();
    wait_within(
        60,
        || hosts.iter().flatten().all(|h| slots(h, &protected).len() == 1),
        "every host holding one slot",
    );
    let placed: BTreeSet<u64> = hosts.iter().flatten().flat_map(|h| slots(h, &protected)).collect();
    assert_eq!(placed, (0..5).collect(), "five distinct slots on five hosts");

    // The uploader keeps nothing: from now on the slots are the only copies.
    uploader.delete(&protected);
    uploader.delete(&original);

    // Two spares join, knowing every node of the cluster.
    let everyone: Vec<String> =
        std::iter::once(uploader.address()).chain(hosts.iter().flatten().map(Node::address)).collect();
    let spares = [start(dir.path(), "spare1", &everyone), start(dir.path(), "spare2", &everyone)];
    wait_within(20, || spares.iter().all(|s| s.metric("peer_count") >= 6), "spares connected to the cluster");

    // Two hosts die, one holding a data slot and one holding a parity slot.
    let host_of = |slot: u64| {
        hosts.iter().position(|h| h.as_ref().is_some_and(|h| slots(h, &protected) == [slot])).unwrap()
    };
    let (data_host, parity_host) = (host_of(0), host_of(4));
    let lost: BTreeSet<u64> = [0, 4].into();
    hosts[data_host].take().unwrap().kill9();
    hosts[parity_host].take().unwrap().kill9();

    // The download still returns identical bytes: slot 0's blocks are rebuilt from columns.
    assert_eq!(uploader.stream_from_network(&protected), data);
    assert!(uploader.metric("blocks_recovered_total") > 0, "slot 0 was rebuilt, not fetched");
    // The fetched copy is committed just after the last byte is streamed: wait for it, drop it.
    wait_within(20, || uploader.lists(&protected), "the downloaded copy to be listed");
    uploader.delete(&protected);

    // Repair: the lost slots are rebuilt from the three live ones, onto the two spares.
    wait_within(
        90,
        || spares.iter().all(|s| slots(s, &protected).len() == 1),
        "each spare holding a rebuilt slot",
    );
    let on_spares: BTreeSet<u64> = spares.iter().flat_map(|s| slots(s, &protected)).collect();
    assert_eq!(on_spares, lost, "the spares hold exactly the lost slots");
    let live: BTreeSet<u64> =
        hosts.iter().flatten().chain(&spares).flat_map(|h| slots(h, &protected)).collect();
    assert_eq!(live, (0..5).collect(), "back to five live slots");
    let repaired: u64 = hosts.iter().flatten().map(|h| h.metric("repairs_completed_total")).sum::<u64>();
    assert!(repaired >= 2, "the live hosts repaired the two slots");

    // The rebuilt slots serve real data: a fresh download needs no rebuilding.
    let recovered_before = uploader.metric("blocks_recovered_total");
    assert_eq!(uploader.stream_from_network(&protected), data);
    assert_eq!(uploader.metric("blocks_recovered_total"), recovered_before);
}
