//! Prometheus metrics of the node, served as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Space;

/// Labels of an HTTP request: method, route template (not the raw path) and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// Labels of a per-dataset gauge: the dataset's manifest CID.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatasetLabels {
    pub dataset: String,
}

/// Labels of an HTTP latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// Labels of a per-state gauge: the state's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// The marketplace's metrics, named `market_*`. Token amounts are in the token's smallest unit.
pub struct MarketMetrics {
    /// Purchases (storage requests made here), by state.
    pub purchases: Family<StateLabels, Gauge>,
    /// Sales (slots sold here), by state.
    pub sales: Family<StateLabels, Gauge>,
    pub requests_started: Counter,
    pub requests_finished: Counter,
    pub slots_filled: Counter,
    pub proofs_submitted: Counter,
    /// Proofs of this host's slots marked missing (each a slash).
    pub proofs_missed: Counter,
    /// Missed proofs this validator marked.
    pub proofs_marked_missing: Counter,
    /// Slots whose data was fetched or rebuilt again because it did not prove.
    pub slots_restored: Counter,
    pub collateral_locked: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Tokens collected with payouts (payment and collateral returned).
    pub payouts: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl MarketMetrics {
    fn register(registry: &mut Registry) -> MarketMetrics {
        let m = MarketMetrics {
            purchases: Family::default(),
            sales: Family::default(),
            requests_started: Counter::default(),
            requests_finished: Counter::default(),
            slots_filled: Counter::default(),
            proofs_submitted: Counter::default(),
            proofs_missed: Counter::default(),
            proofs_marked_missing: Counter::default(),
            slots_restored: Counter::default(),
            collateral_locked: Gauge::default(),
            payouts: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("market");
        r.register("purchases", "Storage requests made by this node, by state", m.purchases.clone());
        r.register("sales", "Slots sold by this node, by state", m.sales.clone());
        r.register(
            "requests_started",
            "Requests of this node whose slots all filled",
            m.requests_started.clone(),
        );
        r.register(
            "requests_finished",
            "Requests of this node that ran their whole duration",
            m.requests_finished.clone(),
        );
        r.register("slots_filled", "Slots this host filled", m.slots_filled.clone());
        r.register("proofs_submitted", "Storage proofs this host submitted", m.proofs_submitted.clone());
        r.register("proofs_missed", "Proofs of this host marked missing (slashes)", m.proofs_missed.clone());
        r.register(
            "proofs_marked_missing",
            "Missed proofs this validator marked",
            m.proofs_marked_missing.clone(),
        );
        r.register(
            "slots_restored",
            "Sold slots fetched or rebuilt again because their data did not prove",
            m.slots_restored.clone(),
        );
        r.register(
            "collateral_locked",
            "Collateral this host has put up in filled slots (tokens)",
            m.collateral_locked.clone(),
        );
        r.register("payouts", "Tokens this host collected at the end of its sales", m.payouts.clone());
        m
    }
}

/// All node metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub blocks_stored: Gauge,
    pub bytes_stored: Gauge,
    pub quota_max_bytes: Gauge,
    pub peer_count: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration_seconds: Family<RouteLabels, Histogram>,
    pub upload_bytes: Counter,
    pub download_bytes: Counter,
    pub uploads_completed: Counter,
    pub uploads_failed: Counter,
    pub datasets_protected: Counter,
    pub blocks_recovered: Counter,
    pub slots_held: Gauge,
    pub repairs_started: Counter,
    pub repairs_completed: Counter,
    pub repairs_failed: Counter,
    pub repair_bytes: Counter,
    /// Slots of a protected dataset proven held at its last check, by dataset.
    pub dataset_live_slots: Family<DatasetLabels, Gauge>,
    /// Slots not proven held at their dataset's last check, summed over the datasets this node
    /// leads the checks of (0 when every slot is live, or nothing is checked here).
    pub dataset_live_slots_missing: Gauge,
    pub blocks_sent: Counter,
    pub blocks_received: Counter,
    pub block_bytes_sent: Counter,
    pub block_bytes_received: Counter,
    pub want_list_size: Gauge,
    /// Scores of connected peers, sampled periodically by the block exchange.
    pub peer_score: Histogram,
    pub market: MarketMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let blocks_stored = Gauge::default();
        let bytes_stored = Gauge::default();
        let quota_max_bytes = Gauge::default();
        let peer_count = Gauge::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_request_duration_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 4.0, 10))
        });
        let upload_bytes = Counter::default();
        let download_bytes = Counter::default();
        let uploads_completed = Counter::default();
        let uploads_failed = Counter::default();
        let datasets_protected = Counter::default();
        let blocks_recovered = Counter::default();
        let slots_held = Gauge::default();
        let repairs_started = Counter::default();
        let repairs_completed = Counter::default();
        let repairs_failed = Counter::default();
        let repair_bytes = Counter::default();
        let dataset_live_slots = Family::<DatasetLabels, Gauge>::default();
        let dataset_live_slots_missing = Gauge::default();
        let blocks_sent = Counter::default();
        let blocks_received = Counter::default();
        let block_bytes_sent = Counter::default();
        let block_bytes_received = Counter::default();
        let want_list_size = Gauge::default();
        let peer_score = Histogram::new([-200.0, -100.0, -50.0, -10.0, 0.0, 10.0, 50.0, 100.0]);
        registry.register("blocks_stored", "Distinct blocks held in the store", blocks_stored.clone());
        registry.register("bytes_stored", "Bytes of distinct blocks held in the store", bytes_stored.clone());
        registry.register("quota_max_bytes", "Storage quota", quota_max_bytes.clone());
        registry.register("peer_count", "Connected peers", peer_count.clone());
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (headers; streamed bodies continue after)",
            http_request_duration_seconds.clone(),
        );
        registry.register("upload_bytes", "Bytes received in uploads", upload_bytes.clone());
        registry.register("download_bytes", "Bytes sent in downloads", download_bytes.clone());
        registry.register("uploads_completed", "Uploads stored as datasets", uploads_completed.clone());
        registry.register(
            "uploads_failed",
            "Uploads rolled back (bad input, quota, disconnect)",
            uploads_failed.clone(),
        );
        registry.register(
            "datasets_protected",
            "Datasets erasure-coded into slots here",
            datasets_protected.clone(),
        );
        registry.register(
            "blocks_recovered",
            "Blocks of protected datasets rebuilt by erasure decoding (missing or corrupt)",
            blocks_recovered.clone(),
        );
        registry.register("slots_held", "Slots of protected datasets held by this node", slots_held.clone());
        registry.register(
            "repairs_started",
            "Missing slots handed to a new host by this node (placement included)",
            repairs_started.clone(),
        );
        registry.register(
            "repairs_completed",
            "Slot hand-overs the new host confirmed",
            repairs_completed.clone(),
        );
        registry.register("repairs_failed", "Slot hand-overs refused or timed out", repairs_failed.clone());
        registry.register(
            "repair_bytes",
            "Block bytes fetched to rebuild missing blocks",
            repair_bytes.clone(),
        );
        registry.register(
            "dataset_live_slots",
            "Slots of a protected dataset proven held at its last check (redundancy left: live - K)",
            dataset_live_slots.clone(),
        );
        registry.register(
            "dataset_live_slots_missing",
            "Slots not proven held at their last check, over the datasets this node checks (alert when above 0)",
            dataset_live_slots_missing.clone(),
        );
        registry.register("blocks_sent", "Blocks sent to peers", blocks_sent.clone());
        registry.register("blocks_received", "Verified blocks received from peers", blocks_received.clone());
        registry.register("block_bytes_sent", "Block bytes sent to peers", block_bytes_sent.clone());
        registry.register(
            "block_bytes_received",
            "Verified block bytes received from peers",
            block_bytes_received.clone(),
        );
        registry.register("want_list_size", "Blocks this node wants from peers", want_list_size.clone());
        registry.register("peer_score", "Scores of connected peers, sampled every 30 s", peer_score.clone());
        let market = MarketMetrics::register(&mut registry);
        Metrics {
            market,
            registry,
            blocks_sent,
            blocks_received,
            block_bytes_sent,
            block_bytes_received,
            want_list_size,
            peer_score,
            blocks_stored,
            bytes_stored,
            quota_max_bytes,
            peer_count,
            http_requests,
            http_request_duration_seconds,
            upload_bytes,
            download_bytes,
            uploads_completed,
            uploads_failed,
            datasets_protected,
            blocks_recovered,
            slots_held,
            repairs_started,
            repairs_completed,
            repairs_failed,
            repair_bytes,
            dataset_live_slots,
            dataset_live_slots_missing,
        }
    }

    /// Sets the store gauges from a space summary.
    pub fn observe_space(&self, space: &Space) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.blocks_stored.set(clamp(space.total_blocks));
        self.bytes_stored.set(clamp(space.quota_used_bytes));
        self.quota_max_bytes.set(clamp(space.quota_max_bytes));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_documented_metrics() {
        let m = Metrics::new();
        m.observe_space(&Space {
            total_blocks: 3,
            quota_max_bytes: 10,
            quota_used_bytes: 7,
            quota_reserved_bytes: 0,
        });
        m.http_requests
            .get_or_create(&HttpLabels { method: "GET".into(), route: "/health".into(), status: 200 })
            .inc();
        let text = m.encode();
        for line in [
            "blocks_stored 3",
            "bytes_stored 7",
            "peer_count 0",
            "upload_bytes_total 0",
            "http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1",
            "market_proofs_submitted_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
