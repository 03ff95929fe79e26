//! `tccd demo`: the scenario client behind `make demo`. It starts a coordinator and two stock
//! services (inventory and a wallet) as child processes of its own binary, runs seven scenarios
//! against them — a commit, a refused Try, failing Confirms, a coordinator crash, a timeout, a
//! flash sale and a final consistency check — shows the stock in SQL and Redis before and after
//! each, and ends with a summary. It exits non-zero if any expectation fails.

pub mod procs;
pub mod report;
pub mod scenarios;
pub mod stores;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;

use crate::client::{CoordinatorClient, StockClient};
use procs::{CheckoutSpec, Procs, lock, start_checkout};
use report::{Align, BOLD, Cell, DIM, GREEN, Out, RED, Table};
use scenarios::{Ctx, Outcome};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Working directory: SQLite files and the processes' logs (under logs/).
    #[arg(long, env = "TCCD_DEMO_DIR", default_value = "target/demo")]
    pub dir: PathBuf,
    /// The Redis the stock services use (only keys under the demo's namespaces are touched).
    #[arg(
        long,
        env = "TCCD_DEMO_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// A Postgres admin URL: run every process on Postgres, in fresh databases
    /// <prefix>_coordinator, <prefix>_inventory and <prefix>_wallet (dropped at the end),
    /// instead of SQLite files under --dir.
    #[arg(long, env = "TCCD_DEMO_PG_URL")]
    pub pg_url: Option<String>,
    /// Prefix of the Redis namespaces and Postgres databases ([a-z0-9_], at most 40 characters),
    /// so that several demos can share a Redis or a Postgres.
    #[arg(long, env = "TCCD_DEMO_NAMESPACE_PREFIX", default_value = "demo")]
    pub namespace_prefix: String,
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute.
    pub dir: PathBuf,
    pub redis_url: String,
    pub pg_url: Option<String>,
    pub prefix: String,
}

impl Config {
    pub fn from_args(args: DemoArgs) -> Result<Config, String> {
        crate::validate::namespace_prefix("--namespace-prefix", &args.namespace_prefix)?;
        let pg_url = args.pg_url.filter(|u| !u.trim().is_empty());
        if let Some(u) = &pg_url {
            crate::validate::postgres_url("--pg-url", u)?;
        }
        let dir = std::path::absolute(&args.dir)
            .map_err(|e| format!("bad --dir {}: {e}", args.dir.display()))?;
        Ok(Config {
            dir,
            redis_url: args.redis_url,
            pg_url,
            prefix: args.namespace_prefix,
        })
    }

    /// The Redis namespace of a stock service.
    pub fn namespace(&self, service: &str) -> String {
        format!("{}_{service}", self.prefix)
    }

    pub fn namespaces(&self) -> Vec<String> {
        vec![self.namespace("inventory"), self.namespace("wallet")]
    }

    /// The Postgres database names, in [`stores::DATABASES`] order.
    pub fn pg_names(&self) -> Vec<String> {
        stores::DATABASES
            .iter()
            .map(|d| format!("{}_{d}", self.prefix))
            .collect()
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

/// A URL with its password hidden.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.find('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// Runs the demo; `Err` (exit status 1) if any scenario or invariant fails.
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let started = Instant::now();
    let cfg = Arc::new(Config::from_args(args)?);
    let out = Out::detect();
    // Listen for signals before anything is started, so none is missed.
    let signals = Signals::new()?;

    std::fs::create_dir_all(cfg.logs())
        .map_err(|e| format!("cannot create {}: {e}", cfg.logs().display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let procs = Arc::new(Mutex::new(Procs::new(exe, cfg.logs())));

    let work = tokio::spawn(body(cfg.clone(), out, procs.clone()));
    let abort = work.abort_handle();
    let mut signals = signals;
    let result = tokio::select! {
        joined = work => match joined {
            Ok(r) => r.map_err(Stop::Error),
            Err(e) if e.is_panic() => Err(Stop::Error(format!("the demo panicked: {}", panic_text(e.into_panic())))),
            Err(e) => Err(Stop::Error(format!("the demo task ended: {e}"))),
        },
        sig = signals.recv() => {
            abort.abort();
            Err(Stop::Signal(sig))
        }
    };

    // Tear down whatever happened: children first (so nothing holds the databases), then the
    // databases and the Redis keys.
    procs.lock().unwrap_or_else(|e| e.into_inner()).stop_all();
    let teardown = teardown(&cfg).await;

    let elapsed = started.elapsed();
    match result {
        Ok(outcomes) => {
            let failed = summary(&out, &outcomes);
            out.blank();
            match &teardown {
                Ok(what) => out.line(out.paint(DIM, format!("Stopped the services; {what}."))),
                Err(e) => out.line(out.paint(RED, format!("Clean-up failed: {e}"))),
            }
            out.line(format!(
                "Finished in {:.1} s. Logs: {}",
                elapsed.as_secs_f64(),
                cfg.logs().display()
            ));
            if failed > 0 {
                return Err(format!(
                    "{failed} of {} scenarios failed (see above and the logs in {})",
                    outcomes.len(),
                    cfg.logs().display()
                ));
            }
            teardown.map(|_| ())
        }
        Err(Stop::Error(e)) => {
            if let Err(t) = teardown {
                eprintln!("clean-up failed: {t}");
            }
            Err(format!(
                "{e}\n(logs of the services: {})",
                cfg.logs().display()
            ))
        }
        Err(Stop::Signal(sig)) => {
            if let Err(t) = teardown {
                eprintln!("clean-up failed: {t}");
            }
            eprintln!("tccd demo: stopped by {sig}; the services are stopped");
            std::process::exit(if sig == "SIGTERM" { 143 } else { 130 });
        }
    }
}

enum Stop {
    Error(String),
    Signal(&'static str),
}

pub fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// SIGINT and SIGTERM.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| format!("cannot listen for signals: {e}");
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(err)?,
            term: signal(SignalKind::terminate()).map_err(err)?,
        })
    }

    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Drops the Postgres databases (if any) and the Redis keys of the demo's namespaces.
async fn teardown(cfg: &Config) -> Result<String, String> {
    let mut done = Vec::new();
    let mut errors = Vec::new();
    if let Some(admin) = cfg.pg_url.clone() {
        let names = cfg.pg_names();
        let shown = names.join(", ");
        match tokio::task::spawn_blocking(move || stores::pg_drop(&admin, &names)).await {
            Ok(Ok(())) => done.push(format!("dropped the databases {shown}")),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    match stores::redis_clear(&cfg.redis_url, &cfg.namespaces()).await {
        Ok(n) => done.push(format!(
            "deleted the {n} Redis keys under {}",
            cfg.namespaces().join(", ")
        )),
        Err(e) => errors.push(e),
    }
    if errors.is_empty() {
        Ok(done.join("; "))
    } else {
        Err(errors.join("; "))
    }
}

const COORDINATOR_TUNING: [&str; 10] = [
    "--retry-base-ms",
    "100",
    "--retry-cap-ms",
    "1000",
    "--recovery-interval-ms",
    "200",
    "--lease-ms",
    "2000",
    "--request-timeout-ms",
    "5000",
];

/// Prepares the stores, starts the processes, runs the scenarios.
async fn body(
    cfg: Arc<Config>,
    out: Out,
    procs: Arc<Mutex<Procs>>,
) -> Result<Vec<Outcome>, String> {
    out.line(out.paint(
        BOLD,
        "tccd demo: a TCC coordinator and two stock services (inventory, wallet), \
         each keeping its stock in SQL and in Redis",
    ));

    // Stores.
    let databases = match cfg.pg_url.as_deref() {
        Some(admin_url) => stores::Databases::Postgres {
            admin_url,
            names: cfg.pg_names(),
        },
        None => stores::Databases::Sqlite { dir: &cfg.dir },
    };
    let db_urls = stores::fresh(&out, databases, &cfg.redis_url, &cfg.namespaces()).await?;
    out.line(format!("  logs       {}", cfg.logs().display()));

    // Processes: the coordinator first (the services register with it), then both services.
    let urls = start_checkout(
        &procs,
        CheckoutSpec {
            role_prefix: "",
            db_urls: &db_urls,
            redis_url: &cfg.redis_url,
            namespace_prefix: &cfg.prefix,
            coordinator_flags: &COORDINATOR_TUNING,
            stock_flags: &["--faults"],
        },
    )
    .await?;
    let (coord_url, inv_url, wal_url) = (urls.coordinator, urls.inventory, urls.wallet);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let coord = CoordinatorClient::with_client(&coord_url, http.clone());
    let inventory = StockClient::with_client(&inv_url, http.clone());
    let wallet = StockClient::with_client(&wal_url, http.clone());
    wait_registered(&coord, &["inventory", "wallet"], &procs).await?;

    let mut t = Table::new(
        &["process", "pid", "address", "database", "log"],
        &[Align::Left, Align::Right],
    );
    let info = lock(&procs).info();
    for (role, url, db) in [
        ("coordinator", &coord_url, &db_urls[0]),
        ("inventory", &inv_url, &db_urls[1]),
        ("wallet", &wal_url, &db_urls[2]),
    ] {
        let p = info.iter().find(|p| p.role == role);
        t.row(vec![
            role.into(),
            p.map(|p| p.pid.to_string()).unwrap_or_default().into(),
            url.as_str().into(),
            redact(db).into(),
            p.map(|p| {
                p.log
                    .file_name()
                    .map(|f| format!("logs/{}", f.to_string_lossy()))
                    .unwrap_or_default()
            })
            .unwrap_or_default()
            .into(),
        ]);
    }
    out.blank();
    out.table(&t);
    out.line(format!(
        "  {}",
        out.paint(
            DIM,
            "both stock services registered with the coordinator (GET /v1/resources/{name} 200)"
        )
    ));

    let mut ctx = Ctx::new(out, coord, inventory, wallet, procs, http);
    Ok(scenarios::run_all(&mut ctx).await)
}

/// Polls the coordinator until every resource is registered.
pub async fn wait_registered(
    coord: &CoordinatorClient,
    names: &[&str],
    procs: &Arc<Mutex<Procs>>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            match coord.resource(name).await {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(e) if e.is_transport() => {}
                Err(e) => return Err(format!("checking the registration of {name}: {e}")),
            }
            let gone = lock(procs).exited();
            if !gone.is_empty() {
                return Err(gone.join("\n"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{name} did not register with the coordinator within 30 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Prints the summary table; returns how many scenarios failed.
fn summary(out: &Out, outcomes: &[Outcome]) -> usize {
    out.blank();
    out.line(out.paint(BOLD, "Summary"));
    let mut t = Table::new(
        &["#", "scenario", "expected", "observed", "ok"],
        &[Align::Right],
    );
    for (i, o) in outcomes.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string().into(),
            o.name.into(),
            o.expected.clone().into(),
            o.observed.clone().into(),
            if o.ok {
                Cell::styled("ok", GREEN)
            } else {
                Cell::styled("FAILED", RED)
            },
        ]);
    }
    out.table(&t);
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    out.blank();
    if failed == 0 {
        out.line(out.paint(GREEN, format!("All {} scenarios ok.", outcomes.len())));
    } else {
        out.line(out.paint(
            RED,
            format!("{failed} of {} scenarios FAILED.", outcomes.len()),
        ));
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(prefix: &str) -> DemoArgs {
        DemoArgs {
            dir: "target/demo".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            pg_url: Some(String::new()),
            namespace_prefix: prefix.into(),
        }
    }

    #[test]
    fn prefixes_are_checked() {
        let c = Config::from_args(args("t_0123abcd")).unwrap();
        assert!(c.dir.is_absolute());
        assert_eq!(c.pg_url, None);
        assert_eq!(c.namespace("wallet"), "t_0123abcd_wallet");
        assert_eq!(c.pg_names()[0], "t_0123abcd_coordinator");
        for bad in ["", "Demo", "a-b", "1x", "x;drop", &"a".repeat(41)] {
            assert!(Config::from_args(args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
