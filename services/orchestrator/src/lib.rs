#![forbid(unsafe_code)]
//! `slipway-orchestrator`: Deployments (deploy, stop, restart, delete, cancel, rollback), their queue, history and watch streams; previews; notifications; the agents' `AgentService.Connect` stream.
//!
//! The API contract is complete in `proto/`; what is not built yet answers
//! `UNIMPLEMENTED` with a sentence saying so (see [`NOT_BUILT_YET`]).

pub mod store;

use std::future::Future;

use slipway_kit::GrpcServer;
use slipway_service::{Platform, ServiceError};
use tokio::net::TcpListener;

/// This service reads the settings every control-plane service reads.
pub use slipway_service::ServiceSettings as Settings;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-orchestrator";

/// The API packages this service owns.
pub const PACKAGES: &[&str] = &["slipway.deploy.v1", "slipway.agent.v1"];

/// The gRPC services of [`PACKAGES`] built so far; the others answer `UNIMPLEMENTED`.
pub const BUILT: &[&str] = &[];

/// What the RPCs of [`PACKAGES`] not built yet answer, after the method name.
pub const NOT_BUILT_YET: &str =
    "deployments, previews, notifications and the agent stream arrive with the orchestrator issue";

/// Adds this service's gRPC services to `server`: the ones built, and the packages it owns.
pub fn mount(server: GrpcServer, _platform: &Platform) -> GrpcServer {
    server
        .own_package("slipway.deploy.v1", NOT_BUILT_YET)
        .own_package("slipway.agent.v1", NOT_BUILT_YET)
}

/// Runs the service on `listener` until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    slipway_service::serve::<store::Migrator, _>(
        SERVICE_NAME,
        settings,
        listener,
        shutdown,
        |server, platform| mount(server, &platform),
    )
    .await
}
