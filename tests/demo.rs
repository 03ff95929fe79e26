//! `tccd demo` end to end: the real binary starts its coordinator and stock services, plays the
//! seven scenarios and must exit 0 with every scenario ok and the final check `consistent`.
//! Once on SQLite (files in a temp dir), once on Postgres (`TCCD_TEST_PG_URL`); both on the Redis
//! in `TCCD_TEST_REDIS_URL`, under a unique namespace prefix.

mod support;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use support::db::pg_admin_url;
use support::process::run_to_end;
use support::redis_ns::{keys_matching, redis_url};

/// The demo finishes in well under a minute; this only stops a hung run.
const DEADLINE: Duration = Duration::from_secs(300);

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
    let mut args: Vec<OsString> = vec!["demo".into(), "--dir".into(), dir.clone().into()];
    for a in ["--redis-url", &redis_url(), "--namespace-prefix", &prefix] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(OsString::from));
    // Only the flags above configure the demo (a TCCD_DEMO_PG_URL in the environment would turn
    // the SQLite run into a Postgres one): run_to_end does not pass TCCD_* on.
    let run = run_to_end(&args, DEADLINE);
    Run {
        prefix,
        ok: run.ok(),
        stdout: run.stdout,
        stderr: run.stderr,
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
    let left = keys_matching(&redis_url(), &format!("{}_*", run.prefix));
    assert!(
        left.is_empty(),
        "the demo left Redis keys behind: {:?}",
        &left[..left.len().min(5)]
    );
    let _ = std::fs::remove_dir_all(&run.dir);
}

#[test]
fn demo_on_sqlite() {
    assert_demo_passed(run_demo(&[]));
}

#[test]
fn demo_on_postgres() {
    use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, sql_query};

    let pg = pg_admin_url();
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
