//! `tccd demo` end to end: the real binary starts its coordinator and stock services, plays the
//! seven scenarios and must exit 0 with every scenario ok and the final check `consistent`.
//! Once on SQLite (files in a temp dir), once on Postgres (`TCCD_TEST_PG_URL`); both on the Redis
//! in `TCCD_TEST_REDIS_URL`, under a unique namespace prefix.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_URL_VAR: &str = "TCCD_TEST_REDIS_URL";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const PG_URL_VAR: &str = "TCCD_TEST_PG_URL";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The demo finishes in well under a minute; this only stops a hung run.
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
    dir: PathBuf,
}

fn run_demo(extra: &[&str]) -> Run {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("tccd-demo-test-{id}"));
    let prefix = format!("t_{id}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tccd"));
    cmd.arg("demo")
        .arg("--dir")
        .arg(&dir)
        .arg("--redis-url")
        .arg(env_or(REDIS_URL_VAR, DEFAULT_REDIS_URL))
        .arg("--namespace-prefix")
        .arg(&prefix)
        .args(extra);
    // Only the flags above may configure the demo (a TCCD_DEMO_PG_URL in the environment would
    // turn the SQLite run into a Postgres one).
    for (k, _) in std::env::vars() {
        if k.starts_with("TCCD_") || k == "FAILPOINTS" || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start tccd demo");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tccd demo") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Only a hung demo gets here (it polls with deadlines); its services may outlive it.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap();
    let mut stderr = err.join().unwrap();
    if status.is_none() {
        stderr.push_str(&format!(
            "\n[test] tccd demo did not finish within {DEADLINE:?} and was killed"
        ));
    }
    Run {
        prefix,
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr,
        dir,
    }
}

fn assert_demo_passed(run: Run) {
    let explain = || {
        format!(
            "tccd demo (dir {}):\n----- stdout -----\n{}\n----- stderr -----\n{}",
            run.dir.display(),
            run.stdout,
            run.stderr
        )
    };
    assert!(run.ok, "tccd demo failed\n{}", explain());
    assert!(
        run.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("consistent")),
        "no `consistent` line\n{}",
        explain()
    );
    let summary: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| l.trim() != "Summary")
        .collect();
    for n in 1..=7 {
        let row = summary
            .iter()
            .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
            .unwrap_or_else(|| panic!("no summary row for scenario {n}\n{}", explain()));
        assert_eq!(
            row.split_whitespace().last(),
            Some("ok"),
            "scenario {n} is not ok: {row}\n{}",
            explain()
        );
    }
    assert!(
        run.stdout.contains("All 7 scenarios ok."),
        "no `All 7 scenarios ok.`\n{}",
        explain()
    );
    assert!(
        !run.stdout.contains('\x1b'),
        "colour codes although stdout is not a terminal\n{}",
        explain()
    );
    let left = redis_keys(&format!("{}_*", run.prefix));
    assert!(
        left.is_empty(),
        "the demo left Redis keys behind: {:?}",
        &left[..left.len().min(5)]
    );
    let _ = std::fs::remove_dir_all(&run.dir);
}

/// The keys matching `pattern` in the test Redis.
fn redis_keys(pattern: &str) -> Vec<String> {
    let url = env_or(REDIS_URL_VAR, DEFAULT_REDIS_URL);
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e}"));
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

#[test]
fn demo_on_sqlite() {
    assert_demo_passed(run_demo(&[]));
}

#[test]
fn demo_on_postgres() {
    use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, sql_query};

    let pg = env_or(PG_URL_VAR, DEFAULT_PG_URL);
    let run = run_demo(&["--pg-url", &pg]);
    let prefix = run.prefix.clone();
    assert_demo_passed(run);

    #[derive(QueryableByName)]
    struct Db {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let mut conn = PgConnection::establish(&pg)
        .unwrap_or_else(|e| panic!("cannot connect to Postgres at {pg}: {e}"));
    let left: Vec<Db> = sql_query(format!(
        "SELECT datname FROM pg_database WHERE datname LIKE '{prefix}\\_%'"
    ))
    .load(&mut conn)
    .expect("list databases");
    let left: Vec<String> = left.into_iter().map(|d| d.datname).collect();
    assert!(left.is_empty(), "the demo left databases behind: {left:?}");
}
