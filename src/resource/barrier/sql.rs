//! The SQL barrier: rows in `tcc_barriers`, inserted with `ON CONFLICT DO NOTHING` inside the
//! caller's local transaction, before the business change.

use diesel::prelude::*;

use super::Outcome;
use crate::db::schema::tcc_barriers;
use crate::resource::Op;

/// The barrier's row operations; implemented for every backend tccd supports.
pub trait BarrierConn {
    /// Inserts a barrier row; `false` if it was there already.
    fn insert_barrier(
        &mut self,
        gid: &str,
        branch_id: &str,
        op: &str,
        origin: &str,
        now: i64,
    ) -> QueryResult<bool>;
    /// Which operation wrote the row for `op`, if any (a Cancel writes the Try's row).
    fn barrier_origin(
        &mut self,
        gid: &str,
        branch_id: &str,
        op: &str,
    ) -> QueryResult<Option<String>>;
}

macro_rules! impl_barrier_conn {
    ($conn:ty) => {
        impl BarrierConn for $conn {
            fn insert_barrier(
                &mut self,
                gid: &str,
                branch_id: &str,
                op: &str,
                origin: &str,
                now: i64,
            ) -> QueryResult<bool> {
                let n = diesel::insert_into(tcc_barriers::table)
                    .values((
                        tcc_barriers::gid.eq(gid),
                        tcc_barriers::branch_id.eq(branch_id),
                        tcc_barriers::op.eq(op),
                        tcc_barriers::origin.eq(origin),
                        tcc_barriers::created_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(self)?;
                Ok(n == 1)
            }

            fn barrier_origin(
                &mut self,
                gid: &str,
                branch_id: &str,
                op: &str,
            ) -> QueryResult<Option<String>> {
                tcc_barriers::table
                    .find((gid, branch_id, op))
                    .select(tcc_barriers::origin)
                    .first(self)
                    .optional()
            }
        }
    };
}

impl_barrier_conn!(diesel::SqliteConnection);
impl_barrier_conn!(diesel::PgConnection);

/// Passes the barrier for `op`. Call it first inside the local transaction that makes the
/// business change, and make the change only on `Proceed`. (A Confirm whose Try reserved
/// nothing is the caller's to detect: the barrier only knows the Try was not blocked.)
pub fn enter<C: BarrierConn>(
    conn: &mut C,
    gid: &str,
    branch_id: &str,
    op: Op,
    now: i64,
) -> QueryResult<Outcome> {
    let name = op.as_str();
    match op {
        Op::Try => {
            if conn.insert_barrier(gid, branch_id, name, name, now)? {
                Ok(Outcome::Proceed)
            } else if conn.barrier_origin(gid, branch_id, name)?.as_deref()
                == Some(Op::Cancel.as_str())
            {
                Ok(Outcome::LateTry)
            } else {
                Ok(Outcome::Duplicate)
            }
        }
        Op::Confirm => Ok(if conn.insert_barrier(gid, branch_id, name, name, now)? {
            Outcome::Proceed
        } else {
            Outcome::Duplicate
        }),
        Op::Cancel => {
            if !conn.insert_barrier(gid, branch_id, name, name, now)? {
                return Ok(Outcome::Duplicate);
            }
            // Taking the Try's place: if that works, the Try never ran here, and now never will.
            if conn.insert_barrier(gid, branch_id, Op::Try.as_str(), name, now)? {
                Ok(Outcome::EmptyCompensation)
            } else {
                Ok(Outcome::Proceed)
            }
        }
    }
}
