// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import "./Configuration.sol";
import "./Requests.sol";
import "./Periods.sol";
import "./Groth16.sol";

/// Storage proofs of filled slots: which periods require one, the challenge a proof answers,
/// proofs received, and proofs marked missing by validators.
///
/// The challenge of a slot in a period comes from a recent block hash chosen by a pointer:
/// pointer = (block.number + period·downtimeProduct + slotId) mod 256, challenge =
/// keccak256(blockhash(block.number - 1 - pointer)). As blocks go by the pointer grows with
/// the block number, so the block it names stays the same until the pointer wraps around; the
/// `downtime` lowest pointer values, just after a wrap, require no proof, so a host is never
/// asked to answer a challenge that changes under it.
abstract contract Proofs is Periods {
  error Proofs_InsufficientBlockHeight();
  error Proofs_InvalidProof();
  error Proofs_ProofAlreadySubmitted();
  error Proofs_PeriodNotEnded();
  error Proofs_ValidationTimedOut();
  error Proofs_ProofNotMissing();
  error Proofs_ProofNotRequired();
  error Proofs_ProofAlreadyMarkedMissing();
  error Proofs_InvalidTimeout();

  event ProofSubmitted(SlotId id);

  ProofConfig private _proofConfig;
  IGroth16Verifier private immutable _verifier;

  mapping(SlotId => Period) private _slotStarts;
  mapping(SlotId => uint256) private _probabilities;
  mapping(SlotId => uint256) private _missed;
  mapping(SlotId => mapping(Period => bool)) private _received;
  mapping(SlotId => mapping(Period => bool)) private _missing;

  constructor(ProofConfig memory config, IGroth16Verifier verifier) Periods(config.period) {
    // Challenges read block hashes up to 256 blocks back.
    if (block.number <= 256) revert Proofs_InsufficientBlockHeight();
    if (config.timeout == 0 || config.timeout > config.period) revert Proofs_InvalidTimeout();
    _proofConfig = config;
    _verifier = verifier;
  }

  /// The slot's state; proofs are required only while it is Filled.
  function slotState(SlotId id) public view virtual returns (SlotState);

  /// Proofs marked missing since the slot was last filled.
  function missingProofs(SlotId slotId) public view returns (uint256) {
    return _missed[slotId];
  }

  /// The divisor applied to challenges: a proof is required when challenge mod it is 0.
  function slotProbability(SlotId id) public view returns (uint256) {
    return _probabilities[id];
  }

  function getPointer(SlotId id) public view returns (uint8) {
    return _getPointer(id, _blockPeriod());
  }

  function getChallenge(SlotId id) public view returns (bytes32) {
    return _getChallenge(_getPointer(id, _blockPeriod()));
  }

  function isProofRequired(SlotId id) public view returns (bool) {
    return _isProofRequired(id, _blockPeriod());
  }

  /// True when a proof is not required yet in this period but will be once the pointer
  /// leaves the downtime: a host should prepare one.
  function willProofBeRequired(SlotId id) public view returns (bool) {
    (bool challenged, uint8 pointer) = _challenged(id, _blockPeriod());
    return challenged && pointer < _proofConfig.downtime;
  }

  /// Reverts with the reason when the proof of `period` cannot be marked missing now.
  function canMarkProofAsMissing(SlotId id, Period period) public view virtual {
    _canMarkProofAsMissing(id, period);
  }

  function _resetMissingProofs(SlotId id) internal {
    _missed[id] = 0;
  }

  function _startRequiringProofs(SlotId id, uint256 proofProbability) internal {
    _slotStarts[id] = _blockPeriod();
    _probabilities[id] = (proofProbability * (256 - _proofConfig.downtime)) / 256;
  }

  function _getPointer(SlotId id, Period period) internal view returns (uint8) {
    uint256 blockNumber = block.number % 256;
    uint256 periodNumber = (uint256(Period.unwrap(period)) * _proofConfig.downtimeProduct) % 256;
    uint256 idOffset = uint256(SlotId.unwrap(id)) % 256;
    return uint8((blockNumber + periodNumber + idOffset) % 256);
  }

  function _getChallenge(uint8 pointer) internal view returns (bytes32) {
    bytes32 hash = blockhash(block.number - 1 - pointer);
    assert(uint256(hash) != 0);
    return keccak256(abi.encode(hash));
  }

  /// Whether the slot is challenged in `period` (ignoring downtime), and the pointer.
  function _challenged(SlotId id, Period period) private view returns (bool, uint8) {
    if (slotState(id) != SlotState.Filled) return (false, 0);
    if (Period.unwrap(period) <= Period.unwrap(_slotStarts[id])) return (false, 0);
    uint8 pointer = _getPointer(id, period);
    bytes32 challenge = _getChallenge(pointer);
    uint256 probability = _probabilities[id];
    return (probability == 0 || uint256(challenge) % probability == 0, pointer);
  }

  function _isProofRequired(SlotId id, Period period) internal view returns (bool) {
    (bool challenged, uint8 pointer) = _challenged(id, period);
    return challenged && pointer >= _proofConfig.downtime;
  }

  /// Checks a proof of the current period and records it.
  function _proofReceived(SlotId id, Groth16Proof calldata proof, uint256[] memory pubSignals) internal {
    Period period = _blockPeriod();
    if (_received[id][period]) revert Proofs_ProofAlreadySubmitted();
    _acceptProof(id, period, proof, pubSignals);
  }

  /// Checks a proof of the current period and records it, even if one was recorded for the
  /// slot in this period already (by a host that filled the slot before, when it is refilled
  /// within the period it was freed in).
  function _acceptProof(
    SlotId id,
    Period period,
    Groth16Proof calldata proof,
    uint256[] memory pubSignals
  ) internal {
    if (!_verifier.verify(proof, pubSignals)) revert Proofs_InvalidProof();
    _received[id][period] = true;
    emit ProofSubmitted(id);
  }

  function _canMarkProofAsMissing(SlotId id, Period period) internal view {
    uint256 end = _periodEnd(period);
    if (end >= block.timestamp) revert Proofs_PeriodNotEnded();
    if (block.timestamp >= end + _proofConfig.timeout) revert Proofs_ValidationTimedOut();
    if (_received[id][period]) revert Proofs_ProofNotMissing();
    if (!_isProofRequired(id, period)) revert Proofs_ProofNotRequired();
    if (_missing[id][period]) revert Proofs_ProofAlreadyMarkedMissing();
  }

  function _markProofAsMissing(SlotId id, Period period) internal {
    _canMarkProofAsMissing(id, period);
    _missing[id][period] = true;
    _missed[id] += 1;
  }
}
