//! `neverust check`: the store checker (`store::check`) over a stopped node's data directory.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::start::{STORE_DIR, lock_data_dir};
use crate::store::check::{check, repair};
use crate::store::{KvEngine, LmdbEngine};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The node's data directory [default: the platform data dir, e.g. ~/.local/share/neverust].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Fix what the store alone can fix (reference counts, tree records, counters, blocks
    /// nothing refers to); what must come from the network is listed.
    #[arg(long)]
    pub repair: bool,
}

/// Checks (and with `--repair` repairs) the store; fails when problems remain.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(crate::config::default_data_dir);
    let store_dir = data_dir.join(STORE_DIR);
    let file = store_dir.join("data.mdb");
    let size = std::fs::metadata(&file)
        .with_context(|| format!("no store in {} (is it a node's data dir?)", data_dir.display()))?
        .len();
    // A running node holds the lock: its store is checked once it has stopped.
    let _lock = lock_data_dir(&data_dir)?;
    let engine =
        LmdbEngine::open(&store_dir, size).with_context(|| format!("opening {}", store_dir.display()))?;
    eprintln!(
        "checking {} ({} MiB){}",
        store_dir.display(),
        size >> 20,
        if args.repair { ", repairing" } else { "" }
    );
    let report = if args.repair { repair(&engine)? } else { engine.read(check)? };
    print!("{report}");
    if !report.is_clean() {
        bail!("{} problems in {}", report.problems.len(), store_dir.display());
    }
    Ok(())
}
