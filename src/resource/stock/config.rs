//! The stock service's settings: flags with environment twins (`TCCD_` + upper snake case).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct StockArgs {
    /// The resource name it registers under (`[a-z0-9_-]{1,64}`), e.g. inventory or wallet.
    #[arg(long, env = "TCCD_NAME")]
    pub name: String,
    /// Address to listen on; port 0 takes a free port.
    #[arg(long, env = "TCCD_BIND", default_value = "127.0.0.1:8081")]
    pub bind: String,
    /// sqlite://PATH or postgres://USER@HOST:PORT/DB (default sqlite://tccd-stock-NAME.db).
    #[arg(long, env = "TCCD_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "TCCD_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of every Redis key (default: the name).
    #[arg(long, env = "TCCD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Coordinator to register with on start-up (retried until it answers).
    #[arg(long, env = "TCCD_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Base URL the coordinator should call (default http:// + the bound address).
    #[arg(long, env = "TCCD_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Enable the fault-injection endpoint /v1/faults (demo and tests).
    #[arg(long, env = "TCCD_FAULTS")]
    pub faults: bool,
    /// How often the background consistency check compares Redis with the database.
    #[arg(long, env = "TCCD_CHECK_INTERVAL_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub check_interval_ms: u64,
    /// Lifetime of the Redis barrier keys (the SQL barrier rows are kept).
    #[arg(long, env = "TCCD_BARRIER_TTL_SECS", default_value_t = 7 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(60..=365 * 24 * 3600))]
    pub barrier_ttl_secs: u64,
    /// Database connections in the pool.
    #[arg(long, env = "TCCD_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "TCCD_WORKERS")]
    pub workers: Option<usize>,
}

impl StockArgs {
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://tccd-stock-{}.db", self.name))
    }

    pub fn namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| self.name.clone())
    }

    pub fn validate(&self) -> Result<(), String> {
        crate::validate::resource_name("--name", &self.name).map_err(|e| e.message)?;
        crate::db::Backend::from_url(&self.database_url())?;
        redis::Client::open(self.redis_url.as_str())
            .map_err(|e| format!("bad --redis-url {}: {e}", self.redis_url))?;
        let ns = self.namespace();
        if ns.is_empty() || ns.len() > 64 || ns.contains(char::is_whitespace) {
            return Err("--namespace must be 1 to 64 characters without spaces".into());
        }
        for (flag, url) in [
            ("--coordinator", &self.coordinator),
            ("--advertise-url", &self.advertise_url),
        ] {
            if let Some(u) = url {
                crate::validate::http_url(flag, u).map_err(|e| e.message)?;
            }
        }
        Ok(())
    }
}
