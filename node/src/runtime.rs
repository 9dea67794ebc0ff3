//! The runtime seam: compute and randomness.
//!
//! Time and tasks come from `tokio`, which in this crate is the `madsim-tokio` package: real
//! tokio in a normal build, madsim's virtual clock and scheduler under `--cfg madsim`. Node logic
//! never reads the wall clock, starts OS threads or draws OS randomness itself; it asks here.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Where CPU-heavy work (hashing, erasure coding, proving) runs.
///
/// In production it runs on tokio's blocking pool so the async workers keep serving I/O. The
/// simulator runs it inline (madsim forbids OS threads) and charges its cost as virtual time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compute {
    /// Run on the blocking thread pool.
    Pool,
    /// Run on the calling task (tests).
    Inline,
    /// Run on the calling task, then let virtual time pass as if the work ran at these rates
    /// (the simulator: work costs nothing on a virtual clock otherwise).
    Modeled {
        /// SHA-256 throughput of the simulated machine.
        hash_bytes_per_sec: u64,
        /// Groth16 proving speed of the simulated machine, in circuit constraints a second
        /// (a proof's cost grows with its circuit's constraints: `benches/proofs.rs`).
        prove_constraints_per_sec: u64,
    },
}

impl Compute {
    /// Runs `work` and returns its result. A panic inside `work` is re-raised here.
    pub async fn run<R, F>(self, work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Compute::Inline | Compute::Modeled { .. } => work(),
            // The simulator has no thread pool (madsim forbids OS threads): inline there too.
            #[cfg(madsim)]
            Compute::Pool => work(),
            #[cfg(not(madsim))]
            Compute::Pool => match tokio::task::spawn_blocking(work).await {
                Ok(result) => result,
                Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
            },
        }
    }
}

/// What a piece of work costs a modeled machine.
#[derive(Clone, Copy, Debug)]
enum Cost {
    HashBytes(u64),
    ProveConstraints(u64),
}

impl Compute {
    /// Runs `work`, which hashes `bytes` bytes; under [`Compute::Modeled`] the hashing time
    /// passes on the (virtual) clock afterwards.
    pub async fn run_hashing<R, F>(self, bytes: u64, work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.run_costing(Cost::HashBytes(bytes), work).await
    }

    /// Runs `work`, which makes a Groth16 proof of a circuit of `constraints` constraints;
    /// under [`Compute::Modeled`] the proving time passes on the (virtual) clock afterwards.
    pub async fn run_proving<R, F>(self, constraints: u64, work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.run_costing(Cost::ProveConstraints(constraints), work).await
    }

    async fn run_costing<R, F>(self, cost: Cost, work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let result = self.run(work).await;
        if let Compute::Modeled { hash_bytes_per_sec, prove_constraints_per_sec } = self {
            let (amount, rate) = match cost {
                Cost::HashBytes(bytes) => (bytes, hash_bytes_per_sec),
                Cost::ProveConstraints(constraints) => (constraints, prove_constraints_per_sec),
            };
            // A rate of 0 leaves that kind of work unmodeled: no time passes.
            if rate > 0 {
                tokio::time::sleep(std::time::Duration::from_secs_f64(amount as f64 / rate as f64)).await;
            }
        }
        result
    }
}

/// The node's seeded random number generator.
///
/// Every random choice in node logic draws from one of these; each subsystem gets a child with
/// [`NodeRng::child`], so a run is reproducible from the one seed printed at start.
#[derive(Debug)]
pub struct NodeRng {
    seed: u64,
    rng: ChaCha8Rng,
}

impl NodeRng {
    pub fn from_seed(seed: u64) -> Self {
        NodeRng { seed, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A child generator for a subsystem, derived deterministically from this one.
    pub fn child(&mut self) -> NodeRng {
        NodeRng::from_seed(rand::Rng::random(&mut self.rng))
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_seed_same_children() {
        let draws = |seed| {
            let mut root = NodeRng::from_seed(seed);
            let mut child = root.child();
            (root.rng().random::<u64>(), child.rng().random::<u64>())
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[tokio::test]
    async fn compute_modes_agree() {
        let a = Compute::Pool.run(|| (1..=10u64).product::<u64>()).await;
        let b = Compute::Inline.run(|| (1..=10u64).product::<u64>()).await;
        assert_eq!(a, 3_628_800);
        assert_eq!(a, b);
    }
}
