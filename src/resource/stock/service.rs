//! One TCC call on the stock service, across both stores, and the consistency check.
//!
//! Order (DESIGN.md rule 5): per-key lock of this process, then Redis (one atomic Lua script:
//! barrier + counters), then the database row (one local transaction: barrier + conditional
//! update). Each store keeps its own barrier and applies each `(gid, branch, op)` at most once,
//! so whatever fails between the two steps, the coordinator's retry or Cancel brings both to the
//! same end:
//! - Try applied in Redis, then the database fails or the process dies: the coordinator sees no
//!   success and cancels. Redis's Cancel releases what its Try reserved; the database's Cancel
//!   finds no Try there and only blocks it (empty compensation). Both end unreserved.
//! - Try applied in Redis, the database refuses it (the stores disagreed): the Redis part is
//!   rolled back at once (its Try key becomes `undone`), so nothing stays reserved.
//! - Confirm or Cancel applied in Redis, then the database fails: the coordinator retries; Redis
//!   skips it as a duplicate, the database applies it.
//! - A Try arriving after its Cancel reached Redis is skipped in both stores: the Cancel, which
//!   the coordinator retries until it succeeds, completes the database side.
//! - Redis lost a hash (restarted empty): the script says so before changing anything; the hash
//!   is reloaded from the database under the key's exclusive lock and the script runs again.

use std::sync::Arc;

use super::cache::{Cache, CacheOutcome};
use super::faults::{Action, Faults};
use super::locks::KeyLocks;
use super::metrics::StockMetrics;
use super::model::{Counters, Item};
use super::store::{self, SqlOutcome, StockRow};
use crate::db::Pool;
use crate::http::ApiError;
use crate::http::error::ErrorCode;
use crate::resource::Op;
use crate::resource::barrier::Outcome;
use crate::time::now_ms;

pub struct Stock {
    pub pool: Pool,
    pub cache: Cache,
    pub locks: KeyLocks,
    pub faults: Option<Faults>,
    pub metrics: Arc<StockMetrics>,
}

/// One key in both stores.
pub struct KeyView {
    pub row: StockRow,
    pub redis: Option<Counters>,
    /// Why Redis could not be read (the database's numbers are still shown).
    pub redis_error: Option<String>,
}

impl KeyView {
    pub fn consistent(&self) -> bool {
        self.redis == Some(self.row.counters())
    }
}

impl Stock {
    fn redis_error(&self, e: redis::RedisError) -> ApiError {
        self.metrics
            .store_errors
            .with_label_values(&["redis"])
            .inc();
        log::warn!("redis: {e}");
        ApiError::new(ErrorCode::Unavailable, "Redis is unavailable; retry later.")
    }

    fn db_error(&self, e: crate::db::StoreError) -> ApiError {
        self.metrics
            .store_errors
            .with_label_values(&["database"])
            .inc();
        ApiError::from(e)
    }

    fn count(&self, op: Op, outcome: &str) {
        self.metrics
            .calls
            .with_label_values(&[op.as_str(), outcome])
            .inc();
    }

    /// Runs one TCC call; returns what the barrier decided.
    pub async fn call(
        &self,
        op: Op,
        gid: &str,
        branch_id: &str,
        items: &[Item],
    ) -> Result<Outcome, ApiError> {
        if let Some(fault) = self.faults.as_ref().and_then(|f| f.take(op)) {
            match fault.action {
                Action::Error => {
                    self.count(op, "fault_error");
                    return Err(ApiError::new(
                        ErrorCode::Unavailable,
                        format!("Injected fault: {op} fails."),
                    ));
                }
                Action::Refuse => {
                    self.count(op, "fault_refused");
                    return Err(ApiError::conflict(format!("Injected fault: {op} refused.")));
                }
                Action::Delay => {
                    tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await
                }
            }
        }
        let result = self.call_stores(op, gid, branch_id, items).await;
        match &result {
            Ok(o) => {
                self.count(
                    op,
                    if *o == Outcome::Proceed {
                        "applied"
                    } else {
                        o.as_str()
                    },
                );
                if *o != Outcome::Proceed {
                    self.metrics
                        .barrier_skips
                        .with_label_values(&[o.as_str()])
                        .inc();
                    log::info!("gid={gid} branch={branch_id} {op}: {}", o.as_str());
                }
            }
            Err(e) if e.code == ErrorCode::InsufficientStock => {
                self.count(op, "insufficient");
                self.metrics.insufficient.inc();
            }
            Err(_) => self.count(op, "error"),
        }
        result
    }

    async fn call_stores(
        &self,
        op: Op,
        gid: &str,
        branch_id: &str,
        items: &[Item],
    ) -> Result<Outcome, ApiError> {
        let mut items = items.to_vec();
        let mut reloads = 0;
        loop {
            let guards = self
                .locks
                .shared(items.iter().map(|i| i.key.as_str()))
                .await;
            let cached = self
                .cache
                .apply(op, gid, branch_id, &items)
                .await
                .map_err(|e| self.redis_error(e))?;
            let (redis_outcome, redis_moved) = match cached {
                CacheOutcome::Missing(i) => {
                    drop(guards);
                    reloads += 1;
                    if reloads > items.len() + 2 {
                        return Err(ApiError::new(
                            ErrorCode::Unavailable,
                            "Redis keeps losing stock hashes; retry later.",
                        ));
                    }
                    if !self.reload(&items[i].key).await? {
                        if op == Op::Try {
                            return Err(insufficient(&items[i].key));
                        }
                        // A key that was never stocked cannot have been reserved: a Confirm or
                        // Cancel has nothing to move there.
                        items.remove(i);
                    }
                    continue;
                }
                // Refused in Redis: nothing changed anywhere, the database is never touched.
                CacheOutcome::Insufficient(i) => return Err(insufficient(&items[i].key)),
                CacheOutcome::Done(o, moved) => (o, moved),
            };
            if redis_outcome == Outcome::LateTry {
                // Its Cancel reached Redis; the coordinator retries that Cancel until the
                // database has it too, so the database must not reserve now.
                return Ok(Outcome::LateTry);
            }
            return match self.sql(op, gid, branch_id, &items).await? {
                SqlOutcome::Done(o, sql_moved) => {
                    // A Redis duplicate already moved this op's stock on an earlier call (one
                    // that failed before reaching the database); anything else that moved
                    // nothing in Redis means Redis had lost the reservation.
                    if redis_outcome != Outcome::Duplicate {
                        self.mirror_lost(op, gid, branch_id, &items, &redis_moved, &sql_moved)
                            .await?;
                    }
                    Ok(o)
                }
                SqlOutcome::Insufficient(key) => {
                    log::warn!(
                        "gid={gid} branch={branch_id}: Redis had stock for {key} but the database did not; undoing the Redis reservation"
                    );
                    self.cache
                        .undo_try(gid, branch_id, &items)
                        .await
                        .map_err(|e| self.redis_error(e))?;
                    Err(insufficient(&key))
                }
            };
        }
    }

    /// A Confirm or Cancel the database applied to a reservation that Redis no longer knew
    /// (Redis was flushed or restarted, or its record expired): Redis moved nothing for it, so
    /// the database's movement is mirrored now. This is exact: the shared key locks are still
    /// held, so no reload or repair ran between the database's change and this one, and the
    /// hash (loaded from the database before that change, or kept since the Try) does not
    /// include it yet.
    async fn mirror_lost(
        &self,
        op: Op,
        gid: &str,
        branch_id: &str,
        items: &[Item],
        redis_moved: &[i64],
        sql_moved: &[(String, i64)],
    ) -> Result<(), ApiError> {
        let (from, to) = match op {
            Op::Confirm => ("locked", "consumed"),
            Op::Cancel => ("locked", "available"),
            Op::Try => return Ok(()),
        };
        let mut lost = Vec::new();
        for (key, amount) in sql_moved {
            match items.iter().position(|i| &i.key == key) {
                Some(i) if redis_moved.get(i).copied().unwrap_or(0) == 0 => {
                    lost.push((key.clone(), *amount))
                }
                Some(_) => {}
                None => log::warn!(
                    "gid={gid} branch={branch_id}: {op} moved {amount} of {key} in the database, \
                     but the call's payload does not name {key}; the consistency check will repair Redis"
                ),
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        let done = self
            .cache
            .mirror(from, to, &lost)
            .await
            .map_err(|e| self.redis_error(e))?;
        log::warn!(
            "gid={gid} branch={branch_id}: Redis had lost this reservation; mirrored the database's {op} on {done} of {} keys",
            lost.len()
        );
        Ok(())
    }

    async fn sql(
        &self,
        op: Op,
        gid: &str,
        branch_id: &str,
        items: &[Item],
    ) -> Result<SqlOutcome, ApiError> {
        let (g, b, it) = (gid.to_string(), branch_id.to_string(), items.to_vec());
        self.pool
            .run(move |p| store::apply(p, op, &g, &b, &it, now_ms()))
            .await
            .map_err(|e| self.db_error(e))
    }

    async fn db_row(&self, key: &str) -> Result<Option<StockRow>, ApiError> {
        let k = key.to_string();
        self.pool
            .run(move |p| store::get(p, &k))
            .await
            .map_err(|e| self.db_error(e))
    }

    /// Loads a key's hash from the database if Redis lacks it; `false` if the database has no
    /// such key either.
    async fn reload(&self, key: &str) -> Result<bool, ApiError> {
        let _lock = self.locks.exclusive(key).await;
        let Some(row) = self.db_row(key).await? else {
            return Ok(false);
        };
        if self
            .cache
            .load_if_absent(key, row.counters())
            .await
            .map_err(|e| self.redis_error(e))?
        {
            log::warn!(
                "stock {key}: Redis had no hash; loaded it from the database {:?}",
                row.counters()
            );
        }
        Ok(true)
    }

    /// Sets a key's available stock in the database, then mirrors the row to Redis.
    pub async fn put(&self, key: &str, available: i64) -> Result<KeyView, ApiError> {
        let _lock = self.locks.exclusive(key).await;
        // Refuse before writing anything if Redis cannot take the new row.
        self.cache.ping().await.map_err(|e| self.redis_error(e))?;
        let k = key.to_string();
        let row = self
            .pool
            .run(move |p| store::put_available(p, &k, available, now_ms()))
            .await
            .map_err(|e| self.db_error(e))?;
        self.cache
            .write(key, row.counters())
            .await
            .map_err(|e| self.redis_error(e))?;
        log::info!("stock {key}: available set to {available}");
        Ok(KeyView {
            redis: Some(row.counters()),
            row,
            redis_error: None,
        })
    }

    /// A key in both stores. While Redis is down the database's numbers are still answered,
    /// with `redis_error` saying why Redis is missing.
    pub async fn get(&self, key: &str) -> Result<Option<KeyView>, ApiError> {
        let Some(row) = self.db_row(key).await? else {
            return Ok(None);
        };
        Ok(Some(self.with_redis(row).await))
    }

    pub async fn list(&self) -> Result<Vec<KeyView>, ApiError> {
        let rows = self
            .pool
            .run(store::list)
            .await
            .map_err(|e| self.db_error(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.with_redis(row).await);
        }
        Ok(out)
    }

    async fn with_redis(&self, row: StockRow) -> KeyView {
        match self.cache.read(&row.key).await {
            Ok(redis) => KeyView {
                row,
                redis,
                redis_error: None,
            },
            Err(e) => {
                let _ = self.redis_error(e);
                KeyView {
                    row,
                    redis: None,
                    redis_error: Some("Redis is unavailable".into()),
                }
            }
        }
    }

    /// Compares every key in both stores, each under its exclusive lock so no reservation is
    /// caught half-way; with `repair`, rewrites Redis from the database where they differ.
    /// Returns (keys checked, mismatches as they were found).
    pub async fn check(&self, repair: bool) -> Result<(usize, Vec<KeyView>), ApiError> {
        let keys: Vec<String> = self
            .pool
            .run(store::list)
            .await
            .map_err(|e| self.db_error(e))?
            .into_iter()
            .map(|r| r.key)
            .collect();
        let mut mismatches = Vec::new();
        for key in &keys {
            let _lock = self.locks.exclusive(key).await;
            let Some(view) = self.get(key).await? else {
                continue;
            };
            if view.redis_error.is_some() {
                // A check that cannot read Redis must fail, not report every key as differing.
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "Redis is unavailable; retry later.",
                ));
            }
            if view.consistent() {
                continue;
            }
            log::warn!(
                "stock {key}: Redis {:?} differs from the database {:?}",
                view.redis,
                view.row.counters()
            );
            self.metrics.inconsistencies_found.inc();
            if repair {
                self.cache
                    .write(key, view.row.counters())
                    .await
                    .map_err(|e| self.redis_error(e))?;
                self.metrics.repaired.inc();
                log::info!("stock {key}: Redis rewritten from the database");
            }
            mismatches.push(view);
        }
        self.metrics
            .inconsistent_keys
            .set(if repair { 0 } else { mismatches.len() as i64 });
        Ok((keys.len(), mismatches))
    }

    pub async fn ready(&self) -> Result<(), ApiError> {
        self.pool
            .run(|p| p.ping())
            .await
            .map_err(|e| self.db_error(e))?;
        self.cache.ping().await.map_err(|e| self.redis_error(e))
    }
}

fn insufficient(key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InsufficientStock,
        format!("Not enough stock available for key {key}."),
    )
    .with("key", key)
}
