//! Shared helpers of the black-box tests: scratch databases, the real `tccd` process, a
//! programmable fake resource service and a small client of the coordinator API.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod api;
pub mod db;
pub mod fake_resource;
pub mod process;
pub mod redis_ns;
pub mod stock;

use std::future::Future;
use std::time::{Duration, Instant};

pub use api::{Api, assert_error, assert_status};
pub use db::{Backend, TestDb};
pub use fake_resource::{Behaviour, Call, CallBarrier, FakeResources, Op};
pub use process::{Coordinator, Process};
pub use redis_ns::RedisNamespace;
pub use serde_json::{Value, json};

/// Generates `mod sqlite { ... }` and `mod postgres { ... }` with one `#[tokio::test]` per
/// scenario; each scenario is an `async fn name(backend: Backend)` in the test file.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            )+
        }
    };
}

/// Default deadline for anything asynchronous (recovery, retries, background phase two).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, panicking with `what` once `timeout` has passed.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `GET /v1/transactions/{gid}` until its status is `status`; returns the transaction.
pub async fn wait_status(api: &Api, gid: &str, status: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, body) = api.get(gid).await;
        if code == 200 && body["status"] == status {
            return body;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {DEADLINE:?} waiting for transaction {gid} to be {status}; \
                 last answer {code}: {body:#}"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls until the transaction is `committed` or `aborted`; returns it.
pub async fn wait_final(api: &Api, gid: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, body) = api.get(gid).await;
        if code == 200 && (body["status"] == "committed" || body["status"] == "aborted") {
            return body;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {DEADLINE:?} waiting for transaction {gid} to be final; \
                 last answer {code}: {body:#}"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts an API time: RFC 3339 UTC with milliseconds (`2026-11-22T10:00:00.123Z`).
#[track_caller]
pub fn assert_time(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a time string: {v}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(s).is_ok()
            && s.len() == 24
            && s.ends_with('Z')
            && s.as_bytes()[19] == b'.',
        "{what}: expected RFC 3339 UTC with milliseconds like 2026-11-22T10:00:00.123Z, got {s}"
    );
}

/// Parses an API time.
pub fn parse_time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// The status of every branch of a transaction body, in order.
pub fn branch_statuses(tx: &Value) -> Vec<String> {
    tx["branches"]
        .as_array()
        .unwrap_or_else(|| panic!("transaction without a branches array: {tx:#}"))
        .iter()
        .map(|b| b["status"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

/// One test's world: a scratch database, the fake resource services and one coordinator.
/// Fields drop in order: the coordinator is killed first, the database dropped last.
pub struct TestEnv {
    pub coord: Coordinator,
    pub fake: FakeResources,
    pub db: TestDb,
}

impl TestEnv {
    pub async fn start(backend: Backend, args: &[&str]) -> TestEnv {
        Self::start_with_env(backend, args, &[]).await
    }

    pub async fn start_with_env(backend: Backend, args: &[&str], env: &[(&str, &str)]) -> TestEnv {
        let db = backend.create_db().await;
        let fake = FakeResources::start();
        let coord = Coordinator::start(&db.url, args, env).await;
        TestEnv { coord, fake, db }
    }

    pub fn api(&self) -> &Api {
        &self.coord.api
    }

    /// Registers the fake resource `name` with the coordinator (expects 201 or 200).
    pub async fn register(&self, name: &str) {
        self.fake.register(&self.coord.api, name).await;
    }

    /// Begins a transaction with the given body, expecting 201; returns the gid.
    pub async fn begin(&self, body: Value) -> String {
        let (code, tx) = self.api().begin(body).await;
        assert_eq!(code, 201, "begin: {tx:#}");
        assert_eq!(tx["status"], "trying", "begin: {tx:#}");
        tx["gid"]
            .as_str()
            .unwrap_or_else(|| panic!("begin without gid: {tx:#}"))
            .to_string()
    }

    /// Adds a branch on `resource` with `payload`, expecting `200 tried`; returns the branch id.
    pub async fn tried_branch(&self, gid: &str, resource: &str, payload: Value) -> String {
        let (code, b) = self
            .api()
            .add_branch(gid, json!({"resource": resource, "payload": payload}))
            .await;
        assert_eq!(code, 200, "branch on {resource}: {b:#}");
        assert_eq!(b["status"], "tried", "branch on {resource}: {b:#}");
        b["branch_id"]
            .as_str()
            .unwrap_or_else(|| panic!("branch without branch_id: {b:#}"))
            .to_string()
    }
}
