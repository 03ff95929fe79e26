//! `tccd stock` under concurrent calls (API.md section 3): a flash sale never oversells, a Try
//! racing its own Cancel never leaves a reservation behind, and Tries over the same keys in
//! opposite orders neither deadlock nor drift; both stores end equal.

#[macro_use]
mod support;

use futures::future::join_all;

use support::stock::*;
use support::*;

backend_tests!(
    flash_sale_never_oversells,
    try_racing_cancel_leaves_nothing_locked,
    overlapping_multi_key_tries,
    repair_racing_tries_keeps_both_stores_equal,
    put_racing_tries_keeps_both_stores_equal,
);

async fn flash_sale_never_oversells(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "hot", 50).await;

    // 200 buyers, one unit each, all at once.
    let gids: Vec<String> = (0..200).map(|i| new_gid(&format!("buyer{i}"))).collect();
    let answers = join_all(
        gids.iter()
            .map(|gid| svc.tcc("try", gid, "01", &[("hot", 1)])),
    )
    .await;

    let mut won = Vec::new();
    let mut lost = Vec::new();
    for (gid, r) in gids.iter().zip(&answers) {
        match r.0 {
            200 => won.push(gid.clone()),
            409 => {
                assert_insufficient(r, "hot", "a Try of the flash sale");
                lost.push(gid.clone());
            }
            other => panic!(
                "flash sale Try {gid}: expected 200 or 409, got {other} {:#}",
                r.1
            ),
        }
    }
    assert_eq!(
        (won.len(), lost.len()),
        (50, 150),
        "exactly 50 Tries must succeed and 150 be refused"
    );
    for gid in &won {
        ledger.tried(gid, "01", &[("hot", 1)]);
    }
    svc.assert_both("hot", Counters::new(0, 50, 0), "after the flash sale")
        .await;
    assert_invariants(&svc, &ledger, "after the flash sale").await;

    // The winners pay (all at once), the losers' branches are cancelled (empty compensations).
    let confirms = join_all(
        won.iter()
            .map(|gid| svc.tcc("confirm", gid, "01", &[("hot", 1)])),
    )
    .await;
    let cancels = join_all(
        lost.iter()
            .map(|gid| svc.tcc("cancel", gid, "01", &[("hot", 1)])),
    )
    .await;
    for (gid, r) in won.iter().zip(&confirms) {
        assert_status(r, 200, &format!("Confirm {gid}"));
        ledger.confirmed(gid, "01");
    }
    for (gid, r) in lost.iter().zip(&cancels) {
        assert_status(r, 200, &format!("Cancel of refused {gid}"));
    }
    svc.assert_both("hot", Counters::new(0, 0, 50), "after the Confirms")
        .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn try_racing_cancel_leaves_nothing_locked(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k", 100).await;
    svc.seed(&mut ledger, "other", 100).await;
    let list = [("k", 7), ("other", 3)];

    let mut gids = Vec::new();
    for round in 0..30_u32 {
        let gid = new_gid(&format!("race{round}"));
        // Fire both at the same moment, alternating which one is sent first.
        let (t, c) = if round.is_multiple_of(2) {
            tokio::join!(
                svc.tcc("try", &gid, "01", &list),
                svc.tcc("cancel", &gid, "01", &list)
            )
        } else {
            let (c, t) = tokio::join!(
                svc.tcc("cancel", &gid, "01", &list),
                svc.tcc("try", &gid, "01", &list)
            );
            (t, c)
        };
        assert_status(&t, 200, &format!("round {round}: Try"));
        assert_status(&c, 200, &format!("round {round}: Cancel"));
        let (db, _) = svc.both("k").await;
        assert_eq!(
            db,
            Counters::new(100, 0, 0),
            "round {round}: whichever came first, nothing may stay locked"
        );
        gids.push(gid);
    }
    assert_invariants(&svc, &ledger, "after 30 rounds").await;

    // A Try of any of those branches arriving once more stays a no-op (no hanging reservation).
    for gid in &gids {
        let r = svc.tcc("try", gid, "01", &list).await;
        assert_status(&r, 200, "Try repeated after the race");
    }
    svc.assert_both("k", Counters::new(100, 0, 0), "at the end")
        .await;
    svc.assert_both("other", Counters::new(100, 0, 0), "at the end")
        .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn overlapping_multi_key_tries(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    for key in ["a", "b", "c"] {
        svc.seed(&mut ledger, key, 1000).await;
    }
    let forward: &[(&str, i64)] = &[("a", 1), ("b", 2), ("c", 3)];
    let backward: &[(&str, i64)] = &[("c", 3), ("b", 2), ("a", 1)];
    let lists: Vec<&[(&str, i64)]> = (0..40_u32)
        .map(|i| {
            if i.is_multiple_of(2) {
                forward
            } else {
                backward
            }
        })
        .collect();
    let gids: Vec<String> = (0..40).map(|i| new_gid(&format!("m{i}"))).collect();

    // 40 Tries over the same three keys, half of them in the opposite order.
    let tries = join_all(
        gids.iter()
            .zip(&lists)
            .map(|(gid, list)| svc.tcc("try", gid, "01", list)),
    )
    .await;
    for ((gid, list), r) in gids.iter().zip(&lists).zip(&tries) {
        assert_status(r, 200, &format!("Try {gid}"));
        ledger.tried(gid, "01", list);
    }
    svc.assert_both("a", Counters::new(960, 40, 0), "after 40 Tries")
        .await;
    svc.assert_both("b", Counters::new(920, 80, 0), "after 40 Tries")
        .await;
    svc.assert_both("c", Counters::new(880, 120, 0), "after 40 Tries")
        .await;

    // Confirm the even ones and cancel the odd ones, all at once.
    let ops = join_all(gids.iter().zip(&lists).enumerate().map(|(i, (gid, list))| {
        let op = if i.is_multiple_of(2) {
            "confirm"
        } else {
            "cancel"
        };
        svc.tcc(op, gid, "01", list)
    }))
    .await;
    for (i, (gid, r)) in gids.iter().zip(&ops).enumerate() {
        assert_status(r, 200, &format!("phase two of {gid}"));
        if i.is_multiple_of(2) {
            ledger.confirmed(gid, "01");
        } else {
            ledger.cancelled(gid, "01");
        }
    }
    svc.assert_both("a", Counters::new(980, 0, 20), "at the end")
        .await;
    svc.assert_both("b", Counters::new(960, 0, 40), "at the end")
        .await;
    svc.assert_both("c", Counters::new(940, 0, 60), "at the end")
        .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn repair_racing_tries_keeps_both_stores_equal(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "hot", 60).await;
    svc.seed(&mut ledger, "cold", 1000).await;

    // 100 Tries of one unit while repairs and checks run (a repair must not rewrite a key from
    // the database while a reservation on it is between Redis and the database).
    let gids: Vec<String> = (0..100).map(|i| new_gid(&format!("r{i}"))).collect();
    let tries = join_all(
        gids.iter()
            .map(|gid| svc.tcc("try", gid, "01", &[("hot", 1), ("cold", 1)])),
    );
    let repairs = join_all((0..20).map(|_| async {
        svc.repair().await;
        svc.consistency().await;
    }));
    let (answers, _) = tokio::join!(tries, repairs);

    let mut won = Vec::new();
    for (gid, r) in gids.iter().zip(&answers) {
        match r.0 {
            200 => won.push(gid.clone()),
            409 => assert_insufficient(r, "hot", "a Try racing repairs"),
            other => panic!("Try {gid}: expected 200 or 409, got {other} {:#}", r.1),
        }
    }
    assert_eq!(won.len(), 60, "exactly the 60 available units are reserved");
    for gid in &won {
        ledger.tried(gid, "01", &[("hot", 1), ("cold", 1)]);
    }
    svc.assert_both("hot", Counters::new(0, 60, 0), "after the race")
        .await;
    svc.assert_both("cold", Counters::new(940, 60, 0), "after the race")
        .await;
    assert_invariants(&svc, &ledger, "after the race").await;

    // Phase two racing repairs too.
    let ops = join_all(won.iter().enumerate().map(|(i, gid)| {
        let op = if i.is_multiple_of(2) {
            "confirm"
        } else {
            "cancel"
        };
        svc.tcc(op, gid, "01", &[("hot", 1), ("cold", 1)])
    }));
    let repairs = join_all((0..10).map(|_| svc.repair()));
    let (answers, _) = tokio::join!(ops, repairs);
    for (i, (gid, r)) in won.iter().zip(&answers).enumerate() {
        assert_status(r, 200, &format!("phase two of {gid}"));
        if i.is_multiple_of(2) {
            ledger.confirmed(gid, "01");
        } else {
            ledger.cancelled(gid, "01");
        }
    }
    svc.assert_both("hot", Counters::new(30, 0, 30), "at the end")
        .await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn put_racing_tries_keeps_both_stores_equal(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k", 1000).await;

    // 100 Tries of one unit while the stock is set to 500 again and again: every Try fits.
    let gids: Vec<String> = (0..100).map(|i| new_gid(&format!("p{i}"))).collect();
    let tries = join_all(
        gids.iter()
            .map(|gid| svc.tcc("try", gid, "01", &[("k", 1)])),
    );
    let puts = join_all((0..10).map(|_| svc.put_stock("k", 500)));
    let (answers, puts) = tokio::join!(tries, puts);
    for (gid, r) in gids.iter().zip(&answers) {
        assert_status(r, 200, &format!("Try {gid}"));
        ledger.tried(gid, "01", &[("k", 1)]);
    }
    for r in &puts {
        assert_status(r, 200, "PUT racing Tries");
    }
    // Which PUT came last decides `available`; the reservations are all kept, in both stores.
    let db = svc.db_counters("k").await;
    assert_eq!(db.locked, 100, "{db:?}");
    assert!(db.available <= 500 && db.available >= 400, "{db:?}");
    ledger.put("k", db.available);
    assert_invariants(&svc, &ledger, "after the race").await;

    let ops = join_all(gids.iter().enumerate().map(|(i, gid)| {
        let op = if i.is_multiple_of(2) {
            "confirm"
        } else {
            "cancel"
        };
        svc.tcc(op, gid, "01", &[("k", 1)])
    }));
    let puts = join_all((0..10).map(|_| svc.put_stock("k", 500)));
    let (answers, _) = tokio::join!(ops, puts);
    for (i, (gid, r)) in gids.iter().zip(&answers).enumerate() {
        assert_status(r, 200, &format!("phase two of {gid}"));
        if i.is_multiple_of(2) {
            ledger.confirmed(gid, "01");
        } else {
            ledger.cancelled(gid, "01");
        }
    }
    let db = svc.db_counters("k").await;
    assert_eq!((db.locked, db.consumed), (0, 50), "{db:?}");
    ledger.put("k", db.available);
    assert_invariants(&svc, &ledger, "at the end").await;
}
