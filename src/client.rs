//! A typed HTTP client of the coordinator (API.md §1) and of a stock service (API.md §3), for
//! the demo, the benchmark and anyone driving tccd from Rust.
//!
//! Every call returns the decoded answer or a [`ClientError`]; a non-2xx answer keeps its status,
//! its `error.code` and the whole body, so a caller can tell `try_failed` from a dead service.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::resource::stock::model::Counters;

/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused or reset, timeout.
    #[error("{request}: {source}")]
    Transport {
        /// `METHOD URL`.
        request: String,
        #[source]
        source: reqwest::Error,
    },
    /// A non-2xx answer with the API's error body (or whatever the server sent).
    #[error("{request}: HTTP {status} {code}: {message}")]
    Api {
        request: String,
        status: u16,
        code: String,
        message: String,
        body: Value,
    },
    /// A 2xx answer whose body is not what the API promises.
    #[error("{request}: unexpected answer (HTTP {status}): {message}")]
    Decode {
        request: String,
        status: u16,
        message: String,
    },
    /// A poll ran out of time.
    #[error("{0}")]
    Timeout(String),
}

impl ClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's `error.code` of an error answer (`try_failed`, `not_found`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The whole body of an error answer.
    pub fn body(&self) -> Option<&Value> {
        match self {
            ClientError::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Whether nothing answered (the process is down or unreachable).
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The shared part: a base URL and a reqwest client.
#[derive(Clone, Debug)]
struct Http {
    base: String,
    client: reqwest::Client,
}

/// A raw answer: status and body.
struct Answer {
    /// `METHOD URL`.
    request: String,
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn decode<T: DeserializeOwned>(self) -> Result<T> {
        serde_json::from_value(self.body).map_err(|e| ClientError::Decode {
            request: self.request,
            status: self.status.as_u16(),
            message: e.to_string(),
        })
    }

    /// 2xx passes; anything else becomes [`ClientError::Api`].
    fn ok(self) -> Result<Answer> {
        if self.status.is_success() {
            return Ok(self);
        }
        let error = self.body.get("error");
        let code = error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string());
        Err(ClientError::Api {
            request: self.request,
            status: self.status.as_u16(),
            code,
            message,
            body: self.body,
        })
    }
}

impl Http {
    fn new(base: &str, client: reqwest::Client) -> Http {
        Http {
            base: base.trim_end_matches('/').to_string(),
            client,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer> {
        let url = format!("{}{}", self.base, path);
        let request = format!("{method} {url}");
        let mut req = self.client.request(method, &url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let transport = |source| ClientError::Transport {
            request: request.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer {
            request,
            status,
            body,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(Method::GET, path, None).await?.ok()?.decode()
    }

    /// GET that maps 404 to `None`.
    async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let answer = self.send(Method::GET, path, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        answer.ok()?.decode().map(Some)
    }

    async fn ready(&self, path: &str) -> Result<()> {
        self.send(Method::GET, path, None).await?.ok().map(|_| ())
    }
}

fn default_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(crate::http::server::CLIENT_IDLE)
        .build()
        .expect("the HTTP client's settings are valid")
}

// ---------------------------------------------------------------------------------------------
// Coordinator

/// Status of a global transaction: the coordinator's own type.
pub use crate::coordinator::model::TxStatus;

/// A registered resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub try_url: String,
    pub confirm_url: String,
    pub cancel_url: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A branch as `GET /v1/transactions/{gid}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Branch {
    pub branch_id: String,
    pub resource: String,
    /// `trying`, `tried`, `failed`, `confirmed` or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub response: Value,
    #[serde(default)]
    pub attempts: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A global transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    pub gid: String,
    pub status: TxStatus,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    #[serde(default)]
    pub attempts: i64,
    #[serde(default)]
    pub next_retry_at: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub branches: Vec<Branch>,
}

impl Transaction {
    pub fn branch(&self, resource: &str) -> Option<&Branch> {
        self.branches.iter().find(|b| b.resource == resource)
    }
}

/// The answer to a branch whose Try succeeded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriedBranch {
    pub gid: String,
    pub branch_id: String,
    pub resource: String,
    pub status: String,
    #[serde(default)]
    pub response: Value,
}

/// The body of `POST /v1/transactions` (every field optional).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BeginRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// A page of `GET /v1/transactions`.
#[derive(Debug, Clone, Deserialize)]
pub struct TransactionPage {
    pub transactions: Vec<Transaction>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct ResourceList {
    resources: Vec<Resource>,
}

/// What became of a checkout (see [`CoordinatorClient::checkout`]).
#[derive(Debug, Clone)]
pub enum Checkout {
    /// Committed, or `committing` when the commit answered 202 (`wait` false or a Confirm
    /// still being retried).
    Decided(Transaction),
    /// A resource refused its Try (`409 try_failed`); the coordinator aborted the transaction.
    /// `status` is `aborted`, or `aborting` while a Cancel is retried.
    Refused {
        gid: String,
        resource: String,
        status: Option<TxStatus>,
        resource_response: Value,
    },
}

/// One branch of a checkout: a resource name and its payload.
#[derive(Debug, Clone)]
pub struct Step {
    pub resource: String,
    pub payload: Value,
}

impl Step {
    /// A branch on a stock service: `{"items": [{"key", "amount"}]}`.
    pub fn stock(resource: &str, items: &[(&str, i64)]) -> Step {
        Step {
            resource: resource.to_string(),
            payload: stock_payload(items),
        }
    }
}

/// A stock service's branch payload.
pub fn stock_payload(items: &[(&str, i64)]) -> Value {
    json!({
        "items": items
            .iter()
            .map(|(key, amount)| json!({"key": key, "amount": amount}))
            .collect::<Vec<_>>()
    })
}

/// A client of one coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorClient {
    http: Http,
}

fn enc(segment: &str) -> String {
    // Identifiers are `[A-Za-z0-9._:-]`; escape anything else rather than trust the caller.
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'-' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl CoordinatorClient {
    /// A client with its own connection pool and a 30 s request timeout.
    pub fn new(base_url: &str) -> CoordinatorClient {
        Self::with_client(base_url, default_client(DEFAULT_TIMEOUT))
    }

    /// A client sharing a reqwest client (and its connection pool and timeouts).
    pub fn with_client(base_url: &str, client: reqwest::Client) -> CoordinatorClient {
        CoordinatorClient {
            http: Http::new(base_url, client),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.http.base
    }

    /// `GET /readyz`: Ok when the coordinator and its database answer.
    pub async fn ready(&self) -> Result<()> {
        self.http.ready("/readyz").await
    }

    pub async fn resource(&self, name: &str) -> Result<Option<Resource>> {
        self.http
            .get_opt(&format!("/v1/resources/{}", enc(name)))
            .await
    }

    pub async fn resources(&self) -> Result<Vec<Resource>> {
        Ok(self
            .http
            .get::<ResourceList>("/v1/resources")
            .await?
            .resources)
    }

    /// Registers (or moves) a resource; returns it.
    pub async fn register(
        &self,
        name: &str,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<Resource> {
        let body =
            json!({"try_url": try_url, "confirm_url": confirm_url, "cancel_url": cancel_url});
        self.http
            .send(
                Method::PUT,
                &format!("/v1/resources/{}", enc(name)),
                Some(&body),
            )
            .await?
            .ok()?
            .decode()
    }

    /// `POST /v1/transactions`.
    pub async fn begin(&self, req: &BeginRequest) -> Result<Transaction> {
        let body = serde_json::to_value(req).expect("a begin request serialises");
        self.http
            .send(Method::POST, "/v1/transactions", Some(&body))
            .await?
            .ok()?
            .decode()
    }

    /// `POST /v1/transactions/{gid}/branches`: stores the branch and runs its Try. A refusal is
    /// `Err(ClientError::Api { status: 409, code: "try_failed", .. })`.
    pub async fn add_branch(
        &self,
        gid: &str,
        resource: &str,
        payload: &Value,
        branch_id: Option<&str>,
    ) -> Result<TriedBranch> {
        let mut body = json!({"resource": resource, "payload": payload});
        if let Some(id) = branch_id {
            body["branch_id"] = json!(id);
        }
        self.http
            .send(
                Method::POST,
                &format!("/v1/transactions/{}/branches", enc(gid)),
                Some(&body),
            )
            .await?
            .ok()?
            .decode()
    }

    /// `POST /v1/transactions/{gid}/commit`; with `wait` false the answer is 202 `committing`
    /// once the decision is durable. The returned transaction's status tells which.
    pub async fn commit(&self, gid: &str, wait: bool) -> Result<Transaction> {
        let query = if wait { "" } else { "?wait=false" };
        self.http
            .send(
                Method::POST,
                &format!("/v1/transactions/{}/commit{query}", enc(gid)),
                None,
            )
            .await?
            .ok()?
            .decode()
    }

    /// `POST /v1/transactions/{gid}/abort`.
    pub async fn abort(&self, gid: &str, reason: Option<&str>) -> Result<Transaction> {
        let body = match reason {
            Some(r) => json!({"reason": r}),
            None => json!({}),
        };
        self.http
            .send(
                Method::POST,
                &format!("/v1/transactions/{}/abort", enc(gid)),
                Some(&body),
            )
            .await?
            .ok()?
            .decode()
    }

    /// `GET /v1/transactions/{gid}`.
    pub async fn transaction(&self, gid: &str) -> Result<Transaction> {
        self.http
            .get(&format!("/v1/transactions/{}", enc(gid)))
            .await
    }

    /// `GET /v1/transactions?status=..&limit=..&after=..`, newest first.
    pub async fn transactions(
        &self,
        status: Option<TxStatus>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<TransactionPage> {
        let mut query = format!("?limit={limit}");
        if let Some(s) = status {
            query.push_str(&format!("&status={s}"));
        }
        if let Some(a) = after {
            query.push_str(&format!("&after={}", enc(a)));
        }
        self.http.get(&format!("/v1/transactions{query}")).await
    }

    /// Polls `GET /v1/transactions/{gid}` every `every` until `done` holds or `timeout` passes.
    /// Transport errors are retried until the deadline (the coordinator may be restarting).
    pub async fn poll(
        &self,
        gid: &str,
        timeout: Duration,
        every: Duration,
        done: impl Fn(&Transaction) -> bool,
    ) -> Result<Transaction> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.transaction(gid).await {
                Ok(tx) if done(&tx) => return Ok(tx),
                Ok(tx) => format!("still {}", tx.status),
                Err(e) if e.is_transport() => e.to_string(),
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(format!(
                    "transaction {gid} not done within {timeout:?} ({last})"
                )));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Polls until the transaction is `committed` or `aborted`.
    pub async fn wait_final(&self, gid: &str, timeout: Duration) -> Result<Transaction> {
        self.poll(gid, timeout, Duration::from_millis(50), |t| {
            t.status.is_final()
        })
        .await
    }

    /// One whole transaction: begin, one branch per step (in order), commit. A refused Try ends
    /// it as [`Checkout::Refused`]; any other failure is an error.
    pub async fn checkout(
        &self,
        begin: &BeginRequest,
        steps: &[Step],
        wait: bool,
    ) -> Result<Checkout> {
        let tx = self.begin(begin).await?;
        for step in steps {
            match self
                .add_branch(&tx.gid, &step.resource, &step.payload, None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some("try_failed") => {
                    let body = e.body().cloned().unwrap_or(Value::Null);
                    return Ok(Checkout::Refused {
                        gid: tx.gid,
                        resource: step.resource.clone(),
                        status: body
                            .get("status")
                            .and_then(|s| serde_json::from_value(s.clone()).ok()),
                        resource_response: body
                            .get("resource_response")
                            .cloned()
                            .unwrap_or(Value::Null),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Checkout::Decided(self.commit(&tx.gid, wait).await?))
    }
}

// ---------------------------------------------------------------------------------------------
// Stock service

/// One key in both stores (`GET /v1/stock/{key}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockView {
    pub key: String,
    pub db: Counters,
    pub redis: Option<Counters>,
    #[serde(default)]
    pub consistent: bool,
}

/// A key whose Redis hash differs from its database row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mismatch {
    pub key: String,
    pub db: Counters,
    pub redis: Option<Counters>,
}

/// `GET /v1/consistency`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consistency {
    pub checked: u64,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Deserialize)]
struct StockList {
    stock: Vec<StockView>,
}

#[derive(Deserialize)]
struct Repaired {
    repaired: Vec<String>,
}

/// A TCC operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TccOp {
    Try,
    Confirm,
    Cancel,
}

impl TccOp {
    pub fn as_str(self) -> &'static str {
        match self {
            TccOp::Try => "try",
            TccOp::Confirm => "confirm",
            TccOp::Cancel => "cancel",
        }
    }
}

/// What an injected fault does (`POST /v1/faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    /// Answer 503 without doing anything.
    Error,
    /// Answer 409 without reserving (Try only).
    Refuse,
    /// Wait `delay_ms`, then do the work.
    Delay,
}

/// The body of `POST /v1/faults`: the next `count` calls of `op` get `action`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub op: TccOp,
    pub action: FaultAction,
    pub count: u32,
    #[serde(default)]
    pub delay_ms: u64,
}

/// A client of one stock service.
#[derive(Clone, Debug)]
pub struct StockClient {
    http: Http,
}

impl StockClient {
    pub fn new(base_url: &str) -> StockClient {
        Self::with_client(base_url, default_client(DEFAULT_TIMEOUT))
    }

    pub fn with_client(base_url: &str, client: reqwest::Client) -> StockClient {
        StockClient {
            http: Http::new(base_url, client),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.http.base
    }

    /// `GET /readyz`: Ok when the database and Redis answer.
    pub async fn ready(&self) -> Result<()> {
        self.http.ready("/readyz").await
    }

    /// `PUT /v1/stock/{key}`: sets `available` (creating the key if new).
    pub async fn put(&self, key: &str, available: i64) -> Result<StockView> {
        self.http
            .send(
                Method::PUT,
                &format!("/v1/stock/{}", enc(key)),
                Some(&json!({"available": available})),
            )
            .await?
            .ok()?
            .decode()
    }

    /// `GET /v1/stock/{key}`; `None` for an unknown key.
    pub async fn get(&self, key: &str) -> Result<Option<StockView>> {
        self.http.get_opt(&format!("/v1/stock/{}", enc(key))).await
    }

    /// `GET /v1/stock`: every key.
    pub async fn list(&self) -> Result<Vec<StockView>> {
        Ok(self.http.get::<StockList>("/v1/stock").await?.stock)
    }

    /// `GET /v1/consistency`.
    pub async fn consistency(&self) -> Result<Consistency> {
        self.http.get("/v1/consistency").await
    }

    /// `POST /v1/consistency/repair`: the keys rewritten in Redis.
    pub async fn repair(&self) -> Result<Vec<String>> {
        let r: Repaired = self
            .http
            .send(Method::POST, "/v1/consistency/repair", None)
            .await?
            .ok()?
            .decode()?;
        Ok(r.repaired)
    }

    /// `POST /v1/faults` (the service must run with `--faults`).
    pub async fn arm_fault(&self, fault: &Fault) -> Result<()> {
        let body = serde_json::to_value(fault).expect("a fault serialises");
        self.http
            .send(Method::POST, "/v1/faults", Some(&body))
            .await?
            .ok()
            .map(|_| ())
    }

    /// `DELETE /v1/faults`.
    pub async fn clear_faults(&self) -> Result<()> {
        self.http
            .send(Method::DELETE, "/v1/faults", None)
            .await?
            .ok()
            .map(|_| ())
    }

    /// Calls `POST /tcc/{op}` directly, as the coordinator would (API.md §2): for a baseline
    /// without a coordinator, or for tests. Returns the service's answer body.
    pub async fn tcc(
        &self,
        op: TccOp,
        gid: &str,
        branch_id: &str,
        payload: &Value,
    ) -> Result<Value> {
        let body =
            json!({"gid": gid, "branch_id": branch_id, "op": op.as_str(), "payload": payload});
        let url = format!("{}/tcc/{}", self.http.base, op.as_str());
        let request = format!("POST {url}");
        let resp = self
            .http
            .client
            .post(&url)
            .header("X-Tcc-Gid", gid)
            .header("X-Tcc-Branch-Id", branch_id)
            .header("X-Tcc-Op", op.as_str())
            .json(&body)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                request: request.clone(),
                source,
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| ClientError::Transport {
            request: request.clone(),
            source,
        })?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            request,
            status,
            body,
        }
        .ok()?
        .body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(enc("buyer-001.a:b_c"), "buyer-001.a:b_c");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn error_answers_keep_code_and_body() {
        let a = Answer {
            request: "POST http://x/v1/transactions/g/branches".into(),
            status: StatusCode::CONFLICT,
            body: json!({"error": {"code": "try_failed", "message": "refused"}, "status": "aborted"}),
        };
        let e = a.ok().err().unwrap();
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.code(), Some("try_failed"));
        assert_eq!(e.body().unwrap()["status"], "aborted");
        assert!(e.to_string().contains("try_failed"));
    }

    #[test]
    fn transactions_decode() {
        let tx: Transaction = serde_json::from_value(json!({
            "gid": "g", "status": "committing", "branches": [
                {"branch_id": "01", "resource": "wallet", "status": "tried", "attempts": 2}
            ]
        }))
        .unwrap();
        assert_eq!(tx.status, TxStatus::Committing);
        assert_eq!(tx.branch("wallet").unwrap().attempts, 2);
    }
}
