#![forbid(unsafe_code)]
//! `slipway-log-streaming`: Live and historical logs of builds, deployments and running services, kept in the LOGS stream.
//!
//! Logs live in the `LOGS` JetStream stream and nowhere else: producers (the orchestrator
//! relaying agents, the build-runner) publish `LogBatch`es there, and this service reads
//! them back for `QueryLogs` and tail backfills ([`history`]) and follows new ones for
//! every tail of the process through one reader ([`hub`]).

pub mod api;
pub mod directory;
pub mod history;
pub mod hub;
pub mod line;
pub mod query;
pub mod quota;
pub mod settings;
pub mod store;
pub mod tail;

use std::future::Future;
use std::sync::Arc;

use slipway_auth::AuthenticateLayer;
use slipway_proto::logs::v1::log_service_server::LogServiceServer;
use tower::Layer as _;

use slipway_kit::GrpcServer;
use slipway_service::{Platform, ServiceError};
use tokio::net::TcpListener;

pub use settings::Settings;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-log-streaming";

/// The API packages this service owns.
pub const PACKAGES: &[&str] = &["slipway.logs.v1"];

/// The gRPC services of [`PACKAGES`] built so far.
pub const BUILT: &[&str] = &["slipway.logs.v1.LogService"];

pub use api::{LogOptions, Logs};

/// Adds this service's gRPC services to `server`, with the default options.
pub fn mount(server: GrpcServer, platform: &Platform) -> GrpcServer {
    mount_with(server, platform, LogOptions::default()).0
}

/// [`mount`] with `options`; also returns the service, for tests to look inside.
pub fn mount_with(
    server: GrpcServer,
    platform: &Platform,
    options: LogOptions,
) -> (GrpcServer, Logs) {
    let logs = Logs::new(Arc::clone(&platform.bus), platform.db.clone(), options);
    let authenticate = AuthenticateLayer::new(Arc::clone(&platform.auth));
    let service = authenticate.layer(LogServiceServer::new(logs.clone()));
    (server.add_service(service), logs)
}

/// Runs the service on `listener` until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let options = settings.logs.options();
    slipway_service::serve::<store::Migrator, _>(
        SERVICE_NAME,
        settings.service,
        listener,
        shutdown,
        |server, platform| mount_with(server, &platform, options).0,
    )
    .await
}
