//! The libp2p adapter of the network port (production only).
//!
//! TCP and QUIC, Noise, Yamux or Mplex (which Archivist peers speak), Identify, Ping and
//! Kademlia; for nodes behind NATs, AutoNAT (is this node dialable?), circuit relay v2 (client
//! and server) and DCUtR (hole punching a relayed connection into a direct one). Block-exchange messages travel on `/archivist/blockexc/1.0.0` streams as
//! varint-length-prefixed frames, one long-lived outbound stream per peer, with the frame
//! length checked against the limit before any allocation.
//!
//! The swarm runs on its own task; [`P2pNetwork`] talks to it over channels, so node logic
//! sees only the [`Network`] trait and plain [`PeerId`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::core::{PeerRecord as SignedRecord, SignedEnvelope};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, allow_block_list, autonat, connection_limits, dcutr,
    identify, kad, noise, ping, relay, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use super::{NetError, NetEvent, Network, PeerId};
use crate::content::Cid;
use crate::content::protobuf::put_varint;
use crate::discovery::{Discovery, DiscoveryError, PeerRecord};
use crate::exchange::wire::{MESSAGE_SIZE_MAX_BYTES, frame_length};

/// The block-exchange protocol as libp2p negotiates it.
pub const BLOCKEXC: StreamProtocol = StreamProtocol::new(crate::exchange::PROTOCOL);
/// What Identify announces.
const IDENTIFY_PROTOCOL: &str = "/archivist/1.0.0";
/// Frames queued for one peer before `send` waits.
const OUTBOUND_QUEUE_FRAMES: usize = 64;
/// Events queued for node logic before the network waits.
const EVENT_QUEUE: usize = 1024;
/// Established connections at once, all peers together.
const CONNECTIONS_MAX: u32 = 512;
/// Established connections to one peer: a TCP and a QUIC one, a relayed one and its
/// hole-punched successor, and AutoNAT dial-backs (each on a new connection, idle until the
/// idle timeout closes it) in both directions.
const CONNECTIONS_PER_PEER_MAX: u32 = 8;
/// Incoming connections still handshaking at once.
const PENDING_INCOMING_MAX: u32 = 64;
/// Circuits this node relays at once, as a relay server.
const RELAY_CIRCUITS_MAX: usize = 16;
/// How long one relayed circuit may last. Circuits exist to reach a node behind a NAT and
/// to coordinate hole punching; the spec's default (2 minutes, 128 KiB) would cut a
/// block transfer short when hole punching fails, so relays here allow more.
const RELAY_CIRCUIT_DURATION: Duration = Duration::from_secs(10 * 60);
/// Bytes one relayed circuit may carry.
const RELAY_CIRCUIT_BYTES_MAX: u64 = 64 << 20;
/// Relays a node behind a NAT reserves a slot on when none are configured.
const AUTO_RELAYS_MAX: usize = 2;
/// Observed addresses shown in [`Reachability`].
const OBSERVED_ADDRS_KEPT: usize = 8;
/// How long after start AutoNAT first asks peers to dial back.
const AUTONAT_BOOT_DELAY: Duration = Duration::from_secs(3);
/// The text form of a signed peer record: this prefix, then the URL-safe base64 (no
/// padding) of the libp2p signed envelope, as Archivist writes it.
pub const SPR_PREFIX: &str = "spr:";

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    stream: libp2p_stream::Behaviour,
    /// Peers dropped for misbehaviour; their connections are refused.
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    autonat: autonat::Behaviour,
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
}

/// Settings of the libp2p node.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    pub listen_addrs: Vec<String>,
    /// Multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    pub idle_timeout: Duration,
    /// Announced to peers instead of the listen addresses; empty: the listen addresses.
    pub announce_addrs: Vec<String>,
    /// Relays (multiaddrs ending in `/p2p/<peer id>`) to hold a reservation on from the start.
    /// Without any, a node that has no listen address or that AutoNAT finds private
    /// reserves on its bootstrap nodes.
    pub relays: Vec<String>,
    /// Whether this node relays circuits for others.
    pub relay_server: bool,
    /// Whether AutoNAT confirms private and loopback addresses (a LAN, or one machine).
    pub autonat_private_addrs: bool,
}

impl Default for P2pConfig {
    fn default() -> P2pConfig {
        P2pConfig {
            listen_addrs: Vec::new(),
            bootstrap: Vec::new(),
            idle_timeout: Duration::from_secs(300),
            announce_addrs: Vec::new(),
            relays: Vec::new(),
            relay_server: true,
            autonat_private_addrs: false,
        }
    }
}

/// How this node can be reached, as far as it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reachability {
    /// AutoNAT's verdict: `unknown`, `public` or `private`.
    pub nat: &'static str,
    /// The address peers dialled back, when public.
    pub public_addr: Option<String>,
    /// Relays holding a reservation for this node.
    pub relays: Vec<String>,
    /// Addresses peers observed this node's connections come from (the latest few): what
    /// hole punching offers, and a hint of how a NAT maps this node.
    pub observed_addrs: Vec<String>,
    /// Relayed connections upgraded to direct ones by hole punching.
    pub hole_punches: u64,
    /// Hole punching attempts that failed.
    pub hole_punch_failures: u64,
}

/// Errors of starting the network.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("{0:?} is not a valid multiaddr: {1}")]
    Multiaddr(String, String),
    #[error("{0} {1:?} lacks a /p2p/<peer id> suffix")]
    PeerSuffix(&'static str, String),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, String),
    #[error("building the transport: {0}")]
    Transport(String),
}

enum Command {
    Dial { peer: libp2p::PeerId, addrs: Vec<Multiaddr>, reply: oneshot::Sender<Result<(), NetError>> },
    Disconnect { peer: libp2p::PeerId },
    Provide { key: Vec<u8> },
    Withdraw { key: Vec<u8> },
    FindProviders { key: Vec<u8>, limit: usize, reply: oneshot::Sender<Vec<PeerRecord>> },
    FindPeer { peer: libp2p::PeerId, reply: oneshot::Sender<Option<PeerRecord>> },
    ClosestPeers { key: Vec<u8>, limit: usize, reply: oneshot::Sender<Vec<PeerRecord>> },
}

/// A provider lookup in progress.
struct ProviderQuery {
    found: BTreeSet<libp2p::PeerId>,
    limit: usize,
    reply: oneshot::Sender<Vec<PeerRecord>>,
}

/// What the swarm task shares with the handle.
#[derive(Default)]
struct Shared {
    connected: BTreeSet<PeerId>,
    listen_addrs: Vec<Multiaddr>,
    /// Last ping round trip per peer.
    rtt: BTreeMap<PeerId, Duration>,
    /// Addresses confirmed reachable from outside (AutoNAT, relay circuits) or configured.
    external_addrs: Vec<Multiaddr>,
    reachability: Reachability,
}

/// A running libp2p node: the production [`Network`].
pub struct P2pNetwork {
    local: PeerId,
    /// Signs the peer record.
    keypair: Keypair,
    announce_configured: bool,
    commands: mpsc::Sender<Command>,
    events: tokio::sync::Mutex<mpsc::Receiver<NetEvent>>,
    shared: Arc<Mutex<Shared>>,
    control: libp2p_stream::Control,
    outbound: Arc<Mutex<BTreeMap<PeerId, mpsc::Sender<Bytes>>>>,
}

fn to_port(peer: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(peer.to_bytes())
}

fn from_port(peer: &PeerId) -> Result<libp2p::PeerId, NetError> {
    libp2p::PeerId::from_bytes(peer.as_bytes()).map_err(|e| NetError::Dial(format!("invalid peer id: {e}")))
}

fn parse_addr(text: &str) -> Result<Multiaddr, P2pError> {
    text.parse().map_err(|e: libp2p::multiaddr::Error| P2pError::Multiaddr(text.into(), e.to_string()))
}

/// A multiaddr that must name its peer, and that peer.
fn parse_peer_addr(what: &'static str, text: &str) -> Result<(libp2p::PeerId, Multiaddr), P2pError> {
    let addr = parse_addr(text)?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(P2pError::PeerSuffix(what, text.into())),
    }
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// `addr` without a trailing `/p2p/<id>`.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

/// Decodes the text form of a signed peer record, checking its signature: the peer and
/// its addresses.
pub fn decode_signed_peer_record(text: &str) -> Result<(PeerId, Vec<String>), String> {
    use base64::Engine as _;
    let encoded = text.trim().strip_prefix(SPR_PREFIX).ok_or_else(|| format!("missing {SPR_PREFIX:?}"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|e| format!("not base64: {e}"))?;
    let envelope = SignedEnvelope::from_protobuf_encoding(&bytes).map_err(|e| e.to_string())?;
    let record = SignedRecord::from_signed_envelope_interop(envelope).map_err(|e| e.to_string())?;
    Ok((to_port(&record.peer_id()), record.addresses().iter().map(|a| a.to_string()).collect()))
}

impl P2pNetwork {
    /// Builds the swarm, starts listening and dials the bootstrap nodes.
    pub async fn start(keypair: Keypair, config: P2pConfig) -> Result<Arc<P2pNetwork>, P2pError> {
        let local = keypair.public().to_peer_id();
        let relays = config
            .relays
            .iter()
            .map(|text| parse_peer_addr("relay node", text))
            .collect::<Result<Vec<_>, _>>()?;
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|text| parse_peer_addr("bootstrap node", text))
            .collect::<Result<Vec<_>, _>>()?;
        let announce = config.announce_addrs.iter().map(|a| parse_addr(a)).collect::<Result<Vec<_>, _>>()?;
        let mut swarm = SwarmBuilder::with_existing_identity(keypair.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                (yamux::Config::default, libp2p_mplex::Config::default),
            )
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_behaviour(|key, relay_client| {
                let mut kad = kad::Behaviour::with_config(
                    local,
                    kad::store::MemoryStore::new(local),
                    kad::Config::new(kad::PROTOCOL_NAME),
                );
                kad.set_mode(Some(kad::Mode::Server));
                Behaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                            .with_agent_version(format!("neverust/{}", crate::VERSION))
                            .with_push_listen_addr_updates(true)
                            .with_hide_listen_addrs(!announce.is_empty()),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    kad,
                    stream: libp2p_stream::Behaviour::new(),
                    blocked: allow_block_list::Behaviour::default(),
                    limits: connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_established(Some(CONNECTIONS_MAX))
                            .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX))
                            .with_max_pending_incoming(Some(PENDING_INCOMING_MAX)),
                    ),
                    autonat: autonat::Behaviour::new(
                        local,
                        autonat::Config {
                            boot_delay: AUTONAT_BOOT_DELAY,
                            only_global_ips: !config.autonat_private_addrs,
                            ..autonat::Config::default()
                        },
                    ),
                    relay_client,
                    relay: Toggle::from(config.relay_server.then(|| {
                        relay::Behaviour::new(
                            local,
                            relay::Config {
                                max_circuits: RELAY_CIRCUITS_MAX,
                                max_circuit_duration: RELAY_CIRCUIT_DURATION,
                                max_circuit_bytes: RELAY_CIRCUIT_BYTES_MAX,
                                ..relay::Config::default()
                            },
                        )
                    })),
                    dcutr: dcutr::Behaviour::new(local),
                }
            })
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();
        for text in &config.listen_addrs {
            let addr = parse_addr(text)?;
            swarm.listen_on(addr).map_err(|e| P2pError::Listen(text.clone(), e.to_string()))?;
        }
        for (peer, addr) in &bootstrap {
            swarm.behaviour_mut().kad.add_address(peer, addr.clone());
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(bootstrap = %addr, error = %e, "dialling a bootstrap node failed");
            }
        }
        for addr in &announce {
            swarm.add_external_address(addr.clone());
        }
        let mut relaying = Relaying::new(relays, bootstrap, !config.listen_addrs.is_empty());
        if config.listen_addrs.is_empty() {
            // Nothing to dial this node on: reach it through relays from the start.
            relaying.want_bootstrap();
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control.accept(BLOCKEXC).expect("blockexc registered once");
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Mutex::new(Shared {
            external_addrs: announce.clone(),
            reachability: Reachability { nat: "unknown", ..Reachability::default() },
            ..Shared::default()
        }));
        tokio::spawn(run_swarm(swarm, commands_rx, events_tx.clone(), shared.clone(), relaying));
        tokio::spawn(accept_streams(incoming, events_tx));
        Ok(Arc::new(P2pNetwork {
            local: to_port(&local),
            keypair,
            announce_configured: !announce.is_empty(),
            commands: commands_tx,
            events: tokio::sync::Mutex::new(events_rx),
            shared,
            control,
            outbound: Arc::default(),
        }))
    }

    /// Addresses the node listens on, each with its `/p2p/<id>` suffix.
    pub fn listen_addrs(&self) -> Vec<String> {
        let local = from_port(&self.local).expect("own id is valid");
        let shared = self.shared.lock().expect("lock");
        shared.listen_addrs.iter().map(|a| a.clone().with(Protocol::P2p(local)).to_string()).collect()
    }

    /// The addresses peers are told to dial, each with its `/p2p/<id>` suffix: the
    /// configured announce addresses, else the listen addresses; and addresses confirmed
    /// from outside (by AutoNAT, or relay circuits).
    pub fn announce_addrs(&self) -> Vec<String> {
        let local = from_port(&self.local).expect("own id is valid");
        let shared = self.shared.lock().expect("lock");
        let mut addrs: Vec<&Multiaddr> = Vec::new();
        if !self.announce_configured {
            addrs.extend(shared.listen_addrs.iter().filter(|a| !is_relayed(a)));
        }
        addrs.extend(&shared.external_addrs);
        let mut seen = BTreeSet::new();
        addrs
            .into_iter()
            .map(|a| without_peer(a).with(Protocol::P2p(local)))
            .filter(|a| seen.insert(a.clone()))
            .map(|a| a.to_string())
            .collect()
    }

    /// This node's signed peer record (its announced addresses) in text form:
    /// `spr:` and the URL-safe base64 of the libp2p signed envelope.
    pub fn signed_peer_record(&self) -> String {
        use base64::Engine as _;
        let addrs = self
            .announce_addrs()
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .map(|a| without_peer(&a))
            .collect();
        let record = SignedRecord::new_interop(&self.keypair, addrs).expect("an own key signs");
        let bytes = record.into_signed_envelope().into_protobuf_encoding();
        format!("{SPR_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// How this node can be reached: AutoNAT's verdict, relay reservations, hole punches.
    pub fn reachability(&self) -> Reachability {
        self.shared.lock().expect("lock").reachability.clone()
    }

    /// Last measured ping round trip to each connected peer.
    pub fn round_trips(&self) -> BTreeMap<PeerId, Duration> {
        self.shared.lock().expect("lock").rtt.clone()
    }

    /// Opens (once) the outbound stream to `peer` and returns its frame queue.
    fn outbound_queue(&self, peer: &PeerId) -> Result<mpsc::Sender<Bytes>, NetError> {
        let mut outbound = self.outbound.lock().expect("lock");
        if let Some(tx) = outbound.get(peer).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(OUTBOUND_QUEUE_FRAMES);
        let target = from_port(peer)?;
        let mut control = self.control.clone();
        let registry = self.outbound.clone();
        let port_peer = peer.clone();
        tokio::spawn(async move {
            // A stream dies with its connection (a duplicate connection closed, say) while the
            // peer stays reachable on another: a frame that fails is sent once more on a new
            // stream before the queue gives up on the peer.
            let mut stream: Option<libp2p::Stream> = None;
            'frames: while let Some(payload) = rx.recv().await {
                for attempt in 1..=2 {
                    let open = match stream.as_mut() {
                        Some(open) => open,
                        None => match control.open_stream(target, BLOCKEXC).await {
                            Ok(opened) => stream.insert(opened),
                            Err(e) => {
                                tracing::debug!(peer = %port_peer, error = %e, "no block-exchange stream");
                                break 'frames;
                            }
                        },
                    };
                    match write_frame(open, &payload).await {
                        Ok(()) => continue 'frames,
                        Err(e) => {
                            tracing::debug!(peer = %port_peer, attempt, error = %e, "block-exchange stream closed");
                            stream = None;
                        }
                    }
                }
                break;
            }
            if let Some(mut open) = stream {
                let _ = open.close().await;
            }
            registry.lock().expect("lock").remove(&port_peer);
        });
        outbound.insert(peer.clone(), tx.clone());
        Ok(tx)
    }
}

#[async_trait]
impl Network for P2pNetwork {
    fn local_peer_id(&self) -> PeerId {
        self.local.clone()
    }

    fn connected_peers(&self) -> Vec<PeerId> {
        self.shared.lock().expect("lock").connected.iter().cloned().collect()
    }

    async fn dial(&self, peer: &PeerId, addrs: &[String]) -> Result<(), NetError> {
        let addrs = addrs
            .iter()
            .map(|a| a.parse().map_err(|e| NetError::Dial(format!("{a:?}: {e}"))))
            .collect::<Result<_, _>>()?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Dial { peer: from_port(peer)?, addrs, reply })
            .await
            .map_err(|_| NetError::Closed)?;
        answer.await.map_err(|_| NetError::Closed)?
    }

    async fn disconnect(&self, peer: &PeerId) {
        if let Ok(peer) = from_port(peer) {
            let _ = self.commands.send(Command::Disconnect { peer }).await;
        }
    }

    async fn send(&self, to: &PeerId, payload: Bytes) -> Result<(), NetError> {
        if payload.len() > MESSAGE_SIZE_MAX_BYTES {
            return Err(NetError::TooLarge {
                size_bytes: payload.len(),
                limit_bytes: MESSAGE_SIZE_MAX_BYTES,
            });
        }
        let queue = self.outbound_queue(to)?;
        queue.send(payload).await.map_err(|_| NetError::NotConnected(to.clone()))
    }

    async fn next_event(&self) -> Option<NetEvent> {
        self.events.lock().await.recv().await
    }
}

#[async_trait]
impl Discovery for P2pNetwork {
    async fn provide(&self, cid: Cid) -> Result<(), DiscoveryError> {
        // With no peer there is no DHT to hold the record; the node logic tries again later.
        if self.connected_peers().is_empty() {
            return Err(DiscoveryError::NoPeers);
        }
        self.commands
            .send(Command::Provide { key: cid.to_bytes() })
            .await
            .map_err(|_| DiscoveryError::Timeout)
    }

    async fn withdraw(&self, cid: Cid) {
        let _ = self.commands.send(Command::Withdraw { key: cid.to_bytes() }).await;
    }

    async fn find_providers(&self, cid: Cid, limit: usize) -> Result<Vec<PeerRecord>, DiscoveryError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::FindProviders { key: cid.to_bytes(), limit, reply };
        self.commands.send(command).await.map_err(|_| DiscoveryError::Timeout)?;
        answer.await.map_err(|_| DiscoveryError::Timeout)
    }

    async fn find_peer(&self, peer: &PeerId) -> Result<Option<PeerRecord>, DiscoveryError> {
        let peer = from_port(peer).map_err(|_| DiscoveryError::NoPeers)?;
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::FindPeer { peer, reply }).await.map_err(|_| DiscoveryError::Timeout)?;
        answer.await.map_err(|_| DiscoveryError::Timeout)
    }

    async fn closest_peers(&self, key: &[u8], limit: usize) -> Result<Vec<PeerRecord>, DiscoveryError> {
        if self.connected_peers().is_empty() {
            return Err(DiscoveryError::NoPeers);
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::ClosestPeers { key: key.to_vec(), limit, reply };
        self.commands.send(command).await.map_err(|_| DiscoveryError::Timeout)?;
        answer.await.map_err(|_| DiscoveryError::Timeout)
    }
}

/// Reads frames from every inbound block-exchange stream.
async fn accept_streams(mut incoming: libp2p_stream::IncomingStreams, events: mpsc::Sender<NetEvent>) {
    while let Some((peer, mut stream)) = incoming.next().await {
        let events = events.clone();
        tokio::spawn(async move {
            let from = to_port(&peer);
            loop {
                match read_frame(&mut stream).await {
                    Ok(Some(payload)) => {
                        if events.send(NetEvent::Message { from: from.clone(), payload }).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "dropping a block-exchange stream");
                        return;
                    }
                }
            }
        });
    }
}

/// Writes one varint-length-prefixed frame.
async fn write_frame(stream: &mut libp2p::Stream, payload: &[u8]) -> std::io::Result<()> {
    let mut prefix = Vec::with_capacity(10);
    put_varint(&mut prefix, payload.len() as u64);
    stream.write_all(&prefix).await?;
    stream.write_all(payload).await?;
    stream.flush().await
}

/// One varint-length-prefixed frame; `None` at a clean end of stream.
async fn read_frame(stream: &mut libp2p::Stream) -> std::io::Result<Option<Bytes>> {
    let mut prefix = Vec::with_capacity(10);
    let (length, _) = loop {
        let mut byte = [0u8];
        match stream.read(&mut byte).await? {
            0 if prefix.is_empty() => return Ok(None),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => prefix.push(byte[0]),
        }
        match frame_length(&prefix, MESSAGE_SIZE_MAX_BYTES) {
            Ok(Some(found)) => break found,
            Ok(None) => continue,
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    };
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    Ok(Some(Bytes::from(payload)))
}

/// Which relays this node holds (or is requesting) a reservation on.
struct Relaying {
    /// Relays were configured: keep to them, whatever AutoNAT says.
    configured: bool,
    wanted: BTreeMap<libp2p::PeerId, RelayTarget>,
    bootstrap: Vec<(libp2p::PeerId, Multiaddr)>,
    /// No reservation before this node listens (or this instant passes): a connection to the
    /// relay dialled from the listening port lets peers observe, and hole punching use,
    /// the address this node is dialable at.
    waiting_for_listener: Option<tokio::time::Instant>,
}

/// A relay to hold a reservation on.
struct RelayTarget {
    addr: Multiaddr,
    /// The circuit listener while a reservation is requested or held.
    listener: Option<ListenerId>,
    /// Failures since the last accepted reservation, for the back-off.
    failures: u32,
    next_attempt: tokio::time::Instant,
}

impl Relaying {
    fn new(
        configured: Vec<(libp2p::PeerId, Multiaddr)>,
        bootstrap: Vec<(libp2p::PeerId, Multiaddr)>,
        listens: bool,
    ) -> Relaying {
        let mut relaying = Relaying {
            configured: !configured.is_empty(),
            wanted: BTreeMap::new(),
            bootstrap,
            waiting_for_listener: listens.then(|| tokio::time::Instant::now() + Duration::from_secs(2)),
        };
        for (peer, addr) in configured {
            relaying.want(peer, addr);
        }
        relaying
    }

    fn want(&mut self, relay: libp2p::PeerId, addr: Multiaddr) {
        self.wanted.entry(relay).or_insert(RelayTarget {
            addr,
            listener: None,
            failures: 0,
            next_attempt: tokio::time::Instant::now(),
        });
    }

    /// Wants up to [`AUTO_RELAYS_MAX`] bootstrap nodes as relays, unless relays were configured.
    fn want_bootstrap(&mut self) {
        if self.configured {
            return;
        }
        for (peer, addr) in self.bootstrap.clone() {
            if self.wanted.len() >= AUTO_RELAYS_MAX {
                break;
            }
            self.want(peer, addr);
        }
    }

    /// Listens on a circuit through every wanted relay that is due: the relay client dials
    /// it and asks for a reservation, then peers reach this node at
    /// `<relay addr>/p2p-circuit/p2p/<us>`.
    fn reserve_due(&mut self, swarm: &mut Swarm<Behaviour>) {
        let now = tokio::time::Instant::now();
        if self.waiting_for_listener.is_some_and(|until| now < until) {
            return;
        }
        for target in self.wanted.values_mut().filter(|t| t.listener.is_none() && t.next_attempt <= now) {
            match swarm.listen_on(target.addr.clone().with(Protocol::P2pCircuit)) {
                Ok(id) => {
                    tracing::debug!(relay = %target.addr, "requesting a relay reservation");
                    target.listener = Some(id);
                }
                Err(e) => {
                    tracing::warn!(relay = %target.addr, error = %e, "cannot listen through a relay");
                    target.failures += 1;
                    target.next_attempt = now + relay_backoff(target.failures);
                }
            }
        }
    }

    fn accepted(&mut self, relay: &libp2p::PeerId) {
        if let Some(target) = self.wanted.get_mut(relay) {
            target.failures = 0;
        }
    }

    /// A listener ended (the relay went away, or refused): try again after a back-off.
    /// Returns the relay it was for.
    fn closed(&mut self, listener: ListenerId) -> Option<libp2p::PeerId> {
        let (relay, target) = self.wanted.iter_mut().find(|(_, t)| t.listener == Some(listener))?;
        target.listener = None;
        target.failures += 1;
        target.next_attempt = tokio::time::Instant::now() + relay_backoff(target.failures);
        Some(*relay)
    }
}

/// 2 s after the first failure, doubling up to 5 minutes.
fn relay_backoff(failures: u32) -> Duration {
    (Duration::from_secs(2) * 2u32.saturating_pow(failures.saturating_sub(1).min(8)))
        .min(Duration::from_secs(300))
}

async fn run_swarm(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    shared: Arc<Mutex<Shared>>,
    mut relaying: Relaying,
) {
    let mut dials: HashMap<libp2p::PeerId, Vec<oneshot::Sender<Result<(), NetError>>>> = HashMap::new();
    let mut bootstrapped = false;
    let mut provider_queries: HashMap<kad::QueryId, ProviderQuery> = HashMap::new();
    let mut peer_queries: HashMap<kad::QueryId, (libp2p::PeerId, oneshot::Sender<Option<PeerRecord>>)> =
        HashMap::new();
    let mut closest_queries: HashMap<kad::QueryId, (usize, oneshot::Sender<Vec<PeerRecord>>)> =
        HashMap::new();
    let local = *swarm.local_peer_id();
    let mut relay_retries = tokio::time::interval(Duration::from_secs(1));
    relay_retries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = relay_retries.tick() => relaying.reserve_due(&mut swarm),
            command = commands.recv() => match command {
                None => return, // the handle is gone
                Some(Command::Dial { peer, addrs, reply }) => {
                    if swarm.is_connected(&peer) {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    for addr in &addrs {
                        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    }
                    let options = libp2p::swarm::dial_opts::DialOpts::peer_id(peer).addresses(addrs).build();
                    match swarm.dial(options) {
                        // A dial already under way (Kademlia's, say): its outcome answers this one.
                        Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                            dials.entry(peer).or_default().push(reply)
                        }
                        Err(e) => { let _ = reply.send(Err(NetError::Dial(e.to_string()))); }
                    }
                }
                Some(Command::Disconnect { peer }) => {
                    swarm.behaviour_mut().blocked.block_peer(peer);
                    swarm.behaviour_mut().kad.remove_peer(&peer);
                    let _ = swarm.disconnect_peer_id(peer);
                }
                Some(Command::Provide { key }) => {
                    if let Err(e) = swarm.behaviour_mut().kad.start_providing(kad::RecordKey::new(&key)) {
                        tracing::warn!(error = %e, "storing a provider record failed");
                    }
                }
                Some(Command::Withdraw { key }) => swarm.behaviour_mut().kad.stop_providing(&kad::RecordKey::new(&key)),
                Some(Command::FindProviders { key, limit, reply }) => {
                    let id = swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&key));
                    provider_queries.insert(id, ProviderQuery { found: BTreeSet::new(), limit, reply });
                }
                Some(Command::FindPeer { peer, reply }) => {
                    let id = swarm.behaviour_mut().kad.get_closest_peers(peer);
                    peer_queries.insert(id, (peer, reply));
                }
                Some(Command::ClosestPeers { key, limit, reply }) => {
                    let id = swarm.behaviour_mut().kad.get_closest_peers(key);
                    closest_queries.insert(id, (limit, reply));
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, "listening for peers");
                    if !is_relayed(&address) {
                        relaying.waiting_for_listener = None;
                        relaying.reserve_due(&mut swarm);
                    }
                    shared.lock().expect("lock").listen_addrs.push(address);
                }
                SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } => {
                    for reply in dials.remove(&peer_id).unwrap_or_default() {
                        let _ = reply.send(Ok(()));
                    }
                    if num_established.get() == 1 {
                        tracing::debug!(peer = %peer_id, "connected");
                        shared.lock().expect("lock").connected.insert(to_port(&peer_id));
                        let _ = events.send(NetEvent::Connected(to_port(&peer_id))).await;
                    }
                    if !bootstrapped {
                        bootstrapped = swarm.behaviour_mut().kad.bootstrap().is_ok();
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    tracing::debug!(peer = %peer_id, "disconnected");
                    let port = to_port(&peer_id);
                    {
                        let mut state = shared.lock().expect("lock");
                        state.connected.remove(&port);
                        state.rtt.remove(&port);
                    }
                    let _ = events.send(NetEvent::Disconnected(port)).await;
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    for reply in dials.remove(&peer).unwrap_or_default() {
                        let _ = reply.send(Err(NetError::Dial(error.to_string())));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for addr in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. })) => {
                    match result {
                        kad::QueryResult::GetProviders(found) => {
                            let Some(query) = provider_queries.get_mut(&id) else { continue };
                            if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = found {
                                query.found.extend(providers.into_iter().filter(|p| *p != local));
                            }
                            if step.last || query.found.len() >= query.limit {
                                if let Some(mut running) = swarm.behaviour_mut().kad.query_mut(&id) {
                                    running.finish();
                                }
                                let query = provider_queries.remove(&id).expect("present");
                                let records = query.found.iter().take(query.limit).map(|p| PeerRecord { peer: to_port(p), addrs: Vec::new() }).collect();
                                let _ = query.reply.send(records);
                            }
                        }
                        kad::QueryResult::GetClosestPeers(found) if step.last && closest_queries.contains_key(&id) => {
                            let (limit, reply) = closest_queries.remove(&id).expect("present");
                            let records = found
                                .map(|ok| ok.peers)
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|p| p.peer_id != local)
                                .take(limit)
                                .map(|p| PeerRecord { peer: to_port(&p.peer_id), addrs: p.addrs.iter().map(|a| a.to_string()).collect() })
                                .collect();
                            let _ = reply.send(records);
                        }
                        kad::QueryResult::GetClosestPeers(found) if step.last => {
                            let Some((target, reply)) = peer_queries.remove(&id) else { continue };
                            let record = found.ok().and_then(|ok| ok.peers.into_iter().find(|p| p.peer_id == target)).map(|p| PeerRecord {
                                peer: to_port(&p.peer_id),
                                addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                            });
                            let _ = reply.send(record);
                        }
                        kad::QueryResult::StartProviding(Err(e)) => tracing::debug!(error = %e, "provider record not stored on enough peers"),
                        _ => {}
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })) => {
                    shared.lock().expect("lock").rtt.insert(to_port(&peer), rtt);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
                    let (nat, public_addr) = match &new {
                        autonat::NatStatus::Public(addr) => ("public", Some(addr.to_string())),
                        autonat::NatStatus::Private => ("private", None),
                        autonat::NatStatus::Unknown => ("unknown", None),
                    };
                    tracing::info!(nat, public_addr = ?public_addr, "reachability changed");
                    {
                        let mut state = shared.lock().expect("lock");
                        state.reachability.nat = nat;
                        state.reachability.public_addr = public_addr;
                    }
                    if new == autonat::NatStatus::Private {
                        relaying.want_bootstrap();
                        relaying.reserve_due(&mut swarm);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. })) => {
                    if !renewal {
                        tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                    }
                    relaying.accepted(&relay_peer_id);
                    let relays = &mut shared.lock().expect("lock").reachability.relays;
                    let relay = relay_peer_id.to_string();
                    if !relays.contains(&relay) {
                        relays.push(relay);
                    }
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    if let Some(relay) = relaying.closed(listener_id) {
                        tracing::warn!(%relay, reason = ?reason, "no relay reservation; retrying later");
                        let relay = relay.to_string();
                        shared.lock().expect("lock").reachability.relays.retain(|r| *r != relay);
                    }
                }
                SwarmEvent::ExpiredListenAddr { address, .. } => {
                    shared.lock().expect("lock").listen_addrs.retain(|a| *a != address);
                }
                SwarmEvent::ExternalAddrConfirmed { address } => {
                    tracing::info!(%address, "address confirmed reachable");
                    let mut state = shared.lock().expect("lock");
                    if !state.external_addrs.contains(&address) {
                        state.external_addrs.push(address);
                    }
                }
                SwarmEvent::NewExternalAddrCandidate { address } => {
                    let observed = &mut shared.lock().expect("lock").reachability.observed_addrs;
                    let address = address.to_string();
                    observed.retain(|a| *a != address);
                    observed.insert(0, address);
                    observed.truncate(OBSERVED_ADDRS_KEPT);
                }
                SwarmEvent::ExternalAddrExpired { address } => {
                    shared.lock().expect("lock").external_addrs.retain(|a| *a != address);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
                    let mut state = shared.lock().expect("lock");
                    match result {
                        Ok(_) => {
                            tracing::info!(peer = %remote_peer_id, "hole punched: direct connection");
                            state.reachability.hole_punches += 1;
                        }
                        Err(e) => {
                            tracing::debug!(peer = %remote_peer_id, error = %e, "hole punching failed");
                            state.reachability.hole_punch_failures += 1;
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::wire::{BlockAddress, Message, WantEntry, WantList, WantType};

    async fn node() -> Arc<P2pNetwork> {
        node_with(P2pConfig::default()).await
    }

    /// A node listening on a loopback port, with `config` otherwise.
    async fn node_with(config: P2pConfig) -> Arc<P2pNetwork> {
        let config = P2pConfig { listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()], ..config };
        let network = P2pNetwork::start(Keypair::generate_ed25519(), config).await.unwrap();
        for _ in 0..100 {
            if !network.listen_addrs().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        network
    }

    async fn next_message(network: &P2pNetwork) -> (PeerId, Bytes) {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), network.next_event())
                .await
                .expect("an event in time")
            {
                Some(NetEvent::Message { from, payload }) => return (from, payload),
                Some(_) => continue,
                None => panic!("network closed"),
            }
        }
    }

    #[tokio::test]
    async fn block_exchange_frames_cross_a_real_connection() {
        let (a, b) = (node().await, node().await);
        a.dial(&b.local_peer_id(), &b.listen_addrs()).await.unwrap();
        let message = Message {
            want_list: WantList {
                entries: vec![WantEntry {
                    address: BlockAddress::Leaf { tree: crate::content::tree_cid(&[5; 32]), index: 7 },
                    priority: 1,
                    cancel: false,
                    want_type: WantType::Have,
                    send_dont_have: true,
                }],
                full: false,
            },
            ..Default::default()
        };
        for _ in 0..3 {
            a.send(&b.local_peer_id(), Bytes::from(message.encode())).await.unwrap();
        }
        for _ in 0..3 {
            let (from, payload) = next_message(&b).await;
            assert_eq!(from, a.local_peer_id());
            assert_eq!(Message::decode(&payload).unwrap(), message);
        }
        // And back the other way, with a large frame (a few blocks' worth).
        let big = Bytes::from(vec![7u8; 3 << 20]);
        b.send(&a.local_peer_id(), big.clone()).await.unwrap();
        assert_eq!(next_message(&a).await.1, big);
        assert!(a.connected_peers().contains(&b.local_peer_id()));
    }

    /// Polls `condition` every 20 ms for up to 20 s.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn the_signed_peer_record_names_the_announced_addresses_and_is_checked() {
        let announced = "/ip4/203.0.113.7/tcp/4040";
        let a = node_with(P2pConfig { announce_addrs: vec![announced.into()], ..P2pConfig::default() }).await;
        let record = a.signed_peer_record();
        assert!(record.starts_with(SPR_PREFIX), "{record}");
        let (peer, addrs) = decode_signed_peer_record(&record).unwrap();
        assert_eq!(peer, a.local_peer_id());
        assert_eq!(addrs, vec![announced.to_string()], "listen addresses stay hidden when announcing");
        // A record altered anywhere fails its signature (or its encoding), never decodes.
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let bytes = engine.decode(&record[SPR_PREFIX.len()..]).unwrap();
        for at in [bytes.len() / 2, bytes.len() - 1] {
            let mut tampered = bytes.clone();
            tampered[at] ^= 0x01;
            let text = format!("{SPR_PREFIX}{}", engine.encode(&tampered));
            assert!(decode_signed_peer_record(&text).is_err(), "flipped byte {at} accepted");
        }
        assert!(decode_signed_peer_record("nope").is_err());
        // Without announce addresses the record carries the listen addresses.
        let b = node().await;
        let (_, addrs) = decode_signed_peer_record(&b.signed_peer_record()).unwrap();
        let listening: Vec<String> =
            b.listen_addrs().iter().map(|a| without_peer(&a.parse().unwrap()).to_string()).collect();
        assert_eq!(addrs, listening);
    }

    #[tokio::test]
    async fn a_node_reachable_only_through_a_relay_is_reached_then_hole_punched() {
        // A relay hands out reservations only with an address confirmed reachable (by
        // AutoNAT, or announced); this one announces its listen address.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("/ip4/127.0.0.1/tcp/{port}");
        let relay = P2pNetwork::start(
            Keypair::generate_ed25519(),
            P2pConfig {
                listen_addrs: vec![listen.clone()],
                announce_addrs: vec![listen],
                ..P2pConfig::default()
            },
        )
        .await
        .unwrap();
        eventually("the relay listening", || !relay.listen_addrs().is_empty()).await;
        let relay_addr = relay.listen_addrs()[0].clone();
        let circuit = format!("{relay_addr}/p2p-circuit");
        // The hidden node keeps its listen addresses to itself, as one behind a NAT would
        // have nothing dialable to tell, and announces only the circuit through the relay.
        let hidden = node_with(P2pConfig {
            relays: vec![relay_addr.clone()],
            announce_addrs: vec![circuit.clone()],
            ..P2pConfig::default()
        })
        .await;
        eventually("a relay reservation", || !hidden.reachability().relays.is_empty()).await;
        assert_eq!(hidden.reachability().relays, vec![relay.local_peer_id().to_string()]);
        let (_, announced) = decode_signed_peer_record(&hidden.signed_peer_record()).unwrap();
        assert!(announced.iter().all(|a| a.contains("/p2p-circuit")), "{announced:?}");

        // Hole punching is best effort (real NATs defeat it often; here a race in which
        // addresses each side knows when the relayed connection opens can): up to three
        // clients try, and one must get through.
        for attempt in 1..=3 {
            // The client is part of the network (it bootstrapped from the relay), so it
            // knows an address peers observe it at, which it offers when hole punching.
            let before = hidden.reachability();
            let client =
                node_with(P2pConfig { bootstrap: vec![relay_addr.clone()], ..P2pConfig::default() }).await;
            eventually("addresses observed", || !client.reachability().observed_addrs.is_empty()).await;
            let through_relay = format!("{circuit}/p2p/{}", hidden.local_peer_id());
            client.dial(&hidden.local_peer_id(), &[through_relay]).await.unwrap();
            let frame = Bytes::from_static(b"through the relay");
            client.send(&hidden.local_peer_id(), frame.clone()).await.unwrap();
            assert_eq!(next_message(&hidden).await, (client.local_peer_id(), frame));
            // DCUtR: the hidden node and the client swap the addresses peers observed them
            // at, both dial at once, and a direct connection joins the relayed one.
            let punched = || {
                client.reachability().hole_punches > 0
                    || hidden.reachability().hole_punches > before.hole_punches
            };
            eventually("a hole punching outcome", || {
                punched()
                    || client.reachability().hole_punch_failures > 0
                    || hidden.reachability().hole_punch_failures > before.hole_punch_failures
            })
            .await;
            if !punched() {
                assert!(attempt < 3, "no hole punch in three tries: {:?}", hidden.reachability());
                continue;
            }
            let back = Bytes::from_static(b"and back");
            hidden.send(&client.local_peer_id(), back.clone()).await.unwrap();
            assert_eq!(next_message(&client).await, (hidden.local_peer_id(), back));
            break;
        }
    }

    #[tokio::test]
    async fn autonat_confirms_a_dialable_node_as_public() {
        let config = P2pConfig { autonat_private_addrs: true, ..P2pConfig::default() };
        let server = node_with(config.clone()).await;
        let probed = node_with(P2pConfig { bootstrap: server.listen_addrs(), ..config }).await;
        assert_eq!(probed.reachability().nat, "unknown");
        eventually("an AutoNAT verdict", || probed.reachability().nat != "unknown").await;
        let reachability = probed.reachability();
        assert_eq!(reachability.nat, "public", "{reachability:?}");
        let public = reachability.public_addr.expect("the dialled-back address");
        assert!(probed.listen_addrs().iter().any(|a| a.starts_with(&public)), "{public}");
        assert!(probed.announce_addrs().iter().any(|a| a.starts_with(&public)));
    }

    #[tokio::test]
    async fn oversized_messages_are_refused_before_sending() {
        let a = node().await;
        let peer = PeerId::from_bytes(Keypair::generate_ed25519().public().to_peer_id().to_bytes());
        let err = a.send(&peer, Bytes::from(vec![0u8; MESSAGE_SIZE_MAX_BYTES + 1])).await.unwrap_err();
        assert!(matches!(err, NetError::TooLarge { .. }), "{err}");
    }
}
