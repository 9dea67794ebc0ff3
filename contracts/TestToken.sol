// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// The token of local and test networks: a plain ERC20 that anyone may mint. Never deploy it
/// where the token should be worth something.
contract TestToken is ERC20 {
  constructor() ERC20("Neverust Test Token", "TST") {}

  function mint(address holder, uint256 amount) public {
    _mint(holder, amount);
  }
}
