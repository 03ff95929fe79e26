//! How the writer's batch of writes (see [`super::unit`]) reaches the database, in one local
//! transaction: lock the transactions the writes touch, read their branches and the resources
//! the writes need, apply the writes in order, store every row that changed. Blocking; run on
//! the writer's thread, so no connection is held across an `.await`.

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::upsert::excluded;

use super::store::{BranchRow, ResourceRow, TxRow};
use super::unit::{Changes, Unit, Write, Written};
use crate::db::schema::{branches, resources, transactions};
use crate::db::{DbConn, Pool, StoreError};
use crate::with_conn;

/// The statements that are the same on both backends (the body is compiled for each).
macro_rules! batch_statements {
    () => {
        fn branches_of(&mut self, gids: &[&str]) -> QueryResult<Vec<BranchRow>> {
            if gids.is_empty() {
                return Ok(Vec::new());
            }
            branches::table
                .filter(branches::gid.eq_any(gids))
                .select(BranchRow::as_select())
                .load(self)
        }

        fn resources_named(&mut self, names: &[&str]) -> QueryResult<Vec<ResourceRow>> {
            if names.is_empty() {
                return Ok(Vec::new());
            }
            resources::table
                .filter(resources::name.eq_any(names))
                .select(ResourceRow::as_select())
                .load(self)
        }
    };
}

/// Applies `writes` in order and stores what changed. The answers hold only once this returns
/// Ok (the commit happened). Whether the commit waits for the WAL flush is the pool's setting
/// ([`crate::db::Commits`]).
pub fn write_batch(pool: &Pool, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
    let mut gids: Vec<&str> = writes.iter().map(Write::gid).collect();
    gids.sort_unstable();
    gids.dedup();
    with_conn!(pool, |conn| conn
        .write_txn(|conn| apply_batch(conn, writes, &gids)))
}

fn apply_batch<C: BatchConn>(
    conn: &mut C,
    writes: &[Write],
    gids: &[&str],
) -> Result<Vec<Written>, StoreError> {
    let txs = conn.lock_txs(gids)?;
    let found: Vec<&str> = txs.iter().map(|t| t.gid.as_str()).collect();
    let branches = conn.branches_of(&found)?;
    let names = Unit::resource_names(writes, &branches);
    let resources = conn.resources_named(&names)?;
    let mut unit = Unit::new(txs, branches, resources);
    let written = writes.iter().map(|w| unit.apply(w)).collect();
    let changes = unit.changes();
    if !changes.is_empty() {
        conn.store(&changes)?;
    }
    Ok(written)
}

/// Rows per multi-row statement on SQLite: 16 columns × 500 stays far below its 32,766 bound
/// parameters. (Postgres takes each column as one array, whatever the number of rows.)
const ROWS_PER_STATEMENT: usize = 500;

/// The statements of a batch, on either backend.
trait BatchConn: DbConn {
    /// Reads transactions and holds their rows until the local transaction ends, locking them
    /// in gid order so that two writers never wait for each other in a cycle (on SQLite the
    /// immediate transaction already holds the database's write lock).
    fn lock_txs(&mut self, gids: &[&str]) -> QueryResult<Vec<TxRow>>;
    /// All branches of these transactions.
    fn branches_of(&mut self, gids: &[&str]) -> QueryResult<Vec<BranchRow>>;
    fn resources_named(&mut self, names: &[&str]) -> QueryResult<Vec<ResourceRow>>;
    /// Inserts and updates what a batch changed, many rows per statement. Fails if a row to
    /// insert exists already.
    fn store(&mut self, changes: &Changes<'_>) -> QueryResult<()>;
}

impl BatchConn for SqliteConnection {
    /// Multi-row `INSERT … ON CONFLICT` statements, a few hundred rows each.
    fn store(&mut self, c: &Changes<'_>) -> QueryResult<()> {
        for rows in c.new_txs.chunks(ROWS_PER_STATEMENT) {
            let n = diesel::insert_into(transactions::table)
                .values(rows.to_vec())
                .on_conflict_do_nothing()
                .execute(self)?;
            if n != rows.len() {
                return Err(DieselError::RollbackTransaction);
            }
        }
        for rows in c.changed_txs.chunks(ROWS_PER_STATEMENT) {
            // An update of whole rows by key, many rows in one statement.
            diesel::insert_into(transactions::table)
                .values(rows.to_vec())
                .on_conflict(transactions::gid)
                .do_update()
                .set((
                    transactions::status.eq(excluded(transactions::status)),
                    transactions::updated_at.eq(excluded(transactions::updated_at)),
                    transactions::finished_at.eq(excluded(transactions::finished_at)),
                    transactions::reason.eq(excluded(transactions::reason)),
                    transactions::attempts.eq(excluded(transactions::attempts)),
                    transactions::next_retry_at.eq(excluded(transactions::next_retry_at)),
                    transactions::last_error.eq(excluded(transactions::last_error)),
                    transactions::due_at.eq(excluded(transactions::due_at)),
                    transactions::lease_owner.eq(excluded(transactions::lease_owner)),
                ))
                .execute(self)?;
        }
        for rows in c.new_branches.chunks(ROWS_PER_STATEMENT) {
            let n = diesel::insert_into(branches::table)
                .values(rows.to_vec())
                .on_conflict_do_nothing()
                .execute(self)?;
            if n != rows.len() {
                return Err(DieselError::RollbackTransaction);
            }
        }
        for rows in c.changed_branches.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(branches::table)
                .values(rows.to_vec())
                .on_conflict((branches::gid, branches::branch_id))
                .do_update()
                .set((
                    branches::status.eq(excluded(branches::status)),
                    branches::try_outcome.eq(excluded(branches::try_outcome)),
                    branches::response.eq(excluded(branches::response)),
                    branches::attempts.eq(excluded(branches::attempts)),
                    branches::last_error.eq(excluded(branches::last_error)),
                    branches::updated_at.eq(excluded(branches::updated_at)),
                ))
                .execute(self)?;
        }
        Ok(())
    }

    fn lock_txs(&mut self, gids: &[&str]) -> QueryResult<Vec<TxRow>> {
        transactions::table
            .filter(transactions::gid.eq_any(gids))
            .select(TxRow::as_select())
            .load(self)
    }

    batch_statements!();
}

impl BatchConn for PgConnection {
    fn lock_txs(&mut self, gids: &[&str]) -> QueryResult<Vec<TxRow>> {
        transactions::table
            .filter(transactions::gid.eq_any(gids))
            .select(TxRow::as_select())
            .order(transactions::gid.asc())
            .for_update()
            .load(self)
    }

    /// One statement over column arrays (see [`super::batch_pg`]).
    fn store(&mut self, c: &Changes<'_>) -> QueryResult<()> {
        let (new_txs, new_branches): (i64, i64) =
            super::batch_pg::StoreChanges::new(c).get_result(self)?;
        if new_txs as usize != c.new_txs.len() || new_branches as usize != c.new_branches.len() {
            return Err(DieselError::RollbackTransaction);
        }
        Ok(())
    }

    batch_statements!();
}
