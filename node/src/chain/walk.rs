//! One storage request's whole life on chain, scripted, over any [`Chain`]: the check that
//! a chain adapter (and the chain behind it) carries the marketplace end to end. Tests run it
//! on a real Anvil through the production adapter; the simulator runs it on its modeled
//! chain and on Anvil, in virtual time. It stands in for the node's sales and purchasing
//! state machines, which will make the same calls.
//!
//! A client requests storage; one host per slot reserves and fills it with a proof of the
//! current challenge; hosts prove in every period a proof is required (or about to be); the
//! host of one slot falls silent after filling it; a validator marks its missed proofs
//! (slashing it, and earning its reward) until the slot is freed; a spare host repairs the
//! slot for the repair reward; the request finishes; hosts collect their payouts and the
//! client its refund. Each actor is a task of its own, as it would be a node of its own.
//!
//! At the end every account's token balance is compared, to the unit, with what the
//! marketplace's rules say it should be, computed here from the walk's own record of fills
//! and slashes (a model of the rules, independent of the contract's arithmetic).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use alloy_primitives::{Address, U256};

use super::events::market_event;
use super::market::{
    Groth16Proof, Marketplace, Request, RequestId, RequestState, SlotState, collateral_per_slot,
    price_per_slot_per_second, public_inputs, request_id, slot_id,
};
use super::{BlockHead, ChainError, LogFilter};
use crate::chain::contracts::Marketplace as M;
use crate::chain::contracts::Marketplace::MarketplaceEvents;

/// Makes a proof for a challenge's public inputs (entropy, dataset root, slot index).
pub trait ProofMaker: Send + Sync {
    fn prove(&self, inputs: [U256; 3]) -> Groth16Proof;
}

/// Proofs of the stand-in circuit, each from its own seed (so a walk is reproducible).
pub struct StandInProofs {
    prover: crate::proofs::stand_in::StandInProver,
    made: Mutex<u64>,
}

impl StandInProofs {
    pub fn new(prover: crate::proofs::stand_in::StandInProver) -> StandInProofs {
        StandInProofs { prover, made: Mutex::new(0) }
    }
}

impl ProofMaker for StandInProofs {
    fn prove(&self, inputs: [U256; 3]) -> Groth16Proof {
        use crate::proofs::groth16::{fr_from_u256, proof_to_chain};
        let [entropy, root, slot] =
            inputs.map(|v| fr_from_u256(v).expect("public inputs are field elements"));
        let seed = {
            let mut made = self.made.lock().expect("proof counter");
            *made += 1;
            *made
        };
        let inputs = crate::proofs::stand_in::StandInInputs { entropy, root, slot };
        proof_to_chain(&self.prover.prove(inputs, seed))
    }
}

/// The actors and the request.
pub struct Walk {
    pub client: Marketplace,
    /// `hosts[i]` fills slot `i`; the one after the last slot's is the spare that repairs.
    pub hosts: Vec<Marketplace>,
    pub validator: Marketplace,
    /// The request; its client is `client`'s account.
    pub request: Request,
    /// The slot whose host stops proving once it has filled it.
    pub silent_slot: u64,
}

/// What the walk did and saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalkReport {
    pub request: RequestId,
    pub fills: u64,
    pub repairs: u64,
    pub proofs: u64,
    pub slashes: u64,
    /// Token balances at the end, and what the rules say they should be.
    pub balances: BTreeMap<Address, U256>,
    pub expected: BTreeMap<Address, U256>,
}

/// Why a walk failed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{step}: {error}")]
    Chain { step: String, error: ChainError },
    #[error("{0}")]
    Check(String),
}

fn at(step: impl Into<String>) -> impl FnOnce(ChainError) -> WalkError {
    let step = step.into();
    move |error| WalkError::Chain { step, error }
}

/// What happened to a request's slots, in the order the chain saw it: what the balance rules
/// of [`rule_deltas`] are computed from.
#[derive(Clone, Debug)]
pub enum Happened {
    Fill { slot: u64, host: Address, at: u64, repair: bool },
    Slash { slot: u64, validator: Address },
}

#[derive(Default)]
struct Ledger {
    /// (block, what), sorted by block at the end.
    events: Vec<(u64, Happened)>,
    proofs: u64,
}

impl Walk {
    pub async fn run(self, prover: Arc<dyn ProofMaker>) -> Result<WalkReport, WalkError> {
        let slots = self.request.ask.slots;
        if self.hosts.len() as u64 != slots + 1 {
            return Err(WalkError::Check(format!(
                "{} hosts for {slots} slots and a spare",
                self.hosts.len()
            )));
        }
        let market = self.client.clone();
        let mut accounts: Vec<Address> =
            vec![self.client.account(), self.validator.account(), market.address()];
        accounts.extend(self.hosts.iter().map(Marketplace::account));
        let mut before = BTreeMap::new();
        for account in &accounts {
            before.insert(*account, persist("reading balances", || market.token_balance(*account)).await?);
        }

        let id = request_id(&self.request);
        loop {
            match self.client.request_storage(&self.request).await {
                Ok(_) => break,
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(PAUSE).await;
                    // Submitted by an attempt whose answer was lost?
                    if persist("requestState", || self.client.request_state(id)).await.is_ok() {
                        break;
                    }
                }
                Err(e) => return Err(at("requestStorage")(e)),
            }
        }
        let expiry = persist("requestExpiry", || self.client.request_expiry(id)).await?;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut tasks = Vec::new();
        for (index, host) in self.hosts.iter().enumerate() {
            let slot = (index as u64).min(slots - 1);
            let role = if index as u64 == slots {
                HostRole::Repairs(self.silent_slot)
            } else if slot == self.silent_slot {
                HostRole::FallsSilent(slot)
            } else {
                HostRole::Proves(slot)
            };
            let task = host_task(host.clone(), self.request.clone(), role, prover.clone(), ledger.clone());
            tasks.push(tokio::spawn(task));
        }
        tasks.push(tokio::spawn(validator_task(self.validator.clone(), id, slots, ledger.clone())));
        let client = self.client.clone();
        let client_task = tokio::spawn(async move {
            wait_for_end(&client, id).await?;
            match persist("withdrawFunds", || client.withdraw_funds(id, None)).await {
                // Withdrawn by an attempt whose answer was lost.
                Err(WalkError::Chain { error, .. }) if error.is(M::Marketplace_NothingToWithdraw {}) => {
                    Ok(())
                }
                result => result.map(drop),
            }
        });
        tasks.push(client_task);
        for task in tasks {
            task.await.map_err(|e| WalkError::Check(format!("an actor's task failed: {e}")))??;
        }

        let state = persist("requestState", || market.request_state(id)).await?;
        if state != RequestState::Finished {
            return Err(WalkError::Check(format!("the request ended {state:?}, not Finished")));
        }
        let mut balances = BTreeMap::new();
        for account in &accounts {
            balances.insert(*account, persist("reading balances", || market.token_balance(*account)).await?);
        }
        let ledger = Arc::try_unwrap(ledger).map_err(|_| WalkError::Check("ledger still shared".into()))?;
        let mut ledger = ledger.into_inner().expect("ledger lock");
        ledger.events.sort_by_key(|(block, _)| *block);
        let end = expiry - self.request.expiry + self.request.ask.duration;
        let deltas =
            rule_deltas(self.client.account(), &self.request.ask, market.config(), &ledger.events, end)
                .map_err(WalkError::Check)?;
        let mut expected = BTreeMap::new();
        for (account, start) in &before {
            let delta = deltas.get(account).copied().unwrap_or_default();
            let value = if delta >= 0 {
                *start + U256::from(delta as u128)
            } else {
                start.checked_sub(U256::from(delta.unsigned_abs())).ok_or_else(|| {
                    WalkError::Check(format!("{account} would go below zero: {start} {delta:+}"))
                })?
            };
            expected.insert(*account, value);
        }
        let count = |f: fn(&Happened) -> bool| ledger.events.iter().filter(|(_, e)| f(e)).count() as u64;
        let report = WalkReport {
            request: id,
            fills: count(|e| matches!(e, Happened::Fill { repair: false, .. })),
            repairs: count(|e| matches!(e, Happened::Fill { repair: true, .. })),
            proofs: ledger.proofs,
            slashes: count(|e| matches!(e, Happened::Slash { .. })),
            balances,
            expected,
        };
        if report.balances != report.expected {
            return Err(WalkError::Check(format!(
                "token balances differ from the rules: got {:?}, expected {:?}",
                report.balances, report.expected
            )));
        }
        let honest_slashed: BTreeSet<u64> = ledger
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Happened::Slash { slot, .. } if *slot != self.silent_slot => Some(*slot),
                _ => None,
            })
            .collect();
        if !honest_slashed.is_empty() {
            return Err(WalkError::Check(format!(
                "hosts that proved were slashed, on slots {honest_slashed:?}"
            )));
        }
        if report.repairs != 1 {
            return Err(WalkError::Check(format!("{} repairs, expected 1", report.repairs)));
        }
        Ok(report)
    }
}

/// The token balance changes the marketplace's rules give for what happened to a request
/// (`events` in chain order, ending at `end`), signed, by account: a model of the rules,
/// independent of the contract's arithmetic.
pub fn rule_deltas(
    client: Address,
    ask: &super::market::Ask,
    config: &M::MarketplaceConfig,
    events: &[(u64, Happened)],
    end: u64,
) -> Result<BTreeMap<Address, i128>, String> {
    let amount = |value: U256| -> i128 { value.saturating_to::<u128>() as i128 };
    let collateral = amount(collateral_per_slot(ask));
    let per_second = amount(price_per_slot_per_second(ask));
    let slash = collateral * i128::from(config.collateral.slashPercentage) / 100;
    let max_slashes = u64::from(config.collateral.maxNumberOfSlashes);

    struct Tenure {
        host: Address,
        at: u64,
        collateral: i128,
        slashes: u64,
    }
    let mut deltas: BTreeMap<Address, i128> = BTreeMap::new();
    let mut tenures: BTreeMap<u64, Tenure> = BTreeMap::new();
    let mut forfeited: i128 = 0;
    for (_, event) in events {
        match event {
            Happened::Fill { slot, host, at, repair } => {
                let mut due = collateral;
                if *repair {
                    let repair_reward = (collateral * i128::from(config.collateral.repairRewardPercentage)
                        / 100)
                        .min(forfeited);
                    forfeited -= repair_reward;
                    due -= repair_reward;
                }
                *deltas.entry(*host).or_default() -= due;
                tenures.insert(*slot, Tenure { host: *host, at: *at, collateral, slashes: 0 });
            }
            Happened::Slash { slot, validator } => {
                let tenure = tenures.get_mut(slot).ok_or_else(|| format!("slash of empty slot {slot}"))?;
                let slashed = slash.min(tenure.collateral);
                tenure.collateral -= slashed;
                tenure.slashes += 1;
                let paid = slashed * i128::from(config.collateral.validatorRewardPercentage) / 100;
                *deltas.entry(*validator).or_default() += paid;
                forfeited += slashed - paid;
                if tenure.slashes >= max_slashes {
                    forfeited += tenure.collateral; // freed: the rest of the collateral is lost too
                    tenures.remove(slot);
                }
            }
        }
    }
    // Hosts still holding their slots at the end are paid from their fill to the end, and get
    // their collateral back; the client paid the price and gets back the rest, with what
    // hosts forfeited and repairs did not take.
    let mut paid_to_hosts = 0;
    for tenure in tenures.values() {
        let payment = i128::from(end.saturating_sub(tenure.at)) * per_second;
        paid_to_hosts += payment;
        *deltas.entry(tenure.host).or_default() += payment + tenure.collateral;
    }
    *deltas.entry(client).or_default() += forfeited - paid_to_hosts;
    Ok(deltas)
}

#[derive(Clone, Copy, Debug)]
enum HostRole {
    /// Fills the slot and proves until the request ends.
    Proves(u64),
    /// Fills the slot, then never proves.
    FallsSilent(u64),
    /// Waits for the slot to be freed, then repairs it and proves.
    Repairs(u64),
}

/// How long an actor waits before trying again when its endpoint fails.
const PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// [`super::persist`], with the step named in the error.
async fn persist<T, F, Fut>(what: &str, step: F) -> Result<T, WalkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ChainError>>,
{
    super::persist(PAUSE, what, step).await.map_err(at(what))
}

const ENDED: [RequestState; 3] = [RequestState::Finished, RequestState::Failed, RequestState::Cancelled];

async fn host_task(
    host: Marketplace,
    request: Request,
    role: HostRole,
    prover: Arc<dyn ProofMaker>,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<(), WalkError> {
    let id = request_id(&request);
    let (slot, repair) = match role {
        HostRole::Proves(slot) | HostRole::FallsSilent(slot) => (slot, false),
        HostRole::Repairs(slot) => (slot, true),
    };
    let sid = slot_id(id, slot);
    wait_for_request(&host, id).await?;
    if repair {
        // Wait for the slot to be freed (or the request to end without it).
        let mut head = persist("head", || host.chain().head()).await?;
        loop {
            if ENDED.contains(&persist("requestState", || host.request_state(id)).await?) {
                return Ok(());
            }
            if persist("slotState", || host.slot_state(sid)).await? == SlotState::Repair {
                break;
            }
            head = persist("waiting for a block", || host.chain().next_block(head.number)).await?;
        }
    }
    // Reserve (a reservation already made by an attempt whose answer was lost is refused).
    match host.reserve_slot(id, slot).await {
        Ok(_) => {}
        Err(e) if e.is_transient() || e.is(M::SlotReservations_ReservationNotAllowed {}) => {
            tokio::time::sleep(PAUSE).await;
            let _ = persist(&format!("reserveSlot {slot}"), || host.reserve_slot(id, slot)).await;
        }
        Err(e) => return Err(at(format!("reserveSlot {slot}"))(e)),
    }
    let sent_after = persist("head", || host.chain().head()).await?.number;
    let (block, filled_at) = loop {
        match with_fresh_proofs(&host, &request, slot, &*prover, |proof| host.fill_slot(id, slot, proof))
            .await
        {
            Ok(receipt) => break (receipt.block, receipt.timestamp),
            Err(e) if e.is_transient() || e.is(M::Marketplace_SlotNotFree {}) => {
                if e.is_transient() {
                    tokio::time::sleep(PAUSE).await;
                }
                // Filled by an attempt whose answer was lost? Then the slot is ours, and its
                // payment tells when it was filled.
                if persist("getHost", || host.host(sid)).await? == host.account() {
                    let payment =
                        persist("slotPayment", || host.view(M::slotPaymentCall { slotId: sid })).await?;
                    let end = persist("requestEnd", || host.request_end(id)).await?;
                    let per_second = super::market::price_per_slot_per_second(&request.ask);
                    let block = slot_event_block(&host, sent_after, id, slot, SlotEvent::Filled).await?;
                    break (block, end - (payment / per_second).saturating_to::<u64>());
                }
                if !e.is_transient() {
                    return Err(at(format!("fillSlot {slot}"))(e));
                }
            }
            Err(e) => return Err(at(format!("fillSlot {slot}"))(e)),
        }
    };
    ledger
        .lock()
        .expect("ledger")
        .events
        .push((block, Happened::Fill { slot, host: host.account(), at: filled_at, repair }));
    if matches!(role, HostRole::FallsSilent(_)) {
        return Ok(()); // it never proves, and loses the slot
    }

    // Prove once a period, whenever a proof is required or about to be.
    let mut head = persist("head", || host.chain().head()).await?;
    let mut proved_in: Option<u64> = Some(host.period_of(filled_at));
    loop {
        if ENDED.contains(&persist("requestState", || host.request_state(id)).await?) {
            break;
        }
        let period = host.period_of(head.timestamp);
        if proved_in != Some(period)
            && persist("slotState", || host.slot_state(sid)).await? == SlotState::Filled
        {
            let due = persist("isProofRequired", || host.is_proof_required(sid)).await?
                || persist("willProofBeRequired", || host.will_proof_be_required(sid)).await?;
            if due {
                match with_fresh_proofs(&host, &request, slot, &*prover, |proof| {
                    host.submit_proof(sid, proof)
                })
                .await
                {
                    Ok(_) => {
                        ledger.lock().expect("ledger").proofs += 1;
                        proved_in = Some(period);
                    }
                    Err(e) if e.is(M::Proofs_ProofAlreadySubmitted {}) => proved_in = Some(period),
                    // The period turned while the proof was on its way: prove the new one.
                    Err(e) if e.is(M::Proofs_InvalidProof {}) => {}
                    // The request ended while the proof was on its way (or the slot was lost:
                    // freeing it at the end says so).
                    Err(e) if e.is(M::Marketplace_SlotNotAcceptingProofs {}) => {}
                    // The endpoint failed: try again in the next block.
                    Err(e) if e.is_transient() => {}
                    Err(e) => return Err(at(format!("submitProof {slot}"))(e)),
                }
            }
        }
        head = persist("waiting for a block", || host.chain().next_block(head.number)).await?;
    }
    match host.free_slot(sid, None).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_transient() => {
            tokio::time::sleep(PAUSE).await;
            match persist(&format!("freeSlot {slot}"), || host.free_slot(sid, None)).await {
                // Paid by the attempt whose answer was lost.
                Err(WalkError::Chain { error, .. }) if error.is(M::Marketplace_AlreadyPaid {}) => Ok(()),
                result => result.map(drop),
            }
        }
        Err(e) => Err(at(format!("freeSlot {slot}"))(e)),
    }
}

/// Runs `send` with a proof of the challenge in the newest block, again with a new proof
/// when the challenge moved before the transaction was mined (the period turned, or the
/// pointer wrapped).
async fn with_fresh_proofs<F, Fut>(
    host: &Marketplace,
    request: &Request,
    slot: u64,
    prover: &dyn ProofMaker,
    send: F,
) -> Result<super::Receipt, ChainError>
where
    F: Fn(Groth16Proof) -> Fut,
    Fut: std::future::Future<Output = Result<super::Receipt, ChainError>>,
{
    let sid = slot_id(request_id(request), slot);
    let mut tries = 0;
    loop {
        let challenge = host.challenge(sid).await?;
        let proof = prover.prove(public_inputs(challenge, request.content.merkleRoot, slot));
        match send(proof).await {
            Err(e) if e.is(M::Proofs_InvalidProof {}) && tries < 4 => tries += 1,
            result => return result,
        }
    }
}

/// The validator: each block, marks the missed proofs of the period just ended.
async fn validator_task(
    validator: Marketplace,
    id: RequestId,
    slots: u64,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<(), WalkError> {
    wait_for_request(&validator, id).await?;
    let max_slashes = u64::from(validator.config().collateral.maxNumberOfSlashes);
    let mut marked: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut head: BlockHead = persist("head", || validator.chain().head()).await?;
    loop {
        if ENDED.contains(&persist("requestState", || validator.request_state(id)).await?) {
            return Ok(());
        }
        let ended = validator.period_of(head.timestamp).saturating_sub(1);
        for slot in 0..slots {
            let sid = slot_id(id, slot);
            if marked.contains(&(slot, ended))
                || validator.can_mark_proof_as_missing(sid, ended).await.is_err()
            {
                continue;
            }
            let before = persist("missingProofs", || validator.missing_proofs(sid)).await?;
            let sent_after = persist("head", || validator.chain().head()).await?.number;
            let block = match validator.mark_proof_as_missing(sid, ended).await {
                Ok(receipt) => Some(receipt.block),
                // Too late, or proven meanwhile: nothing to mark.
                Err(ChainError::Revert(_)) => None,
                Err(e) if e.is_transient() => {
                    // Did the attempt whose answer was lost land? The count of misses says.
                    tokio::time::sleep(PAUSE).await;
                    let after = persist("missingProofs", || validator.missing_proofs(sid)).await?;
                    let freed = before + 1 == max_slashes && after == 0;
                    if freed {
                        // The slot's freeing tells the block, which orders the repair after it.
                        Some(slot_event_block(&validator, sent_after, id, slot, SlotEvent::Freed).await?)
                    } else if after == before + 1 {
                        // No event marks a miss: the newest block is as close as it gets.
                        Some(persist("head", || validator.chain().head()).await?.number)
                    } else {
                        None
                    }
                }
                Err(e) => return Err(at(format!("markProofAsMissing {slot}"))(e)),
            };
            if let Some(block) = block {
                marked.insert((slot, ended));
                let slash = Happened::Slash { slot, validator: validator.account() };
                ledger.lock().expect("ledger").events.push((block, slash));
            }
        }
        head = persist("waiting for a block", || validator.chain().next_block(head.number)).await?;
    }
}

#[derive(Clone, Copy)]
enum SlotEvent {
    Filled,
    Freed,
}

/// The block of a slot's newest `SlotFilled` or `SlotFreed` event mined after block `after`:
/// where a transaction whose answer was lost landed (the newest block when the event is not
/// found, which cannot happen when the transaction landed).
async fn slot_event_block(
    market: &Marketplace,
    after: u64,
    id: RequestId,
    slot: u64,
    which: SlotEvent,
) -> Result<u64, WalkError> {
    let head = persist("head", || market.chain().head()).await?.number;
    let filter = LogFilter { address: market.address(), from_block: after + 1, to_block: head };
    let logs = persist("getLogs", || market.chain().logs(filter)).await?;
    let wanted = |log: &&super::ChainLog| match (market_event(log), which) {
        (Some(MarketplaceEvents::SlotFilled(e)), SlotEvent::Filled) => {
            e.requestId == id && e.slotIndex == slot
        }
        (Some(MarketplaceEvents::SlotFreed(e)), SlotEvent::Freed) => e.requestId == id && e.slotIndex == slot,
        _ => false,
    };
    Ok(logs.iter().rev().find(wanted).map_or(head, |log| log.block))
}

/// Waits until the request is on chain.
async fn wait_for_request(market: &Marketplace, id: RequestId) -> Result<(), WalkError> {
    let mut head = persist("head", || market.chain().head()).await?;
    loop {
        match market.request_state(id).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is(M::Marketplace_UnknownRequest {}) || e.is_transient() => {}
            Err(e) => return Err(at("requestState")(e)),
        }
        head = persist("waiting for a block", || market.chain().next_block(head.number)).await?;
    }
}

/// Waits until the request has ended.
async fn wait_for_end(market: &Marketplace, id: RequestId) -> Result<RequestState, WalkError> {
    let mut head = persist("head", || market.chain().head()).await?;
    loop {
        let state = persist("requestState", || market.request_state(id)).await?;
        if ENDED.contains(&state) {
            return Ok(state);
        }
        head = persist("waiting for a block", || market.chain().next_block(head.number)).await?;
    }
}
