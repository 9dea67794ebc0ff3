//! A run: its schedule of workloads and faults, the madsim runtime, and the phases (faults,
//! healing, checks).

use super::*;

/// A timed action of the fault phase.
#[derive(Clone, Debug)]
pub(super) enum Action {
    Upload {
        size: u64,
        seed: u64,
        nodes: Option<[u64; 2]>,
        on: Role,
        protect: Option<[u32; 2]>,
    },
    Download {
        nodes: Option<[u64; 2]>,
        on: Role,
        keep: bool,
    },
    Request {
        size: u64,
        seed: u64,
        nodes: Option<[u64; 2]>,
        on: Role,
    },
    Arrive,
    Churn {
        crash: bool,
        permanent: bool,
        downtime: Duration,
        spare: Vec<u64>,
        spare_last_copy: bool,
    },
    Crash {
        node: Target,
        restart_after: Option<Duration>,
        damage: f64,
        every: Duration,
        until: Duration,
        spare: Vec<u64>,
    },
    /// `until`: the end of the fault phase (departures spaced by `every` stop there).
    Depart {
        node: Target,
        every: Duration,
        until: Duration,
        spare: Vec<u64>,
    },
    Partition {
        split: f64,
        one_way: bool,
    },
    Heal,
    Clog {
        count: u64,
        until: Duration,
    },
    BitRot {
        spare_last_copy: bool,
    },
    LatentError {
        spare_last_copy: bool,
    },
    Sample,
}

/// Which chain a scenario's `[chain]` runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChainBackendKind {
    /// `ModeledChain`: revm in process (the default).
    #[default]
    Revm,
    /// A real Anvil, stepped block by block from the simulated clock.
    Anvil,
}

impl ChainBackendKind {
    pub fn name(self) -> &'static str {
        match self {
            ChainBackendKind::Revm => "revm",
            ChainBackendKind::Anvil => "anvil",
        }
    }
}

/// Runs `scenario` with `seed` in a fresh madsim runtime, its chain (if it has one) on
/// `chain`.
///
/// Call it once per process: madsim numbers tasks from a process-wide counter, so a second
/// run in the same process schedules differently. [`run_isolated`] runs it in a child
/// process.
pub fn run(scenario: &Scenario, seed: u64, chain: ChainBackendKind) -> Result<Outcome, String> {
    let wall = std::time::Instant::now();
    // Anvil starts before the simulation: its process and its answers live outside virtual time.
    let mut anvil = None;
    let backend: Option<Box<dyn EvmBackend>> = match (&scenario.chain, chain) {
        (None, _) => None,
        (Some(_), ChainBackendKind::Revm) => Some(Box::new(ModeledChain::new(ChainParams::default(), &[]))),
        (Some(_), ChainBackendKind::Anvil) => {
            let params = ChainParams::default();
            let args = neverust_sim::evm::anvil::anvil_args(&params);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let process = neverust::chain::anvil::Anvil::spawn(&args)?;
            let backend = neverust_sim::evm::anvil::AnvilBackend::connect(process.port(), params)?;
            anvil = Some(process);
            Some(Box::new(backend))
        }
    };
    let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, crate::net::madsim_config());
    let backend = backend.map(|b| (b, chain.name()));
    let mut outcome = runtime.block_on(simulate(scenario.clone(), seed, backend));
    drop(anvil);
    outcome.wall_time_s = wall.elapsed().as_secs_f64();
    outcome.speed = outcome.virtual_time_s / outcome.wall_time_s.max(1e-9);
    Ok(outcome)
}

/// Runs the scenario file `path` with `seed` in a fresh process of this program (see
/// [`run`]), which prints the outcome as JSON.
pub fn run_isolated(
    path: &std::path::Path,
    seed: u64,
    nodes: Option<u64>,
    chain: ChainBackendKind,
) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(exe);
    command.arg("one").arg(path).arg(seed.to_string()).arg("--chain").arg(chain.name());
    if let Some(n) = nodes {
        command.arg("--nodes").arg(n.to_string());
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("starting a run: {e}"))?;
    if !output.status.success() {
        return Err(format!("the run of seed {seed} crashed ({})", output.status));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("reading the outcome of seed {seed}: {e}"))
}

pub(super) fn poisson_times(rng: &mut ChaCha8Rng, per_hour: f64, span: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    if per_hour <= 0.0 {
        return times;
    }
    let mut t = 0.0;
    loop {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        t += -u.ln() * 3600.0 / per_hour;
        if t >= span.as_secs_f64() {
            return times;
        }
        times.push(Duration::from_secs_f64(t));
    }
}

pub(super) fn schedule(
    scenario: &Scenario,
    rng: &mut ChaCha8Rng,
    arrivals: &[Duration],
) -> Vec<(Duration, Action)> {
    let duration = scenario.duration.0;
    let mut plan: Vec<(Duration, Action)> = arrivals.iter().map(|&at| (at, Action::Arrive)).collect();
    for w in &scenario.workloads {
        let count = w.count.draw(rng);
        for k in 0..count {
            let at = w.start.0 + w.every.0 * k as u32;
            if at >= duration {
                break;
            }
            let action = match w.kind {
                WorkloadKind::Upload => Action::Upload {
                    size: w.size.expect("validated").draw(rng),
                    seed: rng.random(),
                    nodes: w.nodes,
                    on: w.on,
                    protect: w.protect,
                },
                WorkloadKind::Download => Action::Download { nodes: w.nodes, on: w.on, keep: w.keep },
                WorkloadKind::Request => Action::Request {
                    size: w.size.expect("validated").draw(rng),
                    seed: rng.random(),
                    nodes: w.nodes,
                    on: w.on,
                },
            };
            plan.push((at, action));
        }
    }
    let faults = &scenario.faults;
    if let Some(churn) = &faults.churn {
        let rate = churn.departures_per_hour.draw(rng);
        for at in poisson_times(rng, rate, duration) {
            let [low, high] = churn.downtime;
            let downtime =
                Duration::from_secs_f64(rng.random_range(low.0.as_secs_f64()..=high.0.as_secs_f64()));
            let action = Action::Churn {
                crash: rng.random_bool(churn.crash_share),
                permanent: rng.random_bool(churn.permanent_share),
                downtime,
                spare: churn.spare.clone(),
                spare_last_copy: churn.spare_last_copy,
            };
            plan.push((at, action));
        }
    }
    let faults_in_time = |at: Duration| at < duration;
    for c in faults.crash.iter().filter(|c| faults_in_time(c.at.0)) {
        plan.push((
            c.at.0,
            Action::Crash {
                node: c.node.clone(),
                restart_after: c.restart_after.map(|s| s.0),
                damage: c.damage,
                every: c.every.0,
                until: duration,
                spare: c.spare.clone(),
            },
        ));
    }
    for d in faults.depart.iter().filter(|d| faults_in_time(d.at.0)) {
        plan.push((
            d.at.0,
            Action::Depart {
                node: d.node.clone(),
                every: d.every.0,
                until: duration,
                spare: d.spare.clone(),
            },
        ));
    }
    for p in faults.partition.iter().filter(|p| faults_in_time(p.at.0)) {
        let split = p.split.draw(rng);
        plan.push((p.at.0, Action::Partition { split, one_way: p.one_way }));
        plan.push((p.at.0 + p.duration.0, Action::Heal));
    }
    for c in faults.clog.iter().filter(|c| faults_in_time(c.at.0)) {
        let count = c.nodes.draw(rng);
        plan.push((c.at.0, Action::Clog { count, until: c.at.0 + c.duration.0 }));
    }
    if let Some(disk) = &faults.disk {
        let rate = disk.bit_rot_per_hour.draw(rng);
        for at in poisson_times(rng, rate, duration) {
            plan.push((at, Action::BitRot { spare_last_copy: disk.spare_last_copy }));
        }
        let rate = disk.latent_errors_per_hour.draw(rng);
        for at in poisson_times(rng, rate, duration) {
            plan.push((at, Action::LatentError { spare_last_copy: disk.spare_last_copy }));
        }
    }
    let total = duration + scenario.healing.0 + scenario.invariants.liveness_bound.0;
    for k in 0..=TIMELINE_SAMPLES {
        plan.push((total * k / TIMELINE_SAMPLES, Action::Sample));
    }
    plan.sort_by_key(|(at, _)| *at);
    plan
}

pub(super) async fn simulate(
    scenario: Scenario,
    seed: u64,
    chain_backend: Option<(Box<dyn EvmBackend>, &'static str)>,
) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let initial = scenario.nodes.count.draw(&mut rng) as usize;
    let mut arrivals = match &scenario.faults.churn {
        Some(churn) => {
            let rate = churn.arrivals_per_hour.draw(&mut rng);
            poisson_times(&mut rng, rate, scenario.duration.0)
        }
        None => Vec::new(),
    };
    for batch in scenario.faults.arrive.iter().filter(|a| a.at.0 < scenario.duration.0) {
        arrivals.extend(std::iter::repeat_n(batch.at.0, batch.count as usize));
    }
    arrivals.sort();
    let n = initial + arrivals.len();
    let clients: BTreeSet<usize> = (initial - scenario.nodes.clients as usize..initial).collect();
    let trace = Arc::new(Trace::new());
    trace.record(format_args!(
        "scenario {} seed {seed} nodes {initial} arrivals {}",
        scenario.name,
        arrivals.len()
    ));
    let peers: Vec<PeerId> = (0..n).map(sim_peer_id).collect();
    let net = &scenario.network;
    let latency = match net.latency_ms {
        crate::scenario::Param::Scalar(v) => [v, v],
        crate::scenario::Param::Range(r) => r,
    };
    let params = LinkParams {
        latency_ms: latency,
        jitter_ms: net.jitter_ms.draw(&mut rng),
        bandwidth_bytes_per_s: net.bandwidth.0 as f64,
        loss: net.loss.draw(&mut rng),
        duplicate: net.duplicate.draw(&mut rng),
        reorder: net.reorder.draw(&mut rng),
        dial_timeout: net.dial_timeout.0,
        failure_detection: net.failure_detection.0,
    };
    let slow_fraction = scenario.nodes.slow_fraction.draw(&mut rng);
    let slowness: Vec<f64> = (0..n)
        .map(
            |_| if rng.random_bool(slow_fraction.clamp(0.0, 1.0)) { scenario.nodes.slow_factor } else { 1.0 },
        )
        .collect();
    let fabric =
        Fabric::new(params, peers.clone(), slowness, ChaCha8Rng::seed_from_u64(rng.random()), trace.clone());
    let dht = ModeledDht::new(
        fabric.clone(),
        &peers,
        scenario.dht.replication as usize,
        scenario.dht.record_ttl.0,
        rng.random(),
        trace.clone(),
    );
    let disk_faults = scenario.faults.disk.clone().unwrap_or_default();
    let disks: Vec<Arc<SimDisk>> = (0..n)
        .map(|_| {
            let profile = DiskProfile {
                lying_fsync: rng.random_bool(disk_faults.lying_fsync_share),
                torn_writes: disk_faults.torn_writes,
                misdirected_write: disk_faults.misdirected_write,
                capacity_bytes: rng
                    .random_bool(disk_faults.small_disk_share)
                    .then_some(disk_faults.small_disk.0),
            };
            SimDisk::new(profile, ChaCha8Rng::seed_from_u64(rng.random()))
        })
        .collect();
    let world = Arc::new(World {
        trace: trace.clone(),
        fabric: fabric.clone(),
        dht: dht.clone(),
        peers,
        disks: Mutex::new(disks),
        services: (0..n).map(|_| Mutex::new(None)).collect(),
        life: Mutex::new((0..n).map(|i| if i < initial { Life::Up } else { Life::Absent }).collect()),
        epochs: Mutex::new(vec![0; n]),
        madsim_nodes: Mutex::new(Vec::new()),
        clients,
        block_size: scenario.block_size.0 as usize,
        quota: scenario.nodes.quota.0,
        republish: scenario.dht.republish.0,
        repair: neverust::durability::DurabilityConfig {
            check_interval: scenario.repair.check_interval.0,
            repair_after: scenario.repair.after.0,
            request_timeout: scenario.repair.request_timeout.0,
            hold_timeout: scenario.repair.hold_timeout.0,
            ..neverust::durability::DurabilityConfig::default()
        },
        hash_rate: scenario.nodes.hash_rate.0,
        prove_rate: scenario.nodes.prove_rate,
        truths: Mutex::new(Vec::new()),
        probes: Mutex::new(BTreeMap::new()),
        counters: Mutex::new(Counters::default()),
        slot_watch: Mutex::new(SlotWatch::default()),
        integrity_violations: Mutex::new(Vec::new()),
        healed_at: Mutex::new(None),
        market: std::sync::OnceLock::new(),
    });
    {
        let w = world.clone();
        let every = disk_faults.flush_interval.0;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for disk in w.disks.lock().expect("disks").iter() {
                    disk.flush();
                }
            }
        });
    }

    let node_accounts: Vec<alloy_primitives::Address> = (0..n).map(super::market::account).collect();
    let chain = match (&scenario.chain, chain_backend) {
        (Some(model), Some((backend, name))) => {
            Some(super::chain::start(model, backend, name, &mut rng, trace.clone(), &node_accounts))
        }
        _ => None,
    };
    if let (Some(model), Some(chain)) = (scenario.chain.as_ref().and_then(|c| c.market.clone()), &chain) {
        let block_time = scenario.chain.as_ref().expect("a chain").block_time.0;
        let run = super::market::MarketRun::start(
            model,
            chain.net.clone(),
            chain.deployer(),
            block_time,
            n,
            rng.random(),
        );
        let _ = world.market.set(run);
    }
    // Nodes start once the market (if any) is set up: their program reads it.
    for _ in 0..initial {
        world.launch();
    }

    let start = tokio::time::Instant::now();
    let plan = schedule(&scenario, &mut rng, &arrivals);
    let fault_end = scenario.duration.0;
    let mut timeline = Vec::new();
    let mut healing_started = false;
    let mut checks_done = false;
    let mut verdict_liveness: Option<Verdict> = None;
    for (at, action) in plan {
        if !healing_started && at >= fault_end {
            healing_started = true;
            tokio::time::sleep_until(start + fault_end).await;
            heal_all(&world);
        }
        if !checks_done && at >= fault_end + scenario.healing.0 {
            checks_done = true;
            tokio::time::sleep_until(start + fault_end + scenario.healing.0).await;
            verdict_liveness =
                Some(check_liveness(&world, &mut rng, scenario.invariants.liveness_bound.0).await);
        }
        tokio::time::sleep_until((start + at).max(tokio::time::Instant::now())).await;
        execute(&world, &mut rng, action, &mut timeline, start).await;
    }
    if !healing_started {
        tokio::time::sleep_until(start + fault_end).await;
        heal_all(&world);
    }
    if !checks_done {
        tokio::time::sleep_until(start + fault_end + scenario.healing.0).await;
        verdict_liveness = Some(check_liveness(&world, &mut rng, scenario.invariants.liveness_bound.0).await);
    }
    let virtual_time = start.elapsed();
    let network = fabric.stats();
    if network.retransmissions > 0 {
        world.probe("retransmission");
    }
    let chain_summary = chain.as_ref().map(|c| c.summary());
    let verdict_payments = chain.as_ref().and_then(|c| c.check_payments());
    if let Some(summary) = &chain_summary {
        for (probe, fired) in [
            ("proof-missed-and-slashed", summary.slashes > 0),
            ("slot-repaired-on-chain", summary.repairs > 0),
            ("transaction-sent-again", summary.stats.resent > 0),
        ] {
            if fired {
                world.probe(probe);
            }
        }
    }
    let market_verdicts = world.market.get().map(|m| m.check(&world)).unwrap_or_default();
    let mut invariants = vec![
        check_integrity(&world),
        check_durability(&world),
        check_redundancy(&world),
        check_repair(
            &world,
            virtual_time,
            scenario.invariants.repair_bound.map(|s| s.0),
            scenario.invariants.needless_repairs_max,
        ),
        verdict_liveness.expect("checked"),
        check_sometimes(&world, &scenario.invariants.sometimes),
    ];
    invariants.extend(verdict_payments);
    invariants.extend(market_verdicts);
    for v in &invariants {
        trace.record(format_args!("invariant {} {}", v.name, v.passed));
    }
    let counters = std::mem::take(&mut *world.counters.lock().expect("counters"));
    let mut disk = DiskStats::default();
    for d in world.disks.lock().expect("disks").iter() {
        let s = d.stats();
        disk.commits_lost += s.commits_lost;
        disk.torn_blocks += s.torn_blocks;
        disk.bit_rot += s.bit_rot;
        disk.latent_errors += s.latent_errors;
        disk.read_errors += s.read_errors;
        disk.misdirected_writes += s.misdirected_writes;
        disk.full_refusals += s.full_refusals;
    }
    let (dht_lookups, dht_records_lost) = dht.stats();
    let probes = world.probes.lock().expect("probes").clone();
    trace.dump(seed);
    Outcome {
        scenario: scenario.name.clone(),
        seed,
        trace_hash: trace.hash(),
        trace_events: trace.events(),
        nodes: initial,
        virtual_time_s: virtual_time.as_secs_f64(),
        wall_time_s: 0.0,
        speed: 0.0,
        uploads_acknowledged: counters.uploads_acknowledged,
        uploads_failed: counters.uploads_failed,
        downloads_completed: counters.downloads_completed,
        downloads_failed: counters.downloads_failed,
        crashes: counters.crashes,
        restarts: counters.restarts,
        departures: counters.departures,
        arrivals: counters.arrivals,
        network,
        dht_lookups,
        dht_records_lost,
        disk,
        probes,
        invariants,
        expected_failure: scenario.invariants.expect_failure.clone(),
        timeline,
        chain: chain_summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A departure scheduled for a node that is down takes it for good: its earlier restart
    /// timer does nothing, nor does the healing phase bring it back.
    #[test]
    fn a_node_that_is_down_departs_for_good() {
        let text = "name = \"t\"\nduration = \"20m\"\nhealing = \"1m\"\n[nodes]\ncount = 4\n\
                    [[faults.crash]]\nat = \"1m\"\nnode = 2\nrestart-after = \"10m\"\n\
                    [[faults.depart]]\nat = \"2m\"\nnode = 2\n";
        let scenario = Scenario::parse("t.toml", text).unwrap();
        let outcome = run(&scenario, 1, ChainBackendKind::Revm).unwrap();
        assert_eq!((outcome.crashes, outcome.departures, outcome.restarts), (1, 1, 0));
    }

    /// Batches of arrivals join; a download that does not keep its copy leaves the uploader's
    /// the only one, so the dataset is lost with it (kept, the downloader's copy saves it).
    #[test]
    fn arrivals_join_in_batches_and_unkept_downloads_add_no_copy() {
        let text = |keep: bool| {
            format!(
                "name = \"t\"\nduration = \"20m\"\nhealing = \"1m\"\n[nodes]\ncount = 4\n\
                 [[workload]]\nkind = \"upload\"\ncount = 1\nsize = \"64KiB\"\nstart = \"10s\"\nnodes = [1, 1]\n\
                 [[workload]]\nkind = \"download\"\ncount = 1\nstart = \"2m\"\nnodes = [2, 2]\nkeep = {keep}\n\
                 [[faults.depart]]\nat = \"10m\"\nnode = 1\n\
                 [[faults.arrive]]\nat = \"5m\"\ncount = 3\n"
            )
        };
        let durability = |keep: bool| {
            let scenario = Scenario::parse("t.toml", &text(keep)).unwrap();
            let outcome = run(&scenario, 1, ChainBackendKind::Revm).unwrap();
            assert_eq!(outcome.arrivals, 3);
            assert!(outcome.downloads_completed >= 1);
            outcome.invariants.iter().find(|v| v.name == "durability").unwrap().passed
        };
        assert!(!durability(false), "an unkept download leaves no copy");
        assert!(durability(true), "a kept download is a copy");
    }
}
