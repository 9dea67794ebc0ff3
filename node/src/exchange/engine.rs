//! The block-exchange engine: a sans-I/O state machine.
//!
//! The engine owns protocol state only: what we want and from whom, what peers want from us,
//! and how much we trust each peer. It never touches sockets, clocks or the store. Its driver
//! (production or simulator) feeds it and drains it:
//!
//! - **inputs**: [`Engine::handle_connected`], [`Engine::handle_disconnected`],
//!   [`Engine::handle_message`], [`Engine::handle_timeout`], [`Engine::want`],
//!   [`Engine::cancel`], and [`Engine::serve`] (the answer to an [`Event::Requested`]);
//! - **outputs**, drained after every input: [`Engine::poll_transmit`] (messages to send),
//!   [`Engine::poll_event`] (verified blocks, requests to answer, peers to drop), and
//!   [`Engine::poll_timeout`] (when to call `handle_timeout` next).
//!
//! Every delivery is verified before it becomes an [`Event::Received`]: a leaf against the
//! tree root named by its address (block hash and Merkle proof), a plain block against its
//! CID. A peer that sends wrong data, stays silent past the timeout, or floods us loses score;
//! below [`EngineConfig::score_disconnect_below`] the engine asks the driver to disconnect it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::wire::{BlockAddress, BlockDelivery, BlockPresence, Message, Presence, WantEntry, WantType};
use crate::content::{Cid, digest_of};
use crate::merkle::MerkleProof;
use crate::net::PeerId;

/// Limits and policy of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How long a peer may take to answer a want before it is asked elsewhere.
    pub want_timeout: Duration,
    /// Wants outstanding at one peer at once (the download window per provider).
    pub inflight_per_peer_max: usize,
    /// Wants a peer may hold at us at once; more is flooding.
    pub peer_wants_max: usize,
    /// Score below which a peer is disconnected.
    pub score_disconnect_below: i32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            want_timeout: Duration::from_secs(10),
            inflight_per_peer_max: 32,
            peer_wants_max: 4096,
            score_disconnect_below: -100,
        }
    }
}

/// Score changes.
const SCORE_GOOD_BLOCK: i32 = 1;
const SCORE_MAX: i32 = 100;
const SCORE_BAD_BLOCK: i32 = -50;
const SCORE_TIMEOUT: i32 = -10;
const SCORE_UNSOLICITED: i32 = -5;
const SCORE_FLOOD: i32 = -25;

/// What the engine tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A wanted block arrived and verified. `proof` is set for leaf addresses.
    Received { address: BlockAddress, cid: Cid, data: Bytes, proof: Option<MerkleProof>, from: PeerId },
    /// A peer wants a block: look it up and answer with [`Engine::serve`].
    Requested { peer: PeerId, address: BlockAddress, want_type: WantType },
    /// Every known provider of a want failed or lacks it; add providers with [`Engine::want`].
    Unavailable { address: BlockAddress },
    /// The peer misbehaved past the limit: disconnect it.
    Disconnect { peer: PeerId, reason: &'static str },
}

/// The driver's answer to [`Event::Requested`].
#[derive(Clone, Debug)]
pub enum Answer {
    Block { cid: Cid, data: Bytes, proof: Option<MerkleProof> },
    Have,
    DontHave,
}

#[derive(Debug, Default)]
struct Peer {
    score: i32,
    /// Our wants outstanding at this peer.
    inflight: BTreeSet<BlockAddress>,
    /// Their wants at us that asked for a `DontHave` answer, by address.
    wants: BTreeMap<BlockAddress, bool>,
}

#[derive(Debug)]
struct Want {
    providers: BTreeSet<PeerId>,
    /// Providers that failed this want (missing, wrong data, timeout).
    failed: BTreeSet<PeerId>,
    asked: Option<(PeerId, Instant)>,
}

/// The block-exchange state machine. See the module documentation for the driver contract.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    peers: BTreeMap<PeerId, Peer>,
    wants: BTreeMap<BlockAddress, Want>,
    /// Wants waiting for a provider with a free slot.
    queued: VecDeque<BlockAddress>,
    outbox: BTreeMap<PeerId, Message>,
    events: VecDeque<Event>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            peers: BTreeMap::new(),
            wants: BTreeMap::new(),
            queued: VecDeque::new(),
            outbox: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    // ---- getters ----

    pub fn score(&self, peer: &PeerId) -> Option<i32> {
        self.peers.get(peer).map(|p| p.score)
    }

    /// Scores of the peers the engine knows.
    pub fn scores(&self) -> impl Iterator<Item = (&PeerId, i32)> {
        self.peers.iter().map(|(peer, state)| (peer, state.score))
    }

    /// Our outstanding wants.
    pub fn wants_count(&self) -> usize {
        self.wants.len()
    }

    pub fn inflight_at(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.inflight.len())
    }

    // ---- inputs ----

    pub fn handle_connected(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_default();
    }

    /// Forgets the peer; its outstanding wants are asked elsewhere.
    pub fn handle_disconnected(&mut self, now: Instant, peer: &PeerId) {
        let Some(state) = self.peers.remove(peer) else { return };
        self.outbox.remove(peer);
        for address in state.inflight {
            if let Some(want) = self.wants.get_mut(&address) {
                want.asked = None;
                want.failed.insert(peer.clone());
                self.queued.push_back(address);
            }
        }
        self.route(now);
    }

    /// Adds a want (or more providers for an existing one) and routes it.
    pub fn want(&mut self, now: Instant, address: BlockAddress, providers: impl IntoIterator<Item = PeerId>) {
        let want = self.wants.entry(address.clone()).or_insert_with(|| Want {
            providers: BTreeSet::new(),
            failed: BTreeSet::new(),
            asked: None,
        });
        for provider in providers {
            want.failed.remove(&provider);
            want.providers.insert(provider);
        }
        if want.asked.is_none() {
            self.queued.push_back(address); // a duplicate in the queue is skipped by `route`
        }
        self.route(now);
    }

    /// Drops a want (the block came another way, or the download was abandoned).
    pub fn cancel(&mut self, address: &BlockAddress) {
        if let Some(want) = self.wants.remove(address)
            && let Some((peer, _)) = want.asked
        {
            if let Some(state) = self.peers.get_mut(&peer) {
                state.inflight.remove(address);
            }
            self.message_to(&peer).want_list.entries.push(WantEntry {
                address: address.clone(),
                priority: 0,
                cancel: true,
                want_type: WantType::Block,
                send_dont_have: false,
            });
        }
    }

    pub fn handle_message(&mut self, now: Instant, from: &PeerId, message: Message) {
        self.peers.entry(from.clone()).or_default();
        self.take_want_list(from, message.want_list.entries);
        for delivery in message.payload {
            self.take_delivery(from, delivery);
        }
        for presence in message.presences {
            self.take_presence(from, presence);
        }
        self.route(now);
    }

    /// Re-asks wants whose peer did not answer in time, penalising that peer.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<(BlockAddress, PeerId)> = self
            .wants
            .iter()
            .filter_map(|(address, want)| match &want.asked {
                Some((peer, at)) if now.saturating_duration_since(*at) >= self.config.want_timeout => {
                    Some((address.clone(), peer.clone()))
                }
                _ => None,
            })
            .collect();
        for (address, peer) in expired {
            self.fail(&address, &peer);
            self.penalise(&peer, SCORE_TIMEOUT, "timed out");
        }
        self.route(now);
    }

    /// Answers a peer's request (after [`Event::Requested`]).
    pub fn serve(&mut self, peer: &PeerId, address: BlockAddress, answer: Answer) {
        let Some(state) = self.peers.get_mut(peer) else { return }; // gone meanwhile
        let Some(send_dont_have) = state.wants.remove(&address) else { return }; // cancelled meanwhile
        let message = self.message_to(peer);
        match answer {
            Answer::Block { cid, data, proof } => {
                message.payload.push(BlockDelivery { cid, data, address, proof });
            }
            Answer::Have => message.presences.push(BlockPresence { address, presence: Presence::Have }),
            Answer::DontHave if send_dont_have => {
                message.presences.push(BlockPresence { address, presence: Presence::DontHave })
            }
            Answer::DontHave => {}
        }
    }

    // ---- outputs ----

    pub fn poll_transmit(&mut self) -> Option<(PeerId, Message)> {
        self.outbox.pop_first()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest moment a want can time out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wants
            .values()
            .filter_map(|w| w.asked.as_ref().map(|(_, at)| *at + self.config.want_timeout))
            .min()
    }

    // ---- internals ----

    fn message_to(&mut self, peer: &PeerId) -> &mut Message {
        self.outbox.entry(peer.clone()).or_default()
    }

    fn take_want_list(&mut self, from: &PeerId, entries: Vec<WantEntry>) {
        for entry in entries {
            let state = self.peers.get_mut(from).expect("peer registered");
            if entry.cancel {
                state.wants.remove(&entry.address);
                continue;
            }
            if state.wants.len() >= self.config.peer_wants_max {
                self.penalise(from, SCORE_FLOOD, "flooded us with wants");
                return;
            }
            state.wants.insert(entry.address.clone(), entry.send_dont_have);
            self.events.push_back(Event::Requested {
                peer: from.clone(),
                address: entry.address,
                want_type: entry.want_type,
            });
        }
    }

    fn take_delivery(&mut self, from: &PeerId, delivery: BlockDelivery) {
        let asked_here =
            self.wants.get(&delivery.address).and_then(|w| w.asked.as_ref()).is_some_and(|(p, _)| p == from);
        if !asked_here {
            // Not wanted, or wanted from someone else (a late answer after a timeout).
            return self.penalise(from, SCORE_UNSOLICITED, "sent a block we did not ask it for");
        }
        if !verify(&delivery) {
            self.fail(&delivery.address, from);
            return self.penalise(from, SCORE_BAD_BLOCK, "sent a block that does not verify");
        }
        let state = self.peers.get_mut(from).expect("peer registered");
        state.inflight.remove(&delivery.address);
        state.score = (state.score + SCORE_GOOD_BLOCK).min(SCORE_MAX);
        self.wants.remove(&delivery.address);
        self.events.push_back(Event::Received {
            address: delivery.address,
            cid: delivery.cid,
            data: delivery.data,
            proof: delivery.proof,
            from: from.clone(),
        });
    }

    fn take_presence(&mut self, from: &PeerId, presence: BlockPresence) {
        let asked_here =
            self.wants.get(&presence.address).and_then(|w| w.asked.as_ref()).is_some_and(|(p, _)| p == from);
        if asked_here && presence.presence == Presence::DontHave {
            self.fail(&presence.address, from);
        }
    }

    /// Marks `peer` as failed for a want and queues the want again.
    fn fail(&mut self, address: &BlockAddress, peer: &PeerId) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.inflight.remove(address);
        }
        if let Some(want) = self.wants.get_mut(address) {
            want.failed.insert(peer.clone());
            if want.asked.as_ref().is_some_and(|(p, _)| p == peer) {
                want.asked = None;
                self.queued.push_back(address.clone());
            }
        }
    }

    fn penalise(&mut self, peer: &PeerId, delta: i32, reason: &'static str) {
        let Some(state) = self.peers.get_mut(peer) else { return };
        state.score += delta;
        if state.score < self.config.score_disconnect_below {
            tracing::warn!(%peer, reason, score = state.score, "disconnecting a misbehaving peer");
            self.events.push_back(Event::Disconnect { peer: peer.clone(), reason });
        }
    }

    /// Sends queued wants to the best provider with a free slot.
    fn route(&mut self, now: Instant) {
        let mut waiting = VecDeque::new();
        while let Some(address) = self.queued.pop_front() {
            let Some(want) = self.wants.get(&address) else { continue }; // cancelled or received
            if want.asked.is_some() {
                continue; // queued twice
            }
            let candidates: Vec<&PeerId> = want
                .providers
                .iter()
                .filter(|p| !want.failed.contains(*p))
                .filter(|p| self.peers.get(*p).is_some_and(|s| s.score >= self.config.score_disconnect_below))
                .collect();
            if candidates.is_empty() {
                self.events.push_back(Event::Unavailable { address: address.clone() });
                self.wants.remove(&address);
                continue;
            }
            let free = candidates
                .into_iter()
                .filter(|p| self.peers[*p].inflight.len() < self.config.inflight_per_peer_max)
                .min_by_key(|p| (self.peers[*p].inflight.len(), -self.peers[*p].score))
                .cloned();
            let Some(peer) = free else {
                waiting.push_back(address); // every candidate is busy: try after the next answer
                continue;
            };
            self.wants.get_mut(&address).expect("present").asked = Some((peer.clone(), now));
            self.peers.get_mut(&peer).expect("candidate is connected").inflight.insert(address.clone());
            self.message_to(&peer).want_list.entries.push(WantEntry {
                address,
                priority: 1,
                cancel: false,
                want_type: WantType::Block,
                send_dont_have: true,
            });
        }
        self.queued = waiting;
    }
}

/// Whether a delivery's bytes are what its address names.
fn verify(delivery: &BlockDelivery) -> bool {
    let digest: [u8; 32] = Sha256::digest(&delivery.data).into();
    if digest_of(&delivery.cid) != Some(digest) {
        return false;
    }
    match (&delivery.address, &delivery.proof) {
        (BlockAddress::Cid(cid), _) => cid == &delivery.cid,
        (BlockAddress::Leaf { tree, index }, Some(proof)) => {
            proof.index == *index && digest_of(tree).is_some_and(|root| proof.verify(&digest, &root))
        }
        (BlockAddress::Leaf { .. }, None) => false,
    }
}

#[cfg(test)]
mod tests;
