//! The oracle's watch over protected datasets' slots through the run, not only at its end:
//! how long a slot stayed missing (no live node holding it intact), how many slots of a
//! dataset were missing at once, and needless repairs (a slot copied onto another node while
//! every slot of its dataset was held by a live node).

use super::*;

/// What the watch has seen so far.
#[derive(Default)]
pub(super) struct SlotWatch {
    /// Slots missing now, by (dataset, slot), and since when (virtual time since the start).
    missing_since: BTreeMap<(usize, usize), Duration>,
    /// The longest time a slot stayed missing: (time, dataset, slot).
    longest: Option<(Duration, usize, usize)>,
    /// The most slots of each dataset missing at the same look.
    most_at_once: BTreeMap<usize, usize>,
    /// Nodes (not departed) holding each slot intact at the last look.
    holders: BTreeMap<(usize, usize), BTreeSet<usize>>,
    /// Datasets with every slot held by a live node at the last look.
    whole: BTreeSet<usize>,
    /// Copies made while every slot of their dataset was held: (dataset, slot, node).
    needless: Vec<(usize, usize, usize)>,
}

impl World {
    /// One look at every placed protected dataset's slots, at `now` (since the start).
    pub(super) fn watch_slots(&self, now: Duration) {
        let placed: Vec<(usize, usize)> = {
            let truths = self.truths.lock().expect("truths");
            truths
                .iter()
                .enumerate()
                .filter_map(|(d, t)| {
                    t.slots.as_ref().filter(|s| !s.placed_on.is_empty()).map(|s| (d, s.slot_blocks.len()))
                })
                .collect()
        };
        for (d, slots) in placed {
            let live = self.live_slots(d, &[Life::Up]);
            let holders: Vec<BTreeSet<usize>> =
                (0..slots).map(|s| self.slot_holders(d, s).into_iter().collect()).collect();
            let mut watch = self.slot_watch.lock().expect("slot watch");
            let was_whole = watch.whole.contains(&d);
            let mut missing = 0;
            for (s, now_holding) in holders.into_iter().enumerate() {
                if live.contains(&s) {
                    if let Some(since) = watch.missing_since.remove(&(d, s)) {
                        let gone = now - since;
                        if watch.longest.is_none_or(|(longest, _, _)| gone > longest) {
                            watch.longest = Some((gone, d, s));
                        }
                    }
                } else {
                    missing += 1;
                    watch.missing_since.entry((d, s)).or_insert(now);
                }
                let before = watch.holders.insert((d, s), now_holding.clone()).unwrap_or_default();
                if was_whole {
                    for node in now_holding.difference(&before) {
                        watch.needless.push((d, s, *node));
                    }
                }
            }
            let most = watch.most_at_once.entry(d).or_default();
            *most = (*most).max(missing);
            if missing == 0 {
                watch.whole.insert(d);
            } else {
                watch.whole.remove(&d);
            }
        }
    }
}

/// Timely repair: no slot of a dataset that survived stayed missing longer than `bound` (when
/// set; slots still missing at the end count until the end), no such dataset ever had more
/// than M slots missing at once, and at most `needless_max` needless copies (when set).
pub(super) fn check_repair(
    world: &World,
    now: Duration,
    bound: Option<Duration>,
    needless_max: Option<u64>,
) -> Verdict {
    let datasets = world.truths.lock().expect("truths").len();
    let survived: BTreeSet<usize> = (0..datasets).filter(|&d| world.available(d)).collect();
    let (m_of, names): (Vec<usize>, Vec<String>) = {
        let truths = world.truths.lock().expect("truths");
        truths
            .iter()
            .map(|t| (t.slots.as_ref().map_or(0, |s| s.slot_blocks.len() - s.k), cid_to_string(&t.cid)))
            .unzip()
    };
    let survived = |d: usize| survived.contains(&d);
    let name = |d: usize| names[d].as_str();
    let watch = world.slot_watch.lock().expect("slot watch");
    let mut problems = Vec::new();

    let mut longest = watch.longest.filter(|(_, d, _)| survived(*d));
    for (&(d, s), &since) in &watch.missing_since {
        if survived(d) && longest.is_none_or(|(l, _, _)| now - since > l) {
            longest = Some((now - since, d, s));
        }
    }
    if let (Some(bound), Some((time, d, s))) = (bound, longest)
        && time > bound
    {
        problems.push(format!(
            "slot {s} of {} stayed missing {}s (bound {}s)",
            name(d),
            time.as_secs(),
            bound.as_secs()
        ));
    }
    let mut most = (0, 0);
    for (&d, &count) in &watch.most_at_once {
        if !survived(d) {
            continue;
        }
        most = most.max((count, d));
        let m = m_of[d];
        if count > m {
            problems.push(format!("{} had {count} slots missing at once (M = {m})", name(d)));
        }
    }
    let needless = watch.needless.len() as u64;
    if let Some(max) = needless_max
        && needless > max
    {
        let (d, s, node) = watch.needless[0];
        problems.push(format!(
            "{needless} needless repairs (at most {max}), the first slot {s} of {} onto node {node}",
            name(d)
        ));
    }
    let watched = watch.most_at_once.len();
    Verdict {
        name: "repair".into(),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "{watched} protected datasets watched: longest a slot stayed missing {}s{}, at most {} slots of a dataset missing at once, {needless} needless repairs",
                longest.map_or(0, |(t, _, _)| t.as_secs()),
                bound.map_or(String::new(), |b| format!(" (bound {}s)", b.as_secs())),
                most.0,
            )
        } else {
            problems.join("; ")
        },
    }
}
