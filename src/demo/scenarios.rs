//! The seven scenarios of `tccd demo`. Each shows the stock of the keys it touches, in SQL and
//! in Redis, before and after, checks what must hold, and reports expected vs observed. A
//! failing scenario does not stop the next ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::procs::Procs;
use super::report::{Align, Cell, DIM, Out, RED, Style, Table, YELLOW};
use crate::client::{
    BeginRequest, Checkout, ClientError, CoordinatorClient, Counters, Fault, FaultAction, Step,
    StockClient, StockView, TccOp, Transaction, TxStatus, stock_payload,
};

/// Products: key, units in stock, price.
const SKUS: [(&str, i64, i64); 5] = [
    ("book", 10, 25),
    ("lamp", 5, 40),
    ("chair", 3, 60),
    ("desk", 2, 150),
    ("phone", 20, 300),
];
/// Named wallets: key, balance.
const WALLETS: [(&str, i64); 5] = [
    ("alice", 100),
    ("bob", 10),
    ("carol", 100),
    ("dave", 100),
    ("erin", 500),
];
const BUYERS: usize = 200;
const FLASH_SKU: &str = "phone";
const FLASH_UNITS: i64 = 20;

/// How long a scenario waits for a transaction to reach its final status.
const SETTLE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn price(sku: &str) -> i64 {
    SKUS.iter()
        .find(|s| s.0 == sku)
        .map(|s| s.2)
        .unwrap_or_default()
}

fn buyer(i: usize) -> String {
    format!("buyer-{i:03}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Svc {
    Inventory,
    Wallet,
}

impl Svc {
    pub fn name(self) -> &'static str {
        match self {
            Svc::Inventory => "inventory",
            Svc::Wallet => "wallet",
        }
    }
}

/// What the demo put and what committed transactions bought, per key: the reference of the
/// final consistency check.
#[derive(Debug, Default)]
pub struct Ledger {
    pub total: BTreeMap<(Svc, String), i64>,
    pub bought: BTreeMap<(Svc, String), i64>,
}

impl Ledger {
    fn buy(&mut self, sku: &str, wallet: &str, amount: i64) {
        *self
            .bought
            .entry((Svc::Inventory, sku.to_string()))
            .or_default() += 1;
        *self
            .bought
            .entry((Svc::Wallet, wallet.to_string()))
            .or_default() += amount;
    }
}

/// A scenario's line in the summary.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub expected: String,
    pub observed: String,
    pub ok: bool,
}

/// Why a scenario could not go on.
#[derive(Debug)]
pub struct Fail(String);

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Fail {
        Fail(e.to_string())
    }
}

impl From<String> for Fail {
    fn from(e: String) -> Fail {
        Fail(e)
    }
}

type Res<T> = Result<T, Fail>;

/// What a scenario observed and what went wrong.
struct Check {
    observed: String,
    problems: Vec<String>,
}

/// Everything the scenarios use.
pub struct Ctx {
    pub out: Out,
    pub coord: CoordinatorClient,
    pub inventory: StockClient,
    pub wallet: StockClient,
    pub procs: Arc<Mutex<Procs>>,
    pub http: reqwest::Client,
    pub ledger: Ledger,
}

type Snap = BTreeMap<(Svc, String), StockView>;

impl Ctx {
    pub fn new(
        out: Out,
        coord: CoordinatorClient,
        inventory: StockClient,
        wallet: StockClient,
        procs: Arc<Mutex<Procs>>,
        http: reqwest::Client,
    ) -> Ctx {
        Ctx {
            out,
            coord,
            inventory,
            wallet,
            procs,
            http,
            ledger: Ledger::default(),
        }
    }

    fn stock(&self, svc: Svc) -> &StockClient {
        match svc {
            Svc::Inventory => &self.inventory,
            Svc::Wallet => &self.wallet,
        }
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys in both stores, fetched concurrently.
    async fn snapshot(&self, keys: &[(Svc, &str)]) -> Res<Snap> {
        let views = futures::future::join_all(
            keys.iter()
                .map(|(svc, key)| async move { (*svc, *key, self.stock(*svc).get(key).await) }),
        )
        .await;
        let mut snap = Snap::new();
        for (svc, key, view) in views {
            let view =
                view?.ok_or_else(|| Fail(format!("{} has no stock key {key}", svc.name())))?;
            snap.insert((svc, key.to_string()), view);
        }
        Ok(snap)
    }

    /// The stock table of `keys` across `stages` (label, snapshot).
    fn show(&self, keys: &[(Svc, &str)], stages: &[(&str, &Snap)]) {
        let mut t = stock_table();
        for (svc, key) in keys {
            let k = (*svc, key.to_string());
            let mut prev: Option<&StockView> = None;
            for (i, (label, snap)) in stages.iter().enumerate() {
                let Some(v) = snap.get(&k) else { continue };
                let (svc_cell, key_cell) = if i == 0 {
                    (svc.name().to_string(), key.to_string())
                } else {
                    (String::new(), String::new())
                };
                t.row(stock_row(svc_cell, key_cell, label, v, prev));
                prev = Some(v);
            }
        }
        self.out.table(&t);
    }

    /// Begin + one Try per step, printing each; returns the gid.
    async fn begin_and_try(&self, steps: &[(Svc, &str, i64)], begin: BeginRequest) -> Res<String> {
        let tx = self.coord.begin(&begin).await?;
        self.out
            .step(format!("begin -> gid {} ({})", tx.gid, tx.status));
        for (svc, key, amount) in steps {
            let b = self
                .coord
                .add_branch(&tx.gid, svc.name(), &stock_payload(&[(key, *amount)]), None)
                .await?;
            let what = match svc {
                Svc::Inventory => format!("reserve {amount} {key}"),
                Svc::Wallet => format!("reserve {amount} from {key}"),
            };
            self.out.step(format!(
                "Try {}: {what} -> branch {} {}",
                svc.name(),
                b.branch_id,
                b.status
            ));
        }
        Ok(tx.gid)
    }
}

fn stock_table() -> Table {
    use Align::{Left, Right};
    Table::new(
        &[
            "service",
            "key",
            "when",
            "available",
            "locked",
            "consumed",
            "available",
            "locked",
            "consumed",
        ],
        &[Left, Left, Left, Right, Right, Right, Right, Right, Right],
    )
    .groups(&[("", 3), ("SQL", 3), ("Redis", 3)])
}

fn counters_cells(c: Option<&Counters>, prev: Option<&Counters>, bad: bool) -> Vec<Cell> {
    let Some(c) = c else {
        return vec![Cell::styled("missing", RED), Cell::new(""), Cell::new("")];
    };
    let style = |now: i64, before: Option<i64>| -> Option<Style> {
        if bad {
            Some(RED)
        } else if before.is_some_and(|b| b != now) {
            Some(YELLOW)
        } else {
            None
        }
    };
    [
        (c.available, prev.map(|p| p.available)),
        (c.locked, prev.map(|p| p.locked)),
        (c.consumed, prev.map(|p| p.consumed)),
    ]
    .into_iter()
    .map(|(now, before)| {
        let cell = Cell::new(now.to_string());
        match style(now, before) {
            Some(s) => cell.style_if(true, s),
            None => cell,
        }
    })
    .collect()
}

fn stock_row(
    svc: String,
    key: String,
    label: &str,
    v: &StockView,
    prev: Option<&StockView>,
) -> Vec<Cell> {
    let mut row = vec![Cell::new(svc), Cell::new(key), Cell::styled(label, DIM)];
    row.extend(counters_cells(Some(&v.db), prev.map(|p| &p.db), false));
    let differs = v.redis != Some(v.db);
    row.extend(counters_cells(
        v.redis.as_ref(),
        prev.and_then(|p| p.redis.as_ref()),
        differs,
    ));
    row
}

/// Checks that each key moved by exactly `(available, locked, consumed)` in both stores.
fn check_moves(before: &Snap, after: &Snap, moves: &[(Svc, &str, i64, i64, i64)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (svc, key, da, dl, dc) in moves {
        let k = (*svc, key.to_string());
        let (Some(b), Some(a)) = (before.get(&k), after.get(&k)) else {
            problems.push(format!("{} {key}: not shown", svc.name()));
            continue;
        };
        let want = Counters {
            available: b.db.available + da,
            locked: b.db.locked + dl,
            consumed: b.db.consumed + dc,
        };
        if a.db != want {
            problems.push(format!(
                "{} {key} in SQL: {} instead of {}",
                svc.name(),
                fmt_counters(&a.db),
                fmt_counters(&want)
            ));
        }
        if a.redis != Some(want) {
            problems.push(format!(
                "{} {key} in Redis: {} instead of {}",
                svc.name(),
                a.redis
                    .as_ref()
                    .map(fmt_counters)
                    .unwrap_or("missing".into()),
                fmt_counters(&want)
            ));
        }
    }
    problems
}

fn fmt_counters(c: &Counters) -> String {
    format!(
        "available {} locked {} consumed {}",
        c.available, c.locked, c.consumed
    )
}

/// Runs every scenario, in order, and reports each.
pub async fn run_all(ctx: &mut Ctx) -> Vec<Outcome> {
    const TOTAL: usize = 7;
    let mut outcomes = Vec::new();

    ctx.out.blank();
    match seed(ctx).await {
        Ok(()) => {}
        Err(Fail(e)) => {
            ctx.out
                .verdict(false, format!("cannot stock the services: {e}"));
            return vec![Outcome {
                name: "set-up",
                expected: "stock PUT on both services".into(),
                observed: format!("error: {e}"),
                ok: false,
            }];
        }
    }

    type Scenario = for<'a> fn(
        &'a mut Ctx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Res<Check>> + Send + 'a>,
    >;
    let list: [(&'static str, &'static str, &'static str, Scenario); TOTAL] = [
        (
            "checkout commits",
            "A checkout commits: alice buys a book for 25 (Try inventory, Try wallet, commit)",
            "committed; book -1, alice -25",
            |c| Box::pin(checkout_commits(c)),
        ),
        (
            "too little money",
            "Too little money: bob (10) tries to buy a book (25); the wallet refuses the Try",
            "409 try_failed; aborted; nothing moved",
            |c| Box::pin(too_little_money(c)),
        ),
        (
            "Confirm fails twice",
            "The wallet's Confirm fails twice (503); the coordinator retries until it commits",
            "committed after 2 failed Confirms",
            |c| Box::pin(confirm_fails_twice(c)),
        ),
        (
            "coordinator crash",
            "The coordinator is killed (SIGKILL) after the commit decision; a restart recovers it",
            "recovered to committed; consumed once",
            |c| Box::pin(coordinator_crash(c)),
        ),
        (
            "client walks away",
            "A client walks away after its Tries; the coordinator's timeout aborts the transaction",
            "aborted by timeout; stock back",
            |c| Box::pin(client_walks_away(c)),
        ),
        (
            "flash sale",
            "Flash sale: 200 concurrent buyers for 20 phones",
            "20 committed, 180 try_failed, no oversell",
            |c| Box::pin(flash_sale(c)),
        ),
        (
            "consistency",
            "Final consistency check of both services",
            "consistent",
            |c| Box::pin(consistency(c)),
        ),
    ];

    for (i, (name, title, expected, scenario)) in list.into_iter().enumerate() {
        ctx.out.title(i + 1, TOTAL, title);
        let result = scenario(ctx).await;
        let mut check = match result {
            Ok(c) => c,
            Err(Fail(e)) => Check {
                observed: "error (see above)".into(),
                problems: vec![e],
            },
        };
        for gone in ctx.procs().exited() {
            check.problems.push(gone);
        }
        let ok = check.problems.is_empty();
        if ok {
            ctx.out.verdict(true, &check.observed);
        } else {
            for p in &check.problems {
                ctx.out.verdict(false, p);
            }
        }
        outcomes.push(Outcome {
            name,
            expected: expected.to_string(),
            observed: check.observed,
            ok,
        });
    }
    outcomes
}

/// PUTs the catalogue and the wallets; records each key's total.
async fn seed(ctx: &mut Ctx) -> Res<()> {
    let mut puts: Vec<(Svc, String, i64)> = Vec::new();
    for (sku, units, _) in SKUS {
        puts.push((Svc::Inventory, sku.to_string(), units));
    }
    for (who, balance) in WALLETS {
        puts.push((Svc::Wallet, who.to_string(), balance));
    }
    for i in 0..BUYERS {
        puts.push((Svc::Wallet, buyer(i), price(FLASH_SKU)));
    }
    let count = puts.len();
    let results: Vec<_> = futures::stream::iter(puts)
        .map(|(svc, key, n)| {
            let client = ctx.stock(svc).clone();
            async move { (svc, key.clone(), client.put(&key, n).await) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (svc, key, view) in results {
        let v = view?;
        ctx.ledger
            .total
            .insert((svc, key), v.db.available + v.db.locked + v.db.consumed);
    }
    let skus: Vec<String> = SKUS
        .iter()
        .map(|(k, n, p)| format!("{k} x{n} at {p}"))
        .collect();
    ctx.out
        .line(format!("Stocked {count} keys (PUT /v1/stock/{{key}}):"));
    ctx.out.line(format!("  inventory  {}", skus.join(", ")));
    ctx.out.line(format!(
        "  wallet     {}, and {BUYERS} buyers buyer-000..buyer-{:03} with {} each",
        WALLETS
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        BUYERS - 1,
        price(FLASH_SKU)
    ));
    Ok(())
}

fn begin_with(scenario: u32, timeout_ms: Option<i64>) -> BeginRequest {
    BeginRequest {
        gid: None,
        timeout_ms,
        metadata: Some(json!({"demo_scenario": scenario})),
    }
}

/// 1: an ordinary checkout.
async fn checkout_commits(ctx: &mut Ctx) -> Res<Check> {
    let (sku, who) = ("book", "alice");
    let cost = price(sku);
    let keys = [(Svc::Inventory, sku), (Svc::Wallet, who)];
    let before = ctx.snapshot(&keys).await?;
    let gid = ctx
        .begin_and_try(
            &[(Svc::Inventory, sku, 1), (Svc::Wallet, who, cost)],
            begin_with(1, None),
        )
        .await?;
    let tx = ctx.coord.commit(&gid, true).await?;
    ctx.out.step(format!("commit -> {}", tx.status));
    let tx = settle(&ctx.coord, tx).await?;
    if tx.status == TxStatus::Committed {
        ctx.ledger.buy(sku, who, cost);
    }
    let after = ctx.snapshot(&keys).await?;
    ctx.show(&keys, &[("before", &before), ("after", &after)]);
    let mut problems = expect_status(&tx, TxStatus::Committed);
    problems.extend(check_moves(
        &before,
        &after,
        &[
            (Svc::Inventory, sku, -1, 0, 1),
            (Svc::Wallet, who, -cost, 0, cost),
        ],
    ));
    Ok(Check {
        observed: format!("{}; {sku} -1, {who} -{cost}", tx.status),
        problems,
    })
}

/// 2: the wallet refuses the Try; the inventory reservation is released.
async fn too_little_money(ctx: &mut Ctx) -> Res<Check> {
    let (sku, who) = ("book", "bob");
    let cost = price(sku);
    let keys = [(Svc::Inventory, sku), (Svc::Wallet, who)];
    let before = ctx.snapshot(&keys).await?;
    let gid = ctx
        .begin_and_try(&[(Svc::Inventory, sku, 1)], begin_with(2, None))
        .await?;
    let reserved = ctx.snapshot(&keys).await?;
    let mut problems = Vec::new();
    let mut answer = String::from("no refusal");
    match ctx
        .coord
        .add_branch(&gid, "wallet", &stock_payload(&[(who, cost)]), None)
        .await
    {
        Ok(b) => problems.push(format!(
            "the wallet accepted a Try of {cost} from {who} (branch {} {})",
            b.branch_id, b.status
        )),
        Err(e) if e.code() == Some("try_failed") => {
            let body = e.body().cloned().unwrap_or(Value::Null);
            let resource_code = body["resource_response"]["error"]["code"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            ctx.out.step(format!(
                "Try wallet: reserve {cost} from {who} -> the wallet answers 409 {resource_code}; \
                 the coordinator answers {} try_failed, status {}",
                e.status().unwrap_or(0),
                body["status"].as_str().unwrap_or("?")
            ));
            if resource_code != "insufficient_stock" {
                problems.push(format!(
                    "the wallet refused with {resource_code}, not insufficient_stock"
                ));
            }
            answer = format!("{} try_failed", e.status().unwrap_or(0));
        }
        Err(e) => return Err(e.into()),
    }
    let tx = ctx.coord.wait_final(&gid, SETTLE).await?;
    ctx.out.step(format!(
        "transaction {}: {}",
        tx.status,
        branch_summary(&tx)
    ));
    let after = ctx.snapshot(&keys).await?;
    ctx.show(
        &keys,
        &[
            ("before", &before),
            ("reserved", &reserved),
            ("after", &after),
        ],
    );
    problems.extend(expect_status(&tx, TxStatus::Aborted));
    if tx.branch("inventory").map(|b| b.status.as_str()) != Some("cancelled") {
        problems.push("the inventory branch was not cancelled".into());
    }
    let moves = check_moves(
        &before,
        &after,
        &[(Svc::Inventory, sku, 0, 0, 0), (Svc::Wallet, who, 0, 0, 0)],
    );
    let moved = if moves.is_empty() {
        "nothing moved"
    } else {
        "stock moved"
    };
    problems.extend(moves);
    Ok(Check {
        observed: format!("{answer}; {}; {moved}", tx.status),
        problems,
    })
}

/// 3: two failing Confirms, retried by the coordinator.
async fn confirm_fails_twice(ctx: &mut Ctx) -> Res<Check> {
    let (sku, who) = ("lamp", "carol");
    let cost = price(sku);
    let keys = [(Svc::Inventory, sku), (Svc::Wallet, who)];
    let before = ctx.snapshot(&keys).await?;
    ctx.wallet
        .arm_fault(&Fault {
            op: TccOp::Confirm,
            action: FaultAction::Error,
            count: 2,
            delay_ms: 0,
        })
        .await?;
    ctx.out
        .step("wallet: the next 2 Confirms will answer 503 (POST /v1/faults)");
    let gid = ctx
        .begin_and_try(
            &[(Svc::Inventory, sku, 1), (Svc::Wallet, who, cost)],
            begin_with(3, None),
        )
        .await?;
    let t0 = Instant::now();
    let tx = ctx.coord.commit(&gid, true).await?;
    ctx.out.step(format!(
        "commit -> {} ({})",
        tx.status,
        if tx.status == TxStatus::Committing {
            "202: a Confirm failed and is being retried with backoff"
        } else {
            "200"
        }
    ));
    let tx = settle(&ctx.coord, tx).await?;
    if tx.status == TxStatus::Committed {
        ctx.ledger.buy(sku, who, cost);
    }
    ctx.out.step(format!(
        "{} after {} failed Confirm pass(es), {} ms after the commit; {}",
        tx.status,
        tx.attempts,
        t0.elapsed().as_millis(),
        branch_summary(&tx)
    ));
    ctx.wallet.clear_faults().await?;
    let after = ctx.snapshot(&keys).await?;
    ctx.show(&keys, &[("before", &before), ("after", &after)]);
    let mut problems = expect_status(&tx, TxStatus::Committed);
    if tx.attempts < 2 {
        problems.push(format!(
            "the coordinator saw {} failed Confirm pass(es), expected 2",
            tx.attempts
        ));
    }
    problems.extend(check_moves(
        &before,
        &after,
        &[
            (Svc::Inventory, sku, -1, 0, 1),
            (Svc::Wallet, who, -cost, 0, cost),
        ],
    ));
    Ok(Check {
        observed: format!("{} after {} failed Confirms", tx.status, tx.attempts),
        problems,
    })
}

/// 4: SIGKILL the coordinator between the decision and the end of phase two; restart it.
async fn coordinator_crash(ctx: &mut Ctx) -> Res<Check> {
    let (sku, who) = ("chair", "dave");
    let cost = price(sku);
    let delay = Duration::from_millis(3000);
    let keys = [(Svc::Inventory, sku), (Svc::Wallet, who)];
    let before = ctx.snapshot(&keys).await?;
    ctx.wallet
        .arm_fault(&Fault {
            op: TccOp::Confirm,
            action: FaultAction::Delay,
            count: 1,
            delay_ms: delay.as_millis() as u64,
        })
        .await?;
    ctx.out.step(format!(
        "wallet: the next Confirm will wait {} s before doing its work",
        delay.as_secs()
    ));
    let gid = ctx
        .begin_and_try(
            &[(Svc::Inventory, sku, 1), (Svc::Wallet, who, cost)],
            begin_with(4, None),
        )
        .await?;
    let committed_at = Instant::now();
    let tx = ctx.coord.commit(&gid, false).await?;
    ctx.out.step(format!(
        "commit?wait=false -> {}: the decision is durable",
        tx.status
    ));
    let mut problems = Vec::new();
    if tx.status != TxStatus::Committing {
        problems.push(format!(
            "commit?wait=false answered {}, expected committing",
            tx.status
        ));
    }
    // Let the inventory's (undelayed) Confirm land, so that the crash falls between the two
    // Confirms. The coordinator records a phase-two pass only once every call of it has
    // answered, so watch the inventory service itself.
    let landed = poll_stock(&ctx.inventory, sku, Duration::from_millis(1500), |v| {
        v.db.consumed > before[&(Svc::Inventory, sku.to_string())].db.consumed
    })
    .await?;
    ctx.out.step(if landed {
        "phase two under way: the inventory has confirmed, the wallet's Confirm is sleeping"
    } else {
        "phase two under way (the inventory's Confirm has not landed yet)"
    });
    let at_kill = ctx.snapshot(&keys).await?;

    let (subcommand, args) = ctx
        .procs()
        .args("coordinator")
        .ok_or_else(|| Fail("the coordinator is not running".into()))?;
    let pid = ctx.procs().kill("coordinator")?;
    let old = ctx.coord.base_url().to_string();
    ctx.out.step(format!(
        "coordinator (pid {pid}, {old}) killed with SIGKILL while the wallet's Confirm is delayed"
    ));
    if let Err(e) = ctx.coord.transaction(&gid).await
        && e.is_transport()
    {
        ctx.out.step(format!("{old} no longer answers"));
    }
    let pending = ctx.procs().spawn("coordinator", &subcommand, args)?;
    let url = pending.base_url().await?;
    let restarted_at = Instant::now();
    ctx.coord = CoordinatorClient::with_client(&url, ctx.http.clone());
    let new_pid = ctx
        .procs()
        .info()
        .iter()
        .find(|p| p.role == "coordinator")
        .map(|p| p.pid)
        .unwrap_or(0);
    ctx.out.step(format!(
        "coordinator restarted on the same database: pid {new_pid}, {url} (the stock services \
         need not re-register: the coordinator calls them)"
    ));
    let tx = ctx.coord.wait_final(&gid, SETTLE).await?;
    let recovered_in = restarted_at.elapsed();
    ctx.out.step(format!(
        "recovered: {} {} ms after the restart (lease expiry, then the recovery worker); {}",
        tx.status,
        recovered_in.as_millis(),
        branch_summary(&tx)
    ));
    if tx.status == TxStatus::Committed {
        ctx.ledger.buy(sku, who, cost);
    }
    // The killed coordinator's delayed Confirm may still be sleeping in the wallet; once its
    // delay is over it has either been applied or found a duplicate. Nothing to poll for.
    tokio::time::sleep_until((committed_at + delay + Duration::from_millis(300)).into()).await;
    let after = ctx.snapshot(&keys).await?;
    ctx.show(
        &keys,
        &[
            ("before", &before),
            ("at kill", &at_kill),
            ("after", &after),
        ],
    );
    problems.extend(expect_status(&tx, TxStatus::Committed));
    let moves = check_moves(
        &before,
        &after,
        &[
            (Svc::Inventory, sku, -1, 0, 1),
            (Svc::Wallet, who, -cost, 0, cost),
        ],
    );
    let once = moves.is_empty();
    problems.extend(moves);
    Ok(Check {
        observed: format!(
            "{} {:.1} s after restart; {}",
            tx.status,
            recovered_in.as_secs_f64(),
            if once { "consumed once" } else { "wrong stock" }
        ),
        problems,
    })
}

/// 5: Tries, then silence; the timeout aborts.
async fn client_walks_away(ctx: &mut Ctx) -> Res<Check> {
    let (sku, who) = ("desk", "erin");
    let cost = price(sku);
    let keys = [(Svc::Inventory, sku), (Svc::Wallet, who)];
    let before = ctx.snapshot(&keys).await?;
    let began = Instant::now();
    let gid = ctx
        .begin_and_try(
            &[(Svc::Inventory, sku, 1), (Svc::Wallet, who, cost)],
            begin_with(5, Some(1500)),
        )
        .await?;
    let reserved = ctx.snapshot(&keys).await?;
    ctx.out.step(
        "the client goes away: no commit, no abort (the transaction was begun with timeout_ms 1500)",
    );
    let tx = ctx
        .coord
        .poll(&gid, SETTLE, Duration::from_millis(100), |t| {
            t.status.is_final()
        })
        .await?;
    let waited = began.elapsed();
    ctx.out.step(format!(
        "{} by the coordinator {:.1} s after begin (reason: {}); {}",
        tx.status,
        waited.as_secs_f64(),
        tx.reason.as_deref().unwrap_or("-"),
        branch_summary(&tx)
    ));
    let after = ctx.snapshot(&keys).await?;
    ctx.show(
        &keys,
        &[
            ("before", &before),
            ("reserved", &reserved),
            ("after", &after),
        ],
    );
    let mut problems = expect_status(&tx, TxStatus::Aborted);
    let moves = check_moves(
        &before,
        &after,
        &[(Svc::Inventory, sku, 0, 0, 0), (Svc::Wallet, who, 0, 0, 0)],
    );
    let back = moves.is_empty();
    problems.extend(moves);
    let held = check_moves(
        &before,
        &reserved,
        &[
            (Svc::Inventory, sku, -1, 1, 0),
            (Svc::Wallet, who, -cost, cost, 0),
        ],
    );
    if !held.is_empty() {
        problems.push(format!(
            "the Tries did not reserve as expected: {}",
            held.join("; ")
        ));
    }
    Ok(Check {
        observed: format!(
            "{} after {:.1} s; {}",
            tx.status,
            waited.as_secs_f64(),
            if back { "stock back" } else { "stock not back" }
        ),
        problems,
    })
}

/// 6: many concurrent checkouts for few units.
async fn flash_sale(ctx: &mut Ctx) -> Res<Check> {
    let sku = FLASH_SKU;
    let cost = price(sku);
    let keys = [(Svc::Inventory, sku)];
    let before = ctx.snapshot(&keys).await?;
    let buyers_before = buyers_total(&ctx.wallet).await?;
    ctx.out.step(format!(
        "{} {sku}s in stock; {BUYERS} buyers (buyer-000..buyer-{:03}, {cost} each) check out at \
         once, each: begin, Try inventory 1 {sku}, Try wallet {cost}, commit",
        before[&(Svc::Inventory, sku.to_string())].db.available,
        BUYERS - 1
    ));

    let gate = Arc::new(tokio::sync::Barrier::new(BUYERS));
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for i in 0..BUYERS {
        let coord = ctx.coord.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let who = buyer(i);
            let steps = [
                Step::stock("inventory", &[(sku, 1)]),
                Step::stock("wallet", &[(&who, cost)]),
            ];
            gate.wait().await;
            let started = Instant::now();
            let r = coord.checkout(&begin_with(6, None), &steps, true).await;
            (who, r, started.elapsed())
        });
    }
    let mut committed: Vec<(String, String)> = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut open: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (who, r, took) = joined.map_err(|e| Fail(format!("a buyer task failed: {e}")))?;
        latencies.push(took);
        match r {
            Ok(Checkout::Decided(tx)) if tx.status == TxStatus::Committed => {
                committed.push((who, tx.gid))
            }
            Ok(Checkout::Decided(tx)) => {
                open.push(tx.gid.clone());
                committed.push((who, tx.gid));
            }
            Ok(Checkout::Refused {
                gid,
                resource,
                status,
                ..
            }) => {
                *refused.entry(resource).or_default() += 1;
                if status != Some(TxStatus::Aborted) {
                    open.push(gid);
                }
            }
            Err(e) => errors.push(format!("{who}: {e}")),
        }
    }
    let took = t0.elapsed();
    // Anything still committing or aborting: wait for its end.
    let finals: Vec<_> = futures::stream::iter(open.clone())
        .map(|gid| {
            let coord = ctx.coord.clone();
            async move { coord.wait_final(&gid, SETTLE).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut not_committed = std::collections::HashSet::new();
    for f in finals {
        let tx = f?;
        if tx.status != TxStatus::Committed {
            not_committed.insert(tx.gid);
        }
    }
    committed.retain(|(_, gid)| !not_committed.contains(gid));
    for (who, _) in &committed {
        ctx.ledger.buy(sku, who, cost);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_millis())
            .unwrap_or(0)
    };
    let refused_total: usize = refused.values().sum();
    ctx.out.step(format!(
        "{BUYERS} checkouts in {} ms (per checkout p50 {} ms, p99 {} ms): {} committed, \
         {refused_total} refused with 409 try_failed ({}), {} other errors",
        took.as_millis(),
        pct(0.50),
        pct(0.99),
        committed.len(),
        refused
            .iter()
            .map(|(r, n)| format!("{n} by {r}"))
            .collect::<Vec<_>>()
            .join(", "),
        errors.len()
    ));
    for e in errors.iter().take(3) {
        ctx.out.step(ctx.out.paint(RED, e));
    }

    let after = ctx.snapshot(&keys).await?;
    let buyers_after = buyers_total(&ctx.wallet).await?;
    let mut t = stock_table();
    let k = (Svc::Inventory, sku.to_string());
    t.row(stock_row(
        "inventory".into(),
        sku.into(),
        "before",
        &before[&k],
        None,
    ));
    t.row(stock_row(
        String::new(),
        String::new(),
        "after",
        &after[&k],
        Some(&before[&k]),
    ));
    let label = format!("{BUYERS} buyers (sum)");
    t.row(stock_row(
        "wallet".into(),
        label,
        "before",
        &buyers_before,
        None,
    ));
    t.row(stock_row(
        String::new(),
        String::new(),
        "after",
        &buyers_after,
        Some(&buyers_before),
    ));
    ctx.out.table(&t);

    let sold = committed.len() as i64;
    let mut problems = Vec::new();
    if sold != FLASH_UNITS {
        problems.push(format!(
            "{sold} checkouts committed, expected {FLASH_UNITS}"
        ));
    }
    if refused_total != BUYERS - FLASH_UNITS as usize {
        problems.push(format!(
            "{refused_total} checkouts refused, expected {}",
            BUYERS - FLASH_UNITS as usize
        ));
    }
    if refused.keys().any(|r| r != "inventory") {
        problems.push("a wallet refused a buyer who had the money".into());
    }
    if !errors.is_empty() {
        problems.push(format!(
            "{} checkouts failed otherwise, e.g. {}",
            errors.len(),
            errors[0]
        ));
    }
    let a = &after[&k];
    let want = Counters {
        available: 0,
        locked: 0,
        consumed: FLASH_UNITS,
    };
    if a.db != want || a.redis != Some(want) {
        problems.push(format!(
            "{sku}: SQL {}, Redis {}; expected {}",
            fmt_counters(&a.db),
            a.redis
                .as_ref()
                .map(fmt_counters)
                .unwrap_or("missing".into()),
            fmt_counters(&want)
        ));
    }
    let want_buyers = Counters {
        available: buyers_before.db.available - sold * cost,
        locked: 0,
        consumed: buyers_before.db.consumed + sold * cost,
    };
    if buyers_after.db != want_buyers || buyers_after.redis != Some(want_buyers) {
        problems.push(format!(
            "buyers' wallets: SQL {}, Redis {}; expected {}",
            fmt_counters(&buyers_after.db),
            buyers_after
                .redis
                .as_ref()
                .map(fmt_counters)
                .unwrap_or("missing".into()),
            fmt_counters(&want_buyers)
        ));
    }
    Ok(Check {
        observed: format!(
            "{sold} committed, {refused_total} try_failed, {} left, {} oversold",
            a.db.available,
            (a.db.consumed - before[&k].db.consumed - FLASH_UNITS).max(0)
        ),
        problems,
    })
}

/// The sum of every buyer's wallet, as one view (Redis `None` if any key lacks its hash).
async fn buyers_total(wallet: &StockClient) -> Res<StockView> {
    let all = wallet.list().await?;
    let mut db = Counters {
        available: 0,
        locked: 0,
        consumed: 0,
    };
    let mut redis = Some(db);
    for v in all.iter().filter(|v| v.key.starts_with("buyer-")) {
        db.available += v.db.available;
        db.locked += v.db.locked;
        db.consumed += v.db.consumed;
        redis = match (redis, v.redis) {
            (Some(r), Some(x)) => Some(Counters {
                available: r.available + x.available,
                locked: r.locked + x.locked,
                consumed: r.consumed + x.consumed,
            }),
            _ => None,
        };
    }
    Ok(StockView {
        key: "buyer-*".into(),
        db,
        redis,
        consistent: redis == Some(db),
    })
}

/// 7: both services against the ledger, and no transaction left open.
async fn consistency(ctx: &mut Ctx) -> Res<Check> {
    let mut problems = Vec::new();
    let mut t = Table::new(
        &[
            "service",
            "keys",
            "SQL = Redis",
            "locked",
            "total = PUT",
            "consumed",
            "bought",
        ],
        &[
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
            Align::Right,
        ],
    );
    for svc in [Svc::Inventory, Svc::Wallet] {
        let client = ctx.stock(svc);
        let check = client.consistency().await?;
        for m in &check.mismatches {
            problems.push(format!(
                "{} {}: SQL {} but Redis {}",
                svc.name(),
                m.key,
                fmt_counters(&m.db),
                m.redis
                    .as_ref()
                    .map(fmt_counters)
                    .unwrap_or("missing".into())
            ));
        }
        let all = client.list().await?;
        let (mut agree, mut locked, mut totals_ok, mut consumed, mut bought) =
            (0usize, 0i64, 0usize, 0i64, 0i64);
        for v in &all {
            let k = (svc, v.key.clone());
            if v.redis == Some(v.db) {
                agree += 1;
            } else {
                problems.push(format!(
                    "{} {}: SQL {} but Redis {}",
                    svc.name(),
                    v.key,
                    fmt_counters(&v.db),
                    v.redis
                        .as_ref()
                        .map(fmt_counters)
                        .unwrap_or("missing".into())
                ));
            }
            locked += v.db.locked;
            if v.db.locked != 0 || v.redis.is_some_and(|r| r.locked != 0) {
                problems.push(format!("{} {}: still locked", svc.name(), v.key));
            }
            let total = v.db.available + v.db.locked + v.db.consumed;
            match ctx.ledger.total.get(&k) {
                Some(&put) if put == total => totals_ok += 1,
                Some(&put) => problems.push(format!(
                    "{} {}: total {total}, but {put} was PUT",
                    svc.name(),
                    v.key
                )),
                None => problems.push(format!(
                    "{} {}: a key the demo never PUT",
                    svc.name(),
                    v.key
                )),
            }
            let want = ctx.ledger.bought.get(&k).copied().unwrap_or(0);
            consumed += v.db.consumed;
            bought += want;
            if v.db.consumed != want {
                problems.push(format!(
                    "{} {}: consumed {}, but committed transactions bought {want}",
                    svc.name(),
                    v.key,
                    v.db.consumed
                ));
            }
        }
        let missing = ctx
            .ledger
            .total
            .keys()
            .filter(|(s, key)| *s == svc && !all.iter().any(|v| &v.key == key))
            .count();
        if missing > 0 {
            problems.push(format!("{}: {missing} keys are missing", svc.name()));
        }
        let n = all.len();
        t.row(vec![
            svc.name().into(),
            n.to_string().into(),
            Cell::new(format!("{agree}/{n}")).style_if(agree != n, RED),
            Cell::new(locked.to_string()).style_if(locked != 0, RED),
            Cell::new(format!("{totals_ok}/{n}")).style_if(totals_ok != n, RED),
            Cell::new(consumed.to_string()).style_if(consumed != bought, RED),
            bought.to_string().into(),
        ]);
        ctx.out.step(format!(
            "{}: GET /v1/consistency checked {} keys, {} mismatches",
            svc.name(),
            check.checked,
            check.mismatches.len()
        ));
    }
    for status in [TxStatus::Trying, TxStatus::Committing, TxStatus::Aborting] {
        let page = ctx.coord.transactions(Some(status), 10, None).await?;
        if !page.transactions.is_empty() {
            problems.push(format!(
                "{} transaction(s) still {status}, e.g. {}",
                page.transactions.len(),
                page.transactions[0].gid
            ));
        }
    }
    ctx.out
        .step("coordinator: no transaction is trying, committing or aborting");
    ctx.out.table(&t);
    if problems.is_empty() {
        ctx.out.line(format!(
            "  {}: SQL and Redis agree everywhere, nothing is locked, every total is what was \
             PUT, and consumed is exactly what the committed transactions bought",
            ctx.out.paint(super::report::GREEN, "consistent")
        ));
    } else {
        ctx.out.line(format!(
            "  {}: {} problem(s)",
            ctx.out.paint(RED, "NOT consistent"),
            problems.len()
        ));
        problems.truncate(20);
    }
    Ok(Check {
        observed: if problems.is_empty() {
            "consistent".into()
        } else {
            format!("{} problem(s)", problems.len())
        },
        problems,
    })
}

/// Polls a stock key until `done` holds; false if `timeout` passes first.
async fn poll_stock(
    stock: &StockClient,
    key: &str,
    timeout: Duration,
    done: impl Fn(&StockView) -> bool,
) -> Res<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = stock.get(key).await?
            && done(&v)
        {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a transaction that is still committing or aborting is final.
async fn settle(coord: &CoordinatorClient, tx: Transaction) -> Res<Transaction> {
    if tx.status.is_final() {
        return Ok(tx);
    }
    Ok(coord
        .poll(&tx.gid, SETTLE, POLL, |t| t.status.is_final())
        .await?)
}

fn expect_status(tx: &Transaction, want: TxStatus) -> Vec<String> {
    if tx.status == want {
        Vec::new()
    } else {
        vec![format!(
            "transaction {} is {}, expected {want}{}",
            tx.gid,
            tx.status,
            tx.last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )]
    }
}

/// `inventory branch 01 confirmed, wallet branch 02 cancelled`.
fn branch_summary(tx: &Transaction) -> String {
    tx.branches
        .iter()
        .map(|b| format!("{} branch {} {}", b.resource, b.branch_id, b.status))
        .collect::<Vec<_>>()
        .join(", ")
}
