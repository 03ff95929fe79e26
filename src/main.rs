use clap::{Parser, Subcommand};

use tccd::coordinator::{self, CoordinatorArgs};

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
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
