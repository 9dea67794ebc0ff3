//! Reverts decoded: every way the marketplace, its token and its verifier can refuse a call,
//! as a typed value naming the contract's error.

use std::fmt;

use alloy_primitives::{Bytes, U256};
use alloy_sol_types::{Panic, Revert as RevertMessage, SolError, SolInterface};

use super::contracts::{Groth16Verifier, Marketplace, TestToken};

pub use Marketplace::MarketplaceErrors;
pub use TestToken::TestTokenErrors;

/// Why a call reverted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revert {
    /// One of the marketplace's custom errors (`Marketplace_*`, `Proofs_*`, `Periods_*`,
    /// `SlotReservations_*`, `SafeERC20FailedOperation`).
    Marketplace(MarketplaceErrors),
    /// One of the token's errors (OpenZeppelin's `ERC20*`), passed on by the marketplace
    /// when it moves tokens: a missing approval, a balance too small.
    Token(TestTokenErrors),
    /// One of the verifier contract's errors (at deployment).
    Verifier(Groth16Verifier::Groth16VerifierErrors),
    /// A Solidity panic (`assert`, arithmetic overflow...), with its code.
    Panic(U256),
    /// `Error(string)`: a revert with a message (none of our contracts uses them).
    Message(String),
    /// Revert data none of the above decodes (empty for a bare `revert()` or a failed call
    /// to an address without code).
    Unknown(Bytes),
}

impl Revert {
    pub fn decode(data: &[u8]) -> Revert {
        if let Ok(error) = MarketplaceErrors::abi_decode(data) {
            return Revert::Marketplace(error);
        }
        if let Ok(error) = TestTokenErrors::abi_decode(data) {
            return Revert::Token(error);
        }
        if let Ok(error) = Groth16Verifier::Groth16VerifierErrors::abi_decode(data) {
            return Revert::Verifier(error);
        }
        if let Ok(panic) = Panic::abi_decode(data) {
            return Revert::Panic(panic.code);
        }
        if let Ok(message) = RevertMessage::abi_decode(data) {
            return Revert::Message(message.reason);
        }
        Revert::Unknown(Bytes::copy_from_slice(data))
    }

    /// The error's name as the contract declares it (`Marketplace_SlotNotFree`,
    /// `ERC20InsufficientAllowance`), or `Panic`, `Error` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Revert::Marketplace(e) => {
                MarketplaceErrors::name_by_selector(e.selector()).unwrap_or("Marketplace")
            }
            Revert::Token(e) => TestTokenErrors::name_by_selector(e.selector()).unwrap_or("Token"),
            Revert::Verifier(e) => {
                Groth16Verifier::Groth16VerifierErrors::name_by_selector(e.selector()).unwrap_or("Verifier")
            }
            Revert::Panic(_) => "Panic",
            Revert::Message(_) => "Error",
            Revert::Unknown(_) => "unknown",
        }
    }

    /// True when the marketplace refused with `error` (compare with a unit error struct:
    /// `revert.is(Marketplace::Marketplace_SlotNotFree {})`).
    pub fn is<E: SolError>(&self, _error: E) -> bool {
        match self {
            Revert::Marketplace(e) => e.selector() == E::SELECTOR,
            Revert::Token(e) => e.selector() == E::SELECTOR,
            Revert::Verifier(e) => e.selector() == E::SELECTOR,
            _ => false,
        }
    }
}

impl fmt::Display for Revert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revert::Marketplace(_) | Revert::Verifier(_) => f.write_str(self.name()),
            Revert::Token(e) => write!(f, "{} ({e:?})", self.name()),
            Revert::Panic(code) => write!(f, "Panic({code:#x})"),
            Revert::Message(message) => write!(f, "Error({message:?})"),
            Revert::Unknown(data) if data.is_empty() => f.write_str("reverted without a reason"),
            Revert::Unknown(data) => write!(f, "reverted with undecodable data {data}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Address;

    #[test]
    fn decodes_and_names_every_kind() {
        let check = |data: Vec<u8>, name: &str, display: &str| {
            let revert = Revert::decode(&data);
            assert_eq!(revert.name(), name);
            assert_eq!(revert.to_string(), display);
        };
        check(
            Marketplace::Marketplace_SlotNotFree {}.abi_encode(),
            "Marketplace_SlotNotFree",
            "Marketplace_SlotNotFree",
        );
        check(Marketplace::Proofs_InvalidProof {}.abi_encode(), "Proofs_InvalidProof", "Proofs_InvalidProof");
        let allowance = TestToken::ERC20InsufficientAllowance {
            spender: Address::repeat_byte(1),
            allowance: U256::from(2),
            needed: U256::from(3),
        };
        let revert = Revert::decode(&allowance.abi_encode());
        assert_eq!(revert.name(), "ERC20InsufficientAllowance");
        assert!(revert.is(allowance));
        assert!(!revert.is(Marketplace::Marketplace_SlotNotFree {}));
        check(Panic { code: U256::from(0x11) }.abi_encode(), "Panic", "Panic(0x11)");
        check(RevertMessage { reason: "no".into() }.abi_encode(), "Error", "Error(\"no\")");
        check(vec![], "unknown", "reverted without a reason");
        check(vec![1, 2, 3, 4, 5], "unknown", "reverted with undecodable data 0x0102030405");
    }
}
