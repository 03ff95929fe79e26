//! The DTM-compatible API (`/api/dtmsvr`): its edge cases, on SQLite and Postgres.

#[macro_use]
mod support;

use reqwest::Method;
use support::*;

const DTM: &str = "/api/dtmsvr";

async fn dtm_post(api: &Api, op: &str, body: Value) -> (u16, Value) {
    api.call(Method::POST, &format!("{DTM}/{op}"), Some(&body))
        .await
}

async fn query(api: &Api, gid: &str) -> (u16, Value) {
    api.call(Method::GET, &format!("{DTM}/query?gid={gid}"), None)
        .await
}

/// Polls DTM's query until the transaction has `status`.
async fn wait_dtm_status(api: &Api, gid: &str, status: &str) -> Value {
    wait_for(&format!("{gid} to be {status}"), DEADLINE, || async move {
        let (code, q) = query(api, gid).await;
        (code == 200 && q["transaction"]["status"] == status).then_some(q)
    })
    .await
}

fn success(resp: &(u16, Value), what: &str) {
    assert_eq!(resp.0, 200, "{what}: {:#}", resp.1);
    assert_eq!(resp.1["dtm_result"], "SUCCESS", "{what}: {:#}", resp.1);
}

fn failure(resp: &(u16, Value), status: u16, what: &str) {
    assert_eq!(resp.0, status, "{what}: {:#}", resp.1);
    assert!(resp.1["error"]["code"].is_string(), "{what}: {:#}", resp.1);
    if status == 409 {
        assert_eq!(resp.1["dtm_result"], "FAILURE", "{what}: {:#}", resp.1);
    }
}

/// Prepares `gid` and registers one branch per fake resource, DTM-style.
async fn prepared(env: &TestEnv, gid: &str, extra: Value, resources: &[&str]) {
    let mut body = json!({"gid": gid, "trans_type": "tcc"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    success(&dtm_post(env.api(), "prepare", body).await, "prepare");
    for (i, r) in resources.iter().enumerate() {
        let (_, confirm, cancel) = env.fake.urls(r);
        let reg = json!({
            "gid": gid, "branch_id": format!("{:02}", i + 1), "trans_type": "tcc", "status": "prepared",
            "data": json!({"n": i}).to_string(), "confirm": confirm, "cancel": cancel,
        });
        success(
            &dtm_post(env.api(), "registerBranch", reg).await,
            "registerBranch",
        );
    }
}

fn gid() -> String {
    format!("dtm-{}", uuid::Uuid::new_v4().simple())
}

async fn prepare_is_idempotent(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let g = gid();
    let body = json!({"gid": g, "trans_type": "tcc"});
    success(
        &dtm_post(env.api(), "prepare", body.clone()).await,
        "first prepare",
    );
    success(
        &dtm_post(env.api(), "prepare", body).await,
        "second prepare",
    );
    let (code, q) = query(env.api(), &g).await;
    assert_eq!(code, 200, "{q:#}");
    assert_eq!(q["transaction"]["status"], "prepared");
    // The native API sees the same transaction, with the mapped status.
    let (code, tx) = env.api().get(&g).await;
    assert_eq!(code, 200, "{tx:#}");
    assert_eq!(tx["status"], "trying");
    // A second prepare after submit is refused.
    success(
        &dtm_post(env.api(), "submit", json!({"gid": g, "trans_type": "tcc"})).await,
        "submit",
    );
    failure(
        &dtm_post(env.api(), "prepare", json!({"gid": g, "trans_type": "tcc"})).await,
        409,
        "prepare after submit",
    );
}

async fn two_branches_succeed_and_show_in_both_apis(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    let g = gid();
    prepared(&env, &g, json!({}), &["out", "in"]).await;
    success(
        &dtm_post(env.api(), "submit", json!({"gid": g, "trans_type": "tcc"})).await,
        "submit",
    );
    let q = wait_dtm_status(env.api(), &g, "succeed").await;
    let branches = q["branches"].as_array().unwrap();
    assert_eq!(
        branches.len(),
        4,
        "a cancel row and a confirm row per branch: {q:#}"
    );
    assert!(
        branches
            .iter()
            .filter(|b| b["op"] == "confirm")
            .all(|b| b["status"] == "succeed"),
        "{q:#}"
    );
    for r in ["out", "in"] {
        let confirms = env.fake.calls(r, Op::Confirm);
        assert_eq!(confirms.len(), 1, "{r}: {confirms:#?}");
        assert_eq!(env.fake.count(r, Op::Cancel), 0);
        // DTM-style: the branch data is the whole body.
        assert!(confirms[0].body.get("n").is_some(), "{:#?}", confirms[0]);
    }
    let (_, tx) = env.api().get(&g).await;
    assert_eq!(tx["status"], "committed", "{tx:#}");
    // A repeated submit of a finished transaction is still a success.
    success(
        &dtm_post(env.api(), "submit", json!({"gid": g, "trans_type": "tcc"})).await,
        "second submit",
    );
    let (code, all) = env
        .api()
        .call(
            Method::GET,
            &format!("{DTM}/all?status=succeed&limit=10"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{all:#}");
    assert!(
        all["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["gid"] == g.as_str()),
        "{all:#}"
    );
}

async fn register_branch_rules(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let g = gid();
    prepared(&env, &g, json!({}), &["a"]).await;
    let (_, confirm, cancel) = env.fake.urls("a");
    let same = json!({"gid": g, "branch_id": "01", "trans_type": "tcc", "data": json!({"n": 0}).to_string(), "confirm": confirm, "cancel": cancel});
    success(
        &dtm_post(env.api(), "registerBranch", same.clone()).await,
        "identical registerBranch",
    );
    let mut other = same.clone();
    other["data"] = json!("{\"n\": 99}");
    failure(
        &dtm_post(env.api(), "registerBranch", other).await,
        409,
        "registerBranch with other data",
    );
    let mut bad = same.clone();
    bad["branch_id"] = json!(2);
    let resp = dtm_post(env.api(), "registerBranch", bad).await;
    failure(&resp, 400, "non-string branch_id");
    assert!(
        resp.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("branch_id"),
        "{:#}",
        resp.1
    );
    let mut bad_url = same.clone();
    bad_url["branch_id"] = json!("03");
    bad_url["confirm"] = json!("ftp://x/y");
    failure(
        &dtm_post(env.api(), "registerBranch", bad_url).await,
        400,
        "non-http confirm URL",
    );
    let mut unknown = same.clone();
    unknown["gid"] = json!("no-such-gid");
    failure(
        &dtm_post(env.api(), "registerBranch", unknown).await,
        404,
        "unknown gid",
    );
    // Once submitted, no more branches.
    success(
        &dtm_post(env.api(), "submit", json!({"gid": g, "trans_type": "tcc"})).await,
        "submit",
    );
    let mut late = same;
    late["branch_id"] = json!("02");
    failure(
        &dtm_post(env.api(), "registerBranch", late).await,
        409,
        "registerBranch after submit",
    );
    let saga = dtm_post(
        env.api(),
        "prepare",
        json!({"gid": gid(), "trans_type": "saga"}),
    )
    .await;
    failure(&saga, 400, "a saga");
}

async fn abort_and_submit_rules(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    failure(
        &dtm_post(
            env.api(),
            "submit",
            json!({"gid": "never-prepared", "trans_type": "tcc"}),
        )
        .await,
        404,
        "submit of an unknown gid",
    );
    failure(
        &dtm_post(
            env.api(),
            "abort",
            json!({"gid": "never-prepared", "trans_type": "tcc"}),
        )
        .await,
        404,
        "abort of an unknown gid",
    );

    let g = gid();
    prepared(&env, &g, json!({}), &["a", "b"]).await;
    success(
        &dtm_post(env.api(), "submit", json!({"gid": g, "trans_type": "tcc"})).await,
        "submit",
    );
    failure(
        &dtm_post(env.api(), "abort", json!({"gid": g, "trans_type": "tcc"})).await,
        409,
        "abort after submit",
    );
    wait_dtm_status(env.api(), &g, "succeed").await;

    let g2 = gid();
    prepared(&env, &g2, json!({}), &["a", "b"]).await;
    success(
        &dtm_post(env.api(), "abort", json!({"gid": g2, "trans_type": "tcc"})).await,
        "abort",
    );
    success(
        &dtm_post(env.api(), "abort", json!({"gid": g2, "trans_type": "tcc"})).await,
        "abort again",
    );
    wait_dtm_status(env.api(), &g2, "failed").await;
    failure(
        &dtm_post(env.api(), "submit", json!({"gid": g2, "trans_type": "tcc"})).await,
        409,
        "submit after abort",
    );
    assert_eq!(env.fake.count("a", Op::Cancel), 1);
    assert_eq!(env.fake.count("b", Op::Cancel), 1);
    assert_eq!(env.fake.count("a", Op::Confirm), 1, "only g's confirm");
}

async fn confirm_failure_is_retried_not_cancelled(backend: Backend) {
    let env = TestEnv::start(
        backend,
        &[
            "--retry-base-ms",
            "20",
            "--retry-cap-ms",
            "200",
            "--recovery-interval-ms",
            "50",
        ],
    )
    .await;
    let g = gid();
    prepared(&env, &g, json!({}), &["pay"]).await;
    let failing = Behaviour::Ok(json!({"dtm_result": "FAILURE"}));
    env.fake
        .push("pay", Op::Confirm, [failing.clone(), failing]);
    success(
        &dtm_post(env.api(), "submit", json!({"gid": g, "trans_type": "tcc"})).await,
        "submit",
    );
    wait_dtm_status(env.api(), &g, "succeed").await;
    assert_eq!(
        env.fake.count("pay", Op::Confirm),
        3,
        "two FAILURE answers, then success"
    );
    assert_eq!(
        env.fake.count("pay", Op::Cancel),
        0,
        "a failing confirm is never turned into a cancel"
    );
}

async fn prepared_transaction_times_out(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "50"]).await;
    let g = gid();
    prepared(&env, &g, json!({"timeout_to_fail": 1}), &["a"]).await;
    wait_dtm_status(env.api(), &g, "failed").await;
    assert_eq!(env.fake.count("a", Op::Cancel), 1);
    assert_eq!(env.fake.count("a", Op::Confirm), 0);
    failure(
        &dtm_post(env.api(), "submit", json!({"gid": g, "trans_type": "tcc"})).await,
        409,
        "submit after the timeout",
    );
}

async fn new_gid_and_bad_queries(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let (code, body) = env
        .api()
        .call(Method::GET, &format!("{DTM}/newGid"), None)
        .await;
    assert_eq!(code, 200, "{body:#}");
    assert!(
        body["gid"].as_str().is_some_and(|g| !g.is_empty()),
        "{body:#}"
    );
    let (code, body) = env
        .api()
        .call(Method::GET, &format!("{DTM}/query"), None)
        .await;
    assert_eq!(code, 400, "{body:#}");
    let (code, body) = query(env.api(), "unknown-gid").await;
    assert_eq!(code, 404, "{body:#}");
    let (code, body) = env
        .api()
        .call(Method::GET, &format!("{DTM}/all?status=bogus"), None)
        .await;
    assert_eq!(code, 400, "{body:#}");
}

backend_tests!(
    prepare_is_idempotent,
    two_branches_succeed_and_show_in_both_apis,
    register_branch_rules,
    abort_and_submit_rules,
    confirm_failure_is_retried_not_cancelled,
    prepared_transaction_times_out,
    new_gid_and_bad_queries,
);
