//! The marketplace in the node: purchasing, sales and validation over the chain port.
//!
//! - **Purchasing** ([`purchasing`]): a client's storage requests. The dataset is protected
//!   (erasure-coded into slots, with its verification root), the price approved and the
//!   request submitted; the purchase then follows the request's state on chain (pending →
//!   submitted → started → finished, or cancelled, failed, errored) and withdraws what is
//!   left when it ends. The client keeps serving the dataset to the hosts that fill its slots.
//! - **Sales** ([`sales`]): a host's availabilities ([`availability`]) and the slots it sells
//!   them to. Storage requests (and slots freed for repair) seen in the marketplace's events
//!   go into a bounded slot queue ([`queue`]), most profitable first; workers take slots from
//!   it and run each sale through Archivist's states: reserve the slot, fetch the slot's data
//!   (or rebuild it from `K` other slots), check it against the slot root, prove, fill it with
//!   collateral, prove whenever a proof is required, and collect payout and collateral at the
//!   end. A sale's bytes are released on every exit.
//! - **Validation** ([`validation`]): a validator tracks filled slots (of its group) and marks
//!   missed proofs when the contract allows, for the validator's reward.
//!
//! State lives in the store's records (availabilities, sales, purchases), so a restarted node
//! recovers each sale and purchase from its record and the chain: a host whose slot data is
//! damaged or gone fetches or rebuilds it before its next proof. Each decision that needs no
//! I/O (matching, queue order, validation of a request, which state a chain state means) is a
//! plain function, tested on its own; the tasks here carry out what they decide.

pub mod availability;
pub mod proving;
pub mod purchasing;
pub mod queue;
pub mod sales;
pub mod validation;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::hex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::availability::{
    Availability, AvailabilityError, AvailabilityId, AvailabilityPatch, NewAvailability,
};
use self::proving::SlotProver;
use self::purchasing::{Purchase, PurchaseState};
use self::queue::{SLOT_QUEUE_MAX, SlotQueue};
use self::sales::{Sale, SaleState};
use self::validation::ValidatorConfig;
use crate::chain::market::{Marketplace, RequestId, SlotId};
use crate::chain::{ChainError, persist};
use crate::dataset::{Datasets, Fetcher};
use crate::durability::Durability;
use crate::metrics::Metrics;
use crate::runtime::NodeRng;
use crate::store::{RecordWrite, SharedStore, StoreError};

/// What the marketplace needs besides the node's own services.
#[derive(Clone)]
pub struct MarketPorts {
    /// The marketplace, for this node's account.
    pub marketplace: Marketplace,
    /// How this node proves the slots it sells; a node without one does not sell.
    pub prover: Option<Arc<dyn SlotProver>>,
}

impl std::fmt::Debug for MarketPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketPorts")
            .field("marketplace", &self.marketplace.address())
            .field("account", &self.marketplace.account())
            .field("sells", &self.prover.is_some())
            .finish()
    }
}

/// Settings of the marketplace services.
#[derive(Clone, Debug)]
pub struct MarketConfig {
    /// Runs a validator, with these settings.
    pub validator: Option<ValidatorConfig>,
    /// Slots waiting for a worker, at most.
    pub slot_queue_max: usize,
    /// Sales prepared at once (reserving, downloading, first proof, filling).
    pub sale_workers: usize,
    /// How long to wait before trying a chain call again when the endpoint failed.
    pub retry_pause: Duration,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            validator: None,
            slot_queue_max: SLOT_QUEUE_MAX,
            sale_workers: 3,
            retry_pause: Duration::from_secs(5),
        }
    }
}

/// The running marketplace services of a node.
#[derive(Clone)]
pub struct Market {
    inner: Arc<Inner>,
}

struct Inner {
    marketplace: Marketplace,
    prover: Option<Arc<dyn SlotProver>>,
    datasets: Datasets,
    fetcher: Fetcher,
    durability: Durability,
    metrics: Arc<Metrics>,
    config: MarketConfig,
    state: Mutex<State>,
    /// Missed proofs this validator marked.
    marks: Mutex<Vec<validation::Mark>>,
    /// Wakes the sale workers: the queue has slots.
    queued: tokio::sync::Notify,
}

struct State {
    availabilities: BTreeMap<AvailabilityId, Availability>,
    purchases: BTreeMap<RequestId, Purchase>,
    sales: BTreeMap<SlotId, Sale>,
    queue: SlotQueue,
    rng: NodeRng,
}

/// Record keys in the store.
const AVAILABILITY: &str = "availability/";
const PURCHASE: &str = "purchase/";
const SALE: &str = "sale/";

fn record_key(prefix: &str, id: &[u8]) -> Vec<u8> {
    format!("{prefix}{}", hex::encode(id)).into_bytes()
}

fn put<T: Serialize>(prefix: &str, id: &[u8], value: &T) -> RecordWrite {
    RecordWrite::Put {
        key: record_key(prefix, id),
        value: serde_json::to_vec(value).expect("records serialize"),
    }
}

async fn load<T: DeserializeOwned>(store: &SharedStore, prefix: &str) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for (key, value) in store.records(prefix.as_bytes().to_vec()).await? {
        match serde_json::from_slice(&value) {
            Ok(record) => out.push(record),
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(&key),
                error = %e,
                "skipping an unreadable marketplace record"
            ),
        }
    }
    Ok(out)
}

impl Market {
    /// Loads the records, recovers every sale and purchase that had not ended, and starts
    /// following the marketplace (and validating, when configured).
    pub async fn start(
        ports: MarketPorts,
        fetcher: Fetcher,
        durability: Durability,
        config: MarketConfig,
        rng: NodeRng,
        metrics: Arc<Metrics>,
    ) -> Result<Market, StoreError> {
        let datasets = fetcher.datasets().clone();
        let store = datasets.store().clone();
        let availabilities: Vec<Availability> = load(&store, AVAILABILITY).await?;
        let purchases: Vec<Purchase> = load(&store, PURCHASE).await?;
        let sales: Vec<Sale> = load(&store, SALE).await?;
        let state = State {
            availabilities: availabilities.into_iter().map(|a| (a.id, a)).collect(),
            purchases: purchases.iter().map(|p| (p.request_id, p.clone())).collect(),
            sales: sales.iter().map(|s| (s.slot_id(), s.clone())).collect(),
            queue: SlotQueue::new(config.slot_queue_max),
            rng,
        };
        let inner = Inner {
            marketplace: ports.marketplace,
            prover: ports.prover,
            datasets,
            fetcher,
            durability,
            metrics,
            config,
            state: Mutex::new(state),
            marks: Mutex::new(Vec::new()),
            queued: tokio::sync::Notify::new(),
        };
        let market = Market { inner: Arc::new(inner) };
        market.refresh_gauges();
        for purchase in purchases.into_iter().filter(|p| !p.state.is_final()) {
            market.spawn_purchase(purchase.request_id, true);
        }
        market.recover_sales(sales).await;
        market.spawn_events();
        if market.sells() {
            for _ in 0..market.inner.config.sale_workers {
                market.spawn_sale_worker();
            }
        }
        if let Some(validator) = market.inner.config.validator {
            market.spawn_validator(validator);
        }
        Ok(market)
    }

    pub fn marketplace(&self) -> &Marketplace {
        &self.inner.marketplace
    }

    /// Whether this node sells storage (it has a prover).
    pub fn sells(&self) -> bool {
        self.inner.prover.is_some()
    }

    fn store(&self) -> &SharedStore {
        self.inner.datasets.store()
    }

    // --- Availabilities ----------------------------------------------------------------------

    pub fn availabilities(&self) -> Vec<Availability> {
        self.inner.state.lock().expect("market state").availabilities.values().cloned().collect()
    }

    /// Offers storage: the availability's size is reserved in the store's quota.
    pub async fn add_availability(&self, new: NewAvailability) -> Result<Availability, MarketError> {
        if !self.sells() {
            return Err(MarketError::NoProver);
        }
        let space = self.store().space().await?;
        let free = space.quota_max_bytes.saturating_sub(space.quota_used_bytes + space.quota_reserved_bytes);
        let id = {
            let state = self.inner.state.lock().expect("market state");
            state.availabilities.keys().next_back().map_or(1, |last| last + 1)
        };
        let availability = new.create(id, free)?;
        let write = put(AVAILABILITY, &id.to_be_bytes(), &availability);
        match self.store().write_records(vec![write], availability.total_size as i64).await {
            Err(StoreError::QuotaExceeded { available_bytes, .. }) => {
                return Err(AvailabilityError::TooLarge {
                    requested: availability.total_size,
                    free: available_bytes,
                }
                .into());
            }
            result => result?,
        }
        self.inner.state.lock().expect("market state").availabilities.insert(id, availability.clone());
        tracing::info!(availability = id, total_size = availability.total_size, "storage offered for sale");
        Ok(availability)
    }

    /// Changes an availability; growing it reserves more of the quota, shrinking it releases.
    pub async fn update_availability(
        &self,
        id: AvailabilityId,
        patch: AvailabilityPatch,
    ) -> Result<Availability, MarketError> {
        let current =
            self.availabilities().into_iter().find(|a| a.id == id).ok_or(AvailabilityError::Unknown(id))?;
        let space = self.store().space().await?;
        let free = space.quota_max_bytes.saturating_sub(space.quota_used_bytes + space.quota_reserved_bytes);
        let next = patch.apply(&current, free)?;
        let delta = next.total_size as i64 - current.total_size as i64;
        self.store().write_records(vec![put(AVAILABILITY, &id.to_be_bytes(), &next)], delta).await?;
        self.inner.state.lock().expect("market state").availabilities.insert(id, next.clone());
        self.inner.queued.notify_waiters();
        Ok(next)
    }

    // --- Views ---------------------------------------------------------------------------------

    pub fn purchases(&self) -> Vec<Purchase> {
        self.inner.state.lock().expect("market state").purchases.values().cloned().collect()
    }

    pub fn purchase(&self, id: RequestId) -> Option<Purchase> {
        self.inner.state.lock().expect("market state").purchases.get(&id).cloned()
    }

    pub fn sales(&self) -> Vec<Sale> {
        self.inner.state.lock().expect("market state").sales.values().cloned().collect()
    }

    pub fn sale(&self, id: SlotId) -> Option<Sale> {
        self.inner.state.lock().expect("market state").sales.get(&id).cloned()
    }

    /// Sold slots whose data was fetched or rebuilt again since this node started, because it
    /// was damaged or gone.
    pub fn slots_restored(&self) -> u64 {
        self.inner.metrics.market.slots_restored.get()
    }

    fn refresh_gauges(&self) {
        let state = self.inner.state.lock().expect("market state");
        let metrics = &self.inner.metrics;
        for each in PurchaseState::ALL {
            let count = state.purchases.values().filter(|p| p.state == each).count();
            metrics.market.purchases.get_or_create(&state_label(each.name())).set(count as i64);
        }
        let mut locked = alloy_primitives::U256::ZERO;
        for sale in state.sales.values() {
            locked += sale.collateral_locked();
        }
        for each in SaleState::ALL {
            let count = state.sales.values().filter(|s| s.state == each).count();
            metrics.market.sales.get_or_create(&state_label(each.name())).set(count as i64);
        }
        metrics.market.collateral_locked.set(tokens(locked));
    }
}

impl Market {
    /// Follows the marketplace's events from the newest block: new requests and freed slots
    /// go to the slot queue (when this node sells), requests that are filled or ended leave it.
    fn spawn_events(&self) {
        use crate::chain::contracts::Marketplace::MarketplaceEvents as E;
        use crate::chain::events::{EventFollower, market_event};
        let market = self.clone();
        tokio::spawn(async move {
            let chain = market.inner.marketplace.clone();
            let pause = market.inner.config.retry_pause;
            let head = match persist(pause, "head", || chain.chain().head()).await {
                Ok(head) => head,
                Err(e) => {
                    tracing::error!(error = %e, "cannot follow the marketplace");
                    return;
                }
            };
            let mut events = EventFollower::new(chain.chain().clone(), chain.address(), head.number + 1, 0);
            loop {
                let logs = match events.next().await {
                    Ok((_, logs)) => logs,
                    Err(e) => {
                        tracing::debug!(error = %e, "reading the marketplace's events failed; trying again");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                };
                for log in logs {
                    match market_event(&log) {
                        Some(E::StorageRequested(e)) => {
                            let slots = (0..e.ask.slots)
                                .map(|slot_index| queue::QueuedSlot {
                                    request: e.requestId,
                                    slot_index,
                                    ask: e.ask.clone(),
                                    expires_at: e.expiry,
                                    repair: false,
                                    tiebreak: 0,
                                })
                                .collect();
                            market.offer(slots);
                        }
                        Some(E::SlotFreed(e)) => {
                            if !market.sells() {
                                continue;
                            }
                            let id = crate::chain::market::slot_id(e.requestId, e.slotIndex);
                            if market.sale(id).is_some_and(|s| !s.state.is_final()) {
                                continue; // this node's own slot, lost: its sale sees it
                            }
                            let found = async {
                                let request = chain.request(e.requestId).await?;
                                let end = chain.request_end(e.requestId).await?;
                                Ok::<_, ChainError>((request, end))
                            }
                            .await;
                            if let Ok((request, end)) = found {
                                let slot = queue::QueuedSlot {
                                    request: e.requestId,
                                    slot_index: e.slotIndex,
                                    ask: request.ask,
                                    expires_at: end,
                                    repair: true,
                                    tiebreak: 0,
                                };
                                market.offer(vec![slot]);
                            }
                        }
                        Some(E::RequestFulfilled(e)) => {
                            market.inner.state.lock().expect("market state").queue.remove_request(e.requestId)
                        }
                        Some(E::RequestCancelled(e)) => {
                            market.inner.state.lock().expect("market state").queue.remove_request(e.requestId)
                        }
                        Some(E::RequestFailed(e)) => {
                            market.inner.state.lock().expect("market state").queue.remove_request(e.requestId)
                        }
                        _ => {}
                    }
                }
            }
        });
    }
}

/// A token amount as a metric's value.
fn tokens(amount: alloy_primitives::U256) -> f64 {
    amount.to_string().parse().unwrap_or(f64::MAX)
}

/// Every state's gauge at 0, so `market_purchases` and `market_sales` have a series for each
/// state from the start (also on a node without a chain), as dashboards and alerts expect.
pub fn zero_state_gauges(metrics: &crate::metrics::MarketMetrics) {
    for each in PurchaseState::ALL {
        metrics.purchases.get_or_create(&state_label(each.name())).set(0);
    }
    for each in SaleState::ALL {
        metrics.sales.get_or_create(&state_label(each.name())).set(0);
    }
}

fn state_label(state: &str) -> crate::metrics::StateLabels {
    crate::metrics::StateLabels { state: state.to_owned() }
}

/// Why a marketplace operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error(transparent)]
    Availability(#[from] AvailabilityError),
    #[error(transparent)]
    Request(#[from] purchasing::RequestError),
    #[error("this node sells no storage: start it with a proving circuit (--proving-key, or --circom-*)")]
    NoProver,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}
