//! The node's persistent identity (production): an ed25519 key kept in the data directory.
//!
//! The key file holds libp2p's protobuf encoding of the keypair, so the peer ID stays the same
//! across restarts and is the one the libp2p transport will present.

use std::io::Write;
use std::path::Path;

use libp2p_identity::Keypair;

use crate::net::PeerId;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading or writing the node key {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the node key {path} is not a valid libp2p keypair: {error}")]
    Invalid { path: String, error: String },
}

/// Loads the keypair from `data_dir`, creating one (readable by the owner only) if absent.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let shown = path.display().to_string();
    let io = |error| IdentityError::Io { path: shown.clone(), error };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| IdentityError::Invalid { path: shown.clone(), error: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let encoded = keypair.to_protobuf_encoding().expect("ed25519 keys encode");
            let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(&encoded).and_then(|()| file.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(keypair)
        }
        Err(e) => Err(io(e)),
    }
}

/// The peer ID of a keypair, in the port's representation.
pub fn peer_id(keypair: &Keypair) -> PeerId {
    PeerId::from_bytes(keypair.public().to_peer_id().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists_and_peer_id_prints_like_libp2p() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(peer_id(&first), peer_id(&again));
        assert_eq!(peer_id(&first).to_string(), first.public().to_peer_id().to_string());
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(IdentityError::Invalid { .. })));
    }
}
