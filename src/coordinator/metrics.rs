//! Prometheus metrics of the coordinator.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::model::{CallOutcome, Op, TxStatus};

pub struct Metrics {
    pub registry: Registry,
    transitions: IntCounterVec,
    branch_calls: IntCounterVec,
    batch_writes: HistogramVec,
    pub stuck: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let transitions = IntCounterVec::new(
            Opts::new(
                "tccd_transaction_transitions_total",
                "Global transaction status changes",
            ),
            &["from", "to"],
        )
        .expect("valid metric");
        let branch_calls = IntCounterVec::new(
            Opts::new(
                "tccd_branch_calls_total",
                "Calls to resources by operation and outcome",
            ),
            &["op", "outcome"],
        )
        .expect("valid metric");
        let stuck = IntGauge::new(
            "tccd_stuck_transactions",
            "Decided transactions whose phase two has failed at least --stuck-after-attempts times",
        )
        .expect("valid metric");
        let batch_writes = HistogramVec::new(
            HistogramOpts::new(
                "tccd_db_batch_writes",
                "Writes committed together in one local transaction, by whether the commit waited \
                 for the WAL flush",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["commit"],
        )
        .expect("valid metric");
        for c in [
            Box::new(transitions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(branch_calls.clone()),
            Box::new(batch_writes.clone()),
            Box::new(stuck.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            transitions,
            branch_calls,
            batch_writes,
            stuck,
        }
    }

    /// `from` is None for a new transaction.
    pub fn transition(&self, from: Option<TxStatus>, to: TxStatus) {
        let from = from.map_or("none", TxStatus::as_str);
        self.transitions
            .with_label_values(&[from, to.as_str()])
            .inc();
    }

    /// The writer committed `writes` writes in one batch.
    pub fn batch(&self, durable: bool, writes: usize) {
        let commit = if durable { "durable" } else { "relaxed" };
        self.batch_writes
            .with_label_values(&[commit])
            .observe(writes as f64);
    }

    pub fn call(&self, op: Op, outcome: CallOutcome) {
        self.branch_calls
            .with_label_values(&[op.as_str(), outcome.as_str()])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
