//! The stock service's Redis side: a hash `<ns>:stock:<key>` per key with `available`,
//! `locked`, `consumed`, changed only by atomic Lua scripts that also check and write the
//! branch's barrier keys. Redis is a cache that must agree with the database.

use redis::aio::ConnectionManager;

use super::model::{Counters, Item};
use crate::resource::Op;
use crate::resource::barrier::{self, Outcome};

/// The business body of the TCC script (after the barrier prelude). `KEYS[4]` is the branch's
/// reservation record (a hash: stock key → amount its Try reserved in Redis), `KEYS[5..]` the
/// stock hashes of the payload's items; `ARGV[3..]` their amounts, then their key names.
/// Returns `{'missing', i, {}}` before touching anything when a hash is absent (Redis lost it:
/// the caller reloads it from the database and runs again), `{'insufficient', i, {}}` when a
/// Try cannot be met, else `{outcome, 0, moved}` with the amount moved per item.
/// Confirm and Cancel move what the record says the Try reserved, never what their own payload
/// claims.
const TCC_BODY: &str = r#"
local RES = KEYS[4]
local n = #KEYS - 4
for i = 1, n do
  if redis.call('EXISTS', KEYS[4 + i]) == 0 then return {'missing', i, {}} end
end
local outcome = barrier_check()
if outcome ~= 'proceed' then
  barrier_mark(outcome)
  return {outcome, 0, {}}
end
local moved = {}
if OP == 'try' then
  for i = 1, n do
    local have = tonumber(redis.call('HGET', KEYS[4 + i], 'available') or '0')
    if have < tonumber(ARGV[2 + i]) then return {'insufficient', i, {}} end
  end
  for i = 1, n do
    local a = tonumber(ARGV[2 + i])
    redis.call('HINCRBY', KEYS[4 + i], 'available', -a)
    redis.call('HINCRBY', KEYS[4 + i], 'locked', a)
    redis.call('HSET', RES, ARGV[2 + n + i], a)
    moved[i] = a
  end
  if n > 0 then redis.call('EXPIRE', RES, BARRIER_TTL) end
else
  local to = 'available'
  if OP == 'confirm' then to = 'consumed' end
  for i = 1, n do
    local a = tonumber(redis.call('HGET', RES, ARGV[2 + n + i]) or '0')
    local have = tonumber(redis.call('HGET', KEYS[4 + i], 'locked') or '0')
    if a > 0 and have >= a then
      redis.call('HINCRBY', KEYS[4 + i], 'locked', -a)
      redis.call('HINCRBY', KEYS[4 + i], to, a)
    else
      a = 0
    end
    moved[i] = a
  end
end
barrier_mark('proceed')
return {'proceed', 0, moved}
"#;

/// Rolls a Try's Redis reservation back when the database refused it, once: the Try key
/// becomes `undone`, which later Cancels and Confirms read as "nothing reserved here".
const UNDO_TRY_BODY: &str = r#"
if redis.call('GET', BARRIER_TRY) ~= 'try' then return 0 end
local n = #KEYS - 4
for i = 1, n do
  local a = tonumber(redis.call('HGET', KEYS[4], ARGV[2 + n + i]) or '0')
  if a > 0 then
    redis.call('HINCRBY', KEYS[4 + i], 'locked', -a)
    redis.call('HINCRBY', KEYS[4 + i], 'available', a)
  end
end
redis.call('DEL', KEYS[4])
redis.call('SET', BARRIER_TRY, 'undone', 'EX', BARRIER_TTL)
return 1
"#;

/// Moves amounts between two fields of stock hashes that exist and hold enough: how the
/// database's movement is mirrored when Redis had lost the reservation it concerns.
/// `ARGV[1]` from, `ARGV[2]` to, `ARGV[3..]` the amounts for `KEYS`.
const MIRROR_SCRIPT: &str = r#"
local done = 0
for i = 1, #KEYS do
  local a = tonumber(ARGV[2 + i])
  local have = tonumber(redis.call('HGET', KEYS[i], ARGV[1]) or '-1')
  if have >= a then
    redis.call('HINCRBY', KEYS[i], ARGV[1], -a)
    redis.call('HINCRBY', KEYS[i], ARGV[2], a)
    done = done + 1
  end
end
return done
"#;

/// Loads a hash only if it is absent: two loaders racing cannot overwrite each other's (or a
/// script's) newer state.
const LOAD_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'available', ARGV[1], 'locked', ARGV[2], 'consumed', ARGV[3])
return 1
"#;

/// What the TCC script said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The barrier's verdict and, per item, the amount this call moved in Redis.
    Done(Outcome, Vec<i64>),
    /// Index into the items of a hash Redis does not have.
    Missing(usize),
    /// Index into the items of the key a Try cannot reserve.
    Insufficient(usize),
}

pub struct Cache {
    conn: ConnectionManager,
    namespace: String,
    ttl_secs: u64,
    tcc: redis::Script,
    undo_try: redis::Script,
    load: redis::Script,
    mirror: redis::Script,
}

impl Cache {
    pub async fn connect(url: &str, namespace: &str, ttl_secs: u64) -> Result<Cache, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(3)))
            .set_response_timeout(Some(std::time::Duration::from_secs(5)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
        Ok(Cache {
            conn,
            namespace: namespace.to_string(),
            ttl_secs,
            tcc: barrier::redis::script(TCC_BODY),
            undo_try: barrier::redis::script(UNDO_TRY_BODY),
            load: redis::Script::new(LOAD_SCRIPT),
            mirror: redis::Script::new(MIRROR_SCRIPT),
        })
    }

    pub fn hash_key(&self, key: &str) -> String {
        format!("{}:stock:{key}", self.namespace)
    }

    fn branch_invocation<'a>(
        &self,
        script: &'a redis::Script,
        op: Op,
        gid: &str,
        branch_id: &str,
        items: &[Item],
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in barrier::redis::keys(&self.namespace, gid, branch_id) {
            inv.key(k);
        }
        inv.key(format!("{}:reservation:{gid}:{branch_id}", self.namespace));
        inv.arg(op.as_str()).arg(self.ttl_secs);
        for it in items {
            inv.key(self.hash_key(&it.key));
            inv.arg(it.amount);
        }
        for it in items {
            inv.arg(&it.key);
        }
        inv
    }

    /// Runs the TCC script for one call.
    pub async fn apply(
        &self,
        op: Op,
        gid: &str,
        branch_id: &str,
        items: &[Item],
    ) -> redis::RedisResult<CacheOutcome> {
        let mut conn = self.conn.clone();
        let (tag, i, moved): (String, i64, Vec<i64>) = self
            .branch_invocation(&self.tcc, op, gid, branch_id, items)
            .invoke_async(&mut conn)
            .await?;
        // Lua indexes from 1.
        let index = (i.max(1) - 1) as usize;
        Ok(match tag.as_str() {
            "missing" => CacheOutcome::Missing(index),
            "insufficient" => CacheOutcome::Insufficient(index),
            other => {
                let outcome = Outcome::parse(other).ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "unexpected script reply",
                        other.to_string(),
                    ))
                })?;
                let mut moved = moved;
                moved.resize(items.len(), 0);
                CacheOutcome::Done(outcome, moved)
            }
        })
    }

    /// Moves `amount` from one counter to another in each hash (see `MIRROR_SCRIPT`); returns
    /// how many hashes it changed.
    pub async fn mirror(
        &self,
        from: &str,
        to: &str,
        moves: &[(String, i64)],
    ) -> redis::RedisResult<usize> {
        let mut conn = self.conn.clone();
        let mut inv = self.mirror.prepare_invoke();
        inv.arg(from).arg(to);
        for (key, amount) in moves {
            inv.key(self.hash_key(key));
            inv.arg(*amount);
        }
        let done: i64 = inv.invoke_async(&mut conn).await?;
        Ok(done as usize)
    }

    /// Undoes this branch's Redis reservation (after the database refused the Try).
    pub async fn undo_try(
        &self,
        gid: &str,
        branch_id: &str,
        items: &[Item],
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .branch_invocation(&self.undo_try, Op::Try, gid, branch_id, items)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Loads a hash from database counters unless it exists; `true` if it loaded.
    pub async fn load_if_absent(&self, key: &str, c: Counters) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .load
            .key(self.hash_key(key))
            .arg(c.available)
            .arg(c.locked)
            .arg(c.consumed)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Overwrites a hash with database counters (repair, `PUT`).
    pub async fn write(&self, key: &str, c: Counters) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.hash_key(key))
            .hset_multiple(
                self.hash_key(key),
                &[
                    ("available", c.available),
                    ("locked", c.locked),
                    ("consumed", c.consumed),
                ],
            )
            .query_async::<()>(&mut conn)
            .await
    }

    /// Reads a hash; `None` if Redis does not have it (or it is not a whole, numeric hash).
    pub async fn read(&self, key: &str) -> redis::RedisResult<Option<Counters>> {
        let mut conn = self.conn.clone();
        let (a, l, c): (Option<String>, Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.hash_key(key))
            .arg("available")
            .arg("locked")
            .arg("consumed")
            .query_async(&mut conn)
            .await?;
        let num = |v: Option<String>| v.and_then(|s| s.parse::<i64>().ok());
        Ok(match (num(a), num(l), num(c)) {
            (Some(available), Some(locked), Some(consumed)) => Some(Counters {
                available,
                locked,
                consumed,
            }),
            _ => None,
        })
    }

    /// Does the hash exist at all (whole or not)?
    pub async fn exists(&self, key: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(self.hash_key(key))
            .query_async(&mut conn)
            .await
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }
}
