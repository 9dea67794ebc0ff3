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
