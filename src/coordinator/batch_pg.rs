//! On Postgres, every row a batch changed is stored by one statement: four data-modifying CTEs
//! (insert new transactions, update changed ones, the same for branches), each reading its rows
//! from one array per column with `unnest`. One round trip instead of four, and its text never
//! changes with the number of rows, so the connection parses and plans it once and reuses the
//! prepared statement (diesel caches it by type, see [`QueryId`]), where multi-row `VALUES`
//! lists are parsed and planned anew for every batch.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text};

use super::store::{BranchRow, TxRow};
use super::unit::Changes;

/// One column's values, in row order.
enum Values<'a> {
    Text(Vec<&'a str>),
    OptText(Vec<Option<&'a str>>),
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
}

impl Values<'_> {
    fn array_type(&self) -> &'static str {
        match self {
            Values::Text(_) | Values::OptText(_) => "text[]",
            Values::Int(_) | Values::OptInt(_) => "int8[]",
        }
    }
}

type Column<'a> = (&'static str, Values<'a>);

/// What one CTE does with its rows.
enum Action {
    /// Insert the rows; one that exists already is skipped (the statement counts those
    /// inserted).
    Insert,
    /// Update the rows found by these key columns to the values of the other columns.
    Update { key: &'static [&'static str] },
}

struct Part<'a> {
    name: &'static str,
    table: &'static str,
    action: Action,
    columns: Vec<Column<'a>>,
}

/// The statement; answers how many new transactions and new branches were inserted.
pub struct StoreChanges<'a> {
    parts: [Part<'a>; 4],
}

impl<'a> StoreChanges<'a> {
    pub fn new(c: &Changes<'a>) -> StoreChanges<'a> {
        StoreChanges {
            parts: [
                Part {
                    name: "new_txs",
                    table: "transactions",
                    action: Action::Insert,
                    columns: tx_columns(&c.new_txs, true),
                },
                Part {
                    name: "changed_txs",
                    table: "transactions",
                    action: Action::Update { key: &["gid"] },
                    columns: tx_columns(&c.changed_txs, false),
                },
                Part {
                    name: "new_branches",
                    table: "branches",
                    action: Action::Insert,
                    columns: branch_columns(&c.new_branches, true),
                },
                Part {
                    name: "changed_branches",
                    table: "branches",
                    action: Action::Update {
                        key: &["gid", "branch_id"],
                    },
                    columns: branch_columns(&c.changed_branches, false),
                },
            ],
        }
    }
}

fn text<'a, R>(rows: &[&'a R], f: fn(&'a R) -> &'a str) -> Values<'a> {
    Values::Text(rows.iter().map(|r| f(r)).collect())
}

fn opt_text<'a, R>(rows: &[&'a R], f: fn(&'a R) -> &'a Option<String>) -> Values<'a> {
    Values::OptText(rows.iter().map(|r| f(r).as_deref()).collect())
}

fn int<'a, R>(rows: &[&'a R], f: fn(&R) -> i64) -> Values<'a> {
    Values::Int(rows.iter().map(|r| f(r)).collect())
}

fn opt_int<'a, R>(rows: &[&'a R], f: fn(&R) -> Option<i64>) -> Values<'a> {
    Values::OptInt(rows.iter().map(|r| f(r)).collect())
}

/// A transaction's columns: all of them for an insert; the key and what a write may change
/// for an update.
fn tx_columns<'a>(rows: &[&'a TxRow], all: bool) -> Vec<Column<'a>> {
    let mut columns = vec![
        ("gid", text(rows, |r| &r.gid)),
        ("status", text(rows, |r| &r.status)),
        ("updated_at", int(rows, |r| r.updated_at)),
        ("finished_at", opt_int(rows, |r| r.finished_at)),
        ("reason", opt_text(rows, |r| &r.reason)),
        ("attempts", int(rows, |r| r.attempts)),
        ("next_retry_at", opt_int(rows, |r| r.next_retry_at)),
        ("last_error", opt_text(rows, |r| &r.last_error)),
        ("due_at", int(rows, |r| r.due_at)),
        ("lease_owner", opt_text(rows, |r| &r.lease_owner)),
    ];
    if all {
        columns.extend([
            ("created_at", int(rows, |r| r.created_at)),
            ("expires_at", int(rows, |r| r.expires_at)),
            ("metadata", text(rows, |r| &r.metadata)),
            ("protocol", text(rows, |r| &r.protocol)),
            ("options", opt_text(rows, |r| &r.options)),
        ]);
    }
    columns
}

/// A branch's columns, as [`tx_columns`].
fn branch_columns<'a>(rows: &[&'a BranchRow], all: bool) -> Vec<Column<'a>> {
    let mut columns = vec![
        ("gid", text(rows, |r| &r.gid)),
        ("branch_id", text(rows, |r| &r.branch_id)),
        ("status", text(rows, |r| &r.status)),
        ("try_outcome", opt_text(rows, |r| &r.try_outcome)),
        ("response", opt_text(rows, |r| &r.response)),
        ("attempts", int(rows, |r| r.attempts)),
        ("last_error", opt_text(rows, |r| &r.last_error)),
        ("updated_at", int(rows, |r| r.updated_at)),
    ];
    if all {
        columns.extend([
            ("resource", text(rows, |r| &r.resource)),
            ("payload", text(rows, |r| &r.payload)),
            ("created_at", int(rows, |r| r.created_at)),
            ("confirm_url", opt_text(rows, |r| &r.confirm_url)),
            ("cancel_url", opt_text(rows, |r| &r.cancel_url)),
        ]);
    }
    columns
}

impl Values<'_> {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self {
            Values::Text(v) => out.push_bind_param::<Array<Text>, _>(v)?,
            Values::OptText(v) => out.push_bind_param::<Array<Nullable<Text>>, _>(v)?,
            Values::Int(v) => out.push_bind_param::<Array<BigInt>, _>(v)?,
            Values::OptInt(v) => out.push_bind_param::<Array<Nullable<BigInt>>, _>(v)?,
        }
        out.push_sql("::");
        out.push_sql(self.array_type());
        Ok(())
    }
}

impl Part<'_> {
    /// `name AS (INSERT … | UPDATE …)`; the text depends only on the part, never on the rows.
    fn walk_ast<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        let names = names.join(", ");
        out.push_sql(&format!("{} AS (", self.name));
        match self.action {
            Action::Insert => {
                out.push_sql(&format!(
                    "INSERT INTO {} ({names}) SELECT * FROM unnest(",
                    self.table
                ));
                self.push_arrays(out)?;
                out.push_sql(") ON CONFLICT DO NOTHING RETURNING 1)");
            }
            Action::Update { key } => {
                let set: Vec<String> = self
                    .columns
                    .iter()
                    .map(|(name, _)| *name)
                    .filter(|name| !key.contains(name))
                    .map(|name| format!("{name} = u.{name}"))
                    .collect();
                out.push_sql(&format!(
                    "UPDATE {} AS t SET {} FROM unnest(",
                    self.table,
                    set.join(", ")
                ));
                self.push_arrays(out)?;
                let matches: Vec<String> = key.iter().map(|k| format!("t.{k} = u.{k}")).collect();
                out.push_sql(&format!(") AS u({names}) WHERE {})", matches.join(" AND ")));
            }
        }
        Ok(())
    }

    fn push_arrays<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for (i, (_, values)) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            values.push(out)?;
        }
        Ok(())
    }
}

impl QueryFragment<Pg> for StoreChanges<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            part.walk_ast(&mut out)?;
        }
        out.push_sql(" SELECT (SELECT count(*) FROM new_txs), (SELECT count(*) FROM new_branches)");
        Ok(())
    }
}

/// The text depends on nothing but the type, so the prepared statement may be cached by type.
pub struct StoreChangesId;

impl QueryId for StoreChanges<'_> {
    type QueryId = StoreChangesId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for StoreChanges<'_> {
    type SqlType = (BigInt, BigInt);
}

impl RunQueryDsl<PgConnection> for StoreChanges<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(c: &Changes<'_>) -> String {
        diesel::debug_query::<Pg, _>(&StoreChanges::new(c)).to_string()
    }

    #[test]
    fn the_text_numbers_every_array_once_and_never_depends_on_the_rows() {
        let empty = Changes::default();
        let text = text_of(&empty);
        let sql = text.split(" -- binds:").next().unwrap();
        assert!(sql.contains("$46::int8[]"), "{sql}");
        assert!(!sql.contains("$47"), "{sql}");
        assert!(sql.contains("UPDATE branches AS t SET status = u.status"));
        assert!(sql.contains("WHERE t.gid = u.gid AND t.branch_id = u.branch_id"));

        let tx =
            crate::coordinator::unit::tests::tx("g1", crate::coordinator::model::TxStatus::Trying);
        let with_rows = Changes {
            new_txs: vec![&tx],
            changed_txs: vec![&tx, &tx],
            ..Changes::default()
        };
        assert_eq!(text_of(&with_rows).split(" -- binds:").next().unwrap(), sql);
    }
}
