//! Random call sequences against the marketplace, checking after every step the invariants
//! Archivist proves with Certora (and ours): tokens conserved, the marketplace holding
//! exactly what it owes, states that only change as the rules allow.
//!
//! Many actors (clients, hosts, validators) call every function with arguments that are
//! mostly sensible and sometimes not, while time jumps by random amounts. Seeds and steps:
//! `NEVERUST_CONTRACT_SEEDS=A..B` (default `0..24`), `NEVERUST_CONTRACT_STEPS` (default 250).
//! A failure names its seed and step; rerun one seed with `NEVERUST_CONTRACT_SEEDS=7..8`.

mod harness;

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Log, U256};
use alloy_sol_types::SolEvent;
use harness::*;
use neverust::chain::contracts::Marketplace as M;
use neverust::chain::contracts::overloads::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLIENTS: [u8; 2] = [1, 2];
const HOSTS: [u8; 6] = [10, 11, 12, 13, 14, 15];
const VALIDATORS: [u8; 2] = [20, 21];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
fn invariants_hold_over_random_call_sequences() {
    let seeds = env_or("NEVERUST_CONTRACT_SEEDS", "0..24");
    let (a, b) = seeds.split_once("..").expect("NEVERUST_CONTRACT_SEEDS is A..B");
    let steps: usize = env_or("NEVERUST_CONTRACT_STEPS", "250").parse().unwrap();
    let mut totals = Totals::default();
    for seed in a.parse::<u64>().unwrap()..b.parse::<u64>().unwrap() {
        let mut run = Run::new(seed);
        for step in 0..steps {
            let action = run.step();
            if let Err(broken) = run.check() {
                panic!(
                    "seed {seed}, step {step} ({action}): {broken}\nrerun: NEVERUST_CONTRACT_SEEDS={seed}..{}",
                    seed + 1
                );
            }
        }
        totals.add(&run.counts);
    }
    // The interesting paths ran: the test is not passing by doing nothing.
    println!("{totals:?}");
    for (what, count) in &totals.0 {
        assert!(*count > 0, "no {what} in any run");
    }
}

#[derive(Debug, Default)]
struct Totals(BTreeMap<&'static str, u64>);

impl Totals {
    fn add(&mut self, counts: &BTreeMap<&'static str, u64>) {
        for what in [
            "request",
            "fill",
            "repair",
            "proof",
            "slash",
            "freed",
            "failed",
            "cancelled",
            "finished",
            "payout",
            "withdraw",
            "top-up",
        ] {
            *self.0.entry(what).or_default() += counts.get(what).copied().unwrap_or(0);
        }
    }
}

struct Tracked {
    request: Request,
    id: B256,
    slots: Vec<B256>,
}

struct Run {
    h: Harness,
    rng: ChaCha8Rng,
    requests: Vec<Tracked>,
    /// Marks since the slot was last filled, as the model counts them.
    marks: BTreeMap<B256, u64>,
    request_states: BTreeMap<B256, u8>,
    slot_states: BTreeMap<B256, u8>,
    /// A successful mark of a period that had not ended (the contract must refuse it).
    early_mark: Option<String>,
    counts: BTreeMap<&'static str, u64>,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut config = config();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        config.collateral.maxNumberOfSlashes = rng.random_range(1..=4);
        config.collateral.slashPercentage = rng.random_range(1..=25);
        config.collateral.validatorRewardPercentage = rng.random_range(0..=100);
        config.collateral.repairRewardPercentage = rng.random_range(0..=100);
        config.proofs.downtime = if rng.random_bool(0.5) { 0 } else { rng.random_range(1..=128) };
        Run {
            h: Harness::new(config),
            rng,
            requests: Vec::new(),
            marks: BTreeMap::new(),
            request_states: BTreeMap::new(),
            slot_states: BTreeMap::new(),
            early_mark: None,
            counts: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn actor(&mut self, group: &[u8]) -> Address {
        account(self.pick(group))
    }

    /// A random known slot: (request index, slot index).
    fn slot(&mut self) -> Option<(usize, u64)> {
        if self.requests.is_empty() {
            return None;
        }
        let r = self.rng.random_range(0..self.requests.len());
        let s = self.rng.random_range(0..self.requests[r].request.ask.slots);
        Some((r, s))
    }

    /// One random action; its name.
    fn step(&mut self) -> String {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..8 => self.new_request(),
            8..30 => self.fill(),
            30..52 => self.prove(),
            52..64 => self.mark(),
            64..70 => self.free(),
            70..75 => self.withdraw(),
            75..78 => self.top_up(),
            _ => {
                let period = self.h.config.proofs.period;
                let seconds = if self.rng.random_bool(0.7) {
                    self.rng.random_range(1..=period / 2)
                } else {
                    self.rng.random_range(1..=2 * period)
                };
                self.h.advance(seconds);
                format!("advance {seconds} s")
            }
        }
    }

    fn new_request(&mut self) -> String {
        let client = self.actor(&CLIENTS);
        let slots = self.rng.random_range(1..=4u64);
        let duration = self.rng.random_range(300..=3000u64);
        let mut ask = Ask {
            proofProbability: U256::from(self.rng.random_range(1..=3u64)),
            pricePerBytePerSecond: U256::from(self.rng.random_range(1..=20u64)),
            collateralPerByte: U256::from(self.rng.random_range(1..=2000u64)),
            slots,
            slotSize: self.rng.random_range(1..=4096u64),
            duration,
            maxSlotLoss: self.rng.random_range(0..=slots),
        };
        if self.rng.random_bool(0.05) {
            ask.collateralPerByte = U256::ZERO; // refused
        }
        let mut request = self.h.request(client, ask);
        request.expiry = self.rng.random_range(10..duration);
        let price = max_price(&request.ask);
        self.h.mint(client, price);
        // Now and then the approval falls short.
        let approved = if self.rng.random_bool(0.05) { price - U256::from(1) } else { price };
        self.h.approve(client, approved);
        let result = self.h.send(client, M::requestStorageCall { request: request.clone() });
        if result.is_ok() {
            let id = request_id(&request);
            let slots = (0..request.ask.slots).map(|s| slot_id(id, s)).collect();
            self.requests.push(Tracked { request, id, slots });
            self.count("request");
        }
        format!("request {:?}", result.err().map(|e| e.name()))
    }

    fn fill(&mut self) -> String {
        let Some((r, s)) = self.slot() else { return "fill: no request".into() };
        let host = self.actor(&HOSTS);
        let request = self.requests[r].request.clone();
        let id = self.requests[r].id;
        let collateral = collateral_per_slot(&request.ask);
        self.h.mint(host, collateral);
        self.h.approve(host, collateral);
        let _ = self.h.send(host, M::reserveSlotCall { requestId: id, slotIndex: s });
        let repair = self.h.slot_state(slot_id(id, s)) == state::REPAIR;
        let proof =
            if self.rng.random_bool(0.9) { self.h.proof(&request, s) } else { M::Groth16Proof::default() };
        let result = self.h.send(host, M::fillSlotCall { requestId: id, slotIndex: s, proof });
        if let Ok(logs) = &result {
            self.marks.insert(slot_id(id, s), 0);
            self.count(if repair { "repair" } else { "fill" });
            self.note_events(logs);
        }
        format!("fill {s} by {host}: {:?}", result.err().map(|e| e.name()))
    }

    /// Hosts prove most of the time; misses are what validators find.
    fn prove(&mut self) -> String {
        let Some((r, s)) = self.slot() else { return "prove: no request".into() };
        let sid = self.requests[r].slots[s as usize];
        let host = self.h.view(DEPLOYER, M::getHostCall { slotId: sid }).unwrap();
        if host == Address::ZERO || self.rng.random_bool(0.3) {
            return "prove: skipped".into();
        }
        let request = self.requests[r].request.clone();
        let result = self.h.submit_proof(host, &request, s);
        if result.is_ok() {
            self.count("proof");
        }
        format!("prove {s}: {:?}", result.err().map(|e| e.name()))
    }

    /// A random filled slot, if any: (request index, slot index).
    fn filled_slot(&mut self) -> Option<(usize, u64)> {
        let mut filled = Vec::new();
        for (r, tracked) in self.requests.iter().enumerate() {
            for (s, sid) in tracked.slots.iter().enumerate() {
                if self.slot_states.get(sid) == Some(&state::FILLED) {
                    filled.push((r, s as u64));
                }
            }
        }
        if filled.is_empty() { self.slot() } else { Some(self.pick(&filled)) }
    }

    fn mark(&mut self) -> String {
        let Some((r, s)) = self.filled_slot() else { return "mark: no request".into() };
        let sid = self.requests[r].slots[s as usize];
        let validator = self.actor(&VALIDATORS);
        let current = self.h.period();
        let period = current.saturating_sub(self.pick(&[1, 1, 1, 0, 2]));
        let result = self.h.send(validator, M::markProofAsMissingCall { slotId: sid, period });
        if let Ok(logs) = &result {
            // The transaction ran in the head block now; its period must have ended.
            if period >= self.h.period() {
                self.early_mark =
                    Some(format!("period {period} marked missing during period {}", self.h.period()));
            }
            *self.marks.entry(sid).or_default() += 1;
            self.count("slash");
            self.note_events(logs);
        }
        format!("mark {s} period {period}: {:?}", result.err().map(|e| e.name()))
    }

    fn free(&mut self) -> String {
        let Some((r, s)) = self.slot() else { return "free: no request".into() };
        let sid = self.requests[r].slots[s as usize];
        let host = self.h.view(DEPLOYER, M::getHostCall { slotId: sid }).unwrap();
        let who = if host == Address::ZERO || self.rng.random_bool(0.1) { self.actor(&HOSTS) } else { host };
        let before = self.h.slot_state(sid);
        let result = if self.rng.random_bool(0.5) {
            self.h.send(who, FreeSlotCall { slotId: sid })
        } else {
            let (a, b) = (self.actor(&HOSTS), self.actor(&CLIENTS));
            self.h.send(who, FreeSlotToCall { slotId: sid, rewardRecipient: a, collateralRecipient: b })
        };
        if let Ok(logs) = &result {
            if before != state::FILLED {
                self.count("payout");
            }
            self.note_events(logs);
        }
        format!("free {s}: {:?}", result.err().map(|e| e.name()))
    }

    fn withdraw(&mut self) -> String {
        if self.requests.is_empty() {
            return "withdraw: no request".into();
        }
        let r = self.rng.random_range(0..self.requests.len());
        let (id, client) = (self.requests[r].id, self.requests[r].request.client);
        let who = if self.rng.random_bool(0.9) { client } else { self.actor(&CLIENTS) };
        let result = if self.rng.random_bool(0.5) {
            self.h.send(who, WithdrawFundsCall { requestId: id })
        } else {
            let to = self.actor(&VALIDATORS);
            self.h.send(who, WithdrawFundsToCall { requestId: id, withdrawRecipient: to })
        };
        if let Ok(logs) = &result {
            self.count("withdraw");
            self.note_events(logs);
        }
        format!("withdraw: {:?}", result.err().map(|e| e.name()))
    }

    fn top_up(&mut self) -> String {
        let Some((r, s)) = self.filled_slot() else { return "top up: no request".into() };
        let sid = self.requests[r].slots[s as usize];
        let host = self.h.view(DEPLOYER, M::getHostCall { slotId: sid }).unwrap();
        if host == Address::ZERO {
            return "top up: free slot".into();
        }
        let missing = collateral_per_slot(&self.requests[r].request.ask);
        self.h.mint(host, missing);
        self.h.approve(host, missing);
        let result = self.h.send(host, M::topUpCollateralCall { slotId: sid });
        if result.is_ok() {
            self.count("top-up");
        }
        format!("top up {s}: {:?}", result.err().map(|e| e.name()))
    }

    /// Follows what events say the contract did on its own (a slot freed by a mark).
    fn note_events(&mut self, logs: &[Log]) {
        for log in logs {
            if let Ok(freed) = M::SlotFreed::decode_log_data(&log.data) {
                self.marks.insert(slot_id(freed.requestId, freed.slotIndex), 0);
                self.count("freed");
            }
        }
    }

    /// Every invariant, on the state after the last step.
    fn check(&mut self) -> Result<(), String> {
        if let Some(early) = self.early_mark.take() {
            return Err(early);
        }
        self.check_tokens()?;
        let now = self.h.now();
        for r in 0..self.requests.len() {
            let (id, ask) = (self.requests[r].id, self.requests[r].request.ask.clone());
            let state = self.h.request_state(id);
            let previous = self.request_states.insert(id, state).unwrap_or(state::NEW);
            if !request_transition_allowed(previous, state) {
                return Err(format!("request went from state {previous} to {state}"));
            }
            let mut slot_states = Vec::new();
            for s in 0..self.requests[r].slots.len() {
                let sid = self.requests[r].slots[s];
                let slot = self.h.slot_state(sid);
                let before = self.slot_states.insert(sid, slot).unwrap_or(state::FREE);
                if !slot_transition_allowed(before, slot) {
                    return Err(format!("slot {s} went from state {before} to {slot}"));
                }
                if slot == state::PAID && ![state::FINISHED, state::CANCELLED, state::FAILED].contains(&state)
                {
                    return Err(format!("slot {s} is Paid in a request in state {state}"));
                }
                let missing = self.h.view(DEPLOYER, M::missingProofsCall { slotId: sid }).unwrap();
                let marked = self.marks.get(&sid).copied().unwrap_or(0);
                if missing != U256::from(marked) {
                    return Err(format!("slot {s}: {missing} missing proofs counted, {marked} marked"));
                }
                slot_states.push(slot);
            }
            let filled = slot_states.iter().filter(|s| **s == state::FILLED).count() as u64;
            if previous == state::NEW && state == state::STARTED && filled != ask.slots {
                return Err(format!("started with {filled} of {} slots filled", ask.slots));
            }
            if state == state::STARTED && ask.slots - filled > ask.maxSlotLoss {
                return Err(format!(
                    "started with {filled} of {} slots filled, max loss {}",
                    ask.slots, ask.maxSlotLoss
                ));
            }
            let expiry = self.h.view(DEPLOYER, M::requestExpiryCall { requestId: id }).unwrap();
            if state == state::CANCELLED && now <= expiry {
                return Err(format!("cancelled at {now}, before its expiry {expiry}"));
            }
            let end = self.h.view(DEPLOYER, M::requestEndCall { requestId: id }).unwrap();
            if state == state::FAILED && end > now {
                return Err(format!("failed, but ends at {end} after now {now}"));
            }
            if previous != state {
                match state {
                    state::FAILED => self.count("failed"),
                    state::CANCELLED => self.count("cancelled"),
                    state::FINISHED => self.count("finished"),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Supply equals the sum of balances; the marketplace holds exactly what it owes.
    fn check_tokens(&mut self) -> Result<(), String> {
        let mut holders: Vec<Address> =
            [&CLIENTS[..], &HOSTS[..], &VALIDATORS[..]].concat().into_iter().map(account).collect();
        holders.push(self.h.market);
        holders.push(DEPLOYER);
        let sum: U256 = holders.iter().map(|a| self.h.balance(*a)).sum();
        let supply = self.h.total_supply();
        if sum != supply {
            return Err(format!("total supply {supply}, balances sum to {sum}"));
        }
        let mut owed = U256::ZERO;
        for r in 0..self.requests.len() {
            let funds =
                self.h.view(DEPLOYER, M::requestFundsCall { requestId: self.requests[r].id }).unwrap();
            owed += funds.clientFunds + funds.forfeited;
            for s in 0..self.requests[r].slots.len() {
                let sid = self.requests[r].slots[s];
                owed += self.h.view(DEPLOYER, M::slotPaymentCall { slotId: sid }).unwrap();
                owed += self.h.view(DEPLOYER, M::currentCollateralCall { slotId: sid }).unwrap();
            }
        }
        let held = self.h.balance(self.h.market);
        if held != owed {
            return Err(format!("the marketplace holds {held} and owes {owed}"));
        }
        Ok(())
    }
}

/// New → Started | Cancelled; Started → Finished | Failed; the rest are final.
fn request_transition_allowed(from: u8, to: u8) -> bool {
    use state::*;
    from == to
        || matches!((from, to), (NEW, STARTED) | (NEW, CANCELLED) | (STARTED, FINISHED) | (STARTED, FAILED))
}

/// The slot states a slot may move between, one step at a time.
fn slot_transition_allowed(from: u8, to: u8) -> bool {
    use state::*;
    from == to
        || matches!(
            (from, to),
            (FREE, FILLED)
                | (FILLED, REPAIR)
                | (FILLED, SLOT_FINISHED)
                | (FILLED, SLOT_CANCELLED)
                | (FILLED, SLOT_FAILED)
                | (REPAIR, FILLED)
                | (REPAIR, SLOT_FINISHED)
                | (REPAIR, SLOT_CANCELLED)
                | (REPAIR, SLOT_FAILED)
                | (SLOT_FINISHED, PAID)
                | (SLOT_CANCELLED, PAID)
                | (SLOT_FAILED, PAID)
        )
}
