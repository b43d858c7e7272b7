#![forbid(unsafe_code)]
//! `slipway-identity`: Organizations, members, roles, API tokens, authentication (`Authenticate`, `Check`) and the audit log.
//!
//! The API contract is complete in `proto/`; what is not built yet answers
//! `UNIMPLEMENTED` with a sentence saying so (see [`NOT_BUILT_YET`]).

mod settings;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use slipway_events::EventBus;
use slipway_kit::GrpcServer;
use slipway_telemetry::metrics::Metrics;
use tokio::net::TcpListener;

pub use settings::Settings;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-identity";

/// The API packages this service owns.
pub const PACKAGES: &[&str] = &["slipway.identity.v1"];

/// What the RPCs of [`PACKAGES`] not built yet answer, after the method name.
pub const NOT_BUILT_YET: &str =
    "organizations, members, roles, API tokens and authentication arrive with the identity issue";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Database(#[from] slipway_db::Error),
    #[error(transparent)]
    Events(#[from] slipway_events::EventsError),
    #[error(transparent)]
    Metrics(#[from] slipway_telemetry::metrics::MetricsError),
    #[error(transparent)]
    Server(#[from] slipway_kit::KitError),
}

/// What the handlers share: the database and the event bus.
#[derive(Clone)]
pub struct App {
    pub db: slipway_db::DatabaseConnection,
    pub bus: Arc<dyn EventBus>,
}

impl App {
    /// Connects to the database (running this service's migrations) and to NATS (creating
    /// the streams), as configured.
    pub async fn connect(settings: &Settings) -> Result<Self, Error> {
        let db = slipway_db::connect_and_migrate::<store::Migrator>(
            &settings.database.url,
            settings.database.max_connections,
            settings.database.connect_timeout,
        )
        .await?;
        let bus = slipway_events::connect(&settings.nats).await?;
        Ok(Self { db, bus })
    }

    /// Builds the app on a database and bus shared with other services (the embedded
    /// `slipway dev` mode), running this service's migrations first.
    pub async fn from_parts(
        db: slipway_db::DatabaseConnection,
        bus: Arc<dyn EventBus>,
    ) -> Result<Self, Error> {
        slipway_db::migrate::<store::Migrator>(&db).await?;
        Ok(Self { db, bus })
    }
}

/// Adds this service's gRPC services to `server`: the ones built, and the packages it owns.
pub fn mount(server: GrpcServer, _app: &App) -> GrpcServer {
    server.own_package("slipway.identity.v1", NOT_BUILT_YET)
}

/// Runs the service on `listener` until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let app = App::connect(&settings).await?;
    let server = GrpcServer::new(settings.server.clone(), Metrics::new(SERVICE_NAME)?);
    mount(server, &app).serve(listener, shutdown).await?;
    Ok(())
}
