//! The shared edge of every service binary: flags, settings, telemetry, signals, exit code.
//!
//! Each `main.rs` is then a few lines naming its service and its `serve` function, and
//! every binary behaves the same for scripts: `--listen ADDR`, `--config FILE`,
//! `SLIPWAY__…` variables, `listening on ADDR` on stdout when ready, and a non-zero exit
//! with the offending setting named when the configuration is wrong.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use clap::Parser;
use serde::de::DeserializeOwned;
use slipway_config::{TelemetrySettings, Validate};

/// Flags every service binary accepts.
#[derive(Debug, Parser)]
pub struct BinaryArgs {
    /// Address to serve gRPC on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// TOML settings file; `SLIPWAY__SECTION__KEY` variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Settings types of service binaries expose their telemetry section to [`run`].
pub trait HasTelemetry {
    fn telemetry(&self) -> &TelemetrySettings;
}

impl HasTelemetry for slipway_config::ServiceSettings {
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// What a service's `serve` returns, boxed so [`run`] works for every service.
pub type ServeFuture = Pin<Box<dyn Future<Output = Result<(), Box<dyn std::error::Error>>>>>;

/// Parses flags, loads settings, installs telemetry, binds, serves until SIGTERM/SIGINT,
/// flushes telemetry, and maps the outcome to an exit code.
pub async fn run<S, F>(service_name: &'static str, serve: F) -> ExitCode
where
    S: DeserializeOwned + Validate + HasTelemetry,
    F: FnOnce(S, tokio::net::TcpListener) -> ServeFuture,
{
    let args = BinaryArgs::parse();
    let settings: S = match slipway_config::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{service_name}: {error}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match slipway_telemetry::init(service_name, settings.telemetry()) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{service_name}: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => serve(settings, listener).await,
        Err(error) => Err(format!("cannot listen on {}: {error}", args.listen).into()),
    };
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{service_name}: {error}");
            ExitCode::FAILURE
        }
    }
}
