//! `--prefill N`: N finished (committed) transactions with one confirmed branch each, written
//! straight into the coordinator's database in bulk (`generate_series` on Postgres, a recursive
//! CTE on SQLite), so that the run shows whether a big history slows the coordinator down.
//! Blocking; runs while the coordinator is up (its migrations have made the tables).

use std::path::Path;

use diesel::{Connection, PgConnection, SqliteConnection, connection::SimpleConnection};

/// Rows are this much older than the run (and than each other by 1 ms), so that they sort
/// behind every real transaction.
const AGE_MS: i64 = 2 * 86_400_000;

/// The two INSERT ... SELECT statements (transactions, then branches) over the row numbers
/// 1..=n, for Postgres or SQLite.
fn statements(n: u64, now_ms: i64, postgres: bool) -> (String, String) {
    let base = now_ms - AGE_MS - n as i64;
    let (src, gid) = if postgres {
        (
            format!("generate_series(1, {n}) AS s(i)"),
            "'prefill-' || lpad(i::text, 9, '0')".to_string(),
        )
    } else {
        (
            "seq".to_string(),
            "'prefill-' || printf('%09d', i)".to_string(),
        )
    };
    let with = if postgres {
        String::new()
    } else {
        format!(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) "
        )
    };
    let transactions = format!(
        "{with}INSERT INTO transactions (gid, status, created_at, updated_at, expires_at, \
         finished_at, reason, metadata, attempts, next_retry_at, last_error, due_at, lease_owner, \
         protocol, options) \
         SELECT {gid}, 'committed', {base} + i, {base} + i + 5, {base} + i + 30000, \
         {base} + i + 5, NULL, '{{}}', 0, NULL, NULL, {base} + i + 5, NULL, 'native', NULL \
         FROM {src}"
    );
    let branches = format!(
        "{with}INSERT INTO branches (gid, branch_id, resource, status, payload, try_outcome, \
         response, attempts, last_error, created_at, updated_at) \
         SELECT {gid}, '01', 'inventory', 'confirmed', \
         '{{\"items\":[{{\"key\":\"sku-0000\",\"amount\":1}}]}}', 'done', NULL, 1, NULL, \
         {base} + i, {base} + i + 5 \
         FROM {src}"
    );
    (transactions, branches)
}

/// Prefills a Postgres coordinator database, then VACUUM ANALYZE (what autovacuum would soon do
/// by itself, done now so that it does not run inside the measured window).
pub fn postgres(url: &str, n: u64) -> Result<(), String> {
    let mut conn = PgConnection::establish(url)
        .map_err(|e| format!("cannot connect to the coordinator's database: {e}"))?;
    let (transactions, branches) = statements(n, crate::time::now_ms(), true);
    conn.transaction(|c| {
        c.batch_execute(&transactions)?;
        c.batch_execute(&branches)
    })
    .map_err(|e| format!("prefill: {e}"))?;
    // VACUUM cannot share a statement string (an implicit transaction) with anything else.
    for table in ["transactions", "branches"] {
        conn.batch_execute(&format!("VACUUM ANALYZE {table}"))
            .map_err(|e| format!("prefill: VACUUM ANALYZE {table}: {e}"))?;
    }
    Ok(())
}

/// Prefills a SQLite coordinator database in one write transaction.
pub fn sqlite(path: &Path, n: u64) -> Result<(), String> {
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let (transactions, branches) = statements(n, crate::time::now_ms(), false);
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = 60000; BEGIN IMMEDIATE; {transactions}; {branches}; COMMIT;"
    ))
    .map_err(|e| format!("prefill: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl;
    use diesel::sql_types::BigInt;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    #[test]
    fn sqlite_prefill_writes_finished_transactions() {
        let dir = std::env::temp_dir().join(format!("tccd-prefill-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("coordinator.db");
        let url = format!("sqlite://{}", path.display());
        drop(crate::db::Pool::connect(&url, 1).unwrap());
        sqlite(&path, 2500).unwrap();
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        let count = |conn: &mut SqliteConnection, sql: &str| {
            diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
        };
        assert_eq!(
            count(
                &mut conn,
                "SELECT COUNT(*) AS n FROM transactions WHERE status = 'committed'"
            ),
            2500
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT COUNT(*) AS n FROM branches b JOIN transactions t ON t.gid = b.gid"
            ),
            2500
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
