//! `tccd stock`: a stock resource service (inventory, a wallet, seats …). Counters per key in
//! the database (the truth) and in Redis hashes (the fast path), moved by TCC calls behind the
//! barrier, with a consistency check and repair.

pub mod api;
pub mod cache;
pub mod config;
pub mod faults;
pub mod locks;
pub mod metrics;
pub mod model;
pub mod service;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};

pub use config::StockArgs;
use service::Stock;

use crate::db::Pool;
use crate::http::extract::{path_config, query_config};
use crate::http::server::{announce, healthz, unknown_route};

/// Runs the stock service until SIGINT/SIGTERM.
pub async fn run(args: StockArgs) -> Result<(), String> {
    args.validate()?;
    let url = args.database_url();
    let pool_size = args.db_pool_size;
    let pool = tokio::task::spawn_blocking(move || Pool::connect(&url, pool_size))
        .await
        .map_err(|e| e.to_string())??;
    let namespace = args.namespace();
    let cache = connect_redis(&args.redis_url, &namespace, args.barrier_ttl_secs).await;
    log::info!(
        "stock {}: database {}, Redis namespace {namespace}",
        args.name,
        pool.backend_name()
    );
    let stock = web::Data::new(Stock {
        pool,
        cache,
        locks: locks::KeyLocks::default(),
        faults: args.faults.then(faults::Faults::default),
        metrics: Arc::new(metrics::StockMetrics::new()),
    });

    let app_stock = stock.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_stock.clone())
            .app_data(query_config())
            .app_data(path_config())
            .configure(api::routes)
            .route("/healthz", web::get().to(healthz))
            .default_service(web::to(unknown_route))
    })
    .shutdown_timeout(30)
    .keep_alive(crate::http::server::KEEP_ALIVE);
    if let Some(w) = args.workers {
        server = server.workers(w.max(1));
    }
    let server = server
        .bind(&args.bind)
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let addrs = server.addrs();
    announce(&addrs);

    let mut background = Vec::new();
    if let Some(coordinator) = args.coordinator.clone() {
        let base = args
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", addrs[0]));
        background.push(tokio::spawn(register(coordinator, args.name.clone(), base)));
    }
    background.push(tokio::spawn(periodic_check(
        stock.clone(),
        Duration::from_millis(args.check_interval_ms),
    )));

    let served = server.run().await;
    for task in background {
        task.abort();
    }
    log::info!("stock {} stopped", args.name);
    served.map_err(|e| e.to_string())
}

/// Connects to Redis, waiting (with a log line per attempt) until it answers: a service started
/// before its Redis comes up serves once Redis does.
async fn connect_redis(url: &str, namespace: &str, ttl_secs: u64) -> cache::Cache {
    let mut delay = Duration::from_millis(200);
    loop {
        match cache::Cache::connect(url, namespace, ttl_secs).await {
            Ok(c) => return c,
            Err(e) => log::warn!("{e}; retrying in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Registers this service with the coordinator, retrying with capped backoff until it answers.
async fn register(coordinator: String, name: String, base: String) {
    let base = base.trim_end_matches('/').to_string();
    let url = format!("{}/v1/resources/{name}", coordinator.trim_end_matches('/'));
    let body = serde_json::json!({
        "try_url": format!("{base}/tcc/try"),
        "confirm_url": format!("{base}/tcc/confirm"),
        "cancel_url": format!("{base}/tcc/cancel"),
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let mut delay = Duration::from_millis(100);
    loop {
        match client.put(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                log::info!(
                    "registered {name} with the coordinator at {coordinator} (calls go to {base})"
                );
                return;
            }
            Ok(r) => log::warn!(
                "registering {name} with {coordinator}: HTTP {}; retrying in {delay:?}",
                r.status()
            ),
            Err(e) => {
                log::warn!("registering {name} with {coordinator}: {e}; retrying in {delay:?}")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Compares Redis with the database every interval, logging and counting what differs.
async fn periodic_check(stock: web::Data<Stock>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match stock.check(false).await {
            Ok((checked, mismatches)) if !mismatches.is_empty() => {
                log::warn!(
                    "consistency check: {} of {checked} keys differ between Redis and the database",
                    mismatches.len()
                )
            }
            Ok((checked, _)) => log::debug!("consistency check: {checked} keys agree"),
            Err(e) => log::warn!("consistency check failed: {e}"),
        }
    }
}
