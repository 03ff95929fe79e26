//! `tccd stock` at its edge (API.md conventions and section 3): every bad payload is a 400 that
//! names the field and writes nothing; bad administration calls, unknown keys and the fault
//! endpoint without `--faults`; the operations endpoints.

#[macro_use]
mod support;

use reqwest::Method;

use support::stock::*;
use support::*;

backend_tests!(
    bad_tcc_payloads_are_refused,
    bad_administration_calls,
    faults_need_the_flag,
    operations_endpoints,
    identifier_limits_and_body_limits,
);

async fn bad_tcc_payloads_are_refused(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k", 10).await;
    svc.seed(&mut ledger, "k2", 10).await;

    let hundred_and_one: Vec<Value> = (0..101)
        .map(|i| json!({"key": format!("key-{i}"), "amount": 1}))
        .collect();
    let hundred: Vec<Value> = (0..100)
        .map(|i| json!({"key": format!("key-{i}"), "amount": 1}))
        .collect();
    let long_key = "k".repeat(129);
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("no items", json!({"items": []}), &["items"]),
        ("101 items", json!({"items": hundred_and_one}), &["items"]),
        (
            "duplicate keys",
            json!({"items": [{"key": "k", "amount": 1}, {"key": "k", "amount": 2}]}),
            &["items", "key"],
        ),
        (
            "amount 0",
            json!({"items": [{"key": "k", "amount": 0}]}),
            &["amount"],
        ),
        (
            "negative amount",
            json!({"items": [{"key": "k2", "amount": 1}, {"key": "k", "amount": -1}]}),
            &["amount"],
        ),
        (
            "amount above 10^12",
            json!({"items": [{"key": "k", "amount": 1_000_000_000_001_i64}]}),
            &["amount"],
        ),
        (
            "fractional amount",
            json!({"items": [{"key": "k", "amount": 1.5}]}),
            &["amount"],
        ),
        (
            "amount as a string",
            json!({"items": [{"key": "k", "amount": "1"}]}),
            &["amount"],
        ),
        (
            "missing amount",
            json!({"items": [{"key": "k"}]}),
            &["amount"],
        ),
        (
            "key with a space",
            json!({"items": [{"key": "k2", "amount": 1}, {"key": "bad key", "amount": 1}]}),
            &["key"],
        ),
        (
            "empty key",
            json!({"items": [{"key": "", "amount": 1}]}),
            &["key"],
        ),
        (
            "key of 129 characters",
            json!({"items": [{"key": long_key, "amount": 1}]}),
            &["key"],
        ),
        (
            "key not a string",
            json!({"items": [{"key": 7, "amount": 1}]}),
            &["key"],
        ),
        ("no items field", json!({}), &["items"]),
        ("items not an array", json!({"items": "k"}), &["items"]),
        ("payload not an object", json!(null), &["payload", "items"]),
    ];

    for (what, payload, fields) in &cases {
        let gid = new_gid("bad");
        let r = svc.tcc_payload("try", &gid, "01", payload.clone()).await;
        assert_invalid(&r, fields, &format!("Try with {what}"));
        assert_invariants(&svc, &ledger, &format!("after the Try with {what}")).await;
    }

    // One hundred distinct items is allowed (they are short, so 409, but not a 400).
    let r = svc
        .tcc_payload("try", &new_gid("g"), "01", json!({"items": hundred}))
        .await;
    assert_eq!(r.0, 409, "Try with 100 items of unstocked keys: {:#}", r.1);

    // Bad identifiers in the body.
    let body = |gid: &str, branch: &str| {
        json!({"gid": gid, "branch_id": branch, "op": "try", "payload": items(&[("k", 1)])})
            .to_string()
            .into_bytes()
    };
    let r = svc
        .tcc_request("try", Some(("bad gid", "01")), Some(body("bad gid", "01")))
        .await;
    assert_invalid(&r, &["gid"], "Try with a bad gid");
    let r = svc
        .tcc_request("try", Some(("g-1", "")), Some(body("g-1", "")))
        .await;
    assert_invalid(&r, &["branch_id", "branch"], "Try with an empty branch_id");

    // Malformed JSON and a missing payload.
    let r = svc
        .tcc_request("try", Some(("g-2", "01")), Some(b"{\"gid\": ".to_vec()))
        .await;
    assert_error(&r, 400, "invalid_request", "Try with malformed JSON");
    let r = svc
        .tcc_request(
            "try",
            Some(("g-3", "01")),
            Some(
                json!({"gid": "g-3", "branch_id": "01", "op": "try"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_invalid(&r, &["payload", "items"], "Try without a payload");

    // Confirm checks its payload too (the coordinator only confirms a Try that accepted it).
    let r = svc
        .tcc_payload(
            "confirm",
            &new_gid("g"),
            "01",
            json!({"items": [{"key": "k", "amount": 0}]}),
        )
        .await;
    assert_invalid(&r, &["amount"], "Confirm with amount 0");
    // A Cancel must always be able to succeed (the coordinator retries every non-2xx answer
    // forever, and it cancels branches whose Try was refused for their payload): with a payload
    // no Try could have accepted it releases nothing and answers 200.
    for (what, payload, _) in &cases {
        let r = svc
            .tcc_payload("cancel", &new_gid("c"), "01", payload.clone())
            .await;
        assert_status(&r, 200, &format!("Cancel with {what}"));
    }
    assert_invariants(&svc, &ledger, "at the end").await;

    // The refused calls did not poison their branches: the same gid/branch can reserve.
    let gid = new_gid("after");
    let r = svc
        .tcc_payload(
            "try",
            &gid,
            "01",
            json!({"items": [{"key": "k", "amount": 0}]}),
        )
        .await;
    assert_eq!(r.0, 400, "{:#}", r.1);
    svc.try_ok(&mut ledger, &gid, "01", &[("k", 1)]).await;
    svc.cancel_ok(&mut ledger, &gid, "01", &[("k", 1)]).await;
    assert_invariants(&svc, &ledger, "after a valid Try").await;
}

async fn bad_administration_calls(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k", 10).await;

    let r = svc.put_stock("k", -1).await;
    assert_invalid(&r, &["available"], "PUT available -1");
    let r = svc.put_stock("new-key", -5).await;
    assert_invalid(&r, &["available"], "PUT available -5 on a new key");
    for (what, body) in [
        ("a string", json!({"available": "5"})),
        ("a fraction", json!({"available": 2.5})),
        ("missing", json!({})),
    ] {
        let r = svc
            .api
            .call(Method::PUT, "/v1/stock/new-key", Some(&body))
            .await;
        assert_invalid(&r, &["available"], &format!("PUT with available {what}"));
    }
    let r = svc
        .api
        .raw(
            Method::PUT,
            "/v1/stock/new-key",
            Some("application/json"),
            b"{".to_vec(),
        )
        .await
        .expect("PUT malformed JSON");
    assert_error(&r, 400, "invalid_request", "PUT with malformed JSON");
    let long_key = "k".repeat(129);
    let r = svc.put_stock(&long_key, 5).await;
    assert_invalid(&r, &["key"], "PUT on a key of 129 characters");

    // Nothing was written by the refused calls.
    let r = svc.get_stock("new-key").await;
    assert_error(&r, 404, "not_found", "GET a key only refused PUTs named");
    let r = svc.get_stock("never-created").await;
    assert_error(&r, 404, "not_found", "GET an unknown key");
    assert_invariants(&svc, &ledger, "after the refused PUTs").await;

    // 0 is allowed; the listing shows both keys.
    svc.seed(&mut ledger, "zero", 0).await;
    let (code, list) = svc.api.call(Method::GET, "/v1/stock", None).await;
    assert_eq!(code, 200, "{list:#}");
    let keys: Vec<&str> = list["stock"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/stock: {list:#}"))
        .iter()
        .map(|s| s["key"].as_str().unwrap_or(""))
        .collect();
    assert!(
        keys.contains(&"k") && keys.contains(&"zero"),
        "GET /v1/stock lists the keys: {list:#}"
    );
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn faults_need_the_flag(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "k", 10).await;
    let r = svc
        .set_fault(json!({"op": "try", "action": "refuse", "count": 1, "delay_ms": 0}))
        .await;
    assert_eq!(r.0, 404, "POST /v1/faults without --faults: {:#}", r.1);
    let r = svc.clear_faults().await;
    assert_eq!(r.0, 404, "DELETE /v1/faults without --faults: {:#}", r.1);
    // And no fault was armed.
    let gid = new_gid("g");
    svc.try_ok(&mut ledger, &gid, "01", &[("k", 1)]).await;
    svc.confirm_ok(&mut ledger, &gid, "01", &[("k", 1)]).await;
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn operations_endpoints(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();
    let (code, body) = svc.api.call(Method::GET, "/healthz", None).await;
    assert_eq!(code, 200, "/healthz: {body:#}");
    let (code, body) = svc.api.call(Method::GET, "/readyz", None).await;
    assert_eq!(code, 200, "/readyz: {body:#}");

    svc.seed(&mut ledger, "k", 3).await;
    let gid = new_gid("g");
    svc.try_ok(&mut ledger, &gid, "01", &[("k", 1)]).await;
    svc.confirm_ok(&mut ledger, &gid, "01", &[("k", 1)]).await;
    let r = svc.tcc("try", &new_gid("g"), "01", &[("k", 5)]).await;
    assert_insufficient(&r, "k", "short Try");

    let text = svc.metrics().await;
    for name in [
        "tccd_stock_calls_total",
        "tccd_stock_insufficient_total",
        "tccd_stock_inconsistent_keys",
    ] {
        assert!(text.contains(name), "/metrics has no {name}:\n{text}");
    }
    assert!(
        metric_value(&text, "tccd_stock_calls_total", &[("op", "try")]) >= 2.0,
        "tccd_stock_calls_total{{op=\"try\"}} counts the two Tries:\n{text}"
    );
    assert!(
        metric_value(&text, "tccd_stock_calls_total", &[("op", "confirm")]) >= 1.0,
        "tccd_stock_calls_total{{op=\"confirm\"}} counts the Confirm:\n{text}"
    );
    assert!(
        metric_value(&text, "tccd_stock_insufficient_total", &[]) >= 1.0,
        "tccd_stock_insufficient_total counts the short Try:\n{text}"
    );
    assert_invariants(&svc, &ledger, "at the end").await;
}

async fn identifier_limits_and_body_limits(backend: Backend) {
    let svc = StockService::start(backend, "inventory", &[]).await;
    let mut ledger = Ledger::new();

    // Every character the identifier rule allows, and the longest identifiers.
    let odd_key = "Sku.9_x:y-Z";
    let long_key = "k".repeat(128);
    svc.seed(&mut ledger, odd_key, 5).await;
    svc.seed(&mut ledger, &long_key, 5).await;
    let long_gid = "g".repeat(128);
    let long_branch = "b".repeat(128);
    let list = [(odd_key, 2), (long_key.as_str(), 3)];
    svc.try_ok(&mut ledger, &long_gid, &long_branch, &list)
        .await;
    svc.confirm_ok(&mut ledger, &long_gid, &long_branch, &list)
        .await;
    assert_invariants(&svc, &ledger, "with the longest identifiers").await;

    let gid129 = "g".repeat(129);
    let r = svc.tcc("try", &gid129, "01", &[(odd_key, 1)]).await;
    assert_invalid(&r, &["gid"], "Try with a gid of 129 characters");
    let branch129 = "b".repeat(129);
    let r = svc.tcc("try", "g-1", &branch129, &[(odd_key, 1)]).await;
    assert_invalid(&r, &["branch_id"], "Try with a branch_id of 129 characters");

    // A body above 1 MiB: 413.
    let filler = "x".repeat(1024 * 1024 + 10);
    let big = json!({
        "gid": "g-2", "branch_id": "01", "op": "try",
        "payload": {"items": [{"key": odd_key, "amount": 1}], "filler": filler},
    });
    let r = svc
        .tcc_request(
            "try",
            Some(("g-2", "01")),
            Some(big.to_string().into_bytes()),
        )
        .await;
    assert_error(&r, 413, "payload_too_large", "Try with a body above 1 MiB");
    let r = svc
        .api
        .call(
            Method::PUT,
            &format!("/v1/stock/{odd_key}"),
            Some(&json!({"available": 1, "filler": filler})),
        )
        .await;
    assert_error(&r, 413, "payload_too_large", "PUT with a body above 1 MiB");

    // A body that is not JSON: 415.
    let r = svc
        .api
        .raw(
            Method::PUT,
            &format!("/v1/stock/{odd_key}"),
            Some("text/plain"),
            b"{\"available\": 1}".to_vec(),
        )
        .await
        .expect("PUT text/plain");
    assert_error(&r, 415, "unsupported_media_type", "PUT with text/plain");
    assert_invariants(&svc, &ledger, "at the end").await;
}
