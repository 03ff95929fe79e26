//! The coordinator's settings: flags with environment twins (`TCCD_` + upper snake case).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    /// Address to listen on; port 0 takes a free port.
    #[arg(long, env = "TCCD_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// sqlite://PATH or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        env = "TCCD_DATABASE_URL",
        default_value = "sqlite://tccd-coordinator.db"
    )]
    pub database_url: String,
    /// Timeout of one call to a resource (Try, Confirm or Cancel).
    #[arg(long, env = "TCCD_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout_ms: u64,
    /// First retry delay of a failed Confirm/Cancel (exponential backoff, full jitter).
    #[arg(long, env = "TCCD_RETRY_BASE_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub retry_base_ms: u64,
    /// Longest retry delay.
    #[arg(long, env = "TCCD_RETRY_CAP_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub retry_cap_ms: u64,
    /// Failed phase-two attempts after which a transaction is reported as stuck (it is still
    /// retried, never dropped).
    #[arg(long, env = "TCCD_STUCK_AFTER_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub stuck_after_attempts: u64,
    /// How often the recovery worker looks for due work.
    #[arg(long, env = "TCCD_RECOVERY_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub recovery_interval_ms: u64,
    /// Timeout of a transaction begun without `timeout_ms`.
    #[arg(long, env = "TCCD_DEFAULT_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub default_timeout_ms: u64,
    /// How long a driver holds a transaction before another may take it over (after a crash,
    /// recovery resumes a transaction once its lease has run out). Keep it above the request
    /// timeout.
    #[arg(long, env = "TCCD_LEASE_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub lease_ms: u64,
    /// While the coordinator is busy, its writer starts a batch of database writes at most this
    /// often, so that more writes share each commit; when it is quiet a write is committed at
    /// once. 0: never wait.
    #[arg(long, env = "TCCD_BATCH_INTERVAL_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub batch_interval_ms: u64,
    /// Database connections in the pool.
    #[arg(long, env = "TCCD_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,
    /// Optional URL that gets a JSON POST when a transaction becomes stuck.
    #[arg(long, env = "TCCD_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "TCCD_WORKERS")]
    pub workers: Option<usize>,
}

impl CoordinatorArgs {
    /// Checks what clap cannot: relations between settings.
    pub fn validate(&self) -> Result<(), String> {
        crate::db::Backend::from_url(&self.database_url)?;
        if self.retry_base_ms > self.retry_cap_ms {
            return Err(format!(
                "--retry-base-ms ({}) must not exceed --retry-cap-ms ({})",
                self.retry_base_ms, self.retry_cap_ms
            ));
        }
        if let Some(url) = &self.alert_webhook {
            crate::validate::http_url("--alert-webhook", url).map_err(|e| e.message)?;
        }
        if self.lease_ms <= self.request_timeout_ms {
            log::warn!(
                "--lease-ms ({}) is not above --request-timeout-ms ({}): a slow phase-two pass may be \
                 repeated by another driver (harmless, the calls are idempotent, but wasteful)",
                self.lease_ms,
                self.request_timeout_ms
            );
        }
        Ok(())
    }
}
