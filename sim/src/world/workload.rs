//! The workloads: seeded data, uploads (protected and placed, or plain), downloads.

use super::*;

/// `size` seeded random bytes.
pub(super) fn data(seed: u64, size: u64) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// The block keys a dataset of `bytes` has, chunked as the node chunks (last block
/// zero-padded, an empty dataset one zero block).
pub(super) fn block_keys(bytes: &[u8], block_size: usize) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut chunks = bytes.chunks(block_size).peekable();
    if chunks.peek().is_none() {
        let digest: [u8; 32] = Sha256::digest(vec![0u8; block_size]).into();
        return vec![block_cid(&digest).to_bytes()];
    }
    for chunk in chunks {
        let mut block = chunk.to_vec();
        block.resize(block_size, 0);
        let digest: [u8; 32] = Sha256::digest(&block).into();
        keys.push(block_cid(&digest).to_bytes());
    }
    keys
}

pub(super) async fn upload(world: Arc<World>, index: usize, seed: u64, size: u64, protect: Option<[u32; 2]>) {
    let Some(node) = world.node(index) else { return };
    let bytes = data(seed, size);
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let blocks = block_keys(&bytes, world.block_size);
    let body = futures::stream::iter(
        bytes
            .chunks(256 << 10)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    match node.datasets.upload(body, UploadMeta::default()).await {
        Ok(dataset) => {
            world.trace.record(format_args!("uploaded {index} {}", cid_to_string(&dataset.cid)));
            if let Some([k, m]) = protect {
                protect_and_place(&world, index, &node, dataset, size, digest, k, m).await;
                return;
            }
            world.truths.lock().expect("truths").push(Truth {
                cid: dataset.cid,
                size,
                digest,
                blocks,
                slots: None,
            });
            world.count(|c| c.uploads_acknowledged += 1);
            node.fetcher.advertise(&dataset).await;
        }
        Err(e) => {
            world.trace.record(format_args!("upload-failed {index}"));
            if e.to_string().contains("no space left") {
                world.probe("disk-full-refused-an-upload");
            }
            world.count(|c| c.uploads_failed += 1);
        }
    }
}

/// Protects a fresh upload with K + M slots and has the node place them; once every slot is
/// held somewhere the uploader drops its own copies, so the slots are the only ones. The
/// dataset counts as acknowledged once placed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn protect_and_place(
    world: &Arc<World>,
    index: usize,
    node: &Node,
    original: neverust::dataset::Dataset,
    size: u64,
    digest: [u8; 32],
    k: u32,
    m: u32,
) {
    let protected = match node.datasets.protect(original.cid, k, m).await {
        Ok(protected) => protected,
        Err(e) => {
            world.trace.record(format_args!("protect-failed {index} {e}"));
            world.count(|c| c.uploads_failed += 1);
            return;
        }
    };
    let store = node.datasets.store().clone();
    let layout = neverust::dataset::erasure_layout(&protected.manifest).expect("a fresh protected manifest");
    let mut blocks = Vec::with_capacity(layout.total as usize);
    for i in 0..layout.total {
        let leaf =
            store.get_leaf(protected.manifest.tree_cid, i).await.ok().flatten().expect("leaf just stored");
        blocks.push(leaf.block_cid.to_bytes());
    }
    let slot_blocks: Vec<Vec<Vec<u8>>> = (0..layout.params.slots())
        .map(|s| layout.slot_blocks(s).map(|i| blocks[i as usize].clone()).collect())
        .collect();
    node.durability.place(&protected);
    world.trace.record(format_args!("protected {index} {}", cid_to_string(&protected.cid)));
    let d = {
        let mut truths = world.truths.lock().expect("truths");
        truths.push(Truth {
            cid: protected.cid,
            size,
            digest,
            blocks,
            slots: Some(SlotTruth { k: k as usize, slot_blocks, placed_on: Vec::new() }),
        });
        truths.len() - 1
    };
    world.count(|c| c.uploads_acknowledged += 1);
    // Wait (at most an hour) until every slot is held by a live node, then drop the copies.
    let slots = (k + m) as usize;
    for _ in 0..360 {
        if world.live_slots(d, &[Life::Up]).len() == slots {
            let placed: Vec<Vec<usize>> = (0..slots).map(|s| world.slot_holders(d, s)).collect();
            if let Some(truth) = world.truths.lock().expect("truths")[d].slots.as_mut() {
                truth.placed_on = placed;
            }
            let _ = node.datasets.delete(protected.cid).await;
            let _ = node.datasets.delete(original.cid).await;
            world.trace.record(format_args!("placed {index} {}", cid_to_string(&protected.cid)));
            return;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Downloads dataset `d` on node `index` by DHT discovery; `true` when the bytes are right.
/// Unless `keep`, the copy fetched is dropped once verified.
pub(super) async fn download(world: Arc<World>, index: usize, d: usize, keep: bool) -> bool {
    let Some(node) = world.node(index) else {
        world.trace.record(format_args!("download-not-running {index} {d}"));
        return false;
    };
    let (cid, size, digest) = {
        let truths = world.truths.lock().expect("truths");
        (truths[d].cid, truths[d].size, truths[d].digest)
    };
    let holder_down = {
        let life = world.life.lock().expect("life").clone();
        let disks = world.disks.lock().expect("disks").clone();
        (0..life.len()).any(|i| life[i] == Life::Down && disks[i].holds_manifest(&cid))
    };
    let started = tokio::time::Instant::now();
    let result: Result<(u64, [u8; 32]), String> = async {
        let (manifest, encoded) = node.fetcher.manifest(cid).await.map_err(|e| e.to_string())?;
        let mut stream = std::pin::pin!(node.fetcher.stream(cid, manifest, encoded));
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| e.to_string())?;
            received += piece.len() as u64;
            hasher.update(&piece);
        }
        Ok((received, hasher.finalize().into()))
    }
    .await;
    match result {
        Ok((received, got)) if received == size && got == digest => {
            world.trace.record(format_args!("downloaded {index} {d}"));
            if !keep {
                // The copy is committed just after the last byte: wait for it, then drop it.
                for _ in 0..50 {
                    if node.datasets.get(cid).await.ok().flatten().is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = node.datasets.delete(cid).await;
            }
            world.count(|c| c.downloads_completed += 1);
            world.probe("download-completed");
            if holder_down {
                world.probe("download-while-a-holder-was-down");
            }
            if world.healed_at.lock().expect("healed").is_some_and(|t| t <= started) {
                world.probe("download-after-partition-healed");
            }
            true
        }
        Ok((received, _)) => {
            world.integrity_violations.lock().expect("violations").push(format!(
                "node {index} downloaded {} as {received} bytes that differ from the {size} uploaded",
                cid_to_string(&cid)
            ));
            false
        }
        Err(e) => {
            world.trace.record(format_args!("download-failed {index} {d} {e}"));
            if e.contains("corrupt") {
                world.probe("corrupt-block-detected");
            }
            if e.contains("read error") {
                world.probe("read-error-survived");
            }
            world.count(|c| c.downloads_failed += 1);
            false
        }
    }
}
