//! `tccd bench` end to end, briefly: the real binary starts its coordinator and stock services,
//! runs every mode for a second or two with a few clients and a small prefill, writes its JSON
//! report, and leaves no process, database or Redis key behind. Once on SQLite (files in a temp
//! dir), once on Postgres (`TCCD_TEST_PG_URL`); both on the Redis in `TCCD_TEST_REDIS_URL`, under
//! a unique namespace prefix. The figures themselves are not checked (a debug build on a busy
//! machine); `make bench` measures.

mod support;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::db::pg_admin_url;
use support::process::run_to_end;
use support::redis_ns::redis_url;

/// A run takes well under a minute; this only stops a hung one.
const DEADLINE: Duration = Duration::from_secs(300);

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
    let mut args: Vec<OsString> = [
        "bench",
        "--backends",
        backend,
        "--modes",
        "coordinated,dtm,baseline",
        "--clients",
        "4",
        "--warmup-secs",
        "1",
        "--duration-secs",
        "2",
        "--prefill",
        "500",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.extend([
        "--dir".into(),
        dir.clone().into(),
        "--out".into(),
        out.clone().into(),
    ]);
    for a in ["--namespace-prefix", &prefix, "--redis-url", &redis_url()] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(OsString::from));
    let run = run_to_end(&args, DEADLINE);
    let report = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Run {
        prefix,
        ok: run.ok(),
        stdout: run.stdout,
        stderr: run.stderr,
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
    let admin = pg_admin_url();
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
