//! The wire format of `/archivist/blockexc/1.0.0`: length-prefixed protobuf messages.
//!
//! ```text
//! Message       { 1 WantList, 3 repeated BlockDelivery, 4 repeated BlockPresence, 5 pendingBytes }
//! WantList      { 1 repeated Entry, 2 full }
//! Entry         { 1 BlockAddress, 2 priority, 3 cancel, 4 wantType (0 block, 1 have), 5 sendDontHave }
//! BlockDelivery { 1 cid, 2 data, 3 BlockAddress, 4 proof (leaf addresses only) }
//! BlockPresence { 1 BlockAddress, 2 type (0 have, 1 dontHave) }
//! BlockAddress  { 1 leaf, 2 treeCid, 3 index | 4 cid }
//! Proof         { 1 multicodec, 2 index, 3 leaves, 4 repeated { 1 node } }
//! ```
//!
//! Each message travels as an unsigned-varint length and the message bytes. Decoding never
//! panics on hostile input and refuses a frame over [`MESSAGE_SIZE_MAX_BYTES`] before allocating.

use bytes::Bytes;

use crate::content::Cid;
use crate::content::protobuf::{self, DecodeError, Value, Writer};
use crate::merkle::{Digest, MerkleProof};

/// Largest message accepted or sent (Archivist's limit).
pub const MESSAGE_SIZE_MAX_BYTES: usize = 100 << 20;
/// Most entries accepted in one want list, and most deliveries or presences in one message.
pub const ENTRIES_MAX_COUNT: usize = 16_384;
/// Deepest Merkle proof accepted (a tree of 2^64 leaves).
const PROOF_DEPTH_MAX: usize = 64;

/// What a want-list entry or presence refers to: a leaf of a dataset tree, or a block by CID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlockAddress {
    Leaf { tree: Cid, index: u64 },
    Cid(Cid),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WantType {
    /// Send the block.
    Block,
    /// Say whether you have it.
    Have,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantEntry {
    pub address: BlockAddress,
    pub priority: i32,
    /// Revokes an earlier want for the address.
    pub cancel: bool,
    pub want_type: WantType,
    /// Answer `DontHave` rather than silence when the block is missing.
    pub send_dont_have: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WantList {
    pub entries: Vec<WantEntry>,
    /// Replaces the peer's whole want list rather than adding to it.
    pub full: bool,
}

/// A block sent to a peer; leaf deliveries carry the inclusion proof against the tree root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDelivery {
    pub cid: Cid,
    pub data: Bytes,
    pub address: BlockAddress,
    pub proof: Option<MerkleProof>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Have,
    DontHave,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPresence {
    pub address: BlockAddress,
    pub presence: Presence,
}

/// One block-exchange message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub want_list: WantList,
    pub payload: Vec<BlockDelivery>,
    pub presences: Vec<BlockPresence>,
    pub pending_bytes: u64,
    /// Neverust's extension (field 20): a durability-protocol message (slot placement, cell
    /// checks), opaque here. Archivist peers skip the unknown field.
    pub extension: Option<Bytes>,
}

/// The field number of [`Message::extension`].
const EXTENSION_FIELD: u32 = 20;

/// Why bytes are not a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] DecodeError),
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {0} has a wrong type or value")]
    Invalid(&'static str),
    #[error("frame of {size_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge { size_bytes: u64, limit_bytes: usize },
    #[error("more than {ENTRIES_MAX_COUNT} entries in {0}")]
    TooMany(&'static str),
}

// ---- encoding ----

fn encode_address(address: &BlockAddress) -> Vec<u8> {
    let mut w = Writer::new();
    match address {
        BlockAddress::Leaf { tree, index } => {
            w.uint(1, 1).bytes(2, &tree.to_bytes()).uint(3, *index);
        }
        BlockAddress::Cid(cid) => {
            w.uint(1, 0).bytes(4, &cid.to_bytes());
        }
    }
    w.finish()
}

/// Archivist's proof encoding (multicodec SHA2-256, index, leaves, nodes).
pub fn encode_proof(proof: &MerkleProof) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(1, crate::content::SHA2_256).uint(2, proof.index).uint(3, proof.leaves_count);
    for node in &proof.path {
        let mut inner = Writer::new();
        inner.bytes(1, node);
        w.bytes(4, &inner.finish());
    }
    w.finish()
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut list = Writer::new();
        for entry in &self.want_list.entries {
            let mut e = Writer::new();
            e.bytes(1, &encode_address(&entry.address))
                .uint(2, entry.priority as u32 as u64)
                .uint(3, entry.cancel as u64)
                .uint(4, matches!(entry.want_type, WantType::Have) as u64)
                .uint(5, entry.send_dont_have as u64);
            list.bytes(1, &e.finish());
        }
        list.uint(2, self.want_list.full as u64);
        let mut w = Writer::new();
        w.bytes(1, &list.finish());
        for delivery in &self.payload {
            let mut d = Writer::new();
            d.bytes(1, &delivery.cid.to_bytes())
                .bytes(2, &delivery.data)
                .bytes(3, &encode_address(&delivery.address));
            if let (BlockAddress::Leaf { .. }, Some(proof)) = (&delivery.address, &delivery.proof) {
                d.bytes(4, &encode_proof(proof));
            }
            w.bytes(3, &d.finish());
        }
        for presence in &self.presences {
            let mut p = Writer::new();
            p.bytes(1, &encode_address(&presence.address))
                .uint(2, matches!(presence.presence, Presence::DontHave) as u64);
            w.bytes(4, &p.finish());
        }
        w.uint(5, self.pending_bytes);
        if let Some(extension) = &self.extension {
            w.bytes(EXTENSION_FIELD, extension);
        }
        w.finish()
    }

    /// The message as a frame: varint length, then the message.
    pub fn encode_frame(&self) -> Vec<u8> {
        let body = self.encode();
        let mut frame = Vec::with_capacity(body.len() + 10);
        protobuf::put_varint(&mut frame, body.len() as u64);
        frame.extend_from_slice(&body);
        frame
    }
}

// ---- decoding ----

fn uint(value: Value<'_>, name: &'static str) -> Result<u64, WireError> {
    match value {
        Value::Varint(v) => Ok(v),
        _ => Err(WireError::Invalid(name)),
    }
}

fn bytes<'a>(value: Value<'a>, name: &'static str) -> Result<&'a [u8], WireError> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(WireError::Invalid(name)),
    }
}

fn cid(value: Value<'_>, name: &'static str) -> Result<Cid, WireError> {
    Cid::try_from(bytes(value, name)?).map_err(|_| WireError::Invalid(name))
}

fn decode_address(input: &[u8]) -> Result<BlockAddress, WireError> {
    let (mut leaf, mut tree, mut index, mut block) = (false, None, 0, None);
    for field in protobuf::fields(input) {
        match field? {
            (1, v) => leaf = uint(v, "address.leaf")? != 0,
            (2, v) => tree = Some(cid(v, "address.treeCid")?),
            (3, v) => index = uint(v, "address.index")?,
            (4, v) => block = Some(cid(v, "address.cid")?),
            _ => {}
        }
    }
    if leaf {
        Ok(BlockAddress::Leaf { tree: tree.ok_or(WireError::Missing("address.treeCid"))?, index })
    } else {
        Ok(BlockAddress::Cid(block.ok_or(WireError::Missing("address.cid"))?))
    }
}

/// Decodes Archivist's proof encoding.
pub fn decode_proof(input: &[u8]) -> Result<MerkleProof, WireError> {
    let (mut codec, mut index, mut leaves_count, mut path) = (None, 0, 0, Vec::new());
    for field in protobuf::fields(input) {
        match field? {
            (1, v) => codec = Some(uint(v, "proof.mcodec")?),
            (2, v) => index = uint(v, "proof.index")?,
            (3, v) => leaves_count = uint(v, "proof.nleaves")?,
            (4, v) => {
                if path.len() == PROOF_DEPTH_MAX {
                    return Err(WireError::Invalid("proof.path"));
                }
                let mut node = None;
                for inner in protobuf::fields(bytes(v, "proof.path")?) {
                    if let (1, v) = inner? {
                        let digest: Digest = bytes(v, "proof.node")?
                            .try_into()
                            .map_err(|_| WireError::Invalid("proof.node"))?;
                        node = Some(digest);
                    }
                }
                path.push(node.ok_or(WireError::Missing("proof.node"))?);
            }
            _ => {}
        }
    }
    if codec != Some(crate::content::SHA2_256) {
        return Err(WireError::Invalid("proof.mcodec"));
    }
    Ok(MerkleProof { index, leaves_count, path })
}

fn decode_entry(input: &[u8]) -> Result<WantEntry, WireError> {
    let mut entry = WantEntry {
        address: BlockAddress::Cid(Cid::default()),
        priority: 1,
        cancel: false,
        want_type: WantType::Block,
        send_dont_have: false,
    };
    let mut address = None;
    for field in protobuf::fields(input) {
        match field? {
            (1, v) => address = Some(decode_address(bytes(v, "entry.address")?)?),
            (2, v) => entry.priority = uint(v, "entry.priority")? as i32,
            (3, v) => entry.cancel = uint(v, "entry.cancel")? != 0,
            (4, v) => {
                entry.want_type = match uint(v, "entry.wantType")? {
                    0 => WantType::Block,
                    1 => WantType::Have,
                    _ => return Err(WireError::Invalid("entry.wantType")),
                }
            }
            (5, v) => entry.send_dont_have = uint(v, "entry.sendDontHave")? != 0,
            _ => {}
        }
    }
    entry.address = address.ok_or(WireError::Missing("entry.address"))?;
    Ok(entry)
}

fn decode_want_list(input: &[u8]) -> Result<WantList, WireError> {
    let mut list = WantList::default();
    for field in protobuf::fields(input) {
        match field? {
            (1, v) => {
                if list.entries.len() == ENTRIES_MAX_COUNT {
                    return Err(WireError::TooMany("wantlist"));
                }
                list.entries.push(decode_entry(bytes(v, "wantlist.entries")?)?);
            }
            (2, v) => list.full = uint(v, "wantlist.full")? != 0,
            _ => {}
        }
    }
    Ok(list)
}

fn decode_delivery(frame: &Bytes, input: &[u8]) -> Result<BlockDelivery, WireError> {
    let (mut block_cid, mut data, mut address, mut proof) = (None, None, None, None);
    for field in protobuf::fields(input) {
        match field? {
            (1, v) => block_cid = Some(cid(v, "delivery.cid")?),
            (2, v) => data = Some(frame.slice_ref(bytes(v, "delivery.data")?)),
            (3, v) => address = Some(decode_address(bytes(v, "delivery.address")?)?),
            (4, v) => proof = Some(decode_proof(bytes(v, "delivery.proof")?)?),
            _ => {}
        }
    }
    let address = address.ok_or(WireError::Missing("delivery.address"))?;
    if matches!(address, BlockAddress::Cid(_)) {
        proof = None;
    }
    Ok(BlockDelivery {
        cid: block_cid.ok_or(WireError::Missing("delivery.cid"))?,
        data: data.unwrap_or_default(),
        address,
        proof,
    })
}

fn decode_presence(input: &[u8]) -> Result<BlockPresence, WireError> {
    let (mut address, mut presence) = (None, Presence::Have);
    for field in protobuf::fields(input) {
        match field? {
            (1, v) => address = Some(decode_address(bytes(v, "presence.address")?)?),
            (2, v) => {
                presence = match uint(v, "presence.type")? {
                    0 => Presence::Have,
                    1 => Presence::DontHave,
                    _ => return Err(WireError::Invalid("presence.type")),
                }
            }
            _ => {}
        }
    }
    Ok(BlockPresence { address: address.ok_or(WireError::Missing("presence.address"))?, presence })
}

impl Message {
    /// Decodes one message. Block data is sliced out of `input` without copying.
    pub fn decode(input: &Bytes) -> Result<Message, WireError> {
        if input.len() > MESSAGE_SIZE_MAX_BYTES {
            return Err(WireError::TooLarge {
                size_bytes: input.len() as u64,
                limit_bytes: MESSAGE_SIZE_MAX_BYTES,
            });
        }
        let mut message = Message::default();
        for field in protobuf::fields(input) {
            match field? {
                (1, v) => message.want_list = decode_want_list(bytes(v, "wantlist")?)?,
                (3, v) => {
                    if message.payload.len() == ENTRIES_MAX_COUNT {
                        return Err(WireError::TooMany("payload"));
                    }
                    message.payload.push(decode_delivery(input, bytes(v, "payload")?)?);
                }
                (4, v) => {
                    if message.presences.len() == ENTRIES_MAX_COUNT {
                        return Err(WireError::TooMany("blockPresences"));
                    }
                    message.presences.push(decode_presence(bytes(v, "blockPresences")?)?);
                }
                (5, v) => message.pending_bytes = uint(v, "pendingBytes")?,
                (EXTENSION_FIELD, v) => {
                    message.extension = Some(input.slice_ref(bytes(v, "extension")?));
                }
                _ => {}
            }
        }
        Ok(message)
    }
}

/// Reads the length prefix at the front of `input`: `Ok(None)` if more bytes are needed,
/// the body length and prefix length otherwise. Refuses lengths over `limit_bytes`.
pub fn frame_length(input: &[u8], limit_bytes: usize) -> Result<Option<(usize, usize)>, WireError> {
    match protobuf::get_varint(input) {
        Ok((length, _)) if length > limit_bytes as u64 => {
            Err(WireError::TooLarge { size_bytes: length, limit_bytes })
        }
        Ok((length, used)) => Ok(Some((length as usize, used))),
        Err(DecodeError::Truncated) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
