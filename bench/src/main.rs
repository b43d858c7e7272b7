#![forbid(unsafe_code)]
//! `make bench`: every figure printed beside a floor measured in the same run, and written
//! to `target/bench/results.json`.
//!
//! Scenarios are added as modules; each returns [`report::Figure`]s.

mod echo;
mod report;

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds each measurement runs (after a short warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Measurements per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the JSON figures go.
    #[arg(long, default_value = "target/bench/results.json")]
    output: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The kit stack is measured with the subscriber a service really runs with, so span
    // creation is paid for as in production.
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .init();
    let measure = echo::Measure {
        duration: std::time::Duration::from_secs_f64(args.seconds),
        rounds: args.rounds,
    };
    let mut figures = Vec::new();
    figures.extend(echo::run(&measure).await?);
    report::write(&args.output, &figures)?;
    println!(
        "wrote {} figures to {}",
        figures.len(),
        args.output.display()
    );
    Ok(())
}
