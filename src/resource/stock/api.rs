//! The stock service's HTTP API (API.md §3).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::FaultSpec;
use super::model::{Counters, parse_items};
use super::service::{KeyView, Stock};
use crate::http::error::ErrorCode;
use crate::http::extract::QueryParams;
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

/// The ids of a DTM-style call (DTM SDKs and DTM-protocol coordinators put them in the query
/// string and send the branch data as the whole body).
#[derive(Deserialize)]
struct DtmQuery {
    gid: Option<String>,
    branch_id: Option<String>,
    op: Option<String>,
}

async fn tcc_try(
    data: Data,
    req: HttpRequest,
    q: QueryParams<DtmQuery>,
    body: JsonBody<Value>,
) -> Answer {
    tcc(data, req, q.0, body.0, Op::Try).await
}

async fn tcc_confirm(
    data: Data,
    req: HttpRequest,
    q: QueryParams<DtmQuery>,
    body: JsonBody<Value>,
) -> Answer {
    tcc(data, req, q.0, body.0, Op::Confirm).await
}

async fn tcc_cancel(
    data: Data,
    req: HttpRequest,
    q: QueryParams<DtmQuery>,
    body: JsonBody<Value>,
) -> Answer {
    tcc(data, req, q.0, body.0, Op::Cancel).await
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn body_str(body: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!(
            "Field `{field}` must be a string."
        ))),
    }
}

/// One TCC call, native (API.md §2: ids in the body or the `X-Tcc-*` headers, the payload under
/// `payload`) or DTM-style (ids in the query string, the payload is the body).
async fn tcc(data: Data, req: HttpRequest, q: DtmQuery, body: Value, op: Op) -> Answer {
    let dtm = q.gid.is_some() && q.branch_id.is_some();
    let (gid, branch_id, payload) = if dtm {
        if q.op.as_deref().is_some_and(|o| o != op.as_str()) {
            return Err(ApiError::invalid(format!(
                "Query parameter `op` does not match this {op} endpoint."
            )));
        }
        (q.gid, q.branch_id, body)
    } else {
        let gid = body_str(&body, "gid")?.or_else(|| header(&req, "X-Tcc-Gid"));
        let branch_id = body_str(&body, "branch_id")?.or_else(|| header(&req, "X-Tcc-Branch-Id"));
        (
            gid,
            branch_id,
            body.get("payload").cloned().unwrap_or(Value::Null),
        )
    };
    let gid = gid.ok_or_else(|| ApiError::invalid("Field `gid` is missing."))?;
    let branch_id = branch_id.ok_or_else(|| ApiError::invalid("Field `branch_id` is missing."))?;
    validate::id("gid", &gid)?;
    validate::id("branch_id", &branch_id)?;
    let items = match parse_items(&payload) {
        Ok(items) => items,
        // A Cancel must always be able to succeed: with a payload no Try could have accepted,
        // there is nothing to release here, but the barrier must still block a late Try.
        Err(_) if op == Op::Cancel => Vec::new(),
        Err(e) => return Err(e),
    };
    let outcome = match data.call(op, &gid, &branch_id, &items).await {
        Ok(o) => o,
        // DTM clients read FAILURE in the body as a final refusal.
        Err(e) if dtm && e.code == ErrorCode::InsufficientStock => {
            return Err(e.with("dtm_result", "FAILURE"));
        }
        Err(e) => return Err(e),
    };
    let mut answer =
        json!({"gid": gid, "branch_id": branch_id, "op": op.as_str(), "result": outcome.as_str()});
    if dtm {
        answer["dtm_result"] = json!("SUCCESS");
    }
    Ok(HttpResponse::Ok().json(answer))
}

fn counters(c: &Counters) -> Value {
    json!({"available": c.available, "locked": c.locked, "consumed": c.consumed})
}

fn key_view(v: &KeyView) -> Value {
    let mut view = json!({
        "key": v.row.key,
        "db": counters(&v.row.counters()),
        "redis": v.redis.as_ref().map(counters),
        "consistent": v.consistent(),
    });
    if let Some(e) = &v.redis_error {
        view["redis_error"] = json!(e);
    }
    view
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
