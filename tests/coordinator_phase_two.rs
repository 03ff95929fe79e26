//! Failures around Try, Confirm and Cancel: refused and unknown Try outcomes abort the
//! transaction, Confirm/Cancel are retried until they succeed, timeouts abort, a stuck
//! transaction is reported and never flipped, and a killed coordinator finishes its work.

#[macro_use]
mod support;

use std::time::Duration;

use support::*;

backend_tests!(
    refused_try_aborts_everything,
    refused_try_while_a_cancel_fails,
    try_500_is_resource_unavailable,
    try_timeout_is_resource_unavailable,
    confirm_is_retried_until_it_succeeds,
    cancel_is_retried_until_it_succeeds,
    commit_without_waiting,
    reregistration_redirects_a_retried_confirm,
    expired_transaction_is_aborted,
    expired_transaction_refuses_branches_without_the_worker,
    stuck_commit_is_reported_and_survives_a_kill,
);

const FAST_RETRY: &[&str] = &[
    "--retry-base-ms",
    "20",
    "--retry-cap-ms",
    "200",
    "--recovery-interval-ms",
    "50",
];

/// Asserts the transaction is aborted with every branch cancelled, every branch's resource got
/// at least one Cancel and nothing was confirmed.
async fn assert_aborted_and_cancelled(env: &TestEnv, gid: &str, resources: &[&str]) {
    let tx = wait_status(env.api(), gid, "aborted").await;
    assert_eq!(
        branch_statuses(&tx),
        vec!["cancelled"; resources.len()],
        "{tx:#}"
    );
    for res in resources {
        assert!(
            env.fake.count_for(res, Op::Cancel, gid) >= 1,
            "{res} got no Cancel: {}",
            env.fake.describe(gid)
        );
    }
    assert_eq!(
        env.fake.count_op_for_gid(Op::Confirm, gid),
        0,
        "Confirm on an aborted transaction: {}",
        env.fake.describe(gid)
    );
}

async fn refused_try_aborts_everything(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();

    for (refusal, code) in [
        (Behaviour::Refuse, "refused"),
        (Behaviour::Status(422), "fake"),
    ] {
        env.fake.push("beta", Op::Try, [refusal]);
        let gid = env.begin(json!({})).await;
        env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
        let r = api
            .add_branch(&gid, json!({"resource": "beta", "payload": {"n": 2}}))
            .await;
        assert_error(&r, 409, "try_failed", "refused Try");
        assert_eq!(r.1["status"], "aborted", "{:#}", r.1);
        assert_eq!(
            r.1["resource_response"]["error"]["code"], code,
            "resource_response is the resource's body: {:#}",
            r.1
        );

        let (_, tx) = api.get(&gid).await;
        assert_eq!(tx["status"], "aborted", "{tx:#}");
        assert_aborted_and_cancelled(&env, &gid, &["alpha", "beta"]).await;

        let r = api.commit(&gid).await;
        assert_error(&r, 409, "conflict", "commit after a refused Try");
        assert_eq!(r.1["status"], "aborted", "{:#}", r.1);
        let r = api
            .add_branch(&gid, json!({"resource": "alpha", "payload": {}}))
            .await;
        assert_error(&r, 409, "conflict", "branch after abort");
        // The refused branch again (same id, resource, payload): no second Try.
        let r = api
            .add_branch(
                &gid,
                json!({"resource": "beta", "payload": {"n": 2}, "branch_id": "02"}),
            )
            .await;
        assert_eq!(r.0, 409, "the refused branch again: {:#}", r.1);
        assert!(r.1["error"]["code"].is_string(), "{:#}", r.1);
        assert_eq!(env.fake.count_for("beta", Op::Try, &gid), 1);
        let r = api.abort(&gid, None).await;
        assert_status(&r, 200, "abort is idempotent");
        assert_eq!(r.1["status"], "aborted");
        assert_eq!(env.fake.count_op_for_gid(Op::Try, &gid), 2);
    }
}

async fn refused_try_while_a_cancel_fails(backend: Backend) {
    let env = TestEnv::start(backend, FAST_RETRY).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    env.fake
        .set_default("alpha", Op::Cancel, Behaviour::Status(503));
    env.fake.push("beta", Op::Try, [Behaviour::Refuse]);
    let r = api
        .add_branch(&gid, json!({"resource": "beta", "payload": {}}))
        .await;
    assert_error(&r, 409, "try_failed", "refused Try, failing Cancel");
    assert_eq!(
        r.1["status"], "aborting",
        "a cancel is still being retried: {:#}",
        r.1
    );
    let r = api.commit(&gid).await;
    assert_error(&r, 409, "conflict", "commit while aborting");
    assert_eq!(r.1["status"], "aborting", "{:#}", r.1);

    env.fake.set_default("alpha", Op::Cancel, Behaviour::Echo);
    assert_aborted_and_cancelled(&env, &gid, &["alpha", "beta"]).await;
    assert!(env.fake.count_for("alpha", Op::Cancel, &gid) >= 2);
}

async fn try_500_is_resource_unavailable(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();

    env.fake.push("beta", Op::Try, [Behaviour::Status(500)]);
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
    let r = api
        .add_branch(&gid, json!({"resource": "beta", "payload": {"n": 2}}))
        .await;
    assert_error(&r, 502, "resource_unavailable", "Try answered 500");
    assert_eq!(r.1["status"], "aborted", "{:#}", r.1);
    assert_aborted_and_cancelled(&env, &gid, &["alpha", "beta"]).await;
    assert_error(&api.commit(&gid).await, 409, "conflict", "commit after 502");

    // A resource that is not listening at all: connection refused is an unknown outcome too.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_, confirm, cancel) = env.fake.urls("gamma");
    let r = api
        .put_resource(
            "gamma",
            json!({"try_url": format!("http://{closed}/try"), "confirm_url": confirm, "cancel_url": cancel}),
        )
        .await;
    assert_status(&r, 201, "register gamma");
    let gid = env.begin(json!({})).await;
    let r = api
        .add_branch(&gid, json!({"resource": "gamma", "payload": {}}))
        .await;
    assert_error(&r, 502, "resource_unavailable", "Try connection refused");
    assert_aborted_and_cancelled(&env, &gid, &["gamma"]).await;
}

async fn try_timeout_is_resource_unavailable(backend: Backend) {
    let env = TestEnv::start(backend, &["--request-timeout-ms", "1000"]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();

    env.fake
        .push("beta", Op::Try, [Behaviour::Hang(Duration::from_secs(5))]);
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
    let r = api
        .add_branch(&gid, json!({"resource": "beta", "payload": {"n": 2}}))
        .await;
    assert_error(&r, 502, "resource_unavailable", "Try timed out");
    assert_aborted_and_cancelled(&env, &gid, &["alpha", "beta"]).await;
    assert_error(
        &api.commit(&gid).await,
        409,
        "conflict",
        "commit after timeout",
    );
}

async fn confirm_is_retried_until_it_succeeds(backend: Backend) {
    let env = TestEnv::start(backend, FAST_RETRY).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();

    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    let bb = env.tried_branch(&gid, "beta", json!({})).await;
    env.fake.push(
        "beta",
        Op::Confirm,
        [Behaviour::Status(500), Behaviour::Status(500)],
    );
    let r = api.commit(&gid).await;
    assert!(r.0 == 200 || r.0 == 202, "commit: {} {:#}", r.0, r.1);
    let want = if r.0 == 200 {
        "committed"
    } else {
        "committing"
    };
    assert_eq!(r.1["status"], want, "{:#}", r.1);

    let tx = wait_status(api, &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed", "confirmed"], "{tx:#}");
    let confirms = env.fake.calls_for("beta", Op::Confirm, &gid);
    assert_eq!(confirms.len(), 3, "{}", env.fake.describe(&gid));
    assert!(confirms.iter().all(|c| c.branch_id == bb));
    assert_eq!(env.fake.count_for("alpha", Op::Confirm, &gid), 1);
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0);
    assert!(
        tx["branches"][1]["attempts"].as_i64().unwrap_or(0) >= 3,
        "the branch's attempts count its Confirms: {tx:#}"
    );
}

async fn cancel_is_retried_until_it_succeeds(backend: Backend) {
    let env = TestEnv::start(backend, FAST_RETRY).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();

    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    env.tried_branch(&gid, "beta", json!({})).await;
    env.fake.push(
        "beta",
        Op::Cancel,
        // Every non-2xx answer to a Cancel is retried, 409 included.
        [Behaviour::Status(409), Behaviour::Status(503)],
    );
    let r = api.abort(&gid, Some(json!({"reason": "test"}))).await;
    assert!(r.0 == 200 || r.0 == 202, "abort: {} {:#}", r.0, r.1);
    let want = if r.0 == 200 { "aborted" } else { "aborting" };
    assert_eq!(r.1["status"], want, "{:#}", r.1);
    // Nothing moves from aborting to committing.
    if r.0 == 202 {
        assert_error(
            &api.commit(&gid).await,
            409,
            "conflict",
            "commit while aborting",
        );
    }

    let tx = wait_status(api, &gid, "aborted").await;
    assert_eq!(branch_statuses(&tx), ["cancelled", "cancelled"], "{tx:#}");
    assert_eq!(
        env.fake.count_for("beta", Op::Cancel, &gid),
        3,
        "{}",
        env.fake.describe(&gid)
    );
    assert_eq!(env.fake.count_for("alpha", Op::Cancel, &gid), 1);
    assert_eq!(env.fake.count_op_for_gid(Op::Confirm, &gid), 0);
    assert_error(
        &api.commit(&gid).await,
        409,
        "conflict",
        "commit after abort",
    );
}

async fn commit_without_waiting(backend: Backend) {
    let env = TestEnv::start(backend, FAST_RETRY).await;
    env.register("alpha").await;
    let api = env.api();
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    let r = api.commit_nowait(&gid).await;
    assert_status(&r, 202, "commit?wait=false");
    assert!(
        r.1["status"] == "committing" || r.1["status"] == "committed",
        "{:#}",
        r.1
    );
    let tx = wait_status(api, &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed"]);
    assert_eq!(env.fake.count_for("alpha", Op::Confirm, &gid), 1);
    assert_eq!(env.fake.count_for("alpha", Op::Cancel, &gid), 0);
}

async fn reregistration_redirects_a_retried_confirm(backend: Backend) {
    let env = TestEnv::start(backend, FAST_RETRY).await;
    env.register("alpha").await;
    let api = env.api();
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
    // The old address keeps failing; the service moves (re-registers) while the commit retries.
    env.fake
        .set_default("alpha", Op::Confirm, Behaviour::Status(503));
    let r = api.commit_nowait(&gid).await;
    assert_status(&r, 202, "commit?wait=false");
    let fake = &env.fake;
    let g = gid.clone();
    wait_for("a failed Confirm at the old address", DEADLINE, || {
        let g = g.clone();
        async move { (fake.count_for("alpha", Op::Confirm, &g) >= 1).then_some(()) }
    })
    .await;
    let r = api
        .put_resource("alpha", env.fake.registration("moved"))
        .await;
    assert_status(&r, 200, "re-registration");

    let tx = wait_status(api, &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed"], "{tx:#}");
    let moved = env.fake.calls_for("moved", Op::Confirm, &gid);
    assert!(!moved.is_empty(), "{}", env.fake.describe(&gid));
    assert_eq!(moved[0].branch_id, "01");
    assert_eq!(moved[0].payload, json!({"n": 1}));
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0);
}

async fn expired_transaction_is_aborted(backend: Backend) {
    let env = TestEnv::start(backend, FAST_RETRY).await;
    env.register("alpha").await;
    let api = env.api();
    // 1 s rather than less, so that the branch is surely added before the deadline even on a
    // loaded machine; nothing below depends on how long it takes.
    let gid = env.begin(json!({"timeout_ms": 1000})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;

    assert_aborted_and_cancelled(&env, &gid, &["alpha"]).await;
    let r = api.commit(&gid).await;
    assert_error(&r, 409, "conflict", "commit after the timeout");
    assert_eq!(r.1["status"], "aborted", "{:#}", r.1);
    let r = api
        .add_branch(&gid, json!({"resource": "alpha", "payload": {}}))
        .await;
    assert_error(&r, 409, "conflict", "branch after the timeout");
    assert_eq!(env.fake.count_for("alpha", Op::Try, &gid), 1);

    // The smallest allowed timeout, nothing tried: aborted as well.
    let gid = env.begin(json!({"timeout_ms": 100})).await;
    wait_status(api, &gid, "aborted").await;
}

async fn expired_transaction_refuses_branches_without_the_worker(backend: Backend) {
    // The recovery worker practically never runs: the request itself must notice the expiry.
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "600000"]).await;
    env.register("alpha").await;
    let api = env.api();
    let r = api.begin(json!({"timeout_ms": 500})).await;
    assert_status(&r, 201, "begin");
    let gid = r.1["gid"].as_str().unwrap().to_string();
    let expires_at = parse_time(&r.1["expires_at"]);
    let created_at = parse_time(&r.1["created_at"]);
    let window = (expires_at - created_at).num_milliseconds();
    assert!(
        (500..1500).contains(&window),
        "expires_at = created_at + 500 ms: {:#}",
        r.1
    );
    env.tried_branch(&gid, "alpha", json!({})).await;

    // Same host, same clock: wait until the deadline has surely passed.
    wait_for("expires_at to pass", DEADLINE, || async move {
        (chrono::Utc::now() > expires_at + chrono::Duration::milliseconds(50)).then_some(())
    })
    .await;
    let r = api
        .add_branch(
            &gid,
            json!({"resource": "alpha", "payload": {"late": true}}),
        )
        .await;
    assert_error(&r, 409, "conflict", "branch after expires_at");
    assert_eq!(
        env.fake.count_for("alpha", Op::Try, &gid),
        1,
        "no Try once expired"
    );
    // "An expired transaction is aborted."
    assert_aborted_and_cancelled(&env, &gid, &["alpha"]).await;
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

async fn stuck_commit_is_reported_and_survives_a_kill(backend: Backend) {
    // The alert webhook goes to a second fake server, known before the coordinator starts.
    let alerts = FakeResources::start();
    let hook = alerts.hook_url("stuck");
    let mut env = TestEnv::start(
        backend,
        &[
            "--retry-base-ms",
            "20",
            "--retry-cap-ms",
            "100",
            "--recovery-interval-ms",
            "50",
            "--stuck-after-attempts",
            "3",
            "--lease-ms",
            "1000",
            "--alert-webhook",
            &hook,
        ],
    )
    .await;
    env.register("alpha").await;
    env.register("beta").await;

    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    env.tried_branch(&gid, "beta", json!({})).await;
    env.fake
        .set_default("beta", Op::Confirm, Behaviour::Status(500));
    let r = env.api().commit(&gid).await;
    assert_status(&r, 202, "commit with a failing Confirm");
    assert_eq!(r.1["status"], "committing", "{:#}", r.1);

    // Reported as stuck (metric, alert webhook naming the gid), but never flipped.
    let api = env.api().clone();
    wait_for("tccd_stuck_transactions >= 1", DEADLINE, || {
        let api = api.clone();
        async move {
            let (_, text) = api.get_text("/metrics").await;
            gauge(&text, "tccd_stuck_transactions").filter(|v| *v >= 1.0)
        }
    })
    .await;
    let (_, tx) = env.api().get(&gid).await;
    assert_eq!(tx["status"], "committing", "{tx:#}");
    assert!(
        tx["last_error"].is_string(),
        "last_error explains the retries: {tx:#}"
    );
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0);
    let alerts_ref = &alerts;
    let g = gid.clone();
    wait_for("the stuck alert webhook", DEADLINE, || {
        let g = g.clone();
        async move {
            alerts_ref
                .hooks("stuck")
                .iter()
                .any(|h| h.to_string().contains(&g))
                .then_some(())
        }
    })
    .await;

    // SIGKILL, heal the resource, restart on the same database: the commit is finished.
    env.coord.kill();
    env.fake.set_default("beta", Op::Confirm, Behaviour::Echo);
    env.coord.restart().await;
    let tx = wait_status(env.api(), &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed", "confirmed"], "{tx:#}");
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0);
    assert!(env.fake.count_for("beta", Op::Confirm, &gid) >= 4);

    let api = env.api().clone();
    wait_for("tccd_stuck_transactions back to 0", DEADLINE, || {
        let api = api.clone();
        async move {
            let (_, text) = api.get_text("/metrics").await;
            gauge(&text, "tccd_stuck_transactions").filter(|v| *v == 0.0)
        }
    })
    .await;
}
