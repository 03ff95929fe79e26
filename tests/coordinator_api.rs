//! The coordinator's API on the happy paths: begin, branches, commit, idempotency, listing,
//! resource registration, operations endpoints (API.md sections 1 and 2).

#[macro_use]
mod support;

use std::collections::HashSet;

use support::*;

backend_tests!(
    happy_path_two_branches_commit,
    begin_is_idempotent_while_trying,
    branch_is_idempotent,
    branch_ids_are_numbered,
    list_filters_and_pages,
    resource_registration_and_redirect,
    delete_resource_in_use,
    health_ready_metrics,
    concurrent_checkouts_share_commits,
);

async fn happy_path_two_branches_commit(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();

    let gid = env.begin(json!({})).await;
    let pa = json!({"sku": "a", "amount": 1});
    let pb = json!({"user": "u1", "amount": 250});
    let r = api
        .add_branch(&gid, json!({"resource": "alpha", "payload": pa}))
        .await;
    assert_status(&r, 200, "branch alpha");
    assert_eq!(r.1["status"], "tried", "{:#}", r.1);
    assert_eq!(r.1["gid"], gid.as_str());
    assert_eq!(r.1["resource"], "alpha");
    let ba = r.1["branch_id"].as_str().unwrap().to_string();
    // The response is the resource's JSON body.
    assert_eq!(r.1["response"]["resource"], "alpha", "{:#}", r.1);
    assert_eq!(r.1["response"]["op"], "try", "{:#}", r.1);
    let bb = env.tried_branch(&gid, "beta", pb.clone()).await;
    assert_ne!(ba, bb);

    let r = api.commit(&gid).await;
    assert_status(&r, 200, "commit");
    assert_eq!(r.1["status"], "committed", "{:#}", r.1);
    assert_eq!(r.1["gid"], gid.as_str());

    for res in ["alpha", "beta"] {
        assert_eq!(
            env.fake.count_for(res, Op::Try, &gid),
            1,
            "{res}: {}",
            env.fake.describe(&gid)
        );
        assert_eq!(
            env.fake.count_for(res, Op::Confirm, &gid),
            1,
            "{res}: {}",
            env.fake.describe(&gid)
        );
        assert_eq!(env.fake.count_for(res, Op::Cancel, &gid), 0, "{res}");
    }
    // What the resource receives (section 2): headers and body agree, the payload is passed on.
    for (res, bid, payload) in [("alpha", &ba, &pa), ("beta", &bb, &pb)] {
        for op in [Op::Try, Op::Confirm] {
            let c = &env.fake.calls_for(res, op, &gid)[0];
            assert_eq!(c.gid_header.as_deref(), Some(gid.as_str()), "{c:?}");
            assert_eq!(c.body["gid"], gid.as_str(), "{c:?}");
            assert_eq!(c.branch_id_header.as_deref(), Some(bid.as_str()), "{c:?}");
            assert_eq!(c.body["branch_id"], bid.as_str(), "{c:?}");
            assert_eq!(c.op_header.as_deref(), Some(op.as_str()), "{c:?}");
            assert_eq!(c.body_op.as_deref(), Some(op.as_str()), "{c:?}");
            assert_eq!(&c.payload, payload, "{c:?}");
        }
    }

    let (code, tx) = api.get(&gid).await;
    assert_eq!(code, 200);
    assert_eq!(tx["status"], "committed", "{tx:#}");
    assert_eq!(branch_statuses(&tx), ["confirmed", "confirmed"], "{tx:#}");
    for key in ["created_at", "updated_at", "expires_at", "finished_at"] {
        assert_time(&tx[key], key);
    }
    assert_time(&tx["branches"][0]["updated_at"], "branch updated_at");
    for key in [
        "created_at",
        "updated_at",
        "expires_at",
        "metadata",
        "attempts",
    ] {
        assert!(tx.get(key).is_some(), "GET lacks {key}: {tx:#}");
    }
    let b0 = &tx["branches"][0];
    for key in [
        "branch_id",
        "resource",
        "status",
        "payload",
        "response",
        "attempts",
        "updated_at",
    ] {
        assert!(b0.get(key).is_some(), "branch lacks {key}: {tx:#}");
    }
    assert_eq!(b0["payload"], pa, "{tx:#}");

    // Idempotent commit, and no way back.
    let r = api.commit(&gid).await;
    assert_status(&r, 200, "second commit");
    assert_eq!(r.1["status"], "committed", "{:#}", r.1);
    let r = api.abort(&gid, None).await;
    assert_error(&r, 409, "conflict", "abort after commit");
    let r = api
        .add_branch(&gid, json!({"resource": "alpha", "payload": {}}))
        .await;
    assert_error(&r, 409, "conflict", "branch after commit");
    let (_, tx) = api.get(&gid).await;
    assert_eq!(tx["status"], "committed");
    assert_eq!(env.fake.count_op_for_gid(Op::Confirm, &gid), 2);
    assert_eq!(env.fake.count_op_for_gid(Op::Cancel, &gid), 0);
}

async fn begin_is_idempotent_while_trying(backend: Backend) {
    let env = TestEnv::start(backend, &["--default-timeout-ms", "45000"]).await;
    env.register("alpha").await;
    let api = env.api();

    let r = api
        .begin(json!({"gid": "order-1", "timeout_ms": 60000, "metadata": {"order": 1}}))
        .await;
    assert_status(&r, 201, "begin");
    let tx = r.1;
    assert_eq!(tx["gid"], "order-1");
    assert_eq!(tx["status"], "trying");
    assert_eq!(tx["metadata"], json!({"order": 1}));
    assert_eq!(tx["branches"], json!([]));
    assert!(tx["created_at"].is_string(), "{tx:#}");
    assert!(tx["expires_at"].is_string(), "{tx:#}");

    let r = api.begin(json!({"gid": "order-1"})).await;
    assert_status(&r, 200, "begin again while trying");
    assert_eq!(r.1["gid"], "order-1");
    assert_eq!(r.1["status"], "trying");
    assert_eq!(r.1["created_at"], tx["created_at"], "{:#}", r.1);

    env.tried_branch("order-1", "alpha", json!({"n": 1})).await;
    let r = api.commit("order-1").await;
    assert_status(&r, 200, "commit");

    let r = api.begin(json!({"gid": "order-1"})).await;
    assert_error(&r, 409, "conflict", "begin after commit");

    // An aborted gid cannot be begun again either.
    let gid = env.begin(json!({"gid": "order-2"})).await;
    let r = api
        .abort(&gid, Some(json!({"reason": "customer left"})))
        .await;
    assert_status(&r, 200, "abort");
    assert_eq!(r.1["status"], "aborted");
    let (_, tx) = api.get(&gid).await;
    assert_eq!(tx["reason"], "customer left", "{tx:#}");
    let r = api.begin(json!({"gid": "order-2"})).await;
    assert_error(&r, 409, "conflict", "begin after abort");

    // Generated gids are unique.
    let a = env.begin(json!({})).await;
    let b = env.begin(json!({})).await;
    assert_ne!(a, b);
    // Without timeout_ms, --default-timeout-ms applies; with it, timeout_ms.
    for (gid, want) in [(a.as_str(), 45_000), ("order-1", 60_000)] {
        let (_, tx) = api.get(gid).await;
        let window =
            (parse_time(&tx["expires_at"]) - parse_time(&tx["created_at"])).num_milliseconds();
        assert!(
            (want..want + 1000).contains(&window),
            "expires_at - created_at = {window} ms, want {want}: {tx:#}"
        );
    }
}

async fn branch_is_idempotent(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let api = env.api();
    let gid = env.begin(json!({})).await;

    let body = json!({"resource": "alpha", "payload": {"n": 1}, "branch_id": "b1"});
    let first = api.add_branch(&gid, body.clone()).await;
    assert_status(&first, 200, "branch b1");
    assert_eq!(first.1["branch_id"], "b1");
    assert_eq!(first.1["status"], "tried");

    let again = api.add_branch(&gid, body.clone()).await;
    assert_status(&again, 200, "same branch again");
    assert_eq!(again.1["branch_id"], "b1");
    assert_eq!(again.1["status"], "tried");
    assert_eq!(again.1["response"], first.1["response"]);
    assert_eq!(
        env.fake.count_for("alpha", Op::Try, &gid),
        1,
        "one Try only"
    );

    let r = api
        .add_branch(
            &gid,
            json!({"resource": "alpha", "payload": {"n": 2}, "branch_id": "b1"}),
        )
        .await;
    assert_error(&r, 409, "conflict", "same branch_id, other payload");
    let r = api
        .add_branch(
            &gid,
            json!({"resource": "beta", "payload": {"n": 1}, "branch_id": "b1"}),
        )
        .await;
    assert_error(&r, 409, "conflict", "same branch_id, other resource");
    assert_eq!(env.fake.count_for("alpha", Op::Try, &gid), 1);
    assert_eq!(env.fake.count_for("beta", Op::Try, &gid), 0);

    let (_, tx) = api.get(&gid).await;
    assert_eq!(tx["status"], "trying", "{tx:#}");
    assert_eq!(branch_statuses(&tx), ["tried"], "{tx:#}");

    let r = api.commit(&gid).await;
    assert_status(&r, 200, "commit");
    assert_eq!(env.fake.count_for("alpha", Op::Confirm, &gid), 1);
}

async fn branch_ids_are_numbered(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let gid = env.begin(json!({})).await;
    let b1 = env.tried_branch(&gid, "alpha", json!(1)).await;
    // A Try answered 200 without a JSON body: tried, with `response: null`.
    env.fake
        .push("beta", Op::Try, [Behaviour::Text(200, "fine".into())]);
    let r = env
        .api()
        .add_branch(&gid, json!({"resource": "beta", "payload": "two"}))
        .await;
    assert_status(&r, 200, "Try answered text");
    assert_eq!(r.1["status"], "tried", "{:#}", r.1);
    assert_eq!(r.1["response"], Value::Null, "{:#}", r.1);
    let b2 = r.1["branch_id"].as_str().unwrap().to_string();
    assert_eq!((b1.as_str(), b2.as_str()), ("01", "02"));
    let (_, tx) = env.api().get(&gid).await;
    let ids: Vec<&str> = tx["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["branch_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["01", "02"], "{tx:#}");
    assert_eq!(
        env.fake.calls_for("alpha", Op::Try, &gid)[0].branch_id,
        "01"
    );
    assert_eq!(env.fake.calls_for("beta", Op::Try, &gid)[0].branch_id, "02");
    assert_eq!(env.fake.calls_for("beta", Op::Try, &gid)[0].payload, "two");
}

fn gids(list: &Value) -> Vec<String> {
    list["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transactions array: {list:#}"))
        .iter()
        .map(|t| t["gid"].as_str().unwrap().to_string())
        .collect()
}

async fn list_filters_and_pages(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    let api = env.api();
    let all: Vec<String> = (1..=5).map(|i| format!("list-{i}")).collect();
    for gid in &all {
        env.begin(json!({"gid": gid})).await;
    }
    for gid in ["list-2", "list-4"] {
        env.tried_branch(gid, "alpha", json!({})).await;
        assert_status(&api.commit(gid).await, 200, "commit");
    }
    assert_status(&api.abort("list-5", None).await, 200, "abort");

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    for (status, want) in [
        ("committed", vec!["list-2", "list-4"]),
        ("trying", vec!["list-1", "list-3"]),
        ("aborted", vec!["list-5"]),
        ("committing", vec![]),
    ] {
        let r = api.list(&[("status", status)]).await;
        assert_status(&r, 200, status);
        assert_eq!(sorted(gids(&r.1)), want, "status={status}: {:#}", r.1);
        for t in r.1["transactions"].as_array().unwrap() {
            assert_eq!(t["status"], status, "{t:#}");
        }
    }

    // Paging with limit=2, following `next` as `after`.
    let mut seen: Vec<String> = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    for page in 0.. {
        assert!(page < 10, "paging does not end: {seen:?}");
        let mut q = vec![("limit", "2")];
        if let Some(a) = &after {
            q.push(("after", a.as_str()));
        }
        let r = api.list(&q).await;
        assert_status(&r, 200, "list page");
        let items = r.1["transactions"].as_array().unwrap();
        assert!(items.len() <= 2, "limit=2 gave {:#}", r.1);
        if page == 0 {
            assert_eq!(items.len(), 2, "{:#}", r.1);
            assert!(r.1["next"].is_string(), "first page needs next: {:#}", r.1);
        }
        for t in items {
            seen.push(t["gid"].as_str().unwrap().to_string());
            created.push(t["created_at"].as_str().unwrap_or("").to_string());
        }
        match r.1["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => {
                assert!(r.1["next"].is_null(), "next must be a gid or null");
                break;
            }
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates across pages: {seen:?}"
    );
    assert_eq!(sorted(seen.clone()), sorted(all.clone()), "pages: {seen:?}");
    // Newest first.
    let mut desc = created.clone();
    desc.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, desc, "not newest first: {seen:?} {created:?}");

    // Paging within a status filter.
    let r = api.list(&[("status", "trying"), ("limit", "1")]).await;
    assert_status(&r, 200, "filtered page 1");
    let first = gids(&r.1);
    assert_eq!(first.len(), 1, "{:#}", r.1);
    let next = r.1["next"].as_str().expect("a next page").to_string();
    let r = api
        .list(&[("status", "trying"), ("limit", "1"), ("after", &next)])
        .await;
    assert_status(&r, 200, "filtered page 2");
    let mut both = [first, gids(&r.1)].concat();
    both.sort();
    assert_eq!(both, ["list-1", "list-3"], "{:#}", r.1);

    let r = api.list(&[]).await;
    assert_status(&r, 200, "list without parameters");
    assert_eq!(gids(&r.1).len(), 5);
    assert!(r.1["next"].is_null(), "{:#}", r.1);
}

async fn resource_registration_and_redirect(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let api = env.api();

    let r = api
        .put_resource("alpha", env.fake.registration("alpha"))
        .await;
    assert_status(&r, 201, "new registration");
    let (t, c, x) = env.fake.urls("alpha");
    assert_eq!(r.1["name"], "alpha");
    assert_eq!(r.1["try_url"], t.as_str());
    assert_eq!(r.1["confirm_url"], c.as_str());
    assert_eq!(r.1["cancel_url"], x.as_str());
    assert_time(&r.1["created_at"], "resource created_at");
    assert_time(&r.1["updated_at"], "resource updated_at");

    let r = api
        .put_resource("alpha", env.fake.registration("alpha"))
        .await;
    assert_status(&r, 200, "same registration again");

    let r = api.get_resource("alpha").await;
    assert_status(&r, 200, "get resource");
    assert_eq!(r.1["try_url"], t.as_str());

    // A transaction tried on the old address is confirmed on the new one.
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({"n": 1})).await;
    let r = api
        .put_resource("alpha", env.fake.registration("moved"))
        .await;
    assert_status(&r, 200, "re-registration");
    assert_eq!(r.1["confirm_url"], env.fake.urls("moved").1.as_str());
    let r = api.commit(&gid).await;
    assert_status(&r, 200, "commit");
    assert_eq!(env.fake.count_for("alpha", Op::Try, &gid), 1);
    assert_eq!(env.fake.count_for("alpha", Op::Confirm, &gid), 0);
    assert_eq!(env.fake.count_for("moved", Op::Confirm, &gid), 1);

    env.register("beta").await;
    let r = api.list_resources().await;
    assert_status(&r, 200, "list resources");
    let mut names: Vec<&str> = r.1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
}

async fn delete_resource_in_use(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    let api = env.api();
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;

    let r = api.delete_resource("alpha").await;
    assert_error(&r, 409, "conflict", "delete while in use");
    assert_status(&api.get_resource("alpha").await, 200, "still there");

    assert_status(&api.commit(&gid).await, 200, "commit");
    let r = api.delete_resource("alpha").await;
    assert_eq!(r.0, 204, "delete after commit: {:#}", r.1);
    assert_error(
        &api.get_resource("alpha").await,
        404,
        "not_found",
        "deleted",
    );
    assert_error(
        &api.delete_resource("alpha").await,
        404,
        "not_found",
        "delete twice",
    );
}

fn metric_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

async fn health_ready_metrics(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let api = env.api();
    assert_eq!(api.get_text("/healthz").await.0, 200);
    assert_eq!(api.get_text("/readyz").await.0, 200);

    env.register("alpha").await;
    let gid = env.begin(json!({})).await;
    env.tried_branch(&gid, "alpha", json!({})).await;
    assert_status(&api.commit(&gid).await, 200, "commit");

    let (code, text) = api.get_text("/metrics").await;
    assert_eq!(code, 200);
    let transitions = metric_lines(&text, "tccd_transaction_transitions_total");
    assert!(
        transitions
            .iter()
            .any(|l| l.contains("to=\"committed\"") && l.contains("from=\"committing\"")),
        "no committing→committed transition in:\n{text}"
    );
    let calls = metric_lines(&text, "tccd_branch_calls_total");
    for op in ["try", "confirm"] {
        assert!(
            calls
                .iter()
                .any(|l| l.contains(&format!("op=\"{op}\"")) && l.contains("outcome=")),
            "no tccd_branch_calls_total for op={op} in:\n{text}"
        );
    }
    assert!(
        !metric_lines(&text, "tccd_stuck_transactions").is_empty(),
        "no tccd_stuck_transactions gauge in:\n{text}"
    );
}

/// The sum of a histogram's `_sum` or `_count` series over all its labels.
fn metric_total(text: &str, name: &str) -> f64 {
    metric_lines(text, name)
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Many checkouts at once through one coordinator: every one commits with each branch tried
/// and confirmed exactly once, and the writer commits their writes together in batches.
async fn concurrent_checkouts_share_commits(backend: Backend) {
    const CHECKOUTS: usize = 40;
    let env = TestEnv::start(backend, &["--batch-interval-ms", "20"]).await;
    env.register("alpha").await;
    env.register("beta").await;
    let runs = (0..CHECKOUTS).map(|i| {
        let api = env.api().clone();
        tokio::spawn(async move {
            let (code, tx) = api.begin(json!({})).await;
            assert_eq!(code, 201, "{tx:#}");
            let gid = tx["gid"].as_str().unwrap().to_string();
            for res in ["alpha", "beta"] {
                let r = api
                    .add_branch(&gid, json!({"resource": res, "payload": {"n": i}}))
                    .await;
                assert_status(&r, 200, res);
            }
            let r = api.commit(&gid).await;
            assert_status(&r, 200, "commit");
            assert_eq!(r.1["status"], "committed", "{:#}", r.1);
            assert_eq!(
                branch_statuses(&r.1),
                vec!["confirmed", "confirmed"],
                "{:#}",
                r.1
            );
            gid
        })
    });
    let gids: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.expect("a checkout task failed"))
        .collect();
    for gid in &gids {
        for res in ["alpha", "beta"] {
            for op in [Op::Try, Op::Confirm] {
                assert_eq!(
                    env.fake.count_for(res, op, gid),
                    1,
                    "{res} {op:?}: {}",
                    env.fake.describe(gid)
                );
            }
        }
    }
    let (_, text) = env.api().get_text("/metrics").await;
    // begin, two branches, two Try outcomes, the decision, the phase-two result.
    let writes = metric_total(&text, "tccd_db_batch_writes_sum");
    let batches = metric_total(&text, "tccd_db_batch_writes_count");
    assert_eq!(writes, (CHECKOUTS * 7) as f64, "{text}");
    assert!(
        batches < writes / 2.0,
        "{writes} writes in {batches} batches: the writer did not batch them"
    );
    assert_eq!(
        metric_total(&text, "tccd_db_write_seconds_count"),
        writes,
        "every write's wait is measured"
    );
}
