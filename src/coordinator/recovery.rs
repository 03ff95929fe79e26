//! The recovery worker: every interval it claims due transactions with a lease — `trying` ones
//! past their deadline (aborting them), and decided ones whose driver crashed or whose last pass
//! failed — and drives them. Claims are row-level, so several coordinators share the work.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::driver::Engine;
use super::model::TxStatus;
use super::store;
use crate::time::now_ms;

/// Most transactions claimed by one pass.
const BATCH: i64 = 100;
/// Most transactions driven at once by one pass.
const CONCURRENCY: usize = 16;

pub async fn run(engine: Arc<Engine>, interval: Duration, mut stop: watch::Receiver<bool>) {
    log::info!(
        "recovery worker started (every {} ms)",
        interval.as_millis()
    );
    loop {
        let claimed = pass(&engine).await;
        // A full batch means more is due: go again at once.
        if claimed < BATCH as usize {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
        }
        if *stop.borrow() {
            break;
        }
    }
    log::info!("recovery worker stopped");
}

/// One pass; returns how many transactions it claimed.
async fn pass(engine: &Arc<Engine>) -> usize {
    let owner = engine.cfg.owner.clone();
    let lease_ms = engine.cfg.lease_ms;
    let claimed = match engine
        .pool
        .run(move |p| store::claim_due(p, &owner, now_ms(), lease_ms, BATCH))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            log::warn!("recovery: cannot claim due transactions: {e}");
            return 0;
        }
    };
    let count = claimed.len();
    for c in &claimed {
        if c.from == TxStatus::Trying {
            engine
                .metrics
                .transition(Some(TxStatus::Trying), TxStatus::Aborting);
            log::info!("gid={} trying -> aborting (timed out)", c.gid);
        } else {
            log::info!("gid={} recovery resumes {}", c.gid, c.to);
        }
    }
    futures::stream::iter(claimed)
        .for_each_concurrent(CONCURRENCY, |c| async move {
            crate::failpoints::crash_point("coord_after_decision");
            if let Err(e) = engine.drive(&c.gid).await {
                log::warn!("gid={} recovery pass failed: {e}", c.gid);
            }
        })
        .await;
    let threshold = engine.cfg.stuck_after_attempts;
    match engine
        .pool
        .run(move |p| store::count_stuck(p, threshold))
        .await
    {
        Ok(n) => engine.metrics.stuck.set(n),
        Err(e) => log::warn!("recovery: cannot count stuck transactions: {e}"),
    }
    count
}
