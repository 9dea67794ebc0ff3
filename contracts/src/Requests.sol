// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// Identifies a storage request: keccak256 of its ABI encoding.
type RequestId is bytes32;
/// Identifies one slot of a request: keccak256(abi.encode(requestId, slotIndex)).
type SlotId is bytes32;

/// A client's storage request, as Archivist encodes it (the ids depend on this layout).
struct Request {
  address client;
  Ask ask;
  Content content;
  /// Seconds after creation by which every slot must be filled, or the request is cancelled.
  uint64 expiry;
  /// Makes two otherwise equal requests distinct.
  bytes32 nonce;
}

struct Ask {
  /// A proof is required on average once every `proofProbability` periods.
  uint256 proofProbability;
  uint256 pricePerBytePerSecond;
  uint256 collateralPerByte;
  /// Number of slots: K + M of the erasure coding.
  uint64 slots;
  uint64 slotSize;
  /// Seconds the data is stored, counted from the request's creation.
  uint64 duration;
  /// How many slots may be lost before the request fails.
  uint64 maxSlotLoss;
}

struct Content {
  /// The manifest CID of the protected dataset.
  bytes cid;
  /// The dataset's verification root (Poseidon2 over the slot roots).
  bytes32 merkleRoot;
}

enum RequestState {
  New, // waiting for its slots to be filled
  Started, // all slots were filled before expiry
  Cancelled, // not started before expiry
  Finished, // started and reached its end
  Failed // lost more than maxSlotLoss slots while started
}

enum SlotState {
  Free, // never filled
  Filled, // a host holds it and proves it
  Finished, // the request finished; the host may collect its payout
  Failed, // the request failed; the host may collect payment for the time served
  Paid, // the host collected its payout
  Cancelled, // the request was cancelled; the host may collect its payout
  Repair // forcibly freed; another host may fill it for a repair reward
}

library Requests {
  function id(Request memory request) internal pure returns (RequestId) {
    return RequestId.wrap(keccak256(abi.encode(request)));
  }

  function slotId(RequestId requestId, uint64 slotIndex) internal pure returns (SlotId) {
    return SlotId.wrap(keccak256(abi.encode(requestId, slotIndex)));
  }

  function collateralPerSlot(Ask memory ask) internal pure returns (uint256) {
    return ask.collateralPerByte * ask.slotSize;
  }

  function pricePerSlotPerSecond(Ask memory ask) internal pure returns (uint256) {
    return ask.pricePerBytePerSecond * ask.slotSize;
  }

  /// What the client pays up front: every slot for the whole duration.
  function maxPrice(Request memory request) internal pure returns (uint256) {
    return request.ask.slots * request.ask.duration * pricePerSlotPerSecond(request.ask);
  }
}
