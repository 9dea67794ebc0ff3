//! The marketplace through the chain port: typed calls, views and the token approvals they
//! need, for one account (a client, a host or a validator).

use std::sync::Arc;

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{SolCall, SolValue};

use super::contracts::Marketplace as M;
use super::contracts::TestToken;
use super::contracts::overloads::{FreeSlotCall, FreeSlotToCall, WithdrawFundsCall, WithdrawFundsToCall};
use super::{Chain, ChainError, Receipt, Transaction};

pub use M::{Ask, Content, Groth16Proof, MarketplaceConfig, Request};

/// A request's id: keccak256 of its ABI encoding.
pub type RequestId = B256;
/// A slot's id: keccak256(abi.encode(requestId, slotIndex)).
pub type SlotId = B256;

/// Gas added to estimates, in percent: Archivist's margins, where a transaction's cost can
/// change between the estimate and the block it lands in (a slot freed meanwhile, a
/// reservation list grown, a payout path taken).
pub mod padding {
    pub const DEFAULT: u64 = 20;
    pub const FILL_SLOT: u64 = 10;
    pub const RESERVE_SLOT: u64 = 25;
    pub const MARK_PROOF_AS_MISSING: u64 = 50;
    pub const FREE_SLOT: u64 = 200;
}

/// A request's state, as the contract reads it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestState {
    New,
    Started,
    Cancelled,
    Finished,
    Failed,
}

/// A slot's state, as the contract reads it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotState {
    Free,
    Filled,
    Finished,
    Failed,
    Paid,
    Cancelled,
    Repair,
}

impl RequestState {
    fn from_abi(value: u8) -> Result<RequestState, ChainError> {
        Ok(match value {
            0 => RequestState::New,
            1 => RequestState::Started,
            2 => RequestState::Cancelled,
            3 => RequestState::Finished,
            4 => RequestState::Failed,
            other => return Err(ChainError::Rpc(format!("unknown request state {other}"))),
        })
    }
}

impl SlotState {
    fn from_abi(value: u8) -> Result<SlotState, ChainError> {
        Ok(match value {
            0 => SlotState::Free,
            1 => SlotState::Filled,
            2 => SlotState::Finished,
            3 => SlotState::Failed,
            4 => SlotState::Paid,
            5 => SlotState::Cancelled,
            6 => SlotState::Repair,
            other => return Err(ChainError::Rpc(format!("unknown slot state {other}"))),
        })
    }
}

pub fn request_id(request: &Request) -> RequestId {
    keccak256(request.abi_encode())
}

pub fn slot_id(request: RequestId, slot_index: u64) -> SlotId {
    keccak256((request, slot_index).abi_encode())
}

pub fn collateral_per_slot(ask: &Ask) -> U256 {
    ask.collateralPerByte * U256::from(ask.slotSize)
}

pub fn price_per_slot_per_second(ask: &Ask) -> U256 {
    ask.pricePerBytePerSecond * U256::from(ask.slotSize)
}

/// What a request costs its client up front: every slot for the whole duration.
pub fn max_price(ask: &Ask) -> U256 {
    U256::from(ask.slots) * U256::from(ask.duration) * price_per_slot_per_second(ask)
}

/// The public inputs of a storage proof, as the marketplace derives them: the challenge's
/// first 31 bytes and the dataset root read little-endian, and the slot index.
pub fn public_inputs(challenge: B256, dataset_root: B256, slot_index: u64) -> [U256; 3] {
    [little_endian(&challenge[..31]), little_endian(&dataset_root[..]), U256::from(slot_index)]
}

fn little_endian(bytes: &[u8]) -> U256 {
    let mut big_endian = bytes.to_vec();
    big_endian.reverse();
    U256::from_be_slice(&big_endian)
}

/// The marketplace, for one account.
#[derive(Clone)]
pub struct Marketplace {
    chain: Arc<dyn Chain>,
    address: Address,
    token: Address,
    config: MarketplaceConfig,
    /// Held from reading the allowance to the transaction that spends it, so two spends at
    /// once (two storage requests, two fills) cannot both approve from the same allowance and
    /// leave one of them short.
    spending: Arc<tokio::sync::Mutex<()>>,
}

impl Marketplace {
    /// Connects to the marketplace at `address`, checking that a marketplace answers there
    /// (and reading its configuration and token).
    pub async fn connect(chain: Arc<dyn Chain>, address: Address) -> Result<Marketplace, ChainError> {
        if chain.code(address).await?.is_empty() {
            return Err(ChainError::NoContract(address));
        }
        let not_a_marketplace = |error: ChainError| match error {
            ChainError::Revert(revert) => ChainError::WrongContract {
                address,
                reason: format!("no marketplace answers there ({revert})"),
            },
            other => other,
        };
        let config = view(&*chain, address, M::configurationCall {}).await.map_err(not_a_marketplace)?;
        let token = view(&*chain, address, M::tokenCall {}).await.map_err(not_a_marketplace)?;
        if chain.code(token).await?.is_empty() {
            return Err(ChainError::NoContract(token));
        }
        Ok(Marketplace { chain, address, token, config, spending: Arc::default() })
    }

    /// The same marketplace, for another account.
    pub fn with_chain(&self, chain: Arc<dyn Chain>) -> Marketplace {
        Marketplace { chain, spending: Arc::default(), ..self.clone() }
    }

    pub fn chain(&self) -> &Arc<dyn Chain> {
        &self.chain
    }

    pub fn account(&self) -> Address {
        self.chain.account()
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn token(&self) -> Address {
        self.token
    }

    pub fn config(&self) -> &MarketplaceConfig {
        &self.config
    }

    /// The proof period a timestamp falls in.
    pub fn period_of(&self, timestamp: u64) -> u64 {
        timestamp / self.config.proofs.period
    }

    /// When a period ends (the next one's start).
    pub fn period_end(&self, period: u64) -> u64 {
        (period + 1) * self.config.proofs.period
    }

    /// Any view of the marketplace, in the newest block.
    pub async fn view<C: SolCall>(&self, call: C) -> Result<C::Return, ChainError> {
        view(&*self.chain, self.address, call).await
    }

    /// Any marketplace function, in a transaction from this account.
    pub async fn transact<C: SolCall>(
        &self,
        call: C,
        gas_padding_percent: u64,
    ) -> Result<Receipt, ChainError> {
        let tx = Transaction { to: Some(self.address), data: call.abi_encode().into(), gas_padding_percent };
        self.chain.send(tx).await
    }

    // --- Token ---------------------------------------------------------------------------

    pub async fn token_balance(&self, who: Address) -> Result<U256, ChainError> {
        view(&*self.chain, self.token, TestToken::balanceOfCall { account: who }).await
    }

    /// Lets the marketplace take `amount` more of this account's tokens. Callers that spend
    /// the allowance hold `spending` until they have.
    pub async fn approve(&self, amount: U256) -> Result<(), ChainError> {
        let allowance = TestToken::allowanceCall { owner: self.account(), spender: self.address };
        let current = view(&*self.chain, self.token, allowance).await?;
        // An unlimited allowance stays unlimited.
        let approve = TestToken::approveCall { spender: self.address, value: current.saturating_add(amount) };
        let tx = Transaction {
            to: Some(self.token),
            data: approve.abi_encode().into(),
            gas_padding_percent: padding::DEFAULT,
        };
        self.chain.send(tx).await.map(drop)
    }

    // --- Clients ---------------------------------------------------------------------------

    /// Approves the request's price and submits it; its id.
    pub async fn request_storage(&self, request: &Request) -> Result<RequestId, ChainError> {
        let _spending = self.spending.lock().await;
        self.approve(max_price(&request.ask)).await?;
        self.transact(M::requestStorageCall { request: request.clone() }, padding::DEFAULT).await?;
        Ok(request_id(request))
    }

    /// Takes back what is left of an ended request, to this account or `recipient`.
    pub async fn withdraw_funds(
        &self,
        id: RequestId,
        recipient: Option<Address>,
    ) -> Result<Receipt, ChainError> {
        match recipient {
            None => self.transact(WithdrawFundsCall { requestId: id }, padding::DEFAULT).await,
            Some(to) => {
                self.transact(WithdrawFundsToCall { requestId: id, withdrawRecipient: to }, padding::DEFAULT)
                    .await
            }
        }
    }

    // --- Hosts -----------------------------------------------------------------------------

    pub async fn reserve_slot(&self, id: RequestId, slot_index: u64) -> Result<Receipt, ChainError> {
        self.transact(M::reserveSlotCall { requestId: id, slotIndex: slot_index }, padding::RESERVE_SLOT)
            .await
    }

    /// Approves the collateral due (less the repair reward for a slot in repair) and fills
    /// the slot with a proof of the current challenge.
    pub async fn fill_slot(
        &self,
        id: RequestId,
        slot_index: u64,
        proof: Groth16Proof,
    ) -> Result<Receipt, ChainError> {
        let request = self.request(id).await?;
        let collateral = collateral_per_slot(&request.ask);
        let due = if self.slot_state(slot_id(id, slot_index)).await? == SlotState::Repair {
            let forfeited = self.view(M::requestFundsCall { requestId: id }).await?.forfeited;
            let reward =
                collateral * U256::from(self.config.collateral.repairRewardPercentage) / U256::from(100);
            collateral - reward.min(forfeited)
        } else {
            collateral
        };
        let _spending = self.spending.lock().await;
        self.approve(due).await?;
        self.transact(M::fillSlotCall { requestId: id, slotIndex: slot_index, proof }, padding::FILL_SLOT)
            .await
    }

    pub async fn submit_proof(&self, slot: SlotId, proof: Groth16Proof) -> Result<Receipt, ChainError> {
        self.transact(M::submitProofCall { slotId: slot, proof }, padding::DEFAULT).await
    }

    /// Leaves a slot: a payout once the request has ended, its loss while it runs. The
    /// payout goes to this account, or to `(reward, collateral)` recipients.
    pub async fn free_slot(
        &self,
        slot: SlotId,
        recipients: Option<(Address, Address)>,
    ) -> Result<Receipt, ChainError> {
        match recipients {
            None => self.transact(FreeSlotCall { slotId: slot }, padding::FREE_SLOT).await,
            Some((reward, collateral)) => {
                let call =
                    FreeSlotToCall { slotId: slot, rewardRecipient: reward, collateralRecipient: collateral };
                self.transact(call, padding::FREE_SLOT).await
            }
        }
    }

    /// Restores the slot's collateral after slashes.
    pub async fn top_up_collateral(&self, slot: SlotId) -> Result<Receipt, ChainError> {
        let active = self.view(M::getActiveSlotCall { slotId: slot }).await?;
        let missing =
            collateral_per_slot(&active.request.ask).saturating_sub(self.current_collateral(slot).await?);
        let _spending = self.spending.lock().await;
        self.approve(missing).await?;
        self.transact(M::topUpCollateralCall { slotId: slot }, padding::DEFAULT).await
    }

    // --- Validators --------------------------------------------------------------------------

    /// Ok when the proof of `period` can be marked missing now, the reason otherwise.
    pub async fn can_mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<(), ChainError> {
        self.view(M::canMarkProofAsMissingCall { slotId: slot, period }).await.map(drop)
    }

    pub async fn mark_proof_as_missing(&self, slot: SlotId, period: u64) -> Result<Receipt, ChainError> {
        self.transact(M::markProofAsMissingCall { slotId: slot, period }, padding::MARK_PROOF_AS_MISSING)
            .await
    }

    // --- Views -----------------------------------------------------------------------------

    pub async fn request(&self, id: RequestId) -> Result<Request, ChainError> {
        self.view(M::getRequestCall { requestId: id }).await
    }

    pub async fn request_state(&self, id: RequestId) -> Result<RequestState, ChainError> {
        RequestState::from_abi(self.view(M::requestStateCall { requestId: id }).await?)
    }

    pub async fn slot_state(&self, slot: SlotId) -> Result<SlotState, ChainError> {
        SlotState::from_abi(self.view(M::slotStateCall { slotId: slot }).await?)
    }

    pub async fn host(&self, slot: SlotId) -> Result<Address, ChainError> {
        self.view(M::getHostCall { slotId: slot }).await
    }

    pub async fn challenge(&self, slot: SlotId) -> Result<B256, ChainError> {
        self.view(M::getChallengeCall { id: slot }).await
    }

    pub async fn is_proof_required(&self, slot: SlotId) -> Result<bool, ChainError> {
        self.view(M::isProofRequiredCall { id: slot }).await
    }

    pub async fn will_proof_be_required(&self, slot: SlotId) -> Result<bool, ChainError> {
        self.view(M::willProofBeRequiredCall { id: slot }).await
    }

    pub async fn missing_proofs(&self, slot: SlotId) -> Result<u64, ChainError> {
        Ok(self.view(M::missingProofsCall { slotId: slot }).await?.saturating_to())
    }

    pub async fn current_collateral(&self, slot: SlotId) -> Result<U256, ChainError> {
        self.view(M::currentCollateralCall { slotId: slot }).await
    }

    pub async fn request_end(&self, id: RequestId) -> Result<u64, ChainError> {
        self.view(M::requestEndCall { requestId: id }).await
    }

    pub async fn request_expiry(&self, id: RequestId) -> Result<u64, ChainError> {
        self.view(M::requestExpiryCall { requestId: id }).await
    }

    pub async fn my_requests(&self) -> Result<Vec<RequestId>, ChainError> {
        self.view(M::myRequestsCall {}).await
    }

    pub async fn my_slots(&self) -> Result<Vec<SlotId>, ChainError> {
        self.view(M::mySlotsCall {}).await
    }
}

/// A view of any contract, decoded.
pub async fn view<C: SolCall>(chain: &dyn Chain, to: Address, call: C) -> Result<C::Return, ChainError> {
    let data = chain.call(to, call.abi_encode().into()).await?;
    C::abi_decode_returns(&data).map_err(|e| ChainError::WrongContract {
        address: to,
        reason: format!("{} answered {data}: {e}", C::SIGNATURE),
    })
}
