//! The engine driven by a tiny deterministic harness: engines exchange messages in memory,
//! each node answers requests from a map of the blocks it holds, and time is virtual.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::content::{Block, tree_cid};
use crate::merkle::MerkleTree;

/// What a node holds: address → (cid, data, proof).
type Holdings = BTreeMap<BlockAddress, (Cid, Bytes, Option<MerkleProof>)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Flips a byte of every block it sends.
    Corrupting,
    /// Never answers.
    Silent,
}

struct Node {
    engine: Engine,
    holdings: Holdings,
    behaviour: Behaviour,
    received: Vec<Event>,
}

struct Harness {
    nodes: BTreeMap<PeerId, Node>,
    now: Instant,
    /// Links cut by `disconnect`.
    cut: Vec<(PeerId, PeerId)>,
}

fn peer(name: &str) -> PeerId {
    PeerId::from_bytes(name.as_bytes().to_vec())
}

fn dataset(blocks_count: u8) -> (Cid, Holdings) {
    let blocks: Vec<Block> = (0..blocks_count).map(|i| Block::new(Bytes::from(vec![i; 64]))).collect();
    let tree = MerkleTree::build(blocks.iter().map(|b| *b.digest()).collect()).unwrap();
    let root = tree_cid(&tree.root());
    let holdings = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let address = BlockAddress::Leaf { tree: root, index: i as u64 };
            (address, (*b.cid(), b.data().clone(), Some(tree.proof(i as u64))))
        })
        .collect();
    (root, holdings)
}

impl Harness {
    fn new(config: EngineConfig, nodes: Vec<(&str, Holdings, Behaviour)>) -> Harness {
        let names: Vec<PeerId> = nodes.iter().map(|(n, _, _)| peer(n)).collect();
        let nodes = nodes
            .into_iter()
            .map(|(name, holdings, behaviour)| {
                let mut engine = Engine::new(config.clone());
                for other in &names {
                    if other != &peer(name) {
                        engine.handle_connected(other.clone());
                    }
                }
                (peer(name), Node { engine, holdings, behaviour, received: Vec::new() })
            })
            .collect();
        Harness { nodes, now: Instant::now(), cut: Vec::new() }
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.get_mut(&peer(name)).expect("known node")
    }

    fn disconnect(&mut self, a: &str, b: &str) {
        let now = self.now;
        self.node(a).engine.handle_disconnected(now, &peer(b));
        self.node(b).engine.handle_disconnected(now, &peer(a));
        self.cut.push((peer(a), peer(b)));
        self.cut.push((peer(b), peer(a)));
    }

    /// Runs until nothing moves; advances virtual time to the next timeout when idle.
    /// Bounded, so a livelock fails the test instead of hanging it.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            if self.step() {
                continue;
            }
            let next = self.nodes.values().filter_map(|n| n.engine.poll_timeout()).min();
            match next {
                Some(at) => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    for node in self.nodes.values_mut() {
                        node.engine.handle_timeout(now);
                    }
                }
                None => return,
            }
        }
        panic!("the exchange did not settle");
    }

    /// One round: answer requests, deliver messages. `false` when nothing happened.
    fn step(&mut self) -> bool {
        let mut moved = false;
        let names: Vec<PeerId> = self.nodes.keys().cloned().collect();
        for name in &names {
            let node = self.nodes.get_mut(name).unwrap();
            while let Some(event) = node.engine.poll_event() {
                moved = true;
                match event {
                    Event::Requested { peer, address, .. } => {
                        let answer = match (node.behaviour, node.holdings.get(&address)) {
                            (Behaviour::Silent, _) => continue,
                            (_, None) => Answer::DontHave,
                            (Behaviour::Honest, Some((cid, data, proof))) => {
                                Answer::Block { cid: *cid, data: data.clone(), proof: proof.clone() }
                            }
                            (Behaviour::Corrupting, Some((cid, data, proof))) => {
                                let mut bad = data.to_vec();
                                bad[0] ^= 0xff;
                                Answer::Block { cid: *cid, data: Bytes::from(bad), proof: proof.clone() }
                            }
                        };
                        node.engine.serve(&peer, address, answer);
                    }
                    other => node.received.push(other),
                }
            }
            let mut outgoing = Vec::new();
            while let Some((to, message)) = node.engine.poll_transmit() {
                // Every message crosses the wire codec, as it would on a socket.
                let decoded =
                    Message::decode(&Bytes::from(message.encode())).expect("engine sends valid messages");
                outgoing.push((to, decoded));
            }
            for (to, message) in outgoing {
                moved = true;
                if self.cut.contains(&(name.clone(), to.clone())) {
                    continue;
                }
                let now = self.now;
                if let Some(target) = self.nodes.get_mut(&to) {
                    target.engine.handle_message(now, name, message);
                }
            }
            for node in self.nodes.values() {
                for p in node.engine.peers.keys() {
                    assert!(
                        node.engine.inflight_at(p) <= node.engine.config.inflight_per_peer_max,
                        "window exceeded"
                    );
                }
            }
        }
        moved
    }

    fn want_all(&mut self, who: &str, holdings: &Holdings, providers: &[&str]) {
        let now = self.now;
        let providers: Vec<PeerId> = providers.iter().map(|p| peer(p)).collect();
        for address in holdings.keys() {
            self.node(who).engine.want(now, address.clone(), providers.clone());
        }
    }

    /// The verified blocks `who` received, by address.
    fn received(&self, who: &str) -> BTreeMap<BlockAddress, (Bytes, PeerId)> {
        self.nodes[&peer(who)]
            .received
            .iter()
            .filter_map(|e| match e {
                Event::Received { address, data, from, .. } => {
                    Some((address.clone(), (data.clone(), from.clone())))
                }
                _ => None,
            })
            .collect()
    }

    fn events(&self, who: &str) -> &[Event] {
        &self.nodes[&peer(who)].received
    }
}

/// A harness with an empty client "a" and the given providers, under `config()`.
fn client_with(providers: Vec<(&str, Holdings, Behaviour)>) -> Harness {
    let mut nodes = vec![("a", Holdings::new(), Behaviour::Honest)];
    nodes.extend(providers);
    Harness::new(config(), nodes)
}

fn config() -> EngineConfig {
    EngineConfig { want_timeout: Duration::from_secs(5), inflight_per_peer_max: 4, ..Default::default() }
}

fn assert_complete(h: &Harness, who: &str, holdings: &Holdings) {
    let received = h.received(who);
    assert_eq!(received.len(), holdings.len(), "every block arrived");
    for (address, (data, _)) in &received {
        assert_eq!(data, &holdings[address].1, "{address:?} carries the right bytes");
    }
}

#[test]
fn fetches_a_dataset_from_one_provider_within_the_window() {
    let (_, holdings) = dataset(40);
    let mut h = client_with(vec![("b", holdings.clone(), Behaviour::Honest)]);
    h.want_all("a", &holdings, &["b"]);
    assert_eq!(h.node("a").engine.inflight_at(&peer("b")), 4, "only a window's worth asked at once");
    h.drive();
    assert_complete(&h, "a", &holdings);
    assert_eq!(h.node("a").engine.wants_count(), 0);
    assert_eq!(h.node("a").engine.score(&peer("b")), Some(40));
}

#[test]
fn spreads_wants_over_providers() {
    let (_, holdings) = dataset(24);
    let mut h = client_with(vec![
        ("b", holdings.clone(), Behaviour::Honest),
        ("c", holdings.clone(), Behaviour::Honest),
    ]);
    h.want_all("a", &holdings, &["b", "c"]);
    h.drive();
    assert_complete(&h, "a", &holdings);
    let from_b = h.received("a").values().filter(|(_, from)| from == &peer("b")).count();
    assert!((8..=16).contains(&from_b), "both providers served: {from_b} of 24 from b");
}

#[test]
fn corrupt_blocks_are_never_accepted_and_the_liar_is_dropped() {
    let (_, holdings) = dataset(30);
    let mut h = client_with(vec![
        ("liar", holdings.clone(), Behaviour::Corrupting),
        ("b", holdings.clone(), Behaviour::Honest),
    ]);
    h.want_all("a", &holdings, &["liar", "b"]);
    h.drive();
    assert_complete(&h, "a", &holdings);
    assert!(h.received("a").values().all(|(_, from)| from == &peer("b")), "nothing accepted from the liar");
    assert!(
        h.events("a")
            .contains(&Event::Disconnect { peer: peer("liar"), reason: "sent a block that does not verify" })
    );
    assert!(h.node("a").engine.score(&peer("liar")).unwrap() < -100);
}

#[test]
fn a_provider_leaving_mid_transfer_does_not_fail_the_download() {
    let (_, holdings) = dataset(40);
    let mut h = client_with(vec![
        ("b", holdings.clone(), Behaviour::Honest),
        ("c", holdings.clone(), Behaviour::Honest),
    ]);
    h.want_all("a", &holdings, &["b", "c"]);
    for _ in 0..3 {
        h.step();
    }
    let before = h.received("a").len();
    assert!(before > 0 && before < 40, "mid-transfer: {before}");
    h.disconnect("a", "b");
    h.drive();
    assert_complete(&h, "a", &holdings);
}

#[test]
fn a_silent_provider_times_out_and_the_want_moves_on() {
    let (_, holdings) = dataset(6);
    let mut h = client_with(vec![
        ("mute", holdings.clone(), Behaviour::Silent),
        ("b", holdings.clone(), Behaviour::Honest),
    ]);
    let start = h.now;
    h.want_all("a", &holdings, &["mute", "b"]);
    h.drive();
    assert_complete(&h, "a", &holdings);
    assert!(h.now >= start + Duration::from_secs(5), "waited for the timeout");
    assert!(h.node("a").engine.score(&peer("mute")).unwrap() < 0);
}

#[test]
fn missing_everywhere_is_reported_unavailable() {
    let (_, holdings) = dataset(3);
    let mut h = client_with(vec![("b", Holdings::new(), Behaviour::Honest)]);
    h.want_all("a", &holdings, &["b"]);
    h.drive();
    assert!(h.received("a").is_empty());
    let unavailable = h.events("a").iter().filter(|e| matches!(e, Event::Unavailable { .. })).count();
    assert_eq!(unavailable, 3);
    assert_eq!(h.node("a").engine.wants_count(), 0);
    assert_eq!(h.node("a").engine.score(&peer("b")), Some(0), "saying DontHave is not misbehaviour");
}

#[test]
fn unsolicited_blocks_are_ignored_and_penalised() {
    let (_, holdings) = dataset(2);
    let mut engine = Engine::new(config());
    let now = Instant::now();
    let pushy = peer("pushy");
    engine.handle_connected(pushy.clone());
    let (address, (cid, data, proof)) = holdings.into_iter().next().unwrap();
    let message =
        Message { payload: vec![BlockDelivery { cid, data, address, proof }], ..Default::default() };
    engine.handle_message(now, &pushy, message);
    assert_eq!(engine.poll_event(), None, "nothing we did not want is passed on");
    assert_eq!(engine.score(&pushy), Some(SCORE_UNSOLICITED));
}

#[test]
fn wants_beyond_the_limit_are_flooding() {
    let mut engine = Engine::new(EngineConfig { peer_wants_max: 10, ..config() });
    let flooder = peer("flooder");
    engine.handle_connected(flooder.clone());
    let entries = (0..50)
        .map(|i| WantEntry {
            address: BlockAddress::Leaf { tree: tree_cid(&[1; 32]), index: i },
            priority: 1,
            cancel: false,
            want_type: WantType::Block,
            send_dont_have: true,
        })
        .collect();
    let message =
        Message { want_list: super::super::wire::WantList { entries, full: false }, ..Default::default() };
    engine.handle_message(Instant::now(), &flooder, message);
    let requested =
        std::iter::from_fn(|| engine.poll_event()).filter(|e| matches!(e, Event::Requested { .. })).count();
    assert_eq!(requested, 10, "requests past the limit are not passed on");
    assert_eq!(engine.score(&flooder), Some(SCORE_FLOOD));
}
