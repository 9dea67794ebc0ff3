//! The wire codec: round trips, a frozen encoding, and hostile input.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::content::{Block, tree_cid};
use crate::merkle::MerkleTree;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sample() -> Message {
    let blocks: Vec<Block> = (0..3u8).map(|i| Block::new(Bytes::from(vec![i; 8]))).collect();
    let tree = MerkleTree::build(blocks.iter().map(|b| *b.digest()).collect()).unwrap();
    let root = tree_cid(&tree.root());
    Message {
        want_list: WantList {
            entries: vec![
                WantEntry {
                    address: BlockAddress::Leaf { tree: root, index: 2 },
                    priority: 1,
                    cancel: false,
                    want_type: WantType::Block,
                    send_dont_have: true,
                },
                WantEntry {
                    address: BlockAddress::Cid(*blocks[0].cid()),
                    priority: -3,
                    cancel: true,
                    want_type: WantType::Have,
                    send_dont_have: false,
                },
            ],
            full: true,
        },
        payload: vec![BlockDelivery {
            cid: *blocks[1].cid(),
            data: blocks[1].data().clone(),
            address: BlockAddress::Leaf { tree: root, index: 1 },
            proof: Some(tree.proof(1)),
        }],
        presences: vec![BlockPresence {
            address: BlockAddress::Cid(*blocks[2].cid()),
            presence: Presence::DontHave,
        }],
        pending_bytes: 65_536,
        extension: None,
    }
}

/// The extension field carries durability messages; it round-trips, and a message without one
/// encodes exactly as Archivist's.
#[test]
fn extension_round_trips_after_the_archivist_fields() {
    let plain = sample().encode();
    let message = Message { extension: Some(Bytes::from_static(b"slot message")), ..sample() };
    let encoded = message.encode();
    assert_eq!(&encoded[..plain.len()], &plain[..]);
    assert_eq!(Message::decode(&Bytes::from(encoded)).unwrap(), message);
}

#[test]
fn encoding_does_not_drift() {
    let message = sample();
    let encoded = message.encode();
    insta::assert_snapshot!("blockexc_message", hex(&encoded));
    assert_eq!(Message::decode(&Bytes::from(encoded)).unwrap(), message);
}

#[test]
fn frames_carry_their_length() {
    let frame = sample().encode_frame();
    let (length, prefix) = frame_length(&frame, MESSAGE_SIZE_MAX_BYTES).unwrap().unwrap();
    assert_eq!(prefix + length, frame.len());
    assert_eq!(frame_length(&frame[..0], 10), Ok(None), "no prefix yet");
    assert_eq!(frame_length(&[0x80], 10), Ok(None), "prefix cut mid-varint");
}

#[test]
fn oversized_and_malformed_frames_are_errors() {
    // A prefix announcing 200 MiB is refused before any allocation.
    let mut prefix = Vec::new();
    crate::content::protobuf::put_varint(&mut prefix, 200 << 20);
    assert!(matches!(frame_length(&prefix, MESSAGE_SIZE_MAX_BYTES), Err(WireError::TooLarge { .. })));
    assert!(matches!(frame_length(&[0xff; 11], MESSAGE_SIZE_MAX_BYTES), Err(WireError::Protobuf(_))));
    // (input, why it is wrong)
    let cases: [(&[u8], &str); 4] = [
        (&[0x0a, 0x02, 0x0a], "want list cut short"),
        (&[0x1a, 0x02, 0x08, 0x01], "delivery without cid or address"),
        (&[0x22, 0x02, 0x10, 0x05], "presence type 5"),
        (&[0x0a, 0x04, 0x0a, 0x02, 0x08, 0x01], "leaf address without a tree"),
    ];
    for (input, why) in cases {
        assert!(Message::decode(&Bytes::copy_from_slice(input)).is_err(), "{why}");
    }
}

#[test]
fn archivist_proof_encoding_round_trips() {
    let tree = MerkleTree::build((0..5u8).map(|i| [i; 32]).collect()).unwrap();
    let proof = tree.proof(4);
    assert_eq!(decode_proof(&encode_proof(&proof)).unwrap(), proof);
    let mut other_codec = crate::content::protobuf::Writer::new();
    other_codec.uint(1, 0xb220).uint(2, 0).uint(3, 1);
    assert_eq!(decode_proof(&other_codec.finish()), Err(WireError::Invalid("proof.mcodec")));
}

proptest! {
    #[test]
    fn messages_round_trip(
        indices in proptest::collection::vec(any::<u64>(), 0..6),
        data in proptest::collection::vec(any::<u8>(), 0..100),
        priority in any::<i32>(),
        pending in any::<u64>(),
        full in any::<bool>(),
    ) {
        let mut message = sample();
        let root = tree_cid(&[9; 32]);
        message.want_list.full = full;
        message.pending_bytes = pending;
        for index in indices {
            message.want_list.entries.push(WantEntry {
                address: BlockAddress::Leaf { tree: root, index },
                priority,
                cancel: index % 2 == 0,
                want_type: if index % 3 == 0 { WantType::Have } else { WantType::Block },
                send_dont_have: index % 5 == 0,
            });
        }
        let block = Block::new(Bytes::from(data));
        message.payload.push(BlockDelivery { cid: *block.cid(), data: block.data().clone(), address: BlockAddress::Cid(*block.cid()), proof: None });
        let encoded = Bytes::from(message.encode());
        prop_assert_eq!(Message::decode(&encoded).unwrap(), message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Message::decode(&Bytes::from(input.clone()));
        let _ = decode_proof(&input);
        let _ = frame_length(&input, 1 << 20);
    }

    #[test]
    fn mutated_messages_never_panic(flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut encoded = sample().encode();
        let at = flip.index(encoded.len());
        encoded[at] = byte;
        let _ = Message::decode(&Bytes::from(encoded));
    }
}
