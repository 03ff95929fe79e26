//! The stock service's HTTP API (API.md §3).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::FaultSpec;
use super::model::{Counters, parse_items};
use super::service::{KeyView, Stock};
use crate::http::{ApiError, JsonBody};
use crate::resource::Op;
use crate::validate;

type Data = web::Data<Stock>;
type Answer = Result<HttpResponse, ApiError>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/tcc/try", web::post().to(tcc_try))
        .route("/tcc/confirm", web::post().to(tcc_confirm))
        .route("/tcc/cancel", web::post().to(tcc_cancel))
        .route("/v1/stock", web::get().to(list_stock))
        .route("/v1/stock/{key}", web::put().to(put_stock))
        .route("/v1/stock/{key}", web::get().to(get_stock))
        .route("/v1/consistency", web::get().to(consistency))
        .route("/v1/consistency/repair", web::post().to(repair))
        .route("/v1/faults", web::post().to(arm_fault))
        .route("/v1/faults", web::delete().to(clear_faults))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// The coordinator's call body (API.md §2); the headers say the same and are used when the
/// body leaves a field out.
#[derive(Deserialize)]
struct TccBody {
    gid: Option<String>,
    branch_id: Option<String>,
    #[serde(default)]
    payload: Value,
}

async fn tcc_try(data: Data, req: HttpRequest, body: JsonBody<TccBody>) -> Answer {
    tcc(data, req, body.0, Op::Try).await
}

async fn tcc_confirm(data: Data, req: HttpRequest, body: JsonBody<TccBody>) -> Answer {
    tcc(data, req, body.0, Op::Confirm).await
}

async fn tcc_cancel(data: Data, req: HttpRequest, body: JsonBody<TccBody>) -> Answer {
    tcc(data, req, body.0, Op::Cancel).await
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn tcc(data: Data, req: HttpRequest, body: TccBody, op: Op) -> Answer {
    let gid = body
        .gid
        .or_else(|| header(&req, "X-Tcc-Gid"))
        .ok_or_else(|| ApiError::invalid("Field `gid` is missing."))?;
    let branch_id = body
        .branch_id
        .or_else(|| header(&req, "X-Tcc-Branch-Id"))
        .ok_or_else(|| ApiError::invalid("Field `branch_id` is missing."))?;
    validate::id("gid", &gid)?;
    validate::id("branch_id", &branch_id)?;
    let items = match parse_items(&body.payload) {
        Ok(items) => items,
        // A Cancel must always be able to succeed: with a payload no Try could have accepted,
        // there is nothing to release here, but the barrier must still block a late Try.
        Err(_) if op == Op::Cancel => Vec::new(),
        Err(e) => return Err(e),
    };
    let outcome = data.call(op, &gid, &branch_id, &items).await?;
    Ok(HttpResponse::Ok().json(json!({
        "gid": gid, "branch_id": branch_id, "op": op.as_str(), "result": outcome.as_str(),
    })))
}

fn counters(c: &Counters) -> Value {
    json!({"available": c.available, "locked": c.locked, "consumed": c.consumed})
}

fn key_view(v: &KeyView) -> Value {
    json!({
        "key": v.row.key,
        "db": counters(&v.row.counters()),
        "redis": v.redis.as_ref().map(counters),
        "consistent": v.consistent(),
    })
}

#[derive(Deserialize)]
struct PutBody {
    available: i64,
}

async fn put_stock(
    data: Data,
    key: web::Path<String>,
    JsonBody(body): JsonBody<PutBody>,
) -> Answer {
    let key = key.into_inner();
    validate::id("key", &key)?;
    validate::range("available", body.available, 0, i64::MAX / 4)?;
    let view = data.put(&key, body.available).await?;
    Ok(HttpResponse::Ok().json(key_view(&view)))
}

async fn get_stock(data: Data, key: web::Path<String>) -> Answer {
    let key = key.into_inner();
    validate::id("key", &key)?;
    match data.get(&key).await? {
        Some(v) => Ok(HttpResponse::Ok().json(key_view(&v))),
        None => Err(ApiError::not_found(format!("No stock key {key}."))),
    }
}

async fn list_stock(data: Data) -> Answer {
    let all = data.list().await?;
    Ok(HttpResponse::Ok().json(json!({"stock": all.iter().map(key_view).collect::<Vec<_>>()})))
}

fn mismatch(v: &KeyView) -> Value {
    json!({"key": v.row.key, "db": counters(&v.row.counters()), "redis": v.redis.as_ref().map(counters)})
}

async fn consistency(data: Data) -> Answer {
    let (checked, mismatches) = data.check(false).await?;
    Ok(HttpResponse::Ok().json(json!({"checked": checked, "mismatches": mismatches.iter().map(mismatch).collect::<Vec<_>>()})))
}

async fn repair(data: Data) -> Answer {
    let (_, repaired) = data.check(true).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"repaired": repaired.iter().map(|v| v.row.key.clone()).collect::<Vec<_>>()})))
}

fn faults(data: &Data) -> Result<&super::faults::Faults, ApiError> {
    data.faults.as_ref().ok_or_else(|| {
        ApiError::not_found("Fault injection is off; start the service with --faults.")
    })
}

async fn arm_fault(data: Data, JsonBody(spec): JsonBody<FaultSpec>) -> Answer {
    let f = faults(&data)?;
    log::warn!("fault armed: {spec:?}");
    f.arm(spec)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn clear_faults(data: Data) -> Answer {
    faults(&data)?.clear();
    Ok(HttpResponse::NoContent().finish())
}

async fn readyz(data: Data) -> Answer {
    data.ready().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

async fn metrics(data: Data) -> HttpResponse {
    crate::http::server::metrics_response(&data.metrics.registry)
}
