#![forbid(unsafe_code)]
//! `slipway`: the command line for people and scripts.
//!
//! Today it has one command, `slipway dev`; the client commands (`login`, `deploy`, `logs`,
//! …) arrive with the CLI issue.

mod dev;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Slipway: your own developer platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every Slipway service in this process: SQLite in the data directory, the
    /// in-memory event bus, nothing to install.
    ///
    /// Example: slipway dev --listen 127.0.0.1:7800 --data-dir .slipway-dev
    Dev(dev::DevArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Dev(args) => dev::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("slipway: {error:#}");
            ExitCode::FAILURE
        }
    }
}
