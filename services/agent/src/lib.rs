#![forbid(unsafe_code)]
//! `slipway-agent`: one per cluster. It will hold the cluster's `AgentService.Connect`
//! stream to the orchestrator and apply each command on Kubernetes or as local processes.
//!
//! Today it serves health and reflection, so it can be deployed and probed; it connects to
//! no orchestrator yet (the orchestrator and agent issue builds that) and says so at start.

use std::future::Future;

use serde::Deserialize;
use slipway_config::{ConfigError, ServerSettings, TelemetrySettings, Validate};
use slipway_kit::GrpcServer;
use slipway_telemetry::metrics::Metrics;
use tokio::net::TcpListener;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-agent";

/// Everything `slipway-agent` reads from its file and `SLIPWAY__…` variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()
    }
}

impl slipway_kit::binary::HasTelemetry for Settings {
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Metrics(#[from] slipway_telemetry::metrics::MetricsError),
    #[error(transparent)]
    Server(#[from] slipway_kit::KitError),
}

/// Runs the agent's health endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    tracing::warn!(
        "this agent does not connect to an orchestrator yet: command handling arrives with the \
         orchestrator and agent issue"
    );
    let server = GrpcServer::new(settings.server, Metrics::new(SERVICE_NAME)?);
    server.serve(listener, shutdown).await?;
    Ok(())
}
