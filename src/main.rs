use clap::{Parser, Subcommand};

use tccd::bench::{self, BenchArgs};
use tccd::coordinator::{self, CoordinatorArgs};
use tccd::demo::{self, DemoArgs};
use tccd::resource::stock::{self, StockArgs};

/// tccd: a TCC (Try / Confirm / Cancel) distributed-transaction coordinator.
#[derive(Parser)]
#[command(name = "tccd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator: records global transactions and drives their branches.
    Coordinator(CoordinatorArgs),
    /// Run a stock resource service: counters per key in SQL and Redis, moved by TCC calls.
    Stock(StockArgs),
    /// Run the demo: start a coordinator and two stock services, play the scenarios.
    Demo(DemoArgs),
    /// Run the benchmark: a coordinator and two stock services under the checkout workload,
    /// coordinated vs baseline, on Postgres and SQLite; a table on stdout and a JSON report.
    Bench(BenchArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    tccd::failpoints::setup();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Coordinator(args) => coordinator::run(args).await,
            Command::Stock(args) => stock::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
