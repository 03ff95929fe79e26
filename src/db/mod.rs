//! Database access shared by the coordinator and the stock service: the backend chosen from the
//! URL's scheme, an r2d2 pool per backend, embedded migrations, and the rule that blocking diesel
//! work runs off the async workers with the connection taken inside the blocking closure.

pub mod schema;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool as R2Pool};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Serialises concurrent start-ups of several processes on one Postgres database.
const MIGRATION_LOCK_KEY: i64 = 0x7463_6364; // "tccd"

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy: the caller may retry (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(DieselError),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => StoreError::Unavailable(e.to_string()),
            // SQLite reports lock contention past busy_timeout as a plain database error.
            DieselError::DatabaseError(_, info)
                if info.message().contains("database is locked") =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Query(e),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A file path (`sqlite://path`; `sqlite:///abs/path` for an absolute one).
    Sqlite(String),
    Postgres(String),
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("a sqlite:// URL needs a file path, e.g. sqlite://tccd.db".into());
            }
            Ok(Backend::Sqlite(path.to_string()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres(url.to_string()))
        } else {
            Err(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
            ))
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// How the commits of a pool's connections treat the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    /// A commit returns once it is on disk.
    Durable,
    /// A commit returns before its WAL record is flushed, for writes that recovery can redo or
    /// rebuild (Postgres `synchronous_commit = off`; SQLite `synchronous = NORMAL` in WAL
    /// mode). A crash may lose the last such commits, never reorder them: the next durable
    /// commit flushes the log up to itself, these included.
    Relaxed,
}

/// Settings every connection of a pool gets when it is opened.
#[derive(Debug, Clone, Copy)]
struct Session {
    commits: Commits,
    /// Every statement finds its rows by key: never scan a table whole (Postgres). The
    /// planner's cost model (random reads from disk) prefers a scan to a few dozen key lookups
    /// in a table of some hundred pages, and keeps a plan it cached while the table was empty.
    /// JIT is off too: the penalty that rules scans out would otherwise make every plan look
    /// expensive enough to compile, which costs far more than these statements run.
    key_lookups: bool,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Session {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // WAL lets readers run beside the writer; synchronous=FULL makes every commit durable;
        // the busy timeout makes writers queue instead of failing at once.
        let synchronous = match self.commits {
            Commits::Durable => "FULL",
            Commits::Relaxed => "NORMAL",
        };
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for Session {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        let mut sql = String::new();
        if self.commits == Commits::Relaxed {
            sql.push_str("SET synchronous_commit = off;");
        }
        if self.key_lookups {
            sql.push_str("SET enable_seqscan = off; SET jit = off;");
        }
        if sql.is_empty() {
            return Ok(());
        }
        conn.batch_execute(&sql)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Connections are not pinged on checkout (a round trip per query): a broken one fails its
/// query, the caller answers 503, and r2d2 discards it.
#[derive(Clone)]
pub enum Pool {
    Sqlite(R2Pool<ConnectionManager<SqliteConnection>>),
    Postgres(R2Pool<ConnectionManager<PgConnection>>),
}

impl Pool {
    /// Opens the pool and runs the embedded migrations of the URL's backend.
    pub fn connect(url: &str, max_size: u32) -> Result<Pool, String> {
        let session = Session {
            commits: Commits::Durable,
            key_lookups: false,
        };
        let pool = Pool::open(url, max_size, session)?;
        pool.migrate()?;
        Ok(pool)
    }

    /// A pool of one connection for a writer that reads and writes many rows by key in each
    /// statement (`WHERE key = ANY(…)`); migrations must have run.
    pub fn single_writer(url: &str, commits: Commits) -> Result<Pool, String> {
        let session = Session {
            commits,
            key_lookups: true,
        };
        Pool::open(url, 1, session)
    }

    fn open(url: &str, max_size: u32, session: Session) -> Result<Pool, String> {
        let backend = Backend::from_url(url)?;
        Ok(match &backend {
            Backend::Sqlite(path) => {
                if let Some(dir) = std::path::Path::new(path).parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let pool = R2Pool::builder()
                    .max_size(max_size)
                    .min_idle(Some(1))
                    .test_on_check_out(false)
                    .connection_timeout(Duration::from_secs(10))
                    .connection_customizer(Box::new(session))
                    .build(ConnectionManager::<SqliteConnection>::new(path.as_str()))
                    .map_err(|e| format!("cannot open SQLite database {path}: {e}"))?;
                Pool::Sqlite(pool)
            }
            Backend::Postgres(url) => {
                let pool = R2Pool::builder()
                    .max_size(max_size)
                    .min_idle(Some(1))
                    .test_on_check_out(false)
                    .connection_timeout(Duration::from_secs(5))
                    .connection_customizer(Box::new(session))
                    .build(ConnectionManager::<PgConnection>::new(url.as_str()))
                    .map_err(|e| format!("cannot connect to Postgres: {e}"))?;
                Pool::Postgres(pool)
            }
        })
    }

    fn migrate(&self) -> Result<(), String> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| format!("migrations failed: {e}");
        match self {
            Pool::Sqlite(p) => {
                let mut conn = p.get().map_err(|e| e.to_string())?;
                conn.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map_err(err)?;
            }
            Pool::Postgres(p) => {
                let mut conn = p.get().map_err(|e| e.to_string())?;
                let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})");
                conn.batch_execute(&lock).map_err(|e| e.to_string())?;
                let result = conn.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ());
                let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})");
                conn.batch_execute(&unlock).map_err(|e| e.to_string())?;
                result.map_err(err)?;
            }
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Runs blocking database work on the blocking thread pool. The closure takes its pooled
    /// connection itself, so no connection is ever held across an `.await`.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Pool) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || f(&pool))
            .await
            .map_err(|e| StoreError::Unavailable(format!("database task failed: {e}")))?
    }

    /// `SELECT 1`: does the database answer?
    pub fn ping(&self) -> Result<(), StoreError> {
        crate::with_conn!(self, |conn| {
            conn.batch_execute("SELECT 1")?;
            Ok(())
        })
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend `$pool` is.
/// The body is compiled once per backend, so it may use any diesel query both support.
#[macro_export]
macro_rules! with_conn {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite(p) => {
                let mut pooled = p.get().map_err($crate::db::StoreError::from)?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::db::Pool::Postgres(p) => {
                let mut pooled = p.get().map_err($crate::db::StoreError::from)?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}

/// What differs between backends inside a local transaction.
pub trait DbConn: Connection + Sized {
    /// A read-write transaction that takes the write lock up front on SQLite (`BEGIN
    /// IMMEDIATE`), so two writers never deadlock upgrading a read lock.
    fn write_txn<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<DieselError>;
}

impl DbConn for SqliteConnection {
    fn write_txn<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<DieselError>,
    {
        self.immediate_transaction(f)
    }
}

impl DbConn for PgConnection {
    fn write_txn<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<DieselError>,
    {
        self.transaction(f)
    }
}
