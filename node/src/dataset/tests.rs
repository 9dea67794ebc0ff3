//! Dataset round trips over the in-memory store, at the sizes where chunking changes shape.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use super::*;
use crate::content::{Block, Codec};
use crate::metrics::Metrics;
use crate::store::{self, StoreError};

const B: usize = 4096;
/// Small batches, so uploads here span several store transactions.
const BATCH: usize = 4 * B;

fn datasets(quota: u64) -> Datasets {
    Datasets::new(store::memory(quota), Compute::Inline, B, Arc::new(Metrics::new()))
        .with_upload_batch_bytes(BATCH)
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

/// Feeds `bytes` in pieces of `piece` bytes, as an HTTP body would arrive.
fn body(
    bytes: &[u8],
    piece: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send + use<> {
    let pieces: Vec<_> = bytes.chunks(piece.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    stream::iter(pieces)
}

async fn read_all(d: &Datasets, m: &Manifest, range: std::ops::Range<u64>) -> Vec<u8> {
    d.read(m, range).try_collect::<Vec<_>>().await.unwrap().concat()
}

#[tokio::test]
async fn round_trips_at_boundary_sizes() {
    let d = datasets(1 << 30);
    // (length, why)
    for (len, piece) in [
        (0, 1),                   // empty dataset
        (1, 1),                   // one byte
        (B - 1, 1000),            // one short block
        (B, B),                   // exactly one block
        (B + 1, 7),               // spills into a second block
        (3 * B, 5000),            // whole blocks only
        (10 * BATCH + 3, 65_536), // spans many upload batches
    ] {
        let input = data(len, len as u8);
        let meta = UploadMeta { filename: Some(format!("f{len}")), mimetype: Some("text/plain".into()) };
        let dataset = d.upload(body(&input, piece), meta).await.unwrap();
        assert_eq!(Codec::of(&dataset.cid), Some(Codec::Manifest));
        assert_eq!(dataset.manifest.dataset_size_bytes, len as u64);
        assert_eq!(d.get(dataset.cid).await.unwrap().as_ref(), Some(&dataset));
        assert_eq!(read_all(&d, &dataset.manifest, 0..u64::MAX).await, input, "length {len}");
    }
    assert_eq!(d.list().await.unwrap().len(), 7);
}

#[tokio::test]
async fn ranges_cut_inside_blocks() {
    let d = datasets(1 << 30);
    let input = data(5 * B + 123, 9);
    let dataset = d.upload(body(&input, 999), UploadMeta::default()).await.unwrap();
    let len = input.len() as u64;
    for range in [
        0..1,
        1..2,
        (B as u64 - 1)..(B as u64 + 1),
        100..(3 * B as u64),
        (len - 5)..len,
        7..(len + 100),
        len..len,
    ] {
        let want = &input[range.start.min(len) as usize..range.end.min(len) as usize];
        assert_eq!(read_all(&d, &dataset.manifest, range.clone()).await, want, "range {range:?}");
    }
}

#[tokio::test]
async fn same_bytes_same_cid_and_shared_blocks() {
    let d = datasets(1 << 30);
    let input = data(3 * B, 1);
    let a = d.upload(body(&input, 100), UploadMeta::default()).await.unwrap();
    let used = d.store().space().await.unwrap().quota_used_bytes;
    let b = d.upload(body(&input, 333), UploadMeta::default()).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(d.store().space().await.unwrap().quota_used_bytes, used, "a re-upload stores nothing new");
    // Same tree under another filename: two datasets, blocks shared until both go.
    let named =
        d.upload(body(&input, 100), UploadMeta { filename: Some("x".into()), mimetype: None }).await.unwrap();
    assert_ne!(named.cid, a.cid);
    assert_eq!(named.manifest.tree_cid, a.manifest.tree_cid);
    assert!(d.delete(a.cid).await.unwrap());
    assert_eq!(read_all(&d, &named.manifest, 0..u64::MAX).await, input);
    assert!(d.delete(named.cid).await.unwrap());
    assert!(!d.delete(named.cid).await.unwrap());
    assert_eq!(
        d.store().space().await.unwrap(),
        store::Space { quota_max_bytes: 1 << 30, ..Default::default() }
    );
}

#[tokio::test]
async fn broken_stream_rolls_back() {
    let d = datasets(1 << 30);
    let kept = d.upload(body(&data(2 * B, 3), B), UploadMeta::default()).await.unwrap();
    let space = d.store().space().await.unwrap();
    let input = data(BATCH * 100, 4);
    let broken =
        body(&input, 65_536).take(20).chain(stream::iter([Err(std::io::Error::other("connection reset"))]));
    let err = d.upload(broken, UploadMeta::default()).await.unwrap_err();
    assert!(
        matches!(err, UploadError::Stream { received_bytes, .. } if received_bytes == 20 * 65_536),
        "{err}"
    );
    assert_eq!(d.store().space().await.unwrap(), space, "no space leaked");
    assert_eq!(d.list().await.unwrap(), vec![kept]);
}

#[tokio::test]
async fn quota_refuses_and_keeps_nothing() {
    let d = datasets(10 * B as u64);
    let small = d.upload(body(&data(3 * B, 5), B), UploadMeta::default()).await.unwrap();
    let err = d.upload(body(&data(20 * B, 6), B), UploadMeta::default()).await.unwrap_err();
    assert!(matches!(err, UploadError::Store(StoreError::QuotaExceeded { .. })), "{err}");
    let space = d.store().space().await.unwrap();
    assert_eq!(space.quota_used_bytes, 3 * B as u64);
    assert_eq!(d.list().await.unwrap(), vec![small]);
}

#[tokio::test]
async fn blocks_are_verified_leaves() {
    let d = datasets(1 << 30);
    let input = data(4 * B, 8);
    let dataset = d.upload(body(&input, B), UploadMeta::default()).await.unwrap();
    let root = crate::content::digest_of(&dataset.manifest.tree_cid).unwrap();
    for (i, chunk) in input.chunks(B).enumerate() {
        let leaf = d.store().get_leaf(dataset.manifest.tree_cid, i as u64).await.unwrap().unwrap();
        let block = Block::new(Bytes::copy_from_slice(chunk));
        assert_eq!(&leaf.block_cid, block.cid());
        assert!(leaf.proof.verify(block.digest(), &root), "leaf {i}");
        assert!(d.exists(leaf.block_cid).await.unwrap());
    }
}

mod protect {
    use super::*;
    use crate::erasure::{Layout, Params, ParamsError};
    use crate::merkle::poseidon2::{self, CELL_SIZE_BYTES, SlotTree};
    use crate::store::{BlockStore, KvEngine, KvStore, MemEngine, Table};

    /// A dataset service whose store can be damaged underneath.
    fn damageable() -> (Datasets, Arc<KvStore<MemEngine>>) {
        let store = Arc::new(KvStore::new(MemEngine::default(), 1 << 30, Compute::Inline));
        let d = Datasets::new(store.clone(), Compute::Inline, B, Arc::new(Metrics::new()));
        (d, store)
    }

    fn damage(store: &KvStore<MemEngine>, block: &Cid, rot: bool) {
        store
            .engine()
            .write(|w| {
                if rot {
                    w.put(Table::Blocks, &block.to_bytes(), b"rotten")
                } else {
                    w.delete(Table::Blocks, &block.to_bytes()).map(|_| ())
                }
            })
            .unwrap();
    }

    #[tokio::test]
    async fn protected_dataset_reads_back_and_carries_its_slots() {
        let (d, store) = damageable();
        let input = data(10 * B + 77, 3); // 11 blocks: K = 3 rounds them to 12
        let original = d.upload(body(&input, 5000), UploadMeta::default()).await.unwrap();
        let protected = d.protect(original.cid, 3, 2).await.unwrap();
        let m = &protected.manifest;
        let erasure = m.erasure.as_ref().unwrap();
        assert_eq!((erasure.ec_k, erasure.ec_m), (3, 2));
        assert_eq!(erasure.original_tree_cid, original.manifest.tree_cid);
        assert_eq!(erasure.original_dataset_size_bytes, input.len() as u64);
        assert_eq!(m.blocks_count(), 20, "12 data and padding blocks, 8 parity");
        assert_eq!(m.content_size_bytes(), input.len() as u64);
        assert_eq!(read_all(&d, m, 0..u64::MAX).await, input);
        assert_eq!(read_all(&d, m, 100..(5 * B as u64)).await, &input[100..5 * B]);

        // Each slot root is the slot tree of the slot's blocks as stored (padding: empty blocks).
        let layout = Layout::new(Params::new(3, 2).unwrap(), 11);
        let verification = erasure.verification.as_ref().unwrap();
        assert_eq!(verification.slot_roots.len(), 5);
        assert_eq!(verification.cell_size_bytes, CELL_SIZE_BYTES as u32);
        for (slot, root) in verification.slot_roots.iter().enumerate() {
            let range = layout.slot_blocks(slot as u32);
            let blocks: Vec<Bytes> =
                store.get_tree_blocks(m.tree_cid, range.start, layout.steps).await.unwrap();
            let padded: Vec<Vec<u8>> =
                blocks.iter().map(|b| if b.is_empty() { vec![0; B] } else { b.to_vec() }).collect();
            let tree = SlotTree::build(padded.iter().map(Vec::as_slice), B, CELL_SIZE_BYTES);
            assert_eq!(crate::content::poseidon2_digest_of(root), Some(poseidon2::to_bytes(&tree.root())));
        }
        // Same dataset and parameters: same protected dataset.
        assert_eq!(d.protect(original.cid, 3, 2).await.unwrap().cid, protected.cid);
    }

    #[tokio::test]
    async fn lost_and_rotten_blocks_are_rebuilt_on_read() {
        let (d, store) = damageable();
        let input = data(9 * B, 4);
        let original = d.upload(body(&input, 4096), UploadMeta::default()).await.unwrap();
        let protected = d.protect(original.cid, 3, 2).await.unwrap();
        // The original is deleted: only the protected dataset holds the blocks now.
        d.delete(original.cid).await.unwrap();
        let m = &protected.manifest;
        let layout = Layout::new(Params::new(3, 2).unwrap(), 9); // 3 steps
        let cid_at = |i: u64| {
            let store = store.clone();
            async move { store.get_leaf(m.tree_cid, i).await.unwrap().unwrap().block_cid }
        };
        // Two blocks of column 0 (one data, one parity) and one of column 1: at most M per column.
        damage(&store, &cid_at(layout.index(0, 0)).await, true);
        damage(&store, &cid_at(layout.index(0, 4)).await, false);
        damage(&store, &cid_at(layout.index(1, 2)).await, false);
        assert_eq!(read_all(&d, m, 0..u64::MAX).await, input);
        assert_eq!(d.metrics().blocks_recovered.get(), 2, "the data blocks of steps 0 and 1");

        // A third loss in column 0 is beyond M: the read fails, it never returns wrong bytes.
        damage(&store, &cid_at(layout.index(0, 1)).await, false);
        let result: Result<Vec<Bytes>, StoreError> = d.read(m, 0..u64::MAX).try_collect().await;
        assert!(matches!(result, Err(StoreError::Corrupt(_) | StoreError::MissingLeaf { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn refuses_bad_parameters_and_twice_protected_data() {
        let d = datasets(1 << 30);
        let dataset = d.upload(body(&data(3 * B, 5), 4096), UploadMeta::default()).await.unwrap();
        assert!(matches!(
            d.protect(dataset.cid, 1, 1).await,
            Err(ProtectError::Params(ParamsError::KTooSmall(1)))
        ));
        assert!(matches!(
            d.protect(dataset.cid, 2, 3).await,
            Err(ProtectError::Params(ParamsError::MoreParityThanData { .. }))
        ));
        let protected = d.protect(dataset.cid, 2, 1).await.unwrap();
        assert!(matches!(d.protect(protected.cid, 2, 1).await, Err(ProtectError::AlreadyProtected(_))));
        let unknown = crate::content::manifest_cid(b"nothing");
        assert!(matches!(d.protect(unknown, 2, 1).await, Err(ProtectError::NotFound(_))));
        assert_eq!(d.list().await.unwrap().len(), 2);

        let odd = Datasets::new(store::memory(1 << 30), Compute::Inline, 6000, Arc::new(Metrics::new()));
        let dataset = odd.upload(body(&data(10_000, 6), 4096), UploadMeta::default()).await.unwrap();
        assert!(matches!(odd.protect(dataset.cid, 2, 1).await, Err(ProtectError::BlockSize(6000))));
        assert_eq!(odd.list().await.unwrap().len(), 1, "nothing new listed");
    }
}
