//! The benchmark's report: one entry per backend and mode, as JSON
//! (`{"postgres": {"coordinated": {"tx_per_s", "p50_ms", ...}, "baseline": {...},
//! "ratio_coordinated_to_baseline", ...}, "sqlite": {...}}`) and as a table on stdout; and the
//! comparison of two reports.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::measure::{Rss, percentile_ms};
use super::workload::Outcome;
use super::{Backend, Config, Mode};
use crate::demo::report::{Align, BOLD, Cell, GREEN, Out, RED, Table, YELLOW};

/// The design's target: coordinated throughput at least this share of the baseline's.
pub const RATIO_TARGET: f64 = 0.7;
/// The design's target: throughput with a big history within this many % of a small one.
pub const SCALE_TARGET_PCT: f64 = 10.0;

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// One mode on one backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModeReport {
    /// Committed checkouts per second of the measured window.
    pub tx_per_s: f64,
    /// Latency of a whole checkout (all its requests), committed ones only.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Checkouts that failed inside the window.
    pub errors: u64,
    /// `pg_stat_database.xact_commit` delta per committed checkout: of the coordinator's
    /// database for coordinated/dtm, of the two stock databases for baseline (Postgres only).
    pub db_commits_per_tx: Option<f64>,
    /// ... of the two stock databases, every mode.
    pub stock_db_commits_per_tx: Option<f64>,
    /// ... of the coordinator's database, every mode.
    pub coordinator_db_commits_per_tx: Option<f64>,
    /// Rows inserted, updated or deleted per committed checkout (`pg_stat_database`), in the
    /// coordinator's database and in the two stock databases.
    pub coordinator_db_rows_per_tx: Option<f64>,
    pub stock_db_rows_per_tx: Option<f64>,
    pub tx: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub window_s: f64,
    pub warmup_s: f64,
    pub clients: u32,
    /// Finished transactions put in the coordinator's tables before the run.
    pub prefill: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub warmup_errors: u64,
    /// VmHWM of every child at the end of this mode (the peak since it started).
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// VmRSS of every child at the end of this mode.
    pub rss_kib: BTreeMap<String, u64>,
}

impl ModeReport {
    /// `coordinator_db`: whether the coordinator's database is the one the mode used (not when
    /// the dtm mode runs against an external DTM server).
    pub fn new(
        mode: Mode,
        cfg: &Config,
        o: &Outcome,
        rss: BTreeMap<String, Rss>,
        coordinator_db: bool,
    ) -> ModeReport {
        let tx = o.latencies_us.len() as u64;
        let window = o.window.as_secs_f64();
        let per_tx = |n: i64| (tx > 0).then(|| round(n as f64 / tx as f64, 2));
        let (coord, stock, coord_rows, stock_rows) = match &o.commits {
            Some(c) => (
                per_tx(c.coordinator.commits),
                per_tx(c.stock().commits),
                per_tx(c.coordinator.rows),
                per_tx(c.stock().rows),
            ),
            None => (None, None, None, None),
        };
        let coord = coord.filter(|_| coordinator_db);
        let coord_rows = coord_rows.filter(|_| coordinator_db);
        let mean = if tx > 0 {
            o.latencies_us.iter().map(|&u| u64::from(u)).sum::<u64>() as f64 / tx as f64 / 1000.0
        } else {
            0.0
        };
        ModeReport {
            tx_per_s: round(tx as f64 / window, 1),
            p50_ms: round(percentile_ms(&o.latencies_us, 50.0), 3),
            p95_ms: round(percentile_ms(&o.latencies_us, 95.0), 3),
            p99_ms: round(percentile_ms(&o.latencies_us, 99.0), 3),
            errors: o.errors,
            db_commits_per_tx: match mode {
                Mode::Baseline => stock,
                Mode::Coordinated | Mode::Dtm => coord,
            },
            stock_db_commits_per_tx: stock,
            coordinator_db_commits_per_tx: coord,
            coordinator_db_rows_per_tx: coord_rows,
            stock_db_rows_per_tx: stock_rows,
            tx,
            mean_ms: round(mean, 3),
            max_ms: round(percentile_ms(&o.latencies_us, 100.0), 3),
            window_s: window,
            warmup_s: cfg.warmup.as_secs_f64(),
            clients: cfg.clients,
            prefill: cfg.prefill,
            error_kinds: o.error_kinds.clone(),
            warmup_errors: o.warmup_errors,
            peak_rss_kib: rss.iter().map(|(n, r)| (n.clone(), r.peak_kib)).collect(),
            rss_kib: rss.iter().map(|(n, r)| (n.clone(), r.now_kib)).collect(),
        }
    }
}

/// Every mode on one backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinated: Option<ModeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtm: Option<ModeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<ModeReport>,
    /// coordinated tx/s ÷ baseline tx/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_coordinated_to_baseline: Option<f64>,
    /// dtm tx/s ÷ baseline tx/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_dtm_to_baseline: Option<f64>,
    /// VmHWM of every child at the end of the backend's run.
    pub peak_rss_kib: BTreeMap<String, u64>,
}

impl BackendReport {
    pub fn set(&mut self, mode: Mode, r: ModeReport) {
        match mode {
            Mode::Coordinated => self.coordinated = Some(r),
            Mode::Dtm => self.dtm = Some(r),
            Mode::Baseline => self.baseline = Some(r),
        }
    }

    /// Computes the ratios.
    pub fn finish(&mut self) {
        let ratio = |m: &Option<ModeReport>| match (m, &self.baseline) {
            (Some(m), Some(b)) if b.tx_per_s > 0.0 => Some(round(m.tx_per_s / b.tx_per_s, 3)),
            _ => None,
        };
        self.ratio_coordinated_to_baseline = ratio(&self.coordinated);
        self.ratio_dtm_to_baseline = ratio(&self.dtm);
    }

    pub fn modes(&self) -> Vec<(&'static str, &ModeReport)> {
        [
            ("coordinated", &self.coordinated),
            ("dtm", &self.dtm),
            ("baseline", &self.baseline),
        ]
        .into_iter()
        .filter_map(|(n, m)| m.as_ref().map(|m| (n, m)))
        .collect()
    }
}

/// The whole report: one entry per backend run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<BackendReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<BackendReport>,
}

impl Report {
    pub fn set(&mut self, backend: Backend, r: BackendReport) {
        match backend {
            Backend::Postgres => self.postgres = Some(r),
            Backend::Sqlite => self.sqlite = Some(r),
        }
    }

    pub fn backends(&self) -> Vec<(&'static str, &BackendReport)> {
        [("postgres", &self.postgres), ("sqlite", &self.sqlite)]
            .into_iter()
            .filter_map(|(n, b)| b.as_ref().map(|b| (n, b)))
            .collect()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn mib(kib: Option<&u64>) -> String {
    kib.map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

/// The table of every backend and mode, then the ratios.
pub fn print_table(out: &Out, report: &Report) {
    out.line(out.paint(BOLD, "Results"));
    let mut t = Table::new(
        &[
            "backend",
            "mode",
            "tx/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "db commits/tx",
            "stock db commits/tx",
            "coord",
            "inventory",
            "wallet",
        ],
        &[
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
    )
    .groups(&[("", 9), ("peak RSS MiB", 3)]);
    for (backend, b) in report.backends() {
        for (mode, m) in b.modes() {
            t.row(vec![
                backend.into(),
                mode.into(),
                format!("{:.1}", m.tx_per_s).into(),
                format!("{:.2}", m.p50_ms).into(),
                format!("{:.2}", m.p95_ms).into(),
                format!("{:.2}", m.p99_ms).into(),
                Cell::new(m.errors.to_string()).style_if(m.errors > 0, RED),
                opt(m.db_commits_per_tx).into(),
                opt(m.stock_db_commits_per_tx).into(),
                mib(m.peak_rss_kib.get("coordinator")).into(),
                mib(m.peak_rss_kib.get("inventory")).into(),
                mib(m.peak_rss_kib.get("wallet")).into(),
            ]);
        }
    }
    out.table(&t);
    for (backend, b) in report.backends() {
        for (name, ratio) in [
            ("coordinated", b.ratio_coordinated_to_baseline),
            ("dtm", b.ratio_dtm_to_baseline),
        ] {
            if let Some(r) = ratio {
                let verdict = if r >= RATIO_TARGET {
                    out.paint(GREEN, format!("meets the target ≥ {RATIO_TARGET}"))
                } else {
                    out.paint(YELLOW, format!("below the target ≥ {RATIO_TARGET}"))
                };
                out.line(format!(
                    "  {backend}: {name} / baseline = {r:.2} ({verdict})"
                ));
            }
        }
    }
}

fn pct(before: f64, now: f64) -> Option<f64> {
    (before > 0.0).then(|| (now - before) / before * 100.0)
}

/// This run against an earlier one, for every backend and mode both have.
pub fn print_comparison(out: &Out, path: &Path, before: &Report, now: &Report) {
    out.line(out.paint(
        BOLD,
        format!("Compared with {} (change = now vs before)", path.display()),
    ));
    let mut t = Table::new(
        &[
            "backend", "mode", "prefill", "tx/s", "change", "p50 ms", "p99 ms", "change",
            "prefill", "tx/s", "p50 ms", "p99 ms",
        ],
        &[
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
    )
    .groups(&[("", 2), ("now", 6), ("before", 4)]);
    let mut verdicts = Vec::new();
    for (backend, b) in now.backends() {
        let Some((_, old)) = before.backends().into_iter().find(|(n, _)| *n == backend) else {
            continue;
        };
        for (mode, m) in b.modes() {
            let Some((_, o)) = old.modes().into_iter().find(|(n, _)| *n == mode) else {
                continue;
            };
            let tx_change = pct(o.tx_per_s, m.tx_per_s);
            let p99_change = pct(o.p99_ms, m.p99_ms);
            let show = |c: Option<f64>| c.map(|c| format!("{c:+.1} %")).unwrap_or("-".into());
            t.row(vec![
                backend.into(),
                mode.into(),
                m.prefill.to_string().into(),
                format!("{:.1}", m.tx_per_s).into(),
                show(tx_change).into(),
                format!("{:.2}", m.p50_ms).into(),
                format!("{:.2}", m.p99_ms).into(),
                show(p99_change).into(),
                o.prefill.to_string().into(),
                format!("{:.1}", o.tx_per_s).into(),
                format!("{:.2}", o.p50_ms).into(),
                format!("{:.2}", o.p99_ms).into(),
            ]);
            if let Some(c) = tx_change {
                let ok = c.abs() <= SCALE_TARGET_PCT;
                verdicts.push(format!(
                    "  {backend} {mode}: {:.1} tx/s with prefill {} vs {:.1} tx/s with prefill {}: \
                     {c:+.1} % ({})",
                    m.tx_per_s,
                    m.prefill,
                    o.tx_per_s,
                    o.prefill,
                    if ok {
                        out.paint(GREEN, format!("within {SCALE_TARGET_PCT} %"))
                    } else {
                        out.paint(YELLOW, format!("more than {SCALE_TARGET_PCT} % apart"))
                    }
                ));
            }
        }
    }
    if t.is_empty() {
        out.line("  (no backend and mode in common)");
        return;
    }
    out.table(&t);
    for v in verdicts {
        out.line(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_json_has_the_promised_shape() {
        let mut b = BackendReport::default();
        b.set(
            Mode::Coordinated,
            ModeReport {
                tx_per_s: 800.0,
                ..ModeReport::default()
            },
        );
        b.set(
            Mode::Baseline,
            ModeReport {
                tx_per_s: 1000.0,
                ..ModeReport::default()
            },
        );
        b.finish();
        let mut r = Report::default();
        r.set(Backend::Postgres, b);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["postgres"]["ratio_coordinated_to_baseline"], json!(0.8));
        for field in [
            "tx_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "errors",
            "db_commits_per_tx",
            "stock_db_commits_per_tx",
            "peak_rss_kib",
        ] {
            assert!(v["postgres"]["coordinated"].get(field).is_some(), "{field}");
        }
        assert!(v.get("sqlite").is_none());
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back.postgres.unwrap().baseline.unwrap().tx_per_s, 1000.0);
    }
}
