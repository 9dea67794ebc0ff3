// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";
import "./Requests.sol";

/// Reservations: a host must reserve a slot before filling it, and only a few hosts may hold
/// a reservation on one slot, so that hosts do not all download and prove the same slot.
abstract contract SlotReservations {
  using EnumerableSet for EnumerableSet.AddressSet;

  error SlotReservations_ReservationNotAllowed();

  event SlotReservationsFull(RequestId indexed requestId, uint64 slotIndex);

  mapping(SlotId => EnumerableSet.AddressSet) private _reservations;
  uint8 private immutable _maxReservations;

  constructor(uint8 maxReservations) {
    _maxReservations = maxReservations;
  }

  /// Whether the slot can be reserved (or filled) now: Free or Repair, in a request that
  /// still takes hosts.
  function _slotOpen(RequestId requestId, uint64 slotIndex) internal view virtual returns (bool);

  function reserveSlot(RequestId requestId, uint64 slotIndex) public {
    if (!canReserveSlot(requestId, slotIndex)) revert SlotReservations_ReservationNotAllowed();
    SlotId id = Requests.slotId(requestId, slotIndex);
    _reservations[id].add(msg.sender);
    if (_reservations[id].length() == _maxReservations) {
      emit SlotReservationsFull(requestId, slotIndex);
    }
  }

  function canReserveSlot(RequestId requestId, uint64 slotIndex) public view returns (bool) {
    SlotId id = Requests.slotId(requestId, slotIndex);
    return
      _slotOpen(requestId, slotIndex) &&
      !_reservations[id].contains(msg.sender) &&
      _reservations[id].length() < _maxReservations;
  }

  function _hasReservation(SlotId id, address host) internal view returns (bool) {
    return _reservations[id].contains(host);
  }

  function _clearReservations(SlotId id) internal {
    _reservations[id].clear();
  }
}
