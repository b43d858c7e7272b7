#![forbid(unsafe_code)]
//! `make bench`: every figure printed beside a floor measured in the same run, and written
//! to `target/bench/results.json`.
//!
//! Scenarios are added as modules; each returns [`report::Figure`]s.

mod authz;
mod build;
mod catalog;
mod check;
mod deploy;
mod dev;
mod echo;
mod logs;
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
    /// Run only these scenarios (comma-separated): echo, check, catalog, deploy, build,
    /// logs, dev, authz. Check, catalog and deploy are measured against the echo floor, so they
    /// bring it along.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| only == scenario)
    }
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
    if ["echo", "check", "catalog", "deploy"]
        .iter()
        .any(|s| args.runs(s))
    {
        let floors = echo::run(&measure).await?;
        figures.extend(floors.figures.iter().cloned());
        // Identity's Check over gRPC, against the bare echo floor just measured.
        if args.runs("check") {
            figures.extend(check::run(&measure, &floors).await?);
        }
        // The catalog as `slipway dev` serves it: GetEnvironment against the same floor,
        // and ListServices over an environment of 1,000 services.
        if args.runs("catalog") {
            figures.extend(catalog::run(&measure, &floors).await?);
        }
        // Deployments as `slipway dev` runs them, with a real agent whose runtime completes
        // at once: DeployEnvironment to DEPLOYED for one service, and 1,000 environments.
        if args.runs("deploy") {
            figures.extend(deploy::run(&measure, &floors).await?);
        }
    }
    // Builds through the BUILDS queue, beside a raw JetStream round trip.
    if args.runs("build") {
        figures.extend(build::run(&measure).await?);
    }
    // Log ingest and tail latency, beside raw JetStream publish and plain NATS subscribers.
    if args.runs("logs") {
        figures.extend(logs::run(&measure).await?);
    }
    // `slipway dev` (the release binary beside this one): startup time and memory.
    if args.runs("dev") {
        figures.extend(dev::run().await?);
    }
    // Runs on this (the load generator's) thread: one core, nothing else running.
    if args.runs("authz") {
        figures.extend(authz::run(measure.duration)?);
    }
    report::write(&args.output, &figures)?;
    println!(
        "wrote {} figures to {}",
        figures.len(),
        args.output.display()
    );
    telemetry.shutdown();
    Ok(())
}
