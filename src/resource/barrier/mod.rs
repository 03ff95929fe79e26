//! The TCC barrier: makes a resource's Try, Confirm and Cancel safe against everything the
//! network can do to them.
//!
//! - A repeated call of the same `(gid, branch_id, op)` is a successful no-op (`Duplicate`).
//! - A Cancel whose Try never ran does nothing (`EmptyCompensation`) and leaves a mark in the
//!   Try's place, so a Try arriving later does nothing either (`LateTry`): no hanging
//!   reservation.
//!
//! The barrier must be written in the same local transaction (SQL, see [`sql`]) or the same
//! Lua script (Redis, see [`redis`]) as the business change, so both commit or neither does.
//!
//! ```no_run
//! use diesel::prelude::*;
//! use tccd::resource::barrier::{sql::enter, Outcome};
//! use tccd::resource::Op;
//!
//! fn cancel_payment(conn: &mut PgConnection, gid: &str, branch: &str) -> QueryResult<()> {
//!     conn.transaction(|conn| {
//!         match enter(conn, gid, branch, Op::Cancel, tccd::time::now_ms())? {
//!             Outcome::Proceed => { /* undo what the Try reserved, in this same transaction */ }
//!             _ => { /* duplicate, or the Try never ran: nothing to undo */ }
//!         }
//!         Ok(())
//!     })
//! }
//! ```

pub mod redis;
pub mod sql;

/// What the barrier says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// First time: do the business change (in the same transaction or script).
    Proceed,
    /// The same call ran before: answer success, change nothing.
    Duplicate,
    /// A Cancel whose Try never ran: answer success, change nothing; the Try is now blocked.
    EmptyCompensation,
    /// A Try arriving after its Cancel: answer success, reserve nothing.
    LateTry,
    /// A Confirm or Cancel whose Try did not reserve anything in this store (for example it
    /// was undone, or the store lost its state): nothing to move.
    NotTried,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Proceed => "proceed",
            Outcome::Duplicate => "duplicate",
            Outcome::EmptyCompensation => "empty_compensation",
            Outcome::LateTry => "late_try",
            Outcome::NotTried => "not_tried",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "proceed" => Outcome::Proceed,
            "duplicate" => Outcome::Duplicate,
            "empty_compensation" => Outcome::EmptyCompensation,
            "late_try" => Outcome::LateTry,
            "not_tried" => Outcome::NotTried,
            _ => return None,
        })
    }
}
