//! DTM compatibility: DTM's HTTP protocol for TCC under `/api/dtmsvr`, on the same store and
//! machinery as the native API, so existing DTM SDKs drive transactions through tccd.
//!
//! Statuses map one to one: prepared = trying, submitted = committing, succeed = committed,
//! aborting = aborting, failed = aborted. A DTM branch is registered before the client sends its
//! Try (durable before effect); the coordinator does not see the Try, so the branch is stored as
//! `tried` and is confirmed on submit or cancelled on abort, DTM-style: a POST of the branch data
//! to its own URL with `gid`, `trans_type`, `branch_id` and `op` in the query string.
//!
//! Where DTM is lax, tccd is strict: submitting an unknown gid is an error, a repeated submit
//! never marks unfinished confirms done, and a second registerBranch of one branch id is
//! idempotent only when identical (409 otherwise).

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::api::{AppState, MAX_PAYLOAD_BYTES};
use super::model::{BranchStatus, Op, TxStatus};
use super::store::{self, BranchRow, TxRow};
use super::unit::{Begin, Decide, NewDtmBranch, RegisterDtmBranch};
use crate::http::extract::QueryParams;
use crate::http::{ApiError, JsonBody};
use crate::time::{now_ms, rfc3339};
use crate::validate;

pub const PROTOCOL: &str = "dtm";

type Data = web::Data<AppState>;
type Answer = Result<HttpResponse, ApiError>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/dtmsvr")
            .route("/newGid", web::get().to(new_gid))
            .route("/prepare", web::post().to(prepare))
            .route("/registerBranch", web::post().to(register_branch))
            .route("/registerTccBranch", web::post().to(register_branch))
            .route("/submit", web::post().to(submit))
            .route("/abort", web::post().to(abort))
            .route("/query", web::get().to(query))
            .route("/all", web::get().to(all)),
    );
}

/// DTM's per-transaction options, as given to `prepare` (times in seconds).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_to_fail: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_result: Option<bool>,
}

impl Options {
    /// The options of a transaction (empty for a native one).
    pub fn of(tx: &TxRow) -> Options {
        tx.options
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default()
    }

    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
    }

    pub fn retry_base_ms(&self) -> Option<u64> {
        self.retry_interval
            .filter(|s| *s > 0)
            .map(|s| s as u64 * 1000)
    }
}

pub fn dtm_status(s: TxStatus) -> &'static str {
    match s {
        TxStatus::Trying => "prepared",
        TxStatus::Committing => "submitted",
        TxStatus::Committed => "succeed",
        TxStatus::Aborting => "aborting",
        TxStatus::Aborted => "failed",
    }
}

pub fn from_dtm_status(s: &str) -> Option<TxStatus> {
    Some(match s {
        "prepared" => TxStatus::Trying,
        "submitted" => TxStatus::Committing,
        "succeed" => TxStatus::Committed,
        "aborting" => TxStatus::Aborting,
        "failed" => TxStatus::Aborted,
        _ => return None,
    })
}

fn success() -> HttpResponse {
    HttpResponse::Ok().json(json!({"dtm_result": "SUCCESS"}))
}

/// DTM's FAILURE answer (409), with the API's error object beside it.
fn failure(message: impl Into<String>) -> ApiError {
    let message = message.into();
    ApiError::conflict(message.clone())
        .with("dtm_result", "FAILURE")
        .with("message", message)
}

fn not_found(gid: &str) -> ApiError {
    let message = format!("No transaction with gid {gid}.");
    ApiError::not_found(message.clone())
        .with("dtm_result", "FAILURE")
        .with("message", message)
}

/// DTM's ONGOING answer: accepted, phase two still being retried.
fn ongoing(gid: &str) -> HttpResponse {
    let message = format!("Transaction {gid} is submitted; a confirm is still being retried.");
    HttpResponse::build(StatusCode::from_u16(425).expect("valid status")).json(json!({
        "dtm_result": "ONGOING", "message": message,
        "error": {"code": "ongoing", "message": message},
    }))
}

fn check_trans_type(t: Option<&str>) -> Result<(), ApiError> {
    match t {
        None | Some("tcc") => Ok(()),
        Some(other) => Err(ApiError::invalid(format!(
            "Field `trans_type`: {other} is not supported; tccd serves DTM's TCC only."
        ))),
    }
}

async fn new_gid() -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"gid": uuid::Uuid::new_v4().simple().to_string(), "dtm_result": "SUCCESS"}))
}

#[derive(Deserialize)]
struct PrepareBody {
    gid: String,
    trans_type: Option<String>,
    custom_data: Option<String>,
    #[serde(flatten)]
    options: Options,
}

async fn prepare(data: Data, JsonBody(body): JsonBody<PrepareBody>) -> Answer {
    validate::id("gid", &body.gid)?;
    check_trans_type(body.trans_type.as_deref())?;
    let o = &body.options;
    for (field, v) in [
        ("timeout_to_fail", o.timeout_to_fail),
        ("retry_interval", o.retry_interval),
        ("request_timeout", o.request_timeout),
    ] {
        if let Some(v) = v {
            validate::range(field, v, 0, 86_400)?;
        }
    }
    let timeout_ms = match o.timeout_to_fail {
        Some(s) if s > 0 => s * 1000,
        _ => data.default_timeout_ms,
    };
    let mut metadata = Map::new();
    if let Some(c) = &body.custom_data {
        metadata.insert("custom_data".into(), Value::String(c.clone()));
    }
    let now = now_ms();
    let row = TxRow {
        gid: body.gid.clone(),
        status: TxStatus::Trying.as_str().into(),
        created_at: now,
        updated_at: now,
        expires_at: now + timeout_ms,
        finished_at: None,
        reason: None,
        metadata: Value::Object(metadata).to_string(),
        attempts: 0,
        next_retry_at: None,
        last_error: None,
        due_at: now + timeout_ms,
        lease_owner: None,
        protocol: PROTOCOL.into(),
        options: Some(serde_json::to_string(&body.options).unwrap_or_default()),
    };
    let gid = body.gid;
    match data.engine.writer.begin(row).await? {
        Begin::Created(_) => {
            data.engine.metrics.transition(None, TxStatus::Trying);
            log::info!("gid={gid} prepared (DTM, timeout {timeout_ms} ms)");
            Ok(success())
        }
        Begin::Existing(tx) if tx.status() == TxStatus::Trying && tx.protocol == PROTOCOL => {
            Ok(success())
        }
        Begin::Existing(tx) => Err(failure(format!(
            "Transaction {gid} already exists and is {}.",
            dtm_status(tx.status())
        ))),
    }
}

/// Reads a required string field of registerBranch: DTM sends every value as a string.
fn string_field(body: &HashMap<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ApiError::invalid(format!(
            "Field `{field}` must be a string, not {other}."
        ))),
        None => Err(ApiError::invalid(format!("Field `{field}` is missing."))),
    }
}

async fn register_branch(data: Data, JsonBody(body): JsonBody<HashMap<String, Value>>) -> Answer {
    for (field, value) in &body {
        if !value.is_string() {
            return Err(ApiError::invalid(format!(
                "Field `{field}` must be a string, as DTM sends it."
            )));
        }
    }
    let gid = string_field(&body, "gid")?;
    let branch_id = string_field(&body, "branch_id")?;
    let branch_data = string_field(&body, "data")?;
    let confirm = string_field(&body, "confirm")?;
    let cancel = string_field(&body, "cancel")?;
    check_trans_type(body.get("trans_type").and_then(Value::as_str))?;
    validate::id("gid", &gid)?;
    validate::id("branch_id", &branch_id)?;
    validate::http_url("confirm", &confirm)?;
    validate::http_url("cancel", &cancel)?;
    if branch_data.len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::invalid(format!(
            "Field `data` must be at most {MAX_PAYLOAD_BYTES} bytes."
        )));
    }
    let new = NewDtmBranch {
        gid: gid.clone(),
        branch_id: branch_id.clone(),
        data: branch_data,
        confirm_url: confirm,
        cancel_url: cancel,
        now: now_ms(),
    };
    match data.engine.writer.add_dtm_branch(new).await? {
        RegisterDtmBranch::Registered => {
            log::info!("gid={gid} branch={branch_id} registered (DTM)");
            Ok(success())
        }
        RegisterDtmBranch::Duplicate => Ok(success()),
        RegisterDtmBranch::NotFound => Err(not_found(&gid)),
        RegisterDtmBranch::NotPrepared(s) => Err(failure(format!(
            "Transaction {gid} is {}; branches can only be registered while it is prepared.",
            dtm_status(s)
        ))),
        RegisterDtmBranch::Expired => {
            data.engine.abort(&gid, "timed out").await?;
            Err(failure(format!(
                "Transaction {gid} has timed out and is aborted."
            )))
        }
        RegisterDtmBranch::Mismatch => Err(failure(format!(
            "Branch {branch_id} of {gid} was already registered with other data or URLs."
        ))),
    }
}

#[derive(Deserialize)]
struct GidBody {
    gid: String,
    trans_type: Option<String>,
    wait_result: Option<bool>,
}

async fn submit(data: Data, JsonBody(body): JsonBody<GidBody>) -> Answer {
    validate::id("gid", &body.gid)?;
    check_trans_type(body.trans_type.as_deref())?;
    let gid = body.gid;
    let engine = data.engine.clone();
    let decided = engine.decide(&gid, TxStatus::Committing, None).await?;
    match decided {
        Decide::NotFound => Err(not_found(&gid)),
        Decide::BranchOpen(why) => Err(failure(format!("Cannot submit yet: {why}."))),
        Decide::Unchanged(TxStatus::Committed) => Ok(success()),
        // Still confirming: report it as such, never as done.
        Decide::Unchanged(TxStatus::Committing) => Ok(if body.wait_result == Some(true) {
            ongoing(&gid)
        } else {
            success()
        }),
        Decide::Unchanged(s) => Err(failure(format!(
            "Transaction {gid} is {} and cannot be submitted.",
            dtm_status(s)
        ))),
        Decide::Expired(input) => {
            engine
                .metrics
                .transition(Some(TxStatus::Trying), TxStatus::Aborting);
            engine.drive_loaded(input).await?;
            Err(failure(format!(
                "Transaction {gid} timed out before the submit and is aborted."
            )))
        }
        Decide::Decided(input) => {
            engine
                .metrics
                .transition(Some(TxStatus::Trying), TxStatus::Committing);
            log::info!("gid={gid} prepared -> submitted (DTM)");
            crate::failpoints::crash_point("coord_after_decision");
            let wait = body
                .wait_result
                .or(Options::of(&input.0).wait_result)
                .unwrap_or(false);
            if wait {
                let status = engine.drive_loaded(input).await?.status;
                return Ok(if status == TxStatus::Committed {
                    success()
                } else {
                    ongoing(&gid)
                });
            }
            tokio::spawn(async move {
                if let Err(e) = engine.drive_loaded(input).await {
                    log::warn!("gid={gid} background submit: {e}; recovery will retry");
                }
            });
            Ok(success())
        }
    }
}

async fn abort(data: Data, JsonBody(body): JsonBody<GidBody>) -> Answer {
    validate::id("gid", &body.gid)?;
    check_trans_type(body.trans_type.as_deref())?;
    match data
        .engine
        .abort(&body.gid, "aborted by the client (DTM)")
        .await?
    {
        None => Err(not_found(&body.gid)),
        Some(s @ (TxStatus::Committing | TxStatus::Committed)) => Err(failure(format!(
            "Transaction {} is {} and cannot abort.",
            body.gid,
            dtm_status(s)
        ))),
        Some(_) => Ok(success()),
    }
}

#[derive(Deserialize)]
struct QueryParamsGid {
    gid: Option<String>,
}

async fn query(data: Data, QueryParams(q): QueryParams<QueryParamsGid>) -> Answer {
    let gid = q
        .gid
        .ok_or_else(|| ApiError::invalid("Query parameter `gid` is missing."))?;
    validate::id("gid", &gid)?;
    let g = gid.clone();
    let Some((tx, branches)) = data.pool.run(move |p| store::get_tx(p, &g)).await? else {
        return Err(not_found(&gid));
    };
    Ok(HttpResponse::Ok().json(json!({
        "transaction": transaction(&tx),
        "branches": branches.iter().flat_map(branch_rows).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
struct AllParams {
    position: Option<String>,
    limit: Option<i64>,
    status: Option<String>,
}

async fn all(data: Data, QueryParams(q): QueryParams<AllParams>) -> Answer {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(from_dtm_status(s).ok_or_else(|| {
            ApiError::invalid("Query parameter `status` must be one of prepared, submitted, succeed, aborting, failed.")
        })?),
    };
    let position = q.position.filter(|p| !p.is_empty());
    let (page, next) = super::api::page(&data, status, q.limit, position, "position").await?;
    Ok(HttpResponse::Ok().json(json!({
        "transactions": page.iter().map(|(t, _)| transaction(t)).collect::<Vec<_>>(),
        "next_position": next.unwrap_or_default(),
    })))
}

/// A transaction in DTM's shape.
fn transaction(tx: &TxRow) -> Value {
    let status = tx.status();
    let metadata: Value = serde_json::from_str(&tx.metadata).unwrap_or(Value::Null);
    json!({
        "gid": tx.gid,
        "trans_type": "tcc",
        "status": dtm_status(status),
        "protocol_type": "http",
        "create_time": rfc3339(tx.created_at),
        "update_time": rfc3339(tx.updated_at),
        "finish_time": tx.finished_at.filter(|_| status == TxStatus::Committed).map(rfc3339),
        "rollback_time": tx.finished_at.filter(|_| status == TxStatus::Aborted).map(rfc3339),
        "rollback_reason": tx.reason,
        "custom_data": metadata.get("custom_data").cloned().unwrap_or(Value::Null),
        "next_cron_time": tx.next_retry_at.filter(|_| !status.is_final()).map(rfc3339),
        "options": serde_json::to_value(Options::of(tx)).unwrap_or(Value::Null),
        "result": tx.last_error,
    })
}

/// DTM keeps one row per branch and phase-two op; so does this view.
fn branch_rows(b: &BranchRow) -> [Value; 2] {
    let row = |op: Op, done: BranchStatus| {
        let status = if b.status() == done {
            "succeed"
        } else if b.status() == BranchStatus::Failed && op == Op::Confirm {
            "failed"
        } else {
            "prepared"
        };
        json!({
            "gid": b.gid,
            "branch_id": b.branch_id,
            "op": op.as_str(),
            "url": b.dtm_url(op),
            "resource": if b.resource.is_empty() { Value::Null } else { Value::String(b.resource.clone()) },
            "data": b.payload,
            "status": status,
            "create_time": rfc3339(b.created_at),
            "update_time": rfc3339(b.updated_at),
        })
    };
    [
        row(Op::Cancel, BranchStatus::Cancelled),
        row(Op::Confirm, BranchStatus::Confirmed),
    ]
}
