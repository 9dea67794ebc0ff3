//! Purchasing: a client's storage requests, from `POST /storage/request/{cid}` to the
//! withdrawal of what is left when the request ends.

use alloy_primitives::{B256, U256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Market, PURCHASE, persist, put};
use crate::chain::ChainError;
use crate::chain::contracts::Marketplace as M;
use crate::chain::market::{Ask, Content, Request, RequestId, RequestState, max_price, request_id};
use crate::content::{Cid, cid_to_string};
use crate::dataset::{ProtectError, erasure_layout};
use crate::merkle::poseidon2;

/// `POST /storage/request/{cid}`: Archivist's body. Token amounts are decimal strings (numbers
/// are read too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageParams {
    pub duration: Option<u64>,
    #[serde(default, deserialize_with = "amount")]
    pub price_per_byte_per_second: Option<U256>,
    #[serde(default, deserialize_with = "amount")]
    pub proof_probability: Option<U256>,
    #[serde(default, deserialize_with = "amount")]
    pub collateral_per_byte: Option<U256>,
    /// Seconds from submission until the request is cancelled if its slots are not all filled.
    pub expiry: Option<u64>,
    /// Slots (hosts): `K + M` [default: 3].
    pub nodes: Option<u64>,
    /// Slots that may be lost: `M` [default: 1].
    pub tolerance: Option<u64>,
}

fn amount<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<U256>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Text(String),
        Number(u64),
    }
    Ok(match Option::<Amount>::deserialize(deserializer)? {
        None => None,
        Some(Amount::Number(n)) => Some(U256::from(n)),
        Some(Amount::Text(text)) => Some(
            U256::from_str_radix(&text, 10)
                .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal number")))?,
        ),
    })
}

/// Why a storage request was refused (answered as 422, or 404 for an unknown dataset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    #[error("expiry must be less than duration ({expiry} >= {duration})")]
    ExpiryNotBeforeEnd { expiry: u64, duration: u64 },
    #[error("duration {duration} exceeds the marketplace's limit of {limit} seconds")]
    TooLong { duration: u64, limit: u64 },
    #[error("tolerance {tolerance} cannot be greater than nodes {nodes}")]
    ToleranceOverNodes { tolerance: u64, nodes: u64 },
    #[error(
        "invalid parameters: nodes - tolerance must be at least 2 and at least tolerance (nodes {nodes}, tolerance {tolerance})"
    )]
    Coding { nodes: u64, tolerance: u64 },
    #[error("{nodes} slots is more than the {max} a request may have")]
    TooManySlots { nodes: u64, max: u64 },
    #[error("dataset {0} is not stored on this node")]
    UnknownDataset(String),
    #[error(
        "the dataset's {blocks} blocks are too few for {k} data slots: a slot would hold fewer than 2 blocks, which storage proofs need (ask for fewer nodes, or store a larger dataset)"
    )]
    SlotTooSmall { blocks: u64, k: u64 },
    #[error("dataset {0} is already erasure-coded: request storage for the original dataset")]
    AlreadyProtected(String),
    #[error("the request costs {price} tokens; the account {account} has {balance}")]
    InsufficientFunds { price: U256, account: String, balance: U256 },
    #[error("{0}")]
    Protect(String),
}

/// The checked parameters of a storage request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedParams {
    pub duration: u64,
    pub price_per_byte_per_second: U256,
    pub proof_probability: U256,
    pub collateral_per_byte: U256,
    pub expiry: u64,
    /// K and M of the erasure coding.
    pub k: u64,
    pub m: u64,
}

/// Fewest blocks a slot may have: the storage-proof circuit folds a slot's block tree from two
/// leaves up (`proofs::input`).
pub const MIN_SLOT_BLOCKS: u64 = 2;

/// Most slots a request may have (the proof circuit's dataset tree holds 2^8).
pub const MAX_SLOTS: u64 = 256;

impl StorageParams {
    /// Archivist's validation, and the marketplace's duration limit.
    pub fn check(&self, duration_limit: u64) -> Result<CheckedParams, RequestError> {
        let duration = self.duration.ok_or(RequestError::Missing("duration"))?;
        let price = self.price_per_byte_per_second.ok_or(RequestError::Missing("pricePerBytePerSecond"))?;
        let probability = self.proof_probability.ok_or(RequestError::Missing("proofProbability"))?;
        let collateral = self.collateral_per_byte.ok_or(RequestError::Missing("collateralPerByte"))?;
        let expiry = self.expiry.ok_or(RequestError::Missing("expiry"))?;
        let nodes = self.nodes.unwrap_or(3);
        let tolerance = self.tolerance.unwrap_or(1);
        for (name, zero) in [
            ("duration", duration == 0),
            ("pricePerBytePerSecond", price.is_zero()),
            ("proofProbability", probability.is_zero()),
            ("collateralPerByte", collateral.is_zero()),
            ("expiry", expiry == 0),
        ] {
            if zero {
                return Err(RequestError::Zero(name));
            }
        }
        if expiry >= duration {
            return Err(RequestError::ExpiryNotBeforeEnd { expiry, duration });
        }
        if duration > duration_limit {
            return Err(RequestError::TooLong { duration, limit: duration_limit });
        }
        if tolerance > nodes {
            return Err(RequestError::ToleranceOverNodes { tolerance, nodes });
        }
        let k = nodes - tolerance;
        if k < 2 || k < tolerance || tolerance == 0 {
            return Err(RequestError::Coding { nodes, tolerance });
        }
        if nodes > MAX_SLOTS {
            return Err(RequestError::TooManySlots { nodes, max: MAX_SLOTS });
        }
        Ok(CheckedParams {
            duration,
            price_per_byte_per_second: price,
            proof_probability: probability,
            collateral_per_byte: collateral,
            expiry,
            k,
            m: tolerance,
        })
    }
}

/// A purchase's state, as Archivist names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurchaseState {
    Pending,
    Submitted,
    Started,
    Finished,
    Cancelled,
    Failed,
    Errored,
    Unknown,
}

impl PurchaseState {
    pub const ALL: [PurchaseState; 8] = [
        PurchaseState::Pending,
        PurchaseState::Submitted,
        PurchaseState::Started,
        PurchaseState::Finished,
        PurchaseState::Cancelled,
        PurchaseState::Failed,
        PurchaseState::Errored,
        PurchaseState::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PurchaseState::Pending => "pending",
            PurchaseState::Submitted => "submitted",
            PurchaseState::Started => "started",
            PurchaseState::Finished => "finished",
            PurchaseState::Cancelled => "cancelled",
            PurchaseState::Failed => "failed",
            PurchaseState::Errored => "errored",
            PurchaseState::Unknown => "unknown",
        }
    }

    /// No more transitions (the funds left, if any, have been withdrawn).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PurchaseState::Finished
                | PurchaseState::Cancelled
                | PurchaseState::Failed
                | PurchaseState::Errored
        )
    }

    /// The purchase's state for the request's state on chain.
    pub fn of_request(state: RequestState) -> PurchaseState {
        match state {
            RequestState::New => PurchaseState::Submitted,
            RequestState::Started => PurchaseState::Started,
            RequestState::Finished => PurchaseState::Finished,
            RequestState::Cancelled => PurchaseState::Cancelled,
            RequestState::Failed => PurchaseState::Failed,
        }
    }
}

/// A storage request this node made, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purchase {
    pub request_id: RequestId,
    /// The request, ABI-encoded.
    pub request: alloy_primitives::Bytes,
    pub state: PurchaseState,
    pub error: Option<String>,
    /// Whether what was left of the request's funds has been withdrawn.
    pub withdrawn: bool,
}

impl Purchase {
    pub fn request(&self) -> Request {
        Request::abi_decode(&self.request).expect("recorded requests decode")
    }
}

impl Market {
    /// Protects the dataset, builds the request and records the purchase; its submission and
    /// life go on in the background. The request's id.
    pub async fn request_storage(
        &self,
        cid: Cid,
        params: StorageParams,
    ) -> Result<RequestId, super::MarketError> {
        let market = &self.inner.marketplace;
        let checked = params.check(market.config().requestDurationLimit)?;
        let text = cid_to_string(&cid);
        // What the request costs, and whether its slots can be proven, before any erasure
        // coding: a refused request leaves nothing behind.
        let original = match self.inner.datasets.get(cid).await {
            Ok(Some(original)) => original.manifest,
            Ok(None) => return Err(RequestError::UnknownDataset(text).into()),
            Err(e) => return Err(RequestError::Protect(e.to_string()).into()),
        };
        if original.protected() {
            return Err(RequestError::AlreadyProtected(text).into());
        }
        let params = crate::erasure::Params::new(checked.k as u32, checked.m as u32)
            .map_err(|e| RequestError::Protect(e.to_string()))?;
        let steps = crate::erasure::Layout::new(params, original.blocks_count()).steps;
        if steps < MIN_SLOT_BLOCKS {
            return Err(RequestError::SlotTooSmall { blocks: original.blocks_count(), k: checked.k }.into());
        }
        let ask = Ask {
            proofProbability: checked.proof_probability,
            pricePerBytePerSecond: checked.price_per_byte_per_second,
            collateralPerByte: checked.collateral_per_byte,
            slots: checked.k + checked.m,
            slotSize: steps * u64::from(original.block_size_bytes),
            duration: checked.duration,
            maxSlotLoss: checked.m,
        };
        let price = max_price(&ask);
        let balance = market.token_balance(market.account()).await?;
        if balance < price {
            return Err(RequestError::InsufficientFunds {
                price,
                account: market.account().to_string(),
                balance,
            }
            .into());
        }
        let dataset = match self.inner.datasets.protect(cid, checked.k as u32, checked.m as u32).await {
            Ok(dataset) => dataset,
            Err(ProtectError::NotFound(_)) => return Err(RequestError::UnknownDataset(text).into()),
            Err(ProtectError::AlreadyProtected(_)) => return Err(RequestError::AlreadyProtected(text).into()),
            Err(ProtectError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(RequestError::Protect(e.to_string()).into()),
        };
        let layout = erasure_layout(&dataset.manifest).map_err(|e| RequestError::Protect(e.to_string()))?;
        let root = dataset
            .manifest
            .erasure
            .as_ref()
            .and_then(|e| e.verification.as_ref())
            .and_then(|v| crate::content::poseidon2_digest_of(&v.verify_root))
            .filter(|root| poseidon2::from_bytes(root).is_some())
            .ok_or_else(|| {
                RequestError::Protect("the protected dataset has no Poseidon2 verification root".into())
            })?;
        let nonce = {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(self.inner.state.lock().expect("market state").rng.rng(), &mut bytes);
            B256::from(bytes)
        };
        if layout.steps != steps {
            return Err(RequestError::Protect(format!(
                "the protected dataset has {} blocks a slot, not the {steps} its layout gives",
                layout.steps
            ))
            .into());
        }
        let request = Request {
            client: market.account(),
            ask,
            content: Content { cid: dataset.cid.to_bytes().into(), merkleRoot: B256::from(root) },
            expiry: checked.expiry,
            nonce,
        };
        let id = request_id(&request);
        let purchase = Purchase {
            request_id: id,
            request: request.abi_encode().into(),
            state: PurchaseState::Pending,
            error: None,
            withdrawn: false,
        };
        self.save_purchase(&purchase).await?;
        // The hosts fetch the slots from this node.
        let (fetcher, protected) = (self.inner.fetcher.clone(), dataset.clone());
        tokio::spawn(async move { fetcher.advertise(&protected).await });
        tracing::info!(request = %id, dataset = %cid_to_string(&dataset.cid), slots = request.ask.slots, "storage requested");
        self.spawn_purchase(id, false);
        Ok(id)
    }

    async fn save_purchase(&self, purchase: &Purchase) -> Result<(), crate::store::StoreError> {
        self.store().write_records(vec![put(PURCHASE, purchase.request_id.as_slice(), purchase)], 0).await?;
        self.inner
            .state
            .lock()
            .expect("market state")
            .purchases
            .insert(purchase.request_id, purchase.clone());
        self.refresh_gauges();
        Ok(())
    }

    async fn set_purchase(&self, id: RequestId, state: PurchaseState, error: Option<String>) {
        let Some(mut purchase) = self.purchase(id) else { return };
        if purchase.state != state {
            tracing::info!(request = %id, from = purchase.state.name(), to = state.name(), "purchase");
        }
        purchase.state = state;
        purchase.error = error;
        if let Err(e) = self.save_purchase(&purchase).await {
            tracing::warn!(request = %id, error = %e, "could not record a purchase");
        }
    }

    /// Runs a purchase until it ends; `recovering` after a restart (its state is read from
    /// the chain).
    pub(super) fn spawn_purchase(&self, id: RequestId, recovering: bool) {
        let market = self.clone();
        tokio::spawn(async move {
            if let Err(e) = market.run_purchase(id, recovering).await {
                tracing::warn!(request = %id, error = %e, "purchase errored");
                market.set_purchase(id, PurchaseState::Errored, Some(e.to_string())).await;
            }
        });
    }

    async fn run_purchase(&self, id: RequestId, recovering: bool) -> Result<(), ChainError> {
        let market = &self.inner.marketplace;
        let pause = self.inner.config.retry_pause;
        let Some(purchase) = self.purchase(id) else { return Ok(()) };
        let request = purchase.request();
        if recovering {
            self.set_purchase(id, PurchaseState::Unknown, None).await;
        }
        if purchase.state == PurchaseState::Pending || recovering {
            // Submitted already (before a restart, or by an attempt whose answer was lost)?
            match market.request_state(id).await {
                Ok(_) => {}
                Err(e) if e.is(M::Marketplace_UnknownRequest {}) => loop {
                    match market.request_storage(&request).await {
                        Ok(_) => break,
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(pause).await;
                            if market.request_state(id).await.is_ok() {
                                break;
                            }
                        }
                        Err(e) => return Err(e),
                    }
                },
                Err(e) => return Err(e),
            }
        }
        let mut head = persist(pause, "head", || market.chain().head()).await?;
        loop {
            let state =
                PurchaseState::of_request(persist(pause, "requestState", || market.request_state(id)).await?);
            if self.purchase(id).map(|p| p.state) != Some(state) {
                self.set_purchase(id, state, None).await;
                match state {
                    PurchaseState::Started => {
                        self.inner.metrics.market.requests_started.inc();
                    }
                    PurchaseState::Finished => {
                        self.inner.metrics.market.requests_finished.inc();
                    }
                    _ => {}
                }
            }
            if state.is_final() {
                break;
            }
            head = persist(pause, "next block", || market.chain().next_block(head.number)).await?;
        }
        if !self.purchase(id).is_some_and(|p| p.withdrawn) {
            match persist(pause, "withdrawFunds", || market.withdraw_funds(id, None)).await {
                Ok(receipt) => {
                    tracing::info!(request = %id, tx = %receipt.tx_hash, "withdrew the request's remaining funds")
                }
                Err(e) if e.is(M::Marketplace_NothingToWithdraw {}) => {}
                Err(e) => return Err(e),
            }
            if let Some(mut purchase) = self.purchase(id) {
                purchase.withdrawn = true;
                if let Err(e) = self.save_purchase(&purchase).await {
                    tracing::warn!(request = %id, error = %e, "could not record a purchase");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> StorageParams {
        StorageParams {
            duration: Some(600),
            price_per_byte_per_second: Some(U256::from(1)),
            proof_probability: Some(U256::from(1)),
            collateral_per_byte: Some(U256::from(1)),
            expiry: Some(300),
            nodes: Some(4),
            tolerance: Some(1),
        }
    }

    #[test]
    fn every_archivist_rule_refuses_with_its_reason() {
        assert_eq!(good().check(3600).unwrap().k, 3);
        let cases: Vec<(StorageParams, RequestError)> = vec![
            (StorageParams { duration: None, ..good() }, RequestError::Missing("duration")),
            (StorageParams { expiry: None, ..good() }, RequestError::Missing("expiry")),
            (
                StorageParams { price_per_byte_per_second: Some(U256::ZERO), ..good() },
                RequestError::Zero("pricePerBytePerSecond"),
            ),
            (
                StorageParams { proof_probability: Some(U256::ZERO), ..good() },
                RequestError::Zero("proofProbability"),
            ),
            (
                StorageParams { collateral_per_byte: Some(U256::ZERO), ..good() },
                RequestError::Zero("collateralPerByte"),
            ),
            (StorageParams { expiry: Some(0), ..good() }, RequestError::Zero("expiry")),
            (
                StorageParams { expiry: Some(600), ..good() },
                RequestError::ExpiryNotBeforeEnd { expiry: 600, duration: 600 },
            ),
            (
                StorageParams { duration: Some(7200), ..good() },
                RequestError::TooLong { duration: 7200, limit: 3600 },
            ),
            (
                StorageParams { tolerance: Some(5), ..good() },
                RequestError::ToleranceOverNodes { tolerance: 5, nodes: 4 },
            ),
            (
                StorageParams { nodes: Some(2), tolerance: Some(1), ..good() },
                RequestError::Coding { nodes: 2, tolerance: 1 },
            ),
            (
                StorageParams { nodes: Some(5), tolerance: Some(3), ..good() },
                RequestError::Coding { nodes: 5, tolerance: 3 },
            ),
            (
                StorageParams { nodes: Some(300), tolerance: Some(1), ..good() },
                RequestError::TooManySlots { nodes: 300, max: MAX_SLOTS },
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(params.check(3600), Err(expected));
        }
    }

    #[test]
    fn amounts_read_as_strings_or_numbers() {
        let body = r#"{"duration":600,"pricePerBytePerSecond":"1000000000000000000000","proofProbability":3,"collateralPerByte":"1","expiry":300}"#;
        let params: StorageParams = serde_json::from_str(body).unwrap();
        assert_eq!(params.price_per_byte_per_second, Some(U256::from(10u128.pow(21))));
        assert_eq!(params.proof_probability, Some(U256::from(3)));
        assert!(serde_json::from_str::<StorageParams>(r#"{"expiry":"soon"}"#).is_err());
        assert!(serde_json::from_str::<StorageParams>(r#"{"colateral":"1"}"#).is_err(), "unknown field");
    }

    #[test]
    fn a_purchase_reads_its_state_from_the_request() {
        assert_eq!(PurchaseState::of_request(RequestState::New), PurchaseState::Submitted);
        assert_eq!(PurchaseState::of_request(RequestState::Started), PurchaseState::Started);
        assert!(PurchaseState::of_request(RequestState::Cancelled).is_final());
        assert!(!PurchaseState::Started.is_final());
        assert_eq!(serde_json::to_value(PurchaseState::Submitted).unwrap(), "submitted");
    }
}
