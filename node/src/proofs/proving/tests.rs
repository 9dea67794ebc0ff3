use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::dataset::{Dataset, Datasets, UploadMeta};
use crate::metrics::Metrics;
use crate::proofs::circuit::Params;

/// 8 KiB blocks of four cells, and a circuit of that shape with three samples.
const BLOCK: usize = 4 * CELL_SIZE_BYTES;
const SMALL: Params =
    Params { max_depth: 8, max_log2_slots: 4, block_tree_depth: 2, cell_elements: 67, samples: 3 };

fn data(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 13 + i / 509) as u8).collect::<Vec<u8>>())
}

/// `len` bytes uploaded to `d` and protected with K = 3, M = 2.
async fn protected(d: &Datasets, len: usize) -> Dataset {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(data(len))]);
    let original = d.upload(body, UploadMeta::default()).await.unwrap();
    d.protect(original.cid, 3, 2).await.unwrap()
}

#[tokio::test]
async fn a_stored_slot_proves_for_each_challenge() {
    let d = Datasets::new(crate::store::memory(1 << 30), Compute::Inline, BLOCK, Arc::new(Metrics::new()));
    let dataset = protected(&d, 7 * BLOCK + 100).await;
    let prover = Arc::new(Prover::development_setup(SMALL, 3).unwrap());
    let proofs = SlotProofs::new(d.store().clone(), Compute::Inline, prover.clone()).unwrap();

    let slot = proofs.slot(&dataset.manifest, 4).await.unwrap();
    assert_eq!(slot.slot_index(), 4);
    for challenge in [[1u8; 32], [0xee; 32]] {
        let (input, proof) = proofs.prove(&slot, &challenge, [9; 32]).await.unwrap();
        let public = [entropy_from_challenge(&challenge), slot.dataset_root(), F::from(4u64)];
        assert_eq!(input.public_inputs(), public);
        assert!(prover.verify(&public, &proof));
        let mut other = public;
        other[0] = entropy_from_challenge(&[2; 32]);
        assert!(!prover.verify(&other, &proof), "a proof answers its own challenge only");
    }

    assert!(matches!(
        proofs.slot(&dataset.manifest, 5).await,
        Err(ProvingError::NoSuchSlot { slot: 5, slots: 5 })
    ));
    let original =
        d.upload(futures::stream::iter([Ok::<_, std::io::Error>(data(100))]), UploadMeta::default());
    let original = original.await.unwrap();
    assert!(matches!(proofs.slot(&original.manifest, 0).await, Err(ProvingError::NotVerifiable(_))));
}

/// A node proving with Archivist's circuit (on the blocking pool, as in production) keeps
/// answering its API: with a single async worker, ten downloads, each verified, complete
/// while one proof is still being made. (Proving inline on that worker, the downloads wait
/// for the proof and this fails.)
#[cfg(feature = "production")]
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_proving_node_keeps_serving() {
    use crate::api::{ApiState, serve};
    use crate::store::LmdbStore;

    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(LmdbStore::open(dir.path(), 1 << 30).unwrap());
    let block = 64 << 10;
    let d = Datasets::new(store.clone(), Compute::Pool, block, Arc::new(Metrics::new()));
    let bytes = data(6 * block);
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes.clone())]);
    let original = d.upload(body, UploadMeta::default()).await.unwrap();
    let dataset = d.protect(original.cid, 3, 2).await.unwrap();

    let state = Arc::new(ApiState::new(d.clone(), "prover".into(), dir.path().into(), vec![]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/archivist/v1", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, std::future::pending()));

    let prover = Arc::new(Prover::development_setup(Params::ARCHIVIST, 1).unwrap());
    let proofs = SlotProofs::new(store, Compute::Pool, prover.clone()).unwrap();
    let slot = proofs.slot(&dataset.manifest, 1).await.unwrap();
    let proving = tokio::spawn({
        let proofs = proofs.clone();
        async move { proofs.prove(&slot, &[3; 32], [4; 32]).await }
    });

    let client = reqwest::Client::new();
    let mut served = 0;
    while served < 10 {
        let response = client.get(format!("{base}/data/{}", original.cid)).send().await.unwrap();
        assert!(response.status().is_success());
        assert_eq!(response.bytes().await.unwrap(), bytes);
        served += 1;
    }
    assert!(!proving.is_finished(), "ten downloads were served while the proof was being made");
    let (input, proof) = proving.await.unwrap().unwrap();
    assert!(prover.verify(&input.public_inputs(), &proof));
}
