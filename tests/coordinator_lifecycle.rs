//! The process itself (API.md section 4 and "Guarantees"): a clean stop on SIGTERM, the
//! environment twins of the flags, and several coordinators sharing one Postgres database.

#[macro_use]
mod support;

use std::time::Duration;

use support::*;

backend_tests!(
    sigterm_finishes_in_flight_requests,
    flags_have_environment_twins
);

async fn sigterm_finishes_in_flight_requests(backend: Backend) {
    let mut env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    let gid = env.begin(json!({})).await;
    env.fake.push(
        "alpha",
        Op::Try,
        [Behaviour::Hang(Duration::from_millis(1500))],
    );

    let api = env.api().clone();
    let g = gid.clone();
    let request = tokio::spawn(async move {
        api.try_add_branch(&g, json!({"resource": "alpha", "payload": {"n": 1}}))
            .await
    });
    let fake = &env.fake;
    wait_for("the Try to reach the resource", DEADLINE, || async move {
        (fake.count("alpha", Op::Try) == 1).then_some(())
    })
    .await;
    env.coord.terminate();

    let (code, body) = request
        .await
        .unwrap()
        .expect("the in-flight request must finish after SIGTERM");
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(body["status"], "tried", "{body:#}");
    let status = env.coord.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");

    // Nothing half-written: the restarted coordinator carries on.
    env.coord.restart().await;
    let (code, tx) = env.api().get(&gid).await;
    assert_eq!(code, 200);
    assert_eq!(tx["status"], "trying", "{tx:#}");
    assert_eq!(branch_statuses(&tx), ["tried"], "{tx:#}");
    let r = env.api().commit(&gid).await;
    assert_status(&r, 200, "commit after restart");
    assert_eq!(env.fake.count_for("alpha", Op::Confirm, &gid), 1);
}

async fn flags_have_environment_twins(backend: Backend) {
    let db = backend.create_db().await;
    let fake = FakeResources::start();
    let process = Process::start_async(
        "coordinator",
        vec![],
        vec![
            ("TCCD_BIND".into(), "127.0.0.1:0".into()),
            ("TCCD_DATABASE_URL".into(), db.url.clone()),
            ("TCCD_REQUEST_TIMEOUT_MS".into(), "1000".into()),
        ],
    )
    .await;
    let api = Api::new(&process.base_url());
    fake.register(&api, "alpha").await;
    // The request timeout came from TCCD_REQUEST_TIMEOUT_MS: a 5 s Try is an unknown outcome.
    fake.push("alpha", Op::Try, [Behaviour::Hang(Duration::from_secs(5))]);
    let (code, tx) = api.begin(json!({})).await;
    assert_eq!(code, 201, "{tx:#}");
    let gid = tx["gid"].as_str().unwrap();
    let r = api
        .add_branch(gid, json!({"resource": "alpha", "payload": {}}))
        .await;
    assert_error(
        &r,
        502,
        "resource_unavailable",
        "Try past the request timeout",
    );
    drop(process);
}

/// Several coordinators on one Postgres database: a commit on one races an abort on the
/// other, and a transaction left `committing` by a killed instance is finished by the other.
/// (Postgres only: with SQLite each coordinator process has its own file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_coordinators_share_one_database() {
    let args = [
        "--lease-ms",
        "1000",
        "--recovery-interval-ms",
        "100",
        "--retry-base-ms",
        "20",
        "--retry-cap-ms",
        "200",
    ];
    let mut env = TestEnv::start(Backend::Postgres, &args).await;
    let mut other = Coordinator::start(&env.db.url, &args, &[]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let (a, b) = (env.api().clone(), other.api.clone());

    let r = b.get_resource("alpha").await;
    assert_status(&r, 200, "registration seen by the other instance");

    for round in 0..10 {
        let gid = env.begin(json!({})).await;
        env.tried_branch(&gid, "alpha", json!({"round": round}))
            .await;
        let r = b
            .add_branch(
                &gid,
                json!({"resource": "beta", "payload": {"round": round}}),
            )
            .await;
        assert_status(&r, 200, "branch through the other instance");
        let (c, x) = tokio::join!(a.commit(&gid), b.abort(&gid, None));
        let won = |code: u16| code == 200 || code == 202;
        assert!(
            won(c.0) != won(x.0),
            "round {round}: commit {} {:#} / abort {} {:#}",
            c.0,
            c.1,
            x.0,
            x.1
        );
        let tx = wait_final(&b, &gid).await;
        let want = if won(c.0) { "committed" } else { "aborted" };
        assert_eq!(tx["status"], want, "round {round}: {tx:#}");
        if want == "committed" {
            assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0);
        } else {
            assert_eq!(env.fake.count_op_for_gid(Op::Confirm, &gid), 0);
        }
    }

    // A commit left behind by a killed instance is finished by the surviving one.
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    env.tried_branch(&gid, "beta", json!({})).await;
    env.fake
        .set_default("beta", Op::Confirm, Behaviour::Status(500));
    let r = a.commit_nowait(&gid).await;
    assert_status(&r, 202, "commit?wait=false");
    env.coord.kill();
    env.fake.set_default("beta", Op::Confirm, Behaviour::Echo);
    let tx = wait_status(&b, &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed", "confirmed"], "{tx:#}");
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0);
    other.kill();
}

/// Two coordinators on one Postgres database begin the same gids at the same moment: for each
/// gid exactly one creates it (201) and the other answers with that same transaction (200),
/// even when both writers' batches insert it at once and one insert finds the other's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_coordinators_begin_one_gid() {
    const GIDS: usize = 60;
    let env = TestEnv::start(Backend::Postgres, &[]).await;
    let other = Coordinator::start(&env.db.url, &[], &[]).await;
    let (a, b) = (env.api().clone(), other.api.clone());
    let begins = (0..GIDS).map(|i| {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let body = json!({"gid": format!("same-{i}"), "metadata": {"n": i}});
            tokio::join!(a.begin(body.clone()), b.begin(body))
        })
    });
    for (i, answers) in futures::future::join_all(begins)
        .await
        .into_iter()
        .enumerate()
    {
        let ((code_a, tx_a), (code_b, tx_b)) = answers.expect("a begin task failed");
        let mut codes = [code_a, code_b];
        codes.sort_unstable();
        assert_eq!(codes, [200, 201], "same-{i}: {tx_a:#} / {tx_b:#}");
        assert_eq!(tx_a["status"], "trying", "same-{i}: {tx_a:#}");
        assert_eq!(tx_a["created_at"], tx_b["created_at"], "same-{i}: one row");
    }
}

/// The database goes away and comes back: `/readyz` says so, requests fail with
/// `503 unavailable` (no 500, no crash), and everything works again afterwards.
/// (Postgres only: a SQLite file cannot be taken away from an open process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_and_recovers() {
    let env = TestEnv::start(Backend::Postgres, &[]).await;
    let api = env.api().clone();
    env.register("alpha").await;
    let before = env.begin(json!({})).await;
    assert_eq!(api.get_text("/readyz").await.0, 200);

    let name = env.db.pg_name().unwrap().to_string();
    env.db.pg_admin_execute(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
    ));
    env.db.pg_admin_execute(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ));
    let a = api.clone();
    wait_for("/readyz to answer 503", DEADLINE, || {
        let a = a.clone();
        async move { (a.get_text("/readyz").await.0 == 503).then_some(()) }
    })
    .await;
    assert_eq!(
        api.get_text("/healthz").await.0,
        200,
        "the process still runs"
    );
    let r = api.begin(json!({})).await;
    assert_error(&r, 503, "unavailable", "begin while the database is away");
    let r = api.get(&before).await;
    assert_error(&r, 503, "unavailable", "GET while the database is away");

    env.db.pg_admin_execute(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
    ));
    wait_for("/readyz to answer 200 again", DEADLINE, || {
        let a = a.clone();
        async move { (a.get_text("/readyz").await.0 == 200).then_some(()) }
    })
    .await;
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    assert_status(&api.commit(&gid).await, 200, "commit after the outage");
    let (code, tx) = api.get(&before).await;
    assert_eq!(code, 200, "{tx:#}");
    assert_eq!(tx["status"], "trying");
}
