//! The stock service's SQL side: the source of truth. Each TCC call is one local transaction:
//! the barrier row first, then the conditional counter updates and the reservation rows.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::model::{Counters, Item};
use crate::db::schema::{stock, stock_reservations};
use crate::db::{DbConn, Pool, StoreError};
use crate::resource::Op;
use crate::resource::barrier::{Outcome, sql::enter};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stock)]
pub struct StockRow {
    pub key: String,
    pub available: i64,
    pub locked: i64,
    pub consumed: i64,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl StockRow {
    pub fn counters(&self) -> Counters {
        Counters {
            available: self.available,
            locked: self.locked,
            consumed: self.consumed,
        }
    }
}

/// Reservation states.
const LOCKED: &str = "locked";
const CONSUMED: &str = "consumed";
const RELEASED: &str = "released";

/// The result of a TCC call in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlOutcome {
    /// What the barrier decided (`Proceed`: the change was made) and, for a Confirm or Cancel
    /// that proceeded, what it moved per key.
    Done(Outcome, Vec<(String, i64)>),
    /// Try refused: this key has too little available (or does not exist). Nothing written.
    Insufficient(String),
}

/// Rolls the local transaction back with a business refusal.
enum Abort {
    Insufficient(String),
    Db(DieselError),
}

impl From<DieselError> for Abort {
    fn from(e: DieselError) -> Self {
        Abort::Db(e)
    }
}

pub fn get(pool: &Pool, key: &str) -> Result<Option<StockRow>, StoreError> {
    with_conn!(pool, |conn| Ok(stock::table
        .find(key)
        .select(StockRow::as_select())
        .first(conn)
        .optional()?))
}

pub fn list(pool: &Pool) -> Result<Vec<StockRow>, StoreError> {
    with_conn!(pool, |conn| Ok(stock::table
        .select(StockRow::as_select())
        .order(stock::key.asc())
        .load(conn)?))
}

/// Sets `available`, creating the key with nothing locked or consumed if it is new.
pub fn put_available(
    pool: &Pool,
    key: &str,
    available: i64,
    now: i64,
) -> Result<StockRow, StoreError> {
    with_conn!(pool, |conn| conn.write_txn(|conn| {
        let updated = diesel::update(stock::table.find(key))
            .set((
                stock::available.eq(available),
                stock::version.eq(stock::version + 1),
                stock::updated_at.eq(now),
            ))
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(stock::table)
                .values((
                    stock::key.eq(key),
                    stock::available.eq(available),
                    stock::locked.eq(0),
                    stock::consumed.eq(0),
                    stock::version.eq(0),
                    stock::created_at.eq(now),
                    stock::updated_at.eq(now),
                ))
                .execute(conn)?;
        }
        Ok::<_, StoreError>(
            stock::table
                .find(key)
                .select(StockRow::as_select())
                .first(conn)?,
        )
    }))
}

/// Applies one TCC call in one local transaction.
pub fn apply(
    pool: &Pool,
    op: Op,
    gid: &str,
    branch_id: &str,
    items: &[Item],
    now: i64,
) -> Result<SqlOutcome, StoreError> {
    let result: Result<(Outcome, Vec<(String, i64)>), Abort> = with_conn!(pool, |conn| conn
        .write_txn(|conn| {
            let outcome = enter(conn, gid, branch_id, op, now)?;
            if outcome != Outcome::Proceed {
                return Ok((outcome, Vec::new()));
            }
            match op {
                Op::Try => {
                    // Items are sorted by key: concurrent Tries lock rows in one order.
                    for it in items {
                        let n = diesel::update(
                            stock::table
                                .find(&it.key)
                                .filter(stock::available.ge(it.amount)),
                        )
                        .set((
                            stock::available.eq(stock::available - it.amount),
                            stock::locked.eq(stock::locked + it.amount),
                            stock::version.eq(stock::version + 1),
                            stock::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                        if n == 0 {
                            return Err(Abort::Insufficient(it.key.clone()));
                        }
                        diesel::insert_into(stock_reservations::table)
                            .values((
                                stock_reservations::gid.eq(gid),
                                stock_reservations::branch_id.eq(branch_id),
                                stock_reservations::key.eq(&it.key),
                                stock_reservations::amount.eq(it.amount),
                                stock_reservations::state.eq(LOCKED),
                                stock_reservations::created_at.eq(now),
                                stock_reservations::updated_at.eq(now),
                            ))
                            .execute(conn)?;
                    }
                    Ok((Outcome::Proceed, Vec::new()))
                }
                Op::Confirm | Op::Cancel => {
                    // Move exactly what this branch's Try reserved here, whatever the payload says.
                    let open: Vec<(String, i64)> = stock_reservations::table
                        .filter(stock_reservations::gid.eq(gid))
                        .filter(stock_reservations::branch_id.eq(branch_id))
                        .filter(stock_reservations::state.eq(LOCKED))
                        .select((stock_reservations::key, stock_reservations::amount))
                        .order(stock_reservations::key.asc())
                        .load(conn)?;
                    if open.is_empty() {
                        return Ok((Outcome::NotTried, Vec::new()));
                    }
                    for (key, amount) in &open {
                        let n = if op == Op::Confirm {
                            diesel::update(stock::table.find(key).filter(stock::locked.ge(amount)))
                                .set((
                                    stock::locked.eq(stock::locked - amount),
                                    stock::consumed.eq(stock::consumed + amount),
                                    stock::version.eq(stock::version + 1),
                                    stock::updated_at.eq(now),
                                ))
                                .execute(conn)?
                        } else {
                            diesel::update(stock::table.find(key).filter(stock::locked.ge(amount)))
                                .set((
                                    stock::locked.eq(stock::locked - amount),
                                    stock::available.eq(stock::available + amount),
                                    stock::version.eq(stock::version + 1),
                                    stock::updated_at.eq(now),
                                ))
                                .execute(conn)?
                        };
                        if n == 0 {
                            // A reservation row without its locked stock means the row was edited
                            // behind our back; refuse rather than go negative.
                            return Err(Abort::Db(DieselError::QueryBuilderError(
                                format!(
                                    "stock {key} has less locked than reservation {gid}/{branch_id}"
                                )
                                .into(),
                            )));
                        }
                    }
                    let state = if op == Op::Confirm {
                        CONSUMED
                    } else {
                        RELEASED
                    };
                    diesel::update(
                        stock_reservations::table
                            .filter(stock_reservations::gid.eq(gid))
                            .filter(stock_reservations::branch_id.eq(branch_id))
                            .filter(stock_reservations::state.eq(LOCKED)),
                    )
                    .set((
                        stock_reservations::state.eq(state),
                        stock_reservations::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                    Ok((Outcome::Proceed, open))
                }
            }
        }));
    match result {
        Ok((o, moved)) => Ok(SqlOutcome::Done(o, moved)),
        Err(Abort::Insufficient(key)) => Ok(SqlOutcome::Insufficient(key)),
        Err(Abort::Db(e)) => Err(StoreError::from(e)),
    }
}
