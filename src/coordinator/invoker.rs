//! Outbound calls to resource services (API.md §2), over one shared keep-alive client.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use super::model::{CallOutcome, Op, classify};

pub struct Invoker {
    client: reqwest::Client,
}

/// The body of a native call (API.md §2).
#[derive(Serialize)]
struct CallBody<'a> {
    gid: &'a str,
    branch_id: &'a str,
    op: &'a str,
    payload: &'a RawValue,
}

/// What came back from one call.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub outcome: CallOutcome,
    pub status: Option<u16>,
    /// A Try's answer body, when it is JSON (kept as text: it is stored and shown as it is).
    pub body: Option<String>,
    /// Why the call did not succeed, for logs and `last_error`.
    pub error: Option<String>,
}

impl Invoker {
    pub fn new(request_timeout: Duration) -> Result<Invoker, String> {
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(3)))
            .pool_idle_timeout(crate::http::server::CLIENT_IDLE)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Invoker { client })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `op` for one branch, the native way (API.md §2). `payload` is the branch
    /// payload's JSON text.
    pub async fn call(
        &self,
        url: &str,
        op: Op,
        gid: &str,
        branch_id: &str,
        payload: &str,
    ) -> CallResult {
        // The stored payload is already JSON text: embed it as it is, without re-parsing.
        let payload = RawValue::from_string(payload.to_string())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("valid JSON"));
        let body = CallBody {
            gid,
            branch_id,
            op: op.as_str(),
            payload: &payload,
        };
        let request = self
            .client
            .post(url)
            .header("X-Tcc-Gid", gid)
            .header("X-Tcc-Branch-Id", branch_id)
            .header("X-Tcc-Op", op.as_str())
            .json(&body);
        self.send(request, op, |status, _| classify(op, status))
            .await
    }

    /// Sends `op` for one branch the way DTM does: the branch data as the body, the ids as
    /// query parameters. A 2xx whose body says FAILURE or ONGOING has not succeeded.
    pub async fn call_dtm(
        &self,
        url: &str,
        op: Op,
        gid: &str,
        branch_id: &str,
        data: &str,
        timeout: Option<Duration>,
    ) -> CallResult {
        let mut request = self
            .client
            .post(url)
            .query(&[
                ("gid", gid),
                ("trans_type", "tcc"),
                ("branch_id", branch_id),
                ("op", op.as_str()),
            ])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(data.to_string());
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        self.send(request, op, |status, body| match classify(op, status) {
            CallOutcome::Done if dtm_unsettled(body) => CallOutcome::Unknown,
            other => other,
        })
        .await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        op: Op,
        classify: impl Fn(Option<u16>, &[u8]) -> CallOutcome,
    ) -> CallResult {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let error = if e.is_timeout() {
                    format!("{op} timed out: {e}")
                } else {
                    format!("{op} failed: {e}")
                };
                return CallResult {
                    outcome: classify(None, b""),
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
        // Only a Try's answer is kept; a Confirm's or Cancel's is not read past its status.
        let body = (op == Op::Try)
            .then(|| std::str::from_utf8(&bytes).ok())
            .flatten()
            .filter(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
            .map(str::to_string);
        let outcome = classify(Some(status), &bytes);
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

/// DTM's convention: a body mentioning FAILURE or ONGOING is not a success, whatever the status.
pub fn dtm_unsettled(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("FAILURE") || text.contains("ONGOING")
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}
