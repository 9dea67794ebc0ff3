//! The dataset manifest in Archivist's dag-pb layout.
//!
//! The encoded manifest is a dag-pb `PBNode` whose `Data` field (1) holds a `Header`:
//!
//! ```text
//! Header           { 1 treeCid, 2 blockSize, 3 datasetSize, 4 codec, 5 hcodec, 6 version,
//!                    7 ErasureInfo, 8 filename, 9 mimetype }
//! ErasureInfo      { 1 ecK, 2 ecM, 3 originalTreeCid, 4 originalDatasetSize,
//!                    5 protectedStrategy, 6 VerificationInfo }
//! VerificationInfo { 1 verifyRoot, 2 repeated slotRoots, 3 cellSize, 4 verifiableStrategy }
//! ```
//!
//! Unknown fields are skipped on decode, so newer manifests still read.

use super::cid::{Cid, Codec, SHA2_256};
use super::protobuf::{self, DecodeError, Value, Writer};

/// A dataset manifest: what a CID of codec `Manifest` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Root of the dataset tree (codec `DatasetRoot`).
    pub tree_cid: Cid,
    pub block_size_bytes: u32,
    /// The real length of the data, without the padding of the last block.
    pub dataset_size_bytes: u64,
    /// Multicodec of the blocks (`Codec::Block`).
    pub codec: u64,
    /// Multihash code of the block hashes (SHA2-256).
    pub hcodec: u64,
    /// CID version of the blocks.
    pub version: u64,
    pub erasure: Option<ErasureInfo>,
    pub filename: Option<String>,
    pub mimetype: Option<String>,
}

/// Erasure-coding parameters of a protected dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureInfo {
    pub ec_k: u32,
    pub ec_m: u32,
    pub original_tree_cid: Cid,
    pub original_dataset_size_bytes: u64,
    pub protected_strategy: u32,
    pub verification: Option<VerificationInfo>,
}

/// Slot roots and the verification root of a verifiable dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationInfo {
    pub verify_root: Cid,
    pub slot_roots: Vec<Cid>,
    pub cell_size_bytes: u32,
    pub verifiable_strategy: u32,
}

/// Why bytes are not a manifest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid protobuf: {0}")]
    Protobuf(#[from] DecodeError),
    #[error("manifest lacks required field {0}")]
    Missing(&'static str),
    #[error("manifest field {0} has the wrong type or value")]
    Invalid(&'static str),
}

impl Manifest {
    /// A plain (unprotected) manifest for data stored as blocks of `block_size_bytes`.
    pub fn new(tree_cid: Cid, block_size_bytes: u32, dataset_size_bytes: u64) -> Manifest {
        Manifest {
            tree_cid,
            block_size_bytes,
            dataset_size_bytes,
            codec: Codec::Block as u64,
            hcodec: SHA2_256,
            version: 1,
            erasure: None,
            filename: None,
            mimetype: None,
        }
    }

    /// Whether the dataset is erasure-coded.
    pub fn protected(&self) -> bool {
        self.erasure.is_some()
    }

    /// Bytes of the content a download returns: the original size of a protected dataset
    /// (whose tree also holds padding and parity), else the dataset size.
    pub fn content_size_bytes(&self) -> u64 {
        self.erasure.as_ref().map_or(self.dataset_size_bytes, |e| e.original_dataset_size_bytes)
    }

    /// Number of blocks in the dataset tree.
    pub fn blocks_count(&self) -> u64 {
        super::blocks_count(self.dataset_size_bytes, u64::from(self.block_size_bytes))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut header = Writer::new();
        header
            .bytes(1, &self.tree_cid.to_bytes())
            .uint(2, u64::from(self.block_size_bytes))
            .uint(3, self.dataset_size_bytes)
            .uint(4, self.codec)
            .uint(5, self.hcodec)
            .uint(6, self.version);
        if let Some(erasure) = &self.erasure {
            header.bytes(7, &erasure.encode());
        }
        if let Some(filename) = &self.filename {
            header.bytes(8, filename.as_bytes());
        }
        if let Some(mimetype) = &self.mimetype {
            header.bytes(9, mimetype.as_bytes());
        }
        let mut node = Writer::new();
        node.bytes(1, &header.finish());
        node.finish()
    }

    pub fn decode(encoded: &[u8]) -> Result<Manifest, ManifestError> {
        let mut header = None;
        for field in protobuf::fields(encoded) {
            if let (1, Value::Bytes(bytes)) = field? {
                header = Some(bytes);
            }
        }
        let header = header.ok_or(ManifestError::Missing("Data"))?;
        let (mut tree_cid, mut block_size, mut dataset_size) = (None, None, None);
        let mut manifest = Manifest::new(Cid::default(), 0, 0);
        for field in protobuf::fields(header) {
            match field? {
                (1, value) => tree_cid = Some(cid_field(value, "treeCid")?),
                (2, value) => {
                    let size = u32::try_from(uint_field(value, "blockSize")?);
                    block_size = Some(size.map_err(|_| ManifestError::Invalid("blockSize"))?);
                }
                (3, value) => dataset_size = Some(uint_field(value, "datasetSize")?),
                (4, value) => manifest.codec = uint_field(value, "codec")?,
                (5, value) => manifest.hcodec = uint_field(value, "hcodec")?,
                (6, value) => manifest.version = uint_field(value, "version")?,
                (7, Value::Bytes(bytes)) => manifest.erasure = Some(ErasureInfo::decode(bytes)?),
                (8, value) => manifest.filename = Some(string_field(value, "filename")?),
                (9, value) => manifest.mimetype = Some(string_field(value, "mimetype")?),
                (7, _) => return Err(ManifestError::Invalid("erasure")),
                _ => {}
            }
        }
        manifest.tree_cid = tree_cid.ok_or(ManifestError::Missing("treeCid"))?;
        manifest.block_size_bytes = block_size.ok_or(ManifestError::Missing("blockSize"))?;
        manifest.dataset_size_bytes = dataset_size.ok_or(ManifestError::Missing("datasetSize"))?;
        if manifest.block_size_bytes == 0 {
            return Err(ManifestError::Invalid("blockSize"));
        }
        Ok(manifest)
    }
}

impl ErasureInfo {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(1, u64::from(self.ec_k))
            .uint(2, u64::from(self.ec_m))
            .bytes(3, &self.original_tree_cid.to_bytes())
            .uint(4, self.original_dataset_size_bytes)
            .uint(5, u64::from(self.protected_strategy));
        if let Some(verification) = &self.verification {
            w.bytes(6, &verification.encode());
        }
        w.finish()
    }

    fn decode(encoded: &[u8]) -> Result<ErasureInfo, ManifestError> {
        let mut info = ErasureInfo {
            ec_k: 0,
            ec_m: 0,
            original_tree_cid: Cid::default(),
            original_dataset_size_bytes: 0,
            protected_strategy: 0,
            verification: None,
        };
        let mut original_tree_cid = None;
        for field in protobuf::fields(encoded) {
            match field? {
                (1, value) => info.ec_k = u32_field(value, "ecK")?,
                (2, value) => info.ec_m = u32_field(value, "ecM")?,
                (3, value) => original_tree_cid = Some(cid_field(value, "originalTreeCid")?),
                (4, value) => info.original_dataset_size_bytes = uint_field(value, "originalDatasetSize")?,
                (5, value) => info.protected_strategy = u32_field(value, "protectedStrategy")?,
                (6, Value::Bytes(bytes)) => info.verification = Some(VerificationInfo::decode(bytes)?),
                (6, _) => return Err(ManifestError::Invalid("verificationInfo")),
                _ => {}
            }
        }
        info.original_tree_cid = original_tree_cid.ok_or(ManifestError::Missing("originalTreeCid"))?;
        Ok(info)
    }
}

impl VerificationInfo {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(1, &self.verify_root.to_bytes());
        for root in &self.slot_roots {
            w.bytes(2, &root.to_bytes());
        }
        w.uint(3, u64::from(self.cell_size_bytes)).uint(4, u64::from(self.verifiable_strategy));
        w.finish()
    }

    fn decode(encoded: &[u8]) -> Result<VerificationInfo, ManifestError> {
        let mut verify_root = None;
        let mut info = VerificationInfo {
            verify_root: Cid::default(),
            slot_roots: Vec::new(),
            cell_size_bytes: 0,
            verifiable_strategy: 0,
        };
        for field in protobuf::fields(encoded) {
            match field? {
                (1, value) => verify_root = Some(cid_field(value, "verifyRoot")?),
                (2, value) => info.slot_roots.push(cid_field(value, "slotRoots")?),
                (3, value) => info.cell_size_bytes = u32_field(value, "cellSize")?,
                (4, value) => info.verifiable_strategy = u32_field(value, "verifiableStrategy")?,
                _ => {}
            }
        }
        info.verify_root = verify_root.ok_or(ManifestError::Missing("verifyRoot"))?;
        Ok(info)
    }
}

fn uint_field(value: Value<'_>, name: &'static str) -> Result<u64, ManifestError> {
    match value {
        Value::Varint(v) => Ok(v),
        _ => Err(ManifestError::Invalid(name)),
    }
}

fn u32_field(value: Value<'_>, name: &'static str) -> Result<u32, ManifestError> {
    u32::try_from(uint_field(value, name)?).map_err(|_| ManifestError::Invalid(name))
}

fn cid_field(value: Value<'_>, name: &'static str) -> Result<Cid, ManifestError> {
    match value {
        Value::Bytes(bytes) => Cid::try_from(bytes).map_err(|_| ManifestError::Invalid(name)),
        _ => Err(ManifestError::Invalid(name)),
    }
}

fn string_field(value: Value<'_>, name: &'static str) -> Result<String, ManifestError> {
    match value {
        Value::Bytes(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| ManifestError::Invalid(name)),
        _ => Err(ManifestError::Invalid(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{cid_to_string, manifest_cid, sha256_cid, tree_cid};
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sample() -> Manifest {
        let mut m = Manifest::new(tree_cid(&[1; 32]), 65_536, 1_000_000);
        m.filename = Some("report.pdf".into());
        m.mimetype = Some("application/pdf".into());
        m
    }

    fn protected_sample() -> Manifest {
        let mut m = sample();
        m.erasure = Some(ErasureInfo {
            ec_k: 3,
            ec_m: 2,
            original_tree_cid: tree_cid(&[2; 32]),
            original_dataset_size_bytes: 1_000_000,
            protected_strategy: 1,
            verification: Some(VerificationInfo {
                verify_root: sha256_cid(Codec::SlotRoot, &[3; 32]),
                slot_roots: (0..5).map(|i| sha256_cid(Codec::SlotRoot, &[10 + i; 32])).collect(),
                cell_size_bytes: 2048,
                verifiable_strategy: 0,
            }),
        });
        m
    }

    #[test]
    fn encoded_manifests_do_not_drift() {
        for (name, m) in [("manifest_plain", sample()), ("manifest_protected", protected_sample())] {
            let encoded = m.encode();
            insta::assert_snapshot!(
                name,
                format!("cid {}\n{}", cid_to_string(&manifest_cid(&encoded)), hex(&encoded))
            );
            assert_eq!(Manifest::decode(&encoded).unwrap(), m);
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let mut header = Writer::new();
        header.uint(2, 65_536).uint(3, 10);
        let mut node = Writer::new();
        node.bytes(1, &header.finish());
        assert_eq!(Manifest::decode(&node.finish()), Err(ManifestError::Missing("treeCid")));
        assert_eq!(Manifest::decode(&[]), Err(ManifestError::Missing("Data")));
        assert!(matches!(Manifest::decode(&[0x0a, 0x09, 1]), Err(ManifestError::Protobuf(_))));
    }

    proptest! {
        #[test]
        fn round_trips(
            root in any::<[u8; 32]>(),
            block_size in 1u32..,
            size in any::<u64>(),
            filename in proptest::option::of("[a-zA-Z0-9 ._-]{0,40}"),
            mimetype in proptest::option::of("[a-z]{1,10}/[a-z0-9.+-]{1,20}"),
            protected in any::<bool>(),
        ) {
            let mut m = if protected { protected_sample() } else { sample() };
            m.tree_cid = tree_cid(&root);
            m.block_size_bytes = block_size;
            m.dataset_size_bytes = size;
            m.filename = filename;
            m.mimetype = mimetype;
            prop_assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Manifest::decode(&input);
        }
    }
}
