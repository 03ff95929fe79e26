//! Races: commit against abort, commit against the timeout, concurrent commits, and Confirms
//! that all complete at the same instant (the "parent never completes" bug).

#[macro_use]
mod support;

use support::*;

backend_tests!(
    commit_races_abort,
    commit_races_timeout,
    concurrent_commits_agree,
    simultaneous_confirms_complete_the_transaction,
    abort_while_a_try_is_in_flight,
    timeout_while_a_try_is_in_flight,
    commit_while_a_try_is_in_flight,
    duplicate_branch_while_its_try_is_in_flight,
    concurrent_begins_with_one_gid,
    concurrent_branches_get_distinct_ids,
);

use std::time::Duration;

fn won(code: u16) -> bool {
    code == 200 || code == 202
}

/// The final status is `status`, and the resources saw only the matching phase-two calls.
fn assert_consistent(env: &TestEnv, gid: &str, tx: &Value, resources: &[&str]) {
    let status = tx["status"].as_str().unwrap();
    let calls = env.fake.describe(gid);
    match status {
        "committed" => {
            assert_eq!(
                env.fake.count_op_for_gid(Op::Cancel, gid),
                0,
                "Cancel on a committed transaction: {calls}"
            );
            for res in resources {
                assert!(
                    env.fake.count_for(res, Op::Confirm, gid) >= 1,
                    "{res} not confirmed: {calls}"
                );
            }
            assert!(
                branch_statuses(tx).iter().all(|s| s == "confirmed"),
                "{tx:#}"
            );
        }
        "aborted" => {
            assert_eq!(
                env.fake.count_op_for_gid(Op::Confirm, gid),
                0,
                "Confirm on an aborted transaction: {calls}"
            );
            for res in resources {
                if env.fake.count_for(res, Op::Try, gid) > 0 {
                    assert!(
                        env.fake.count_for(res, Op::Cancel, gid) >= 1,
                        "{res} not cancelled: {calls}"
                    );
                }
            }
            assert!(
                branch_statuses(tx).iter().all(|s| s == "cancelled"),
                "{tx:#}"
            );
        }
        other => panic!("not final: {other}"),
    }
}

async fn commit_races_abort(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();
    let (mut commits, mut aborts) = (0, 0);
    for round in 0..20 {
        let gid = env.begin(json!({})).await;
        env.tried_branch(&gid, "alpha", json!({"round": round}))
            .await;
        env.tried_branch(&gid, "beta", json!({"round": round}))
            .await;

        let (c, a) = tokio::join!(api.commit(&gid), api.abort(&gid, None));
        assert!(
            won(c.0) != won(a.0),
            "round {round}: exactly one must win: commit {} {:#}, abort {} {:#}",
            c.0,
            c.1,
            a.0,
            a.1
        );
        let tx = wait_final(api, &gid).await;
        if won(c.0) {
            commits += 1;
            assert_error(&a, 409, "conflict", "the losing abort");
            assert_eq!(tx["status"], "committed", "round {round}: {tx:#}");
        } else {
            aborts += 1;
            assert_error(&c, 409, "conflict", "the losing commit");
            assert_eq!(tx["status"], "aborted", "round {round}: {tx:#}");
        }
        assert_consistent(&env, &gid, &tx, &["alpha", "beta"]);
    }
    eprintln!("commit won {commits} times, abort won {aborts} times");
}

async fn commit_races_timeout(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "20"]).await;
    env.register("alpha").await;
    let api = env.api();
    for round in 0..10 {
        let gid = env.begin(json!({"timeout_ms": 100 + 20 * round})).await;
        let branch = api
            .add_branch(&gid, json!({"resource": "alpha", "payload": {}}))
            .await;
        if branch.0 != 200 {
            // Expired before (or while) the branch was added: refused, and the transaction is
            // (being) aborted.
            assert!(
                branch.0 == 409 || branch.0 == 502,
                "round {round}: branch {} {:#}",
                branch.0,
                branch.1
            );
            assert!(branch.1["error"]["code"].is_string(), "{:#}", branch.1);
        }
        let c = api.commit(&gid).await;
        let tx = wait_final(api, &gid).await;
        if won(c.0) {
            assert_eq!(tx["status"], "committed", "round {round}: {tx:#}");
        } else {
            assert_error(&c, 409, "conflict", "commit after expiry");
            assert_eq!(tx["status"], "aborted", "round {round}: {tx:#}");
        }
        assert_consistent(&env, &gid, &tx, &["alpha"]);
    }
}

async fn concurrent_commits_agree(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();
    for round in 0..10 {
        let gid = env.begin(json!({})).await;
        env.tried_branch(&gid, "alpha", json!({"round": round}))
            .await;
        env.tried_branch(&gid, "beta", json!({"round": round}))
            .await;
        let (a, b, c) = tokio::join!(api.commit(&gid), api.commit(&gid), api.commit(&gid));
        for r in [&a, &b, &c] {
            assert!(won(r.0), "round {round}: commit {} {:#}", r.0, r.1);
        }
        let tx = wait_status(api, &gid, "committed").await;
        assert_consistent(&env, &gid, &tx, &["alpha", "beta"]);
    }
}

async fn simultaneous_confirms_complete_the_transaction(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    let resources = ["r1", "r2", "r3", "r4", "r5"];
    for r in resources {
        env.register(r).await;
    }
    let api = env.api();
    for round in 0..10 {
        let gid = env.begin(json!({})).await;
        for r in resources {
            env.tried_branch(&gid, r, json!({"round": round})).await;
        }
        let barrier = CallBarrier::new(resources.len());
        for r in resources {
            env.fake
                .push(r, Op::Confirm, [Behaviour::Barrier(barrier.clone())]);
        }
        let c = api.commit(&gid).await;
        assert!(won(c.0), "round {round}: commit {} {:#}", c.0, c.1);
        let tx = wait_status(api, &gid, "committed").await;
        assert_eq!(
            env.fake.barrier_timeouts(),
            0,
            "the Confirms were not sent in parallel"
        );
        assert_eq!(barrier.arrived(), resources.len());
        assert_consistent(&env, &gid, &tx, &resources);
        for r in resources {
            assert_eq!(
                env.fake.count_for(r, Op::Confirm, &gid),
                1,
                "{}",
                env.fake.describe(&gid)
            );
        }
    }
}

/// Starts `add_branch(gid, {resource, payload})` in the background and waits until the resource
/// has received its Try (which the test made hang).
async fn branch_in_flight(
    env: &TestEnv,
    gid: &str,
    resource: &str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let before = env.fake.count_for(resource, Op::Try, gid);
    let api = env.api().clone();
    let g = gid.to_string();
    let task = tokio::spawn(async move { api.add_branch(&g, body).await });
    let fake = &env.fake;
    wait_for("the Try to reach the resource", DEADLINE, || async move {
        (fake.count_for(resource, Op::Try, gid) > before).then_some(())
    })
    .await;
    task
}

/// After the transaction is final and the in-flight branch request has answered, nothing
/// flips back: every branch is cancelled, every Try-ed resource got a Cancel, no Confirm.
async fn assert_stays_aborted(env: &TestEnv, gid: &str, branch: (u16, Value)) {
    wait_status(env.api(), gid, "aborted").await;
    let (_, tx) = env.api().get(gid).await;
    assert_eq!(tx["status"], "aborted", "{tx:#}");
    assert!(
        branch_statuses(&tx).iter().all(|s| s == "cancelled"),
        "a branch moved after the abort: {tx:#}"
    );
    assert_consistent(env, gid, &tx, &["alpha"]);
    // The Try's late success must not be reported as a usable branch ("the transaction is
    // not trying" → 409).
    assert_ne!(
        branch.1["status"], "tried",
        "a branch of an aborted transaction reported as tried: {} {:#}; GET: {tx:#}",
        branch.0, branch.1
    );
    assert_error(&branch, 409, "conflict", "the in-flight branch request");
}

async fn abort_while_a_try_is_in_flight(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    env.register("alpha").await;
    let gid = env.begin(json!({})).await;
    env.fake.push(
        "alpha",
        Op::Try,
        [Behaviour::Hang(Duration::from_millis(1500))],
    );
    let task = branch_in_flight(
        &env,
        &gid,
        "alpha",
        json!({"resource": "alpha", "payload": {}}),
    )
    .await;
    let r = env.api().abort(&gid, None).await;
    assert!(
        won(r.0),
        "abort while a Try is in flight: {} {:#}",
        r.0,
        r.1
    );
    let branch = task.await.unwrap();
    assert_stays_aborted(&env, &gid, branch).await;
}

async fn timeout_while_a_try_is_in_flight(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "50"]).await;
    env.register("alpha").await;
    let gid = env.begin(json!({"timeout_ms": 1000})).await;
    env.fake.push(
        "alpha",
        Op::Try,
        [Behaviour::Hang(Duration::from_millis(4000))],
    );
    let task = branch_in_flight(
        &env,
        &gid,
        "alpha",
        json!({"resource": "alpha", "payload": {}}),
    )
    .await;
    // The worker aborts the expired transaction while its Try is still out.
    wait_status(env.api(), &gid, "aborted").await;
    let branch = task.await.unwrap();
    assert_stays_aborted(&env, &gid, branch).await;
}

async fn commit_while_a_try_is_in_flight(backend: Backend) {
    let env = TestEnv::start(backend, &["--recovery-interval-ms", "100"]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    env.fake.push(
        "beta",
        Op::Try,
        [Behaviour::Hang(Duration::from_millis(1500))],
    );
    let task = branch_in_flight(
        &env,
        &gid,
        "beta",
        json!({"resource": "beta", "payload": {}}),
    )
    .await;
    let c = env.api().commit(&gid).await;
    let branch = task.await.unwrap();
    if c.0 == 409 && c.1["status"] == "trying" {
        // Refused while a branch is still being tried: the client commits again once its
        // branch request has answered.
        assert_error(&c, 409, "conflict", "commit while a Try is in flight");
        assert_status(&branch, 200, "the branch");
        let r = env.api().commit(&gid).await;
        assert_status(&r, 200, "commit once the Try has answered");
    }
    let tx = wait_final(env.api(), &gid).await;
    // Whatever the coordinator decides, a Try that reached a resource is never left open: in a
    // committed transaction every branch is confirmed, in an aborted one every branch cancelled.
    assert_consistent(&env, &gid, &tx, &["alpha", "beta"]);
    if won(c.0) {
        assert_eq!(
            tx["status"], "committed",
            "commit {} {:#}: {tx:#}",
            c.0, c.1
        );
    }
    eprintln!(
        "commit answered {} ({}), the branch {} ({}), final {}",
        c.0, c.1["status"], branch.0, branch.1["status"], tx["status"]
    );
}

async fn duplicate_branch_while_its_try_is_in_flight(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    let gid = env.begin(json!({})).await;
    env.fake.push(
        "alpha",
        Op::Try,
        [Behaviour::Hang(Duration::from_millis(1000))],
    );
    let body = json!({"resource": "alpha", "payload": {"n": 1}, "branch_id": "b1"});
    let task = branch_in_flight(&env, &gid, "alpha", body.clone()).await;
    let second = env.api().add_branch(&gid, body).await;
    let first = task.await.unwrap();
    assert_status(&first, 200, "the first request");
    assert!(
        second.0 == 200 || second.0 == 409,
        "the duplicate: {} {:#}",
        second.0,
        second.1
    );
    assert_eq!(
        env.fake.count_for("alpha", Op::Try, &gid),
        1,
        "the same branch_id must not be tried twice: {}",
        env.fake.describe(&gid)
    );
    let r = env.api().commit(&gid).await;
    assert_status(&r, 200, "commit");
    assert_eq!(env.fake.count_for("alpha", Op::Confirm, &gid), 1);
}

async fn concurrent_begins_with_one_gid(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let api = env.api();
    for round in 0..10 {
        let gid = format!("same-{round}");
        let body = json!({"gid": gid});
        let rs = futures::future::join_all((0..4).map(|_| api.begin(body.clone()))).await;
        let created = rs.iter().filter(|r| r.0 == 201).count();
        let again = rs.iter().filter(|r| r.0 == 200).count();
        assert_eq!(
            (created, again),
            (1, 3),
            "round {round}: one 201 and 200 for the rest: {:?}",
            rs.iter().map(|r| (r.0, r.1.clone())).collect::<Vec<_>>()
        );
        for r in &rs {
            assert_eq!(r.1["gid"], gid.as_str());
            assert_eq!(r.1["status"], "trying");
        }
    }
    let r = api.list(&[]).await;
    assert_eq!(r.1["transactions"].as_array().unwrap().len(), 10);
}

async fn concurrent_branches_get_distinct_ids(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    let api = env.api();
    for round in 0..5 {
        let gid = env.begin(json!({})).await;
        let rs = futures::future::join_all(
            (0..5).map(|i| api.add_branch(&gid, json!({"resource": "alpha", "payload": {"i": i}}))),
        )
        .await;
        let mut ids: Vec<String> = rs
            .iter()
            .map(|r| {
                assert_status(r, 200, "concurrent branch");
                r.1["branch_id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, ["01", "02", "03", "04", "05"], "round {round}");
        assert_eq!(env.fake.count_for("alpha", Op::Try, &gid), 5);
        let r = api.commit(&gid).await;
        assert_status(&r, 200, "commit");
        assert_eq!(env.fake.count_for("alpha", Op::Confirm, &gid), 5);
    }
}
