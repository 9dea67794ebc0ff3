//! Any bytes given to the manifest decoder give a manifest or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use neverust::content::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::decode(data) {
        assert_eq!(Manifest::decode(&manifest.encode()).expect("our own encoding decodes"), manifest);
    }
});
