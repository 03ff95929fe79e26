//! What the benchmark reads besides its own clocks: `pg_stat_database` commit counters of the
//! three databases, and the resident size of the child processes (`/proc/PID/status`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, sql_query};

/// Counters of one database from `pg_stat_database`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbCounts {
    /// `xact_commit`: committed transactions, read-only ones included.
    pub commits: i64,
    /// `tup_inserted + tup_updated + tup_deleted`: rows written.
    pub rows: i64,
}

impl DbCounts {
    fn minus(&self, earlier: &DbCounts) -> DbCounts {
        DbCounts {
            commits: self.commits - earlier.commits,
            rows: self.rows - earlier.rows,
        }
    }

    fn plus(&self, other: &DbCounts) -> DbCounts {
        DbCounts {
            commits: self.commits + other.commits,
            rows: self.rows + other.rows,
        }
    }
}

/// The counters of the coordinator's, inventory's and wallet's databases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgSnapshot {
    pub coordinator: DbCounts,
    pub inventory: DbCounts,
    pub wallet: DbCounts,
}

impl PgSnapshot {
    pub fn plus(&self, other: &PgSnapshot) -> PgSnapshot {
        PgSnapshot {
            coordinator: self.coordinator.plus(&other.coordinator),
            inventory: self.inventory.plus(&other.inventory),
            wallet: self.wallet.plus(&other.wallet),
        }
    }

    pub fn minus(&self, earlier: &PgSnapshot) -> PgSnapshot {
        PgSnapshot {
            coordinator: self.coordinator.minus(&earlier.coordinator),
            inventory: self.inventory.minus(&earlier.inventory),
            wallet: self.wallet.minus(&earlier.wallet),
        }
    }

    /// Both stock databases together.
    pub fn stock(&self) -> DbCounts {
        self.inventory.plus(&self.wallet)
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    datname: String,
    #[diesel(sql_type = BigInt)]
    xact_commit: i64,
    #[diesel(sql_type = BigInt)]
    rows_written: i64,
}

/// A connection to the admin database (not one of the measured ones, so reading the counters
/// does not move them).
#[derive(Clone)]
pub struct PgStats {
    conn: Arc<Mutex<PgConnection>>,
    /// coordinator, inventory, wallet.
    names: Arc<Vec<String>>,
}

impl PgStats {
    pub async fn connect(admin_url: &str, names: Vec<String>) -> Result<PgStats, String> {
        let url = admin_url.to_string();
        let conn = tokio::task::spawn_blocking(move || PgConnection::establish(&url))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot connect to Postgres for pg_stat_database: {e}"))?;
        Ok(PgStats {
            conn: Arc::new(Mutex::new(conn)),
            names: Arc::new(names),
        })
    }

    /// The counters now (as far as the backends have reported them; they flush at least once
    /// a second under load, so a snapshot lags by up to that, equally at both ends).
    pub async fn snapshot(&self) -> Result<PgSnapshot, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = this.conn.lock().unwrap_or_else(|e| e.into_inner());
            // The names are ours ([a-z_]); quoting them inline is safe.
            let list = this
                .names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let rows: Vec<Row> = sql_query(format!(
                "SELECT datname::text AS datname, xact_commit, \
                 tup_inserted + tup_updated + tup_deleted AS rows_written \
                 FROM pg_stat_database WHERE datname IN ({list})"
            ))
            .load(&mut *conn)
            .map_err(|e| format!("reading pg_stat_database: {e}"))?;
            let get = |i: usize| {
                rows.iter()
                    .find(|r| r.datname == this.names[i])
                    .map(|r| DbCounts {
                        commits: r.xact_commit,
                        rows: r.rows_written,
                    })
                    .ok_or_else(|| format!("pg_stat_database has no row for {}", this.names[i]))
            };
            Ok(PgSnapshot {
                coordinator: get(0)?,
                inventory: get(1)?,
                wallet: get(2)?,
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Resident size of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    /// VmHWM: the peak so far.
    pub peak_kib: u64,
    /// VmRSS: now.
    pub now_kib: u64,
}

/// VmHWM and VmRSS of a process, from `/proc/PID/status`.
pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<Rss> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
    };
    Some(Rss {
        peak_kib: field("VmHWM:")?,
        now_kib: field("VmRSS:")?,
    })
}

/// The resident sizes of named processes (those that can be read).
pub fn rss_of(pids: &[(String, u32)]) -> BTreeMap<String, Rss> {
    pids.iter()
        .filter_map(|(name, pid)| rss(*pid).map(|r| (name.clone(), r)))
        .collect()
}

/// The `p`-th percentile (0..=100) of sorted latencies in µs, in ms (nearest rank).
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[i]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v, 100.0), 100.0);
        assert_eq!(percentile_ms(&[2500], 95.0), 2.5);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn proc_status_is_read() {
        let s = "Name:\ttccd\nVmPeak:\t  999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            parse_status(s),
            Some(Rss {
                peak_kib: 20480,
                now_kib: 10240
            })
        );
        assert!(rss(std::process::id()).is_some());
    }
}
