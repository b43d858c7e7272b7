#![forbid(unsafe_code)]
//! `slipway-orchestrator`: Deployments (deploy, stop, restart, delete, cancel, rollback), their queue, history and watch streams; previews; notifications; the agents' `AgentService.Connect` stream.
//!
//! The API contract is complete in `proto/`; what is not built yet answers
//! `UNIMPLEMENTED` with a sentence saying so (see [`NOT_BUILT_YET`]).

pub mod agents;
pub mod api;
pub mod catalog;
pub mod engine;
pub mod notifications;
pub mod previews;
pub mod schedule;
pub mod settings;
pub mod store;

use std::future::Future;

use slipway_kit::GrpcServer;
use slipway_service::{Platform, ServiceError};
use tokio::net::TcpListener;

pub use settings::Settings;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-orchestrator";

/// The API packages this service owns.
pub const PACKAGES: &[&str] = &["slipway.deploy.v1", "slipway.agent.v1"];

/// The gRPC services of [`PACKAGES`] built so far; the others answer `UNIMPLEMENTED`.
pub const BUILT: &[&str] = &[
    "slipway.agent.v1.AgentService",
    "slipway.deploy.v1.DeploymentService",
    "slipway.deploy.v1.NotificationService",
    "slipway.deploy.v1.PreviewService",
];

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
/// Everything the orchestrator serves, wired to catalog: `DeploymentService` with this
/// replica's engine, `AgentService.Connect` for the agents, and the packages' not-built
/// answers. The engine runs as long as the returned handle lives. Used by [`serve`] and by
/// the embedded `slipway dev`, where `catalog` and `services` point at the same process.
pub fn mount_with_catalog(
    server: GrpcServer,
    platform: &Platform,
    catalog: catalog::CatalogClient,
    services: Option<api::ServiceLookup>,
    agents: &agents::Agents,
    engine: engine::EngineConfig,
) -> (GrpcServer, engine::EngineHandle) {
    let background = Background::from_catalog(&catalog);
    mount_all(
        server, platform, catalog, services, agents, engine, background,
    )
}

/// What runs beside the engine: the notifier (`NotificationService` and its deliveries)
/// and the deployment-rule scheduler.
#[derive(Clone, Debug)]
pub struct Background {
    pub secrets: notifications::SecretBox,
    pub notifications: notifications::NotificationsConfig,
    pub schedule_every: std::time::Duration,
}

impl Background {
    /// Defaults, webhook secrets sealed under a key derived from the service credential.
    pub fn from_catalog(catalog: &catalog::CatalogClient) -> Self {
        Self {
            secrets: notifications::SecretBox::derive(catalog.credential_material()),
            notifications: notifications::NotificationsConfig::default(),
            schedule_every: std::time::Duration::from_secs(20),
        }
    }
}

/// [`mount_with_catalog`] with the background tasks configured: they run as long as the
/// server holds `NotificationService`.
pub fn mount_all(
    server: GrpcServer,
    platform: &Platform,
    catalog: catalog::CatalogClient,
    services: Option<api::ServiceLookup>,
    agents: &agents::Agents,
    engine: engine::EngineConfig,
    background: Background,
) -> (GrpcServer, engine::EngineHandle) {
    let deployments = api::DeploymentsOptions {
        catalog: Some(catalog.clone()),
        services,
        engine,
    };
    let (server, engine) = api::mount_deployments(server, platform, deployments);
    let tasks = std::sync::Arc::new(notifications::Tasks::default());
    let scheduler = schedule::Scheduler::new(
        platform.db.clone(),
        std::sync::Arc::clone(&platform.bus),
        catalog.clone(),
        std::sync::Arc::new(schedule::SystemClock),
        Some(engine.engine().clone()),
    );
    tasks.push(tokio::spawn(scheduler.run(background.schedule_every)));
    let options = notifications::NotificationsOptions {
        catalog: Some(catalog.clone()),
        secrets: background.secrets,
        config: background.notifications,
    };
    let server = notifications::mount_notifications(server, platform, options, tasks);
    let previews = previews::Previews::new(
        engine.engine().clone(),
        catalog.clone(),
        platform.db.clone(),
    );
    let server = previews::mount_previews(server, platform, previews);
    let server = agents::mount_agents(mount(server, platform), platform, catalog, agents);
    (server, engine)
}

pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let catalog = agents::catalog_client(&settings)?;
    let sessions = agents::Agents::default();
    let stopping = sessions.clone();
    // `[previews] listen`: the git providers' webhooks, on their own HTTP listener.
    let webhooks = previews::WebhookEndpoint::bind(&settings.previews).await?;
    let stop_webhooks = tokio_util::sync::CancellationToken::new();
    let stopping_webhooks = stop_webhooks.clone();
    let webhook_catalog = catalog.clone();
    // Open agent streams would hold graceful shutdown up: end them (UNAVAILABLE) first.
    let shutdown = async move {
        shutdown.await;
        stopping.shutdown();
        stopping_webhooks.cancel();
    };
    let services = api::service_lookup(&settings);
    let mut background = Background::from_catalog(&catalog);
    if let Some(key) = &settings.notifications.sealing_key {
        background.secrets = notifications::SecretBox::derive(key.as_bytes());
    }
    background.schedule_every = std::time::Duration::from_secs(settings.schedule.interval_seconds);
    let engine_slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep_engine = std::sync::Arc::clone(&engine_slot);
    let served = slipway_service::serve::<store::Migrator, _>(
        SERVICE_NAME,
        settings.service,
        listener,
        shutdown,
        |server, platform| {
            let (server, engine) = mount_all(
                server,
                &platform,
                catalog,
                services,
                &sessions,
                engine::EngineConfig::default(),
                background,
            );
            if let Some(webhooks) = webhooks {
                let previews = previews::Previews::new(
                    engine.engine().clone(),
                    webhook_catalog,
                    platform.db.clone(),
                );
                webhooks.spawn(previews, stop_webhooks.clone().cancelled_owned());
            }
            if let Ok(mut slot) = keep_engine.lock() {
                *slot = Some(engine);
            }
            server
        },
    )
    .await;
    stop_webhooks.cancel();
    // The engine stops with the server (its deployments resume on another replica).
    if let Ok(mut slot) = engine_slot.lock() {
        slot.take();
    }
    served
}
