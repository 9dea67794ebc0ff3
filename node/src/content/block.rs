//! A block: bytes and the CID that names them.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::cid::{Cid, Codec, digest_of, sha256_cid};

/// A data block with its CID. Constructed only by hashing the data, so the two always agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    cid: Cid,
    digest: [u8; 32],
    data: Bytes,
}

impl Block {
    /// Hashes `data` and names it with a block CID.
    pub fn new(data: Bytes) -> Block {
        let digest: [u8; 32] = Sha256::digest(&data).into();
        Block { cid: sha256_cid(Codec::Block, &digest), digest, data }
    }

    /// Accepts `data` under `cid` only if the data hashes to it (the check for bytes read back
    /// from disk or received from a peer).
    pub fn verified(cid: Cid, data: Bytes) -> Option<Block> {
        let block = Block::new(data);
        (digest_of(&cid) == Some(block.digest) && cid.codec() == block.cid.codec()).then_some(block)
    }

    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    /// The SHA-256 digest of the data: the block's leaf in the dataset tree.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn into_data(self) -> Bytes {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_rejects_other_bytes() {
        let block = Block::new(Bytes::from_static(b"abc"));
        assert!(Block::verified(*block.cid(), Bytes::from_static(b"abc")).is_some());
        assert!(Block::verified(*block.cid(), Bytes::from_static(b"abd")).is_none());
    }
}
