//! The checkout workload: one closed-loop task per client, each running checkouts back to back
//! until the end of the window, recording the latency of every committed one into its own
//! vector (merged at the end), and a progress line on stderr once a second.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::measure::{PgSnapshot, PgStats};
use super::{Mode, SKUS, USERS};
use crate::client::{
    BeginRequest, ClientError, CoordinatorClient, StockClient, TccOp, TxStatus, stock_payload,
};

/// Timeout of one HTTP request of the workload.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the end of the window a checkout still in flight may take before it is
/// dropped: every loop has stopped by `end + GRACE`.
pub const GRACE: Duration = Duration::from_secs(15);

/// Where the processes listen.
#[derive(Debug, Clone)]
pub struct Targets {
    pub coordinator: String,
    pub inventory: String,
    pub wallet: String,
    /// The DTM server: `…/api/dtmsvr`.
    pub dtm: String,
}

/// The stock key `<prefix>-NNNN`.
pub fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:04}")
}

/// Why a checkout did not commit: a short kind (for counting) and the whole message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: String,
    pub message: String,
}

impl Failure {
    fn new(kind: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let kind = match &e {
            ClientError::Api { status, code, .. } => format!("HTTP {status} {code}"),
            ClientError::Transport { source, .. } if source.is_timeout() => "timeout".into(),
            ClientError::Transport { .. } => "transport".into(),
            ClientError::Decode { status, .. } => format!("HTTP {status} undecodable"),
            ClientError::Timeout(_) => "timeout".into(),
        };
        Failure::new(kind, e.to_string())
    }
}

/// A small, fast generator per client (SplitMix64): which SKU, which user, how much.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One checkout's branch payloads: 1 unit of a SKU, 1..=100 from a user's wallet.
fn payloads(rng: &mut Rng) -> (Value, Value) {
    let sku = key("sku", rng.below(SKUS));
    let user = key("user", rng.below(USERS));
    let amount = 1 + rng.below(100) as i64;
    (
        stock_payload(&[(&sku, 1)]),
        stock_payload(&[(&user, amount)]),
    )
}

/// How a mode runs one checkout. Each holds one shared keep-alive client.
pub enum Driver {
    Coordinated(CoordinatorClient),
    Baseline {
        inventory: StockClient,
        wallet: StockClient,
    },
    Dtm {
        http: reqwest::Client,
        server: String,
        inventory: String,
        wallet: String,
    },
}

impl Driver {
    /// A driver with its own HTTP client, pooling enough connections for `clients`.
    pub fn new(mode: Mode, targets: &Targets, clients: u32) -> Result<Driver, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(clients as usize * 2 + 8)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(match mode {
            Mode::Coordinated => {
                Driver::Coordinated(CoordinatorClient::with_client(&targets.coordinator, http))
            }
            Mode::Baseline => Driver::Baseline {
                inventory: StockClient::with_client(&targets.inventory, http.clone()),
                wallet: StockClient::with_client(&targets.wallet, http),
            },
            Mode::Dtm => Driver::Dtm {
                http,
                server: targets.dtm.clone(),
                inventory: targets.inventory.clone(),
                wallet: targets.wallet.clone(),
            },
        })
    }

    /// One whole checkout; `Ok` when it committed.
    async fn checkout(&self, rng: &mut Rng) -> Result<(), Failure> {
        let (inv_payload, wal_payload) = payloads(rng);
        match self {
            Driver::Coordinated(coord) => {
                let tx = coord.begin(&BeginRequest::default()).await?;
                coord
                    .add_branch(&tx.gid, "inventory", &inv_payload, None)
                    .await?;
                coord
                    .add_branch(&tx.gid, "wallet", &wal_payload, None)
                    .await?;
                let done = coord.commit(&tx.gid, true).await?;
                if done.status != TxStatus::Committed {
                    return Err(Failure::new(
                        format!("commit answered {}", done.status),
                        format!("transaction {} is {} after the commit", tx.gid, done.status),
                    ));
                }
                Ok(())
            }
            Driver::Baseline { inventory, wallet } => {
                let gid = format!("bench-{}", uuid::Uuid::new_v4().simple());
                inventory.tcc(TccOp::Try, &gid, "01", &inv_payload).await?;
                wallet.tcc(TccOp::Try, &gid, "02", &wal_payload).await?;
                // Both Confirms at once, as the coordinator sends them.
                let (a, b) = tokio::join!(
                    inventory.tcc(TccOp::Confirm, &gid, "01", &inv_payload),
                    wallet.tcc(TccOp::Confirm, &gid, "02", &wal_payload)
                );
                a?;
                b?;
                Ok(())
            }
            Driver::Dtm {
                http,
                server,
                inventory,
                wallet,
            } => {
                let gid = uuid::Uuid::new_v4().simple().to_string();
                post(
                    http,
                    &format!("{server}/prepare"),
                    &json!({"gid": gid, "trans_type": "tcc"}),
                )
                .await?;
                for (branch_id, base, payload) in
                    [("01", inventory, inv_payload), ("02", wallet, wal_payload)]
                {
                    let data = payload.to_string();
                    post(
                        http,
                        &format!("{server}/registerBranch"),
                        &json!({
                            "gid": gid, "branch_id": branch_id, "trans_type": "tcc",
                            "data": data,
                            "confirm": format!("{base}/tcc/confirm"),
                            "cancel": format!("{base}/tcc/cancel"),
                        }),
                    )
                    .await?;
                    let url = format!(
                        "{base}/tcc/try?gid={gid}&trans_type=tcc&branch_id={branch_id}&op=try"
                    );
                    send(
                        http.post(&url)
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(data),
                        &url,
                    )
                    .await?;
                }
                let status = send(
                    http.post(format!("{server}/submit"))
                        .json(&json!({"gid": gid, "trans_type": "tcc", "wait_result": true})),
                    "submit",
                )
                .await?;
                if status != StatusCode::OK {
                    return Err(Failure::new(
                        format!("submit answered {}", status.as_u16()),
                        format!("submit of {gid} answered {status}"),
                    ));
                }
                Ok(())
            }
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<StatusCode, Failure> {
    send(http.post(url).json(body), url).await
}

/// Sends a request; a 2xx passes, except DTM's 425 (ONGOING), which is a failure like any
/// other non-2xx.
async fn send(req: reqwest::RequestBuilder, what: &str) -> Result<StatusCode, Failure> {
    let resp = req.send().await.map_err(|e| {
        Failure::new(
            if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            },
            format!("POST {what}: {e}"),
        )
    })?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| Failure::new("transport", format!("POST {what}: {e}")))?;
    if status.is_success() {
        return Ok(status);
    }
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/code")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    let path = what
        .split("://")
        .nth(1)
        .and_then(|r| r.find('/').map(|i| &r[i..]))
        .unwrap_or(what);
    let path = path.split('?').next().unwrap_or(path);
    Err(Failure::new(
        format!("HTTP {} {code} {path}", status.as_u16()),
        format!("POST {what}: HTTP {status}: {text}"),
    ))
}

/// What one mode's run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latencies of the checkouts committed inside the window, in µs, sorted.
    pub latencies_us: Vec<u32>,
    /// Length of the measured window.
    pub window: Duration,
    /// Failed checkouts that ended inside the window.
    pub errors: u64,
    /// ... by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// The first message of each kind.
    pub error_samples: BTreeMap<String, String>,
    /// Failed checkouts during the warm-up.
    pub warmup_errors: u64,
    /// `pg_stat_database.xact_commit` deltas over the window (Postgres only).
    pub commits: Option<PgSnapshot>,
}

impl Outcome {
    /// Adds another part of the same mode's measurement to this one.
    pub fn absorb(&mut self, part: Outcome) {
        self.latencies_us.extend(part.latencies_us);
        self.latencies_us.sort_unstable();
        self.window += part.window;
        self.errors += part.errors;
        for (k, n) in part.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
        for (k, m) in part.error_samples {
            self.error_samples.entry(k).or_insert(m);
        }
        self.warmup_errors += part.warmup_errors;
        self.commits = match (self.commits, part.commits) {
            (Some(a), Some(b)) => Some(a.plus(&b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Default)]
struct Live {
    warm_tx: AtomicU64,
    tx: AtomicU64,
    warm_errors: AtomicU64,
    errors: AtomicU64,
}

#[derive(Default)]
struct ClientStats {
    latencies_us: Vec<u32>,
    errors: u64,
    kinds: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
}

#[derive(Clone, Copy)]
struct Phase {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

async fn client_loop(driver: Arc<Driver>, seed: u64, phase: Phase, live: Arc<Live>) -> ClientStats {
    let mut rng = Rng(seed);
    let mut stats = ClientStats {
        latencies_us: Vec::with_capacity(4096),
        ..ClientStats::default()
    };
    let hard_stop = tokio::time::Instant::from_std(phase.end + GRACE);
    loop {
        let t0 = Instant::now();
        if t0 >= phase.end {
            break;
        }
        let result = match tokio::time::timeout_at(hard_stop, driver.checkout(&mut rng)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                "timeout",
                "the checkout was still running long after the end of the window",
            )),
        };
        let t1 = Instant::now();
        let measured = t1 >= phase.measure_from && t1 <= phase.end;
        let warm = t1 < phase.measure_from;
        match result {
            Ok(()) if measured => {
                let us = (t1 - t0).as_micros().min(u32::MAX as u128) as u32;
                stats.latencies_us.push(us);
                live.tx.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {
                if warm {
                    live.warm_tx.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(f) => {
                if measured {
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    stats.errors += 1;
                    *stats.kinds.entry(f.kind.clone()).or_default() += 1;
                    stats.samples.entry(f.kind).or_insert(f.message);
                } else if warm {
                    live.warm_errors.fetch_add(1, Ordering::Relaxed);
                }
                // No hot loop against a failing service.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stats
}

/// Runs `clients` closed loops for `warmup + duration`, prints progress, snapshots the
/// Postgres commit counters at both ends of the measured window. `alive` is asked once a second
/// whether the services still run.
pub async fn run(
    driver: Arc<Driver>,
    clients: u32,
    warmup: Duration,
    duration: Duration,
    label: &str,
    pg: Option<&PgStats>,
    alive: impl Fn() -> Result<(), String>,
) -> Result<Outcome, String> {
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let phase = Phase {
        start,
        measure_from: start + warmup,
        end: start + warmup + duration,
    };
    let seed0 = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut handles = Vec::with_capacity(clients as usize);
    for i in 0..clients {
        let seed = seed0 ^ (u64::from(i) + 1).wrapping_mul(0xA076_1D64_78BD_642F);
        handles.push(tokio::spawn(client_loop(
            driver.clone(),
            seed,
            phase,
            live.clone(),
        )));
    }
    let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
    let abort_all = || aborts.iter().for_each(|a| a.abort());

    // The commit counters at both ends of the window, taken on time by their own tasks.
    let snapshots = pg.map(|pg| {
        let (a, b) = (pg.clone(), pg.clone());
        let from = tokio::time::Instant::from_std(phase.measure_from);
        let to = tokio::time::Instant::from_std(phase.end);
        (
            tokio::spawn(async move {
                tokio::time::sleep_until(from).await;
                a.snapshot().await
            }),
            tokio::spawn(async move {
                tokio::time::sleep_until(to).await;
                b.snapshot().await
            }),
        )
    });

    let tty = std::io::stderr().is_terminal();
    let mut all = std::pin::pin!(futures::future::join_all(handles));
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    let joined = loop {
        tokio::select! {
            joined = &mut all => break joined,
            _ = tick.tick() => {
                progress(label, phase, &live, tty);
                if let Err(e) = alive() {
                    abort_all();
                    if tty { eprintln!(); }
                    return Err(format!("{label}: a service died during the run:\n{e}"));
                }
            }
        }
    };
    if tty {
        eprint!("\r\x1b[K");
    }
    let mut outcome = Outcome {
        window: duration,
        warmup_errors: live.warm_errors.load(Ordering::Relaxed),
        ..Outcome::default()
    };
    for j in joined {
        let s = j.map_err(|e| format!("{label}: a client task failed: {e}"))?;
        outcome.latencies_us.extend(s.latencies_us);
        outcome.errors += s.errors;
        for (k, n) in s.kinds {
            *outcome.error_kinds.entry(k).or_default() += n;
        }
        for (k, m) in s.samples {
            outcome.error_samples.entry(k).or_insert(m);
        }
    }
    outcome.latencies_us.sort_unstable();
    if let Some((a, b)) = snapshots {
        let a = a.await.map_err(|e| e.to_string())??;
        let b = b.await.map_err(|e| e.to_string())??;
        outcome.commits = Some(b.minus(&a));
    }
    Ok(outcome)
}

/// One line: mode and backend, phase, elapsed, committed tx, tx/s, errors.
fn progress(label: &str, phase: Phase, live: &Live, tty: bool) {
    let now = Instant::now();
    let line = if now < phase.measure_from {
        let t = (now - phase.start).as_secs_f64();
        let tx = live.warm_tx.load(Ordering::Relaxed);
        format!(
            "[{label}] warm-up {:>3.0}/{} s  tx {tx:>8}  tx/s {:>8.1}  errors {}",
            t,
            (phase.measure_from - phase.start).as_secs(),
            tx as f64 / t.max(0.001),
            live.warm_errors.load(Ordering::Relaxed)
        )
    } else {
        let t = (now.min(phase.end) - phase.measure_from).as_secs_f64();
        let tx = live.tx.load(Ordering::Relaxed);
        format!(
            "[{label}] {} {:>3.0}/{} s  tx {tx:>8}  tx/s {:>8.1}  errors {}",
            if now < phase.end {
                "measure"
            } else {
                "finish "
            },
            t,
            (phase.end - phase.measure_from).as_secs(),
            tx as f64 / t.max(0.001),
            live.errors.load(Ordering::Relaxed)
        )
    };
    let mut err = std::io::stderr().lock();
    if tty {
        let _ = write!(err, "\r\x1b[K{line}");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_in_the_seeded_keys() {
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let (inv, wal) = payloads(&mut rng);
            let sku = inv["items"][0]["key"].as_str().unwrap();
            assert!(sku.starts_with("sku-") && sku[4..].parse::<usize>().unwrap() < SKUS);
            let user = wal["items"][0]["key"].as_str().unwrap();
            assert!(user[5..].parse::<usize>().unwrap() < USERS);
            let amount = wal["items"][0]["amount"].as_i64().unwrap();
            assert!((1..=100).contains(&amount));
        }
    }
}
