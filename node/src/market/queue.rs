//! The slot queue: slots of storage requests this host could sell space to, most profitable
//! first, bounded (Archivist's `sales/slotqueue`: 128 slots). Workers take from the front.

use std::cmp::Reverse;

use alloy_primitives::U256;

use crate::chain::market::{Ask, RequestId};

/// Archivist's bound.
pub const SLOT_QUEUE_MAX: usize = 128;

/// A slot offered by a storage request, as the queue orders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedSlot {
    pub request: RequestId,
    pub slot_index: u64,
    pub ask: Ask,
    /// When the request stops accepting fills (Unix seconds; the request's end for a repair).
    pub expires_at: u64,
    /// A slot freed from a running request, to fill as a repair.
    pub repair: bool,
    /// Breaks ties between equally good slots, drawn per host: hosts that see the same
    /// request pick different slots first.
    pub tiebreak: u64,
}

impl QueuedSlot {
    /// What the host is paid for the slot over the request's whole duration.
    pub fn profitability(&self) -> U256 {
        self.ask.pricePerBytePerSecond * U256::from(self.ask.slotSize) * U256::from(self.ask.duration)
    }

    /// The queue's order: more profitable first, then less collateral, then later expiry, then
    /// the tie-break, request and slot (so the order never depends on arrival).
    #[allow(clippy::type_complexity)]
    fn rank(&self) -> (Reverse<U256>, U256, Reverse<u64>, u64, RequestId, u64) {
        (
            Reverse(self.profitability()),
            self.ask.collateralPerByte,
            Reverse(self.expires_at),
            self.tiebreak,
            self.request,
            self.slot_index,
        )
    }
}

/// A bounded queue of slots, best first.
#[derive(Clone, Debug)]
pub struct SlotQueue {
    slots: Vec<QueuedSlot>,
    max: usize,
}

impl SlotQueue {
    pub fn new(max: usize) -> SlotQueue {
        SlotQueue { slots: Vec::new(), max: max.max(1) }
    }

    /// Adds a slot (once); when the queue is full, the worst slot is dropped (maybe this one).
    pub fn push(&mut self, slot: QueuedSlot) {
        if self.slots.iter().any(|s| s.request == slot.request && s.slot_index == slot.slot_index) {
            return;
        }
        let at = self.slots.partition_point(|s| s.rank() <= slot.rank());
        self.slots.insert(at, slot);
        self.slots.truncate(self.max);
    }

    /// The best slot not expired at `now` that `allowed` lets through (the others stay);
    /// expired ones are dropped.
    pub fn pop(&mut self, now: u64, allowed: impl Fn(&QueuedSlot) -> bool) -> Option<QueuedSlot> {
        self.slots.retain(|s| s.expires_at > now);
        let at = self.slots.iter().position(allowed)?;
        Some(self.slots.remove(at))
    }

    /// Drops every slot of a request (filled, cancelled or failed).
    pub fn remove_request(&mut self, request: RequestId) {
        self.slots.retain(|s| s.request != request);
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;
    use proptest::prelude::*;

    use super::*;

    fn slot(request: u8, index: u64, price: u64, collateral: u64, expires_at: u64) -> QueuedSlot {
        QueuedSlot {
            request: B256::repeat_byte(request),
            slot_index: index,
            ask: Ask {
                proofProbability: U256::from(1),
                pricePerBytePerSecond: U256::from(price),
                collateralPerByte: U256::from(collateral),
                slots: 4,
                slotSize: 1024,
                duration: 100,
                maxSlotLoss: 1,
            },
            expires_at,
            repair: false,
            tiebreak: 0,
        }
    }

    #[test]
    fn the_best_slot_comes_first_and_expired_ones_go() {
        let mut queue = SlotQueue::new(8);
        queue.push(slot(1, 0, 5, 1, 50));
        queue.push(slot(2, 0, 9, 3, 50));
        queue.push(slot(3, 0, 9, 2, 50));
        queue.push(slot(4, 0, 9, 2, 10));
        queue.push(slot(3, 0, 9, 2, 50)); // again: kept once
        assert_eq!(queue.len(), 4);
        // Same price: less collateral first; then later expiry first.
        assert_eq!(queue.pop(0, |_| true).unwrap().request, B256::repeat_byte(3));
        assert_eq!(queue.pop(20, |_| true).unwrap().request, B256::repeat_byte(2), "request 4 expired at 10");
        assert_eq!(queue.pop(20, |_| true).unwrap().request, B256::repeat_byte(1));
        assert!(queue.pop(20, |_| true).is_none());
        // A slot not allowed now stays for later.
        queue.push(slot(5, 0, 9, 1, 50));
        queue.push(slot(6, 0, 1, 1, 50));
        let not_five = |s: &QueuedSlot| s.request != B256::repeat_byte(5);
        assert_eq!(queue.pop(0, not_five).unwrap().request, B256::repeat_byte(6));
        assert!(queue.pop(0, not_five).is_none());
        assert_eq!(queue.pop(0, |_| true).unwrap().request, B256::repeat_byte(5));
    }

    proptest! {
        #[test]
        fn the_queue_keeps_the_best_slots_in_order(
            slots in proptest::collection::vec((0u8..20, 0u64..4, 1u64..10, 0u64..5, 1u64..100), 0..60),
            max in 1usize..16,
        ) {
            let mut queue = SlotQueue::new(max);
            let mut all: Vec<QueuedSlot> = Vec::new();
            for (request, index, price, collateral, expiry) in slots {
                let s = slot(request, index, price, collateral, expiry);
                if all.iter().any(|a| a.request == s.request && a.slot_index == s.slot_index) {
                    continue;
                }
                all.push(s.clone());
                queue.push(s);
            }
            // Kept: exactly the best `max` of the distinct slots, in rank order.
            all.sort_by_key(|s| s.rank());
            all.truncate(max);
            let mut popped = Vec::new();
            while let Some(s) = queue.pop(0, |_| true) {
                popped.push(s);
            }
            prop_assert_eq!(popped, all);
        }
    }
}
