//! The oracle's checks of a run.

use super::*;

/// Liveness: after healing, every dataset that still has an intact holder downloads, on a
/// node that lacks it, within the bound.
pub(super) async fn check_liveness(world: &Arc<World>, rng: &mut ChaCha8Rng, bound: Duration) -> Verdict {
    let datasets = world.truths.lock().expect("truths").len();
    let deadline = tokio::time::Instant::now() + bound;
    let mut pending = Vec::new();
    for d in 0..datasets {
        if !world.available(d) {
            continue; // lost: durability reports it
        }
        let cid = world.truths.lock().expect("truths")[d].cid;
        let disks = world.disks.lock().expect("disks").clone();
        // Not on a disk built to fill up: a download there fails, rightly, for want of space.
        let candidates: Vec<usize> = world
            .live_nodes()
            .into_iter()
            .filter(|&i| !disks[i].holds_manifest(&cid) && !disks[i].is_small())
            .collect();
        let Some(index) = pick(rng, &candidates) else { continue };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let w = world.clone();
        world.spawn_on(index, async move {
            loop {
                if download(w.clone(), index, d, true).await {
                    let _ = tx.send(());
                    return;
                }
                tokio::time::sleep(CHECK_RETRY).await;
            }
        });
        pending.push((d, index, rx));
    }
    let checked = pending.len();
    let mut late = Vec::new();
    for (d, index, rx) in pending {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !matches!(tokio::time::timeout(left, rx).await, Ok(Ok(()))) {
            let cid = world.truths.lock().expect("truths")[d].cid;
            late.push(format!("{} on node {index}", cid_to_string(&cid)));
        }
    }
    Verdict {
        name: "liveness".into(),
        passed: late.is_empty(),
        detail: if late.is_empty() {
            format!("{checked} datasets downloaded after healing, each within {}s", bound.as_secs())
        } else {
            format!(
                "{} of {checked} downloads did not finish within {}s: {}",
                late.len(),
                bound.as_secs(),
                late.join(", ")
            )
        },
    }
}

pub(super) fn check_integrity(world: &World) -> Verdict {
    let mut problems = world.integrity_violations.lock().expect("violations").clone();
    let life = world.life.lock().expect("life").clone();
    for (index, disk) in world.disks.lock().expect("disks").iter().enumerate() {
        if life[index] == Life::Departed {
            continue;
        }
        for cid in disk.unexplained_corruption() {
            problems.push(format!("node {index} stores block {cid} that does not verify"));
        }
    }
    Verdict {
        name: "integrity".into(),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            "every download returned the uploaded bytes; every stored block verifies (or a disk fault explains it)".into()
        } else {
            problems.join("; ")
        },
    }
}

pub(super) fn check_durability(world: &World) -> Verdict {
    let datasets = world.truths.lock().expect("truths").len();
    let lost: Vec<String> = (0..datasets)
        .filter(|&d| !world.available(d))
        .map(|d| {
            let cid = world.truths.lock().expect("truths")[d].cid;
            format!("{} ({})", cid_to_string(&cid), world.copies_lost(d))
        })
        .collect();
    Verdict {
        name: "durability".into(),
        passed: lost.is_empty(),
        detail: if lost.is_empty() {
            format!(
                "all {datasets} acknowledged datasets have an intact copy on a node that has not departed"
            )
        } else {
            format!(
                "{} of {datasets} acknowledged datasets lost (no intact copy left): {}",
                lost.len(),
                lost.join(", ")
            )
        },
    }
}

/// Redundancy: after healing, every protected dataset that is not lost has all its K + M slots
/// held intact by live nodes again.
pub(super) fn check_redundancy(world: &World) -> Verdict {
    let (protected, short): (usize, Vec<String>) = {
        let truths = world.truths.lock().expect("truths");
        let wanted: Vec<(usize, usize, Cid)> = truths
            .iter()
            .enumerate()
            .filter_map(|(d, t)| t.slots.as_ref().map(|s| (d, s.slot_blocks.len(), t.cid)))
            .collect();
        drop(truths);
        let short = wanted
            .iter()
            .filter(|(d, _, _)| world.available(*d))
            .filter_map(|&(d, slots, cid)| {
                let live = world.live_slots(d, &[Life::Up]);
                (live.len() < slots)
                    .then(|| format!("{} ({} of {slots} slots)", cid_to_string(&cid), live.len()))
            })
            .collect();
        (wanted.len(), short)
    };
    Verdict {
        name: "redundancy".into(),
        passed: short.is_empty(),
        detail: if short.is_empty() {
            format!("all {protected} protected datasets are back at full redundancy")
        } else {
            format!(
                "{} of {protected} protected datasets short of slots after healing: {}",
                short.len(),
                short.join(", ")
            )
        },
    }
}

pub(super) fn check_sometimes(world: &World, required: &[String]) -> Verdict {
    let probes = world.probes.lock().expect("probes");
    let missing: Vec<&str> = required
        .iter()
        .filter(|p| probes.get(p.as_str()).copied().unwrap_or(0) == 0)
        .map(|p| p.as_str())
        .collect();
    Verdict {
        name: "sometimes".into(),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("{} required paths ran", required.len())
        } else {
            format!("never ran: {}", missing.join(", "))
        },
    }
}
