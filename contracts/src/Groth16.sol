// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// A point of BN254's G1, affine coordinates.
struct G1Point {
  uint256 x;
  uint256 y;
}

/// An element of Fp2 = Fp[i]/(i² + 1): real + imag·i.
struct Fp2Element {
  uint256 real;
  uint256 imag;
}

/// A point of BN254's G2 (over Fp2), affine coordinates.
struct G2Point {
  Fp2Element x;
  Fp2Element y;
}

/// A Groth16 proof (A, B, C), as Archivist passes it to the marketplace.
struct Groth16Proof {
  G1Point a;
  G2Point b;
  G1Point c;
}

interface IGroth16Verifier {
  /// True when `proof` proves the circuit's statement for these public inputs. Never
  /// reverts on bad input: a malformed proof, an input out of the field or the wrong number
  /// of inputs is simply not a valid proof.
  function verify(
    Groth16Proof calldata proof,
    uint256[] calldata pubSignals
  ) external view returns (bool);
}
