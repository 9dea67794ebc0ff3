//! Real node processes on loopback finding and pinging each other over libp2p.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Node, free_port, random, wait_for};
use serde_json::Value;

/// A node named `name` under `dir`, bootstrapping from `bootstrap` if given.
fn node(dir: &Path, name: &str, bootstrap: Option<&str>) -> Node {
    match bootstrap {
        Some(address) => Node::start(&dir.join(name), &["--bootstrap-node", address]),
        None => Node::start(&dir.join(name), &[]),
    }
}

/// Node 1, the bootstrap node, and nodes 2 to 4 bootstrapping from it.
fn bootstrap_and_three(dir: &Path) -> [Node; 4] {
    let n1 = node(dir, "n1", None);
    let address = n1.address();
    let [n2, n3, n4] = ["n2", "n3", "n4"].map(|name| node(dir, name, Some(&address)));
    [n1, n2, n3, n4]
}

fn info(node: &Node) -> Value {
    node.json("/debug/info")
}

fn stream_from_network(node: &Node, cid: &str) -> Vec<u8> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let response = client.get(node.v1(&format!("/data/{cid}/network/stream"))).send().unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().unwrap().to_vec()
}

#[test]
fn two_nodes_connect_through_a_bootstrap_address_and_ping() {
    let dir = tempfile::tempdir().unwrap();
    let first = node(dir.path(), "first", None);
    let second = node(dir.path(), "second", Some(&first.address()));
    wait_for(|| first.metric("peer_count") == 1 && second.metric("peer_count") == 1, "both sides connected");
    assert_eq!(second.peers(), vec![first.peer_id()]);
    assert_eq!(first.peers(), vec![second.peer_id()]);
    // Ping measures a round trip on the connection.
    wait_for(
        || info(&second)["table"]["nodes"][0]["rttMs"].as_f64().is_some_and(|ms| ms > 0.0),
        "a ping round trip",
    );
    let addrs = info(&second)["addrs"].as_array().unwrap().clone();
    assert_eq!(addrs.len(), 1);
    assert!(addrs[0].as_str().unwrap().ends_with(&second.peer_id()), "{addrs:?}");
}

#[test]
fn five_nodes_share_one_bootstrap_node() {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = node(dir.path(), "n1", None);
    let address = bootstrap.address();
    let others: Vec<Node> = (2..=5).map(|i| node(dir.path(), &format!("n{i}"), Some(&address))).collect();
    wait_for(|| bootstrap.metric("peer_count") == 4, "the bootstrap node sees all four");
    for node in &others {
        assert!(node.peers().contains(&bootstrap.peer_id()));
    }
}

#[test]
fn connect_route_dials_a_peer_by_address() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "a", None);
    let b = node(dir.path(), "b", None);
    assert_eq!(a.metric("peer_count"), 0);
    let url =
        a.url(&format!("/api/archivist/v1/connect/{}?addrs=/ip4/127.0.0.1/tcp/{}", b.peer_id(), b.p2p_port));
    let response = reqwest::blocking::get(url).unwrap();
    assert!(response.status().is_success(), "{}", response.text().unwrap());
    wait_for(|| a.metric("peer_count") == 1 && b.metric("peer_count") == 1, "connected");

    let bad = reqwest::blocking::get(a.url("/api/archivist/v1/connect/not-a-peer")).unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    // A peer that is not listening where we say: a clear error, not a hang.
    let absent =
        format!("/api/archivist/v1/connect/{}?addrs=/ip4/127.0.0.1/tcp/{}", b.peer_id(), free_port());
    let response = reqwest::blocking::get(a.url(&absent)).unwrap();
    assert!(response.status().is_success(), "already connected to b: dialling again is a no-op");
}

#[test]
fn a_dataset_moves_between_nodes_by_dht_discovery_only() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = node(dir.path(), "n1", None);
    let address = n1.address();
    let nodes: Vec<Node> = (2..=5).map(|i| node(dir.path(), &format!("n{i}"), Some(&address))).collect();
    let (n2, n4, n5) = (&nodes[0], &nodes[2], &nodes[3]);
    let data = random(5 * 1024 * 1024 + 99, 21);
    let cid = n2.upload(&data);
    // The manifest is found without storing the dataset.
    let item: Value =
        reqwest::blocking::get(n4.v1(&format!("/data/{cid}/network/manifest"))).unwrap().json().unwrap();
    assert_eq!(item["manifest"]["datasetSize"], data.len());
    assert!(!n4.lists(&cid));
    // Node 5 never dialled node 2 by hand: it finds it as a provider in the DHT.
    assert_eq!(stream_from_network(n5, &cid), data);
    wait_for(|| n5.lists(&cid), "node 5 keeps the dataset");
    let blocks = data.len().div_ceil(65_536) as u64;
    // Every leaf, plus the manifest.
    assert_eq!(n5.metric("blocks_received_total"), blocks + 1);
    assert!(n2.metric("blocks_sent_total") > blocks);
    assert_eq!(n5.metric("want_list_size"), 0);
    let local = reqwest::blocking::get(n5.v1(&format!("/data/{cid}"))).unwrap().bytes().unwrap();
    assert_eq!(local.as_ref(), data.as_slice());
}

#[test]
fn a_download_survives_the_first_provider_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let [_n1, n2, n3, n4] = bootstrap_and_three(dir.path());
    let data = random(3 * 1024 * 1024, 22);
    let cid = n2.upload(&data);
    // Node 3 copies the dataset in the background, becoming a second provider.
    let fetch = reqwest::blocking::Client::new().post(n3.v1(&format!("/data/{cid}/network"))).send().unwrap();
    assert!(fetch.status().is_success());
    wait_for(|| n3.lists(&cid), "node 3 holds a copy");
    drop(n2); // the original uploader leaves
    assert_eq!(stream_from_network(&n4, &cid), data);
}

#[test]
fn unknown_content_is_a_clear_404() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = node(dir.path(), "n1", None);
    let n2 = node(dir.path(), "n2", Some(&n1.address()));
    wait_for(|| n2.metric("peer_count") == 1, "connected");
    let missing = "zDvZRwzm1NupFAhAYJoPbRHFzhteH6omdGWzY2Ppw881VkWtjYYM";
    let response = reqwest::blocking::get(n2.v1(&format!("/data/{missing}/network/stream"))).unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("no peer provides"), "{body}");
    let not_manifest = reqwest::blocking::get(
        n2.v1("/data/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi/network/stream"),
    )
    .unwrap();
    assert_eq!(not_manifest.status().as_u16(), 400);
}

#[test]
fn a_provider_killed_mid_download_does_not_fail_it() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let [_n1, n2, n3, n4] = bootstrap_and_three(dir.path());
    // The same bytes uploaded on two nodes give the same dataset: two providers.
    let data = random(48 << 20, 23);
    let cid = n2.upload(&data);
    assert_eq!(n3.upload(&data), cid);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let mut response = client.get(n4.v1(&format!("/data/{cid}/network/stream"))).send().unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut received = vec![0u8; 4 << 20];
    response.read_exact(&mut received).unwrap();
    // The reader holds back the fetch (a bounded window ahead of it): most of the dataset
    // is still to come when one provider dies.
    wait_for(|| n2.metric("blocks_sent_total") > 0, "node 2 serving blocks");
    n2.kill9();
    response.read_to_end(&mut received).unwrap();
    assert_eq!(received.len(), data.len());
    assert!(received == data, "the bytes differ");
    assert!(n3.metric("blocks_sent_total") > 0);
}

/// A node whose listen addresses cannot be dialled (it announces none of them) reaches the
/// network through a relay: it holds a reservation on the bootstrap node, announces the
/// circuit, and serves a dataset that another node finds by DHT discovery alone.
#[test]
fn a_node_reachable_only_through_a_relay_serves_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    // A relay grants reservations only once an address of its own is confirmed reachable:
    // this one announces the port it listens on.
    let port = free_port();
    let relay_listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let n1 = Node::start(
        &dir.path().join("n1"),
        &["--listen-addrs", &relay_listen, "--announce-addrs", &relay_listen],
    );
    let relay = format!("{relay_listen}/p2p/{}", n1.peer_id());
    let circuit = format!("{relay}/p2p-circuit");
    let hidden = Node::start(
        &dir.path().join("n2"),
        &["--bootstrap-node", &relay, "--relay-node", &relay, "--announce-addrs", &circuit],
    );
    wait_for(|| info(&hidden)["reachability"]["relays"][0] == n1.peer_id(), "a relay reservation");
    let record = reqwest::blocking::get(hidden.v1("/spr")).unwrap().text().unwrap();
    let (peer, announced) = neverust::net::p2p::decode_signed_peer_record(&record).unwrap();
    assert_eq!(peer.to_string(), hidden.peer_id());
    assert!(!announced.is_empty() && announced.iter().all(|a| a.starts_with(&circuit)), "{announced:?}");
    assert_eq!(info(&hidden)["spr"], record.as_str());

    let data = random(5 << 20, 24);
    let cid = hidden.upload(&data);
    let n3 = node(dir.path(), "n3", Some(&relay));
    assert_eq!(stream_from_network(&n3, &cid), data);
}
