//! Rust bindings of the marketplace contracts, generated from the committed artifacts in
//! `contracts/artifacts/` (ABI and bytecode, compiled by `contracts/compile.js`), so that the
//! node, its tests and the simulator all run the same compiled contracts.
//!
//! Each module holds the contract's call, event and error types and its creation code
//! (`BYTECODE`). The JSON ABI drops Solidity's user-defined value types: `RequestId` and
//! `SlotId` are `bytes32` (`B256`) here, `Period` is `uint64`.

use alloy_sol_types::sol;

sol!(
    #[sol(all_derives)]
    Marketplace,
    "../contracts/artifacts/Marketplace.json"
);

sol!(
    #[sol(all_derives)]
    TestToken,
    "../contracts/artifacts/TestToken.json"
);

sol!(
    #[sol(all_derives)]
    Groth16Verifier,
    "../contracts/artifacts/Groth16Verifier.json"
);

impl From<Marketplace::Groth16Proof> for Groth16Verifier::Groth16Proof {
    /// The marketplace's proof struct as the verifier's: the two bindings are distinct Rust
    /// types of one ABI type.
    fn from(proof: Marketplace::Groth16Proof) -> Self {
        use alloy_sol_types::SolValue;
        SolValue::abi_decode(&proof.abi_encode()).expect("one ABI type")
    }
}

/// The artifacts' `build.json`: compiler, settings and the hash of every source.
pub const BUILD_INFO: &str = include_str!("../../../contracts/artifacts/build.json");

/// The marketplace's overloaded functions under names that say which is which (alloy numbers
/// overloads in ABI order: `freeSlot_0` is the three-argument form).
pub mod overloads {
    use super::Marketplace;

    /// `freeSlot(slotId)`: payout and collateral to the host.
    pub type FreeSlotCall = Marketplace::freeSlot_1Call;
    /// `freeSlot(slotId, rewardRecipient, collateralRecipient)`.
    pub type FreeSlotToCall = Marketplace::freeSlot_0Call;
    /// `withdrawFunds(requestId)`: to the client.
    pub type WithdrawFundsCall = Marketplace::withdrawFunds_0Call;
    /// `withdrawFunds(requestId, withdrawRecipient)`.
    pub type WithdrawFundsToCall = Marketplace::withdrawFunds_1Call;
}

#[cfg(test)]
mod tests {
    use super::overloads::*;
    use alloy_sol_types::SolCall;

    #[test]
    fn overload_names_match_their_signatures() {
        assert_eq!(FreeSlotCall::SIGNATURE, "freeSlot(bytes32)");
        assert_eq!(FreeSlotToCall::SIGNATURE, "freeSlot(bytes32,address,address)");
        assert_eq!(WithdrawFundsCall::SIGNATURE, "withdrawFunds(bytes32)");
        assert_eq!(WithdrawFundsToCall::SIGNATURE, "withdrawFunds(bytes32,address)");
    }
}
