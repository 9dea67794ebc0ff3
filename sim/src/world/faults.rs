//! Faults of the schedule, and healing.

use super::*;

pub(super) fn pick(rng: &mut ChaCha8Rng, candidates: &[usize]) -> Option<usize> {
    candidates.choose(rng).copied()
}

pub(super) fn in_range(nodes: Option<[u64; 2]>, i: usize) -> bool {
    nodes.is_none_or(|[a, b]| (a as usize..=b as usize).contains(&i))
}

pub(super) fn resolve_target(
    world: &World,
    rng: &mut ChaCha8Rng,
    target: &Target,
    spare: &[u64],
) -> Vec<usize> {
    let candidates = || -> Vec<usize> {
        world.faultable().into_iter().filter(|i| !spare.contains(&(*i as u64))).collect()
    };
    match target {
        Target::Index(i) => vec![*i as usize],
        Target::Named(name) if name == "random" => pick(rng, &candidates()).into_iter().collect(),
        Target::Named(name) if name == "oldest" => candidates().into_iter().min().into_iter().collect(),
        Target::Named(name) if name == "hosts-of-first-request" => {
            let hosts = world.market.get().map(|m| m.hosts_of_first_request(world)).unwrap_or_default();
            if !hosts.is_empty() {
                world.probe("market-host-departed");
            }
            hosts
        }
        Target::Named(_) if target.upload_holder().is_some() => {
            let (d, repaired) = target.upload_holder().expect("checked");
            if d >= world.truths.lock().expect("truths").len() {
                return Vec::new();
            }
            let placed = world.truths.lock().expect("truths")[d]
                .slots
                .as_ref()
                .map(|s| s.placed_on.iter().flatten().copied().collect::<BTreeSet<usize>>())
                .unwrap_or_default();
            let live = world.live_nodes();
            let candidates: Vec<usize> = world
                .holders(d)
                .into_iter()
                .filter(|i| live.contains(i) && !world.clients.contains(i))
                .filter(|i| !repaired || !placed.contains(i))
                .collect();
            pick(rng, &candidates).into_iter().collect()
        }
        Target::Named(_) => {
            if world.truths.lock().expect("truths").is_empty() {
                Vec::new()
            } else {
                world.holders(0)
            }
        }
    }
}

pub(super) async fn execute(
    world: &Arc<World>,
    rng: &mut ChaCha8Rng,
    action: Action,
    timeline: &mut Vec<Sample>,
    start: tokio::time::Instant,
) {
    match action {
        Action::Arrive => {
            let index = world.launch();
            world.life.lock().expect("life")[index] = Life::Up;
            world.trace.record(format_args!("arrive {index}"));
            world.count(|c| c.arrivals += 1);
        }
        Action::Upload { size, seed, nodes, on, protect } => {
            let live = world.candidates(nodes, on);
            if let Some(index) = pick(rng, &live) {
                world.spawn_on(index, upload(world.clone(), index, seed, size, protect));
            }
        }
        Action::Request { size, seed, nodes, on } => {
            let live = world.candidates(nodes, on);
            if let (Some(index), Some(market)) = (pick(rng, &live), world.market.get().cloned()) {
                world.spawn_on(index, market.request(world.clone(), index, seed, size));
            }
        }
        Action::Download { nodes, on, keep } => {
            let datasets = world.truths.lock().expect("truths").len();
            if datasets == 0 {
                return;
            }
            let d = rng.random_range(0..datasets);
            let cid = world.truths.lock().expect("truths")[d].cid;
            let disks = world.disks.lock().expect("disks").clone();
            let live: Vec<usize> =
                world.candidates(nodes, on).into_iter().filter(|&i| !disks[i].holds_manifest(&cid)).collect();
            if let Some(index) = pick(rng, &live) {
                let w = world.clone();
                world.spawn_on(index, async move {
                    download(w, index, d, keep).await;
                });
            }
        }
        Action::Churn { crash, permanent, downtime, spare, spare_last_copy } => {
            let mut live: Vec<usize> =
                world.faultable().into_iter().filter(|&i| !spare.contains(&(i as u64))).collect();
            if permanent && spare_last_copy {
                let datasets = world.truths.lock().expect("truths").len();
                let holders: Vec<Vec<usize>> = (0..datasets).map(|d| world.holders(d)).collect();
                live.retain(|i| holders.iter().all(|h| !h.contains(i) || h.len() >= 2));
            }
            if let Some(index) = pick(rng, &live) {
                world.stop(index, crash, permanent);
                if !permanent {
                    restart_later(world, index, downtime);
                }
            }
        }
        Action::Crash { node, restart_after, damage, every, until, spare } => {
            let targets = resolve_target(world, rng, &node, &spare);
            if every.is_zero() {
                for index in targets {
                    crash(world, index, restart_after, damage);
                }
                return;
            }
            let w = world.clone();
            tokio::spawn(async move {
                for (i, index) in targets.into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    if start.elapsed() >= until {
                        break; // the fault phase is over
                    }
                    crash(&w, index, restart_after, damage);
                }
            });
        }
        Action::Depart { node, every, until, spare } => {
            let targets = resolve_target(world, rng, &node, &spare);
            let w = world.clone();
            tokio::spawn(async move {
                for index in targets {
                    if start.elapsed() >= until {
                        break; // the fault phase is over
                    }
                    w.stop(index, true, true);
                    tokio::time::sleep(every).await;
                }
            });
        }
        Action::Partition { split, one_way } => {
            let mut all: Vec<usize> = (0..world.peers.len()).collect();
            all.shuffle(rng);
            let cut = ((all.len() as f64) * split).round() as usize;
            let a: BTreeSet<usize> = all[..cut].iter().copied().collect();
            let b: BTreeSet<usize> = all[cut..].iter().copied().collect();
            world.fabric.partition(a, b, one_way);
        }
        Action::Heal => {
            world.fabric.heal();
            *world.healed_at.lock().expect("healed") = Some(tokio::time::Instant::now());
        }
        Action::Clog { count, until } => {
            let mut live = world.faultable();
            live.shuffle(rng);
            let nodes: BTreeSet<usize> = live.into_iter().take(count as usize).collect();
            world.fabric.clog(nodes.clone());
            let w = world.clone();
            let wake = start + until;
            tokio::spawn(async move {
                tokio::time::sleep_until(wake).await;
                w.fabric.unclog(&nodes);
                w.trace.record(format_args!("unclog {}", nodes.len()));
            });
        }
        Action::BitRot { spare_last_copy } => {
            damage(world, rng, spare_last_copy, |disk, key| match key {
                Some(key) => disk.rot_block(key),
                None => disk.rot(),
            });
        }
        Action::LatentError { spare_last_copy } => {
            damage(world, rng, spare_last_copy, |disk, key| match key {
                Some(key) => disk.latent_block(key),
                None => disk.latent_error(),
            });
        }
        Action::Sample => {
            world.watch_slots(start.elapsed());
            let datasets = world.truths.lock().expect("truths").len();
            let available = (0..datasets).filter(|&d| world.available(d)).count();
            if (0..datasets).any(|d| world.slot_moved(d)) {
                world.probe("slot-repaired");
            }
            timeline.push(Sample {
                t_s: start.elapsed().as_secs_f64(),
                live_nodes: world.live_nodes().len(),
                datasets,
                datasets_available: available,
                bytes_sent: world.fabric.stats().bytes,
            });
        }
    }
}

/// Damages a block: anywhere on a random live node's disk, or (sparing last copies) a block
/// of a dataset that keeps another intact copy, on one of its holders.
pub(super) fn damage(
    world: &World,
    rng: &mut ChaCha8Rng,
    spare_last_copy: bool,
    hit: impl Fn(&SimDisk, Option<&[u8]>) -> bool,
) {
    if !spare_last_copy {
        if let Some(index) = pick(rng, &world.live_nodes()) {
            hit(&world.disk(index), None);
        }
        return;
    }
    let datasets = world.truths.lock().expect("truths").len();
    let redundant: Vec<(usize, Vec<usize>)> =
        (0..datasets).map(|d| (d, world.holders(d))).filter(|(_, holders)| holders.len() >= 2).collect();
    let Some((d, holders)) = redundant.choose(rng) else { return };
    let index = holders[rng.random_range(0..holders.len())];
    let key = {
        let truths = world.truths.lock().expect("truths");
        let blocks = &truths[*d].blocks;
        blocks[rng.random_range(0..blocks.len())].clone()
    };
    hit(&world.disk(index), Some(&key));
}

/// Crashes node `index`; a `damage` share of its stored blocks rot while it is down.
fn crash(world: &Arc<World>, index: usize, restart_after: Option<Duration>, damage: f64) {
    world.stop(index, true, restart_after.is_none());
    if damage > 0.0 {
        let rotten = world.disk(index).rot_share(damage);
        world.trace.record(format_args!("damage {index} {rotten}"));
    }
    if let Some(after) = restart_after {
        restart_later(world, index, after);
    }
}

pub(super) fn restart_later(world: &Arc<World>, index: usize, after: Duration) {
    let w = world.clone();
    let epoch = world.epochs.lock().expect("epochs")[index];
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if w.epochs.lock().expect("epochs")[index] == epoch {
            w.restart(index);
        }
    });
}

/// Faults stop: partitions heal, clogs clear, every node that is down comes back.
pub(super) fn heal_all(world: &Arc<World>) {
    world.trace.record("healing");
    world.fabric.heal();
    world.fabric.unclog_all();
    for index in 0..world.peers.len() {
        world.restart(index);
    }
}
