//! Prometheus metrics of the stock service.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct StockMetrics {
    pub registry: Registry,
    pub calls: IntCounterVec,
    pub insufficient: IntCounter,
    pub barrier_skips: IntCounterVec,
    pub inconsistencies_found: IntCounter,
    pub repaired: IntCounter,
    pub inconsistent_keys: IntGauge,
    pub store_errors: IntCounterVec,
}

impl StockMetrics {
    pub fn new() -> StockMetrics {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new("tccd_stock_calls_total", "TCC calls by op and outcome"),
            &["op", "outcome"],
        )
        .expect("metric");
        let insufficient = IntCounter::new(
            "tccd_stock_insufficient_total",
            "Tries refused for lack of stock",
        )
        .expect("metric");
        let barrier_skips = IntCounterVec::new(
            Opts::new(
                "tccd_stock_barrier_skips_total",
                "Calls the barrier turned into no-ops, by kind",
            ),
            &["kind"],
        )
        .expect("metric");
        let inconsistencies_found = IntCounter::new(
            "tccd_stock_inconsistencies_found_total",
            "Keys found differing between Redis and the database",
        )
        .expect("metric");
        let repaired = IntCounter::new(
            "tccd_stock_repaired_total",
            "Keys whose Redis hash was rewritten from the database",
        )
        .expect("metric");
        let inconsistent_keys = IntGauge::new(
            "tccd_stock_inconsistent_keys",
            "Keys that differed at the last consistency check",
        )
        .expect("metric");
        let store_errors = IntCounterVec::new(
            Opts::new("tccd_stock_store_errors_total", "Errors from a store"),
            &["store"],
        )
        .expect("metric");
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(calls.clone()),
            Box::new(insufficient.clone()),
            Box::new(barrier_skips.clone()),
            Box::new(inconsistencies_found.clone()),
            Box::new(repaired.clone()),
            Box::new(inconsistent_keys.clone()),
            Box::new(store_errors.clone()),
        ];
        for c in all {
            registry.register(c).expect("metric registered once");
        }
        StockMetrics {
            registry,
            calls,
            insufficient,
            barrier_skips,
            inconsistencies_found,
            repaired,
            inconsistent_keys,
            store_errors,
        }
    }
}

impl Default for StockMetrics {
    fn default() -> Self {
        Self::new()
    }
}
