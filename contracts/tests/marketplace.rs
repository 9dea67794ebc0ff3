//! The marketplace contract, function by function: what each does, every revert it can
//! give, and every state transition, on the committed bytecode in revm.

mod harness;

use alloy_primitives::{Address, B256, Bytes, Log, U256};
use alloy_sol_types::{SolError, SolEvent};
use harness::*;
use neverust::chain::Revert;
use neverust::chain::contracts::overloads::*;
use neverust::chain::contracts::{Marketplace as M, TestToken};

const CLIENT: u8 = 1;
const HOSTS: [u8; 4] = [10, 11, 12, 13];
const VALIDATOR: u8 = 20;
const STRANGER: u8 = 30;

fn client() -> Address {
    account(CLIENT)
}

fn host(i: usize) -> Address {
    account(HOSTS[i])
}

fn events<E: SolEvent>(logs: &[Log]) -> Vec<E> {
    logs.iter().filter_map(|log| E::decode_log_data(&log.data).ok()).collect()
}

#[track_caller]
fn assert_reverts<T: std::fmt::Debug, E: SolError>(result: Result<T, Revert>, expected: E) {
    match result {
        Err(revert) if revert.is(expected) => {}
        Err(revert) => panic!("expected {}, got {revert}", E::SIGNATURE),
        Ok(value) => panic!("expected {}, got success: {value:?}", E::SIGNATURE),
    }
}

/// A deployed marketplace with a submitted request (not filled).
fn with_request() -> (Harness, Request, B256) {
    let mut h = Harness::new(config());
    let request = h.request(client(), ask());
    let id = h.submit(&request).unwrap();
    (h, request, id)
}

/// A deployed marketplace with a started request: all three slots filled by hosts 0..3.
fn started() -> (Harness, Request, B256) {
    let (h, request, id, _) = started_at();
    (h, request, id)
}

/// As `started`, with the time each slot was filled.
fn started_at() -> (Harness, Request, B256, Vec<u64>) {
    let (mut h, request, id) = with_request();
    let mut filled_at = Vec::new();
    for slot in 0..3 {
        h.fill(host(slot as usize), &request, slot).unwrap();
        filled_at.push(h.now());
    }
    assert_eq!(h.request_state(id), state::STARTED);
    (h, request, id, filled_at)
}

// --- Deployment ---------------------------------------------------------------------------

#[test]
fn deployment_refuses_invalid_configurations() {
    let check = |change: fn(&mut MarketplaceConfig), expected: &str| {
        let mut config = config();
        change(&mut config);
        match Harness::try_new(config) {
            Err(revert) => assert_eq!(revert.name(), expected),
            Ok(_) => panic!("deployed with an invalid configuration, expected {expected}"),
        }
    };
    check(|c| c.collateral.repairRewardPercentage = 101, "Marketplace_RepairRewardPercentageTooHigh");
    check(|c| c.collateral.slashPercentage = 101, "Marketplace_SlashPercentageTooHigh");
    check(|c| c.collateral.maxNumberOfSlashes = 6, "Marketplace_MaximumSlashingTooHigh");
    check(|c| c.collateral.validatorRewardPercentage = 101, "Marketplace_ValidatorRewardPercentageTooHigh");
    check(|c| c.proofs.period = 0, "Periods_InvalidSecondsPerPeriod");
    check(|c| c.proofs.timeout = 0, "Proofs_InvalidTimeout");
    check(|c| c.proofs.timeout = 61, "Proofs_InvalidTimeout");
}

#[test]
fn deployment_needs_256_blocks_of_history() {
    let mut h = Harness::bare();
    h.chain.mine_many(250, 1);
    let args = M::constructorCall {
        config: config(),
        token_: Address::repeat_byte(1),
        verifier: Address::repeat_byte(2),
    };
    let result = h.create(M::BYTECODE.as_ref(), alloy_sol_types::SolConstructor::abi_encode(&args));
    assert_reverts(result, M::Proofs_InsufficientBlockHeight {});
}

#[test]
fn configuration_and_token_are_readable() {
    let mut h = Harness::new(config());
    let read = h.view(DEPLOYER, M::configurationCall {}).unwrap();
    assert_eq!(read, config());
    let token = h.view(DEPLOYER, M::tokenCall {}).unwrap();
    assert_eq!(token, h.token);
}

// --- Requesting storage ----------------------------------------------------------------

#[test]
fn request_takes_the_price_and_is_readable() {
    let mut h = Harness::new(config());
    let request = h.request(client(), ask());
    let price = max_price(&request.ask);
    assert_eq!(price, U256::from(3 * 3600 * 10 * 1024));
    h.mint(client(), price);
    h.approve(client(), price);
    let logs = h.send(client(), M::requestStorageCall { request: request.clone() }).unwrap();
    let created = h.now();
    let id = request_id(&request);
    let requested = events::<M::StorageRequested>(&logs);
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].requestId, id, "the id is keccak256(abi.encode(request))");
    assert_eq!(requested[0].ask, request.ask);
    assert_eq!(requested[0].expiry, created + request.expiry, "the event carries the absolute expiry");
    assert_eq!(h.balance(client()), U256::ZERO);
    assert_eq!(h.balance(h.market), price);
    assert_eq!(h.view(DEPLOYER, M::getRequestCall { requestId: id }).unwrap(), request);
    assert_eq!(h.view(client(), M::myRequestsCall {}).unwrap(), vec![id]);
    assert_eq!(h.view(account(STRANGER), M::myRequestsCall {}).unwrap(), Vec::<B256>::new());
    assert_eq!(h.request_state(id), state::NEW);
    assert_eq!(h.view(DEPLOYER, M::requestEndCall { requestId: id }).unwrap(), created + 3600);
    assert_eq!(h.view(DEPLOYER, M::requestExpiryCall { requestId: id }).unwrap(), created + 600);
    let funds = h.view(DEPLOYER, M::requestFundsCall { requestId: id }).unwrap();
    assert_eq!((funds.clientFunds, funds.forfeited), (price, U256::ZERO));
}

#[test]
fn request_validation() {
    let mut h = Harness::new(config());
    let price = U256::from(10).pow(U256::from(30));
    h.mint(client(), price);
    h.approve(client(), price);
    let mut check = |change: fn(&mut Request), expected: &str| {
        let mut request = h.request(client(), ask());
        change(&mut request);
        match h.send(client(), M::requestStorageCall { request }) {
            Err(revert) => assert_eq!(revert.name(), expected),
            Ok(_) => panic!("accepted an invalid request, expected {expected}"),
        }
    };
    check(|r| r.client = Address::repeat_byte(7), "Marketplace_InvalidClientAddress");
    check(|r| r.expiry = 0, "Marketplace_InvalidExpiry");
    check(|r| r.expiry = r.ask.duration, "Marketplace_InvalidExpiry");
    check(|r| r.ask.slots = 0, "Marketplace_InsufficientSlots");
    check(|r| r.ask.maxSlotLoss = r.ask.slots + 1, "Marketplace_InvalidMaxSlotLoss");
    check(|r| r.ask.proofProbability = U256::ZERO, "Marketplace_InsufficientProofProbability");
    check(|r| r.ask.collateralPerByte = U256::ZERO, "Marketplace_InsufficientCollateral");
    check(|r| r.ask.pricePerBytePerSecond = U256::ZERO, "Marketplace_InsufficientReward");
    check(|r| r.ask.slotSize = 0, "Marketplace_InvalidSlotSize");
    check(|r| r.content.cid = Bytes::new(), "Marketplace_InvalidCid");
    check(|r| (r.ask.duration, r.expiry) = (31 * 24 * 3600, 600), "Marketplace_DurationExceedsLimit");
    check(|r| r.ask.pricePerBytePerSecond = U256::MAX / U256::from(2), "Marketplace_AskTooLarge");
    check(|r| r.ask.collateralPerByte = U256::MAX / U256::from(1024), "Marketplace_AskTooLarge");
}

#[test]
fn request_needs_approval_and_is_unique() {
    let mut h = Harness::new(config());
    let request = h.request(client(), ask());
    h.mint(client(), max_price(&request.ask));
    let result = h.send(client(), M::requestStorageCall { request: request.clone() });
    assert_eq!(
        result.unwrap_err().name(),
        "ERC20InsufficientAllowance",
        "the token's error reaches the caller"
    );
    h.approve(client(), max_price(&request.ask));
    h.send(client(), M::requestStorageCall { request: request.clone() }).unwrap();
    h.mint(client(), max_price(&request.ask));
    h.approve(client(), max_price(&request.ask));
    assert_reverts(
        h.send(client(), M::requestStorageCall { request }),
        M::Marketplace_RequestAlreadyExists {},
    );
}

#[test]
fn unknown_requests_are_refused_by_name() {
    let mut h = Harness::new(config());
    let id = B256::repeat_byte(9);
    assert_reverts(h.view(DEPLOYER, M::getRequestCall { requestId: id }), M::Marketplace_UnknownRequest {});
    assert_reverts(h.view(DEPLOYER, M::requestStateCall { requestId: id }), M::Marketplace_UnknownRequest {});
    assert_reverts(
        h.view(DEPLOYER, M::requestExpiryCall { requestId: id }),
        M::Marketplace_UnknownRequest {},
    );
    assert_reverts(h.view(DEPLOYER, M::requestEndCall { requestId: id }), M::Marketplace_UnknownRequest {});
    assert!(!h.view(host(0), M::canReserveSlotCall { requestId: id, slotIndex: 0 }).unwrap());
    assert_reverts(
        h.send(host(0), M::reserveSlotCall { requestId: id, slotIndex: 0 }),
        M::SlotReservations_ReservationNotAllowed {},
    );
    let proof = M::Groth16Proof::default();
    assert_reverts(
        h.send(host(0), M::fillSlotCall { requestId: id, slotIndex: 0, proof }),
        M::Marketplace_UnknownRequest {},
    );
    assert_reverts(h.send(client(), WithdrawFundsCall { requestId: id }), M::Marketplace_UnknownRequest {});
    assert_eq!(h.slot_state(slot_id(id, 0)), state::FREE);
}

// --- Reservations ------------------------------------------------------------------------

#[test]
fn reservations_are_limited_per_slot() {
    let (mut h, request, id) = with_request();
    let reserve = |h: &mut Harness, who: Address, slot| {
        h.send(who, M::reserveSlotCall { requestId: id, slotIndex: slot })
    };
    assert!(h.view(host(0), M::canReserveSlotCall { requestId: id, slotIndex: 0 }).unwrap());
    reserve(&mut h, host(0), 0).unwrap();
    assert!(
        !h.view(host(0), M::canReserveSlotCall { requestId: id, slotIndex: 0 }).unwrap(),
        "once per host"
    );
    assert_reverts(reserve(&mut h, host(0), 0), M::SlotReservations_ReservationNotAllowed {});
    reserve(&mut h, host(1), 0).unwrap();
    let logs = reserve(&mut h, host(2), 0).unwrap();
    let full = events::<M::SlotReservationsFull>(&logs);
    assert_eq!(
        (full[0].requestId, full[0].slotIndex),
        (id, 0),
        "the third of three fills the slot's reservations"
    );
    assert_reverts(reserve(&mut h, host(3), 0), M::SlotReservations_ReservationNotAllowed {});
    reserve(&mut h, host(3), 1).unwrap();
    assert!(!h.view(host(0), M::canReserveSlotCall { requestId: id, slotIndex: 3 }).unwrap(), "no slot 3");
    // A filled slot takes no more reservations.
    let proof = h.proof(&request, 1);
    h.mint(host(3), collateral_per_slot(&request.ask));
    h.approve(host(3), collateral_per_slot(&request.ask));
    h.send(host(3), M::fillSlotCall { requestId: id, slotIndex: 1, proof }).unwrap();
    assert!(!h.view(host(0), M::canReserveSlotCall { requestId: id, slotIndex: 1 }).unwrap());
}

#[test]
fn expired_requests_take_no_reservations() {
    let (mut h, _, id) = with_request();
    h.advance(601);
    assert_eq!(h.request_state(id), state::CANCELLED);
    assert!(!h.view(host(0), M::canReserveSlotCall { requestId: id, slotIndex: 0 }).unwrap());
    assert_reverts(
        h.send(host(0), M::reserveSlotCall { requestId: id, slotIndex: 0 }),
        M::SlotReservations_ReservationNotAllowed {},
    );
}

// --- Filling slots -----------------------------------------------------------------------

#[test]
fn filling_takes_collateral_and_starts_the_request() {
    let (mut h, request, id) = with_request();
    let collateral = collateral_per_slot(&request.ask);
    for slot in 0..3u64 {
        let logs = h.fill(host(slot as usize), &request, slot).unwrap();
        let filled = events::<M::SlotFilled>(&logs);
        assert_eq!((filled[0].requestId, filled[0].slotIndex), (id, slot));
        assert_eq!(events::<M::ProofSubmitted>(&logs).len(), 1, "the fill's proof counts for its period");
        let sid = slot_id(id, slot);
        assert_eq!(h.view(DEPLOYER, M::getHostCall { slotId: sid }).unwrap(), host(slot as usize));
        assert_eq!(h.view(host(slot as usize), M::mySlotsCall {}).unwrap(), vec![sid]);
        assert_eq!(h.view(DEPLOYER, M::currentCollateralCall { slotId: sid }).unwrap(), collateral);
        assert_eq!(h.balance(host(slot as usize)), U256::ZERO, "the whole collateral was taken");
        assert_eq!(h.slot_state(sid), state::FILLED);
        let active = h.view(DEPLOYER, M::getActiveSlotCall { slotId: sid }).unwrap();
        assert_eq!((active.request, active.slotIndex), (request.clone(), slot));
        let started = events::<M::RequestFulfilled>(&logs);
        assert_eq!(started.len(), usize::from(slot == 2), "the request starts with its last slot");
        assert_eq!(h.request_state(id), if slot == 2 { state::STARTED } else { state::NEW });
    }
    let price = max_price(&request.ask);
    assert_eq!(h.balance(h.market), price + collateral * U256::from(3));
}

#[test]
fn filling_checks_slot_reservation_and_proof() {
    let (mut h, request, id) = with_request();
    let proof = h.proof(&request, 0);
    let fill = |h: &mut Harness, who, slot, proof| {
        h.send(who, M::fillSlotCall { requestId: id, slotIndex: slot, proof })
    };
    assert_reverts(fill(&mut h, host(0), 3, proof.clone()), M::Marketplace_InvalidSlot {});
    assert_reverts(fill(&mut h, host(0), 0, proof), M::Marketplace_ReservationRequired {});
    h.send(host(0), M::reserveSlotCall { requestId: id, slotIndex: 0 }).unwrap();
    h.mint(host(0), collateral_per_slot(&request.ask));
    h.approve(host(0), collateral_per_slot(&request.ask));
    let wrong_slot = h.proof(&request, 1);
    assert_reverts(fill(&mut h, host(0), 0, wrong_slot), M::Proofs_InvalidProof {});
    let garbage = M::Groth16Proof::default();
    assert_reverts(fill(&mut h, host(0), 0, garbage), M::Proofs_InvalidProof {});
    h.send(host(1), M::reserveSlotCall { requestId: id, slotIndex: 0 }).unwrap();
    h.approve(host(0), U256::ZERO);
    let proof = h.proof(&request, 0);
    assert_eq!(fill(&mut h, host(0), 0, proof).unwrap_err().name(), "ERC20InsufficientAllowance");
    h.approve(host(0), collateral_per_slot(&request.ask));
    let proof = h.proof(&request, 0);
    fill(&mut h, host(0), 0, proof).unwrap();
    let proof = h.proof(&request, 0);
    assert_reverts(fill(&mut h, host(1), 0, proof), M::Marketplace_SlotNotFree {});
}

#[test]
fn an_expired_request_cannot_be_filled() {
    let (mut h, request, id) = with_request();
    h.send(host(0), M::reserveSlotCall { requestId: id, slotIndex: 0 }).unwrap();
    h.mint(host(0), collateral_per_slot(&request.ask));
    h.approve(host(0), collateral_per_slot(&request.ask));
    h.advance(600);
    let proof = h.proof(&request, 0);
    assert_reverts(
        h.send(host(0), M::fillSlotCall { requestId: id, slotIndex: 0, proof }),
        M::Marketplace_SlotNotFree {},
    );
}

// --- Proofs ------------------------------------------------------------------------------

#[test]
fn proofs_are_required_after_the_filling_period() {
    let (mut h, request, id) = started();
    let sid = slot_id(id, 0);
    assert_eq!(
        h.view(DEPLOYER, M::slotProbabilityCall { id: sid }).unwrap(),
        U256::from(1),
        "every challenge"
    );
    h.next_period();
    assert!(h.view(DEPLOYER, M::isProofRequiredCall { id: sid }).unwrap());
    assert!(!h.view(DEPLOYER, M::willProofBeRequiredCall { id: sid }).unwrap(), "no downtime");
    let logs = h.submit_proof(host(0), &request, 0).unwrap();
    assert_eq!(events::<M::ProofSubmitted>(&logs)[0].id, sid);
    assert_reverts(h.submit_proof(host(0), &request, 0), M::Proofs_ProofAlreadySubmitted {});
    h.next_period();
    assert_reverts(h.submit_proof(host(1), &request, 0), M::Marketplace_ProofNotSubmittedByHost {});
    let wrong = h.proof(&request, 1);
    assert_reverts(
        h.send(host(0), M::submitProofCall { slotId: sid, proof: wrong }),
        M::Proofs_InvalidProof {},
    );
    assert_reverts(h.submit_proof(host(0), &request, 2), M::Marketplace_ProofNotSubmittedByHost {});
    let free = slot_id(id, 7);
    let proof = h.proof(&request, 0);
    assert_reverts(
        h.send(host(0), M::submitProofCall { slotId: free, proof }),
        M::Marketplace_SlotNotAcceptingProofs {},
    );
}

#[test]
fn challenge_follows_the_pointer() {
    let (mut h, _, id) = started();
    let sid = slot_id(id, 0);
    let pointer = h.view(DEPLOYER, M::getPointerCall { id: sid }).unwrap();
    let head = h.chain.head().clone();
    let expected_pointer = (head.number % 256 + (h.period() * 67) % 256 + u64::from(sid[31])) % 256;
    assert_eq!(u64::from(pointer), expected_pointer);
    let referenced = h.chain.block(head.number - 1 - u64::from(pointer)).unwrap().hash;
    let challenge = h.view(DEPLOYER, M::getChallengeCall { id: sid }).unwrap();
    assert_eq!(challenge, alloy_primitives::keccak256(referenced), "keccak256(abi.encode(blockhash(...)))");
    // The next block points at the same block hash unless the pointer wraps.
    h.advance(1);
    if pointer < 255 && h.period() == head.timestamp / 60 {
        assert_eq!(h.view(DEPLOYER, M::getChallengeCall { id: sid }).unwrap(), challenge);
    }
}

#[test]
fn downtime_postpones_proofs() {
    let mut config = config();
    config.proofs.downtime = 255;
    let mut h = Harness::new(config);
    let request = h.request(client(), ask());
    let id = h.submit(&request).unwrap();
    for slot in 0..3 {
        h.fill(host(slot as usize), &request, slot).unwrap();
    }
    h.next_period();
    let sid = slot_id(id, 0);
    // With 255 of 256 pointer values in downtime, blocks in a row go by mostly without a
    // required proof, and a proof that is not yet required will be.
    let mut required = 0;
    let mut will = 0;
    for _ in 0..20 {
        required += usize::from(h.view(DEPLOYER, M::isProofRequiredCall { id: sid }).unwrap());
        will += usize::from(h.view(DEPLOYER, M::willProofBeRequiredCall { id: sid }).unwrap());
        h.advance(1);
    }
    assert!(will >= 19, "{will}");
    assert!(required <= 1, "{required}");
}

#[test]
fn missing_proofs_are_marked_and_slashed() {
    let (mut h, request, id) = started();
    let sid = slot_id(id, 0);
    let collateral = collateral_per_slot(&request.ask);
    h.next_period();
    let missed = h.period();
    let mark = |h: &mut Harness, period| {
        h.send(account(VALIDATOR), M::markProofAsMissingCall { slotId: sid, period })
    };
    let can = |h: &mut Harness, period| {
        h.view(account(VALIDATOR), M::canMarkProofAsMissingCall { slotId: sid, period }).map(|_| ())
    };
    assert_reverts(mark(&mut h, missed), M::Proofs_PeriodNotEnded {});
    assert_reverts(can(&mut h, missed), M::Proofs_PeriodNotEnded {});
    h.next_period();
    assert_reverts(mark(&mut h, missed - 1), M::Proofs_ValidationTimedOut {});
    can(&mut h, missed).unwrap();
    let logs = mark(&mut h, missed).unwrap();
    assert!(
        logs.iter().any(|l| TestToken::Transfer::decode_log_data(&l.data).is_ok()),
        "the validator is paid"
    );
    let slashed = collateral * U256::from(20) / U256::from(100);
    let reward = slashed * U256::from(20) / U256::from(100);
    assert_eq!(h.balance(account(VALIDATOR)), reward);
    assert_eq!(h.view(DEPLOYER, M::currentCollateralCall { slotId: sid }).unwrap(), collateral - slashed);
    assert_eq!(h.view(DEPLOYER, M::missingProofsCall { slotId: sid }).unwrap(), U256::from(1));
    let funds = h.view(DEPLOYER, M::requestFundsCall { requestId: id }).unwrap();
    assert_eq!(funds.forfeited, slashed - reward);
    assert_reverts(mark(&mut h, missed), M::Proofs_ProofAlreadyMarkedMissing {});
    // The host proves in this period: nothing to mark.
    h.submit_proof(host(0), &request, 0).unwrap();
    let proved = h.period();
    h.next_period();
    assert_reverts(mark(&mut h, proved), M::Proofs_ProofNotMissing {});
    h.advance(31);
    assert_reverts(mark(&mut h, proved), M::Proofs_ValidationTimedOut {});
    // Free slots, and slots of ended requests, take no marks.
    assert_reverts(
        h.send(account(VALIDATOR), M::markProofAsMissingCall { slotId: slot_id(id, 5), period: proved }),
        M::Marketplace_SlotNotAcceptingProofs {},
    );
}

#[test]
fn a_proof_in_the_filling_period_is_not_required() {
    let (mut h, _, id) = started();
    let sid = slot_id(id, 2);
    let filled = h.period();
    h.next_period();
    let result = h.send(account(VALIDATOR), M::markProofAsMissingCall { slotId: sid, period: filled });
    // The fill's proof counts for the period it was filled in.
    assert_eq!(result.unwrap_err().name(), "Proofs_ProofNotMissing");
    let before = h.period() - 1;
    let r = h
        .view(account(VALIDATOR), M::canMarkProofAsMissingCall { slotId: sid, period: before - 5 })
        .map(|_| ());
    assert_reverts(r, M::Proofs_ValidationTimedOut {});
}

/// Marks the host of `slot` missing in `count` consecutive periods.
fn miss(h: &mut Harness, id: B256, slot: u64, count: u32) -> Vec<Log> {
    let mut logs = Vec::new();
    for _ in 0..count {
        h.next_period();
        let period = h.period();
        h.next_period();
        logs.extend(
            h.send(account(VALIDATOR), M::markProofAsMissingCall { slotId: slot_id(id, slot), period })
                .unwrap(),
        );
    }
    logs
}

#[test]
fn repeated_misses_free_the_slot_for_repair() {
    let (mut h, request, id) = started();
    let sid = slot_id(id, 0);
    let logs = miss(&mut h, id, 0, 2);
    let freed = events::<M::SlotFreed>(&logs);
    assert_eq!((freed[0].requestId, freed[0].slotIndex), (id, 0));
    assert_eq!(h.slot_state(sid), state::REPAIR);
    assert_eq!(h.view(DEPLOYER, M::getHostCall { slotId: sid }).unwrap(), Address::ZERO);
    assert_eq!(h.view(host(0), M::mySlotsCall {}).unwrap(), Vec::<B256>::new());
    assert_eq!(
        h.view(DEPLOYER, M::missingProofsCall { slotId: sid }).unwrap(),
        U256::ZERO,
        "reset for the next host"
    );
    assert_eq!(h.view(DEPLOYER, M::currentCollateralCall { slotId: sid }).unwrap(), U256::ZERO);
    assert_eq!(h.request_state(id), state::STARTED, "one slot lost of maxSlotLoss 1");
    assert_reverts(h.send(host(0), FreeSlotCall { slotId: sid }), M::Marketplace_InvalidSlotHost {});
    // The whole collateral is now forfeited: slashes net of rewards, and what was left.
    let collateral = collateral_per_slot(&request.ask);
    let rewards = collateral * U256::from(2 * 20 * 20) / U256::from(100 * 100);
    let funds = h.view(DEPLOYER, M::requestFundsCall { requestId: id }).unwrap();
    assert_eq!(funds.forfeited, collateral - rewards);
    // A repairing host puts up the collateral less the repair reward.
    h.mint(host(3), collateral);
    h.approve(host(3), collateral);
    assert!(h.view(host(3), M::canReserveSlotCall { requestId: id, slotIndex: 0 }).unwrap());
    h.send(host(3), M::reserveSlotCall { requestId: id, slotIndex: 0 }).unwrap();
    let proof = h.proof(&request, 0);
    h.send(host(3), M::fillSlotCall { requestId: id, slotIndex: 0, proof }).unwrap();
    let reward = collateral / U256::from(10);
    assert_eq!(h.balance(host(3)), reward, "the repair reward stays with the host");
    assert_eq!(
        h.view(DEPLOYER, M::currentCollateralCall { slotId: sid }).unwrap(),
        collateral,
        "full collateral at stake"
    );
    let after = h.view(DEPLOYER, M::requestFundsCall { requestId: id }).unwrap();
    assert_eq!(after.forfeited, funds.forfeited - reward);
    assert_eq!(h.slot_state(sid), state::FILLED);
}

#[test]
fn losing_more_than_max_slot_loss_fails_the_request() {
    let (mut h, request, id, filled_at) = started_at();
    miss(&mut h, id, 0, 2);
    let pps = price_per_slot_per_second(&request.ask);
    let logs = miss(&mut h, id, 1, 2);
    let failed_at = h.now();
    assert_eq!(events::<M::RequestFailed>(&logs).len(), 1);
    assert_eq!(h.request_state(id), state::FAILED);
    assert_eq!(h.view(DEPLOYER, M::requestEndCall { requestId: id }).unwrap(), failed_at);
    let sid = slot_id(id, 2);
    assert_eq!(h.slot_state(sid), state::SLOT_FAILED);
    // The remaining host is paid for the time it served, and gets its collateral back.
    let expected = pps * U256::from(failed_at - filled_at[2]);
    assert_eq!(h.view(DEPLOYER, M::slotPaymentCall { slotId: sid }).unwrap(), expected);
    h.send(host(2), FreeSlotCall { slotId: sid }).unwrap();
    assert_eq!(h.balance(host(2)), expected + collateral_per_slot(&request.ask));
    assert_eq!(h.slot_state(sid), state::PAID);
    assert_reverts(h.send(host(2), FreeSlotCall { slotId: sid }), M::Marketplace_AlreadyPaid {});
    // The client gets everything else back.
    let funds = h.view(DEPLOYER, M::requestFundsCall { requestId: id }).unwrap();
    h.send(client(), WithdrawFundsCall { requestId: id }).unwrap();
    assert_eq!(h.balance(client()), funds.clientFunds + funds.forfeited);
    assert_eq!(h.balance(h.market), U256::ZERO, "nothing left behind");
}

// --- Freeing slots and payouts -------------------------------------------------------------

#[test]
fn a_finished_request_pays_hosts_and_returns_the_rest() {
    let (mut h, request, id) = started();
    let pps = price_per_slot_per_second(&request.ask);
    let collateral = collateral_per_slot(&request.ask);
    let end = h.view(DEPLOYER, M::requestEndCall { requestId: id }).unwrap();
    let expected: Vec<U256> =
        (0..3).map(|s| h.view(DEPLOYER, M::slotPaymentCall { slotId: slot_id(id, s) }).unwrap()).collect();
    assert_reverts(h.send(client(), WithdrawFundsCall { requestId: id }), M::Marketplace_InvalidState {});
    h.chain.mine(end + 1);
    assert_eq!(h.request_state(id), state::FINISHED);
    assert_eq!(h.slot_state(slot_id(id, 0)), state::SLOT_FINISHED);
    assert_reverts(
        h.send(host(1), FreeSlotCall { slotId: slot_id(id, 0) }),
        M::Marketplace_InvalidSlotHost {},
    );
    assert_reverts(h.send(host(0), FreeSlotCall { slotId: slot_id(id, 9) }), M::Marketplace_SlotIsFree {});
    h.send(host(0), FreeSlotCall { slotId: slot_id(id, 0) }).unwrap();
    assert_eq!(h.balance(host(0)), expected[0] + collateral);
    // The payout can go to other addresses.
    let (reward_to, collateral_to) = (account(31), account(32));
    let sid = slot_id(id, 1);
    h.send(
        host(1),
        FreeSlotToCall { slotId: sid, rewardRecipient: reward_to, collateralRecipient: collateral_to },
    )
    .unwrap();
    assert_eq!((h.balance(reward_to), h.balance(collateral_to)), (expected[1], collateral));
    assert_eq!(h.slot_state(sid), state::PAID);
    assert_eq!(h.view(host(1), M::mySlotsCall {}).unwrap(), Vec::<B256>::new());
    // The client gets back the time before each slot was filled.
    let price = max_price(&request.ask);
    let paid: U256 = expected.iter().copied().sum();
    let to = account(33);
    h.send(client(), WithdrawFundsToCall { requestId: id, withdrawRecipient: to }).unwrap();
    assert_eq!(h.balance(to), price - paid);
    assert_eq!(h.view(client(), M::myRequestsCall {}).unwrap(), Vec::<B256>::new());
    assert_reverts(
        h.send(client(), WithdrawFundsCall { requestId: id }),
        M::Marketplace_NothingToWithdraw {},
    );
    assert_reverts(
        h.send(account(STRANGER), WithdrawFundsCall { requestId: id }),
        M::Marketplace_InvalidClientAddress {},
    );
    h.send(host(2), FreeSlotCall { slotId: slot_id(id, 2) }).unwrap();
    assert_eq!(h.balance(h.market), U256::ZERO);
    assert_eq!(pps * U256::from(3600) * U256::from(3), price);
}

#[test]
fn a_cancelled_request_pays_until_expiry() {
    let (mut h, request, id) = with_request();
    h.fill(host(0), &request, 0).unwrap();
    let filled_at = h.now();
    let expiry = h.view(DEPLOYER, M::requestExpiryCall { requestId: id }).unwrap();
    assert_reverts(h.send(client(), WithdrawFundsCall { requestId: id }), M::Marketplace_InvalidState {});
    h.chain.mine(expiry + 1);
    assert_eq!(h.request_state(id), state::CANCELLED);
    assert_eq!(h.view(DEPLOYER, M::requestEndCall { requestId: id }).unwrap(), expiry);
    let sid = slot_id(id, 0);
    assert_eq!(h.slot_state(sid), state::SLOT_CANCELLED);
    let pps = price_per_slot_per_second(&request.ask);
    let payment = pps * U256::from(expiry - filled_at);
    assert_eq!(h.view(DEPLOYER, M::slotPaymentCall { slotId: sid }).unwrap(), payment);
    let logs = h.send(client(), WithdrawFundsCall { requestId: id }).unwrap();
    assert_eq!(events::<M::RequestCancelled>(&logs).len(), 1, "cancelled when first touched after expiry");
    assert_eq!(h.balance(client()), max_price(&request.ask) - payment);
    let logs = h.send(host(0), FreeSlotCall { slotId: sid }).unwrap();
    assert!(events::<M::RequestCancelled>(&logs).is_empty(), "settled once");
    assert_eq!(h.balance(host(0)), payment + collateral_per_slot(&request.ask));
    assert_eq!(h.balance(h.market), U256::ZERO);
}

#[test]
fn freeing_a_filled_slot_forfeits_it() {
    let (mut h, request, id) = started();
    let sid = slot_id(id, 1);
    let before = h.view(DEPLOYER, M::requestFundsCall { requestId: id }).unwrap();
    let payment = h.view(DEPLOYER, M::slotPaymentCall { slotId: sid }).unwrap();
    let logs = h.send(host(1), FreeSlotCall { slotId: sid }).unwrap();
    assert_eq!(events::<M::SlotFreed>(&logs)[0].slotIndex, 1);
    assert_eq!(h.slot_state(sid), state::REPAIR);
    assert_eq!(h.balance(host(1)), U256::ZERO);
    let after = h.view(DEPLOYER, M::requestFundsCall { requestId: id }).unwrap();
    assert_eq!(after.clientFunds, before.clientFunds + payment, "the host's payment goes back to the client");
    assert_eq!(after.forfeited, before.forfeited + collateral_per_slot(&request.ask));
}

#[test]
fn collateral_can_be_topped_up_after_a_slash() {
    let (mut h, request, id) = started();
    let sid = slot_id(id, 0);
    let collateral = collateral_per_slot(&request.ask);
    assert_reverts(h.send(host(0), M::topUpCollateralCall { slotId: sid }), M::Marketplace_NothingToTopUp {});
    miss(&mut h, id, 0, 1);
    let slashed = collateral / U256::from(5);
    assert_reverts(
        h.send(host(1), M::topUpCollateralCall { slotId: sid }),
        M::Marketplace_InvalidSlotHost {},
    );
    h.mint(host(0), slashed);
    h.approve(host(0), slashed);
    let logs = h.send(host(0), M::topUpCollateralCall { slotId: sid }).unwrap();
    let topped = events::<M::CollateralToppedUp>(&logs);
    assert_eq!((topped[0].slotId, topped[0].amount), (sid, slashed));
    assert_eq!(h.view(DEPLOYER, M::currentCollateralCall { slotId: sid }).unwrap(), collateral);
    assert_eq!(
        h.view(DEPLOYER, M::missingProofsCall { slotId: sid }).unwrap(),
        U256::from(1),
        "misses still count"
    );
    assert_reverts(
        h.send(host(0), M::topUpCollateralCall { slotId: slot_id(id, 8) }),
        M::Marketplace_InvalidState {},
    );
}

#[test]
fn views_of_free_slots() {
    let (mut h, _, id) = with_request();
    let sid = slot_id(id, 0);
    assert_reverts(h.view(DEPLOYER, M::getActiveSlotCall { slotId: sid }), M::Marketplace_SlotIsFree {});
    assert_eq!(h.view(DEPLOYER, M::getHostCall { slotId: sid }).unwrap(), Address::ZERO);
    assert_eq!(h.view(DEPLOYER, M::slotPaymentCall { slotId: sid }).unwrap(), U256::ZERO);
    assert!(!h.view(DEPLOYER, M::isProofRequiredCall { id: sid }).unwrap());
    assert!(!h.view(DEPLOYER, M::willProofBeRequiredCall { id: sid }).unwrap());
    assert_reverts(h.send(host(0), FreeSlotCall { slotId: sid }), M::Marketplace_SlotIsFree {});
}
