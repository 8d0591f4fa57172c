//! `atoll`: the Atoll operator CLI. This file only parses flags and maps
//! results to exit codes; the commands live in the library (`atoll::cmd`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "atoll", version, about = "The Atoll operator CLI")]
struct Cli {
    #[command(flatten)]
    global: atoll::cmd::GlobalFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Api(atoll::cmd::ApiCommand),
    /// Start a local federation on loopback (default: regions eu and us,
    /// 3 servers each, a gateway, one client per region).
    Dev(atoll::dev::DevArgs),
    /// Benchmarks of Atoll, side by side with reference systems.
    #[command(subcommand)]
    Bench(atoll::bench::BenchCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    ops_kit::tls::install_crypto_provider();
    let mut cmd = Cli::command();
    let long = atoll::cmd::long_flags(&cmd);
    let args = atoll::cmd::normalize_args(std::env::args().collect(), &long);
    // Usage errors exit 2 (clap's convention, and Nomad's).
    let cli = match cmd
        .try_get_matches_from_mut(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match &cli.command {
        Command::Dev(a) => {
            if let Err(e) = ops_kit::telemetry::init_logging(&a.log_level, a.log_json) {
                eprintln!("Error: --log-level: {e}");
                return ExitCode::from(2);
            }
        }
        _ => ops_kit::telemetry::init_tracing("warn"),
    }
    let result = match cli.command {
        Command::Api(c) => atoll::cmd::run(c, &cli.global).await,
        Command::Dev(a) => atoll::dev::run(a).await.map(|()| 0),
        Command::Bench(c) => atoll::bench::run(c).await.map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
