//! The run's trace: every event that matters, hashed in order with its virtual time.
//!
//! Two runs of one seed must produce the same trace hash; a difference means something
//! escaped the seed (wall-clock time, OS randomness, hash-map order) and the run is not
//! reproducible.

use std::fmt::Display;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub struct Trace {
    start: Instant,
    state: Mutex<State>,
}

struct State {
    hasher: Sha256,
    events: u64,
    /// Every line, when `NEVERUST_SIM_TRACE` names a file to write them to (for finding
    /// where two runs diverge).
    lines: Option<Vec<String>>,
}

impl Trace {
    pub fn new() -> Trace {
        let lines = std::env::var_os("NEVERUST_SIM_TRACE").map(|_| Vec::new());
        Trace { start: Instant::now(), state: Mutex::new(State { hasher: Sha256::new(), events: 0, lines }) }
    }

    pub fn record(&self, event: impl Display) {
        let line = format!("{} {event}\n", self.start.elapsed().as_nanos());
        let mut state = self.state.lock().expect("trace lock");
        state.hasher.update(line.as_bytes());
        state.events += 1;
        if let Some(lines) = &mut state.lines {
            lines.push(line);
        }
    }

    /// Writes the lines to the file `NEVERUST_SIM_TRACE` names (suffixed with the seed).
    pub fn dump(&self, seed: u64) {
        let state = self.state.lock().expect("trace lock");
        if let (Some(lines), Some(path)) = (&state.lines, std::env::var_os("NEVERUST_SIM_TRACE")) {
            let mut path = std::path::PathBuf::from(path).into_os_string();
            path.push(format!(".{seed}"));
            let _ = std::fs::write(&path, lines.concat());
        }
    }

    pub fn events(&self) -> u64 {
        self.state.lock().expect("trace lock").events
    }

    /// The hash so far, as 16 hex digits.
    pub fn hash(&self) -> String {
        let digest = self.state.lock().expect("trace lock").hasher.clone().finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}
