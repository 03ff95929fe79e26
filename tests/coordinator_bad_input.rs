//! Bad input is refused at the edge with the right 4xx and `error.code`, nothing is written,
//! and the server keeps serving (API.md conventions and section 1).

#[macro_use]
mod support;

use reqwest::Method;
use support::*;

backend_tests!(
    bad_begin_requests,
    bad_branch_requests,
    unknown_gids_and_resources,
    bad_resource_registrations,
    bad_abort_and_list_requests,
);

/// Sends raw bytes; retries a transport error (a server may close the connection right after
/// answering a refused large body, before the client finished sending it).
async fn raw(api: &Api, method: Method, path: &str, ct: Option<&str>, body: &[u8]) -> (u16, Value) {
    let mut last = None;
    for _ in 0..3 {
        match api.raw(method.clone(), path, ct, body.to_vec()).await {
            Ok(r) => return r,
            Err(e) => last = Some(e),
        }
    }
    panic!("{method} {path}: transport error: {last:?}")
}

async fn post_json(api: &Api, path: &str, body: &str) -> (u16, Value) {
    raw(
        api,
        Method::POST,
        path,
        Some("application/json"),
        body.as_bytes(),
    )
    .await
}

/// A 400 `invalid_request` whose message names `field` (when given).
#[track_caller]
fn assert_invalid(r: &(u16, Value), field: Option<&str>, what: &str) {
    assert_error(r, 400, "invalid_request", what);
    if let Some(field) = field {
        let message = r.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{what}: the message should name `{field}`: {message}"
        );
    }
}

async fn assert_alive_and_transactions(api: &Api, want: &[&str]) {
    assert_eq!(api.get_text("/healthz").await.0, 200);
    let r = api.list(&[]).await;
    assert_status(&r, 200, "list");
    let mut gids: Vec<&str> = r.1["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["gid"].as_str().unwrap())
        .collect();
    gids.sort();
    assert_eq!(gids, want, "refused requests must write nothing: {:#}", r.1);
}

async fn bad_begin_requests(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let api = env.api();
    let p = "/v1/transactions";

    assert_invalid(
        &post_json(api, p, "{\"gid\": ").await,
        None,
        "malformed JSON",
    );
    assert_invalid(&post_json(api, p, "[1, 2]").await, None, "not an object");
    for (body, field) in [
        (json!({"timeout_ms": "x"}), "timeout_ms"),
        (json!({"timeout_ms": -1}), "timeout_ms"),
        (json!({"timeout_ms": 1_000_000_000_000i64}), "timeout_ms"),
        (json!({"timeout_ms": 99}), "timeout_ms"),
        (json!({"timeout_ms": 86_400_001}), "timeout_ms"),
        (json!({"timeout_ms": 1.5}), "timeout_ms"),
        (json!({"gid": "has space"}), "gid"),
        (json!({"gid": "g".repeat(129)}), "gid"),
        (json!({"gid": ""}), "gid"),
        (json!({"gid": "é"}), "gid"),
        (json!({"gid": 42}), "gid"),
        (json!({"metadata": [1, 2]}), "metadata"),
        (json!({"metadata": "text"}), "metadata"),
        (json!({"metadata": {"big": "m".repeat(5000)}}), "metadata"),
    ] {
        let r = api.begin(body.clone()).await;
        assert_invalid(&r, Some(field), &format!("begin {body}"));
    }

    // More than 1 MiB: 413, whatever the JSON inside.
    let big = format!("{{\"metadata\": {{\"x\": \"{}\"}}}}", "a".repeat(2 << 20));
    let r = post_json(api, p, &big).await;
    assert_error(&r, 413, "payload_too_large", "2 MiB body");

    // Not JSON.
    let r = raw(api, Method::POST, p, Some("text/plain"), b"{}").await;
    assert_error(&r, 415, "unsupported_media_type", "text/plain body");
    let r = raw(
        api,
        Method::POST,
        p,
        Some("application/x-www-form-urlencoded"),
        b"gid=x",
    )
    .await;
    assert_error(&r, 415, "unsupported_media_type", "form body");

    assert_alive_and_transactions(api, &[]).await;

    // The limits themselves are accepted.
    let edge = "g".repeat(128);
    for body in [
        json!({"gid": edge, "timeout_ms": 100}),
        json!({"gid": "A.b_c:d-9", "timeout_ms": 86_400_000}),
    ] {
        let r = api.begin(body.clone()).await;
        assert_status(&r, 201, &format!("begin {body}"));
    }
    let (code, tx) = api.get(&edge).await;
    assert_eq!(code, 200, "{tx:#}");
}

async fn bad_branch_requests(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    let api = env.api();
    let gid = env.begin(json!({"gid": "tx-1"})).await;
    let p = format!("/v1/transactions/{gid}/branches");

    assert_invalid(
        &post_json(api, &p, "{\"resource\": ").await,
        None,
        "malformed",
    );
    for (body, field) in [
        (json!({"resource": "nope", "payload": {}}), Some("resource")),
        (json!({"payload": {}}), Some("resource")),
        (json!({"resource": 7, "payload": {}}), Some("resource")),
        (
            json!({"resource": "alpha", "payload": {}, "branch_id": "has space"}),
            Some("branch_id"),
        ),
        (
            json!({"resource": "alpha", "payload": {}, "branch_id": "b".repeat(129)}),
            Some("branch_id"),
        ),
        (
            json!({"resource": "alpha", "payload": {}, "branch_id": 3}),
            Some("branch_id"),
        ),
        (
            json!({"resource": "alpha", "payload": {"blob": "p".repeat(70 * 1024)}}),
            Some("payload"),
        ),
    ] {
        let r = api.add_branch(&gid, body.clone()).await;
        let shown: String = body.to_string().chars().take(120).collect();
        assert_invalid(&r, field, &format!("branch {shown}"));
    }
    let r = raw(api, Method::POST, &p, Some("text/plain"), b"{}").await;
    assert_error(&r, 415, "unsupported_media_type", "text/plain branch");

    let (_, tx) = api.get(&gid).await;
    assert_eq!(tx["status"], "trying", "{tx:#}");
    assert_eq!(tx["branches"], json!([]), "nothing written: {tx:#}");
    assert_eq!(env.fake.all_calls().len(), 0, "no Try was sent");
    assert_alive_and_transactions(api, &["tx-1"]).await;

    // The same transaction still works, with a payload just under 64 KiB.
    let big = "p".repeat(60 * 1024);
    let r = api
        .add_branch(&gid, json!({"resource": "alpha", "payload": {"blob": big}}))
        .await;
    assert_status(&r, 200, "60 KiB payload");
    assert_eq!(
        env.fake.calls("alpha", Op::Try)[0].payload["blob"],
        big.as_str()
    );
    assert_status(&api.commit(&gid).await, 200, "commit");
}

async fn unknown_gids_and_resources(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    env.register("alpha").await;
    let api = env.api();

    assert_error(&api.get("nope").await, 404, "not_found", "GET unknown gid");
    assert_error(
        &api.commit("nope").await,
        404,
        "not_found",
        "commit unknown gid",
    );
    assert_error(
        &api.abort("nope", None).await,
        404,
        "not_found",
        "abort unknown gid",
    );
    let r = api
        .add_branch("nope", json!({"resource": "alpha", "payload": {}}))
        .await;
    assert_error(&r, 404, "not_found", "branch on unknown gid");
    assert_error(
        &api.get_resource("nope").await,
        404,
        "not_found",
        "GET unknown resource",
    );
    assert_error(
        &api.delete_resource("nope").await,
        404,
        "not_found",
        "DELETE unknown resource",
    );
    assert_eq!(env.fake.all_calls().len(), 0);
    assert_alive_and_transactions(api, &[]).await;
}

async fn bad_resource_registrations(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let api = env.api();
    let (t, c, x) = env.fake.urls("alpha");
    let too_long = "n".repeat(65);

    for (name, body, field) in [
        (
            "alpha",
            json!({"try_url": "ftp://127.0.0.1/try", "confirm_url": c, "cancel_url": x}),
            Some("try_url"),
        ),
        (
            "alpha",
            json!({"try_url": t, "confirm_url": "/relative", "cancel_url": x}),
            Some("confirm_url"),
        ),
        (
            "alpha",
            json!({"try_url": t, "confirm_url": c, "cancel_url": "not a url"}),
            Some("cancel_url"),
        ),
        (
            "alpha",
            json!({"try_url": t, "confirm_url": c}),
            Some("cancel_url"),
        ),
        (
            "alpha",
            json!({"try_url": 5, "confirm_url": c, "cancel_url": x}),
            Some("try_url"),
        ),
        ("Alpha", env.fake.registration("alpha"), None),
        ("a.b", env.fake.registration("alpha"), None),
        (too_long.as_str(), env.fake.registration("alpha"), None),
    ] {
        let r = api.put_resource(name, body.clone()).await;
        assert_invalid(&r, field, &format!("PUT /v1/resources/{name} {body}"));
    }
    let r = raw(
        api,
        Method::PUT,
        "/v1/resources/alpha",
        Some("application/json"),
        b"{\"try_url\": ",
    )
    .await;
    assert_invalid(&r, None, "malformed registration");
    let r = raw(
        api,
        Method::PUT,
        "/v1/resources/alpha",
        Some("text/plain"),
        env.fake.registration("alpha").to_string().as_bytes(),
    )
    .await;
    assert_error(&r, 415, "unsupported_media_type", "text/plain registration");

    assert_eq!(api.get_text("/healthz").await.0, 200);
    let r = api.list_resources().await;
    assert_status(&r, 200, "list resources");
    assert_eq!(r.1["resources"], json!([]), "nothing registered: {:#}", r.1);

    // https is fine too, and so is the longest name.
    let r = api
        .put_resource(
            "secure",
            json!({"try_url": "https://example.invalid/t", "confirm_url": "https://example.invalid/c",
                   "cancel_url": "https://example.invalid/x"}),
        )
        .await;
    assert_status(&r, 201, "https URLs");
    let long = "n".repeat(64);
    let r = api.put_resource(&long, env.fake.registration(&long)).await;
    assert_status(&r, 201, "64-char name");
}

async fn bad_abort_and_list_requests(backend: Backend) {
    let env = TestEnv::start(backend, &[]).await;
    let api = env.api();
    let gid = env.begin(json!({"gid": "tx-1"})).await;

    let r = api
        .abort(&gid, Some(json!({"reason": "r".repeat(1025)})))
        .await;
    assert_invalid(&r, Some("reason"), "reason of 1025 chars");
    let r = api.abort(&gid, Some(json!({"reason": 5}))).await;
    assert_invalid(&r, Some("reason"), "reason not a string");
    let r = post_json(api, &format!("/v1/transactions/{gid}/abort"), "{\"reason\"").await;
    assert_invalid(&r, None, "malformed abort body");
    let (_, tx) = api.get(&gid).await;
    assert_eq!(tx["status"], "trying", "refused aborts changed it: {tx:#}");

    for q in [
        vec![("limit", "0")],
        vec![("limit", "1001")],
        vec![("limit", "-1")],
        vec![("limit", "many")],
        vec![("status", "bogus")],
    ] {
        let r = api.list(&q).await;
        let field = q[0].0;
        assert_invalid(&r, Some(field), &format!("list {q:?}"));
    }
    let r = api.list(&[("limit", "1000")]).await;
    assert_status(&r, 200, "limit=1000");
    assert_alive_and_transactions(api, &["tx-1"]).await;

    // Unknown paths and methods are client errors with the usual error body.
    let r = raw(api, Method::GET, "/v1/nothing-here", None, b"").await;
    assert_error(&r, 404, "not_found", "unknown path");
    let r = raw(api, Method::DELETE, "/v1/transactions/tx-1", None, b"").await;
    assert!(r.0 >= 400 && r.0 < 500, "unknown method: {} {:#}", r.0, r.1);
    assert!(
        r.1["error"]["code"].is_string() && r.1["error"]["message"].is_string(),
        "unknown method: the error body: {:#}",
        r.1
    );
}
