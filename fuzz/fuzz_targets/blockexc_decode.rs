//! Any bytes given to the block-exchange decoder give a message or an error, never a panic;
//! a decoded message re-encodes and decodes to itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use neverust::exchange::wire::{MESSAGE_SIZE_MAX_BYTES, Message, frame_length};

fuzz_target!(|data: &[u8]| {
    let _ = frame_length(data, MESSAGE_SIZE_MAX_BYTES);
    if let Ok(message) = Message::decode(&Bytes::copy_from_slice(data)) {
        let again = Message::decode(&Bytes::from(message.encode())).expect("our own encoding decodes");
        assert_eq!(again, message);
    }
});
