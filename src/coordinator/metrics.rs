//! Prometheus metrics of the coordinator.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::model::{CallOutcome, Op, TxStatus};

pub struct Metrics {
    pub registry: Registry,
    transitions: IntCounterVec,
    branch_calls: IntCounterVec,
    batch_writes: HistogramVec,
    write_seconds: HistogramVec,
    batch_seconds: HistogramVec,
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
        let batch_writes = histogram(
            "tccd_db_batch_writes",
            "Writes committed together in one local transaction, by whether the commit waited for \
             the WAL flush",
            "commit",
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        );
        let write_seconds = histogram(
            "tccd_db_write_seconds",
            "Time from handing a write to the writer to its commit, by kind of write",
            "write",
            SECONDS.to_vec(),
        );
        let batch_seconds = histogram(
            "tccd_db_batch_seconds",
            "Time to read, apply and commit one batch of writes",
            "commit",
            SECONDS.to_vec(),
        );
        for c in [
            Box::new(transitions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(branch_calls.clone()),
            Box::new(batch_writes.clone()),
            Box::new(write_seconds.clone()),
            Box::new(batch_seconds.clone()),
            Box::new(stuck.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            transitions,
            branch_calls,
            batch_writes,
            write_seconds,
            batch_seconds,
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

    /// The writer committed `writes` writes in one batch, in `seconds`.
    pub fn batch(&self, durable: bool, writes: usize, seconds: f64) {
        let commit = if durable { "durable" } else { "relaxed" };
        self.batch_writes
            .with_label_values(&[commit])
            .observe(writes as f64);
        self.batch_seconds
            .with_label_values(&[commit])
            .observe(seconds);
    }

    /// A write of this kind waited `seconds` for its commit.
    pub fn write_took(&self, kind: &str, seconds: f64) {
        self.write_seconds
            .with_label_values(&[kind])
            .observe(seconds);
    }

    pub fn call(&self, op: Op, outcome: CallOutcome) {
        self.branch_calls
            .with_label_values(&[op.as_str(), outcome.as_str()])
            .inc();
    }
}

/// Buckets of the writer's latencies, 0.5 ms to 1 s.
const SECONDS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0,
];

fn histogram(name: &str, help: &str, label: &str, buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &[label])
        .expect("valid metric")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
