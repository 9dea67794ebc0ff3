//! Drives the [`Engine`] over the network port and answers peers from the block store.
//!
//! One task owns the engine. It feeds it network events, want requests from node logic and
//! the store's answers to peers' requests, and after every input drains it: verified blocks go
//! to whoever wanted them, messages go to the network, misbehaving peers are disconnected.
//! Store lookups run on their own tasks so a slow disk never stalls the protocol.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::engine::{Answer, Engine, EngineConfig, Event};
use super::wire::{BlockAddress, Message};
use crate::content::{Cid, Codec};
use crate::merkle::MerkleProof;
use crate::metrics::Metrics;
use crate::net::{NetEvent, Network, PeerId};
use crate::store::SharedStore;

/// The outcome of one want.
#[derive(Clone, Debug)]
pub enum Fetched {
    /// The block, verified against its address.
    Block { address: BlockAddress, cid: Cid, data: Bytes, proof: Option<MerkleProof> },
    /// No provider could deliver it.
    Unavailable { address: BlockAddress },
}

enum Command {
    Want { addresses: Vec<BlockAddress>, providers: Vec<PeerId>, results: mpsc::UnboundedSender<Fetched> },
    Cancel { addresses: Vec<BlockAddress> },
    Extension { to: PeerId, payload: Bytes },
    Subscribe { extensions: mpsc::UnboundedSender<(PeerId, Bytes)> },
}

/// A handle to the running block exchange.
#[derive(Clone)]
pub struct Exchange {
    commands: mpsc::Sender<Command>,
}

impl Exchange {
    /// Starts the driver task.
    pub fn start(
        network: Arc<dyn Network>,
        store: SharedStore,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Exchange {
        let (commands, rx) = mpsc::channel(256);
        tokio::spawn(run(network, store, Engine::new(config), rx, metrics));
        Exchange { commands }
    }

    /// Asks `providers` for `addresses`; each outcome arrives on `results`.
    pub async fn want(
        &self,
        addresses: Vec<BlockAddress>,
        providers: Vec<PeerId>,
        results: mpsc::UnboundedSender<Fetched>,
    ) {
        let _ = self.commands.send(Command::Want { addresses, providers, results }).await;
    }

    /// Withdraws wants nobody needs any more.
    pub async fn cancel(&self, addresses: Vec<BlockAddress>) {
        let _ = self.commands.send(Command::Cancel { addresses }).await;
    }

    /// Sends `payload` to `to` in the extension field of a block-exchange message.
    pub async fn send_extension(&self, to: PeerId, payload: Bytes) {
        let _ = self.commands.send(Command::Extension { to, payload }).await;
    }

    /// Extension payloads received from now on (from whom, what); one subscriber at a time.
    pub async fn extensions(&self) -> mpsc::UnboundedReceiver<(PeerId, Bytes)> {
        let (extensions, rx) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Subscribe { extensions }).await;
        rx
    }
}

/// What this node answers a peer that wants `address`.
pub async fn lookup(store: &SharedStore, address: &BlockAddress) -> Answer {
    let found = match address {
        BlockAddress::Cid(cid) if Codec::of(cid) == Some(Codec::Manifest) => {
            crate::dataset::local_manifest(store, *cid).await.map(|data| Answer::Block {
                cid: *cid,
                data,
                proof: None,
            })
        }
        BlockAddress::Cid(cid) => store.get_block(*cid).await.ok().flatten().map(|data| Answer::Block {
            cid: *cid,
            data,
            proof: None,
        }),
        BlockAddress::Leaf { tree, index } => match store.get_leaf(*tree, *index).await {
            Ok(Some(leaf)) => store
                .get_block(leaf.block_cid)
                .await
                .ok()
                .flatten()
                .map(|data| Answer::Block { cid: leaf.block_cid, data, proof: Some(leaf.proof) }),
            _ => None,
        },
    };
    found.unwrap_or(Answer::DontHave)
}

/// How often peer scores are sampled into the `peer_score` histogram.
const SCORE_SAMPLE_INTERVAL: Duration = Duration::from_secs(30);

async fn run(
    network: Arc<dyn Network>,
    store: SharedStore,
    mut engine: Engine,
    mut commands: mpsc::Receiver<Command>,
    metrics: Arc<Metrics>,
) {
    let mut sample_scores = tokio::time::interval(SCORE_SAMPLE_INTERVAL);
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<(PeerId, BlockAddress, Answer)>();
    let mut subscribers: BTreeMap<BlockAddress, Vec<mpsc::UnboundedSender<Fetched>>> = BTreeMap::new();
    let mut extensions: Option<mpsc::UnboundedSender<(PeerId, Bytes)>> = None;
    for peer in network.connected_peers() {
        engine.handle_connected(peer);
    }
    loop {
        let deadline = engine.poll_timeout();
        tokio::select! {
            event = network.next_event() => {
                let now = Instant::now();
                match event {
                    None => return,
                    Some(NetEvent::Connected(peer)) => engine.handle_connected(peer),
                    Some(NetEvent::Disconnected(peer)) => engine.handle_disconnected(now, &peer),
                    Some(NetEvent::Message { from, payload }) => match Message::decode(&payload) {
                        Ok(mut message) => {
                            if let (Some(extension), Some(to)) = (message.extension.take(), &extensions) {
                                let _ = to.send((from.clone(), extension));
                            }
                            engine.handle_message(now, &from, message);
                        }
                        Err(e) => {
                            tracing::warn!(peer = %from, error = %e, "malformed block-exchange message; disconnecting");
                            network.disconnect(&from).await;
                        }
                    },
                }
            }
            command = commands.recv() => match command {
                None => return,
                Some(Command::Want { addresses, providers, results }) => {
                    let now = Instant::now();
                    // A provider dialled a moment ago is connected before its Connected event
                    // is read here: the network knows, so tell the engine first.
                    let connected = network.connected_peers();
                    for provider in providers.iter().filter(|p| connected.contains(p)) {
                        engine.handle_connected(provider.clone());
                    }
                    for address in addresses {
                        subscribers.entry(address.clone()).or_default().push(results.clone());
                        engine.want(now, address, providers.iter().cloned());
                    }
                }
                Some(Command::Cancel { addresses }) => {
                    for address in addresses {
                        subscribers.remove(&address);
                        engine.cancel(&address);
                    }
                }
                Some(Command::Extension { to, payload }) => {
                    let message = Message { extension: Some(payload), ..Message::default() };
                    let network = network.clone();
                    tokio::spawn(async move {
                        if let Err(e) = network.send(&to, Bytes::from(message.encode())).await {
                            tracing::debug!(peer = %to, error = %e, "sending a durability message failed");
                        }
                    });
                }
                Some(Command::Subscribe { extensions: to }) => extensions = Some(to),
            },
            Some((peer, address, answer)) = answers.recv() => engine.serve(&peer, address, answer),
            () = sleep_until(deadline) => engine.handle_timeout(Instant::now()),
            _ = sample_scores.tick() => {
                for (_, score) in engine.scores() {
                    metrics.peer_score.observe(f64::from(score));
                }
            }
        }
        while let Some(event) = engine.poll_event() {
            match event {
                Event::Received { address, cid, data, proof, .. } => {
                    metrics.blocks_received.inc();
                    metrics.block_bytes_received.inc_by(data.len() as u64);
                    for subscriber in subscribers.remove(&address).unwrap_or_default() {
                        let _ = subscriber.send(Fetched::Block {
                            address: address.clone(),
                            cid,
                            data: data.clone(),
                            proof: proof.clone(),
                        });
                    }
                }
                Event::Unavailable { address } => {
                    for subscriber in subscribers.remove(&address).unwrap_or_default() {
                        let _ = subscriber.send(Fetched::Unavailable { address: address.clone() });
                    }
                }
                Event::Requested { peer, address, .. } => {
                    let (store, answers, metrics) = (store.clone(), answers_tx.clone(), metrics.clone());
                    tokio::spawn(async move {
                        let answer = lookup(&store, &address).await;
                        if let Answer::Block { data, .. } = &answer {
                            metrics.blocks_sent.inc();
                            metrics.block_bytes_sent.inc_by(data.len() as u64);
                        }
                        let _ = answers.send((peer, address, answer));
                    });
                }
                Event::Disconnect { peer, .. } => network.disconnect(&peer).await,
            }
        }
        metrics.want_list_size.set(engine.wants_count() as i64);
        while let Some((peer, message)) = engine.poll_transmit() {
            let network = network.clone();
            tokio::spawn(async move {
                if let Err(e) = network.send(&peer, Bytes::from(message.encode())).await {
                    tracing::debug!(%peer, error = %e, "sending a block-exchange message failed");
                }
            });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
