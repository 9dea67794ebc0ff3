//! A contract's events from a block on, in chain order and without gaps: each step waits for
//! a new confirmed block and reads the logs of every block since the last step, so events
//! emitted while the node was busy, restarting or disconnected are read late, never lost.

use std::sync::Arc;

use alloy_primitives::Address;
use alloy_sol_types::SolEventInterface;

use super::contracts::Marketplace::MarketplaceEvents;
use super::{Chain, ChainError, ChainLog, LogFilter};

/// Most blocks read in one request (endpoints limit the range of `eth_getLogs`).
pub const BLOCK_RANGE_MAX: u64 = 2_000;

pub struct EventFollower {
    chain: Arc<dyn Chain>,
    address: Address,
    next_block: u64,
    confirmations: u64,
}

impl EventFollower {
    /// Follows `address`'s events from `from_block` on. A block's events are read once
    /// `confirmations` blocks are built on it: on a chain that reorganises, a block that deep
    /// is taken as final, so no event is read from a block that later leaves the chain (0 on
    /// chains that do not reorganise, such as Anvil and the simulator's).
    pub fn new(
        chain: Arc<dyn Chain>,
        address: Address,
        from_block: u64,
        confirmations: u64,
    ) -> EventFollower {
        EventFollower { chain, address, next_block: from_block, confirmations }
    }

    /// The first block not read yet.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// Waits until a block not read yet has its confirmations, then reads the logs from the
    /// first block not read up to the newest confirmed one (at most [`BLOCK_RANGE_MAX`]
    /// blocks at a time): the last block read and the logs, in chain order. After an error,
    /// the next call reads the same blocks.
    pub async fn next(&mut self) -> Result<(u64, Vec<ChainLog>), ChainError> {
        let mut head = self.chain.head().await?;
        while head.number < self.next_block + self.confirmations {
            head = self.chain.next_block(head.number).await?;
        }
        let confirmed = head.number - self.confirmations;
        let to_block = confirmed.min(self.next_block + BLOCK_RANGE_MAX - 1);
        let filter = LogFilter { address: self.address, from_block: self.next_block, to_block };
        let logs = self.chain.logs(filter).await?;
        self.next_block = to_block + 1;
        Ok((to_block, logs))
    }
}

/// A marketplace event, or `None` for a log that is not one.
pub fn market_event(log: &ChainLog) -> Option<MarketplaceEvents> {
    MarketplaceEvents::decode_raw_log(&log.topics, &log.data).ok()
}
