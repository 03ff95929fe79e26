//! `tccd stock` killed (SIGKILL) with calls in flight and started again on the same database and
//! Redis (API.md sections 2 and 3): resolving every branch the way the coordinator would (Confirm
//! what was answered 200, Cancel the rest, retry whatever did not answer) leaves both stores equal
//! and the invariants intact. Where the kill lands is left to chance; the assertions hold for any.

#[macro_use]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::stock::*;
use support::*;

backend_tests!(killed_during_tries, killed_during_phase_two);

const CALLS: usize = 300;

/// One call to fire: the op, the gid, the items (branch `01`).
type Call = (&'static str, String, Vec<(&'static str, i64)>);

/// Fires one call per gid as spawned tasks, kills the service once `kill_after` have answered,
/// and returns each call's answer (`None` for a transport error).
async fn fire_and_kill(
    svc: &mut StockService,
    calls: Vec<Call>,
    kill_after: usize,
) -> Vec<Option<u16>> {
    let caller = svc.caller();
    let answered = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = calls
        .into_iter()
        .map(|(op, gid, list)| {
            let caller = caller.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let r = caller.call(op, &gid, "01", &list).await;
                answered.fetch_add(1, Ordering::SeqCst);
                r.ok().map(|(code, _)| code)
            })
        })
        .collect();
    wait_for("the first answers before the kill", DEADLINE, || {
        let n = answered.load(Ordering::SeqCst);
        async move { (n >= kill_after).then_some(()) }
    })
    .await;
    svc.kill();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("call task"));
    }
    let lost = out.iter().filter(|a| a.is_none()).count();
    eprintln!("killed with {lost} of {} calls unanswered", out.len());
    out
}

async fn killed_during_tries(backend: Backend) {
    let mut svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "a", 10_000).await;
    svc.seed(&mut ledger, "b", 10_000).await;
    let list = vec![("a", 1), ("b", 2)];
    let gids: Vec<String> = (0..CALLS).map(|i| new_gid(&format!("t{i}"))).collect();
    let calls = gids
        .iter()
        .map(|g| ("try", g.clone(), list.clone()))
        .collect();
    let answers = fire_and_kill(&mut svc, calls, 10).await;
    svc.restart().await;

    // The coordinator confirms the branches whose Try answered 200 and cancels every other one
    // (outcome unknown); each call is retried until it succeeds, here it must succeed at once.
    let mut confirmed = 0;
    for (gid, answer) in gids.iter().zip(&answers) {
        match answer {
            Some(200) => {
                ledger.tried(gid, "01", &list);
                svc.confirm_ok(&mut ledger, gid, "01", &list).await;
                confirmed += 1;
            }
            Some(other) => panic!("Try {gid} answered {other} before the kill"),
            None => svc.cancel_ok(&mut ledger, gid, "01", &list).await,
        }
    }
    assert!(
        confirmed >= 10,
        "{confirmed} Tries answered before the kill"
    );
    // A Try arriving after its Cancel stays a no-op after the restart too.
    for (gid, answer) in gids.iter().zip(&answers) {
        if answer.is_none() {
            let r = svc.tcc("try", gid, "01", &list).await;
            assert_status(&r, 200, "late Try after the restart");
        }
    }
    svc.assert_both(
        "a",
        Counters::new(10_000 - confirmed, 0, confirmed),
        "after resolving every branch",
    )
    .await;
    assert_invariants(&svc, &ledger, "after the restart, without a repair").await;
}

async fn killed_during_phase_two(backend: Backend) {
    let mut svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "a", 10_000).await;
    svc.seed(&mut ledger, "b", 10_000).await;
    let list = vec![("a", 1), ("b", 2)];
    let gids: Vec<String> = (0..CALLS).map(|i| new_gid(&format!("p{i}"))).collect();
    for gid in &gids {
        svc.try_ok(&mut ledger, gid, "01", &list).await;
    }
    assert_invariants(&svc, &ledger, "after the Tries").await;

    // Even branches are confirmed, odd ones cancelled; the service dies in the middle.
    let op = |i: usize| {
        if i.is_multiple_of(2) {
            "confirm"
        } else {
            "cancel"
        }
    };
    let calls = gids
        .iter()
        .enumerate()
        .map(|(i, g)| (op(i), g.clone(), list.clone()))
        .collect();
    let answers = fire_and_kill(&mut svc, calls, 10).await;
    svc.restart().await;

    // The coordinator retries every Confirm/Cancel it has no 2xx for, and may repeat the others.
    for (i, (gid, answer)) in gids.iter().zip(&answers).enumerate() {
        if let Some(code) = answer {
            assert_eq!(*code, 200, "{} {gid} before the kill", op(i));
        }
        if op(i) == "confirm" {
            svc.confirm_ok(&mut ledger, gid, "01", &list).await;
        } else {
            svc.cancel_ok(&mut ledger, gid, "01", &list).await;
        }
        let r = svc.tcc(op(i), gid, "01", &list).await;
        assert_status(&r, 200, &format!("{} {gid} repeated", op(i)));
    }
    let half = (CALLS / 2) as i64;
    svc.assert_both(
        "a",
        Counters::new(10_000 - half, 0, half),
        "after phase two",
    )
    .await;
    assert_invariants(&svc, &ledger, "after the restart, without a repair").await;
}
