//! The demo's stores: a fresh database per process (SQLite files under `--dir`, or Postgres
//! databases `<prefix>_coordinator|inventory|wallet` made through the admin URL), and the two
//! Redis namespaces `<prefix>_inventory|wallet`, emptied before and after (only their own keys:
//! never a FLUSHDB).

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl, sql_query};

use super::redact;
use super::report::Out;

/// The processes that own a database.
pub const DATABASES: [&str; 3] = ["coordinator", "inventory", "wallet"];

/// `url` with its database name replaced by `db` (user, host, port and query kept).
pub fn pg_url_with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

fn admin(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| format!("cannot connect to Postgres at {url}: {e}"))
}

fn drop_db(conn: &mut PgConnection, name: &str) -> Result<(), String> {
    sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(conn)
        .map(|_| ())
        .map_err(|e| format!("DROP DATABASE {name}: {e}"))
}

/// Drops and creates each database; returns their URLs in the same order. Blocking.
pub fn pg_recreate(admin_url: &str, names: &[String]) -> Result<Vec<String>, String> {
    let mut conn = admin(admin_url)?;
    let mut urls = Vec::new();
    for name in names {
        drop_db(&mut conn, name)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut conn) {
                Ok(_) => break,
                // Another session creating a database from the same template at this moment.
                Err(e) if attempt < 20 && e.to_string().contains("accessed by other") => {
                    std::thread::sleep(Duration::from_millis(100 * attempt));
                }
                Err(e) => return Err(format!("CREATE DATABASE {name}: {e}")),
            }
        }
        urls.push(pg_url_with_db(admin_url, name));
    }
    Ok(urls)
}

/// Drops the databases (those that exist). Blocking.
pub fn pg_drop(admin_url: &str, names: &[String]) -> Result<(), String> {
    let mut conn = admin(admin_url)?;
    let mut errors = Vec::new();
    for name in names {
        if let Err(e) = drop_db(&mut conn, name) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The SQLite file of the process `db` (one of [`DATABASES`]) in `dir`.
pub fn sqlite_file(dir: &Path, db: &str) -> PathBuf {
    dir.join(format!("{db}.db"))
}

/// Removes the demo's SQLite files in `dir` (a re-run on the same directory starts afresh).
pub fn sqlite_remove(dir: &Path) -> Result<(), String> {
    for name in DATABASES {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = sqlite_file(dir, name).into_os_string();
            path.push(suffix);
            let path = PathBuf::from(path);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
            }
        }
    }
    Ok(())
}

async fn redis_conn(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot reach Redis at {url}: {e}")),
        Err(_) => Err(format!("cannot reach Redis at {url}: no answer within 5 s")),
    }
}

/// Deletes every key `<namespace>:*` (SCAN + DEL, never FLUSHDB); returns how many.
pub async fn redis_clear(url: &str, namespaces: &[String]) -> Result<usize, String> {
    let mut conn = redis_conn(url).await?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("Redis at {url} does not answer PING: {e}"))?;
    if pong != "PONG" {
        return Err(format!("Redis at {url} answered PING with {pong:?}"));
    }
    let mut deleted = 0;
    for ns in namespaces {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{ns}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("Redis SCAN: {e}"))?;
            if !keys.is_empty() {
                let n: usize = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("Redis DEL: {e}"))?;
                deleted += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(deleted)
}

/// Where the three processes keep their data: Postgres through an admin URL, or SQLite files.
pub enum Databases<'a> {
    Postgres {
        admin_url: &'a str,
        names: Vec<String>,
    },
    Sqlite {
        dir: &'a Path,
    },
}

/// Fresh stores for a run: the databases recreated (or the SQLite files removed) and the Redis
/// namespaces emptied, each reported on `out`. Returns the database URLs in [`DATABASES`] order.
pub async fn fresh(
    out: &Out,
    databases: Databases<'_>,
    redis_url: &str,
    namespaces: &[String],
) -> Result<Vec<String>, String> {
    let urls = match databases {
        Databases::Postgres { admin_url, names } => {
            let listed = names.join(", ");
            let admin = admin_url.to_string();
            let urls = tokio::task::spawn_blocking(move || pg_recreate(&admin, &names))
                .await
                .map_err(|e| e.to_string())??;
            out.line(format!(
                "  databases  Postgres {} (fresh: {listed})",
                redact(&pg_url_with_db(admin_url, ""))
            ));
            urls
        }
        Databases::Sqlite { dir } => {
            sqlite_remove(dir)?;
            out.line(format!("  databases  SQLite files in {}", dir.display()));
            DATABASES
                .iter()
                .map(|d| format!("sqlite://{}", sqlite_file(dir, d).display()))
                .collect()
        }
    };
    let stale = redis_clear(redis_url, namespaces).await?;
    out.line(format!(
        "  Redis      {} (namespaces {}{})",
        redact(redis_url),
        namespaces.join(", "),
        if stale > 0 {
            format!("; removed {stale} stale keys")
        } else {
            String::new()
        }
    ));
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            pg_url_with_db("postgres://postgres@127.0.0.1:5432/postgres", "demo_wallet"),
            "postgres://postgres@127.0.0.1:5432/demo_wallet"
        );
        assert_eq!(
            pg_url_with_db("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            pg_url_with_db("postgresql://h:1", "x"),
            "postgresql://h:1/x"
        );
    }
}
