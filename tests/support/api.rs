//! A thin client of the coordinator API (API.md section 1): every call returns the status code
//! and the body as JSON (a non-JSON body comes back as a JSON string).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

fn parse_body(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        Api {
            base: base.trim_end_matches('/').to_string(),
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional JSON body; transport errors are returned (a crashing
    /// coordinator drops the connection).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, parse_body(text)))
    }

    /// Like [`Api::send`] but panics on a transport error.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let m = method.to_string();
        match self.send(method, path, body).await {
            Ok(r) => r,
            Err(e) => panic!("{m} {path}: transport error: {e:?}"),
        }
    }

    /// Sends raw bytes with the given content type (or none).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.client.request(method, self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, parse_body(text)))
    }

    /// GET returning the body as text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    // ----- transactions -----

    pub async fn begin(&self, body: Value) -> (u16, Value) {
        self.call(Method::POST, "/v1/transactions", Some(&body))
            .await
    }

    pub async fn add_branch(&self, gid: &str, body: Value) -> (u16, Value) {
        self.call(
            Method::POST,
            &format!("/v1/transactions/{gid}/branches"),
            Some(&body),
        )
        .await
    }

    pub async fn try_add_branch(
        &self,
        gid: &str,
        body: Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.send(
            Method::POST,
            &format!("/v1/transactions/{gid}/branches"),
            Some(&body),
        )
        .await
    }

    pub async fn commit(&self, gid: &str) -> (u16, Value) {
        self.call(
            Method::POST,
            &format!("/v1/transactions/{gid}/commit"),
            None,
        )
        .await
    }

    pub async fn try_commit(&self, gid: &str) -> Result<(u16, Value), reqwest::Error> {
        self.send(
            Method::POST,
            &format!("/v1/transactions/{gid}/commit"),
            None,
        )
        .await
    }

    pub async fn commit_nowait(&self, gid: &str) -> (u16, Value) {
        self.call(
            Method::POST,
            &format!("/v1/transactions/{gid}/commit?wait=false"),
            None,
        )
        .await
    }

    pub async fn abort(&self, gid: &str, body: Option<Value>) -> (u16, Value) {
        self.call(
            Method::POST,
            &format!("/v1/transactions/{gid}/abort"),
            body.as_ref(),
        )
        .await
    }

    pub async fn get(&self, gid: &str) -> (u16, Value) {
        self.call(Method::GET, &format!("/v1/transactions/{gid}"), None)
            .await
    }

    /// `GET /v1/transactions` with query parameters.
    pub async fn list(&self, query: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url("/v1/transactions"))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /v1/transactions {query:?}: {e:?}"));
        let status = resp.status().as_u16();
        (status, parse_body(resp.text().await.unwrap_or_default()))
    }

    // ----- resources -----

    pub async fn put_resource(&self, name: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, &format!("/v1/resources/{name}"), Some(&body))
            .await
    }

    pub async fn get_resource(&self, name: &str) -> (u16, Value) {
        self.call(Method::GET, &format!("/v1/resources/{name}"), None)
            .await
    }

    pub async fn delete_resource(&self, name: &str) -> (u16, Value) {
        self.call(Method::DELETE, &format!("/v1/resources/{name}"), None)
            .await
    }

    pub async fn list_resources(&self) -> (u16, Value) {
        self.call(Method::GET, "/v1/resources", None).await
    }
}

/// Asserts the status code, printing the body on failure.
#[track_caller]
pub fn assert_status(resp: &(u16, Value), status: u16, what: &str) {
    assert_eq!(
        resp.0, status,
        "{what}: expected {status}, got {} with {:#}",
        resp.0, resp.1
    );
}

/// Asserts an error answer: the status, `error.code` and a non-empty `error.message`.
#[track_caller]
pub fn assert_error(resp: &(u16, Value), status: u16, code: &str, what: &str) {
    let (got, body) = resp;
    assert_eq!(
        *got, status,
        "{what}: expected {status} {code}, got {got} with {body:#}"
    );
    assert_eq!(
        body["error"]["code"], code,
        "{what}: expected error.code {code}, got {body:#}"
    );
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        !message.trim().is_empty(),
        "{what}: error.message must be a non-empty string, got {body:#}"
    );
}

/// A resource registration body for the given base URL.
pub fn resource_body(try_url: &str, confirm_url: &str, cancel_url: &str) -> Value {
    json!({"try_url": try_url, "confirm_url": confirm_url, "cancel_url": cancel_url})
}
