// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import "./src/Groth16.sol";

/// Verifies Groth16 proofs over BN254 with the EVM's precompiles (EIP-196 addition and
/// scalar multiplication, EIP-197 pairing), for whichever circuit's verifying key it is
/// deployed with: the storage-proof circuit in production, small circuits in tests.
contract Groth16Verifier is IGroth16Verifier {
  /// The verifying key, in snarkjs terms: vk_alpha_1, vk_beta_2, vk_gamma_2, vk_delta_2, IC.
  struct VerifyingKey {
    G1Point alpha1;
    G2Point beta2;
    G2Point gamma2;
    G2Point delta2;
    /// One point per public input, plus one.
    G1Point[] ic;
  }

  error Groth16_InvalidVerifyingKey();

  /// The base field's modulus q (coordinates) and the scalar field's modulus r (inputs).
  uint256 private constant _Q =
    21888242871839275222246405745257275088696311157297823662689037894645226208583;
  uint256 private constant _R =
    21888242871839275222246405745257275088548364400416034343698204186575808495617;

  VerifyingKey private _key;

  constructor(VerifyingKey memory key) {
    if (key.ic.length == 0) revert Groth16_InvalidVerifyingKey();
    _key.alpha1 = key.alpha1;
    _key.beta2 = key.beta2;
    _key.gamma2 = key.gamma2;
    _key.delta2 = key.delta2;
    for (uint256 i = 0; i < key.ic.length; i++) {
      _key.ic.push(key.ic[i]);
    }
  }

  /// Number of public inputs the circuit takes.
  function inputCount() external view returns (uint256) {
    return _key.ic.length - 1;
  }

  function verify(
    Groth16Proof calldata proof,
    uint256[] calldata pubSignals
  ) external view returns (bool) {
    if (pubSignals.length + 1 != _key.ic.length) return false;
    // vk_x = IC[0] + Σ input[i]·IC[i+1]
    G1Point memory acc = _key.ic[0];
    for (uint256 i = 0; i < pubSignals.length; i++) {
      if (pubSignals[i] >= _R) return false;
      (bool ok, G1Point memory term) = _mul(_key.ic[i + 1], pubSignals[i]);
      if (!ok) return false;
      (ok, acc) = _add(acc, term);
      if (!ok) return false;
    }
    // e(-A, B) · e(alpha1, beta2) · e(vk_x, gamma2) · e(C, delta2) == 1
    uint256[24] memory input;
    G1Point memory negA = _negate(proof.a);
    _put(input, 0, negA, proof.b);
    _put(input, 6, _key.alpha1, _key.beta2);
    _put(input, 12, acc, _key.gamma2);
    _put(input, 18, proof.c, _key.delta2);
    uint256[1] memory out;
    bool success;
    assembly {
      success := staticcall(gas(), 0x08, input, 768, out, 32)
    }
    return success && out[0] == 1;
  }

  function _negate(G1Point memory p) private pure returns (G1Point memory) {
    if (p.x == 0 && p.y == 0) return p;
    // Leave out-of-field coordinates as they are: the precompile rejects them.
    if (p.y >= _Q) return p;
    return G1Point(p.x, _Q - p.y);
  }

  /// Writes a (G1, G2) pair at `offset`; G2 coordinates go imaginary part first (EIP-197).
  function _put(
    uint256[24] memory input,
    uint256 offset,
    G1Point memory g1,
    G2Point memory g2
  ) private pure {
    input[offset] = g1.x;
    input[offset + 1] = g1.y;
    input[offset + 2] = g2.x.imag;
    input[offset + 3] = g2.x.real;
    input[offset + 4] = g2.y.imag;
    input[offset + 5] = g2.y.real;
  }

  function _add(
    G1Point memory p,
    G1Point memory q
  ) private view returns (bool ok, G1Point memory sum) {
    uint256[4] memory input = [p.x, p.y, q.x, q.y];
    assembly {
      ok := staticcall(gas(), 0x06, input, 128, sum, 64)
    }
  }

  function _mul(
    G1Point memory p,
    uint256 scalar
  ) private view returns (bool ok, G1Point memory product) {
    uint256[3] memory input = [p.x, p.y, scalar];
    assembly {
      ok := staticcall(gas(), 0x07, input, 96, product, 64)
    }
  }
}
