// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import "@openzeppelin/contracts/utils/math/Math.sol";
import "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";
import "./src/Configuration.sol";
import "./src/Requests.sol";
import "./src/Proofs.sol";
import "./src/SlotReservations.sol";
import "./src/Groth16.sol";

/// The storage marketplace: clients pay for storage requests, hosts fill their slots with
/// collateral and prove them each period the chain asks, validators mark missed proofs, and
/// slots freed after repeated misses are repaired by other hosts for a reward.
///
/// Money. A request's price (every slot for the whole duration) is paid up front. When a
/// host fills a slot, the payment for the rest of the request is set aside for it; the rest
/// of the price stays with the client (`requestFunds`). Collateral slashed for missed proofs
/// goes partly to the validator, the rest and the collateral of a host whose slot is freed
/// go to the request's forfeited funds, which pay repair rewards and then go back to the
/// client. At every moment the marketplace holds exactly what it owes: the requests' funds,
/// the payments set aside for hosts and the hosts' collateral.
///
/// State. A request's state follows from time where it can (New past its expiry reads as
/// Cancelled, Started past its end as Finished) and is settled by the first transaction
/// that touches it afterwards.
contract Marketplace is SlotReservations, Proofs {
  using SafeERC20 for IERC20;
  using EnumerableSet for EnumerableSet.Bytes32Set;
  using Requests for Request;
  using Requests for Ask;

  error Marketplace_RepairRewardPercentageTooHigh();
  error Marketplace_SlashPercentageTooHigh();
  error Marketplace_MaximumSlashingTooHigh();
  error Marketplace_ValidatorRewardPercentageTooHigh();
  error Marketplace_InvalidExpiry();
  error Marketplace_InvalidMaxSlotLoss();
  error Marketplace_InsufficientSlots();
  error Marketplace_InvalidClientAddress();
  error Marketplace_RequestAlreadyExists();
  error Marketplace_InvalidSlot();
  error Marketplace_InvalidSlotSize();
  error Marketplace_AskTooLarge();
  error Marketplace_SlotNotFree();
  error Marketplace_InvalidSlotHost();
  error Marketplace_AlreadyPaid();
  error Marketplace_UnknownRequest();
  error Marketplace_InvalidState();
  error Marketplace_SlotNotAcceptingProofs();
  error Marketplace_ProofNotSubmittedByHost();
  error Marketplace_SlotIsFree();
  error Marketplace_ReservationRequired();
  error Marketplace_NothingToWithdraw();
  error Marketplace_NothingToTopUp();
  error Marketplace_InsufficientDuration();
  error Marketplace_InsufficientProofProbability();
  error Marketplace_InsufficientCollateral();
  error Marketplace_InsufficientReward();
  error Marketplace_InvalidCid();
  error Marketplace_DurationExceedsLimit();

  event StorageRequested(RequestId requestId, Ask ask, uint64 expiry);
  event RequestFulfilled(RequestId indexed requestId);
  event RequestFailed(RequestId indexed requestId);
  event RequestCancelled(RequestId indexed requestId);
  event SlotFilled(RequestId indexed requestId, uint64 slotIndex);
  event SlotFreed(RequestId indexed requestId, uint64 slotIndex);
  event CollateralToppedUp(SlotId indexed slotId, uint256 amount);

  struct RequestContext {
    /// Stored state; `requestState` reads what time has made of it.
    RequestState state;
    uint64 slotsFilled;
    uint64 expiresAt;
    /// The request's end; the moment it failed, for a failed request.
    uint64 endsAt;
    /// The part of the price not set aside for any host: the client's at the end.
    uint256 clientFunds;
    /// Collateral hosts lost (net of validator rewards): pays repair rewards, then the client.
    uint256 forfeited;
  }

  struct Slot {
    RequestId requestId;
    address host;
    /// Stored state: Free, Filled, Repair or Paid; `slotState` adds what the request's
    /// state makes of it.
    SlotState state;
    uint64 slotIndex;
    uint64 filledAt;
    uint256 currentCollateral;
  }

  /// A filled slot and its request, as `getActiveSlot` answers.
  struct ActiveSlot {
    Request request;
    uint64 slotIndex;
  }

  IERC20 private immutable _token;
  MarketplaceConfig private _config;

  mapping(RequestId => Request) private _requests;
  mapping(RequestId => RequestContext) private _contexts;
  mapping(SlotId => Slot) private _slots;
  mapping(address => EnumerableSet.Bytes32Set) private _requestsPerClient;
  mapping(address => EnumerableSet.Bytes32Set) private _slotsPerHost;

  constructor(
    MarketplaceConfig memory config,
    IERC20 token_,
    IGroth16Verifier verifier
  ) SlotReservations(config.reservations.maxReservations) Proofs(config.proofs, verifier) {
    CollateralConfig memory collateral = config.collateral;
    if (collateral.repairRewardPercentage > 100) revert Marketplace_RepairRewardPercentageTooHigh();
    if (collateral.slashPercentage > 100) revert Marketplace_SlashPercentageTooHigh();
    if (uint256(collateral.maxNumberOfSlashes) * collateral.slashPercentage > 100) {
      revert Marketplace_MaximumSlashingTooHigh();
    }
    if (collateral.validatorRewardPercentage > 100) {
      revert Marketplace_ValidatorRewardPercentageTooHigh();
    }
    _token = token_;
    _config = config;
  }

  function configuration() public view returns (MarketplaceConfig memory) {
    return _config;
  }

  function token() public view returns (IERC20) {
    return _token;
  }

  // --- Clients ---------------------------------------------------------------------------

  /// Creates a request and takes its price (every slot for the whole duration) from the
  /// client, who must have approved it.
  function requestStorage(Request calldata request) public {
    if (request.client != msg.sender) revert Marketplace_InvalidClientAddress();
    RequestId id = request.id();
    if (_requests[id].client != address(0)) revert Marketplace_RequestAlreadyExists();
    Ask calldata ask = request.ask;
    if (request.expiry == 0 || request.expiry >= ask.duration) revert Marketplace_InvalidExpiry();
    if (ask.slots == 0) revert Marketplace_InsufficientSlots();
    if (ask.maxSlotLoss > ask.slots) revert Marketplace_InvalidMaxSlotLoss();
    if (ask.duration == 0) revert Marketplace_InsufficientDuration();
    if (ask.proofProbability == 0) revert Marketplace_InsufficientProofProbability();
    if (ask.collateralPerByte == 0) revert Marketplace_InsufficientCollateral();
    if (ask.pricePerBytePerSecond == 0) revert Marketplace_InsufficientReward();
    if (ask.slotSize == 0) revert Marketplace_InvalidSlotSize();
    if (request.content.cid.length == 0) revert Marketplace_InvalidCid();
    if (ask.duration > _config.requestDurationLimit) revert Marketplace_DurationExceedsLimit();
    uint256 price = _checkedPrice(ask);

    _requests[id] = request;
    RequestContext storage context = _contexts[id];
    context.expiresAt = uint64(block.timestamp) + request.expiry;
    context.endsAt = uint64(block.timestamp) + ask.duration;
    context.clientFunds = price;
    _requestsPerClient[msg.sender].add(RequestId.unwrap(id));

    emit StorageRequested(id, ask, context.expiresAt);
    _token.safeTransferFrom(msg.sender, address(this), price);
  }

  /// Pays the client what is left once the request has ended (cancelled, finished or
  /// failed): the price not paid to hosts, and any collateral hosts forfeited.
  function withdrawFunds(RequestId requestId) public {
    withdrawFunds(requestId, msg.sender);
  }

  function withdrawFunds(RequestId requestId, address withdrawRecipient) public {
    Request storage request = _requests[requestId];
    if (request.client == address(0)) revert Marketplace_UnknownRequest();
    if (request.client != msg.sender) revert Marketplace_InvalidClientAddress();
    _settle(requestId);
    RequestContext storage context = _contexts[requestId];
    RequestState state = context.state;
    if (state != RequestState.Cancelled && state != RequestState.Finished && state != RequestState.Failed) {
      revert Marketplace_InvalidState();
    }
    uint256 amount = context.clientFunds + context.forfeited;
    if (amount == 0) revert Marketplace_NothingToWithdraw();
    context.clientFunds = 0;
    context.forfeited = 0;
    _requestsPerClient[msg.sender].remove(RequestId.unwrap(requestId));
    _token.safeTransfer(withdrawRecipient, amount);
  }

  // --- Hosts -----------------------------------------------------------------------------

  /// Fills a slot the caller reserved, proving it holds the slot's data with a proof of the
  /// current period's challenge. Takes the collateral (less the repair reward when the slot
  /// is in repair); the request starts when its last slot is filled.
  function fillSlot(RequestId requestId, uint64 slotIndex, Groth16Proof calldata proof) public {
    Request storage request = _requests[requestId];
    if (request.client == address(0)) revert Marketplace_UnknownRequest();
    if (slotIndex >= request.ask.slots) revert Marketplace_InvalidSlot();
    SlotId slotId = Requests.slotId(requestId, slotIndex);
    if (!_hasReservation(slotId, msg.sender)) revert Marketplace_ReservationRequired();
    if (!_slotOpen(requestId, slotIndex)) revert Marketplace_SlotNotFree();

    Slot storage slot = _slots[slotId];
    bool repair = slot.state == SlotState.Repair;
    slot.requestId = requestId;
    slot.slotIndex = slotIndex;
    _startRequiringProofs(slotId, request.ask.proofProbability);
    _acceptProof(slotId, _blockPeriod(), proof, _publicSignals(slotId, request, slotIndex));

    RequestContext storage context = _contexts[requestId];
    uint256 collateral = request.ask.collateralPerSlot();
    uint256 due = collateral;
    if (repair) {
      uint256 reward = Math.min(
        (collateral * _config.collateral.repairRewardPercentage) / 100,
        context.forfeited
      );
      context.forfeited -= reward;
      due -= reward;
    }
    slot.host = msg.sender;
    slot.state = SlotState.Filled;
    slot.filledAt = uint64(block.timestamp);
    slot.currentCollateral = collateral;
    context.clientFunds -= (context.endsAt - block.timestamp) * request.ask.pricePerSlotPerSecond();
    context.slotsFilled += 1;
    _slotsPerHost[msg.sender].add(SlotId.unwrap(slotId));

    emit SlotFilled(requestId, slotIndex);
    if (context.slotsFilled == request.ask.slots && context.state == RequestState.New) {
      context.state = RequestState.Started;
      emit RequestFulfilled(requestId);
    }
    _token.safeTransferFrom(msg.sender, address(this), due);
  }

  /// The host's proof of the current period's challenge.
  function submitProof(SlotId slotId, Groth16Proof calldata proof) public {
    if (slotState(slotId) != SlotState.Filled) revert Marketplace_SlotNotAcceptingProofs();
    Slot storage slot = _slots[slotId];
    if (slot.host != msg.sender) revert Marketplace_ProofNotSubmittedByHost();
    Request storage request = _requests[slot.requestId];
    _proofReceived(slotId, proof, _publicSignals(slotId, request, slot.slotIndex));
  }

  /// Restores the slot's collateral to the full amount after slashes, so that the host
  /// stands to lose as much as when it filled the slot (Archivist offers no way to).
  function topUpCollateral(SlotId slotId) public {
    if (slotState(slotId) != SlotState.Filled) revert Marketplace_InvalidState();
    Slot storage slot = _slots[slotId];
    if (slot.host != msg.sender) revert Marketplace_InvalidSlotHost();
    uint256 full = _requests[slot.requestId].ask.collateralPerSlot();
    uint256 amount = full - slot.currentCollateral;
    if (amount == 0) revert Marketplace_NothingToTopUp();
    slot.currentCollateral = full;
    emit CollateralToppedUp(slotId, amount);
    _token.safeTransferFrom(msg.sender, address(this), amount);
  }

  /// Ends the host's part in a slot. Once the request has ended, pays the host for the time
  /// it held the slot and returns its collateral; while the request runs, frees the slot for
  /// repair and the host loses its collateral and its payment.
  function freeSlot(SlotId slotId) public {
    freeSlot(slotId, msg.sender, msg.sender);
  }

  function freeSlot(SlotId slotId, address rewardRecipient, address collateralRecipient) public {
    Slot storage slot = _slots[slotId];
    if (RequestId.unwrap(slot.requestId) == 0) revert Marketplace_SlotIsFree();
    if (slot.host != msg.sender) revert Marketplace_InvalidSlotHost();
    _settle(slot.requestId);
    SlotState state = slotState(slotId);
    if (state == SlotState.Paid) revert Marketplace_AlreadyPaid();
    if (state == SlotState.Filled) {
      _forciblyFreeSlot(slotId);
    } else {
      _payOut(slotId, rewardRecipient, collateralRecipient);
    }
  }

  // --- Validators ------------------------------------------------------------------------

  /// Marks the proof of an ended period missing: slashes the host, pays the caller its
  /// share, and frees the slot once the host has missed `maxNumberOfSlashes` proofs.
  function markProofAsMissing(SlotId slotId, Period period) public {
    if (slotState(slotId) != SlotState.Filled) revert Marketplace_SlotNotAcceptingProofs();
    _markProofAsMissing(slotId, period);
    Slot storage slot = _slots[slotId];
    RequestContext storage context = _contexts[slot.requestId];
    uint256 slashed = Math.min(
      (_requests[slot.requestId].ask.collateralPerSlot() * _config.collateral.slashPercentage) / 100,
      slot.currentCollateral
    );
    uint256 reward = (slashed * _config.collateral.validatorRewardPercentage) / 100;
    slot.currentCollateral -= slashed;
    context.forfeited += slashed - reward;
    if (missingProofs(slotId) >= _config.collateral.maxNumberOfSlashes) {
      _forciblyFreeSlot(slotId);
    }
    if (reward > 0) _token.safeTransfer(msg.sender, reward);
  }

  /// Reverts with the reason when the proof of `period` cannot be marked missing now.
  function canMarkProofAsMissing(SlotId slotId, Period period) public view override {
    if (slotState(slotId) != SlotState.Filled) revert Marketplace_SlotNotAcceptingProofs();
    _canMarkProofAsMissing(slotId, period);
  }

  // --- Views -----------------------------------------------------------------------------

  function getRequest(RequestId requestId) public view returns (Request memory) {
    Request storage request = _requests[requestId];
    if (request.client == address(0)) revert Marketplace_UnknownRequest();
    return request;
  }

  function getHost(SlotId slotId) public view returns (address) {
    return _slots[slotId].host;
  }

  function getActiveSlot(SlotId slotId) public view returns (ActiveSlot memory) {
    Slot storage slot = _slots[slotId];
    if (RequestId.unwrap(slot.requestId) == 0) revert Marketplace_SlotIsFree();
    return ActiveSlot(_requests[slot.requestId], slot.slotIndex);
  }

  function currentCollateral(SlotId slotId) public view returns (uint256) {
    return _slots[slotId].currentCollateral;
  }

  function myRequests() public view returns (RequestId[] memory ids) {
    bytes32[] memory raw = _requestsPerClient[msg.sender].values();
    assembly {
      ids := raw
    }
  }

  function mySlots() public view returns (SlotId[] memory ids) {
    bytes32[] memory raw = _slotsPerHost[msg.sender].values();
    assembly {
      ids := raw
    }
  }

  function requestState(RequestId requestId) public view returns (RequestState) {
    if (_requests[requestId].client == address(0)) revert Marketplace_UnknownRequest();
    RequestContext storage context = _contexts[requestId];
    if (context.state == RequestState.New && block.timestamp > context.expiresAt) {
      return RequestState.Cancelled;
    }
    if (context.state == RequestState.Started && block.timestamp > context.endsAt) {
      return RequestState.Finished;
    }
    return context.state;
  }

  function slotState(SlotId slotId) public view override returns (SlotState) {
    Slot storage slot = _slots[slotId];
    if (RequestId.unwrap(slot.requestId) == 0) return SlotState.Free;
    if (slot.state == SlotState.Paid) return SlotState.Paid;
    RequestState state = requestState(slot.requestId);
    if (state == RequestState.Cancelled) return SlotState.Cancelled;
    if (state == RequestState.Finished) return SlotState.Finished;
    if (state == RequestState.Failed) return SlotState.Failed;
    return slot.state;
  }

  /// When the request ended or ends: its expiry when cancelled, the moment it failed when
  /// failed, its end otherwise.
  function requestEnd(RequestId requestId) public view returns (uint64) {
    if (requestState(requestId) == RequestState.Cancelled) return _contexts[requestId].expiresAt;
    return _contexts[requestId].endsAt;
  }

  function requestExpiry(RequestId requestId) public view returns (uint64) {
    if (_requests[requestId].client == address(0)) revert Marketplace_UnknownRequest();
    return _contexts[requestId].expiresAt;
  }

  /// What the client gets back when the request ends, as things stand (the price not set
  /// aside for hosts), and the collateral hosts forfeited (repair rewards, then the client).
  function requestFunds(
    RequestId requestId
  ) public view returns (uint256 clientFunds, uint256 forfeited) {
    RequestContext storage context = _contexts[requestId];
    clientFunds = context.clientFunds;
    if (requestState(requestId) == RequestState.Cancelled && context.state != RequestState.Cancelled) {
      clientFunds += _cancellationRefund(requestId);
    }
    return (clientFunds, context.forfeited);
  }

  /// The payment set aside for the slot's host: what it collects at the end if it keeps
  /// the slot (less, if the request is cancelled: up to its expiry).
  function slotPayment(SlotId slotId) public view returns (uint256) {
    Slot storage slot = _slots[slotId];
    SlotState state = slotState(slotId);
    if (state == SlotState.Free || state == SlotState.Paid || slot.host == address(0)) return 0;
    RequestContext storage context = _contexts[slot.requestId];
    uint64 until = state == SlotState.Cancelled ? context.expiresAt : context.endsAt;
    return _payment(_requests[slot.requestId].ask, slot.filledAt, until);
  }

  // --- Internals -------------------------------------------------------------------------

  function _slotOpen(RequestId requestId, uint64 slotIndex) internal view override returns (bool) {
    Request storage request = _requests[requestId];
    if (request.client == address(0) || slotIndex >= request.ask.slots) return false;
    RequestState state = requestState(requestId);
    if (state != RequestState.New && state != RequestState.Started) return false;
    SlotState slot = slotState(Requests.slotId(requestId, slotIndex));
    return slot == SlotState.Free || slot == SlotState.Repair;
  }

  /// The proof's public inputs: the challenge and the dataset root as field elements (their
  /// bytes read little-endian, the challenge's first 31 only), and the slot index.
  function _publicSignals(
    SlotId slotId,
    Request storage request,
    uint64 slotIndex
  ) private view returns (uint256[] memory signals) {
    signals = new uint256[](3);
    signals[0] = _littleEndian(getChallenge(slotId), 31);
    signals[1] = _littleEndian(request.content.merkleRoot, 32);
    signals[2] = slotIndex;
  }

  function _littleEndian(bytes32 bytes_, uint256 length) private pure returns (uint256 value) {
    for (uint256 i = 0; i < length; i++) {
      value |= uint256(uint8(bytes_[i])) << (8 * i);
    }
  }

  /// The price, refusing asks whose sums overflow rather than failing later with a panic.
  function _checkedPrice(Ask calldata ask) private pure returns (uint256) {
    (bool ok1, uint256 perSlotPerSecond) = Math.tryMul(ask.pricePerBytePerSecond, ask.slotSize);
    (bool ok2, uint256 perSecond) = Math.tryMul(perSlotPerSecond, ask.slots);
    (bool ok3, uint256 price) = Math.tryMul(perSecond, ask.duration);
    (bool ok4, uint256 collateral) = Math.tryMul(ask.collateralPerByte, ask.slotSize);
    (bool ok5, ) = Math.tryMul(collateral, 100);
    if (!(ok1 && ok2 && ok3 && ok4 && ok5)) revert Marketplace_AskTooLarge();
    return price;
  }

  function _payment(Ask storage ask, uint64 from, uint64 until) private view returns (uint256) {
    if (until <= from) return 0;
    return (until - from) * ask.pricePerSlotPerSecond();
  }

  /// What a cancellation returns to the client of the payments set aside for hosts: each
  /// filled slot is paid up to the expiry only.
  function _cancellationRefund(RequestId requestId) private view returns (uint256) {
    RequestContext storage context = _contexts[requestId];
    return
      context.slotsFilled *
      _payment(_requests[requestId].ask, context.expiresAt, context.endsAt);
  }

  /// Stores the state time has given the request (Cancelled or Finished), moving a
  /// cancelled request's refund to the client's funds.
  function _settle(RequestId requestId) private {
    RequestContext storage context = _contexts[requestId];
    RequestState state = requestState(requestId);
    if (state == context.state) return;
    if (state == RequestState.Cancelled) {
      context.clientFunds += _cancellationRefund(requestId);
      emit RequestCancelled(requestId);
    }
    context.state = state;
  }

  function _payOut(SlotId slotId, address rewardRecipient, address collateralRecipient) private {
    Slot storage slot = _slots[slotId];
    RequestContext storage context = _contexts[slot.requestId];
    uint64 until = context.state == RequestState.Cancelled ? context.expiresAt : context.endsAt;
    uint256 payment = _payment(_requests[slot.requestId].ask, slot.filledAt, until);
    uint256 collateral = slot.currentCollateral;
    _slotsPerHost[slot.host].remove(SlotId.unwrap(slotId));
    slot.state = SlotState.Paid;
    slot.currentCollateral = 0;
    if (payment > 0) _token.safeTransfer(rewardRecipient, payment);
    if (collateral > 0) _token.safeTransfer(collateralRecipient, collateral);
  }

  /// Frees a filled slot for repair: the host loses the payment set aside for it (back to
  /// the client's funds) and its collateral (to the forfeited funds). A started request
  /// that has now lost more than `maxSlotLoss` slots fails: the remaining hosts are paid up
  /// to now and the rest of their payments goes back to the client's funds.
  function _forciblyFreeSlot(SlotId slotId) private {
    Slot storage slot = _slots[slotId];
    RequestId requestId = slot.requestId;
    RequestContext storage context = _contexts[requestId];
    Ask storage ask = _requests[requestId].ask;

    context.clientFunds += _payment(ask, slot.filledAt, context.endsAt);
    context.forfeited += slot.currentCollateral;
    context.slotsFilled -= 1;
    _slotsPerHost[slot.host].remove(SlotId.unwrap(slotId));
    _clearReservations(slotId);
    _resetMissingProofs(slotId);
    slot.state = SlotState.Repair;
    slot.host = address(0);
    slot.filledAt = 0;
    slot.currentCollateral = 0;
    emit SlotFreed(requestId, slot.slotIndex);

    if (context.state == RequestState.Started && ask.slots - context.slotsFilled > ask.maxSlotLoss) {
      uint64 failedAt = uint64(block.timestamp);
      context.clientFunds += context.slotsFilled * _payment(ask, failedAt, context.endsAt);
      context.endsAt = failedAt;
      context.state = RequestState.Failed;
      emit RequestFailed(requestId);
    }
  }
}
