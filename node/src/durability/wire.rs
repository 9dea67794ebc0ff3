//! The durability protocol's messages, carried in the extension field of block-exchange
//! messages ([`crate::exchange::wire::Message::extension`]).
//!
//! ```text
//! Message { 1 kind, 2 request, 3 manifest CID, 4 slot, 5 bytes (entropy | error),
//!           6 repeated slot, 7 repeated Cell { 1 index, 2 data, 3 repeated node },
//!           8 first, 9 count, 10 repeated digest, 11 repeated pending slot,
//!           12 repeated source peer ID, 13 whole }
//! ```

use bytes::Bytes;

use crate::content::Cid;
use crate::content::protobuf::{self, Value, Writer};
use crate::net::PeerId;

/// Most leaf digests asked for or answered in one message (32 bytes each: 256 KiB).
pub const DIGESTS_MAX: u32 = 8192;
/// Most slot numbers in one list of `HoldingsAre` (a dataset has at most this many slots).
pub const SLOTS_MAX: usize = crate::erasure::MAX_SLOTS as usize;
/// Most cells in one `Proof` (a challenge samples [`super::SAMPLES`]).
pub const CELLS_MAX: usize = 64;
/// Most bytes of a cell (Archivist's 2 KiB proof cell).
pub const CELL_BYTES_MAX: usize = crate::merkle::poseidon2::CELL_SIZE_BYTES;
/// Most nodes of a cell's path: its block's tree, then the slot's (2^64 cells at most).
pub const PATH_NODES_MAX: usize = 64;
/// Most source peers a `Hold` names (a holder per slot at most), and the most bytes of each
/// peer ID.
pub const SOURCES_MAX: usize = SLOTS_MAX;
pub const PEER_ID_BYTES_MAX: usize = 128;
/// Most bytes of a `Held` error text.
pub const ERROR_BYTES_MAX: usize = 1024;

/// One message of the durability protocol. Requests carry an id their answer repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotMessage {
    /// Hold slot `slot` of the protected dataset `manifest`: fetch its blocks, or rebuild the
    /// ones nobody serves from their columns, verify them against the slot root, keep them.
    /// `sources` are peers known to hold parts of the dataset (besides the sender).
    Hold { request: u64, manifest: Cid, slot: u32, sources: Vec<PeerId> },
    /// The outcome of a `Hold`: an empty error means the slot is held and verified.
    Held { request: u64, error: String },
    /// Which slots of `manifest` do you hold?
    Holdings { request: u64, manifest: Cid },
    /// The slots held, the slots being taken (fetched or rebuilt right now), and whether the
    /// whole dataset is stored too.
    HoldingsAre { request: u64, slots: Vec<u32>, pending: Vec<u32>, whole: bool },
    /// Prove slot `slot` of `manifest`: the cells sampled from `entropy` and the slot root.
    Challenge { request: u64, manifest: Cid, slot: u32, entropy: [u8; 32] },
    /// The sampled cells with their paths to the slot root; none if the slot is not held.
    Proof { request: u64, cells: Vec<CellAnswer> },
    /// Leaf digests `first..first + count` of the dataset tree of `manifest`.
    Digests { request: u64, manifest: Cid, first: u64, count: u32 },
    /// The digests asked for; none if this node lacks the tree.
    DigestsAre { request: u64, digests: Vec<[u8; 32]> },
}

/// One sampled cell: its index in the slot, its bytes, its path (block part, then slot part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellAnswer {
    pub index: u64,
    pub data: Bytes,
    pub path: Vec<[u8; 32]>,
}

/// Why bytes are not a durability message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotWireError {
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] protobuf::DecodeError),
    #[error("field {0} is missing or malformed")]
    Field(&'static str),
    #[error("unknown message kind {0}")]
    Kind(u64),
    /// A repeated field holds more entries, or a field more bytes, than the protocol needs.
    #[error("field {field}: more than {max}")]
    TooLarge { field: &'static str, max: usize },
}

/// Pushes `value` onto `list` unless it already holds `max` entries.
fn push_capped<T>(list: &mut Vec<T>, value: T, field: &'static str, max: usize) -> Result<(), SlotWireError> {
    if list.len() >= max {
        return Err(SlotWireError::TooLarge { field, max });
    }
    list.push(value);
    Ok(())
}

/// `bytes` unless longer than `max`.
fn capped<'a>(bytes: &'a [u8], field: &'static str, max: usize) -> Result<&'a [u8], SlotWireError> {
    if bytes.len() > max {
        return Err(SlotWireError::TooLarge { field, max });
    }
    Ok(bytes)
}

impl SlotMessage {
    /// The request id the message carries.
    pub fn request(&self) -> u64 {
        match self {
            SlotMessage::Hold { request, .. }
            | SlotMessage::Held { request, .. }
            | SlotMessage::Holdings { request, .. }
            | SlotMessage::HoldingsAre { request, .. }
            | SlotMessage::Challenge { request, .. }
            | SlotMessage::Proof { request, .. }
            | SlotMessage::Digests { request, .. }
            | SlotMessage::DigestsAre { request, .. } => *request,
        }
    }

    /// Whether this message answers a request (rather than asking).
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            SlotMessage::Held { .. }
                | SlotMessage::HoldingsAre { .. }
                | SlotMessage::Proof { .. }
                | SlotMessage::DigestsAre { .. }
        )
    }

    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        let kind = match self {
            SlotMessage::Hold { .. } => 1,
            SlotMessage::Held { .. } => 2,
            SlotMessage::Holdings { .. } => 3,
            SlotMessage::HoldingsAre { .. } => 4,
            SlotMessage::Challenge { .. } => 5,
            SlotMessage::Proof { .. } => 6,
            SlotMessage::Digests { .. } => 7,
            SlotMessage::DigestsAre { .. } => 8,
        };
        w.uint(1, kind).uint(2, self.request());
        match self {
            SlotMessage::Hold { manifest, slot, sources, .. } => {
                w.bytes(3, &manifest.to_bytes()).uint(4, u64::from(*slot));
                for source in sources {
                    w.bytes(12, source.as_bytes());
                }
            }
            SlotMessage::Held { error, .. } => {
                w.bytes(5, error.as_bytes());
            }
            SlotMessage::Holdings { manifest, .. } => {
                w.bytes(3, &manifest.to_bytes());
            }
            SlotMessage::HoldingsAre { slots, pending, whole, .. } => {
                w.uint(13, u64::from(*whole));
                for slot in slots {
                    w.uint(6, u64::from(*slot));
                }
                for slot in pending {
                    w.uint(11, u64::from(*slot));
                }
            }
            SlotMessage::Challenge { manifest, slot, entropy, .. } => {
                w.bytes(3, &manifest.to_bytes()).uint(4, u64::from(*slot)).bytes(5, entropy);
            }
            SlotMessage::Proof { cells, .. } => {
                for cell in cells {
                    let mut c = Writer::new();
                    c.uint(1, cell.index).bytes(2, &cell.data);
                    for node in &cell.path {
                        c.bytes(3, node);
                    }
                    w.bytes(7, &c.finish());
                }
            }
            SlotMessage::Digests { manifest, first, count, .. } => {
                w.bytes(3, &manifest.to_bytes()).uint(8, *first).uint(9, u64::from(*count));
            }
            SlotMessage::DigestsAre { digests, .. } => {
                for digest in digests {
                    w.bytes(10, digest);
                }
            }
        }
        Bytes::from(w.finish())
    }

    /// Reads a message; every repeated field and byte field is capped by what the protocol
    /// needs (the `*_MAX` constants), so a peer cannot make the decoder allocate more.
    pub fn decode(input: &[u8]) -> Result<SlotMessage, SlotWireError> {
        let (mut kind, mut request, mut manifest, mut slot) = (None, 0, None, 0u32);
        let (mut text, mut slots, mut cells, mut digests) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut first, mut count, mut pending, mut sources) = (0u64, 0u32, Vec::new(), Vec::new());
        let mut whole = false;
        for field in protobuf::fields(input) {
            match field? {
                (1, Value::Varint(v)) => kind = Some(v),
                (2, Value::Varint(v)) => request = v,
                (3, Value::Bytes(b)) => {
                    manifest = Some(Cid::try_from(b).map_err(|_| SlotWireError::Field("manifest"))?)
                }
                (4, Value::Varint(v)) => slot = u32::try_from(v).map_err(|_| SlotWireError::Field("slot"))?,
                (5, Value::Bytes(b)) => text = capped(b, "error or entropy", ERROR_BYTES_MAX)?.to_vec(),
                (6, Value::Varint(v)) => {
                    let slot = u32::try_from(v).map_err(|_| SlotWireError::Field("slots"))?;
                    push_capped(&mut slots, slot, "slots", SLOTS_MAX)?
                }
                (7, Value::Bytes(b)) => push_capped(&mut cells, decode_cell(b)?, "cells", CELLS_MAX)?,
                (8, Value::Varint(v)) => first = v,
                (9, Value::Varint(v)) => {
                    count = u32::try_from(v).map_err(|_| SlotWireError::Field("count"))?
                }
                (10, Value::Bytes(b)) => {
                    let digest = b.try_into().map_err(|_| SlotWireError::Field("digests"))?;
                    push_capped(&mut digests, digest, "digests", DIGESTS_MAX as usize)?
                }
                (11, Value::Varint(v)) => {
                    let slot = u32::try_from(v).map_err(|_| SlotWireError::Field("pending"))?;
                    push_capped(&mut pending, slot, "pending", SLOTS_MAX)?
                }
                (12, Value::Bytes(b)) => {
                    let peer = PeerId::from_bytes(capped(b, "sources", PEER_ID_BYTES_MAX)?.to_vec());
                    push_capped(&mut sources, peer, "sources", SOURCES_MAX)?
                }
                (13, Value::Varint(v)) => whole = v != 0,
                _ => {}
            }
        }
        let manifest = || manifest.ok_or(SlotWireError::Field("manifest"));
        Ok(match kind.ok_or(SlotWireError::Field("kind"))? {
            1 => SlotMessage::Hold { request, manifest: manifest()?, slot, sources },
            2 => SlotMessage::Held {
                request,
                error: String::from_utf8(text).map_err(|_| SlotWireError::Field("error"))?,
            },
            3 => SlotMessage::Holdings { request, manifest: manifest()? },
            4 => SlotMessage::HoldingsAre { request, slots, pending, whole },
            5 => SlotMessage::Challenge {
                request,
                manifest: manifest()?,
                slot,
                entropy: text.try_into().map_err(|_| SlotWireError::Field("entropy"))?,
            },
            6 => SlotMessage::Proof { request, cells },
            7 if count > DIGESTS_MAX => {
                return Err(SlotWireError::TooLarge { field: "count", max: DIGESTS_MAX as usize });
            }
            7 => SlotMessage::Digests { request, manifest: manifest()?, first, count },
            8 => SlotMessage::DigestsAre { request, digests },
            other => return Err(SlotWireError::Kind(other)),
        })
    }
}

fn decode_cell(input: &[u8]) -> Result<CellAnswer, SlotWireError> {
    let mut cell = CellAnswer { index: 0, data: Bytes::new(), path: Vec::new() };
    for field in protobuf::fields(input) {
        match field? {
            (1, Value::Varint(v)) => cell.index = v,
            (2, Value::Bytes(b)) => {
                cell.data = Bytes::copy_from_slice(capped(b, "cell data", CELL_BYTES_MAX)?)
            }
            (3, Value::Bytes(b)) => {
                let node = b.try_into().map_err(|_| SlotWireError::Field("path"))?;
                push_capped(&mut cell.path, node, "path", PATH_NODES_MAX)?
            }
            _ => {}
        }
    }
    Ok(cell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::manifest_cid;

    #[test]
    fn every_message_round_trips() {
        let manifest = manifest_cid(b"m");
        let messages = [
            SlotMessage::Hold {
                request: 1,
                manifest,
                slot: 4,
                sources: vec![PeerId::from_bytes(vec![1, 2, 3])],
            },
            SlotMessage::Held { request: 2, error: String::new() },
            SlotMessage::Held { request: 2, error: "slot root mismatch".into() },
            SlotMessage::Holdings { request: 3, manifest },
            SlotMessage::HoldingsAre { request: 4, slots: vec![0, 3], pending: vec![1], whole: true },
            SlotMessage::Challenge { request: 5, manifest, slot: 2, entropy: [9; 32] },
            SlotMessage::Proof {
                request: 6,
                cells: vec![CellAnswer {
                    index: 77,
                    data: Bytes::from_static(b"cell"),
                    path: vec![[1; 32], [2; 32]],
                }],
            },
            SlotMessage::Digests { request: 7, manifest, first: 10, count: 3 },
            SlotMessage::DigestsAre { request: 8, digests: vec![[5; 32]] },
        ];
        for message in messages {
            assert_eq!(SlotMessage::decode(&message.encode()).unwrap(), message);
        }
        assert_eq!(SlotMessage::decode(&[0x08, 0x63]), Err(SlotWireError::Kind(99)));
        assert!(SlotMessage::decode(&[0x08, 0x01]).is_err(), "a hold without a manifest");
    }

    #[test]
    fn oversized_fields_are_refused_by_name() {
        let manifest = manifest_cid(b"m");
        let too_large = |message: SlotMessage| SlotMessage::decode(&message.encode()).unwrap_err();
        let over = |field, max| SlotWireError::TooLarge { field, max };
        let slots: Vec<u32> = (0..=SLOTS_MAX as u32).collect();
        let holdings =
            SlotMessage::HoldingsAre { request: 1, slots: slots.clone(), pending: vec![], whole: false };
        assert_eq!(too_large(holdings), over("slots", SLOTS_MAX));
        let pending = SlotMessage::HoldingsAre { request: 1, slots: vec![], pending: slots, whole: false };
        assert_eq!(too_large(pending), over("pending", SLOTS_MAX));
        let cell =
            CellAnswer { index: 0, data: Bytes::from(vec![0; CELL_BYTES_MAX]), path: vec![[0; 32]; 8] };
        let proof = SlotMessage::Proof { request: 1, cells: vec![cell.clone(); CELLS_MAX] };
        assert!(SlotMessage::decode(&proof.encode()).is_ok(), "the largest proof the protocol needs");
        assert_eq!(
            too_large(SlotMessage::Proof { request: 1, cells: vec![cell.clone(); CELLS_MAX + 1] }),
            over("cells", CELLS_MAX)
        );
        let fat = CellAnswer { data: Bytes::from(vec![0; CELL_BYTES_MAX + 1]), ..cell.clone() };
        assert_eq!(
            too_large(SlotMessage::Proof { request: 1, cells: vec![fat] }),
            over("cell data", CELL_BYTES_MAX)
        );
        let deep = CellAnswer { path: vec![[0; 32]; PATH_NODES_MAX + 1], ..cell };
        assert_eq!(
            too_large(SlotMessage::Proof { request: 1, cells: vec![deep] }),
            over("path", PATH_NODES_MAX)
        );
        let digests =
            SlotMessage::DigestsAre { request: 1, digests: vec![[0; 32]; DIGESTS_MAX as usize + 1] };
        assert_eq!(too_large(digests), over("digests", DIGESTS_MAX as usize));
        let asked = SlotMessage::Digests { request: 1, manifest, first: 0, count: DIGESTS_MAX + 1 };
        assert_eq!(too_large(asked), over("count", DIGESTS_MAX as usize));
        let sources = vec![PeerId::from_bytes(vec![1; 38]); SOURCES_MAX + 1];
        assert_eq!(
            too_large(SlotMessage::Hold { request: 1, manifest, slot: 0, sources }),
            over("sources", SOURCES_MAX)
        );
        let long_id = vec![PeerId::from_bytes(vec![1; PEER_ID_BYTES_MAX + 1])];
        assert_eq!(
            too_large(SlotMessage::Hold { request: 1, manifest, slot: 0, sources: long_id }),
            over("sources", PEER_ID_BYTES_MAX)
        );
        let error = SlotMessage::Held { request: 1, error: "x".repeat(ERROR_BYTES_MAX + 1) };
        assert_eq!(too_large(error), over("error or entropy", ERROR_BYTES_MAX));
    }
}
