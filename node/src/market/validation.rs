//! Validation: marking missed proofs, for the validator's share of the slashed collateral.
//!
//! A validator tracks filled slots from `SlotFilled` events (and, at start, from the events of
//! the last `requestDurationLimit` seconds' worth of blocks), optionally only those of its
//! group (Archivist's sharding: the slot id's first 8 bytes, big-endian, modulo the number of
//! groups). Each block it marks the missed proofs of the period just ended that the contract
//! allows to be marked, and forgets slots that are no longer filled.

use std::collections::BTreeSet;

use alloy_primitives::B256;

use super::{Market, persist};
use crate::chain::contracts::Marketplace as M;
use crate::chain::contracts::Marketplace::MarketplaceEvents;
use crate::chain::events::{EventFollower, market_event};
use crate::chain::market::{SlotId, SlotState, slot_id};
use crate::chain::{ChainError, LogFilter};

/// `--validator-groups`, `--validator-group-index`, `--validator-max-slots`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// Shards of the slot space (2..=65535), or `None` to validate every slot.
    pub groups: Option<u16>,
    /// The shard this validator takes.
    pub group_index: u16,
    /// Slots tracked at most (0 for no limit).
    pub max_slots: usize,
}

impl ValidatorConfig {
    /// Checks the grouping: groups in 2..=65535 and the index below it.
    pub fn check(&self) -> Result<(), String> {
        match self.groups {
            Some(groups) if groups < 2 => Err(format!("validator-groups must be at least 2, got {groups}")),
            Some(groups) if self.group_index >= groups => Err(format!(
                "validator-group-index must be below validator-groups ({groups}), got {}",
                self.group_index
            )),
            None if self.group_index != 0 => Err("validator-group-index needs validator-groups".into()),
            _ => Ok(()),
        }
    }

    /// Whether a slot is in this validator's group.
    pub fn tracks(&self, slot: &SlotId) -> bool {
        match self.groups {
            None => true,
            Some(groups) => group_of(slot, groups) == self.group_index,
        }
    }
}

/// A missed proof this validator marked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub slot: SlotId,
    pub period: u64,
    /// The slot's host when it was marked.
    pub host: alloy_primitives::Address,
    /// The block the mark landed in.
    pub block: u64,
}

impl Market {
    /// The missed proofs this validator marked since it started, in order.
    pub fn validator_marks(&self) -> Vec<Mark> {
        self.inner.marks.lock().expect("marks").clone()
    }

    pub(super) fn spawn_validator(&self, config: ValidatorConfig) {
        let market = self.clone();
        tokio::spawn(async move {
            loop {
                match market.validate(config).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "validation stopped; starting again");
                        tokio::time::sleep(market.inner.config.retry_pause).await;
                    }
                }
            }
        });
    }

    async fn validate(&self, config: ValidatorConfig) -> Result<(), ChainError> {
        let market = &self.inner.marketplace;
        let pause = self.inner.config.retry_pause;
        let head = persist(pause, "head", || market.chain().head()).await?;
        // Every block in the last `requestDurationLimit` seconds: blocks are at least a second apart.
        let from = head.number.saturating_sub(market.config().requestDurationLimit);
        let mut slots: BTreeSet<SlotId> = BTreeSet::new();
        let track = |slots: &mut BTreeSet<SlotId>, id: SlotId| {
            if config.tracks(&id) && (config.max_slots == 0 || slots.len() < config.max_slots) {
                slots.insert(id);
            }
        };
        let mut block = from;
        while block <= head.number {
            let to_block = (block + crate::chain::events::BLOCK_RANGE_MAX - 1).min(head.number);
            let filter = LogFilter { address: market.address(), from_block: block, to_block };
            for log in persist(pause, "getLogs", || market.chain().logs(filter)).await? {
                if let Some(MarketplaceEvents::SlotFilled(e)) = market_event(&log) {
                    track(&mut slots, slot_id(e.requestId, e.slotIndex));
                }
            }
            block = to_block + 1;
        }
        tracing::info!(slots = slots.len(), groups = ?config.groups, group = config.group_index, "validator started");
        let mut events = EventFollower::new(market.chain().clone(), market.address(), head.number + 1, 0);
        let mut marked: BTreeSet<(SlotId, u64)> = BTreeSet::new();
        let mut now = head;
        // Slots are looked at once a period, when it has ended; a proof that cannot be marked
        // yet because the pointer is in its downtime (whether a proof counts as required
        // depends on the block), or whose mark failed on the way, is tried again each block
        // until the period can no longer be marked.
        let mut looked_at: Option<u64> = None;
        let mut retry: BTreeSet<SlotId> = BTreeSet::new();
        loop {
            let ended = market.period_of(now.timestamp).saturating_sub(1);
            let first_look = looked_at != Some(ended);
            let candidates: Vec<SlotId> = if first_look {
                looked_at = Some(ended);
                slots.iter().copied().collect()
            } else {
                std::mem::take(&mut retry).into_iter().collect()
            };
            let mut gone = Vec::new();
            for id in candidates {
                if first_look
                    && persist(pause, "slotState", || market.slot_state(id)).await? != SlotState::Filled
                {
                    gone.push(id);
                    continue;
                }
                if marked.contains(&(id, ended)) {
                    continue;
                }
                match market.can_mark_proof_as_missing(id, ended).await {
                    Ok(()) => {}
                    // Not required at this block's pointer, or the newest block still ends the
                    // period (the mark would land in the next): try again next block.
                    Err(e)
                        if e.is(M::Proofs_ProofNotRequired {})
                            || e.is(M::Proofs_PeriodNotEnded {})
                            || e.is_transient() =>
                    {
                        retry.insert(id);
                        continue;
                    }
                    Err(_) => continue, // proven, marked already, timed out, or no longer filled
                }
                let host = persist(pause, "getHost", || market.host(id)).await?;
                match market.mark_proof_as_missing(id, ended).await {
                    Ok(receipt) => {
                        marked.insert((id, ended));
                        let mark = Mark { slot: id, period: ended, host, block: receipt.block };
                        self.inner.marks.lock().expect("marks").push(mark);
                        self.inner.metrics.market.proofs_marked_missing.inc();
                        tracing::info!(
                            slot = %id, period = ended, %host, block = receipt.block, tx = %receipt.tx_hash, "marked a missed proof"
                        );
                    }
                    // Proven, marked by another validator, or too late meanwhile.
                    Err(ChainError::Revert(revert)) => {
                        tracing::debug!(slot = %id, period = ended, %revert, "proof not marked missing")
                    }
                    Err(e) if e.is_transient() => {
                        retry.insert(id);
                    }
                    Err(e) => return Err(e),
                }
            }
            for id in gone {
                slots.remove(&id);
            }
            marked.retain(|(_, period)| *period + 1 >= ended);
            let (_, logs) = events.next().await?;
            for log in logs {
                if let Some(MarketplaceEvents::SlotFilled(e)) = market_event(&log) {
                    track(&mut slots, slot_id(e.requestId, e.slotIndex));
                }
            }
            now = persist(pause, "head", || market.chain().head()).await?;
        }
    }
}

/// A slot id's group: its first 8 bytes, big-endian, modulo the number of groups.
pub fn group_of(slot: &B256, groups: u16) -> u16 {
    (u64::from_be_bytes(slot[..8].try_into().expect("8 bytes")) % u64::from(groups)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_the_slots() {
        let config = |groups, index| ValidatorConfig { groups, group_index: index, max_slots: 0 };
        assert!(config(Some(1), 0).check().is_err());
        assert!(config(Some(4), 4).check().is_err());
        assert!(config(None, 2).check().is_err());
        assert!(config(Some(4), 3).check().is_ok());
        let mut slot = B256::ZERO;
        slot[7] = 6; // first 8 bytes: 6
        assert!(config(Some(4), 2).tracks(&slot));
        assert!(!config(Some(4), 1).tracks(&slot));
        assert!(config(None, 0).tracks(&slot));
        assert_eq!(group_of(&slot, 4), 2);
        // Every slot is in exactly one group.
        for byte in 0..=255u8 {
            let slot = B256::repeat_byte(byte);
            let owners = (0..5).filter(|&i| config(Some(5), i).tracks(&slot)).count();
            assert_eq!(owners, 1);
        }
    }
}
