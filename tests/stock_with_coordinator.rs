//! `tccd stock` driven by a real `tccd coordinator` (API.md sections 1 to 3): the service
//! registers itself, a committed transaction consumes the stock even when Confirm fails twice,
//! an aborted one releases it even when Cancel fails twice, and a short Try aborts the
//! transaction without leaving anything reserved.

#[macro_use]
mod support;

use support::stock::*;
use support::*;

backend_tests!(
    commit_survives_confirm_errors,
    abort_survives_cancel_errors,
    refused_try_aborts_the_transaction,
    registers_once_the_coordinator_answers,
);

const NAME: &str = "inventory";

/// A coordinator on its own database and a stock service registered with it.
/// Fields drop in order: the stock service, then the coordinator, then its database.
struct World {
    stock: StockService,
    coord: Coordinator,
    _coord_db: TestDb,
}

impl World {
    async fn start(backend: Backend) -> World {
        let coord_db = backend.create_db().await;
        let coord = Coordinator::start(
            &coord_db.url,
            &[
                "--retry-base-ms",
                "20",
                "--retry-cap-ms",
                "200",
                "--recovery-interval-ms",
                "100",
            ],
            &[],
        )
        .await;
        let stock = StockService::start(
            backend,
            NAME,
            &["--coordinator", &coord.api.base, "--faults"],
        )
        .await;
        // The service registers itself on start-up.
        let expected_try = format!("{}/tcc/try", stock.base_url());
        let resource = wait_for("the stock service to register", DEADLINE, || async {
            let (code, body) = coord.api.get_resource(NAME).await;
            (code == 200).then_some(body)
        })
        .await;
        assert_eq!(resource["name"], NAME, "{resource:#}");
        assert_eq!(resource["try_url"], expected_try.as_str(), "{resource:#}");
        assert_eq!(
            resource["confirm_url"],
            format!("{}/tcc/confirm", stock.base_url()).as_str(),
            "{resource:#}"
        );
        assert_eq!(
            resource["cancel_url"],
            format!("{}/tcc/cancel", stock.base_url()).as_str(),
            "{resource:#}"
        );
        World {
            stock,
            coord,
            _coord_db: coord_db,
        }
    }

    fn api(&self) -> &Api {
        &self.coord.api
    }

    async fn begin(&self) -> String {
        let (code, tx) = self.api().begin(json!({})).await;
        assert_eq!(code, 201, "begin: {tx:#}");
        tx["gid"].as_str().unwrap().to_string()
    }

    /// Adds a branch on the stock service that must answer `200 tried`; returns its branch id.
    async fn tried(&self, ledger: &mut Ledger, gid: &str, list: &[(&str, i64)]) -> String {
        let (code, b) = self
            .api()
            .add_branch(gid, json!({"resource": NAME, "payload": items(list)}))
            .await;
        assert_eq!(code, 200, "branch {list:?}: {b:#}");
        assert_eq!(b["status"], "tried", "branch {list:?}: {b:#}");
        let branch = b["branch_id"].as_str().unwrap().to_string();
        ledger.tried(gid, &branch, list);
        branch
    }

    async fn fault(&self, op: &str, count: u64) {
        let r = self
            .stock
            .set_fault(json!({"op": op, "action": "error", "count": count, "delay_ms": 0}))
            .await;
        assert!(
            (200..300).contains(&r.0),
            "POST /v1/faults: {} {:#}",
            r.0,
            r.1
        );
    }
}

async fn commit_survives_confirm_errors(backend: Backend) {
    let w = World::start(backend).await;
    let svc = &w.stock;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "sku-1", 10).await;
    svc.seed(&mut ledger, "sku-2", 4).await;

    let gid = w.begin().await;
    let list = [("sku-1", 3), ("sku-2", 4)];
    let branch = w.tried(&mut ledger, &gid, &list).await;
    svc.assert_both("sku-1", Counters::new(7, 3, 0), "after the Try")
        .await;
    svc.assert_both("sku-2", Counters::new(0, 4, 0), "after the Try")
        .await;
    assert_invariants(svc, &ledger, "after the Try").await;

    w.fault("confirm", 2).await;
    let (code, tx) = w.api().commit(&gid).await;
    assert!(
        code == 200 || code == 202,
        "commit: expected 200 or 202, got {code} {tx:#}"
    );
    let tx = wait_status(w.api(), &gid, "committed").await;
    assert_eq!(branch_statuses(&tx), ["confirmed"], "{tx:#}");
    ledger.confirmed(&gid, &branch);

    svc.assert_both("sku-1", Counters::new(7, 0, 3), "after the commit")
        .await;
    svc.assert_both("sku-2", Counters::new(0, 0, 4), "after the commit")
        .await;
    assert_invariants(svc, &ledger, "at the end").await;
}

async fn abort_survives_cancel_errors(backend: Backend) {
    let w = World::start(backend).await;
    let svc = &w.stock;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "sku-1", 10).await;

    let gid = w.begin().await;
    let b1 = w.tried(&mut ledger, &gid, &[("sku-1", 2)]).await;
    let b2 = w.tried(&mut ledger, &gid, &[("sku-1", 5)]).await;
    svc.assert_both("sku-1", Counters::new(3, 7, 0), "after two Tries")
        .await;

    w.fault("cancel", 2).await;
    let (code, tx) = w.api().abort(&gid, Some(json!({"reason": "test"}))).await;
    assert!(
        code == 200 || code == 202,
        "abort: expected 200 or 202, got {code} {tx:#}"
    );
    let tx = wait_status(w.api(), &gid, "aborted").await;
    assert_eq!(branch_statuses(&tx), ["cancelled", "cancelled"], "{tx:#}");
    ledger.cancelled(&gid, &b1);
    ledger.cancelled(&gid, &b2);
    svc.assert_both("sku-1", Counters::new(10, 0, 0), "after the abort")
        .await;
    assert_invariants(svc, &ledger, "at the end").await;
}

async fn refused_try_aborts_the_transaction(backend: Backend) {
    let w = World::start(backend).await;
    let svc = &w.stock;
    let mut ledger = Ledger::new();
    svc.seed(&mut ledger, "sku-a", 10).await;
    svc.seed(&mut ledger, "sku-b", 1).await;

    // One transaction: a first branch that fits, then one that is short.
    let gid = w.begin().await;
    let b1 = w.tried(&mut ledger, &gid, &[("sku-a", 2)]).await;
    svc.assert_both("sku-a", Counters::new(8, 2, 0), "after the first Try")
        .await;
    let r = w
        .api()
        .add_branch(
            &gid,
            json!({"resource": NAME, "payload": items(&[("sku-a", 1), ("sku-b", 5)])}),
        )
        .await;
    assert_error(&r, 409, "try_failed", "branch with sku-b short");
    assert!(
        r.1["status"] == "aborted" || r.1["status"] == "aborting",
        "the refused Try aborts the transaction: {:#}",
        r.1
    );
    assert_eq!(
        r.1["resource_response"]["error"]["code"], "insufficient_stock",
        "resource_response is the stock service's answer: {:#}",
        r.1
    );
    assert_eq!(
        r.1["resource_response"]["key"], "sku-b",
        "resource_response names the short key: {:#}",
        r.1
    );
    let tx = wait_status(w.api(), &gid, "aborted").await;
    ledger.cancelled(&gid, &b1);
    assert_eq!(branch_statuses(&tx), ["cancelled", "cancelled"], "{tx:#}");

    // Nothing stays reserved, in either store.
    svc.assert_both("sku-a", Counters::new(10, 0, 0), "after the abort")
        .await;
    svc.assert_both("sku-b", Counters::new(1, 0, 0), "after the abort")
        .await;
    assert_invariants(svc, &ledger, "after the refused Try").await;

    // The transaction cannot be committed any more.
    let r = w.api().commit(&gid).await;
    assert_error(&r, 409, "conflict", "commit after the abort");

    // A Try refused by an injected fault aborts the same way.
    let r = svc
        .set_fault(json!({"op": "try", "action": "refuse", "count": 1, "delay_ms": 0}))
        .await;
    assert!((200..300).contains(&r.0), "POST /v1/faults: {:#}", r.1);
    let gid2 = w.begin().await;
    let r = w
        .api()
        .add_branch(
            &gid2,
            json!({"resource": NAME, "payload": items(&[("sku-a", 1)])}),
        )
        .await;
    assert_error(&r, 409, "try_failed", "branch refused by a fault");
    wait_status(w.api(), &gid2, "aborted").await;
    assert_invariants(svc, &ledger, "after the refused Try").await;

    // A payload the stock service rejects (400) is an unknown outcome for the coordinator; the
    // transaction still reaches `aborted` (its Cancel with the same payload succeeds).
    let gid3 = w.begin().await;
    let b1 = w.tried(&mut ledger, &gid3, &[("sku-a", 3)]).await;
    let r = w
        .api()
        .add_branch(
            &gid3,
            json!({"resource": NAME, "payload": {"items": [{"key": "sku-a", "amount": 0}]}}),
        )
        .await;
    assert_error(&r, 502, "resource_unavailable", "branch with amount 0");
    let tx = wait_status(w.api(), &gid3, "aborted").await;
    assert_eq!(branch_statuses(&tx), ["cancelled", "cancelled"], "{tx:#}");
    ledger.cancelled(&gid3, &b1);
    assert_invariants(svc, &ledger, "at the end").await;
}

async fn registers_once_the_coordinator_answers(backend: Backend) {
    // A port nobody listens on yet: the coordinator will start there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port();
    let coord_url = format!("http://127.0.0.1:{port}");
    let advertise = "http://stock.example:9000/prefix";

    // The stock service starts first (whether it serves before registering is its business, so
    // it is started in the background).
    let stock = tokio::spawn(async move {
        StockService::start(
            backend,
            NAME,
            &["--coordinator", &coord_url, "--advertise-url", advertise],
        )
        .await
    });
    let coord_db = backend.create_db().await;
    let coord = Process::start_async(
        "coordinator",
        vec![
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            "--database-url".into(),
            coord_db.url.clone(),
        ],
        Vec::new(),
    )
    .await;
    let api = Api::new(&coord.base_url());
    let resource = wait_for("the stock service to register", DEADLINE, || async {
        let (code, body) = api.get_resource(NAME).await;
        (code == 200).then_some(body)
    })
    .await;
    for op in ["try", "confirm", "cancel"] {
        assert_eq!(
            resource[format!("{op}_url")],
            format!("{advertise}/tcc/{op}").as_str(),
            "the URLs are under --advertise-url: {resource:#}"
        );
    }
    let stock = stock.await.expect("stock service start");
    let (code, body) = stock.api.call(reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(code, 200, "{body:#}");
    drop(stock);
    drop(coord);
}
