//! DTM's real Python client, `dtmcli` 1.7.7.0, drives TCC transactions through tccd.
//! `make test` installs it into the virtual environment `target/dtm-venv`
//! (override with `TCCD_TEST_DTM_PYTHON`).

#[macro_use]
mod support;

use std::path::PathBuf;

use reqwest::Method;
use support::stock::{Counters, StockService};
use support::*;

fn python() -> PathBuf {
    let path = std::env::var_os("TCCD_TEST_DTM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dtm-venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run `make test`, which creates target/dtm-venv with dtmcli==1.7.7.0, \
         or point TCCD_TEST_DTM_PYTHON at a Python that has it",
        path.display()
    );
    path
}

/// Runs one checkout with dtmcli; returns (gid, committed).
async fn dtmcli_checkout(coordinator: &str, branches: Value) -> (String, bool) {
    let spec =
        json!({"dtm": format!("{coordinator}/api/dtmsvr"), "branches": branches}).to_string();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dtm/dtmcli_checkout.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .arg(spec)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dtmcli failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (
        line["gid"].as_str().unwrap().to_string(),
        line["committed"].as_bool().unwrap(),
    )
}

fn fake_branch(env: &TestEnv, name: &str, body: Value) -> Value {
    let (t, c, x) = env.fake.urls(name);
    json!({"try": t, "confirm": c, "cancel": x, "body": body})
}

async fn wait_dtm_status(api: &Api, gid: &str, status: &str) -> Value {
    wait_for(&format!("{gid} to be {status}"), DEADLINE, || async move {
        let (code, q) = api
            .call(Method::GET, &format!("/api/dtmsvr/query?gid={gid}"), None)
            .await;
        (code == 200 && q["transaction"]["status"] == status).then_some(q)
    })
    .await
}

async fn two_branches_succeed(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    let branches = json!([
        fake_branch(&env, "trans-out", json!({"amount": 30})),
        fake_branch(&env, "trans-in", json!({"amount": 30}))
    ]);
    let (gid, committed) = dtmcli_checkout(&env.api().base.clone(), branches).await;
    assert!(committed);
    wait_dtm_status(env.api(), &gid, "succeed").await;
    for r in ["trans-out", "trans-in"] {
        assert_eq!(env.fake.count(r, Op::Try), 1, "{r}");
        assert_eq!(env.fake.count(r, Op::Confirm), 1, "{r}");
        assert_eq!(env.fake.count(r, Op::Cancel), 0, "{r}");
        assert_eq!(
            env.fake.calls(r, Op::Confirm)[0].body,
            json!({"amount": 30})
        );
    }
}

async fn refused_second_try_aborts(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    env.fake.push("trans-in", Op::Try, [Behaviour::Refuse]);
    let branches = json!([
        fake_branch(&env, "trans-out", json!({"amount": 30})),
        fake_branch(&env, "trans-in", json!({"amount": 30}))
    ]);
    let (gid, committed) = dtmcli_checkout(&env.api().base.clone(), branches).await;
    assert!(!committed, "the client must abort after a refused Try");
    wait_dtm_status(env.api(), &gid, "failed").await;
    for r in ["trans-out", "trans-in"] {
        assert_eq!(env.fake.count(r, Op::Cancel), 1, "{r}");
        assert_eq!(env.fake.count(r, Op::Confirm), 0, "{r}");
    }
}

async fn stock_service_as_a_branch(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    let inventory = StockService::start(backend, "inventory", &[]).await;
    let wallet = StockService::start(backend, "wallet", &[]).await;
    inventory.put_stock("sku-1", 10).await;
    wallet.put_stock("alice", 100).await;
    let branch = |svc: &StockService, key: &str, amount: i64| {
        let base = svc.base_url();
        json!({"try": format!("{base}/tcc/try"), "confirm": format!("{base}/tcc/confirm"), "cancel": format!("{base}/tcc/cancel"),
               "body": {"items": [{"key": key, "amount": amount}]}})
    };
    let (gid, committed) = dtmcli_checkout(
        &env.api().base.clone(),
        json!([branch(&inventory, "sku-1", 2), branch(&wallet, "alice", 30)]),
    )
    .await;
    assert!(committed);
    wait_dtm_status(env.api(), &gid, "succeed").await;
    inventory
        .assert_both(
            "sku-1",
            Counters::new(8, 0, 2),
            "inventory after a DTM checkout",
        )
        .await;
    wallet
        .assert_both(
            "alice",
            Counters::new(70, 0, 30),
            "wallet after a DTM checkout",
        )
        .await;

    // Too little money: the wallet refuses the Try, dtmcli aborts, nothing stays reserved.
    let (gid, committed) = dtmcli_checkout(
        &env.api().base.clone(),
        json!([
            branch(&inventory, "sku-1", 1),
            branch(&wallet, "alice", 1000)
        ]),
    )
    .await;
    assert!(!committed);
    wait_dtm_status(env.api(), &gid, "failed").await;
    inventory
        .assert_both(
            "sku-1",
            Counters::new(8, 0, 2),
            "inventory after a refused DTM checkout",
        )
        .await;
    wallet
        .assert_both(
            "alice",
            Counters::new(70, 0, 30),
            "wallet after a refused DTM checkout",
        )
        .await;
}

backend_tests!(
    two_branches_succeed,
    refused_second_try_aborts,
    stock_service_as_a_branch
);
