//! The libp2p adapter of the network port (production only).
//!
//! TCP and QUIC, Noise, Yamux or Mplex (which Archivist peers speak), Identify, Ping and
//! Kademlia. Block-exchange messages travel on `/archivist/blockexc/1.0.0` streams as
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
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, allow_block_list, connection_limits, identify, kad,
    noise, ping, tcp, yamux,
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
/// Established connections to one peer (a TCP and a QUIC one, say).
const CONNECTIONS_PER_PEER_MAX: u32 = 2;
/// Incoming connections still handshaking at once.
const PENDING_INCOMING_MAX: u32 = 64;

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    stream: libp2p_stream::Behaviour,
    /// Peers dropped for misbehaviour; their connections are refused.
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
}

/// Settings of the libp2p node.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    pub listen_addrs: Vec<String>,
    /// Multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    pub idle_timeout: Duration,
}

/// Errors of starting the network.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("{0:?} is not a valid multiaddr: {1}")]
    Multiaddr(String, String),
    #[error("bootstrap node {0:?} lacks a /p2p/<peer id> suffix")]
    BootstrapPeer(String),
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
}

/// A running libp2p node: the production [`Network`].
pub struct P2pNetwork {
    local: PeerId,
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

impl P2pNetwork {
    /// Builds the swarm, starts listening and dials the bootstrap nodes.
    pub async fn start(keypair: Keypair, config: P2pConfig) -> Result<Arc<P2pNetwork>, P2pError> {
        let local = keypair.public().to_peer_id();
        let mut swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                (yamux::Config::default, libp2p_mplex::Config::default),
            )
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_quic()
            .with_behaviour(|key| {
                let mut kad = kad::Behaviour::with_config(
                    local,
                    kad::store::MemoryStore::new(local),
                    kad::Config::new(kad::PROTOCOL_NAME),
                );
                kad.set_mode(Some(kad::Mode::Server));
                Behaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                            .with_agent_version(format!("neverust/{}", crate::VERSION)),
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
                }
            })
            .map_err(|e| P2pError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();
        for text in &config.listen_addrs {
            let addr = parse_addr(text)?;
            swarm.listen_on(addr).map_err(|e| P2pError::Listen(text.clone(), e.to_string()))?;
        }
        for text in &config.bootstrap {
            let addr = parse_addr(text)?;
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                return Err(P2pError::BootstrapPeer(text.clone()));
            };
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            if let Err(e) = swarm.dial(addr) {
                tracing::warn!(bootstrap = %text, error = %e, "dialling a bootstrap node failed");
            }
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control.accept(BLOCKEXC).expect("blockexc registered once");
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(run_swarm(swarm, commands_rx, events_tx.clone(), shared.clone()));
        tokio::spawn(accept_streams(incoming, events_tx));
        Ok(Arc::new(P2pNetwork {
            local: to_port(&local),
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
            let result: std::io::Result<()> = async {
                let mut stream =
                    control.open_stream(target, BLOCKEXC).await.map_err(std::io::Error::other)?;
                while let Some(payload) = rx.recv().await {
                    let mut prefix = Vec::with_capacity(10);
                    put_varint(&mut prefix, payload.len() as u64);
                    stream.write_all(&prefix).await?;
                    stream.write_all(&payload).await?;
                    stream.flush().await?;
                }
                stream.close().await
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(peer = %port_peer, error = %e, "block-exchange stream closed");
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

async fn run_swarm(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut dials: HashMap<libp2p::PeerId, Vec<oneshot::Sender<Result<(), NetError>>>> = HashMap::new();
    let mut bootstrapped = false;
    let mut provider_queries: HashMap<kad::QueryId, ProviderQuery> = HashMap::new();
    let mut peer_queries: HashMap<kad::QueryId, (libp2p::PeerId, oneshot::Sender<Option<PeerRecord>>)> =
        HashMap::new();
    let local = *swarm.local_peer_id();
    loop {
        tokio::select! {
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
                        Ok(()) => dials.entry(peer).or_default().push(reply),
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
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, "listening for peers");
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
        let config = P2pConfig {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: vec![],
            idle_timeout: Duration::from_secs(30),
        };
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

    #[tokio::test]
    async fn oversized_messages_are_refused_before_sending() {
        let a = node().await;
        let peer = PeerId::from_bytes(Keypair::generate_ed25519().public().to_peer_id().to_bytes());
        let err = a.send(&peer, Bytes::from(vec![0u8; MESSAGE_SIZE_MAX_BYTES + 1])).await.unwrap_err();
        assert!(matches!(err, NetError::TooLarge { .. }), "{err}");
    }
}
