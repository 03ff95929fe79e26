//! `tccd bench` end to end, briefly: the real binary starts its coordinator and stock services,
//! runs every mode for a second or two with a few clients and a small prefill, writes its JSON
//! report, and leaves no process, database or Redis key behind. Once on SQLite (files in a temp
//! dir), once on Postgres (`TCCD_TEST_PG_URL`); both on the Redis in `TCCD_TEST_REDIS_URL`, under
//! a unique namespace prefix. The figures themselves are not checked (a debug build on a busy
//! machine); `make bench` measures.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// A run takes well under a minute; this only stops a hung one.
const DEADLINE: Duration = Duration::from_secs(300);

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

struct Run {
    prefix: String,
    ok: bool,
    stdout: String,
    stderr: String,
    report: Option<Value>,
    dir: PathBuf,
}

fn run_bench(backend: &str, extra: &[&str]) -> Run {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("tccd-bench-test-{id}"));
    let prefix = format!("t_{}", &id[..16]);
    let out = dir.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tccd"));
    cmd.arg("bench")
        .args(["--backends", backend])
        .args(["--modes", "coordinated,dtm,baseline"])
        .args([
            "--clients",
            "4",
            "--warmup-secs",
            "1",
            "--duration-secs",
            "2",
        ])
        .args(["--prefill", "500"])
        .arg("--dir")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .args(["--namespace-prefix", &prefix])
        .args([
            "--redis-url",
            &env_or("TCCD_TEST_REDIS_URL", DEFAULT_REDIS_URL),
        ])
        .args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("TCCD_") || k == "FAILPOINTS" || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start tccd bench");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let so = drain(Box::new(child.stdout.take().unwrap()));
    let se = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tccd bench") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Run {
        prefix,
        ok: status.is_some_and(|s| s.success()),
        stdout: so.join().unwrap(),
        stderr: se.join().unwrap(),
        report,
        dir,
    }
}

/// No process of this run (its databases are under its directory or prefix) is left.
fn no_children_left(run: &Run) {
    let dir = run.dir.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !(cmdline.contains("tccd")
                && (cmdline.contains(&dir) || cmdline.contains(&run.prefix))),
            "left behind: {cmdline}"
        );
    }
}

fn check(backend: &str, run: &Run) {
    assert!(
        run.ok,
        "tccd bench failed\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout, run.stderr
    );
    let report = run.report.as_ref().expect("the JSON report");
    let b = &report[backend];
    for mode in ["coordinated", "dtm", "baseline"] {
        let m = &b[mode];
        for field in [
            "tx_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "errors",
            "peak_rss_kib",
        ] {
            assert!(
                m.get(field).is_some(),
                "{backend} {mode}: no {field} in {m}"
            );
        }
        assert!(
            m["tx"].as_u64().unwrap() > 0,
            "{backend} {mode}: nothing committed: {m}\n{}",
            run.stderr
        );
        assert_eq!(m["errors"], 0, "{backend} {mode}: {m}");
        assert!(m["peak_rss_kib"]["coordinator"].as_u64().unwrap() > 0);
    }
    assert!(b["ratio_coordinated_to_baseline"].as_f64().unwrap() > 0.0);
    assert!(
        run.stdout.contains("coordinated / baseline"),
        "{}",
        run.stdout
    );
    no_children_left(run);
    let _ = std::fs::remove_dir_all(&run.dir);
}

#[test]
fn bench_runs_on_sqlite() {
    let run = run_bench("sqlite", &[]);
    check("sqlite", &run);
    let b = &run.report.as_ref().unwrap()["sqlite"];
    assert!(b["coordinated"]["db_commits_per_tx"].is_null());
}

#[test]
fn bench_runs_on_postgres() {
    let admin = env_or("TCCD_TEST_PG_URL", DEFAULT_PG_URL);
    let run = run_bench("postgres", &["--pg-url", &admin]);
    check("postgres", &run);
    let b = &run.report.as_ref().unwrap()["postgres"];
    // Every committed checkout wrote to the coordinator's database; the baseline did not.
    assert!(b["coordinated"]["db_commits_per_tx"].as_f64().unwrap() >= 1.0);
    assert!(b["baseline"]["stock_db_commits_per_tx"].as_f64().unwrap() >= 2.0);
    // ... and its databases are gone.
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::PgConnection::establish(&admin).unwrap();
    let left: Count = diesel::sql_query(format!(
        "SELECT COUNT(*) AS n FROM pg_database WHERE datname LIKE '{}%'",
        run.prefix
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(left.n, 0, "databases of {} left behind", run.prefix);
}
