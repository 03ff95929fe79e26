//! Redis against the database (API.md section 3): a hash changed behind the service's back is
//! reported and repaired from the database; a flushed Redis is reloaded from the database, which
//! stays the truth, and reservations opened before the flush complete normally.

#[macro_use]
mod support;

use support::stock::*;
use support::*;

backend_tests!(
    tampered_hash_is_reported_and_repaired,
    background_check_reports_inconsistent_keys,
    flushed_redis_is_reloaded_from_the_database,
    flush_racing_tries_never_oversells,
    phase_two_after_a_flush_keeps_redis_equal,
);

async fn tampered_hash_is_reported_and_repaired(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k1", 10).await;
    svc.seed(&mut ledger, "k2", 20).await;
    svc.seed(&mut ledger, "k3", 30).await;
    let gid = new_gid("g");
    svc.try_ok(&mut ledger, &gid, "01", &[("k1", 3)]).await;
    assert_invariants(&svc, &ledger, "before tampering").await;
    assert!(svc.mismatched_keys().await.is_empty());

    // Someone edits Redis directly.
    svc.redis_hset("k1", "available", 999).await;
    svc.redis_hset("k2", "locked", 5).await;

    let (code, view) = svc.get_stock("k1").await;
    assert_eq!(code, 200, "{view:#}");
    assert_eq!(view["consistent"], false, "tampered k1: {view:#}");
    assert_eq!(
        Counters::from_json(&view["db"]),
        Some(Counters::new(7, 3, 0)),
        "{view:#}"
    );
    assert_eq!(
        Counters::from_json(&view["redis"]),
        Some(Counters::new(999, 3, 0)),
        "the API shows what Redis holds: {view:#}"
    );

    let report = svc.consistency().await;
    assert!(report["checked"].as_u64().unwrap() >= 3, "{report:#}");
    let mismatches = report["mismatches"].as_array().unwrap();
    let mut keys: Vec<&str> = mismatches
        .iter()
        .map(|m| m["key"].as_str().unwrap_or(""))
        .collect();
    keys.sort();
    assert_eq!(keys, ["k1", "k2"], "mismatches: {report:#}");
    let m1 = mismatches.iter().find(|m| m["key"] == "k1").unwrap();
    assert_eq!(
        Counters::from_json(&m1["db"]),
        Some(Counters::new(7, 3, 0)),
        "{report:#}"
    );
    assert_eq!(
        Counters::from_json(&m1["redis"]),
        Some(Counters::new(999, 3, 0)),
        "{report:#}"
    );
    let m2 = mismatches.iter().find(|m| m["key"] == "k2").unwrap();
    assert_eq!(
        Counters::from_json(&m2["redis"]),
        Some(Counters::new(20, 5, 0)),
        "{report:#}"
    );

    // Checking does not repair.
    assert_eq!(
        svc.redis_counters("k1").await,
        Some(Counters::new(999, 3, 0))
    );

    let mut repaired = svc.repair().await;
    repaired.sort();
    assert_eq!(repaired, ["k1", "k2"], "POST /v1/consistency/repair");
    assert!(
        svc.mismatched_keys().await.is_empty(),
        "nothing is reported after the repair"
    );
    svc.assert_both("k1", Counters::new(7, 3, 0), "after the repair")
        .await;
    svc.assert_both("k2", Counters::new(20, 0, 0), "after the repair")
        .await;
    assert_invariants(&svc, &ledger, "after the repair").await;

    // A second repair has nothing to do.
    assert!(
        svc.repair().await.is_empty(),
        "a second repair repairs nothing"
    );

    // Redis claiming more than the database has: the database decides, nothing is reserved.
    svc.redis_hset("k3", "available", 999).await;
    let r = svc
        .tcc("try", &new_gid("g3"), "01", &[("k2", 1), ("k3", 31)])
        .await;
    assert_insufficient(&r, "k3", "Try for more than the database's 30");
    assert_eq!(svc.db_counters("k3").await, Counters::new(30, 0, 0));
    assert_eq!(svc.db_counters("k2").await, Counters::new(20, 0, 0));
    svc.repair().await;
    assert_invariants(&svc, &ledger, "after the second repair").await;

    // The open reservation completes normally, and the refused path is intact.
    svc.confirm_ok(&mut ledger, &gid, "01", &[("k1", 3)]).await;
    let r = svc.tcc("try", &new_gid("g2"), "01", &[("k1", 8)]).await;
    assert_insufficient(&r, "k1", "Try for more than the repaired stock");
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn background_check_reports_inconsistent_keys(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &["--check-interval-ms", "100"]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k1", 10).await;
    svc.seed(&mut ledger, "k2", 10).await;
    const GAUGE: &str = "tccd_stock_inconsistent_keys";

    svc.redis_hset("k2", "consumed", 4).await;
    wait_for("the gauge to report the tampered key", DEADLINE, || async {
        (svc.metric(GAUGE, &[]).await >= 1.0).then_some(())
    })
    .await;

    svc.repair().await;
    wait_for(
        "the gauge to drop back to 0 after the repair",
        DEADLINE,
        || async { (svc.metric(GAUGE, &[]).await == 0.0).then_some(()) },
    )
    .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn flushed_redis_is_reloaded_from_the_database(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "a", 10).await;
    svc.seed(&mut ledger, "b", 10).await;
    let g1 = new_gid("g1");
    let it1 = [("a", 3), ("b", 2)];
    svc.try_ok(&mut ledger, &g1, "01", &it1).await;
    assert_invariants(&svc, &ledger, "before the flush").await;

    // Redis loses everything of this service.
    let deleted = svc.flush_namespace().await;
    assert!(deleted >= 2, "the flush deleted {deleted} keys");
    assert_eq!(svc.redis_counters("a").await, None);

    // A Try for more than the database says is available is refused (not served from an empty
    // or zeroed hash) and changes nothing.
    let g2 = new_gid("g2");
    let r = svc.tcc("try", &g2, "01", &[("a", 8)]).await;
    assert_insufficient(
        &r,
        "a",
        "Try for more than the database's 7 after the flush",
    );
    assert_eq!(
        svc.db_counters("a").await,
        Counters::new(7, 3, 0),
        "the refused Try changes nothing in the database"
    );

    // A Try that fits works: the hash is reloaded from the database, with the open reservation.
    let g3 = new_gid("g3");
    let it3 = [("a", 4)];
    svc.try_ok(&mut ledger, &g3, "01", &it3).await;
    svc.assert_both(
        "a",
        Counters::new(3, 7, 0),
        "after a Try on the flushed key (the database is the truth)",
    )
    .await;

    // After a repair everything agrees, also the key nobody touched since the flush.
    svc.repair().await;
    assert!(svc.mismatched_keys().await.is_empty());
    svc.assert_both("b", Counters::new(8, 2, 0), "after the repair")
        .await;
    assert_invariants(&svc, &ledger, "after the flush and the repair").await;

    // Flushed again: the reservations opened before complete with 200.
    svc.flush_namespace().await;
    svc.confirm_ok(&mut ledger, &g1, "01", &it1).await;
    svc.cancel_ok(&mut ledger, &g3, "01", &it3).await;
    // And the refused branch is cancelled as the coordinator would (an empty compensation).
    let r = svc.tcc("cancel", &g2, "01", &[("a", 8)]).await;
    assert_status(&r, 200, "Cancel of the refused Try");
    assert_eq!(svc.db_counters("a").await, Counters::new(7, 0, 3));
    assert_eq!(svc.db_counters("b").await, Counters::new(8, 0, 2));

    svc.repair().await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn flush_racing_tries_never_oversells(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "hot", 30).await;
    let g0 = new_gid("open");
    svc.try_ok(&mut ledger, &g0, "01", &[("hot", 5)]).await;
    svc.flush_namespace().await;

    // 50 Tries on the flushed key, with Redis flushed again a few times while they run.
    let gids: Vec<String> = (0..50).map(|i| new_gid(&format!("f{i}"))).collect();
    let tries = futures::future::join_all(
        gids.iter()
            .map(|gid| svc.tcc("try", gid, "01", &[("hot", 1)])),
    );
    let flushes = async {
        for _ in 0..5 {
            svc.flush_namespace().await;
            tokio::task::yield_now().await;
        }
    };
    let (answers, _) = tokio::join!(tries, flushes);

    let mut won = Vec::new();
    for (gid, r) in gids.iter().zip(&answers) {
        match r.0 {
            200 => won.push(gid.clone()),
            409 => assert_insufficient(r, "hot", "a Try on a flushed key"),
            other => panic!("Try {gid}: expected 200 or 409, got {other} {:#}", r.1),
        }
    }
    assert_eq!(
        won.len(),
        25,
        "the 25 units the database has left are reserved, no more, no fewer"
    );
    for gid in &won {
        ledger.tried(gid, "01", &[("hot", 1)]);
    }
    assert_eq!(svc.db_counters("hot").await, Counters::new(0, 30, 0));

    svc.repair().await;
    assert_invariants(&svc, &ledger, "after the flushes and a repair").await;

    svc.cancel_ok(&mut ledger, &g0, "01", &[("hot", 5)]).await;
    for gid in &won {
        svc.confirm_ok(&mut ledger, gid, "01", &[("hot", 1)]).await;
    }
    svc.repair().await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn phase_two_after_a_flush_keeps_redis_equal(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k", 10).await;
    let (g1, g2) = (new_gid("g1"), new_gid("g2"));
    svc.try_ok(&mut ledger, &g1, "01", &[("k", 3)]).await;
    svc.try_ok(&mut ledger, &g2, "01", &[("k", 2)]).await;
    svc.flush_namespace().await;

    // Reservations opened before Redis lost its data are cancelled and confirmed afterwards;
    // with nothing in flight, the Redis hash must equal the database row (API.md section 3),
    // without waiting for someone to run a repair: a stale hash refuses stock the database has.
    svc.cancel_ok(&mut ledger, &g1, "01", &[("k", 3)]).await;
    svc.assert_both(
        "k",
        Counters::new(8, 2, 0),
        "after cancelling a reservation made before the flush",
    )
    .await;
    svc.confirm_ok(&mut ledger, &g2, "01", &[("k", 2)]).await;
    svc.assert_both(
        "k",
        Counters::new(8, 0, 2),
        "after confirming a reservation made before the flush",
    )
    .await;
    // All 8 available units can be reserved.
    let g3 = new_gid("g3");
    svc.try_ok(&mut ledger, &g3, "01", &[("k", 8)]).await;
    svc.cancel_ok(&mut ledger, &g3, "01", &[("k", 8)]).await;
    assert_invariants(&svc, &ledger, "at the end, without a repair").await;
}
