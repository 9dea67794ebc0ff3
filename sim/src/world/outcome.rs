//! What a run reports: its outcome, the invariants' verdicts, the timeline.

use super::*;

/// The result of one run.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub trace_hash: String,
    pub trace_events: u64,
    /// Nodes at the start (see `arrivals` for those that joined later).
    pub nodes: usize,
    pub virtual_time_s: f64,
    pub wall_time_s: f64,
    pub speed: f64,
    pub uploads_acknowledged: u64,
    pub uploads_failed: u64,
    pub downloads_completed: u64,
    pub downloads_failed: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub departures: u64,
    pub arrivals: u64,
    pub network: NetStats,
    pub dht_lookups: u64,
    pub dht_records_lost: u64,
    pub disk: DiskStats,
    pub probes: BTreeMap<String, u64>,
    pub invariants: Vec<Verdict>,
    pub expected_failure: Option<String>,
    pub timeline: Vec<Sample>,
    /// The chain's part, when the scenario has one.
    #[serde(default)]
    pub chain: Option<super::chain::ChainSummary>,
}

impl Outcome {
    /// Failed invariants.
    pub fn failed(&self) -> Vec<&Verdict> {
        self.invariants.iter().filter(|v| !v.passed).collect()
    }

    /// Whether the run is a pass: every invariant held, or exactly the expected one failed.
    pub fn ok(&self) -> bool {
        let failed: BTreeSet<&str> = self.failed().iter().map(|v| v.name.as_str()).collect();
        match &self.expected_failure {
            None => failed.is_empty(),
            Some(expected) => failed.len() == 1 && failed.contains(expected.as_str()),
        }
    }
}

/// One invariant's result.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Verdict {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The state of the run at one point of virtual time.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Sample {
    pub t_s: f64,
    pub live_nodes: usize,
    pub datasets: usize,
    pub datasets_available: usize,
    pub bytes_sent: u64,
}
