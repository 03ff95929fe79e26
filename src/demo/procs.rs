//! The demo's child processes: `tccd coordinator` and `tccd stock`, started from the demo's own
//! binary on free ports, their output in log files, killed (and reaped) when the demo ends —
//! normally, on an error, on a panic (Drop) or on a signal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::oneshot;

/// How long a process may take to print `listening on http://ADDR` (migrations included).
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// One running child.
struct Running {
    role: String,
    subcommand: String,
    args: Vec<String>,
    child: Child,
    log: PathBuf,
}

/// What a table of processes shows.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub role: String,
    pub pid: u32,
    pub log: PathBuf,
}

/// A child that has been spawned and has not yet said where it listens.
pub struct Pending {
    role: String,
    log: PathBuf,
    addr: oneshot::Receiver<Option<String>>,
}

impl Pending {
    /// Waits for the `listening on http://ADDR` line; returns `http://ADDR`.
    pub async fn base_url(self) -> Result<String, String> {
        let failed = |why: &str| {
            format!(
                "{} {why}; last lines of {}:\n{}",
                self.role,
                self.log.display(),
                tail(&self.log, 15)
            )
        };
        match tokio::time::timeout(START_DEADLINE, self.addr).await {
            Ok(Ok(Some(addr))) => Ok(format!("http://{addr}")),
            Ok(_) => Err(failed("exited before it listened")),
            Err(_) => Err(failed(&format!(
                "did not listen within {} s",
                START_DEADLINE.as_secs()
            ))),
        }
    }
}

/// Every child of the demo. Dropping it kills them all.
pub struct Procs {
    exe: PathBuf,
    logs: PathBuf,
    running: Vec<Running>,
    /// Who starts them, in the log files' markers (`tccd demo`, `tccd bench`).
    label: String,
    /// Environment variables set in every child (after the `TCCD_*` ones are removed).
    env: Vec<(String, String)>,
}

impl Procs {
    /// Children are started from `exe` (the demo's own binary); logs go under `logs`.
    pub fn new(exe: PathBuf, logs: PathBuf) -> Procs {
        Procs {
            exe,
            logs,
            running: Vec::new(),
            label: "tccd demo".into(),
            env: Vec::new(),
        }
    }

    /// Names the starter in the log files' markers (default `tccd demo`).
    pub fn labelled(mut self, label: &str) -> Procs {
        self.label = label.to_string();
        self
    }

    /// Sets an environment variable in every child started from now on (e.g. `RUST_LOG`).
    pub fn with_env(mut self, key: &str, value: &str) -> Procs {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts `tccd <subcommand> <args>` as `role` (also the log file's name). Its stdout and
    /// stderr go to `<logs>/<role>.log` (appended, so a restart keeps the earlier run).
    pub fn spawn(
        &mut self,
        role: &str,
        subcommand: &str,
        args: Vec<String>,
    ) -> Result<Pending, String> {
        if self.running.iter().any(|r| r.role == role) {
            return Err(format!("{role} is already running"));
        }
        std::fs::create_dir_all(&self.logs)
            .map_err(|e| format!("cannot create {}: {e}", self.logs.display()))?;
        let log = self.logs.join(format!("{role}.log"));
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| format!("cannot open {}: {e}", log.display()))
        };
        let mut marker = open()?;
        let _ = writeln!(
            marker,
            "===== {}: starting tccd {subcommand} {} =====",
            self.label,
            args.join(" ")
        );
        let stderr = open()?;
        let mut stdout_log = open()?;

        let mut cmd = Command::new(&self.exe);
        cmd.arg(subcommand).args(&args);
        // The children get their settings from flags only: nothing in the demo's environment
        // (TCCD_DEMO_*, a stray TCCD_DATABASE_URL, FAILPOINTS of a test build) may change them.
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str()
                && (k.starts_with("TCCD_") || k == "FAILPOINTS")
            {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {} {subcommand}: {e}", self.exe.display()))?;

        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{role}-stdout"))
            .spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(stdout_log, "{line}");
                    if let Some(addr) = line.trim().strip_prefix("listening on http://")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(Some(addr.trim_end_matches('/').to_string()));
                    }
                }
                if let Some(tx) = tx.take() {
                    let _ = tx.send(None);
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;

        self.running.push(Running {
            role: role.to_string(),
            subcommand: subcommand.to_string(),
            args,
            child,
            log: log.clone(),
        });
        Ok(Pending {
            role: role.to_string(),
            log,
            addr: rx,
        })
    }

    /// SIGKILLs `role` and reaps it; returns its pid.
    pub fn kill(&mut self, role: &str) -> Result<u32, String> {
        let i = self
            .running
            .iter()
            .position(|r| r.role == role)
            .ok_or_else(|| format!("{role} is not running"))?;
        let mut r = self.running.remove(i);
        let pid = r.child.id();
        kill_and_reap(&mut r.child);
        append(
            &r.log,
            &format!("===== {}: killed with SIGKILL =====", self.label),
        );
        Ok(pid)
    }

    /// The arguments `role` was started with.
    pub fn args(&self, role: &str) -> Option<(String, Vec<String>)> {
        self.running
            .iter()
            .find(|r| r.role == role)
            .map(|r| (r.subcommand.clone(), r.args.clone()))
    }

    pub fn info(&self) -> Vec<ProcInfo> {
        self.running
            .iter()
            .map(|r| ProcInfo {
                role: r.role.clone(),
                pid: r.child.id(),
                log: r.log.clone(),
            })
            .collect()
    }

    /// Children that exited on their own: role, exit status and the end of their log. They are
    /// removed from the list.
    pub fn exited(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        self.running.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                gone.push(format!(
                    "{} exited unexpectedly ({status}); last lines of {}:\n{}",
                    r.role,
                    r.log.display(),
                    tail(&r.log, 15)
                ));
                false
            }
            _ => true,
        });
        gone
    }

    /// Kills and reaps every child.
    pub fn stop_all(&mut self) {
        for mut r in self.running.drain(..) {
            kill_and_reap(&mut r.child);
            append(&r.log, &format!("===== {}: stopped =====", self.label));
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn kill_and_reap(child: &mut Child) {
    // SIGKILL: the demo's data is throw-away and every store change is durable when answered.
    let _ = child.kill();
    let _ = child.wait();
}

fn append(path: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

/// The last `n` lines of a log file (at most its last 64 KiB), indented.
pub fn tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Locks the shared process table, also after a panic elsewhere left it poisoned (the table
/// itself is always consistent).
pub fn lock(procs: &std::sync::Mutex<Procs>) -> std::sync::MutexGuard<'_, Procs> {
    procs.lock().unwrap_or_else(|e| e.into_inner())
}

/// The base URLs of the three services of a checkout.
pub struct CheckoutUrls {
    pub coordinator: String,
    pub inventory: String,
    pub wallet: String,
}

/// How to start the checkout's services.
pub struct CheckoutSpec<'a> {
    /// Put before each role name (`coordinator`, `inventory`, `wallet`) in the process table.
    pub role_prefix: &'a str,
    /// Coordinator, inventory and wallet databases, in that order.
    pub db_urls: &'a [String],
    pub redis_url: &'a str,
    /// Redis namespaces are `<prefix>_inventory` and `<prefix>_wallet`.
    pub namespace_prefix: &'a str,
    pub coordinator_flags: &'a [&'a str],
    pub stock_flags: &'a [&'a str],
}

/// Starts a coordinator, then the `inventory` and `wallet` stock services registering with it,
/// each on a free port; returns once all three serve.
pub async fn start_checkout(
    procs: &std::sync::Mutex<Procs>,
    spec: CheckoutSpec<'_>,
) -> Result<CheckoutUrls, String> {
    let role = |r: &str| format!("{}{r}", spec.role_prefix);
    let mut coord_args: Vec<String> = ["--bind", "127.0.0.1:0", "--database-url", &spec.db_urls[0]]
        .iter()
        .map(|s| s.to_string())
        .collect();
    coord_args.extend(spec.coordinator_flags.iter().map(|s| s.to_string()));
    let pending = lock(procs).spawn(&role("coordinator"), "coordinator", coord_args)?;
    let coordinator = pending.base_url().await?;
    let stock_args = |name: &str, db: &str| {
        let namespace = format!("{}_{name}", spec.namespace_prefix);
        let mut args: Vec<String> = [
            "--name",
            name,
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            db,
            "--redis-url",
            spec.redis_url,
            "--namespace",
            &namespace,
            "--coordinator",
            &coordinator,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(spec.stock_flags.iter().map(|s| s.to_string()));
        args
    };
    let inv = lock(procs).spawn(
        &role("inventory"),
        "stock",
        stock_args("inventory", &spec.db_urls[1]),
    )?;
    let wal = lock(procs).spawn(
        &role("wallet"),
        "stock",
        stock_args("wallet", &spec.db_urls[2]),
    )?;
    let (inventory, wallet) = tokio::try_join!(inv.base_url(), wal.base_url())?;
    Ok(CheckoutUrls {
        coordinator,
        inventory,
        wallet,
    })
}
