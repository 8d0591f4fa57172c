//! `atoll`: the Atoll operator CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "atoll", version, about = "The Atoll operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks of Atoll, side by side with reference systems.
    #[command(subcommand)]
    Bench(atoll::bench::BenchCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    ops_kit::telemetry::init_tracing("warn");
    ops_kit::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(cmd) => atoll::bench::run(cmd).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
