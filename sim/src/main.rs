//! `cargo sim`: the deterministic simulator of Neverust nodes.
//!
//! Runs scenario files (`scenarios/*.toml`) under madsim: hundreds of nodes running the real
//! node logic over simulated ports, faults injected from the scenario, invariants checked
//! against an oracle. Every run prints its seed and trace hash; a failing run prints the
//! one command that replays it.

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulator is built with --cfg madsim: run it as `cargo sim ...` (see .cargo/config.toml)");
    std::process::exit(2);
}

#[cfg(madsim)]
mod chain;
#[cfg(madsim)]
mod dht;
#[cfg(madsim)]
mod disk;
#[cfg(madsim)]
mod net;
#[cfg(madsim)]
mod report;
// Without madsim only the scenario parser is built (and tested).
#[cfg_attr(not(madsim), allow(dead_code))]
mod scenario;
#[cfg(madsim)]
mod trace;
#[cfg(madsim)]
mod world;

#[cfg(madsim)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(madsim)]
mod cli {
    use std::path::{Path, PathBuf};

    use clap::{Parser, Subcommand};

    use crate::report;
    use crate::scenario::Scenario;
    use crate::world::{self, ChainBackendKind, Outcome};

    /// The deterministic simulator: Neverust nodes under madsim, faults from scenario files.
    #[derive(Debug, Parser)]
    #[command(name = "cargo sim", version, about)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        /// Run a scenario with one or more seeds.
        Run {
            /// The scenario file, e.g. scenarios/smoke.toml.
            scenario: PathBuf,
            /// The seed [default: 1].
            #[arg(long, conflicts_with = "seeds")]
            seed: Option<u64>,
            /// A range of seeds, e.g. 1..20 (end excluded).
            #[arg(long, value_name = "A..B")]
            seeds: Option<String>,
            /// Run each seed twice and fail if the trace hashes differ.
            #[arg(long)]
            check_determinism: bool,
            /// Write every run's outcome as JSON.
            #[arg(long, value_name = "FILE")]
            json: Option<PathBuf>,
            /// Write a self-contained HTML report (plots of the first run).
            #[arg(long, value_name = "FILE")]
            report: Option<PathBuf>,
            /// Override the scenario's node count (to measure speed at scale).
            #[arg(long, value_name = "N")]
            nodes: Option<u64>,
            /// The chain of a scenario with `[chain]`: revm in process, or a real Anvil.
            #[arg(long, value_enum, default_value = "revm")]
            chain: ChainBackendKind,
        },
        /// Run every scenario in a directory [default: scenarios] with its `suite-seeds`,
        /// each seed twice to check determinism (what CI runs).
        Suite {
            #[arg(default_value = "scenarios")]
            dir: PathBuf,
            /// With `anvil`: run only the scenarios with a chain, each seed over revm and over a
            /// real Anvil, and fail if their trace hashes differ (the in-process chain is
            /// faithful).
            #[arg(long, value_enum, default_value = "revm")]
            chain: ChainBackendKind,
        },
        /// Re-run a failure from the line it printed: `<scenario>@<seed>[#<trace hash>]`.
        Replay { line: String },
        /// One run in this process, its outcome printed as JSON (used by `run` and `replay`,
        /// which give every run a fresh process).
        #[command(hide = true)]
        One {
            scenario: PathBuf,
            seed: u64,
            #[arg(long)]
            nodes: Option<u64>,
            #[arg(long, value_enum, default_value = "revm")]
            chain: ChainBackendKind,
        },
        /// List the scenarios in a directory [default: scenarios].
        List {
            #[arg(default_value = "scenarios")]
            dir: PathBuf,
        },
    }

    fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Scenario::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())
    }

    fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        Ok(files)
    }

    fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
        let (a, b) = text.split_once("..").ok_or_else(|| format!("--seeds {text:?}: expected A..B"))?;
        let a: u64 = a.parse().map_err(|_| format!("--seeds {text:?}: {a:?} is not a number"))?;
        let b: u64 = b.parse().map_err(|_| format!("--seeds {text:?}: {b:?} is not a number"))?;
        if a >= b {
            return Err(format!("--seeds {text:?}: empty range"));
        }
        Ok(a..b)
    }

    fn replay_line(path: &Path, outcome: &Outcome) -> String {
        format!("cargo sim replay {}@{}#{}", path.display(), outcome.seed, outcome.trace_hash)
    }

    pub fn main() -> i32 {
        let cli = Cli::parse();
        match run(cli.command) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("error: {message}");
                2
            }
        }
    }

    fn run(command: Command) -> Result<i32, String> {
        match command {
            Command::Run {
                scenario: path,
                seed,
                seeds,
                check_determinism,
                json,
                report: html,
                nodes,
                chain,
            } => {
                load(&path)?;
                let seeds = match (seed, seeds) {
                    (_, Some(range)) => parse_seeds(&range)?.collect::<Vec<_>>(),
                    (Some(seed), None) => vec![seed],
                    (None, None) => vec![1],
                };
                let mut outcomes = Vec::new();
                let mut code = 0;
                for seed in seeds {
                    let outcome = world::run_isolated(&path, seed, nodes, chain)?;
                    print!("{}", report::summary(&outcome));
                    if check_determinism {
                        let again = world::run_isolated(&path, seed, nodes, chain)?;
                        if again.trace_hash == outcome.trace_hash {
                            println!(
                                "determinism: seed {seed} ran twice with trace hash {}",
                                again.trace_hash
                            );
                        } else {
                            println!(
                                "NONDETERMINISM: seed {seed} gave trace hashes {} then {}",
                                outcome.trace_hash, again.trace_hash
                            );
                            code = 1;
                        }
                    }
                    if !outcome.ok() {
                        code = 1;
                    }
                    if !outcome.failed().is_empty() {
                        println!("replay: {}", replay_line(&path, &outcome));
                    }
                    outcomes.push(outcome);
                }
                if outcomes.len() > 1 {
                    let passed = outcomes.iter().filter(|o| o.ok()).count();
                    println!("{passed} of {} seeds passed", outcomes.len());
                }
                if let Some(file) = json {
                    let text = serde_json::to_string_pretty(&outcomes).expect("outcomes serialise");
                    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
                }
                if let Some(file) = html {
                    std::fs::write(&file, report::html(&outcomes[0]))
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                    println!("report: {}", file.display());
                }
                Ok(code)
            }
            Command::Replay { line } => {
                let line = line.trim().trim_start_matches("cargo sim replay").trim();
                let (rest, expected_hash) = match line.split_once('#') {
                    Some((rest, hash)) => (rest, Some(hash.to_string())),
                    None => (line, None),
                };
                let (path, seed) = rest
                    .rsplit_once('@')
                    .ok_or_else(|| format!("{line:?}: expected <scenario>@<seed>[#<hash>]"))?;
                let seed: u64 = seed.parse().map_err(|_| format!("{seed:?} is not a seed"))?;
                let path = PathBuf::from(path);
                load(&path)?;
                let outcome = world::run_isolated(&path, seed, None, ChainBackendKind::Revm)?;
                print!("{}", report::summary(&outcome));
                match expected_hash {
                    Some(hash) if hash == outcome.trace_hash => {
                        println!("replay: same trace hash {hash}: the run reproduced exactly");
                    }
                    Some(hash) => {
                        println!(
                            "replay: DIVERGED: trace hash {} where the original had {hash}",
                            outcome.trace_hash
                        );
                        return Ok(1);
                    }
                    None => {}
                }
                Ok(if outcome.ok() { 0 } else { 1 })
            }
            Command::One { scenario, seed, nodes, chain } => {
                if let Ok(filter) = std::env::var("NEVERUST_SIM_LOG") {
                    crate::log_to_stderr(&filter);
                }
                let mut scenario = load(&scenario)?;
                if let Some(n) = nodes {
                    scenario.nodes.count = crate::scenario::Param::Scalar(n);
                    scenario.validate().map_err(|e| format!("--nodes {n}: {e}"))?;
                }
                let outcome = world::run(&scenario, seed, chain)?;
                println!("{}", serde_json::to_string(&outcome).expect("outcome serialises"));
                Ok(0)
            }
            Command::Suite { dir, chain } => {
                let wall = std::time::Instant::now();
                let mut failures = Vec::new();
                let mut runs = 0;
                for file in scenario_files(&dir)? {
                    let scenario = load(&file)?;
                    if chain == ChainBackendKind::Anvil
                        && !scenario.chain.as_ref().is_some_and(|c| c.suite_on_anvil)
                    {
                        continue;
                    }
                    for seed in parse_seeds(&scenario.suite_seeds)? {
                        // Twice on one chain (determinism), or on revm then on Anvil (fidelity).
                        let first = world::run_isolated(&file, seed, None, ChainBackendKind::Revm)?;
                        let again = world::run_isolated(&file, seed, None, chain)?;
                        runs += 2;
                        let status = match (first.ok() && again.ok(), first.trace_hash == again.trace_hash) {
                            (true, true) if chain == ChainBackendKind::Anvil => {
                                "pass: Anvil gives the same trace hash".to_string()
                            }
                            (true, true) => "pass".to_string(),
                            (false, _) if !first.ok() => {
                                failures.push(replay_line(&file, &first));
                                print!("{}", report::summary(&first));
                                "FAIL".to_string()
                            }
                            (true, false) => {
                                failures.push(format!(
                                    "{}@{seed}: trace hashes {} and {} differ",
                                    file.display(),
                                    first.trace_hash,
                                    again.trace_hash
                                ));
                                if chain == ChainBackendKind::Anvil {
                                    "DIFFERENT ON ANVIL".to_string()
                                } else {
                                    "NONDETERMINISTIC".to_string()
                                }
                            }
                            (false, _) => {
                                failures.push(format!(
                                    "{}@{seed} --chain {}: failed",
                                    file.display(),
                                    chain.name()
                                ));
                                print!("{}", report::summary(&again));
                                "FAIL".to_string()
                            }
                        };
                        println!(
                            "{:<30} seed {seed:<3} {:>4} nodes {:>9} virtual {:>8.0}x  trace hash {}  {status}",
                            file.display(),
                            first.nodes,
                            format!("{:.0}s", first.virtual_time_s),
                            first.speed,
                            first.trace_hash,
                        );
                    }
                }
                println!("{runs} runs in {:.1} s; {} failures", wall.elapsed().as_secs_f64(), failures.len());
                for line in &failures {
                    println!("replay: {line}");
                }
                Ok(if failures.is_empty() { 0 } else { 1 })
            }
            Command::List { dir } => {
                for file in scenario_files(&dir)? {
                    match load(&file) {
                        Ok(s) => println!("{:<28} {}", file.display(), s.description),
                        Err(e) => println!("{:<28} INVALID: {e}", file.display()),
                    }
                }
                Ok(0)
            }
        }
    }
}

#[cfg(madsim)]
/// Logs of the node logic to stderr, filtered by `filter` (`info`, `neverust::durability=debug`),
/// each line stamped with the simulated clock and the node it comes from. Installed before the
/// simulation starts, so that logging does not change a run: its trace hash is the same with
/// logs on or off.
fn log_to_stderr(filter: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
