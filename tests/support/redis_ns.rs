//! A unique Redis key namespace per test (`t_<uuid>`), for the tests of `tccd stock`.
//! The keys under it are deleted when the guard drops.

use std::time::Duration;

pub const REDIS_URL_VAR: &str = "TCCD_TEST_REDIS_URL";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Redis URL (`TCCD_TEST_REDIS_URL` or the default).
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_VAR).unwrap_or_else(|_| DEFAULT_REDIS_URL.to_string())
}

pub struct RedisNamespace {
    pub url: String,
    /// Pass it as `--namespace`; keys are `<namespace>:...`.
    pub namespace: String,
}

impl RedisNamespace {
    /// A fresh namespace; panics (never skips) if Redis does not answer.
    pub fn new() -> RedisNamespace {
        let url = redis_url();
        let mut conn = connect(&url).unwrap_or_else(|e| {
            panic!(
                "cannot reach Redis at {url}: {e}. The stock tests need a redis-server; \
                 point {REDIS_URL_VAR} at it (default {DEFAULT_REDIS_URL})"
            )
        });
        let pong: String = redis::cmd("PING").query(&mut conn).unwrap_or_else(|e| {
            panic!("Redis at {url} ({REDIS_URL_VAR}) does not answer PING: {e}")
        });
        assert_eq!(pong, "PONG");
        RedisNamespace {
            url,
            namespace: format!("t_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The keys currently under this namespace.
    pub fn keys(&self) -> Vec<String> {
        keys_matching(&self.url, &format!("{}:*", self.namespace))
    }
}

/// The keys matching a SCAN `pattern` in the Redis at `url`.
pub fn keys_matching(url: &str, pattern: &str) -> Vec<String> {
    let mut conn = connect(url).unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e}"));
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

impl Default for RedisNamespace {
    fn default() -> Self {
        Self::new()
    }
}

fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        let Ok(mut conn) = connect(&self.url) else {
            return;
        };
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, batch)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.namespace))
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !batch.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&batch).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}
