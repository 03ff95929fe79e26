//! `tccd coordinator`: records global transactions and drives their branches' Try, Confirm and
//! Cancel (API.md §1–2).

pub mod api;
pub mod batch;
mod batch_pg;
pub mod config;
pub mod driver;
pub mod dtm;
pub mod invoker;
pub mod metrics;
pub mod model;
pub mod recovery;
pub mod store;
pub mod unit;
pub mod view;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};

pub use config::CoordinatorArgs;
use driver::{Engine, EngineConfig};

use crate::db::Pool;
use crate::http::extract::{path_config, query_config};
use crate::http::server::{announce, healthz, unknown_route};

/// Runs the coordinator until SIGINT/SIGTERM.
pub async fn run(args: CoordinatorArgs) -> Result<(), String> {
    args.validate()?;
    let url = args.database_url.clone();
    let pool_size = args.db_pool_size;
    let metrics = Arc::new(metrics::Metrics::new());
    let m = metrics.clone();
    let interval = Duration::from_millis(args.batch_interval_ms);
    // Migrations run first, then the writer opens its own connections.
    let (pool, writer) = tokio::task::spawn_blocking(move || {
        let pool = Pool::connect(&url, pool_size)?;
        Ok::<_, String>((pool, writer::Writer::start(&url, interval, &m)?))
    })
    .await
    .map_err(|e| e.to_string())??;
    log::info!("coordinator database: {}", pool.backend_name());

    let owner = format!("coord-{}", uuid::Uuid::new_v4().simple());
    let engine = Arc::new(Engine {
        pool: pool.clone(),
        writer,
        invoker: invoker::Invoker::new(Duration::from_millis(args.request_timeout_ms))?,
        metrics,
        cfg: EngineConfig {
            owner: owner.clone(),
            lease_ms: args.lease_ms as i64,
            retry_base_ms: args.retry_base_ms,
            retry_cap_ms: args.retry_cap_ms,
            stuck_after_attempts: args.stuck_after_attempts as i64,
            alert_webhook: args.alert_webhook.clone(),
        },
    });
    let state = web::Data::new(api::AppState {
        pool: pool.clone(),
        engine: engine.clone(),
        default_timeout_ms: args.default_timeout_ms as i64,
    });

    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(query_config())
            .app_data(path_config())
            .configure(api::routes)
            .configure(dtm::routes)
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(api::readyz))
            .route("/metrics", web::get().to(api::metrics))
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
    announce(&server.addrs());
    log::info!("coordinator {owner} serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(recovery::run(
        engine.clone(),
        Duration::from_millis(args.recovery_interval_ms),
        stop_rx,
    ));
    // Actix stops accepting on SIGINT/SIGTERM and lets in-flight requests finish.
    let served = server.run().await;
    let _ = stop_tx.send(true);
    let _ = worker.await;
    log::info!("coordinator stopped");
    served.map_err(|e| e.to_string())
}
