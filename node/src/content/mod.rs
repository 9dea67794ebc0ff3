//! The content model, compatible with Archivist: CIDs, blocks, the chunker and the manifest.
//!
//! A dataset is cut into fixed-size blocks (the last one zero-padded, as Archivist does); each
//! block is addressed by a CIDv1 over its SHA-256 multihash; the block hashes are the leaves of
//! the dataset tree ([`crate::merkle`]); the manifest names the tree root, the block size and the
//! original length, and is itself addressed by a CID.

mod block;
mod chunker;
mod cid;
mod manifest;
pub mod protobuf;

pub use self::block::Block;
pub use self::chunker::{Chunker, blocks_count};
pub use self::cid::{
    Cid, CidError, Codec, POSEIDON2_SPONGE, SHA2_256, block_cid, cid_to_string, digest_of, manifest_cid,
    parse_cid, poseidon2_cid, poseidon2_digest_of, sha256_cid, tree_cid,
};
pub use self::manifest::{ErasureInfo, Manifest, ManifestError, VerificationInfo};

/// Default block size: 64 KiB, as in Archivist before its move to 512 KiB. The manifest carries
/// the block size, so datasets with either size download.
pub const BLOCK_SIZE_DEFAULT_BYTES: usize = 64 * 1024;
/// Smallest accepted block size.
pub const BLOCK_SIZE_MIN_BYTES: usize = 4 * 1024;
/// Largest accepted block size (a block travels in one block-exchange message).
pub const BLOCK_SIZE_MAX_BYTES: usize = 8 * 1024 * 1024;
