//! `tccd stock` TCC endpoints one call at a time (API.md sections 2 and 3): reservations move
//! the counters in both stores, the barrier makes repeated calls, empty compensations and late
//! Tries harmless, a short Try reserves nothing, and injected faults behave as documented.

#[macro_use]
mod support;

use support::stock::*;
use support::*;

backend_tests!(
    repeated_calls_change_nothing,
    cancel_before_try_then_late_try,
    insufficient_stock_reserves_nothing,
    injected_faults,
    cancel_releases_only_what_the_try_reserved,
);

const SKIPS: &str = "tccd_stock_barrier_skips_total";

async fn skips(svc: &StockService, kind: &str) -> f64 {
    svc.metric(SKIPS, &[("kind", kind)]).await
}

async fn repeated_calls_change_nothing(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "sku-1", 10).await;
    svc.seed(&mut ledger, "sku-2", 5).await;
    assert_invariants(&svc, &ledger, "after seeding").await;
    let dup0 = skips(&svc, "duplicate").await;

    // Try twice: reserved once.
    let g1 = new_gid("g1");
    let it1 = [("sku-1", 3), ("sku-2", 2)];
    svc.try_ok(&mut ledger, &g1, "01", &it1).await;
    svc.assert_both("sku-1", Counters::new(7, 3, 0), "after Try")
        .await;
    svc.assert_both("sku-2", Counters::new(3, 2, 0), "after Try")
        .await;
    let r = svc.tcc("try", &g1, "01", &it1).await;
    assert_status(&r, 200, "second Try of the same branch");
    svc.assert_both("sku-1", Counters::new(7, 3, 0), "after the second Try")
        .await;
    svc.assert_both("sku-2", Counters::new(3, 2, 0), "after the second Try")
        .await;
    assert_invariants(&svc, &ledger, "after Try twice").await;

    // Confirm twice: consumed once.
    svc.confirm_ok(&mut ledger, &g1, "01", &it1).await;
    svc.assert_both("sku-1", Counters::new(7, 0, 3), "after Confirm")
        .await;
    svc.assert_both("sku-2", Counters::new(3, 0, 2), "after Confirm")
        .await;
    let r = svc.tcc("confirm", &g1, "01", &it1).await;
    assert_status(&r, 200, "second Confirm of the same branch");
    svc.assert_both("sku-1", Counters::new(7, 0, 3), "after the second Confirm")
        .await;
    svc.assert_both("sku-2", Counters::new(3, 0, 2), "after the second Confirm")
        .await;
    assert_invariants(&svc, &ledger, "after Confirm twice").await;

    // Cancel twice on another branch: available restored once.
    let g2 = new_gid("g2");
    let it2 = [("sku-1", 4)];
    svc.try_ok(&mut ledger, &g2, "01", &it2).await;
    svc.assert_both("sku-1", Counters::new(3, 4, 3), "after the second Try")
        .await;
    svc.cancel_ok(&mut ledger, &g2, "01", &it2).await;
    svc.assert_both("sku-1", Counters::new(7, 0, 3), "after Cancel")
        .await;
    let r = svc.tcc("cancel", &g2, "01", &it2).await;
    assert_status(&r, 200, "second Cancel of the same branch");
    svc.assert_both("sku-1", Counters::new(7, 0, 3), "after the second Cancel")
        .await;
    assert_invariants(&svc, &ledger, "after Cancel twice").await;

    let dup = skips(&svc, "duplicate").await - dup0;
    assert_eq!(
        dup, 3.0,
        "{SKIPS}{{kind=\"duplicate\"}} must count the three repeated calls"
    );
    assert_eq!(skips(&svc, "empty_compensation").await, 0.0);
    assert_eq!(skips(&svc, "late_try").await, 0.0);

    // A Try arriving again after its Confirm, and after its Cancel: nothing happens.
    let r = svc.tcc("try", &g1, "01", &it1).await;
    assert_status(&r, 200, "Try again after Confirm");
    let r = svc.tcc("try", &g2, "01", &it2).await;
    assert_status(&r, 200, "Try again after Cancel");
    assert_invariants(&svc, &ledger, "after Tries repeated after phase two").await;

    // Two branches of one transaction are two reservations: Cancel one, Confirm the other.
    let g3 = new_gid("g3");
    svc.try_ok(&mut ledger, &g3, "01", &[("sku-1", 1)]).await;
    svc.try_ok(&mut ledger, &g3, "02", &[("sku-1", 2), ("sku-2", 1)])
        .await;
    svc.assert_both("sku-1", Counters::new(4, 3, 3), "two branches tried")
        .await;
    svc.cancel_ok(&mut ledger, &g3, "01", &[("sku-1", 1)]).await;
    svc.assert_both("sku-1", Counters::new(5, 2, 3), "branch 01 cancelled")
        .await;
    svc.confirm_ok(&mut ledger, &g3, "02", &[("sku-1", 2), ("sku-2", 1)])
        .await;
    svc.assert_both("sku-1", Counters::new(5, 0, 5), "branch 02 confirmed")
        .await;
    svc.assert_both("sku-2", Counters::new(2, 0, 3), "branch 02 confirmed")
        .await;

    // PUT sets `available` only; reservations and consumption are kept.
    let g4 = new_gid("g4");
    svc.try_ok(&mut ledger, &g4, "01", &[("sku-1", 2)]).await;
    svc.seed(&mut ledger, "sku-1", 100).await;
    svc.assert_both("sku-1", Counters::new(100, 2, 5), "after PUT 100")
        .await;
    svc.confirm_ok(&mut ledger, &g4, "01", &[("sku-1", 2)])
        .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn cancel_before_try_then_late_try(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "sku-1", 10).await;
    let empty0 = skips(&svc, "empty_compensation").await;
    let late0 = skips(&svc, "late_try").await;

    // The Cancel arrives first (the Try was lost or is slow): nothing to release.
    let gid = new_gid("g");
    let it = [("sku-1", 5)];
    let r = svc.tcc("cancel", &gid, "01", &it).await;
    assert_status(&r, 200, "Cancel before Try");
    svc.assert_both("sku-1", Counters::new(10, 0, 0), "after the empty Cancel")
        .await;

    // The Try arrives late: a successful no-op, nothing is reserved (no hanging reservation).
    let r = svc.tcc("try", &gid, "01", &it).await;
    assert_status(&r, 200, "late Try");
    svc.assert_both("sku-1", Counters::new(10, 0, 0), "after the late Try")
        .await;
    // The Cancel repeated, and the late Try repeated: still nothing.
    let r = svc.tcc("cancel", &gid, "01", &it).await;
    assert_status(&r, 200, "Cancel again");
    let r = svc.tcc("try", &gid, "01", &it).await;
    assert_status(&r, 200, "late Try again");
    assert_invariants(&svc, &ledger, "after the late Try").await;

    // A late Try for more than is available is a no-op too, not a refusal.
    let gid2 = new_gid("g2");
    let big = [("sku-1", 1000)];
    let r = svc.tcc("cancel", &gid2, "01", &big).await;
    assert_status(&r, 200, "Cancel before a big Try");
    let r = svc.tcc("try", &gid2, "01", &big).await;
    assert_status(&r, 200, "late Try for more than is available");

    let empty = skips(&svc, "empty_compensation").await - empty0;
    let late = skips(&svc, "late_try").await - late0;
    assert!(
        empty >= 2.0,
        "{SKIPS}{{kind=\"empty_compensation\"}} must count the two empty Cancels, got +{empty}"
    );
    assert!(
        late >= 2.0,
        "{SKIPS}{{kind=\"late_try\"}} must count the late Tries, got +{late}"
    );

    // The key is not blocked: another branch reserves normally.
    let gid3 = new_gid("g3");
    svc.try_ok(&mut ledger, &gid3, "01", &[("sku-1", 4)]).await;
    svc.assert_both("sku-1", Counters::new(6, 4, 0), "a normal Try after")
        .await;
    svc.confirm_ok(&mut ledger, &gid3, "01", &[("sku-1", 4)])
        .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn insufficient_stock_reserves_nothing(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "a", 5).await;
    svc.seed(&mut ledger, "b", 1).await;
    svc.seed(&mut ledger, "c", 10).await;
    let refused0 = svc.metric("tccd_stock_insufficient_total", &[]).await;

    // Several items, one short (in the middle): 409 naming it, nothing reserved anywhere.
    let g1 = new_gid("g1");
    let r = svc
        .tcc("try", &g1, "01", &[("a", 2), ("b", 2), ("c", 3)])
        .await;
    assert_insufficient(&r, "b", "Try with b short");
    assert_invariants(&svc, &ledger, "after the refused multi-item Try").await;
    svc.assert_both("a", Counters::new(5, 0, 0), "refused Try")
        .await;
    svc.assert_both("c", Counters::new(10, 0, 0), "refused Try")
        .await;

    // The short item last.
    let g2 = new_gid("g2");
    let r = svc.tcc("try", &g2, "01", &[("c", 10), ("a", 6)]).await;
    assert_insufficient(&r, "a", "Try with a short");
    assert_invariants(&svc, &ledger, "after the second refused Try").await;

    // A key that never got stock has none.
    let g3 = new_gid("g3");
    let r = svc
        .tcc("try", &g3, "01", &[("a", 1), ("never-stocked", 1)])
        .await;
    assert_insufficient(&r, "never-stocked", "Try on a key without stock");
    assert_invariants(&svc, &ledger, "after the Try on an unknown key").await;

    // The largest valid amount is a refusal, not a bad request.
    let g4 = new_gid("g4");
    let r = svc.tcc("try", &g4, "01", &[("c", 1_000_000_000_000)]).await;
    assert_insufficient(&r, "c", "Try of 10^12");

    // The coordinator cancels a refused branch when it aborts: an empty compensation.
    let refused: [(&str, &[(&str, i64)]); 4] = [
        (&g1, &[("a", 2), ("b", 2), ("c", 3)]),
        (&g2, &[("c", 10), ("a", 6)]),
        (&g3, &[("a", 1), ("never-stocked", 1)]),
        (&g4, &[("c", 1_000_000_000_000)]),
    ];
    for (gid, list) in refused {
        let r = svc.tcc("cancel", gid, "01", list).await;
        assert_status(&r, 200, "Cancel of a refused Try");
    }
    assert_invariants(&svc, &ledger, "after cancelling the refused Tries").await;

    let refused = svc.metric("tccd_stock_insufficient_total", &[]).await - refused0;
    assert_eq!(
        refused, 4.0,
        "tccd_stock_insufficient_total must count the four refused Tries"
    );

    // Exactly what is available can be reserved; then the key is short.
    let g5 = new_gid("g5");
    svc.try_ok(&mut ledger, &g5, "01", &[("b", 1), ("a", 5)])
        .await;
    svc.assert_both("b", Counters::new(0, 1, 0), "b fully reserved")
        .await;
    svc.assert_both("a", Counters::new(0, 5, 0), "a fully reserved")
        .await;
    let g6 = new_gid("g6");
    let r = svc.tcc("try", &g6, "01", &[("b", 1)]).await;
    assert_insufficient(&r, "b", "Try on a fully reserved key");
    assert_invariants(&svc, &ledger, "with b and a fully reserved").await;

    // Cancelling gives it back; then it can be reserved again.
    svc.cancel_ok(&mut ledger, &g5, "01", &[("b", 1), ("a", 5)])
        .await;
    svc.try_ok(&mut ledger, &g6, "02", &[("b", 1)]).await;
    svc.confirm_ok(&mut ledger, &g6, "02", &[("b", 1)]).await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn injected_faults(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &["--faults"]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "sku-1", 10).await;

    let fault = |op: &str, action: &str, count: u64| {
        let mut f = json!({"op": op, "action": action, "count": count});
        f["delay_ms"] = json!(0);
        f
    };
    let ok = |r: &(u16, Value), what: &str| {
        assert!((200..300).contains(&r.0), "{what}: {} {:#}", r.0, r.1);
    };

    // `refuse` on Try: 409 without reserving, for the next N calls only.
    ok(
        &svc.set_fault(fault("try", "refuse", 1)).await,
        "POST /v1/faults refuse",
    );
    let g1 = new_gid("g1");
    let r = svc.tcc("try", &g1, "01", &[("sku-1", 2)]).await;
    assert_eq!(r.0, 409, "refused Try: {:#}", r.1);
    assert_invariants(&svc, &ledger, "after a refused Try").await;
    svc.try_ok(&mut ledger, &g1, "02", &[("sku-1", 2)]).await;

    // `error` on Confirm: the next 2 Confirms answer 503, the third does the work once.
    ok(
        &svc.set_fault(fault("confirm", "error", 2)).await,
        "POST /v1/faults error",
    );
    for i in 1..=2 {
        let r = svc.tcc("confirm", &g1, "02", &[("sku-1", 2)]).await;
        assert_eq!(r.0, 503, "Confirm {i} with an error fault: {:#}", r.1);
    }
    assert_invariants(&svc, &ledger, "after two failed Confirms").await;
    svc.confirm_ok(&mut ledger, &g1, "02", &[("sku-1", 2)])
        .await;
    assert_invariants(&svc, &ledger, "after the Confirm").await;

    // `error` on Try: 503, nothing reserved.
    ok(
        &svc.set_fault(fault("try", "error", 1)).await,
        "POST /v1/faults error",
    );
    let g2 = new_gid("g2");
    let r = svc.tcc("try", &g2, "01", &[("sku-1", 1)]).await;
    assert_eq!(r.0, 503, "Try with an error fault: {:#}", r.1);
    assert_invariants(&svc, &ledger, "after a Try answered 503").await;

    // `delay` on Cancel: the call still succeeds.
    svc.try_ok(&mut ledger, &g2, "02", &[("sku-1", 3)]).await;
    ok(
        &svc.set_fault(json!({"op": "cancel", "action": "delay", "count": 1, "delay_ms": 200}))
            .await,
        "POST /v1/faults delay",
    );
    svc.cancel_ok(&mut ledger, &g2, "02", &[("sku-1", 3)]).await;

    // DELETE clears pending faults.
    ok(
        &svc.set_fault(fault("try", "error", 5)).await,
        "POST /v1/faults",
    );
    ok(&svc.clear_faults().await, "DELETE /v1/faults");
    let g3 = new_gid("g3");
    svc.try_ok(&mut ledger, &g3, "01", &[("sku-1", 1)]).await;
    svc.cancel_ok(&mut ledger, &g3, "01", &[("sku-1", 1)]).await;

    // A bad fault is refused.
    let r = svc
        .set_fault(json!({"op": "bogus", "action": "error", "count": 1}))
        .await;
    assert_invalid(&r, &["op"], "fault with an unknown op");
    let r = svc
        .set_fault(json!({"op": "try", "action": "explode", "count": 1}))
        .await;
    assert_invalid(&r, &["action"], "fault with an unknown action");
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn cancel_releases_only_what_the_try_reserved(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "a", 10).await;
    svc.seed(&mut ledger, "b", 10).await;
    let g0 = new_gid("other");
    svc.try_ok(&mut ledger, &g0, "01", &[("a", 4), ("b", 4)])
        .await;

    // The Cancel's payload claims more, and another key: only the Try's 3 units of `a` return.
    let g1 = new_gid("g1");
    svc.try_ok(&mut ledger, &g1, "01", &[("a", 3)]).await;
    let r = svc.tcc("cancel", &g1, "01", &[("a", 5), ("b", 2)]).await;
    assert_status(&r, 200, "Cancel with a different payload");
    ledger.cancelled(&g1, "01");
    svc.assert_both("a", Counters::new(6, 4, 0), "after the Cancel")
        .await;
    svc.assert_both("b", Counters::new(6, 4, 0), "after the Cancel")
        .await;
    assert_invariants(&svc, &ledger, "after the Cancel").await;

    // A refused Try reserved nothing, so its Cancel releases nothing (not even the items that
    // were not short).
    let g2 = new_gid("g2");
    let r = svc.tcc("try", &g2, "01", &[("a", 1), ("b", 7)]).await;
    assert_insufficient(&r, "b", "Try with b short");
    let r = svc.tcc("cancel", &g2, "01", &[("a", 1), ("b", 7)]).await;
    assert_status(&r, 200, "Cancel of the refused Try");
    svc.cancel_ok(&mut ledger, &g0, "01", &[("a", 4), ("b", 4)])
        .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}
