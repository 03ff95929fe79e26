//! The coordinator's HTTP API (API.md §1): parse and validate at the edge, then call the store
//! and the engine.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::driver::Engine;
use super::model::{BranchStatus, CallOutcome, Op, TxStatus};
use super::store::{self, DeleteResource, ResourceRow, TxRow};
use super::unit::{Begin, Decide, NewBranch, PrepareBranch, TryOutcome};
use super::view;
use crate::db::Pool;
use crate::failpoints::crash_point;
use crate::http::error::ErrorCode;
use crate::http::extract::QueryParams;
use crate::http::{ApiError, JsonBody};
use crate::time::now_ms;
use crate::validate;

pub const MAX_METADATA_BYTES: usize = 4 * 1024;
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const MAX_REASON_CHARS: usize = 1024;
pub const PROTOCOL_NATIVE: &str = "native";

pub struct AppState {
    pub pool: Pool,
    pub engine: Arc<Engine>,
    pub default_timeout_ms: i64,
}

type Data = web::Data<AppState>;
type Answer = Result<HttpResponse, ApiError>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/resources", web::get().to(list_resources))
        .route("/v1/resources/{name}", web::put().to(put_resource))
        .route("/v1/resources/{name}", web::get().to(get_resource))
        .route("/v1/resources/{name}", web::delete().to(delete_resource))
        .route("/v1/transactions", web::post().to(begin))
        .route("/v1/transactions", web::get().to(list_transactions))
        .route("/v1/transactions/{gid}", web::get().to(get_transaction))
        .route(
            "/v1/transactions/{gid}/branches",
            web::post().to(add_branch),
        )
        .route("/v1/transactions/{gid}/commit", web::post().to(commit))
        .route("/v1/transactions/{gid}/abort", web::post().to(abort));
}

// ---------------------------------------------------------------------------------------------
// Resources

#[derive(Deserialize)]
struct RegisterBody {
    try_url: String,
    confirm_url: String,
    cancel_url: String,
}

async fn put_resource(
    data: Data,
    name: web::Path<String>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Answer {
    let name = name.into_inner();
    validate::resource_name("name", &name)?;
    validate::http_url("try_url", &body.try_url)?;
    validate::http_url("confirm_url", &body.confirm_url)?;
    validate::http_url("cancel_url", &body.cancel_url)?;
    let now = now_ms();
    let row = ResourceRow {
        name,
        try_url: body.try_url,
        confirm_url: body.confirm_url,
        cancel_url: body.cancel_url,
        created_at: now,
        updated_at: now,
    };
    let (row, created) = data
        .pool
        .run(move |p| store::upsert_resource(p, row))
        .await?;
    log::info!("resource {} registered (try {})", row.name, row.try_url);
    let mut answer = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer.json(view::resource(&row)))
}

async fn list_resources(data: Data) -> Answer {
    let rows = data.pool.run(store::list_resources).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"resources": rows.iter().map(view::resource).collect::<Vec<_>>()})))
}

async fn get_resource(data: Data, name: web::Path<String>) -> Answer {
    let name = name.into_inner();
    validate::resource_name("name", &name)?;
    let n = name.clone();
    match data.pool.run(move |p| store::get_resource(p, &n)).await? {
        Some(r) => Ok(HttpResponse::Ok().json(view::resource(&r))),
        None => Err(ApiError::not_found(format!(
            "No resource named {name} is registered."
        ))),
    }
}

async fn delete_resource(data: Data, name: web::Path<String>) -> Answer {
    let name = name.into_inner();
    validate::resource_name("name", &name)?;
    let n = name.clone();
    match data
        .pool
        .run(move |p| store::delete_resource(p, &n))
        .await?
    {
        DeleteResource::Deleted => {
            log::info!("resource {name} deleted");
            Ok(HttpResponse::NoContent().finish())
        }
        DeleteResource::NotFound => Err(ApiError::not_found(format!(
            "No resource named {name} is registered."
        ))),
        DeleteResource::InUse(gid) => Err(ApiError::conflict(format!(
            "Resource {name} has a branch in transaction {gid}, which is not final."
        ))
        .with("gid", gid)),
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions

#[derive(Deserialize)]
struct BeginBody {
    gid: Option<String>,
    timeout_ms: Option<i64>,
    metadata: Option<Value>,
}

async fn begin(data: Data, JsonBody(body): JsonBody<BeginBody>) -> Answer {
    if let Some(gid) = &body.gid {
        validate::id("gid", gid)?;
    }
    let timeout_ms = body.timeout_ms.unwrap_or(data.default_timeout_ms);
    validate::range("timeout_ms", timeout_ms, 100, 86_400_000)?;
    let metadata = match body.metadata {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(m @ Value::Object(_)) => m,
        Some(_) => return Err(ApiError::invalid("Field `metadata` must be a JSON object.")),
    };
    let metadata = metadata.to_string();
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(format!(
            "Field `metadata` must be at most {MAX_METADATA_BYTES} bytes of JSON."
        )));
    }
    let now = now_ms();
    let gid = body.gid.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let row = TxRow {
        gid: gid.clone(),
        status: TxStatus::Trying.as_str().into(),
        created_at: now,
        updated_at: now,
        expires_at: now + timeout_ms,
        finished_at: None,
        reason: None,
        metadata,
        attempts: 0,
        next_retry_at: None,
        last_error: None,
        due_at: now + timeout_ms,
        lease_owner: None,
        protocol: PROTOCOL_NATIVE.into(),
        options: None,
    };
    match data.engine.writer.begin(row).await? {
        Begin::Created(tx) => {
            data.engine.metrics.transition(None, TxStatus::Trying);
            log::info!("gid={gid} begun (timeout {timeout_ms} ms)");
            Ok(HttpResponse::Created().json(view::transaction(&tx, &[])))
        }
        Begin::Existing(tx) if tx.status() == TxStatus::Trying => {
            let g = gid.clone();
            let (tx, branches) = data
                .pool
                .run(move |p| store::get_tx(p, &g))
                .await?
                .unwrap_or((tx, Vec::new()));
            Ok(HttpResponse::Ok().json(view::transaction(&tx, &branches)))
        }
        Begin::Existing(tx) => Err(conflict_status(
            format!("Transaction {gid} already exists and is {}.", tx.status),
            tx.status(),
        )),
    }
}

async fn get_transaction(data: Data, gid: web::Path<String>) -> Answer {
    let gid = gid.into_inner();
    validate::id("gid", &gid)?;
    let (tx, branches) = load(&data, &gid).await?;
    Ok(HttpResponse::Ok().json(view::transaction(&tx, &branches)))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

async fn list_transactions(data: Data, QueryParams(q): QueryParams<ListQuery>) -> Answer {
    let status = match &q.status {
        None => None,
        Some(s) => Some(TxStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "Field `status` must be one of trying, committing, committed, aborting, aborted.",
            )
        })?),
    };
    let (page, next) = page(&data, status, q.limit, q.after, "after").await?;
    let items: Vec<_> = page.iter().map(|(t, b)| view::transaction(t, b)).collect();
    Ok(HttpResponse::Ok().json(json!({"transactions": items, "next": next})))
}

#[derive(Deserialize)]
struct BranchBody {
    resource: String,
    #[serde(default)]
    payload: Value,
    branch_id: Option<String>,
}

async fn add_branch(
    data: Data,
    gid: web::Path<String>,
    JsonBody(body): JsonBody<BranchBody>,
) -> Answer {
    let gid = gid.into_inner();
    validate::id("gid", &gid)?;
    validate::resource_name("resource", &body.resource)?;
    if let Some(id) = &body.branch_id {
        validate::id("branch_id", id)?;
    }
    let payload = body.payload.to_string();
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::invalid(format!(
            "Field `payload` must be at most {MAX_PAYLOAD_BYTES} bytes of JSON."
        )));
    }
    let new = NewBranch {
        gid: gid.clone(),
        branch_id: body.branch_id,
        resource: body.resource.clone(),
        payload,
        now: now_ms(),
    };
    let (branch, resource) = match data.engine.writer.add_branch(new).await? {
        PrepareBranch::New(b, r) => (b, r),
        PrepareBranch::NotFound => return Err(no_tx(&gid)),
        PrepareBranch::NotTrying(s) => {
            return Err(conflict_status(
                format!("Transaction {gid} is {s}; branches can only join while it is trying."),
                s,
            ));
        }
        PrepareBranch::Expired => {
            let s = data
                .engine
                .abort(&gid, "timed out")
                .await?
                .unwrap_or(TxStatus::Aborting);
            return Err(conflict_status(
                format!("Transaction {gid} has expired and is aborted."),
                s,
            ));
        }
        PrepareBranch::UnknownResource => {
            return Err(ApiError::invalid(format!(
                "Field `resource`: no resource named {} is registered.",
                body.resource
            )));
        }
        PrepareBranch::Mismatch => {
            return Err(ApiError::conflict(
                "This branch_id was already used with another resource or payload.".to_string(),
            ));
        }
        PrepareBranch::Existing(b) => return stored_outcome(&data, b).await,
    };
    log::info!(
        "gid={gid} branch={} stored, sending Try to {}",
        branch.branch_id,
        resource.name
    );
    crash_point("coord_after_branch_stored");

    let res = data
        .engine
        .invoker
        .call(
            &resource.try_url,
            Op::Try,
            &gid,
            &branch.branch_id,
            &branch.payload,
        )
        .await;
    data.engine.metrics.call(Op::Try, res.outcome);
    crash_point("coord_after_try");
    let tx_status = data
        .engine
        .writer
        .record_try(TryOutcome {
            gid: gid.clone(),
            branch_id: branch.branch_id.clone(),
            outcome: res.outcome,
            response: res.body.clone(),
            error: res.error.clone(),
            now: now_ms(),
        })
        .await?
        .ok_or_else(|| no_tx(&gid))?;
    match res.outcome {
        CallOutcome::Done if tx_status != TxStatus::Trying => {
            // Aborted (by the client or the timeout) while the Try was on its way: the branch
            // is being cancelled, so it must not be reported as usable.
            log::info!(
                "gid={gid} branch={} tried after the transaction became {tx_status}",
                branch.branch_id
            );
            Err(conflict_status(
                format!(
                    "Transaction {gid} became {tx_status} while the Try of branch {} was in flight.",
                    branch.branch_id
                ),
                tx_status,
            ))
        }
        CallOutcome::Done => {
            log::info!("gid={gid} branch={} tried", branch.branch_id);
            let tried = store::BranchRow {
                status: BranchStatus::Tried.as_str().into(),
                response: res.body,
                ..branch
            };
            Ok(HttpResponse::Ok().json(view::tried_branch(&tried)))
        }
        failed => {
            let why = res.error.unwrap_or_default();
            log::warn!(
                "gid={gid} branch={} Try {}: {why}",
                branch.branch_id,
                failed.as_str()
            );
            let status = data
                .engine
                .abort(
                    &gid,
                    &format!("Try of branch {} {}", branch.branch_id, failed.as_str()),
                )
                .await?
                .unwrap_or(TxStatus::Aborting);
            Err(try_failure(
                failed,
                &gid,
                &branch.branch_id,
                status,
                res.body.as_deref(),
                &why,
            ))
        }
    }
}

/// The answer to a repeated branch: what the first call got, without a second Try.
async fn stored_outcome(data: &Data, b: store::BranchRow) -> Answer {
    let outcome = b.try_outcome.as_deref().and_then(CallOutcome::parse);
    match outcome {
        Some(CallOutcome::Done) => Ok(HttpResponse::Ok().json(view::tried_branch(&b))),
        Some(failed) => {
            let (tx, _) = load(data, &b.gid).await?;
            let why = b.last_error.clone().unwrap_or_default();
            Err(try_failure(
                failed,
                &b.gid,
                &b.branch_id,
                tx.status(),
                b.response.as_deref(),
                &why,
            ))
        }
        None => Err(ApiError::conflict(format!(
            "The Try of branch {} is still in progress.",
            b.branch_id
        ))),
    }
}

fn try_failure(
    outcome: CallOutcome,
    gid: &str,
    branch_id: &str,
    status: TxStatus,
    response: Option<&str>,
    why: &str,
) -> ApiError {
    let err = if outcome == CallOutcome::Refused {
        ApiError::new(
            ErrorCode::TryFailed,
            format!(
                "The resource refused the Try of branch {branch_id}; the transaction is aborted."
            ),
        )
        .with(
            "resource_response",
            response
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null),
        )
    } else {
        ApiError::new(
            ErrorCode::ResourceUnavailable,
            format!(
                "The Try of branch {branch_id} did not complete ({why}); the transaction is aborted."
            ),
        )
    };
    err.with("gid", gid)
        .with("branch_id", branch_id)
        .with("status", status.as_str())
}

#[derive(Deserialize)]
struct CommitQuery {
    wait: Option<bool>,
}

async fn commit(
    data: Data,
    gid: web::Path<String>,
    QueryParams(q): QueryParams<CommitQuery>,
) -> Answer {
    let gid = gid.into_inner();
    validate::id("gid", &gid)?;
    let wait = q.wait.unwrap_or(true);
    let engine = data.engine.clone();
    let decided = engine.decide(&gid, TxStatus::Committing, None).await?;
    match decided {
        Decide::NotFound => Err(no_tx(&gid)),
        Decide::BranchOpen(why) => Err(conflict_status(
            format!("Cannot commit yet: {why}."),
            TxStatus::Trying,
        )),
        Decide::Unchanged(s @ (TxStatus::Committing | TxStatus::Committed)) => {
            log::debug!("gid={gid} commit repeated while {s}");
            current(&data, &gid).await
        }
        Decide::Unchanged(s) => Err(conflict_status(
            format!("Transaction {gid} is {s} and cannot commit."),
            s,
        )),
        Decide::Expired(input) => {
            engine
                .metrics
                .transition(Some(TxStatus::Trying), TxStatus::Aborting);
            log::info!("gid={gid} trying -> aborting (commit after expiry)");
            let s = engine.drive_loaded(input).await?.status;
            Err(conflict_status(
                format!("Transaction {gid} expired before the commit and is aborted."),
                s,
            ))
        }
        Decide::Decided(input) => {
            engine
                .metrics
                .transition(Some(TxStatus::Trying), TxStatus::Committing);
            log::info!("gid={gid} trying -> committing");
            crash_point("coord_after_decision");
            if !wait {
                // The decision is durable: answer 202 with it now, confirm in the background.
                let answer = HttpResponse::Accepted().json(view::transaction(&input.0, &input.1));
                tokio::spawn(async move {
                    if let Err(e) = engine.drive_loaded(input).await {
                        log::warn!("gid={gid} background commit: {e}; recovery will retry");
                    }
                });
                return Ok(answer);
            }
            match engine.drive_loaded(input).await?.rows {
                Some((tx, branches)) => Ok(answer_for(&tx, &branches)),
                None => current(&data, &gid).await,
            }
        }
    }
}

#[derive(Deserialize)]
struct AbortBody {
    reason: Option<String>,
}

async fn abort(data: Data, gid: web::Path<String>, JsonBody(body): JsonBody<AbortBody>) -> Answer {
    let gid = gid.into_inner();
    validate::id("gid", &gid)?;
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::invalid(format!(
            "Field `reason` must be at most {MAX_REASON_CHARS} characters."
        )));
    }
    let reason = body
        .reason
        .unwrap_or_else(|| "aborted by the client".into());
    match data.engine.abort(&gid, &reason).await? {
        None => Err(no_tx(&gid)),
        Some(s @ (TxStatus::Committing | TxStatus::Committed)) => Err(conflict_status(
            format!("Transaction {gid} is {s} and cannot abort."),
            s,
        )),
        Some(_) => current(&data, &gid).await,
    }
}

// ---------------------------------------------------------------------------------------------

async fn load(data: &Data, gid: &str) -> Result<(TxRow, Vec<store::BranchRow>), ApiError> {
    let g = gid.to_string();
    data.pool
        .run(move |p| store::get_tx(p, &g))
        .await?
        .ok_or_else(|| no_tx(gid))
}

/// 200 when final, 202 while phase two goes on.
fn answer_for(tx: &TxRow, branches: &[store::BranchRow]) -> HttpResponse {
    let mut answer = if tx.status().is_final() {
        HttpResponse::Ok()
    } else {
        HttpResponse::Accepted()
    };
    answer.json(view::transaction(tx, branches))
}

/// The transaction as it is now: 200 when final, 202 while phase two goes on.
async fn current(data: &Data, gid: &str) -> Answer {
    let (tx, branches) = load(data, gid).await?;
    Ok(answer_for(&tx, &branches))
}

/// One page of the newest-first list, after the transaction `after` (named by the parameter
/// `cursor`): up to `limit` (1..=1000, default 100) transactions, and the cursor of the next
/// page, if there is one.
pub async fn page(
    data: &Data,
    status: Option<TxStatus>,
    limit: Option<i64>,
    after: Option<String>,
    cursor: &'static str,
) -> Result<(Vec<store::TxWithBranches>, Option<String>), ApiError> {
    let limit = limit.unwrap_or(100);
    validate::range("limit", limit, 1, 1000)?;
    if let Some(a) = &after {
        validate::id(cursor, a)?;
    }
    let mut page = data
        .pool
        .run(move |p| store::list_txs(p, status, limit + 1, after.as_deref()))
        .await?
        .ok_or_else(|| {
            ApiError::invalid(format!("Query parameter `{cursor}` names no transaction."))
        })?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let next = if more {
        page.last().map(|(t, _)| t.gid.clone())
    } else {
        None
    };
    Ok((page, next))
}

fn no_tx(gid: &str) -> ApiError {
    ApiError::not_found(format!("No transaction with gid {gid}."))
}

fn conflict_status(message: String, status: TxStatus) -> ApiError {
    ApiError::conflict(message).with("status", status.as_str())
}

pub async fn readyz(data: Data) -> Answer {
    data.pool.run(|p| p.ping()).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "database": data.pool.backend_name()})))
}

pub async fn metrics(data: Data) -> HttpResponse {
    crate::http::server::metrics_response(&data.engine.metrics.registry)
}
