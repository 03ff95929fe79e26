//! `tccd bench`: the load generator behind `make bench`. It starts a coordinator and two stock
//! services (`inventory`, `wallet`) as child processes of its own binary, seeds them with more
//! stock than the run can use, and drives the "checkout" workload with closed-loop clients:
//!
//! - `coordinated`: begin, Try inventory and Try wallet through the coordinator (`add_branch`),
//!   commit with wait; a `200 committed` is one transaction;
//! - `baseline`: the same client calling Try, Try, Confirm, Confirm on the services directly (the
//!   two Confirms in parallel, as the coordinator sends them), no coordinator;
//! - `dtm`: the same checkout through DTM's HTTP protocol (prepare, registerBranch + a DTM-style
//!   Try per service, submit with `wait_result`), against tccd's `/api/dtmsvr` or `--coordinator`.
//!
//! Each mode gets a warm-up and a measured window on Postgres and on SQLite; the report (a table
//! on stdout, JSON in `--out`) has committed tx/s, latency percentiles, errors, database commits
//! per transaction (`pg_stat_database` deltas) and the peak RSS of every child.

pub mod measure;
pub mod prefill;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};

use crate::client::{CoordinatorClient, StockClient};
use crate::demo::procs::{CheckoutSpec, Procs, lock, start_checkout};
use crate::demo::report::{BOLD, DIM, Out, RED, YELLOW};
use crate::demo::{Signals, panic_text, stores, wait_registered};
use measure::PgStats;
use report::{BackendReport, ModeReport, Report};
use workload::{Driver, Targets};

/// Default prefix of the Postgres databases and Redis namespaces the benchmark owns.
pub const PREFIX: &str = "tccd_bench";
/// Stock keys seeded on each service: SKUs on inventory, users on the wallet.
pub const SKUS: usize = 100;
pub const USERS: usize = 1000;
/// What every seeded key starts with: more than any run can take.
pub const SEED_AVAILABLE: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Through tccd's native API: begin, add_branch × 2, commit with wait.
    Coordinated,
    /// Try, Try, Confirm, Confirm on the stock services directly.
    Baseline,
    /// Through a DTM-protocol coordinator (tccd's /api/dtmsvr or --coordinator).
    Dtm,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Coordinated => "coordinated",
            Mode::Baseline => "baseline",
            Mode::Dtm => "dtm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// tccd's own API (/v1/transactions).
    Native,
    /// DTM's HTTP protocol (/api/dtmsvr): the coordinated mode becomes `dtm`.
    Dtm,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Concurrent closed-loop clients; each runs one checkout after another.
    #[arg(long, env = "TCCD_BENCH_CLIENTS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Warm-up before each measured window (not counted).
    #[arg(long, env = "TCCD_BENCH_WARMUP_SECS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub warmup_secs: u64,
    /// Length of each mode's measured window.
    #[arg(long, env = "TCCD_BENCH_DURATION_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_secs: u64,
    /// Each mode's window is measured in this many parts, the modes taking turns (coordinated,
    /// baseline, coordinated, baseline, …), so that a machine that speeds up or slows down
    /// during the run weighs on every mode alike. Parts after the first get a 1 s warm-up.
    #[arg(long, env = "TCCD_BENCH_ROUNDS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// A Postgres admin URL (needed for the postgres backend): the benchmark creates fresh
    /// databases <prefix>_coordinator, <prefix>_inventory and <prefix>_wallet and drops them at
    /// the end.
    #[arg(long, env = "TCCD_BENCH_PG_URL")]
    pub pg_url: Option<String>,
    /// The Redis the stock services use (only keys under the <prefix>_inventory and
    /// <prefix>_wallet namespaces are touched).
    #[arg(
        long,
        env = "TCCD_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Working directory: SQLite files, the processes' logs (logs/), the report.
    #[arg(long, env = "TCCD_BENCH_DIR", default_value = "target/bench")]
    pub dir: PathBuf,
    /// Backends to run, in order.
    #[arg(
        long,
        env = "TCCD_BENCH_BACKENDS",
        value_delimiter = ',',
        default_value = "postgres,sqlite"
    )]
    pub backends: Vec<Backend>,
    /// Modes to measure on each backend, in order [default: coordinated,baseline].
    #[arg(long, env = "TCCD_BENCH_MODES", value_delimiter = ',')]
    pub modes: Option<Vec<Mode>>,
    /// How the coordinated mode talks to the coordinator; `dtm` turns it into the `dtm` mode.
    #[arg(long, env = "TCCD_BENCH_PROTOCOL", default_value = "native")]
    pub protocol: Protocol,
    /// The DTM server URL for the dtm mode, as DTM SDKs take it (http://127.0.0.1:36789/api/dtmsvr);
    /// default: tccd's own coordinator's /api/dtmsvr. It must call the stock services back on
    /// 127.0.0.1.
    #[arg(long, env = "TCCD_BENCH_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Before measuring, insert N finished (committed) transactions with one branch each into
    /// the coordinator's tables.
    #[arg(long, env = "TCCD_BENCH_PREFILL", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub prefill: u64,
    /// Where the JSON report goes [default: <dir>/report.json].
    #[arg(long, env = "TCCD_BENCH_OUT")]
    pub out: Option<PathBuf>,
    /// An earlier report to compare this run with (tx/s and latency change in %).
    #[arg(long, env = "TCCD_BENCH_COMPARE_WITH")]
    pub compare_with: Option<PathBuf>,
    /// Prefix of the Postgres databases (<prefix>_coordinator, _inventory, _wallet) and Redis
    /// namespaces ([a-z0-9_], at most 40 characters), so that runs can share a server.
    #[arg(long, env = "TCCD_BENCH_NAMESPACE_PREFIX", default_value = PREFIX)]
    pub namespace_prefix: String,
    /// RUST_LOG of the child processes (their logs go to <dir>/logs/).
    #[arg(long, env = "TCCD_BENCH_CHILD_LOG", default_value = "warn")]
    pub child_log: String,
    /// An extra flag for the coordinator, to measure a setting (repeatable), e.g.
    /// --coordinator-flag=--batch-interval-ms=0.
    #[arg(
        long = "coordinator-flag",
        value_name = "FLAG",
        allow_hyphen_values = true
    )]
    pub coordinator_flags: Vec<String>,
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub clients: u32,
    pub warmup: Duration,
    pub duration: Duration,
    pub rounds: u32,
    pub pg_url: Option<String>,
    pub redis_url: String,
    /// Absolute.
    pub dir: PathBuf,
    pub backends: Vec<Backend>,
    pub modes: Vec<Mode>,
    /// An external DTM server (`…/api/dtmsvr`), if any.
    pub dtm_server: Option<String>,
    pub prefill: u64,
    pub out: PathBuf,
    pub compare_with: Option<PathBuf>,
    pub prefix: String,
    pub child_log: String,
    pub coordinator_flags: Vec<String>,
}

impl Config {
    pub fn from_args(args: BenchArgs) -> Result<Config, String> {
        crate::validate::namespace_prefix("--namespace-prefix", &args.namespace_prefix)?;
        let mut backends = Vec::new();
        for b in args.backends {
            if !backends.contains(&b) {
                backends.push(b);
            }
        }
        if backends.is_empty() {
            return Err("--backends must name at least one of postgres, sqlite".into());
        }
        let pg_url = args.pg_url.filter(|u| !u.trim().is_empty());
        if backends.contains(&Backend::Postgres) {
            match &pg_url {
                None => {
                    return Err(
                        "the postgres backend needs --pg-url (TCCD_BENCH_PG_URL), a \
                                Postgres admin URL; `make bench` provides one, or run with \
                                --backends sqlite"
                            .into(),
                    );
                }
                Some(u) => crate::validate::postgres_url("--pg-url", u)?,
            }
        }
        let mut modes = Vec::new();
        for m in args
            .modes
            .unwrap_or_else(|| vec![Mode::Coordinated, Mode::Baseline])
        {
            let m = match (m, args.protocol) {
                (Mode::Coordinated, Protocol::Dtm) => Mode::Dtm,
                (m, _) => m,
            };
            if !modes.contains(&m) {
                modes.push(m);
            }
        }
        if modes.is_empty() {
            return Err("--modes must name at least one of coordinated, baseline, dtm".into());
        }
        let dtm_server = match args.coordinator.filter(|u| !u.trim().is_empty()) {
            None => None,
            Some(_) if !modes.contains(&Mode::Dtm) => {
                return Err(
                    "--coordinator is the DTM server of the dtm mode: use it with --protocol dtm"
                        .into(),
                );
            }
            Some(u) => Some(loopback_url(&u)?),
        };
        let dir = std::path::absolute(&args.dir)
            .map_err(|e| format!("bad --dir {}: {e}", args.dir.display()))?;
        let out = match args.out {
            Some(p) => std::path::absolute(&p).map_err(|e| format!("bad --out: {e}"))?,
            None => dir.join("report.json"),
        };
        Ok(Config {
            clients: args.clients,
            warmup: Duration::from_secs(args.warmup_secs),
            duration: Duration::from_secs(args.duration_secs),
            rounds: args.rounds,
            pg_url,
            redis_url: args.redis_url,
            dir,
            backends,
            modes,
            dtm_server,
            prefill: args.prefill,
            out,
            compare_with: args.compare_with,
            prefix: args.namespace_prefix,
            child_log: args.child_log,
            coordinator_flags: args.coordinator_flags,
        })
    }

    /// The Postgres database names, in [`stores::DATABASES`] order.
    pub fn pg_names(&self) -> Vec<String> {
        stores::DATABASES
            .iter()
            .map(|d| format!("{}_{d}", self.prefix))
            .collect()
    }

    pub fn namespaces(&self) -> Vec<String> {
        vec![self.namespace("inventory"), self.namespace("wallet")]
    }

    /// The Redis namespace of a stock service.
    pub fn namespace(&self, service: &str) -> String {
        format!("{}_{service}", self.prefix)
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

/// Checks that a URL is http(s) on the loopback interface: the benchmark's traffic stays on
/// this machine.
fn loopback_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad --coordinator {url}: {e}"))?;
    let host = parsed.host_str().unwrap_or("");
    if !matches!(parsed.scheme(), "http" | "https")
        || !matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    {
        return Err(format!(
            "--coordinator must be an http URL on 127.0.0.1 (the benchmark only talks to this \
             machine), not {url}"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Runs the benchmark; `Err` (exit status 1) if a process or a store fails.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    let cfg = Arc::new(Config::from_args(args)?);
    let out = Out::detect();
    let signals = Signals::new()?;

    let _ = std::fs::remove_dir_all(cfg.logs());
    std::fs::create_dir_all(cfg.logs())
        .map_err(|e| format!("cannot create {}: {e}", cfg.logs().display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let procs = Arc::new(Mutex::new(
        Procs::new(exe, cfg.logs())
            .labelled("tccd bench")
            .with_env("RUST_LOG", &cfg.child_log),
    ));

    let work = tokio::spawn(body(cfg.clone(), out, procs.clone()));
    let abort = work.abort_handle();
    let mut signals = signals;
    let result = tokio::select! {
        joined = work => match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(format!("the benchmark panicked: {}", panic_text(e.into_panic()))),
            Err(e) => Err(format!("the benchmark task ended: {e}")),
        },
        sig = signals.recv() => {
            abort.abort();
            lock(&procs).stop_all();
            for b in &cfg.backends {
                if let Err(e) = cleanup(&cfg, *b).await {
                    eprintln!("clean-up failed: {e}");
                }
            }
            eprintln!("\ntccd bench: stopped by {sig}; the services are stopped");
            std::process::exit(if sig == "SIGTERM" { 143 } else { 130 });
        }
    };
    // Whatever happened: no child outlives the benchmark, no database or key stays behind.
    lock(&procs).stop_all();
    let mut cleanup_errors = Vec::new();
    for b in &cfg.backends {
        if let Err(e) = cleanup(&cfg, *b).await {
            cleanup_errors.push(e);
        }
    }
    match result {
        Ok(()) if cleanup_errors.is_empty() => Ok(()),
        Ok(()) => Err(format!("clean-up failed: {}", cleanup_errors.join("; "))),
        Err(e) => {
            for c in cleanup_errors {
                eprintln!("clean-up failed: {c}");
            }
            Err(format!(
                "{e}\n(logs of the services: {})",
                cfg.logs().display()
            ))
        }
    }
}

async fn body(cfg: Arc<Config>, out: Out, procs: Arc<Mutex<Procs>>) -> Result<(), String> {
    out.line(out.paint(
        BOLD,
        format!(
            "tccd bench: checkout (inventory 1 unit + wallet amount), {} clients, {} s warm-up + \
             {} s measured per mode in {} rounds; modes {}; backends {}{}",
            cfg.clients,
            cfg.warmup.as_secs(),
            cfg.duration.as_secs(),
            cfg.rounds,
            cfg.modes
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            cfg.backends
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if cfg.prefill > 0 {
                format!("; prefill {}", cfg.prefill)
            } else {
                String::new()
            }
        ),
    ));
    if cfg!(debug_assertions) {
        out.line(out.paint(
            YELLOW,
            "  warning: this is a debug build; figures mean little (use make bench, or cargo \
             build --release)",
        ));
    }
    out.line(format!(
        "  machine    {} CPUs; services log at {} into {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cfg.child_log,
        cfg.logs().display()
    ));

    let mut report = Report::default();
    for &backend in &cfg.backends {
        let result = run_backend(&cfg, out, &procs, backend).await;
        lock(&procs).stop_all();
        cleanup(&cfg, backend).await?;
        report.set(backend, result?);
    }

    out.blank();
    report::print_table(&out, &report);
    if let Some(dir) = cfg.out.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    std::fs::write(&cfg.out, json + "\n")
        .map_err(|e| format!("cannot write {}: {e}", cfg.out.display()))?;
    out.blank();
    out.line(format!("Report: {}", cfg.out.display()));
    if let Some(path) = &cfg.compare_with {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let before: Report = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a tccd bench report: {e}", path.display()))?;
        out.blank();
        report::print_comparison(&out, path, &before, &report);
    }
    Ok(())
}

/// Fresh stores, three processes, seeding, prefill, then every mode.
async fn run_backend(
    cfg: &Arc<Config>,
    out: Out,
    procs: &Arc<Mutex<Procs>>,
    backend: Backend,
) -> Result<BackendReport, String> {
    out.blank();
    out.line(out.paint(BOLD, format!("== {} ==", backend.as_str())));

    // Stores.
    let admin_url = cfg.pg_url.as_deref();
    let databases = match backend {
        Backend::Postgres => stores::Databases::Postgres {
            admin_url: admin_url.expect("checked in from_args"),
            names: cfg.pg_names(),
        },
        Backend::Sqlite => stores::Databases::Sqlite { dir: &cfg.dir },
    };
    let db_urls = stores::fresh(&out, databases, &cfg.redis_url, &cfg.namespaces()).await?;
    let pg_stats = match (backend, admin_url) {
        (Backend::Postgres, Some(admin)) => Some(PgStats::connect(admin, cfg.pg_names()).await?),
        _ => None,
    };

    // Processes: the coordinator first (the services register with it), then both services.
    let role_prefix = format!("{}-", backend.as_str());
    let coordinator_flags: Vec<&str> = cfg.coordinator_flags.iter().map(String::as_str).collect();
    let urls = start_checkout(
        procs,
        CheckoutSpec {
            role_prefix: &role_prefix,
            db_urls: &db_urls,
            redis_url: &cfg.redis_url,
            namespace_prefix: &cfg.prefix,
            coordinator_flags: &coordinator_flags,
            stock_flags: &[],
        },
    )
    .await?;
    let (coord_url, inv_url, wal_url) = (urls.coordinator, urls.inventory, urls.wallet);
    let pids: Vec<(String, u32)> = lock(procs)
        .info()
        .into_iter()
        .map(|p| {
            let name = p
                .role
                .strip_prefix(&format!("{}-", backend.as_str()))
                .unwrap_or(&p.role)
                .to_string();
            (name, p.pid)
        })
        .collect();
    out.line(format!(
        "  processes  {}",
        pids.iter()
            .zip([&coord_url, &inv_url, &wal_url])
            .map(|((name, pid), url)| format!("{name} pid {pid} {url}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let control = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let coord = CoordinatorClient::with_client(&coord_url, control.clone());
    let inventory = StockClient::with_client(&inv_url, control.clone());
    let wallet = StockClient::with_client(&wal_url, control.clone());
    wait_registered(&coord, &["inventory", "wallet"], procs).await?;

    // Seeding.
    let started = Instant::now();
    seed(&inventory, "sku", SKUS).await?;
    seed(&wallet, "user", USERS).await?;
    out.line(format!(
        "  seeded     {SKUS} SKUs on inventory and {USERS} users on wallet, {SEED_AVAILABLE} \
         available each ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));

    if cfg.prefill > 0 {
        let started = Instant::now();
        let n = cfg.prefill;
        match backend {
            Backend::Postgres => {
                let url = db_urls[0].clone();
                tokio::task::spawn_blocking(move || prefill::postgres(&url, n))
                    .await
                    .map_err(|e| e.to_string())??;
            }
            Backend::Sqlite => {
                let path = stores::sqlite_file(&cfg.dir, "coordinator");
                tokio::task::spawn_blocking(move || prefill::sqlite(&path, n))
                    .await
                    .map_err(|e| e.to_string())??;
            }
        }
        out.line(format!(
            "  prefilled  {n} committed transactions (one branch each) into the coordinator's \
             tables ({:.1} s)",
            started.elapsed().as_secs_f64()
        ));
    }

    let targets = Targets {
        coordinator: coord_url.clone(),
        inventory: inv_url.clone(),
        wallet: wal_url.clone(),
        dtm: cfg
            .dtm_server
            .clone()
            .unwrap_or_else(|| format!("{coord_url}/api/dtmsvr")),
    };
    let alive = {
        let procs = procs.clone();
        move || {
            let gone = lock(&procs).exited();
            if gone.is_empty() {
                Ok(())
            } else {
                Err(gone.join("\n"))
            }
        }
    };
    let drivers = cfg
        .modes
        .iter()
        .map(|&mode| Ok((mode, Arc::new(Driver::new(mode, &targets, cfg.clients)?))))
        .collect::<Result<Vec<_>, String>>()?;
    // The modes take turns, one part of each window at a time.
    let rounds = cfg.rounds.min(cfg.duration.as_secs().max(1) as u32).max(1);
    let part = cfg.duration / rounds;
    let mut outcomes: Vec<Option<workload::Outcome>> = cfg.modes.iter().map(|_| None).collect();
    for round in 0..rounds {
        for ((mode, driver), outcome) in drivers.iter().zip(outcomes.iter_mut()) {
            let label = if rounds > 1 {
                format!(
                    "{} {} {}/{rounds}",
                    backend.as_str(),
                    mode.as_str(),
                    round + 1
                )
            } else {
                format!("{} {}", backend.as_str(), mode.as_str())
            };
            let warmup = if round == 0 {
                cfg.warmup
            } else {
                cfg.warmup.min(Duration::from_secs(1))
            };
            let measured = workload::run(
                driver.clone(),
                cfg.clients,
                warmup,
                part,
                &label,
                pg_stats.as_ref(),
                &alive,
            )
            .await?;
            match outcome {
                Some(o) => o.absorb(measured),
                None => *outcome = Some(measured),
            }
        }
    }
    let mut result = BackendReport::default();
    for (&mode, outcome) in cfg.modes.iter().zip(outcomes) {
        let Some(outcome) = outcome else { continue };
        let rss = measure::rss_of(&pids);
        // With an external DTM server, the coordinator's database is not the one measured.
        let coordinator_db = !(mode == Mode::Dtm && cfg.dtm_server.is_some());
        let m = ModeReport::new(mode, cfg, &outcome, rss, coordinator_db);
        out.line(format!(
            "  {:<12} {:>8.1} tx/s  p50 {:.2} ms  p99 {:.2} ms  errors {}{}",
            mode.as_str(),
            m.tx_per_s,
            m.p50_ms,
            m.p99_ms,
            m.errors,
            if m.errors > 0 {
                out.paint(
                    RED,
                    format!(
                        "  (first: {})",
                        outcome
                            .error_samples
                            .values()
                            .next()
                            .cloned()
                            .unwrap_or_default()
                    ),
                )
            } else {
                String::new()
            }
        ));
        result.set(mode, m);
    }
    result.peak_rss_kib = measure::rss_of(&pids)
        .into_iter()
        .map(|(name, r)| (name, r.peak_kib))
        .collect();
    result.finish();
    out.line(out.paint(
        DIM,
        format!(
            "  peak RSS   {}",
            result
                .peak_rss_kib
                .iter()
                .map(|(n, k)| format!("{n} {:.1} MiB", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    Ok(result)
}

/// Puts `n` keys `<prefix>-NNNN` with [`SEED_AVAILABLE`] on a stock service.
async fn seed(stock: &StockClient, prefix: &str, n: usize) -> Result<(), String> {
    futures::stream::iter(0..n)
        .map(|i| {
            let key = workload::key(prefix, i);
            async move {
                stock
                    .put(&key, SEED_AVAILABLE)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("seeding {key}: {e}"))
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// Drops a backend's databases (Postgres) or files (SQLite) and the Redis keys.
async fn cleanup(cfg: &Config, backend: Backend) -> Result<(), String> {
    let mut errors = Vec::new();
    match backend {
        Backend::Postgres => {
            if let Some(admin) = cfg.pg_url.clone() {
                let names = cfg.pg_names();
                match tokio::task::spawn_blocking(move || stores::pg_drop(&admin, &names)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Backend::Sqlite => {
            if let Err(e) = stores::sqlite_remove(&cfg.dir) {
                errors.push(e);
            }
        }
    }
    if let Err(e) = stores::redis_clear(&cfg.redis_url, &cfg.namespaces()).await {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::from_args(cli.args)
    }

    #[test]
    fn settings_are_checked() {
        let c = parse(&["--pg-url", "postgres://u@h/db"]).unwrap();
        assert_eq!(c.backends, vec![Backend::Postgres, Backend::Sqlite]);
        assert_eq!(c.modes, vec![Mode::Coordinated, Mode::Baseline]);
        assert!(c.out.ends_with("target/bench/report.json"));
        assert!(parse(&["--backends", "postgres", "--pg-url", ""]).is_err());
        let c = parse(&["--backends", "sqlite", "--protocol", "dtm"]).unwrap();
        assert_eq!(c.modes, vec![Mode::Dtm, Mode::Baseline]);
        assert_eq!(c.dtm_server, None);
        let c = parse(&[
            "--backends",
            "sqlite",
            "--protocol",
            "dtm",
            "--coordinator",
            "http://127.0.0.1:36789/api/dtmsvr/",
        ])
        .unwrap();
        assert_eq!(
            c.dtm_server.as_deref(),
            Some("http://127.0.0.1:36789/api/dtmsvr")
        );
        assert!(
            parse(&[
                "--backends",
                "sqlite",
                "--protocol",
                "dtm",
                "--coordinator",
                "http://example.com/api/dtmsvr"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--backends",
                "sqlite",
                "--coordinator",
                "http://127.0.0.1:1"
            ])
            .is_err()
        );
        assert!(parse(&["--backends", "sqlite", "--modes", "bogus"]).is_err());
        assert!(parse(&["--backends", "sqlite", "--namespace-prefix", "a;b"]).is_err());
        let c = parse(&["--backends", "sqlite", "--namespace-prefix", "t_1"]).unwrap();
        assert_eq!(c.pg_names()[2], "t_1_wallet");
    }
}
