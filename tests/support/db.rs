//! One scratch database per test: a SQLite file in a fresh temp dir, or a Postgres database
//! `tccd_t_<uuid>` created through the admin URL in `TCCD_TEST_PG_URL` and dropped afterwards.

use std::path::PathBuf;

use diesel::{Connection, PgConnection, RunQueryDsl, sql_query};

pub const PG_URL_VAR: &str = "TCCD_TEST_PG_URL";
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Creates a fresh, empty database for one test.
    pub async fn create_db(self) -> TestDb {
        match tokio::task::spawn_blocking(move || TestDb::create(self)).await {
            Ok(db) => db,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

enum Kind {
    Sqlite { dir: PathBuf },
    Postgres { admin_url: String, name: String },
}

/// A scratch database, removed when dropped.
pub struct TestDb {
    /// The URL to hand to the process under test (`--database-url`).
    pub url: String,
    pub backend: Backend,
    kind: Kind,
}

/// The Postgres admin URL (`TCCD_TEST_PG_URL` or the default).
pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_VAR).unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// `url` with its database name replaced by `db` (query string kept).
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

fn pg_admin_connection(admin_url: &str) -> PgConnection {
    PgConnection::establish(admin_url).unwrap_or_else(|e| {
        panic!(
            "cannot connect to Postgres at {admin_url}: {e}. The Postgres tests need a server; \
             point {PG_URL_VAR} at an admin URL (default {DEFAULT_PG_URL})"
        )
    })
}

impl TestDb {
    /// The Postgres database name (None for SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Postgres { name, .. } => Some(name),
            Kind::Sqlite { .. } => None,
        }
    }

    /// Runs a statement through the Postgres admin connection (for example to cut this
    /// database off with `ALTER DATABASE ... ALLOW_CONNECTIONS false`). Blocking.
    pub fn pg_admin_execute(&self, sql: &str) {
        let Kind::Postgres { admin_url, .. } = &self.kind else {
            panic!("pg_admin_execute on a SQLite test database");
        };
        let mut conn = pg_admin_connection(admin_url);
        sql_query(sql)
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn create(backend: Backend) -> TestDb {
        let id = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join("tccd-tests").join(&id);
                std::fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
                let path = dir.join("coord.db");
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    backend,
                    kind: Kind::Sqlite { dir },
                }
            }
            Backend::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("tccd_t_{id}");
                let mut conn = pg_admin_connection(&admin_url);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn) {
                        Ok(_) => break,
                        // Concurrent CREATE DATABASE from the same template can collide.
                        Err(e) if attempt < 10 && e.to_string().contains("accessed by other") => {
                            std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
                        }
                        Err(e) => panic!("CREATE DATABASE {name} on {admin_url} failed: {e}"),
                    }
                }
                TestDb {
                    url: pg_url_with_db(&admin_url, &name),
                    backend,
                    kind: Kind::Postgres { admin_url, name },
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Kind::Postgres { admin_url, name } => {
                if let Ok(mut conn) = PgConnection::establish(admin_url) {
                    let _ = sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn);
                }
            }
        }
    }
}
