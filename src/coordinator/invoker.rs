//! Outbound calls to resource services (API.md §2), over one shared keep-alive client.

use std::time::Duration;

use serde_json::Value;

use super::model::{CallOutcome, Op, classify};

pub struct Invoker {
    client: reqwest::Client,
}

/// What came back from one call.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub outcome: CallOutcome,
    pub status: Option<u16>,
    /// The answer's JSON body, if it had one.
    pub body: Option<Value>,
    /// Why the call did not succeed, for logs and `last_error`.
    pub error: Option<String>,
}

impl Invoker {
    pub fn new(request_timeout: Duration) -> Result<Invoker, String> {
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(3)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Invoker { client })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `op` for one branch. `payload` is the branch payload's JSON text.
    pub async fn call(
        &self,
        url: &str,
        op: Op,
        gid: &str,
        branch_id: &str,
        payload: &str,
    ) -> CallResult {
        let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let body = serde_json::json!({"gid": gid, "branch_id": branch_id, "op": op.as_str(), "payload": payload});
        let sent = self
            .client
            .post(url)
            .header("X-Tcc-Gid", gid)
            .header("X-Tcc-Branch-Id", branch_id)
            .header("X-Tcc-Op", op.as_str())
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let error = if e.is_timeout() {
                    format!("{op} timed out: {e}")
                } else {
                    format!("{op} failed: {e}")
                };
                return CallResult {
                    outcome: classify(op, None),
                    status: None,
                    body: None,
                    error: Some(error),
                };
            }
        };
        let status = response.status().as_u16();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                // The status came but the body did not: the outcome is not known.
                return CallResult {
                    outcome: CallOutcome::Unknown,
                    status: Some(status),
                    body: None,
                    error: Some(format!("{op} answer cut short: {e}")),
                };
            }
        };
        let body = serde_json::from_slice::<Value>(&bytes).ok();
        let outcome = classify(op, Some(status));
        let error = match outcome {
            CallOutcome::Done => None,
            _ => Some(format!("{op} answered HTTP {status}: {}", snippet(&bytes))),
        };
        CallResult {
            outcome,
            status: Some(status),
            body,
            error,
        }
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}
