//! Deploying the contracts: the token, the verifier with a verifying key, the marketplace
//! with a configuration; and the record of where they are, which nodes read.

use alloy_primitives::{Address, U256};
use alloy_sol_types::SolConstructor;
use serde::{Deserialize, Serialize};

use super::contracts::{Groth16Verifier, Marketplace as M, TestToken};
use super::{Chain, ChainError, Transaction};
use crate::proofs::groth16::ChainVerifyingKey;

/// Where one deployment's contracts are: what `neverust deploy` writes and nodes read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub chain_id: u64,
    pub token: Address,
    pub verifier: Address,
    pub marketplace: Address,
    /// The block the marketplace was created in: where following its events starts.
    pub block: u64,
}

/// Archivist's defaults: 10 % repair reward, freed after 2 missed proofs, 20 % slashed a miss,
/// 20 % of that to the validator; 120 s periods, 30 s to mark a miss, downtime 64 of 256,
/// downtime product 67; 3 reservations a slot; requests of up to 30 days.
pub fn default_config() -> M::MarketplaceConfig {
    M::MarketplaceConfig {
        collateral: M::CollateralConfig {
            repairRewardPercentage: 10,
            maxNumberOfSlashes: 2,
            slashPercentage: 20,
            validatorRewardPercentage: 20,
        },
        proofs: M::ProofConfig {
            period: 120,
            timeout: 30,
            downtime: 64,
            downtimeProduct: 67,
            zkeyHash: String::new(),
        },
        reservations: M::SlotReservationsConfig { maxReservations: 3 },
        requestDurationLimit: 30 * 24 * 3600,
    }
}

/// Deploys a test token (or uses `token`), a verifier with `key` and a marketplace with
/// `config`, from the chain's account. The chain must be past block 256 (the marketplace's
/// constructor refuses with `Proofs_InsufficientBlockHeight` otherwise).
pub async fn deploy(
    chain: &dyn Chain,
    config: &M::MarketplaceConfig,
    key: ChainVerifyingKey,
    token: Option<Address>,
) -> Result<Deployment, ChainError> {
    let token = match token {
        Some(token) => token,
        None => create(chain, &TestToken::BYTECODE, TestToken::constructorCall {}.abi_encode()).await?.0,
    };
    let (verifier, _) =
        create(chain, &Groth16Verifier::BYTECODE, Groth16Verifier::constructorCall { key }.abi_encode())
            .await?;
    let args = M::constructorCall { config: config.clone(), token_: token, verifier };
    let (marketplace, block) = create(chain, &M::BYTECODE, args.abi_encode()).await?;
    Ok(Deployment { chain_id: chain.chain_id(), token, verifier, marketplace, block })
}

/// Creates a contract from its code and constructor arguments; its address and block.
async fn create(chain: &dyn Chain, code: &[u8], args: Vec<u8>) -> Result<(Address, u64), ChainError> {
    let data = [code, &args].concat().into();
    let receipt = chain.send(Transaction { to: None, data, gas_padding_percent: 20 }).await?;
    let address =
        receipt.contract_address.ok_or_else(|| ChainError::Rpc("a creation without an address".into()))?;
    Ok((address, receipt.block))
}

/// Mints test tokens to `who` (local and test networks: anyone may mint the test token).
pub async fn mint(chain: &dyn Chain, token: Address, who: Address, amount: U256) -> Result<(), ChainError> {
    let data = alloy_sol_types::SolCall::abi_encode(&TestToken::mintCall { holder: who, amount }).into();
    chain.send(Transaction { to: Some(token), data, gas_padding_percent: 20 }).await.map(drop)
}
