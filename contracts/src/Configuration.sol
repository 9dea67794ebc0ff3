// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// The marketplace's parameters, fixed at deployment (Archivist's layout).
struct MarketplaceConfig {
  CollateralConfig collateral;
  ProofConfig proofs;
  SlotReservationsConfig reservations;
  /// The longest duration a request may ask for, in seconds.
  uint64 requestDurationLimit;
}

struct CollateralConfig {
  /// Percentage of the slot's collateral a host filling a slot in repair does not have to
  /// put up (paid out of what the previous host forfeited).
  uint8 repairRewardPercentage;
  /// Missed proofs after which the slot is freed for repair.
  uint8 maxNumberOfSlashes;
  /// Percentage of the slot's collateral slashed for each missed proof.
  uint8 slashPercentage;
  /// Percentage of a slashed amount paid to the validator that marked the proof missing.
  uint8 validatorRewardPercentage;
}

struct ProofConfig {
  /// Seconds per proof period.
  uint64 period;
  /// Seconds after a period's end during which a missing proof can be marked.
  uint64 timeout;
  /// Pointer values below this mean "no proof required" (the challenge may change soon).
  uint8 downtime;
  /// Spreads the pointer of consecutive periods; should be coprime with 256.
  uint8 downtimeProduct;
  /// Hash of the proving key the verifier's key belongs to.
  string zkeyHash;
}

struct SlotReservationsConfig {
  /// Hosts that may hold a reservation on one slot at the same time.
  uint8 maxReservations;
}
