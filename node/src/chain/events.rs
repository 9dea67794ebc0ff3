//! A contract's events from a block on, in chain order and without gaps: each step waits for
//! a new block and reads the logs of every block since the last step, so events emitted while
//! the node was busy, restarting or disconnected are read late, never lost.

use std::sync::Arc;

use alloy_primitives::Address;
use alloy_sol_types::SolEventInterface;

use super::contracts::Marketplace::MarketplaceEvents;
use super::{BlockHead, Chain, ChainError, ChainLog, LogFilter};

/// Most blocks read in one request (endpoints limit the range of `eth_getLogs`).
pub const BLOCK_RANGE_MAX: u64 = 2_000;

pub struct EventFollower {
    chain: Arc<dyn Chain>,
    address: Address,
    next_block: u64,
}

impl EventFollower {
    /// Follows `address`'s events from `from_block` on.
    pub fn new(chain: Arc<dyn Chain>, address: Address, from_block: u64) -> EventFollower {
        EventFollower { chain, address, next_block: from_block }
    }

    /// The first block not read yet.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// Waits until a block not read yet exists, then reads the logs from the first block
    /// not read up to the head (at most [`BLOCK_RANGE_MAX`] blocks at a time); the head
    /// and the logs, in chain order. After an error, the next call reads the same blocks.
    pub async fn next(&mut self) -> Result<(BlockHead, Vec<ChainLog>), ChainError> {
        let mut head = self.chain.head().await?;
        while head.number < self.next_block {
            head = self.chain.next_block(head.number).await?;
        }
        let to_block = head.number.min(self.next_block + BLOCK_RANGE_MAX - 1);
        let filter = LogFilter { address: self.address, from_block: self.next_block, to_block };
        let logs = self.chain.logs(filter).await?;
        self.next_block = to_block + 1;
        Ok((head, logs))
    }
}

/// A marketplace event, or `None` for a log that is not one.
pub fn market_event(log: &ChainLog) -> Option<MarketplaceEvents> {
    MarketplaceEvents::decode_raw_log(&log.topics, &log.data).ok()
}
