//! `SimNetwork`: the simulated network port, and the link model behind it (the `Fabric`).
//!
//! madsim provides the virtual clock, the scheduler and node kill/restart; its own network
//! has only global latency and loss, so links are modeled here:
//!
//! - latency per directed link, drawn once from the scenario's range, plus per-message jitter;
//! - bandwidth per node and direction, shared fairly among its busy links: a message queues
//!   behind earlier ones on its link (FIFO), then takes `size × k / bandwidth` on the sender's
//!   uplink and again on the receiver's downlink, `k` being the links of that node busy when it
//!   starts (an approximation of fair sharing: a share is fixed when a message starts and not
//!   recomputed as other flows come and go);
//! - loss as a stream transport sees it: a lost segment is retransmitted after a timeout
//!   (at least 200 ms, doubling), and six losses in a row reset the connection;
//! - partitions (one-way or both ways) and clogged nodes: nothing crosses; a connection that
//!   loses traffic is broken like a TCP stream with a hole (nothing more passes, even after the
//!   cut heals) and each side sees it close after the failure-detection delay (a ping timeout);
//! - datagram faults TCP and QUIC never produce, for robustness: duplication and reordering.
//!
//! Messages travel over madsim endpoints (one per node incarnation, at the node's simulated IP):
//! the model decides when a message arrives, and madsim carries it, so a killed node's
//! in-flight traffic dies with it. madsim's own latency is set to a microsecond, and
//! deliveries on a link are spaced at least [`LINK_SPACING`] apart so its jitter cannot reorder
//! them. Connections are modeled: a dial takes a round trip when the peer is reachable and
//! fails after the dial timeout when it is not. Connections carry ids, so a late close or a late
//! message of an old connection never touches a new one. A stopped node's peers see its
//! connections close one latency later (its OS resets them) or, when the machine is gone, after
//! the failure-detection delay.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use neverust::exchange::wire::MESSAGE_SIZE_MAX_BYTES;
use neverust::net::{NetError, NetEvent, Network, PeerId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::trace::Trace;

/// The link model's parameters, drawn for one run.
#[derive(Clone, Debug)]
pub struct LinkParams {
    pub latency_ms: [f64; 2],
    pub jitter_ms: f64,
    pub bandwidth_bytes_per_s: f64,
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub dial_timeout: Duration,
    pub failure_detection: Duration,
}

const RETRANSMIT_MIN: Duration = Duration::from_millis(200);
/// The port every simulated node's endpoint binds.
pub const PORT: u16 = 7000;
/// The madsim message tag of block-exchange messages.
const TAG: u64 = 0x626c_6f63;
/// madsim's own per-message latency (see [`madsim_config`]).
const MADSIM_LATENCY: Duration = Duration::from_micros(1);
/// Least time between two deliveries on one link: more than madsim's receive jitter (< 5 µs),
/// so messages keep their order.
pub const LINK_SPACING: Duration = Duration::from_micros(10);

/// madsim's configuration for a run: the link model above decides latency and loss.
pub fn madsim_config() -> madsim::Config {
    let mut config = madsim::Config::default();
    config.net.send_latency = MADSIM_LATENCY..MADSIM_LATENCY + Duration::from_nanos(1);
    config.net.packet_loss_rate = 0.0;
    config
}

/// The simulated IP address of node `index`.
pub fn sim_ip(index: usize) -> std::net::IpAddr {
    let n = index as u32 + 1;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// What travels over a madsim endpoint.
struct Delivery {
    from: usize,
    /// The connection it was sent on: a message of a closed connection is not delivered.
    connection: u64,
    payload: Bytes,
}
const LOSSES_BEFORE_RESET: u32 = 6;

/// The simulated network all nodes share.
pub struct Fabric {
    params: LinkParams,
    trace: Arc<Trace>,
    /// A madsim node of the fabric's own, never killed: connection closes are timed there, so
    /// they happen even when the node that caused them has crashed meanwhile.
    timers: madsim::runtime::NodeHandle,
    state: Mutex<FabricState>,
}

struct FabricState {
    rng: ChaCha8Rng,
    nodes: Vec<Endpoint>,
    by_peer: BTreeMap<PeerId, usize>,
    /// One-way latency per directed link, drawn on first use.
    latency: BTreeMap<(usize, usize), Duration>,
    /// Last delivery time per directed link (FIFO order).
    last_delivery: BTreeMap<(usize, usize), Instant>,
    /// When each link's share of its sender's uplink is free, by (sender, receiver).
    uplinks: BTreeMap<(usize, usize), Instant>,
    /// When each link's share of its receiver's downlink is free, by (receiver, sender).
    downlinks: BTreeMap<(usize, usize), Instant>,
    /// Directed blocks: traffic from the first set to the second does not pass.
    partitions: Vec<(BTreeSet<usize>, BTreeSet<usize>)>,
    /// Clogged nodes, with how many clogs hold each.
    clogged: BTreeMap<usize, u32>,
    next_connection: u64,
    /// Connections that lost traffic (a partition, a clog, a reset, a peer gone): like a TCP
    /// stream with a hole, nothing more passes, and each side sees it closed in time.
    broken: BTreeSet<u64>,
    stats: NetStats,
}

struct Endpoint {
    peer: PeerId,
    /// Bumped at every crash or restart.
    incarnation: u64,
    alive: bool,
    inbox: Option<mpsc::UnboundedSender<NetEvent>>,
    /// Open connections: peer index → connection id (both sides hold the same id).
    connections: BTreeMap<usize, u64>,
    /// Peers this incarnation dropped for misbehaviour: refused from then on.
    blocked: BTreeSet<usize>,
    /// Multiplies latency and divides bandwidth (a slow node).
    slowness: f64,
}

/// Traffic counters.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NetStats {
    pub messages: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub retransmissions: u64,
    pub connection_resets: u64,
    pub dials: u64,
    pub failed_dials: u64,
}

impl Fabric {
    /// Call inside the madsim runtime (it creates the fabric's timer node).
    pub fn new(
        params: LinkParams,
        peers: Vec<PeerId>,
        slowness: Vec<f64>,
        rng: ChaCha8Rng,
        trace: Arc<Trace>,
    ) -> Arc<Fabric> {
        let nodes = peers
            .iter()
            .zip(slowness)
            .map(|(peer, slowness)| Endpoint {
                peer: peer.clone(),
                incarnation: 0,
                alive: false,
                inbox: None,
                connections: BTreeMap::new(),
                blocked: BTreeSet::new(),
                slowness,
            })
            .collect();
        let by_peer = peers.iter().cloned().enumerate().map(|(i, p)| (p, i)).collect();
        let timers = madsim::runtime::Handle::current().create_node().name("fabric").build();
        Arc::new(Fabric {
            params,
            trace,
            timers,
            state: Mutex::new(FabricState {
                rng,
                nodes,
                by_peer,
                latency: BTreeMap::new(),
                last_delivery: BTreeMap::new(),
                uplinks: BTreeMap::new(),
                downlinks: BTreeMap::new(),
                partitions: Vec::new(),
                clogged: BTreeMap::new(),
                next_connection: 0,
                broken: BTreeSet::new(),
                stats: NetStats::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FabricState> {
        self.state.lock().expect("fabric lock")
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats.clone()
    }

    pub fn peer(&self, index: usize) -> PeerId {
        self.lock().nodes[index].peer.clone()
    }

    pub fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.lock().by_peer.get(peer).copied()
    }

    pub fn is_alive(&self, index: usize) -> bool {
        self.lock().nodes[index].alive
    }

    /// Whether `index` has any open connection (a routing table that is not empty).
    pub fn has_connections(&self, index: usize) -> bool {
        !self.lock().nodes[index].connections.is_empty()
    }

    /// A node (re)starts: its network port, with a fresh inbox and a fresh endpoint (call it
    /// on the node, so the endpoint and its receiving task die with the node).
    pub async fn attach(self: &Arc<Fabric>, index: usize) -> Arc<SimNetwork> {
        let endpoint = Arc::new(
            madsim::net::Endpoint::bind(std::net::SocketAddr::new(sim_ip(index), PORT))
                .await
                .expect("a restarted node's old endpoint is gone"),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        let node = &mut state.nodes[index];
        node.incarnation += 1;
        node.alive = true;
        node.inbox = Some(tx);
        node.connections.clear();
        node.blocked.clear();
        let incarnation = node.incarnation;
        drop(state);
        self.trace.record(format_args!("attach {index}"));
        let (fabric, receiver) = (self.clone(), endpoint.clone());
        tokio::spawn(async move {
            while let Ok((payload, _)) = receiver.recv_from_raw(TAG).await {
                if let Ok(delivery) = payload.downcast::<Delivery>() {
                    fabric.deliver(index, *delivery);
                }
            }
        });
        Arc::new(SimNetwork {
            fabric: self.clone(),
            index,
            incarnation,
            endpoint,
            events: tokio::sync::Mutex::new(rx),
        })
    }

    /// A message arrived at node `index`: to its inbox, if its connection still stands.
    fn deliver(&self, index: usize, delivery: Delivery) {
        let state = self.lock();
        let node = &state.nodes[index];
        if node.connections.get(&delivery.from) == Some(&delivery.connection)
            && !state.broken.contains(&delivery.connection)
            && let Some(inbox) = &node.inbox
        {
            let from = state.nodes[delivery.from].peer.clone();
            let _ = inbox.send(NetEvent::Message { from, payload: delivery.payload });
        }
    }

    /// A node stops. Its peers see its connections close one latency later when its OS is
    /// still there to reset them (a process crash or a clean stop), after the
    /// failure-detection delay when the machine is gone.
    pub fn detach(self: &Arc<Fabric>, index: usize, machine_gone: bool) {
        let closes: Vec<(usize, u64, Duration)> = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let node = &mut state.nodes[index];
            node.alive = false;
            node.incarnation += 1;
            node.inbox = None;
            let connections = std::mem::take(&mut node.connections);
            let mut closes = Vec::new();
            for (peer, id) in connections {
                state.broken.insert(id);
                let notice = if machine_gone {
                    self.params.failure_detection
                } else {
                    self.latency(state, index, peer)
                };
                closes.push((peer, id, notice));
            }
            // Traffic queued by the old incarnation died with it.
            state.uplinks.retain(|(a, _), _| *a != index);
            state.downlinks.retain(|(a, _), _| *a != index);
            state.last_delivery.retain(|(a, b), _| *a != index && *b != index);
            closes
        };
        self.trace.record(format_args!("detach {index} machine_gone={machine_gone}"));
        for (peer, id, notice) in closes {
            self.close_later(peer, index, id, notice);
        }
    }

    /// Tells `at` that its connection `id` to `gone` closed, after `delay`, if it still holds
    /// that connection then.
    fn close_later(self: &Arc<Fabric>, at: usize, gone: usize, id: u64, delay: Duration) {
        let fabric = self.clone();
        self.timers.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut state = fabric.lock();
            let gone_peer = state.nodes[gone].peer.clone();
            let node = &mut state.nodes[at];
            if node.connections.get(&gone) == Some(&id) {
                node.connections.remove(&gone);
                if let Some(inbox) = &node.inbox {
                    let _ = inbox.send(NetEvent::Disconnected(gone_peer));
                }
            }
        });
    }

    /// Marks connection `id` between `a` and `b` broken; each side sees it close after its
    /// delay.
    fn break_connection(
        self: &Arc<Fabric>,
        a: usize,
        b: usize,
        id: u64,
        delay_a: Duration,
        delay_b: Duration,
    ) {
        self.lock().broken.insert(id);
        self.close_later(a, b, id, delay_a);
        self.close_later(b, a, id, delay_b);
    }

    /// Connections with at least one end in `nodes` whose other end satisfies `other`.
    fn connections_of(
        &self,
        nodes: &BTreeSet<usize>,
        other: impl Fn(usize) -> bool,
    ) -> Vec<(usize, usize, u64)> {
        let state = self.lock();
        let mut found = Vec::new();
        for &x in nodes {
            for (&y, &id) in &state.nodes[x].connections {
                if other(y) && !found.iter().any(|&(_, _, known)| known == id) {
                    found.push((x, y, id));
                }
            }
        }
        found
    }

    /// Blocks traffic from `a` to `b` (and back unless `one_way`) until [`Fabric::heal`].
    /// Connections across the cut break either way (a one-way cut stops the acknowledgements).
    pub fn partition(self: &Arc<Fabric>, a: BTreeSet<usize>, b: BTreeSet<usize>, one_way: bool) {
        {
            let mut state = self.lock();
            state.partitions.push((a.clone(), b.clone()));
            if !one_way {
                state.partitions.push((b.clone(), a.clone()));
            }
        }
        self.trace.record(format_args!("partition {} {} one_way={one_way}", a.len(), b.len()));
        let detection = self.params.failure_detection;
        for (x, y, id) in self.connections_of(&a, |y| b.contains(&y)) {
            self.break_connection(x, y, id, detection, detection);
        }
    }

    pub fn heal(&self) {
        self.lock().partitions.clear();
        self.trace.record("heal");
    }

    /// Stalls every byte in or out of `nodes` until as many [`Fabric::unclog`]s.
    pub fn clog(self: &Arc<Fabric>, nodes: BTreeSet<usize>) {
        {
            let mut state = self.lock();
            for &n in &nodes {
                *state.clogged.entry(n).or_default() += 1;
            }
        }
        self.trace.record(format_args!("clog {}", nodes.len()));
        let detection = self.params.failure_detection;
        for (x, y, id) in self.connections_of(&nodes, |_| true) {
            self.break_connection(x, y, id, detection, detection);
        }
    }

    pub fn unclog(&self, nodes: &BTreeSet<usize>) {
        let mut state = self.lock();
        for n in nodes {
            if let Some(count) = state.clogged.get_mut(n) {
                *count -= 1;
                if *count == 0 {
                    state.clogged.remove(n);
                }
            }
        }
    }

    /// Clears every clog (the healing phase).
    pub fn unclog_all(&self) {
        self.lock().clogged.clear();
    }

    /// Whether `a` and `b` could talk now (both up, nothing in between).
    pub fn reaches(&self, a: usize, b: usize) -> bool {
        let state = self.lock();
        state.nodes[a].alive && Self::passes(&state, a, b) && Self::passes(&state, b, a)
    }

    /// Whether traffic passes from `a` to `b` now.
    fn passes(state: &FabricState, a: usize, b: usize) -> bool {
        state.nodes[b].alive
            && !state.clogged.contains_key(&a)
            && !state.clogged.contains_key(&b)
            && !state.partitions.iter().any(|(from, to)| from.contains(&a) && to.contains(&b))
    }

    fn latency(&self, state: &mut FabricState, a: usize, b: usize) -> Duration {
        let [low, high] = self.params.latency_ms;
        let base = *state
            .latency
            .entry((a, b))
            .or_insert_with(|| Duration::from_secs_f64(state.rng.random_range(low..=high.max(low)) / 1000.0));
        let jitter = if self.params.jitter_ms > 0.0 {
            Duration::from_secs_f64(state.rng.random_range(0.0..self.params.jitter_ms) / 1000.0)
        } else {
            Duration::ZERO
        };
        (base + jitter).mul_f64(state.nodes[a].slowness.max(state.nodes[b].slowness))
    }

    /// The mean round trip, for modeled costs (DHT lookups).
    pub fn mean_rtt(&self) -> Duration {
        let [low, high] = self.params.latency_ms;
        Duration::from_secs_f64((low + high) / 1000.0)
    }

    async fn dial(self: &Arc<Fabric>, from: usize, incarnation: u64, to: &PeerId) -> Result<(), NetError> {
        let (target, reachable, rtt) = {
            let mut state = self.lock();
            state.stats.dials += 1;
            let Some(&target) = state.by_peer.get(to) else {
                return Err(NetError::Dial(format!("unknown peer {to}")));
            };
            if target == from {
                return Err(NetError::Dial("cannot dial self".into()));
            }
            if let Some(id) = state.nodes[from].connections.get(&target)
                && !state.broken.contains(id)
            {
                return Ok(());
            }
            let refused =
                state.nodes[from].blocked.contains(&target) || state.nodes[target].blocked.contains(&from);
            let reachable =
                !refused && Self::passes(&state, from, target) && Self::passes(&state, target, from);
            let rtt = self.latency(&mut state, from, target) + self.latency(&mut state, target, from);
            (target, reachable, rtt)
        };
        tokio::time::sleep(if reachable { rtt } else { self.params.dial_timeout }).await;
        let mut state = self.lock();
        let ok = reachable
            && state.nodes[from].incarnation == incarnation
            && Self::passes(&state, from, target)
            && Self::passes(&state, target, from);
        if !ok {
            state.stats.failed_dials += 1;
            return Err(NetError::Dial(format!("{to} unreachable")));
        }
        // A new connection; a stale one either side still holds is replaced (its close,
        // when it comes, no longer matches).
        let id = state.next_connection;
        state.next_connection += 1;
        state.nodes[from].connections.insert(target, id);
        state.nodes[target].connections.insert(from, id);
        let from_peer = state.nodes[from].peer.clone();
        if let Some(inbox) = &state.nodes[target].inbox {
            let _ = inbox.send(NetEvent::Connected(from_peer));
        }
        if let Some(inbox) = &state.nodes[from].inbox {
            let _ = inbox.send(NetEvent::Connected(to.clone()));
        }
        Ok(())
    }

    fn send(
        self: &Arc<Fabric>,
        from: usize,
        incarnation: u64,
        endpoint: &Arc<madsim::net::Endpoint>,
        to: &PeerId,
        payload: Bytes,
    ) -> Result<(), NetError> {
        if payload.len() > MESSAGE_SIZE_MAX_BYTES {
            return Err(NetError::TooLarge {
                size_bytes: payload.len(),
                limit_bytes: MESSAGE_SIZE_MAX_BYTES,
            });
        }
        let mut state = self.lock();
        if state.nodes[from].incarnation != incarnation {
            return Err(NetError::Closed);
        }
        let Some(&target) = state.by_peer.get(to) else {
            return Err(NetError::NotConnected(to.clone()));
        };
        let Some(&connection) = state.nodes[from].connections.get(&target) else {
            return Err(NetError::NotConnected(to.clone()));
        };
        let size = payload.len() as u64;
        state.stats.messages += 1;
        state.stats.bytes += size;
        if state.broken.contains(&connection) {
            state.stats.dropped += 1;
            return Ok(());
        }
        if !Self::passes(&state, from, target) {
            // Nothing gets through: the stream breaks and both sides time out.
            state.stats.dropped += 1;
            drop(state);
            let detection = self.params.failure_detection;
            self.break_connection(from, target, connection, detection, detection);
            return Ok(());
        }
        let now = Instant::now();
        let bandwidth = self.params.bandwidth_bytes_per_s;
        let shares_up = busy_links(&state.uplinks, from, target, now) + 1;
        let up =
            Duration::from_secs_f64(size as f64 * shares_up as f64 * state.nodes[from].slowness / bandwidth);
        let link_up = state.uplinks.entry((from, target)).or_insert(now);
        let sent_at = (*link_up).max(now) + up;
        *link_up = sent_at;
        let latency = self.latency(&mut state, from, target);
        let mut arrival = sent_at + latency;
        // Loss on a stream transport: retransmissions delay the message; too many reset.
        let mut losses = 0;
        let mut timeout = RETRANSMIT_MIN.max(latency * 4);
        while self.params.loss > 0.0 && state.rng.random_bool(self.params.loss) {
            losses += 1;
            state.stats.retransmissions += 1;
            if losses >= LOSSES_BEFORE_RESET {
                state.stats.connection_resets += 1;
                drop(state);
                self.trace.record(format_args!("reset {from} {target}"));
                self.break_connection(from, target, connection, Duration::ZERO, latency);
                return Ok(());
            }
            arrival += timeout;
            timeout *= 2;
        }
        let shares_down = busy_links(&state.downlinks, target, from, arrival) + 1;
        let down = Duration::from_secs_f64(
            size as f64 * shares_down as f64 * state.nodes[target].slowness / bandwidth,
        );
        let link_down = state.downlinks.entry((target, from)).or_insert(now);
        let delivered = (*link_down).max(arrival) + down;
        *link_down = delivered;
        let reorder = self.params.reorder > 0.0 && state.rng.random_bool(self.params.reorder);
        let link = state.last_delivery.entry((from, target)).or_insert(now);
        let delivered = if reorder { delivered } else { delivered.max(*link + LINK_SPACING) };
        if !reorder {
            *link = delivered;
        }
        let copies =
            if self.params.duplicate > 0.0 && state.rng.random_bool(self.params.duplicate) { 2 } else { 1 };
        drop(state);
        if losses > 0 {
            self.trace.record(format_args!("retransmit {from} {target} {losses}"));
        }
        self.trace.record(format_args!("send {from} {target} {size} {}", (delivered - now).as_nanos()));
        let endpoint = endpoint.clone();
        let destination = std::net::SocketAddr::new(sim_ip(target), PORT);
        tokio::spawn(async move {
            tokio::time::sleep_until(delivered - MADSIM_LATENCY).await;
            for _ in 0..copies {
                let delivery = Box::new(Delivery { from, connection, payload: payload.clone() });
                let _ = endpoint.send_to_raw(destination, TAG, delivery).await;
            }
        });
        Ok(())
    }
}

/// Links of `node` other than the one to `other` still busy at `at`: they share the node's
/// capacity with it.
fn busy_links(links: &BTreeMap<(usize, usize), Instant>, node: usize, other: usize, at: Instant) -> usize {
    links
        .range((node, 0)..(node + 1, 0))
        .filter(|((_, peer), free_at)| *peer != other && **free_at > at)
        .count()
}

/// A node's simulated network port (one per incarnation of the node).
pub struct SimNetwork {
    fabric: Arc<Fabric>,
    index: usize,
    incarnation: u64,
    endpoint: Arc<madsim::net::Endpoint>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<NetEvent>>,
}

#[async_trait]
impl Network for SimNetwork {
    fn local_peer_id(&self) -> PeerId {
        self.fabric.peer(self.index)
    }

    fn connected_peers(&self) -> Vec<PeerId> {
        let state = self.fabric.lock();
        let node = &state.nodes[self.index];
        if node.incarnation != self.incarnation {
            return Vec::new();
        }
        node.connections.keys().map(|&i| state.nodes[i].peer.clone()).collect()
    }

    async fn dial(&self, peer: &PeerId, _addrs: &[String]) -> Result<(), NetError> {
        self.fabric.dial(self.index, self.incarnation, peer).await
    }

    async fn disconnect(&self, peer: &PeerId) {
        let Some(target) = self.fabric.index_of(peer) else { return };
        self.fabric.trace.record(format_args!("disconnect {} {target}", self.index));
        let closed = {
            let mut guard = self.fabric.lock();
            let state = &mut *guard;
            if state.nodes[self.index].incarnation != self.incarnation {
                return;
            }
            state.nodes[self.index].blocked.insert(target);
            let closed = state.nodes[self.index].connections.remove(&target);
            if let Some(id) = closed {
                state.broken.insert(id);
                if let Some(inbox) = &state.nodes[self.index].inbox {
                    let _ = inbox.send(NetEvent::Disconnected(peer.clone()));
                }
                let latency = self.fabric.latency(state, self.index, target);
                Some((id, latency))
            } else {
                None
            }
        };
        if let Some((id, latency)) = closed {
            self.fabric.close_later(target, self.index, id, latency);
        }
    }

    async fn send(&self, to: &PeerId, payload: Bytes) -> Result<(), NetError> {
        self.fabric.send(self.index, self.incarnation, &self.endpoint, to, payload)
    }

    async fn next_event(&self) -> Option<NetEvent> {
        self.events.lock().await.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn params() -> LinkParams {
        LinkParams {
            latency_ms: [10.0, 10.0],
            jitter_ms: 0.0,
            bandwidth_bytes_per_s: 1_048_576.0, // 1 MiB/s
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            dial_timeout: Duration::from_secs(5),
            failure_detection: Duration::from_secs(20),
        }
    }

    /// Runs `test` with three simulated nodes attached, each on its own madsim node.
    fn with_nodes<F, Fut>(test: F)
    where
        F: FnOnce(Arc<Fabric>, Vec<Arc<SimNetwork>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = madsim::runtime::Runtime::with_seed_and_config(1, madsim_config());
        runtime.block_on(async move {
            let peers: Vec<PeerId> = (0..3u8).map(|i| PeerId::from_bytes(vec![0, 1, i])).collect();
            let trace = Arc::new(Trace::new());
            let fabric = Fabric::new(params(), peers, vec![1.0; 3], ChaCha8Rng::seed_from_u64(1), trace);
            let mut networks = Vec::new();
            for index in 0..3 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let f = fabric.clone();
                let node = madsim::runtime::Handle::current().create_node().ip(sim_ip(index)).build();
                node.spawn(async move {
                    let _ = tx.send(f.attach(index).await);
                    std::future::pending::<()>().await;
                });
                networks.push(rx.await.unwrap());
            }
            test(fabric, networks).await;
        });
    }

    async fn next_message(network: &SimNetwork) -> (PeerId, Bytes) {
        loop {
            if let Some(NetEvent::Message { from, payload }) = network.next_event().await {
                return (from, payload);
            }
        }
    }

    #[test]
    fn a_message_takes_latency_plus_its_size_over_the_bandwidth_shared_by_busy_links() {
        with_nodes(|_fabric, nets| async move {
            let (b, c) = (nets[1].local_peer_id(), nets[2].local_peer_id());
            nets[0].dial(&b, &[]).await.unwrap();
            nets[0].dial(&c, &[]).await.unwrap();
            let start = Instant::now();
            // One MiB to each of two peers at once: each link gets half of the uplink.
            nets[0].send(&b, Bytes::from(vec![1u8; 1 << 20])).await.unwrap();
            nets[0].send(&c, Bytes::from(vec![2u8; 1 << 20])).await.unwrap();
            let (from, payload) = next_message(&nets[1]).await;
            assert_eq!((from, payload.len()), (nets[0].local_peer_id(), 1 << 20));
            let first = start.elapsed();
            next_message(&nets[2]).await;
            let second = start.elapsed();
            // First: 1 s up alone, 10 ms, 1 s down. Second: 2 s up (shared), 10 ms, 1 s down.
            assert!(first >= Duration::from_millis(2010) && first < Duration::from_millis(2020), "{first:?}");
            assert!(
                second >= Duration::from_millis(3010) && second < Duration::from_millis(3020),
                "{second:?}"
            );
        });
    }

    #[test]
    fn a_partition_stops_traffic_and_closes_connections_after_failure_detection() {
        with_nodes(|fabric, nets| async move {
            let b = nets[1].local_peer_id();
            nets[0].dial(&b, &[]).await.unwrap();
            let start = Instant::now();
            fabric.partition([0].into(), [1].into(), true);
            nets[0].send(&b, Bytes::from_static(b"lost")).await.unwrap();
            loop {
                match nets[0].next_event().await {
                    Some(NetEvent::Disconnected(peer)) if peer == b => break,
                    Some(NetEvent::Message { .. }) => panic!("a message crossed the partition"),
                    _ => {}
                }
            }
            let noticed = start.elapsed();
            assert!(
                noticed >= Duration::from_secs(20) && noticed < Duration::from_millis(20_010),
                "{noticed:?}"
            );
            assert!(nets[0].dial(&b, &[]).await.is_err(), "dialled across a partition");
            fabric.heal();
            nets[0].dial(&b, &[]).await.unwrap();
            nets[0].send(&b, Bytes::from_static(b"after")).await.unwrap();
            assert_eq!(next_message(&nets[1]).await.1, Bytes::from_static(b"after"));
        });
    }
}
