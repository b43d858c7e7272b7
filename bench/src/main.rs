#![forbid(unsafe_code)]
//! `make bench`: every figure printed beside a floor measured in the same run, and written
//! to `target/bench/results.json`.
//!
//! Scenarios are added as modules; each returns [`report::Figure`]s.

mod authz;
mod check;
mod echo;
mod report;

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each measurement runs (after a short warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Measurements per configuration; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Print each round's figures to stderr.
    #[arg(long)]
    verbose: bool,
    /// Where the JSON figures go.
    #[arg(long, default_value = "target/bench/results.json")]
    output: std::path::PathBuf,
}

// One worker for the load generator; each server under test gets its own (see echo.rs).
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The kit stack is measured with the telemetry a service really runs with (default
    // settings: text logs at INFO, no trace export).
    let telemetry = slipway_telemetry::init(
        "slipway-bench",
        &slipway_config::TelemetrySettings::default(),
    )?;
    let measure = echo::Measure {
        duration: std::time::Duration::from_secs_f64(args.seconds),
        rounds: args.rounds,
        verbose: args.verbose,
    };
    let mut figures = Vec::new();
    let floors = echo::run(&measure).await?;
    figures.extend(floors.figures.iter().cloned());
    // Identity's Check over gRPC, against the bare echo floor just measured.
    figures.extend(check::run(&measure, &floors).await?);
    // Runs on this (the load generator's) thread: one core, nothing else running.
    figures.extend(authz::run(measure.duration)?);
    report::write(&args.output, &figures)?;
    println!(
        "wrote {} figures to {}",
        figures.len(),
        args.output.display()
    );
    telemetry.shutdown();
    Ok(())
}
