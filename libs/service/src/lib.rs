#![forbid(unsafe_code)]
//! What every Slipway control-plane service (identity, catalog, orchestrator,
//! build-runner, log-streaming) shares around its own domain code: the settings sections,
//! the connection to its PostgreSQL (or SQLite) database and to the event bus, how it
//! authenticates its callers, and the start-up sequence. The agent has no database and
//! does not use this crate.
//!
//! A service then only says what it is: its migrations and how it mounts its gRPC
//! services on a [`GrpcServer`].
//!
//! Authentication ([`Platform::auth`]) comes in three shapes:
//!
//! - a standalone service ([`Platform::connect`]) asks identity at `[auth].identity_url`
//!   through a cached [`RemoteResolver`] kept fresh by identity's events;
//! - identity itself resolves from its own store and must not need `identity_url`: it
//!   connects with [`Platform::connect_storage`] and assembles its platform with
//!   [`Platform::new`] around its own resolver;
//! - the embedded `slipway dev` mode and in-process tests share identity's in-process
//!   resolver with every service ([`Platform::shared`]).

use std::future::Future;
use std::sync::Arc;

use slipway_auth::PrincipalResolver;
use slipway_auth::credential::{Credential, CredentialKind};
use slipway_auth::remote::{RemoteResolver, RemoteSettings};
use slipway_config::ConfigError;
use slipway_db::{DatabaseConnection, MigratorTrait};
use slipway_events::EventBus;
use slipway_kit::GrpcServer;
use slipway_telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The settings of every control-plane service: `server`, `database`, `nats`, `telemetry`,
/// `auth`.
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
    /// The settings cannot be used to start (caught before anything is served).
    #[error(transparent)]
    Config(#[from] slipway_config::ConfigError),
}

/// Aborts a background task when dropped (behind an `Arc`: when the last holder goes),
/// so a service stopped inside a longer-lived process (tests, the sandbox, `slipway dev`)
/// leaves no follower or fan-out task behind.
#[derive(Debug)]
pub struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    pub fn new(task: JoinHandle<()>) -> Self {
        Self(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A service's connections to the platform: its database, the event bus, and the resolver
/// of its callers' credentials.
#[derive(Clone)]
pub struct Platform {
    pub db: DatabaseConnection,
    pub bus: Arc<dyn EventBus>,
    /// Resolves bearer credentials to principals; mount a service's gRPC services behind
    /// `slipway_auth::AuthenticateLayer::new(platform.auth.clone())`.
    pub auth: Arc<dyn PrincipalResolver>,
    /// The task applying identity's events to `auth`'s cache, alive as long as a clone of
    /// this platform is.
    follower: Option<Arc<AbortOnDrop>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("follows_identity_events", &self.follower.is_some())
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// Connects a standalone service as configured: the database (running the migrations
    /// `M` first), NATS JetStream (creating the streams), and a [`RemoteResolver`] asking
    /// identity at `[auth].identity_url` with `[auth].service_credential`, following
    /// identity's events for as long as the platform lives.
    ///
    /// Fails when `[auth].identity_url` is unset or the service credential is damaged: a
    /// service that cannot authenticate anyone must not start. The channel connects
    /// lazily, so identity may start after this service.
    pub async fn connect<M: MigratorTrait>(
        settings: &ServiceSettings,
    ) -> Result<Self, ServiceError> {
        let resolver = remote_resolver(settings)?;
        let (db, bus) = Self::connect_storage::<M>(settings).await?;
        let follower = resolver.follow_identity_events(Arc::clone(&bus)).await?;
        Ok(Self::new(db, bus, Arc::new(resolver)).with_follower(follower))
    }

    /// The database (migrations `M` run) and the bus alone, without authentication. For
    /// identity, which resolves credentials from its own store and so builds its resolver
    /// from this database, then assembles its platform with [`Platform::new`].
    pub async fn connect_storage<M: MigratorTrait>(
        settings: &ServiceSettings,
    ) -> Result<(DatabaseConnection, Arc<dyn EventBus>), ServiceError> {
        let db = slipway_db::connect_and_migrate::<M>(
            &settings.database.url,
            settings.database.max_connections,
            settings.database.connect_timeout,
        )
        .await?;
        let bus = slipway_events::connect(&settings.nats).await?;
        Ok((db, bus))
    }

    /// A platform of connections already made and a resolver; no migrations run.
    pub fn new(
        db: DatabaseConnection,
        bus: Arc<dyn EventBus>,
        auth: Arc<dyn PrincipalResolver>,
    ) -> Self {
        Self {
            db,
            bus,
            auth,
            follower: None,
        }
    }

    /// Keeps `follower` (a task following identity's events into `auth`'s cache) running
    /// as long as this platform or a clone of it lives, and aborts it after.
    #[must_use]
    pub fn with_follower(mut self, follower: JoinHandle<()>) -> Self {
        self.follower = Some(Arc::new(AbortOnDrop::new(follower)));
        self
    }

    /// Uses a database, bus and resolver shared with other services in this process (the
    /// embedded `slipway dev` mode, in-process tests), running the migrations `M` first.
    /// `auth` is identity's own in-process resolver there, so no service calls identity
    /// over the network and identity's changes reach every service's cache at once.
    pub async fn shared<M: MigratorTrait>(
        db: DatabaseConnection,
        bus: Arc<dyn EventBus>,
        auth: Arc<dyn PrincipalResolver>,
    ) -> Result<Self, ServiceError> {
        slipway_db::migrate::<M>(&db).await?;
        Ok(Self::new(db, bus, auth))
    }
}

/// The resolver of a standalone service, from `[auth]`.
fn remote_resolver(settings: &ServiceSettings) -> Result<RemoteResolver, ServiceError> {
    let url = settings.auth.identity_url.clone().ok_or_else(|| {
        ConfigError::invalid(
            "auth.identity_url",
            "must be set to identity's address (for example http://identity:7801): \
                 this service asks identity who its callers are",
        )
    })?;
    let service_credential = service_credential(settings)?.map(str::to_owned);
    if service_credential.is_none() {
        tracing::warn!(
            "no [auth].service_credential: callers holding a custom role cannot be authorized"
        );
    }
    let channel = lazy_channel(url, "auth.identity_url")?;
    Ok(RemoteResolver::new(
        channel,
        RemoteSettings {
            service_credential,
            ..RemoteSettings::default()
        },
    ))
}

/// A channel to the peer service at `url` (the value of setting `setting`), connected on
/// first use: services start in any order, so a peer that is not up yet is an error of
/// the call that needs it, not of start-up. A URL that cannot be a gRPC endpoint is a
/// settings error naming `setting`.
pub fn lazy_channel(url: String, setting: &str) -> Result<tonic::transport::Channel, ConfigError> {
    tonic::transport::Endpoint::from_shared(url)
        .map(|endpoint| endpoint.connect_lazy())
        .map_err(|error| ConfigError::invalid(setting, error.to_string()))
}

/// `[auth].service_credential`, checked in full (prefix, length, checksum): a damaged one
/// would only show up later as refused calls.
pub fn service_credential(settings: &ServiceSettings) -> Result<Option<&str>, ServiceError> {
    settings
        .auth
        .service_credential
        .as_deref()
        .map(|text| {
            Credential::parse_as(CredentialKind::Service, text)
                .map(|credential| credential.expose_secret())
                .map_err(|error| ConfigError::invalid("auth.service_credential", error.to_string()))
        })
        .transpose()
        .map_err(ServiceError::from)
}

/// The start-up of a standalone service: connect to the platform (migrations `M`, identity
/// through `[auth]`), mount the service's gRPC services, and serve on `listener` until
/// `shutdown` completes.
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
    serve_platform(service_name, settings, platform, listener, shutdown, mount).await
}

/// [`serve`] on a platform already connected (identity's, built around its own resolver).
/// The platform, and with it its event follower, lives until the server stops.
pub async fn serve_platform<F>(
    service_name: &'static str,
    settings: ServiceSettings,
    platform: Platform,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mount: F,
) -> Result<(), ServiceError>
where
    F: FnOnce(GrpcServer, Platform) -> GrpcServer,
{
    let keep = platform.clone();
    let server = GrpcServer::new(settings.server, Metrics::new(service_name)?);
    mount(server, platform).serve(listener, shutdown).await?;
    drop(keep);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_standalone_service_needs_identity_url_and_a_sound_credential() {
        let mut settings = ServiceSettings::default();
        let error = remote_resolver(&settings).unwrap_err();
        assert!(error.to_string().contains("auth.identity_url"), "{error}");

        settings.auth.identity_url = Some("http://127.0.0.1:1".to_owned());
        assert!(remote_resolver(&settings).is_ok());

        let good = slipway_auth::NewCredential::generate(CredentialKind::Service)
            .unwrap()
            .into_secret();
        settings.auth.service_credential = Some(good.clone());
        assert!(remote_resolver(&settings).is_ok());
        assert_eq!(service_credential(&settings).unwrap(), Some(good.as_str()));

        let mut damaged = good.clone();
        damaged.pop();
        damaged.push(if good.ends_with('0') { '1' } else { '0' });
        settings.auth.service_credential = Some(damaged.clone());
        let error = remote_resolver(&settings).unwrap_err();
        assert!(
            error.to_string().contains("auth.service_credential"),
            "{error}"
        );
        assert!(!error.to_string().contains(&damaged), "{error}");
    }
}
