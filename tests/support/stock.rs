//! Helpers for the black-box tests of `tccd stock` (API.md sections 2 and 3): start the real
//! service on a scratch database and a private Redis namespace, call its TCC endpoints the way
//! the coordinator does, read both stores (the SQL side through the API, the Redis side
//! directly), keep the test's own bookkeeping of what was PUT and reserved, and check the
//! section 3 invariants against it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::AsyncCommands;
use reqwest::Method;
use serde_json::{Value, json};

use super::db::{Backend, TestDb};
use super::process::{Process, blocking};
use super::redis_ns::RedisNamespace;

/// One stock counter triple, as in `GET /v1/stock/{key}` → `db` / `redis`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub available: i64,
    pub locked: i64,
    pub consumed: i64,
}

impl Counters {
    pub fn new(available: i64, locked: i64, consumed: i64) -> Counters {
        Counters {
            available,
            locked,
            consumed,
        }
    }

    pub fn total(&self) -> i64 {
        self.available + self.locked + self.consumed
    }

    /// Parses `{"available", "locked", "consumed"}` (all integers); `None` for anything else.
    pub fn from_json(v: &Value) -> Option<Counters> {
        Some(Counters {
            available: v.get("available")?.as_i64()?,
            locked: v.get("locked")?.as_i64()?,
            consumed: v.get("consumed")?.as_i64()?,
        })
    }
}

/// The test's own bookkeeping: what each key was given by `PUT`, which reservations are open,
/// what has been consumed. [`assert_invariants`] checks both stores against it.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// key → available + locked + consumed as of the last PUT.
    totals: BTreeMap<String, i64>,
    /// key → consumed by confirmed reservations.
    consumed: BTreeMap<String, i64>,
    /// (gid, branch_id) → the items its Try reserved, while open.
    open: BTreeMap<(String, String), Vec<(String, i64)>>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records `PUT /v1/stock/{key}` `{"available": n}` (which sets `available` only).
    pub fn put(&mut self, key: &str, available: i64) {
        let total = available + self.locked(key) + self.consumed(key);
        self.totals.insert(key.to_string(), total);
    }

    /// Records a Try that reserved `items`.
    pub fn tried(&mut self, gid: &str, branch: &str, items: &[(&str, i64)]) {
        let prev = self.open.insert(
            (gid.to_string(), branch.to_string()),
            items.iter().map(|(k, a)| (k.to_string(), *a)).collect(),
        );
        assert!(
            prev.is_none(),
            "ledger: {gid}/{branch} already has an open reservation"
        );
    }

    /// Records the Confirm of an open reservation.
    pub fn confirmed(&mut self, gid: &str, branch: &str) {
        let items = self
            .open
            .remove(&(gid.to_string(), branch.to_string()))
            .unwrap_or_else(|| panic!("ledger: no open reservation {gid}/{branch}"));
        for (key, amount) in items {
            *self.consumed.entry(key).or_default() += amount;
        }
    }

    /// Records the Cancel of an open reservation.
    pub fn cancelled(&mut self, gid: &str, branch: &str) {
        self.open
            .remove(&(gid.to_string(), branch.to_string()))
            .unwrap_or_else(|| panic!("ledger: no open reservation {gid}/{branch}"));
    }

    pub fn is_open(&self, gid: &str, branch: &str) -> bool {
        self.open
            .contains_key(&(gid.to_string(), branch.to_string()))
    }

    /// Sum of the open reservations on `key`.
    pub fn locked(&self, key: &str) -> i64 {
        self.open
            .values()
            .flatten()
            .filter(|(k, _)| k == key)
            .map(|(_, a)| a)
            .sum()
    }

    pub fn consumed(&self, key: &str) -> i64 {
        self.consumed.get(key).copied().unwrap_or(0)
    }

    pub fn total(&self, key: &str) -> i64 {
        self.totals.get(key).copied().unwrap_or(0)
    }

    /// What both stores must read for `key` when nothing is in flight.
    pub fn expected(&self, key: &str) -> Counters {
        let locked = self.locked(key);
        let consumed = self.consumed(key);
        Counters::new(self.total(key) - locked - consumed, locked, consumed)
    }

    /// Every key that was PUT.
    pub fn keys(&self) -> Vec<String> {
        self.totals.keys().cloned().collect()
    }
}

/// Items of a stock payload: `{"items": [{"key", "amount"}, ...]}`.
pub fn items(list: &[(&str, i64)]) -> Value {
    json!({
        "items": list
            .iter()
            .map(|(k, a)| json!({"key": k, "amount": a}))
            .collect::<Vec<_>>()
    })
}

/// A fresh gid for one test.
pub fn new_gid(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The value of a Prometheus series: the sum over every series of `name` whose labels include
/// all of `labels` (so extra labels such as a service name do not matter); 0 when none.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(char::is_whitespace) else {
            continue;
        };
        let series = series.trim();
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        if all {
            sum += value.parse::<f64>().unwrap_or_else(|e| {
                panic!("metric line `{line}`: value `{value}` is not a number: {e}")
            });
        }
    }
    sum
}

/// An HTTP client that never reuses a connection idle for more than a second: the server closes
/// idle keep-alive connections after a few seconds, and a request sent on one just as it is closed
/// fails with `IncompleteMessage` (a client-side race, not the service's fault).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .expect("reqwest client")
}

fn parse_body(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// A client of the stock service's administration endpoints: status and JSON body (a non-JSON
/// body comes back as a JSON string).
#[derive(Clone)]
pub struct StockApi {
    pub base: String,
    client: reqwest::Client,
}

impl StockApi {
    pub fn new(base: &str) -> StockApi {
        StockApi {
            base: base.trim_end_matches('/').to_string(),
            client: http_client(),
        }
    }

    /// Sends a request with an optional JSON body; panics on a transport error.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(body);
        }
        let send = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            Ok::<_, reqwest::Error>((status, parse_body(resp.text().await?)))
        };
        send.await
            .unwrap_or_else(|e| panic!("{method} {path}: transport error: {e:?}"))
    }

    /// Sends raw bytes with the given content type (or none).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, parse_body(resp.text().await?)))
    }

    /// GET returning the body as text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

async fn send_tcc(
    http: &reqwest::Client,
    base: &str,
    op: &str,
    ids: Option<(&str, &str)>,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut req = http
        .post(format!("{base}/tcc/{op}"))
        .header("content-type", "application/json");
    if let Some((gid, branch)) = ids {
        req = req
            .header("X-Tcc-Gid", gid)
            .header("X-Tcc-Branch-Id", branch)
            .header("X-Tcc-Op", op);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, parse_body(resp.text().await?)))
}

/// TCC calls that return transport errors instead of panicking (the service may be killed
/// under them); cloneable into spawned tasks.
#[derive(Clone)]
pub struct TccCaller {
    http: reqwest::Client,
    base: String,
}

impl TccCaller {
    pub async fn call(
        &self,
        op: &str,
        gid: &str,
        branch: &str,
        list: &[(&str, i64)],
    ) -> Result<(u16, Value), reqwest::Error> {
        let body = json!({"gid": gid, "branch_id": branch, "op": op, "payload": items(list)});
        send_tcc(
            &self.http,
            &self.base,
            op,
            Some((gid, branch)),
            Some(body.to_string().into_bytes()),
        )
        .await
    }
}

async fn redis_connection(client: &redis::Client, url: &str) -> redis::aio::MultiplexedConnection {
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("Redis at {url} does not answer (timeout)"))
    .unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e}"))
}

/// A running `tccd stock` with its scratch database and its Redis namespace.
/// Fields drop in order: the process is killed first, then the Redis keys and the database go.
pub struct StockService {
    pub process: Option<Process>,
    /// Client of the admin endpoints.
    pub api: StockApi,
    http: reqwest::Client,
    redis_client: redis::Client,
    pub name: String,
    pub redis: RedisNamespace,
    pub db: TestDb,
}

impl StockService {
    /// A new database on `backend`, a new Redis namespace, and `tccd stock --name NAME` on a
    /// free port with `extra` flags.
    pub async fn start(backend: Backend, name: &str, extra: &[&str]) -> StockService {
        let db = backend.create_db().await;
        let redis = blocking(RedisNamespace::new).await;
        StockService::start_on(db, redis, name, extra).await
    }

    /// `tccd stock` on the given database and Redis namespace.
    pub async fn start_on(
        db: TestDb,
        redis: RedisNamespace,
        name: &str,
        extra: &[&str],
    ) -> StockService {
        let redis_client = redis::Client::open(redis.url.as_str())
            .unwrap_or_else(|e| panic!("bad Redis URL {}: {e}", redis.url));
        redis_connection(&redis_client, &redis.url).await;

        let mut args: Vec<String> = [
            "--name",
            name,
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--redis-url",
            &redis.url,
            "--namespace",
            &redis.namespace,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let process = Process::start_async("stock", args, Vec::new()).await;
        let api = StockApi::new(&process.base_url());
        let http = http_client();
        StockService {
            process: Some(process),
            api,
            http,
            redis_client,
            name: name.to_string(),
            redis,
            db,
        }
    }

    pub fn base_url(&self) -> String {
        self.api.base.clone()
    }

    pub fn logs(&self) -> String {
        self.process.as_ref().map(|p| p.logs()).unwrap_or_default()
    }

    // ----- TCC endpoints (the coordinator's call format, API.md section 2) -----

    /// `POST /tcc/{op}` with the `X-Tcc-*` headers and `{"gid","branch_id","op","payload"}`.
    pub async fn tcc_payload(
        &self,
        op: &str,
        gid: &str,
        branch: &str,
        payload: Value,
    ) -> (u16, Value) {
        let body = json!({"gid": gid, "branch_id": branch, "op": op, "payload": payload});
        self.tcc_request(op, Some((gid, branch)), Some(body.to_string().into_bytes()))
            .await
    }

    /// `POST /tcc/{op}` for a stock payload made of `items`.
    pub async fn tcc(
        &self,
        op: &str,
        gid: &str,
        branch: &str,
        list: &[(&str, i64)],
    ) -> (u16, Value) {
        self.tcc_payload(op, gid, branch, items(list)).await
    }

    /// `POST /tcc/{op}` with a raw JSON body (`application/json`) and, if given, the headers.
    pub async fn tcc_request(
        &self,
        op: &str,
        ids: Option<(&str, &str)>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        send_tcc(&self.http, &self.api.base, op, ids, body)
            .await
            .unwrap_or_else(|e| panic!("POST /tcc/{op}: transport error: {e:?}"))
    }

    /// A cloneable handle for TCC calls from spawned tasks.
    pub fn caller(&self) -> TccCaller {
        TccCaller {
            http: self.http.clone(),
            base: self.api.base.clone(),
        }
    }

    /// SIGKILLs the service.
    pub fn kill(&mut self) {
        self.process.as_mut().expect("stock process").kill();
    }

    /// Kills the service (if running) and starts it again with the same flags, database and
    /// Redis namespace (on a new port).
    pub async fn restart(&mut self) {
        let mut p = self.process.take().expect("stock process");
        let p = blocking(move || {
            p.restart();
            p
        })
        .await;
        self.api = StockApi::new(&p.base_url());
        self.process = Some(p);
    }

    /// A Try that must succeed (200/2xx); recorded in `ledger`.
    pub async fn try_ok(&self, ledger: &mut Ledger, gid: &str, branch: &str, list: &[(&str, i64)]) {
        let r = self.tcc("try", gid, branch, list).await;
        assert!(
            (200..300).contains(&r.0),
            "Try {gid}/{branch} {list:?}: expected 2xx, got {} {:#}",
            r.0,
            r.1
        );
        ledger.tried(gid, branch, list);
    }

    /// A Confirm that must succeed; recorded in `ledger`.
    pub async fn confirm_ok(
        &self,
        ledger: &mut Ledger,
        gid: &str,
        branch: &str,
        list: &[(&str, i64)],
    ) {
        let r = self.tcc("confirm", gid, branch, list).await;
        assert!(
            (200..300).contains(&r.0),
            "Confirm {gid}/{branch}: expected 2xx, got {} {:#}",
            r.0,
            r.1
        );
        ledger.confirmed(gid, branch);
    }

    /// A Cancel that must succeed; recorded in `ledger` if the reservation was open.
    pub async fn cancel_ok(
        &self,
        ledger: &mut Ledger,
        gid: &str,
        branch: &str,
        list: &[(&str, i64)],
    ) {
        let r = self.tcc("cancel", gid, branch, list).await;
        assert!(
            (200..300).contains(&r.0),
            "Cancel {gid}/{branch}: expected 2xx, got {} {:#}",
            r.0,
            r.1
        );
        if ledger.is_open(gid, branch) {
            ledger.cancelled(gid, branch);
        }
    }

    // ----- administration -----

    pub async fn put_stock(&self, key: &str, available: i64) -> (u16, Value) {
        self.api
            .call(
                Method::PUT,
                &format!("/v1/stock/{key}"),
                Some(&json!({"available": available})),
            )
            .await
    }

    /// `PUT /v1/stock/{key}` that must answer 200 with `db.available == n`; recorded in `ledger`.
    pub async fn seed(&self, ledger: &mut Ledger, key: &str, available: i64) {
        let r = self.put_stock(key, available).await;
        assert_eq!(r.0, 200, "PUT /v1/stock/{key} {available}: {:#}", r.1);
        assert_eq!(r.1["key"], key, "PUT /v1/stock/{key}: {:#}", r.1);
        assert_eq!(
            r.1["db"]["available"], available,
            "PUT /v1/stock/{key}: {:#}",
            r.1
        );
        ledger.put(key, available);
    }

    pub async fn get_stock(&self, key: &str) -> (u16, Value) {
        self.api
            .call(Method::GET, &format!("/v1/stock/{key}"), None)
            .await
    }

    /// The database counters of `key` (through `GET /v1/stock/{key}`, which must answer 200).
    pub async fn db_counters(&self, key: &str) -> Counters {
        let (code, body) = self.get_stock(key).await;
        assert_eq!(code, 200, "GET /v1/stock/{key}: {body:#}");
        Counters::from_json(&body["db"])
            .unwrap_or_else(|| panic!("GET /v1/stock/{key}: no integer db counters in {body:#}"))
    }

    pub async fn consistency(&self) -> Value {
        let (code, body) = self.api.call(Method::GET, "/v1/consistency", None).await;
        assert_eq!(code, 200, "GET /v1/consistency: {body:#}");
        assert!(
            body["checked"].is_u64() && body["mismatches"].is_array(),
            "GET /v1/consistency: expected {{checked, mismatches: []}}, got {body:#}"
        );
        body
    }

    /// The keys listed in `GET /v1/consistency` → `mismatches`.
    pub async fn mismatched_keys(&self) -> Vec<String> {
        let body = self.consistency().await;
        body["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["key"]
                    .as_str()
                    .unwrap_or_else(|| panic!("mismatch without a key: {body:#}"))
                    .to_string()
            })
            .collect()
    }

    /// `POST /v1/consistency/repair` (must answer 200); returns the repaired keys.
    pub async fn repair(&self) -> Vec<String> {
        let (code, body) = self
            .api
            .call(Method::POST, "/v1/consistency/repair", None)
            .await;
        assert_eq!(code, 200, "POST /v1/consistency/repair: {body:#}");
        body["repaired"]
            .as_array()
            .unwrap_or_else(|| panic!("repair: expected {{repaired: [...]}}, got {body:#}"))
            .iter()
            .map(|k| {
                k.as_str()
                    .unwrap_or_else(|| panic!("repaired: {body:#}"))
                    .to_string()
            })
            .collect()
    }

    pub async fn set_fault(&self, fault: Value) -> (u16, Value) {
        self.api
            .call(Method::POST, "/v1/faults", Some(&fault))
            .await
    }

    pub async fn clear_faults(&self) -> (u16, Value) {
        self.api.call(Method::DELETE, "/v1/faults", None).await
    }

    pub async fn metrics(&self) -> String {
        let (code, text) = self.api.get_text("/metrics").await;
        assert_eq!(code, 200, "GET /metrics: {text}");
        text
    }

    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    // ----- Redis, read and written directly -----

    /// A new connection to the service's Redis (new each time, so a restarted Redis is fine).
    async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        redis_connection(&self.redis_client, &self.redis.url).await
    }

    /// The Redis key of `key`'s hash: `<namespace>:stock:<key>`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}:stock:{key}", self.redis.namespace)
    }

    /// `HGETALL <ns>:stock:<key>` (every field, as stored).
    pub async fn redis_hash_raw(&self, key: &str) -> HashMap<String, String> {
        let mut conn = self.redis_conn().await;
        conn.hgetall(self.redis_key(key))
            .await
            .unwrap_or_else(|e| panic!("HGETALL {}: {e}", self.redis_key(key)))
    }

    /// The counters of `key`'s Redis hash; `None` when the hash does not exist. Panics when a
    /// counter field is missing or not an integer.
    pub async fn redis_counters(&self, key: &str) -> Option<Counters> {
        let raw = self.redis_hash_raw(key).await;
        if raw.is_empty() {
            return None;
        }
        let field = |f: &str| -> i64 {
            raw.get(f)
                .unwrap_or_else(|| {
                    panic!(
                        "Redis hash {} has no field {f}: {raw:?}",
                        self.redis_key(key)
                    )
                })
                .parse()
                .unwrap_or_else(|e| {
                    panic!(
                        "Redis hash {} field {f} is not an integer ({e}): {raw:?}",
                        self.redis_key(key)
                    )
                })
        };
        Some(Counters::new(
            field("available"),
            field("locked"),
            field("consumed"),
        ))
    }

    /// `HSET <ns>:stock:<key> field value`, behind the service's back.
    pub async fn redis_hset(&self, key: &str, field: &str, value: i64) {
        let mut conn = self.redis_conn().await;
        let _: () = conn
            .hset(self.redis_key(key), field, value)
            .await
            .unwrap_or_else(|e| panic!("HSET {} {field}: {e}", self.redis_key(key)));
    }

    /// Deletes every key under this test's namespace (`SCAN MATCH <ns>:*` + `DEL`): what a
    /// flushed or restarted Redis looks like to this service, without touching other tests.
    /// Returns how many keys were deleted.
    pub async fn flush_namespace(&self) -> usize {
        let mut conn = self.redis_conn().await;
        let pattern = format!("{}:*", self.redis.namespace);
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("SCAN {pattern}: {e}"));
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("DEL {keys:?}: {e}"));
        }
        keys.len()
    }

    /// Both stores of `key`: (database through the API, Redis read directly).
    pub async fn both(&self, key: &str) -> (Counters, Option<Counters>) {
        (self.db_counters(key).await, self.redis_counters(key).await)
    }

    /// Asserts that the database and the Redis hash of `key` both read `expected`.
    pub async fn assert_both(&self, key: &str, expected: Counters, what: &str) {
        let got = self.both(key).await;
        assert_eq!(got.0, expected, "{what}: database counters of {key}");
        assert_eq!(
            got.1,
            Some(expected),
            "{what}: Redis hash {} (database reads {:?})",
            self.redis_key(key),
            got.0
        );
    }
}

/// The API.md section 3 invariants for every key in `ledger`, with nothing in flight:
/// `db.available + db.locked + db.consumed` equals what was PUT, `db.locked` equals the sum of
/// the open reservations, `db.consumed` equals what was confirmed, the Redis hash (read
/// directly, and as the API reports it) equals the database row, no counter is negative, the key
/// reads `consistent`, and `GET /v1/consistency` reports no mismatch.
pub async fn assert_invariants(svc: &StockService, ledger: &Ledger, what: &str) {
    for key in ledger.keys() {
        let (code, view) = svc.get_stock(&key).await;
        assert_eq!(code, 200, "{what}: GET /v1/stock/{key}: {view:#}");
        assert_eq!(view["key"], key.as_str(), "{what}: {view:#}");
        let db = Counters::from_json(&view["db"])
            .unwrap_or_else(|| panic!("{what}: {key}: no integer db counters in {view:#}"));
        assert!(
            db.available >= 0 && db.locked >= 0 && db.consumed >= 0,
            "{what}: {key}: negative database counter {db:?}"
        );
        assert_eq!(
            db.total(),
            ledger.total(&key),
            "{what}: {key}: available + locked + consumed must equal what was PUT; db {db:?}"
        );
        assert_eq!(
            db.locked,
            ledger.locked(&key),
            "{what}: {key}: locked must equal the open reservations; db {db:?}"
        );
        assert_eq!(
            db.consumed,
            ledger.consumed(&key),
            "{what}: {key}: consumed must equal what was confirmed; db {db:?}"
        );
        let redis = svc.redis_counters(&key).await;
        assert_eq!(
            redis,
            Some(db),
            "{what}: {key}: the Redis hash {} must equal the database row",
            svc.redis_key(&key)
        );
        let api_redis = Counters::from_json(&view["redis"]);
        assert_eq!(
            api_redis,
            Some(db),
            "{what}: {key}: the API's `redis` must equal the database row: {view:#}"
        );
        assert_eq!(
            view["consistent"], true,
            "{what}: {key}: expected consistent: true: {view:#}"
        );
    }
    let body = svc.consistency().await;
    assert!(
        body["mismatches"].as_array().unwrap().is_empty(),
        "{what}: GET /v1/consistency reports mismatches: {body:#}"
    );
    assert!(
        body["checked"].as_u64().unwrap() >= ledger.keys().len() as u64,
        "{what}: GET /v1/consistency checked fewer keys than the test created: {body:#}"
    );
}

/// Asserts a `409 insufficient_stock` answer naming `key` at the top level.
#[track_caller]
pub fn assert_insufficient(resp: &(u16, Value), key: &str, what: &str) {
    super::api::assert_error(resp, 409, "insufficient_stock", what);
    assert_eq!(
        resp.1["key"], key,
        "{what}: the 409 must name the short key at the top level: {:#}",
        resp.1
    );
}

/// Asserts `400 invalid_request` whose message names one of `fields`.
#[track_caller]
pub fn assert_invalid(resp: &(u16, Value), fields: &[&str], what: &str) {
    super::api::assert_error(resp, 400, "invalid_request", what);
    let message = resp.1["error"]["message"].as_str().unwrap_or("");
    assert!(
        fields.iter().any(|f| message.contains(f)),
        "{what}: the message must name the field ({}): {:#}",
        fields.join(" or "),
        resp.1
    );
}

/// A private `redis-server` child process on a free port, for tests that stop Redis and start it
/// again (the shared Redis must never be stopped or flushed). Never persists anything, so a
/// restart comes back empty, like a flushed or replaced Redis. Panics if `redis-server` is not
/// installed (`make packages` installs it).
pub struct PrivateRedis {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let dir = std::env::temp_dir()
            .join("tccd-tests")
            .join(format!("redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
        let mut r = PrivateRedis {
            child: None,
            port,
            dir,
        };
        r.start_again().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts `redis-server` (again) on the same port, empty, and waits until it answers PING.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the private redis-server is running");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it (make packages)")
            });
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("redis URL");
        super::wait_for(
            "the private redis-server to answer",
            super::DEADLINE,
            || {
                let client = client.clone();
                async move {
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
                    (pong == "PONG").then_some(())
                }
            },
        )
        .await;
    }

    /// SIGKILLs the server (its data is lost).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            blocking(move || {
                let _ = child.kill();
                let _ = child.wait();
            })
            .await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
