//! Crash recovery: the coordinator aborts at each persistence boundary (failpoints, set through
//! `FAILPOINTS`), is restarted without them on the same database, and must drive every
//! transaction to the right final status (API.md section 1, "Guarantees").
#![cfg(feature = "failpoints")]

#[macro_use]
mod support;

use std::time::Duration;

use support::*;

backend_tests!(
    crash_after_branch_stored,
    crash_after_try,
    crash_after_commit_decision,
    crash_after_abort_decision,
    crash_between_two_confirms,
);

const ARGS: &[&str] = &[
    "--lease-ms",
    "1000",
    "--recovery-interval-ms",
    "100",
    "--retry-base-ms",
    "20",
    "--retry-cap-ms",
    "200",
];

async fn start(backend: Backend, failpoints: &str) -> TestEnv {
    let env = TestEnv::start_with_env(backend, ARGS, &[("FAILPOINTS", failpoints)]).await;
    env.register("alpha").await;
    env.register("beta").await;
    env
}

/// The request that hit the failpoint failed; waits for the abnormal exit of the coordinator.
async fn expect_crash(env: &mut TestEnv, what: &str, resp: Result<(u16, Value), reqwest::Error>) {
    if let Ok((code, body)) = &resp {
        panic!(
            "{what}: expected the coordinator to crash, got {code} {body:#}; logs:\n{}",
            env.coord.logs()
        );
    }
    let status = env.coord.wait_exit(Duration::from_secs(30)).await;
    assert!(
        !status.success(),
        "{what}: the failpoint must abort the process, exit status {status:?}"
    );
}

/// Restarts the coordinator on the same database without failpoints.
async fn restart(env: &mut TestEnv) {
    env.coord.restart_with_env(&[]).await;
}

async fn crash_after_branch_stored(backend: Backend) {
    let mut env = start(backend, "coord_after_branch_stored=return").await;
    let gid = env.begin(json!({"timeout_ms": 2000})).await;
    let r = env
        .api()
        .try_add_branch(&gid, json!({"resource": "alpha", "payload": {"n": 1}}))
        .await;
    expect_crash(&mut env, "branch", r).await;
    assert_eq!(env.fake.count_for("alpha", Op::Try, &gid), 0);
    restart(&mut env).await;

    let tx = wait_status(env.api(), &gid, "aborted").await;
    assert_eq!(
        branch_statuses(&tx),
        ["cancelled"],
        "the stored branch: {tx:#}"
    );
    assert_eq!(env.fake.count_op(Op::Confirm), 0, "no Confirm anywhere");
    assert_eq!(
        env.fake.count_for("alpha", Op::Try, &gid),
        0,
        "no Try after the restart: {}",
        env.fake.describe(&gid)
    );
    assert!(
        env.fake.count_for("alpha", Op::Cancel, &gid) >= 1,
        "a branch whose Try may have been sent is cancelled: {}",
        env.fake.describe(&gid)
    );
    assert_error(
        &env.api().commit(&gid).await,
        409,
        "conflict",
        "commit after recovery",
    );
}

async fn crash_after_try(backend: Backend) {
    let mut env = start(backend, "coord_after_try=return").await;
    let gid = env.begin(json!({"timeout_ms": 2000})).await;
    let r = env
        .api()
        .try_add_branch(&gid, json!({"resource": "alpha", "payload": {"n": 1}}))
        .await;
    expect_crash(&mut env, "branch", r).await;
    assert_eq!(env.fake.count_for("alpha", Op::Try, &gid), 1);
    restart(&mut env).await;

    let tx = wait_status(env.api(), &gid, "aborted").await;
    assert_eq!(branch_statuses(&tx), ["cancelled"], "{tx:#}");
    assert!(
        env.fake.count_for("alpha", Op::Cancel, &gid) >= 1,
        "the tried branch must be cancelled: {}",
        env.fake.describe(&gid)
    );
    assert_eq!(env.fake.count_op(Op::Confirm), 0, "no Confirm anywhere");
    assert_eq!(
        env.fake.count_for("alpha", Op::Try, &gid),
        1,
        "no second Try"
    );
}

async fn crash_after_commit_decision(backend: Backend) {
    let mut env = start(backend, "coord_after_decision=return").await;
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
    env.tried_branch(&gid, "beta", json!({"n": 2})).await;
    let r = env.api().try_commit(&gid).await;
    expect_crash(&mut env, "commit", r).await;
    assert_eq!(
        env.fake.count_op_for_gid(Op::Confirm, &gid),
        0,
        "the failpoint is before the first Confirm"
    );
    restart(&mut env).await;

    let tx = wait_status(env.api(), &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed", "confirmed"], "{tx:#}");
    for res in ["alpha", "beta"] {
        assert!(env.fake.count_for(res, Op::Confirm, &gid) >= 1, "{res}");
    }
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0, "no Cancel");
    let r = env.api().commit(&gid).await;
    assert_status(&r, 200, "commit after recovery");
    assert_eq!(r.1["status"], "committed");
}

async fn crash_after_abort_decision(backend: Backend) {
    let mut env = start(backend, "coord_after_decision=return").await;
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
    env.tried_branch(&gid, "beta", json!({"n": 2})).await;
    let r = env
        .api()
        .send(
            reqwest::Method::POST,
            &format!("/v1/transactions/{gid}/abort"),
            None,
        )
        .await;
    expect_crash(&mut env, "abort", r).await;
    assert_eq!(
        env.fake.count_op_for_gid(Op::Cancel, &gid),
        0,
        "the failpoint is before the first Cancel"
    );
    restart(&mut env).await;

    let tx = wait_status(env.api(), &gid, "aborted").await;
    assert_eq!(branch_statuses(&tx), ["cancelled", "cancelled"], "{tx:#}");
    for res in ["alpha", "beta"] {
        assert!(env.fake.count_for(res, Op::Cancel, &gid) >= 1, "{res}");
    }
    assert_eq!(
        env.fake.count_op_for_gid(Op::Confirm, &gid),
        0,
        "no Confirm"
    );
}

async fn crash_between_two_confirms(backend: Backend) {
    let mut env = start(backend, "coord_after_phase_two_call=1*off->return").await;
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
    env.tried_branch(&gid, "beta", json!({"n": 2})).await;
    let r = env.api().try_commit(&gid).await;
    expect_crash(&mut env, "commit", r).await;
    assert!(env.fake.count_op_for_gid(Op::Confirm, &gid) >= 1);
    restart(&mut env).await;

    let tx = wait_status(env.api(), &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed", "confirmed"], "{tx:#}");
    for res in ["alpha", "beta"] {
        assert!(env.fake.count_for(res, Op::Confirm, &gid) >= 1, "{res}");
    }
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0, "no Cancel");
}
