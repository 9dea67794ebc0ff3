//! CIDv1 with SHA-256 multihashes and Archivist's multicodecs.

use sha2::{Digest as _, Sha256};

pub use ::cid::Cid;
use ::cid::multibase::Base;
use ::cid::multihash::Multihash;

/// The multihash code of SHA2-256.
pub const SHA2_256: u64 = 0x12;
/// Archivist's multihash code of a Poseidon2 (BN254) sponge digest.
pub const POSEIDON2_SPONGE: u64 = 0xcd10;

/// Archivist's multicodecs, as used in CIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u64)]
pub enum Codec {
    /// A dataset manifest (dag-pb encoded).
    Manifest = 0xcd01,
    /// A data block.
    Block = 0xcd02,
    /// The root of a dataset tree; the multihash digest is the root itself.
    DatasetRoot = 0xcd03,
    /// The root of a slot tree (Poseidon2).
    SlotRoot = 0xcd04,
}

impl Codec {
    pub fn of(cid: &Cid) -> Option<Codec> {
        match cid.codec() {
            0xcd01 => Some(Codec::Manifest),
            0xcd02 => Some(Codec::Block),
            0xcd03 => Some(Codec::DatasetRoot),
            0xcd04 => Some(Codec::SlotRoot),
            _ => None,
        }
    }
}

/// Why a string or byte sequence is not a CID we can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidError {
    /// Not a CID at all (bad multibase, varint or multihash).
    #[error("malformed CID {0:?}: {1}")]
    Malformed(String, String),
}

/// A CIDv1 with `codec` whose multihash is SHA2-256 with the given 32-byte digest.
pub fn sha256_cid(codec: Codec, digest: &[u8; 32]) -> Cid {
    let hash = Multihash::<64>::wrap(SHA2_256, digest).expect("32 bytes fit a 64-byte multihash");
    Cid::new_v1(codec as u64, hash)
}

/// A CIDv1 with `codec` whose multihash is a Poseidon2 digest (a BN254 element, 32 bytes
/// little-endian): how slot roots and the verification root are named.
pub fn poseidon2_cid(codec: Codec, digest: &[u8; 32]) -> Cid {
    let hash = Multihash::<64>::wrap(POSEIDON2_SPONGE, digest).expect("32 bytes fit a 64-byte multihash");
    Cid::new_v1(codec as u64, hash)
}

/// The 32-byte Poseidon2 digest inside a CID, if it has one.
pub fn poseidon2_digest_of(cid: &Cid) -> Option<[u8; 32]> {
    let hash = cid.hash();
    if hash.code() != POSEIDON2_SPONGE {
        return None;
    }
    hash.digest().try_into().ok()
}

/// The CID of a block with SHA-256 `digest`.
pub fn block_cid(digest: &[u8; 32]) -> Cid {
    sha256_cid(Codec::Block, digest)
}

/// The CID of a manifest: SHA-256 of its encoded bytes.
pub fn manifest_cid(encoded: &[u8]) -> Cid {
    sha256_cid(Codec::Manifest, &Sha256::digest(encoded).into())
}

/// The CID naming a dataset tree: the root is the multihash digest, as in Archivist.
pub fn tree_cid(root: &[u8; 32]) -> Cid {
    sha256_cid(Codec::DatasetRoot, root)
}

/// The 32-byte SHA-256 digest inside a CID, if it has one.
pub fn digest_of(cid: &Cid) -> Option<[u8; 32]> {
    let hash = cid.hash();
    if hash.code() != SHA2_256 {
        return None;
    }
    hash.digest().try_into().ok()
}

/// Parses a CID in any multibase (Archivist prints base58btc, IPFS tools base32).
pub fn parse_cid(text: &str) -> Result<Cid, CidError> {
    Cid::try_from(text).map_err(|e| CidError::Malformed(text.to_string(), e.to_string()))
}

/// The text form used by the API: base58btc for CIDv1, as Archivist prints them.
pub fn cid_to_string(cid: &Cid) -> String {
    cid.to_string_of_base(Base::Base58Btc).unwrap_or_else(|_| cid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codecs_and_text_form_are_stable() {
        let block = sha256_cid(Codec::Block, &Sha256::digest(b"hello").into());
        let tree = tree_cid(&[7u8; 32]);
        let manifest = manifest_cid(b"manifest bytes");
        insta::assert_snapshot!(
            "cid_text_forms",
            format!("{}\n{}\n{}", cid_to_string(&block), cid_to_string(&tree), cid_to_string(&manifest))
        );
        assert_eq!(Codec::of(&block), Some(Codec::Block));
        assert_eq!(Codec::of(&tree), Some(Codec::DatasetRoot));
        assert_eq!(Codec::of(&manifest), Some(Codec::Manifest));
        assert_eq!(digest_of(&tree), Some([7u8; 32]));
    }

    #[test]
    fn malformed_text_is_an_error() {
        for bad in ["", "not-a-cid", "zzzz", "bafy", "z1111111111111111111"] {
            assert!(parse_cid(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ipfs_cids_parse_in_base32() {
        let cid = parse_cid("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi").unwrap();
        assert_eq!(cid.codec(), 0x70);
        assert_eq!(Codec::of(&cid), None);
    }

    proptest! {
        #[test]
        fn text_and_bytes_round_trip(digest in any::<[u8; 32]>(), codec in 0usize..4) {
            let codec = [Codec::Manifest, Codec::Block, Codec::DatasetRoot, Codec::SlotRoot][codec];
            let cid = sha256_cid(codec, &digest);
            prop_assert_eq!(parse_cid(&cid_to_string(&cid)).unwrap(), cid);
            prop_assert_eq!(Cid::try_from(cid.to_bytes()).unwrap(), cid);
            prop_assert_eq!(digest_of(&cid), Some(digest));
        }
    }
}
