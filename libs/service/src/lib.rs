#![forbid(unsafe_code)]
//! What every Slipway control-plane service (identity, catalog, orchestrator,
//! build-runner, log-streaming) shares around its own domain code: the settings sections,
//! the connection to its PostgreSQL (or SQLite) database and to the event bus, and the
//! start-up sequence. The agent has no database and does not use this crate.
//!
//! A service then only says what it is: its migrations and how it mounts its gRPC
//! services on a [`GrpcServer`].

use std::future::Future;
use std::sync::Arc;

use slipway_db::{DatabaseConnection, MigratorTrait};
use slipway_events::EventBus;
use slipway_kit::GrpcServer;
use slipway_telemetry::metrics::Metrics;
use tokio::net::TcpListener;

/// The settings of every control-plane service: `server`, `database`, `nats`, `telemetry`.
pub use slipway_config::ServiceSettings;

/// Why a service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Database(#[from] slipway_db::Error),
    #[error(transparent)]
    Events(#[from] slipway_events::EventsError),
    #[error(transparent)]
    Metrics(#[from] slipway_telemetry::metrics::MetricsError),
    #[error(transparent)]
    Server(#[from] slipway_kit::KitError),
}

/// A service's connections to the platform: its database and the event bus.
#[derive(Clone)]
pub struct Platform {
    pub db: DatabaseConnection,
    pub bus: Arc<dyn EventBus>,
}

impl Platform {
    /// Connects as configured: the database (running the migrations `M` first) and NATS
    /// JetStream (creating the streams).
    pub async fn connect<M: MigratorTrait>(
        settings: &ServiceSettings,
    ) -> Result<Self, ServiceError> {
        let db = slipway_db::connect_and_migrate::<M>(
            &settings.database.url,
            settings.database.max_connections,
            settings.database.connect_timeout,
        )
        .await?;
        let bus = slipway_events::connect(&settings.nats).await?;
        Ok(Self { db, bus })
    }

    /// Uses a database and bus shared with other services (the embedded `slipway dev`
    /// mode), running the migrations `M` first.
    pub async fn shared<M: MigratorTrait>(
        db: DatabaseConnection,
        bus: Arc<dyn EventBus>,
    ) -> Result<Self, ServiceError> {
        slipway_db::migrate::<M>(&db).await?;
        Ok(Self { db, bus })
    }
}

/// The start-up of a standalone service: connect to the platform (migrations `M`), mount
/// the service's gRPC services, and serve on `listener` until `shutdown` completes.
pub async fn serve<M, F>(
    service_name: &'static str,
    settings: ServiceSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mount: F,
) -> Result<(), ServiceError>
where
    M: MigratorTrait,
    F: FnOnce(GrpcServer, Platform) -> GrpcServer,
{
    let platform = Platform::connect::<M>(&settings).await?;
    let server = GrpcServer::new(settings.server, Metrics::new(service_name)?);
    mount(server, platform).serve(listener, shutdown).await?;
    Ok(())
}
