//! The simulator's library: the parts that tests outside the simulator binary use too.
//!
//! - [`evm`]: `ModeledChain`, an EVM chain in one process (revm running the committed
//!   contracts under modeled blocks), the simulator's chain and the contract tests' chain.

pub mod evm;
