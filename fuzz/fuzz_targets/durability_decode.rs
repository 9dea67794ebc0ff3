//! Any bytes given to the durability protocol's decoder give a message or an error, never a
//! panic, and never more entries than the protocol's caps; a decoded message re-encodes and
//! decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use neverust::durability::wire::{CELLS_MAX, SLOTS_MAX, SlotMessage, SOURCES_MAX};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = SlotMessage::decode(data) {
        match &message {
            SlotMessage::HoldingsAre { slots, pending, .. } => {
                assert!(slots.len() <= SLOTS_MAX && pending.len() <= SLOTS_MAX)
            }
            SlotMessage::Proof { cells, .. } => assert!(cells.len() <= CELLS_MAX),
            SlotMessage::Hold { sources, .. } => assert!(sources.len() <= SOURCES_MAX),
            _ => {}
        }
        let again = SlotMessage::decode(&message.encode()).expect("our own encoding decodes");
        assert_eq!(again, message);
    }
});
