//! Sales: slots this host fills, proves and is paid for, through Archivist's sale states.
//!
//! A host takes one slot of a request when the request is new (a freed slot of a request it
//! already holds a slot of, it may take as a repair). A worker takes the best slot of the
//! queue and prepares its sale: bytes taken from a
//! matching availability, the slot reserved on chain, its data fetched (or rebuilt) and checked
//! against the slot root, a first proof, the fill with collateral. The filled slot is then
//! proven in its own task, whenever the chain requires a proof (or is about to), until the
//! request ends: payout and collateral collected with `freeSlot`, the slot's data dropped, the
//! bytes given back to the availability. Every exit (ignored, cancelled, failed, errored) gives
//! the bytes back too.

use alloy_primitives::{Bytes, U256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use super::availability::AvailabilityId;
use super::queue::QueuedSlot;
use super::{AVAILABILITY, Market, SALE, persist, put};
use crate::chain::ChainError;
use crate::chain::contracts::Marketplace as M;
use crate::chain::market::{
    Groth16Proof, Request, RequestId, RequestState, SlotId, SlotState, collateral_per_slot, request_id,
    slot_id,
};
use crate::content::{Cid, Manifest};
use crate::store::RecordWrite;

/// A sale's state, with Archivist's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SaleState {
    Preparing,
    SlotReserving,
    Downloading,
    InitialProving,
    Filling,
    Filled,
    Proving,
    Payout,
    Finished,
    Cancelled,
    Failed,
    Errored,
    Ignored,
    /// After a restart, until the chain says where the sale is.
    Unknown,
}

impl SaleState {
    pub const ALL: [SaleState; 14] = [
        SaleState::Preparing,
        SaleState::SlotReserving,
        SaleState::Downloading,
        SaleState::InitialProving,
        SaleState::Filling,
        SaleState::Filled,
        SaleState::Proving,
        SaleState::Payout,
        SaleState::Finished,
        SaleState::Cancelled,
        SaleState::Failed,
        SaleState::Errored,
        SaleState::Ignored,
        SaleState::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SaleState::Preparing => "SalePreparing",
            SaleState::SlotReserving => "SaleSlotReserving",
            SaleState::Downloading => "SaleDownloading",
            SaleState::InitialProving => "SaleInitialProving",
            SaleState::Filling => "SaleFilling",
            SaleState::Filled => "SaleFilled",
            SaleState::Proving => "SaleProving",
            SaleState::Payout => "SalePayout",
            SaleState::Finished => "SaleFinished",
            SaleState::Cancelled => "SaleCancelled",
            SaleState::Failed => "SaleFailed",
            SaleState::Errored => "SaleErrored",
            SaleState::Ignored => "SaleIgnored",
            SaleState::Unknown => "SaleUnknown",
        }
    }

    /// The sale is over and its bytes given back.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SaleState::Finished
                | SaleState::Cancelled
                | SaleState::Failed
                | SaleState::Errored
                | SaleState::Ignored
        )
    }

    /// Where a sale recovered after a restart goes, from its slot's state on chain and
    /// whether this node is the slot's host (Archivist's `SaleUnknown`).
    pub fn recovered(slot: SlotState, host_is_me: bool) -> SaleState {
        match (slot, host_is_me) {
            (SlotState::Filled, true) => SaleState::Filled,
            (SlotState::Finished, true) => SaleState::Payout,
            (SlotState::Paid, true) => SaleState::Finished,
            (SlotState::Failed, true) => SaleState::Failed,
            (SlotState::Cancelled, true) => SaleState::Cancelled,
            // Freed (for repair, or never filled by this node) or someone else's.
            _ => SaleState::Errored,
        }
    }
}

/// A slot this node sells to, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sale {
    pub request_id: RequestId,
    pub slot_index: u64,
    /// The request, ABI-encoded.
    pub request: Bytes,
    pub state: SaleState,
    pub availability: Option<AvailabilityId>,
    /// Bytes taken from the availability.
    pub taken: u64,
    /// Whether the taken bytes were released from the store's reservation to the slot's data.
    pub released: bool,
    pub repair: bool,
    pub error: Option<String>,
    /// Collateral put up, while the slot is filled.
    #[serde(with = "super::availability::decimal")]
    pub collateral: U256,
    pub proofs: u64,
}

impl Sale {
    pub fn slot_id(&self) -> SlotId {
        slot_id(self.request_id, self.slot_index)
    }

    pub fn request(&self) -> Request {
        Request::abi_decode(&self.request).expect("recorded requests decode")
    }

    pub fn collateral_locked(&self) -> U256 {
        if matches!(self.state, SaleState::Filled | SaleState::Proving | SaleState::Payout) {
            self.collateral
        } else {
            U256::ZERO
        }
    }
}

/// How a sale ended, short of finishing.
#[derive(Debug)]
enum Exit {
    To(SaleState, Option<String>),
    Chain(ChainError),
}

impl From<ChainError> for Exit {
    fn from(e: ChainError) -> Exit {
        Exit::Chain(e)
    }
}

fn errored(reason: impl Into<String>) -> Exit {
    Exit::To(SaleState::Errored, Some(reason.into()))
}

impl Market {
    /// Puts the slots of a new request (or a freed slot) in the queue, when an availability
    /// could take them.
    pub(super) fn offer(&self, slots: Vec<QueuedSlot>) {
        if !self.sells() || slots.is_empty() {
            return;
        }
        let mut state = self.inner.state.lock().expect("market state");
        let mut queued = false;
        for mut slot in slots {
            slot.tiebreak = rand::Rng::random(state.rng.rng());
            // A new request ends at most its duration after its expiry; a repair at its end.
            let request_end = if slot.repair { slot.expires_at } else { slot.expires_at + slot.ask.duration };
            let mine =
                state.sales.get(&slot_id(slot.request, slot.slot_index)).is_some_and(|s| !s.state.is_final());
            if !mine && state.availabilities.values().any(|a| a.matches(&slot.ask, request_end)) {
                state.queue.push(slot);
                queued = true;
            }
        }
        drop(state);
        if queued {
            self.inner.queued.notify_waiters();
        }
    }

    pub(super) fn spawn_sale_worker(&self) {
        let market = self.clone();
        tokio::spawn(async move {
            let pause = market.inner.config.retry_pause;
            loop {
                let woken = market.inner.queued.notified();
                let now = match market.inner.marketplace.chain().head().await {
                    Ok(head) => head.timestamp,
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                };
                let next = {
                    let mut state = market.inner.state.lock().expect("market state");
                    let busy: std::collections::BTreeSet<RequestId> =
                        state.sales.values().filter(|s| !s.state.is_final()).map(|s| s.request_id).collect();
                    // A slot of a request this host already sells to waits (a repair need not).
                    state.queue.pop(now, |slot| slot.repair || !busy.contains(&slot.request))
                };
                match next {
                    Some(slot) => market.sell(slot).await,
                    // Nothing to take: wait for a slot offered or a sale ended (expired slots
                    // are dropped when the queue is next looked at).
                    None => woken.await,
                }
            }
        });
    }

    async fn save_sale(
        &self,
        sale: &Sale,
        more: Vec<RecordWrite>,
        reserve: i64,
    ) -> Result<(), crate::store::StoreError> {
        let mut writes = vec![put(SALE, sale.slot_id().as_slice(), sale)];
        writes.extend(more);
        self.store().write_records(writes, reserve).await?;
        self.inner.state.lock().expect("market state").sales.insert(sale.slot_id(), sale.clone());
        self.refresh_gauges();
        Ok(())
    }

    async fn set_sale(&self, id: SlotId, state: SaleState, change: impl FnOnce(&mut Sale)) {
        let Some(mut sale) = self.sale(id) else { return };
        if sale.state != state {
            tracing::info!(
                request = %sale.request_id, slot = sale.slot_index, from = sale.state.name(), to = state.name(), "sale"
            );
        }
        sale.state = state;
        change(&mut sale);
        if let Err(e) = self.save_sale(&sale, Vec::new(), 0).await {
            tracing::warn!(slot = %id, error = %e, "could not record a sale");
        }
    }

    /// Prepares a sale of a queued slot up to its fill, then proves it in a task of its own.
    async fn sell(&self, slot: QueuedSlot) {
        let id = slot_id(slot.request, slot.slot_index);
        match self.prepare(&slot).await {
            Ok(true) => {
                let market = self.clone();
                tokio::spawn(async move { market.keep_proving(id).await });
            }
            Ok(false) => {}
            Err(exit) => self.end_sale(id, exit).await,
        }
    }

    /// Takes bytes from an availability; `false` when no availability takes the slot (or a
    /// sale of it runs already).
    async fn take(&self, slot: &QueuedSlot, request: &Request, request_end: u64) -> Result<bool, Exit> {
        let id = slot_id(slot.request, slot.slot_index);
        let (sale, availability) = {
            let mut state = self.inner.state.lock().expect("market state");
            if state.sales.get(&id).is_some_and(|s| !s.state.is_final()) {
                return Ok(false);
            }
            // One slot of a request per host when it is first filled, so losing a host loses
            // one slot; a freed slot may be taken by a host holding another (repaired data
            // beats data lost).
            let holds_one = state.sales.values().any(|s| s.request_id == slot.request && !s.state.is_final());
            if holds_one && !slot.repair {
                // Back in the queue: if this host's other sale of the request ends short of a
                // fill (another host won its slot), this slot is still there to take.
                state.queue.push(slot.clone());
                return Ok(false);
            }
            let Some(mut availability) =
                state.availabilities.values().find(|a| a.matches(&request.ask, request_end)).cloned()
            else {
                return Ok(false);
            };
            availability.free_size -= request.ask.slotSize;
            let sale = Sale {
                request_id: slot.request,
                slot_index: slot.slot_index,
                request: request.abi_encode().into(),
                state: SaleState::Preparing,
                availability: Some(availability.id),
                taken: request.ask.slotSize,
                released: false,
                repair: slot.repair,
                error: None,
                collateral: U256::ZERO,
                proofs: 0,
            };
            // Taken at once, under the lock: another worker sees it.
            state.sales.insert(id, sale.clone());
            state.availabilities.insert(availability.id, availability.clone());
            (sale, availability)
        };
        let more = vec![put(AVAILABILITY, &availability.id.to_be_bytes(), &availability)];
        self.save_sale(&sale, more, 0).await.map_err(|e| errored(e.to_string()))?;
        Ok(true)
    }

    /// Preparing → … → Filled. `Ok(true)` once filled by this node.
    async fn prepare(&self, slot: &QueuedSlot) -> Result<bool, Exit> {
        let market = &self.inner.marketplace;
        let pause = self.inner.config.retry_pause;
        let id = slot_id(slot.request, slot.slot_index);
        let request = persist(pause, "getRequest", || market.request(slot.request)).await?;
        let slot_state = persist(pause, "slotState", || market.slot_state(id)).await?;
        if !matches!(slot_state, SlotState::Free | SlotState::Repair) {
            return Ok(false);
        }
        let request_state = persist(pause, "requestState", || market.request_state(slot.request)).await?;
        let request_end = match request_state {
            RequestState::Started => {
                persist(pause, "requestEnd", || market.request_end(slot.request)).await?
            }
            RequestState::New => slot.expires_at + request.ask.duration,
            _ => return Ok(false),
        };
        if !self.take(slot, &request, request_end).await? {
            return Ok(false);
        }
        tracing::info!(request = %slot.request, slot = slot.slot_index, repair = slot.repair, "selling a slot");

        self.set_sale(id, SaleState::SlotReserving, |_| {}).await;
        let can = persist(pause, "canReserveSlot", || {
            market.view(M::canReserveSlotCall { requestId: slot.request, slotIndex: slot.slot_index })
        })
        .await?;
        if !can {
            return Err(Exit::To(SaleState::Ignored, Some("the slot cannot be reserved".into())));
        }
        match market.reserve_slot(slot.request, slot.slot_index).await {
            Ok(receipt) => tracing::debug!(slot = %id, tx = %receipt.tx_hash, "slot reserved"),
            Err(e) if e.is_transient() => {}
            Err(ChainError::Revert(revert)) => {
                return Err(Exit::To(SaleState::Ignored, Some(revert.to_string())));
            }
            Err(e) => return Err(e.into()),
        }

        self.set_sale(id, SaleState::Downloading, |_| {}).await;
        let (manifest_cid, manifest) = self.fetch_slot(&request, slot.slot_index).await?;

        self.set_sale(id, SaleState::InitialProving, |_| {}).await;
        let prover = self.inner.prover.clone().ok_or_else(|| errored("no prover"))?;
        prover
            .check(manifest_cid, &manifest, slot.slot_index as u32)
            .await
            .map_err(|e| errored(format!("the slot's data does not check out: {e}")))?;

        self.set_sale(id, SaleState::Filling, |_| {}).await;
        let filled = self
            .with_fresh_proof(&request, slot.slot_index, &manifest_cid, &manifest, |proof| {
                market.fill_slot(slot.request, slot.slot_index, proof)
            })
            .await;
        match filled {
            Ok(receipt) => {
                tracing::info!(request = %slot.request, slot = slot.slot_index, tx = %receipt.tx_hash, "slot filled");
            }
            Err(Exit::Chain(e)) if e.is_transient() || e.is(M::Marketplace_SlotNotFree {}) => {
                // Filled by an attempt whose answer was lost, or by another host.
                if persist(pause, "getHost", || market.host(id)).await? != market.account() {
                    return Err(Exit::To(SaleState::Ignored, Some("another host filled the slot".into())));
                }
            }
            Err(e) => return Err(e),
        }
        let collateral = collateral_per_slot(&request.ask);
        self.set_sale(id, SaleState::Filled, |s| s.collateral = collateral).await;
        self.inner.metrics.market.slots_filled.inc();
        Ok(true)
    }

    /// Fetches the slot's data (or rebuilds it from the other slots): the slot is then held
    /// here, checked against its slot root. The reserved bytes go to the data.
    async fn fetch_slot(&self, request: &Request, slot_index: u64) -> Result<(Cid, Manifest), Exit> {
        let id = slot_id(request_id(request), slot_index);
        let manifest_cid = Cid::try_from(request.content.cid.as_ref())
            .map_err(|e| errored(format!("the request's CID: {e}")))?;
        if let Some(sale) = self.sale(id)
            && !sale.released
        {
            let mut released = sale.clone();
            released.released = true;
            self.save_sale(&released, Vec::new(), -(sale.taken as i64))
                .await
                .map_err(|e| errored(e.to_string()))?;
        }
        self.inner
            .durability
            .take_slot(manifest_cid, slot_index as u32)
            .await
            .map_err(|e| errored(format!("could not fetch the slot's data: {e}")))?;
        let (manifest, _) = self
            .inner
            .fetcher
            .local_manifest(manifest_cid)
            .await
            .ok_or_else(|| errored("the slot's manifest is gone"))?;
        Ok((manifest_cid, manifest))
    }

    /// Runs `send` with a proof of the slot's challenge in the newest block, again with a new
    /// proof when the challenge moved before the transaction was mined.
    async fn with_fresh_proof<F, Fut>(
        &self,
        request: &Request,
        slot_index: u64,
        manifest_cid: &Cid,
        manifest: &Manifest,
        send: F,
    ) -> Result<crate::chain::Receipt, Exit>
    where
        F: Fn(Groth16Proof) -> Fut,
        Fut: std::future::Future<Output = Result<crate::chain::Receipt, ChainError>>,
    {
        let market = &self.inner.marketplace;
        let prover = self.inner.prover.clone().ok_or_else(|| errored("no prover"))?;
        let id = slot_id(request_id(request), slot_index);
        let mut tries = 0;
        loop {
            let challenge =
                persist(self.inner.config.retry_pause, "getChallenge", || market.challenge(id)).await?;
            let proof = prover
                .prove(*manifest_cid, manifest, slot_index as u32, challenge)
                .await
                .map_err(|e| errored(format!("proving: {e}")))?;
            match send(proof).await {
                Err(e) if e.is(M::Proofs_InvalidProof {}) && tries < 4 => tries += 1,
                result => return result.map_err(Exit::Chain),
            }
        }
    }

    /// Proves a filled slot whenever a proof is required (or about to be) until the request
    /// ends; then collects payout and collateral, and gives the bytes back.
    pub(super) async fn keep_proving(&self, id: SlotId) {
        let exit = self.prove_until_end(id).await;
        let exit = match exit {
            Ok(()) => self.pay_out(id).await,
            Err(exit) => exit,
        };
        self.end_sale(id, exit).await;
    }

    async fn prove_until_end(&self, id: SlotId) -> Result<(), Exit> {
        let market = &self.inner.marketplace;
        let pause = self.inner.config.retry_pause;
        let sale = self.sale(id).ok_or_else(|| errored("no such sale"))?;
        let request = sale.request();
        let manifest_cid = Cid::try_from(request.content.cid.as_ref()).map_err(|e| errored(e.to_string()))?;
        let (mut manifest, _) = self
            .inner
            .fetcher
            .local_manifest(manifest_cid)
            .await
            .ok_or_else(|| errored("the slot's manifest is gone"))?;
        self.set_sale(id, SaleState::Proving, |_| {}).await;
        let mut head = persist(pause, "head", || market.chain().head()).await?;
        // The slot's and the request's state are read once a period; whether a proof is
        // required, each block until it is; the proof is sent each block until it is in.
        let mut checked_in: Option<u64> = None;
        let mut proved_in: Option<u64> = None;
        let mut due = false;
        let mut missed = persist(pause, "missingProofs", || market.missing_proofs(id)).await?;
        loop {
            let period = market.period_of(head.timestamp);
            if checked_in != Some(period) {
                match persist(pause, "requestState", || market.request_state(sale.request_id)).await? {
                    RequestState::Finished => return Ok(()),
                    RequestState::Cancelled => return Err(Exit::To(SaleState::Cancelled, None)),
                    RequestState::Failed => return Err(Exit::To(SaleState::Failed, None)),
                    RequestState::New | RequestState::Started => {}
                }
                let slot_state = persist(pause, "slotState", || market.slot_state(id)).await?;
                if slot_state != SlotState::Filled
                    || persist(pause, "getHost", || market.host(id)).await? != market.account()
                {
                    return Err(errored(format!("the slot was lost ({slot_state:?})")));
                }
                let now_missed = persist(pause, "missingProofs", || market.missing_proofs(id)).await?;
                if now_missed > missed {
                    self.inner.metrics.market.proofs_missed.inc_by(now_missed - missed);
                    tracing::warn!(slot = %id, missed = now_missed, "a proof of this host was marked missing");
                }
                missed = now_missed;
                due = persist(pause, "isProofRequired", || market.is_proof_required(id)).await?
                    || persist(pause, "willProofBeRequired", || market.will_proof_be_required(id)).await?;
                checked_in = Some(period);
            } else if !due {
                // Whether a period's proof is required can change within it (when the
                // challenge's pointer wraps): look again each block until it is.
                due = persist(pause, "isProofRequired", || market.is_proof_required(id)).await?
                    || persist(pause, "willProofBeRequired", || market.will_proof_be_required(id)).await?;
            }
            if due && proved_in != Some(period) {
                let sent = self
                    .with_fresh_proof(&request, sale.slot_index, &manifest_cid, &manifest, |proof| {
                        market.submit_proof(id, proof)
                    })
                    .await;
                match sent {
                    Ok(_) => {
                        proved_in = Some(period);
                        self.inner.metrics.market.proofs_submitted.inc();
                        self.set_sale(id, SaleState::Proving, |s| s.proofs += 1).await;
                    }
                    Err(Exit::Chain(e)) if e.is(M::Proofs_ProofAlreadySubmitted {}) => {
                        proved_in = Some(period)
                    }
                    // The period turned while the proof was on its way, or the request ended
                    // (the next period's reads say so): nothing to do now.
                    Err(Exit::Chain(e)) if e.is(M::Marketplace_SlotNotAcceptingProofs {}) => {
                        checked_in = None;
                    }
                    Err(Exit::Chain(e)) if e.is(M::Proofs_InvalidProof {}) || e.is_transient() => {}
                    Err(Exit::Chain(e)) => {
                        tracing::warn!(slot = %id, error = %e, "submitting a proof failed; trying again next block")
                    }
                    // The data here does not prove: fetch (or rebuild) it again.
                    Err(Exit::To(_, reason)) => {
                        tracing::warn!(slot = %id, reason = ?reason, "cannot prove the slot; fetching its data again");
                        manifest = self.restore_slot(&request, sale.slot_index, manifest_cid).await?;
                    }
                }
            }
            head = persist(pause, "next block", || market.chain().next_block(head.number)).await?;
        }
    }

    /// Drops the slot's data held here and fetches (or rebuilds) it again.
    async fn restore_slot(
        &self,
        request: &Request,
        slot_index: u64,
        manifest_cid: Cid,
    ) -> Result<Manifest, Exit> {
        if let Some(prover) = &self.inner.prover {
            prover.forget(manifest_cid, slot_index as u32);
        }
        let _ = self.inner.durability.drop_slot(manifest_cid, slot_index as u32).await;
        let (_, manifest) = self.fetch_slot(request, slot_index).await?;
        self.inner.metrics.market.slots_restored.inc();
        Ok(manifest)
    }

    async fn pay_out(&self, id: SlotId) -> Exit {
        let market = &self.inner.marketplace;
        self.set_sale(id, SaleState::Payout, |_| {}).await;
        let before = market.token_balance(market.account()).await.ok();
        match persist(self.inner.config.retry_pause, "freeSlot", || market.free_slot(id, None)).await {
            Ok(receipt) => {
                tracing::info!(slot = %id, tx = %receipt.tx_hash, "payout and collateral collected")
            }
            Err(e) if e.is(M::Marketplace_AlreadyPaid {}) => {}
            Err(e) => return Exit::Chain(e),
        }
        if let (Some(before), Ok(after)) = (before, market.token_balance(market.account()).await) {
            self.inner.metrics.market.payouts.inc_by(super::tokens(after.saturating_sub(before)));
        }
        Exit::To(SaleState::Finished, None)
    }

    /// Ends a sale: leaves the slot when the chain still owes it something, drops its data and
    /// gives its bytes back to its availability.
    async fn end_sale(&self, id: SlotId, exit: Exit) {
        let market = &self.inner.marketplace;
        let (state, error) = match exit {
            Exit::To(state, error) => (state, error),
            Exit::Chain(e) => (SaleState::Errored, Some(e.to_string())),
        };
        if matches!(state, SaleState::Cancelled | SaleState::Failed)
            && market.host(id).await.is_ok_and(|host| host == market.account())
            && let Err(e) =
                persist(self.inner.config.retry_pause, "freeSlot", || market.free_slot(id, None)).await
        {
            tracing::warn!(slot = %id, error = %e, "could not leave the slot");
        }
        let Some(mut sale) = self.sale(id) else { return };
        if let Ok(manifest_cid) = Cid::try_from(sale.request().content.cid.as_ref()) {
            if let Some(prover) = &self.inner.prover {
                prover.forget(manifest_cid, sale.slot_index as u32);
            }
            let _ = self.inner.durability.drop_slot(manifest_cid, sale.slot_index as u32).await;
        }
        // Bytes back to the availability (reserved again in the store if they went to data).
        let reserve = if sale.released { sale.taken as i64 } else { 0 };
        let availability =
            sale.availability.and_then(|a| self.availabilities().into_iter().find(|x| x.id == a));
        let mut given_back = availability.clone();
        if let Some(a) = &mut given_back {
            a.free_size = (a.free_size + sale.taken).min(a.total_size);
        }
        let more: Vec<RecordWrite> =
            given_back.iter().map(|a| put(AVAILABILITY, &a.id.to_be_bytes(), a)).collect();
        tracing::info!(
            request = %sale.request_id, slot = sale.slot_index, from = sale.state.name(), to = state.name(), error = ?error, "sale ended"
        );
        sale.state = state;
        sale.error = error;
        sale.collateral = U256::ZERO;
        let taken = std::mem::take(&mut sale.taken);
        sale.released = false;
        let saved = match self.save_sale(&sale, more, reserve).await {
            Err(crate::store::StoreError::QuotaExceeded { .. }) => {
                // Uploads took the space meanwhile: the availability shrinks by what it lent.
                given_back = availability.map(|mut a| {
                    a.total_size -= taken.min(a.total_size - a.free_size);
                    a
                });
                let more = given_back.iter().map(|a| put(AVAILABILITY, &a.id.to_be_bytes(), a)).collect();
                self.save_sale(&sale, more, 0).await
            }
            other => other,
        };
        match saved {
            Ok(()) => {
                if let Some(a) = given_back {
                    self.inner.state.lock().expect("market state").availabilities.insert(a.id, a);
                }
            }
            Err(e) => tracing::warn!(slot = %id, error = %e, "could not record the end of a sale"),
        }
        self.inner.queued.notify_waiters();
    }

    /// Recovers the sales a restart interrupted, and the slots the chain says this node
    /// holds without a record of them.
    pub(super) async fn recover_sales(&self, recorded: Vec<Sale>) {
        let market = self.inner.marketplace.clone();
        let pause = self.inner.config.retry_pause;
        let mut open: Vec<Sale> = recorded.into_iter().filter(|s| !s.state.is_final()).collect();
        if let Ok(mine) = market.my_slots().await {
            for id in mine {
                if open.iter().any(|s| s.slot_id() == id) || self.sale(id).is_some() {
                    continue;
                }
                let Ok(active) = market.view(M::getActiveSlotCall { slotId: id }).await else { continue };
                let sale = Sale {
                    request_id: request_id(&active.request),
                    slot_index: active.slotIndex,
                    request: active.request.abi_encode().into(),
                    state: SaleState::Unknown,
                    availability: None,
                    taken: 0,
                    released: true,
                    repair: false,
                    error: None,
                    collateral: U256::ZERO,
                    proofs: 0,
                };
                if self.save_sale(&sale, Vec::new(), 0).await.is_ok() {
                    open.push(sale);
                }
            }
        }
        for sale in open {
            let market = self.clone();
            tokio::spawn(async move {
                let id = sale.slot_id();
                market.set_sale(id, SaleState::Unknown, |_| {}).await;
                let chain = &market.inner.marketplace;
                let found = async {
                    let state = persist(pause, "slotState", || chain.slot_state(id)).await?;
                    let host = persist(pause, "getHost", || chain.host(id)).await?;
                    Ok::<_, ChainError>(SaleState::recovered(state, host == chain.account()))
                }
                .await;
                let next = match found {
                    Ok(next) => next,
                    Err(e) => return market.end_sale(id, Exit::Chain(e)).await,
                };
                tracing::info!(request = %sale.request_id, slot = sale.slot_index, state = next.name(), "sale recovered");
                match next {
                    SaleState::Filled => {
                        // Back to proving only with the data: check it, fetch or rebuild it if
                        // it is damaged or gone.
                        let request = sale.request();
                        let checked = async {
                            let cid = Cid::try_from(request.content.cid.as_ref()).map_err(|e| errored(e.to_string()))?;
                            let (manifest, _) = match market.inner.fetcher.local_manifest(cid).await {
                                Some(found) => found,
                                None => return market.restore_slot(&request, sale.slot_index, cid).await.map(drop),
                            };
                            let prover = market.inner.prover.clone().ok_or_else(|| errored("no prover"))?;
                            if let Err(e) = prover.check(cid, &manifest, sale.slot_index as u32).await {
                                tracing::warn!(slot = %id, error = %e, "the slot's data is damaged or gone; fetching it again");
                                market.restore_slot(&request, sale.slot_index, cid).await?;
                            }
                            Ok(())
                        }
                        .await;
                        match checked {
                            Ok(()) => {
                                let collateral = chain.current_collateral(id).await.unwrap_or_default();
                                market.set_sale(id, SaleState::Filled, |s| s.collateral = collateral).await;
                                market.keep_proving(id).await;
                            }
                            Err(exit) => market.end_sale(id, exit).await,
                        }
                    }
                    SaleState::Payout => {
                        let exit = market.pay_out(id).await;
                        market.end_sale(id, exit).await;
                    }
                    other => market.end_sale(id, Exit::To(other, None)).await,
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_sale_goes_where_the_chain_says() {
        assert_eq!(SaleState::recovered(SlotState::Filled, true), SaleState::Filled);
        assert_eq!(SaleState::recovered(SlotState::Finished, true), SaleState::Payout);
        assert_eq!(SaleState::recovered(SlotState::Paid, true), SaleState::Finished);
        assert_eq!(SaleState::recovered(SlotState::Failed, true), SaleState::Failed);
        assert_eq!(SaleState::recovered(SlotState::Cancelled, true), SaleState::Cancelled);
        assert_eq!(SaleState::recovered(SlotState::Repair, true), SaleState::Errored);
        assert_eq!(SaleState::recovered(SlotState::Free, true), SaleState::Errored);
        assert_eq!(SaleState::recovered(SlotState::Filled, false), SaleState::Errored);
        assert_eq!(SaleState::Preparing.name(), "SalePreparing");
        assert!(SaleState::Ignored.is_final() && !SaleState::Proving.is_final());
    }
}
