//! Outgoing notifications: organization webhooks told about deployments.
//!
//! The engine already announces every deployment change on the bus
//! (`slipway.events.deploy.deployment.*`); [`events`] turns the ones a webhook hears into
//! recorded deliveries, and [`deliver`] sends them, signed, retrying with backoff. Neither
//! touches the engine. [`api`] serves `NotificationService`.

pub mod api;
pub mod deliver;
pub mod events;
pub mod payload;
pub mod seal;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_auth::AuthenticateLayer;
use slipway_kit::GrpcServer;
use slipway_proto::deploy::v1::notification_service_server::NotificationServiceServer;
use slipway_service::Platform;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower::Layer as _;

pub use api::Notifications;
pub use seal::{SecretBox, signature};

use crate::catalog::CatalogClient;

/// Days a delivery stays in the log (`ListWebhookDeliveries`' contract).
const KEEP_DAYS: i64 = 30;
/// How often the log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How deliveries are sent.
#[derive(Clone, Debug)]
pub struct NotificationsConfig {
    /// Wait after the first failed attempt; doubled after each further one.
    pub retry_base: Duration,
    /// Attempts in all before a delivery is `FAILED`.
    pub max_attempts: u32,
    /// Longest wait for an answer.
    pub attempt_timeout: Duration,
    /// How often the sender looks for due retries (new deliveries wake it at once).
    pub poll_interval: Duration,
}

impl Default for NotificationsConfig {
    /// The contract of `webhook.proto`: backoff from 1 minute, 8 attempts, 10 seconds.
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(60),
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// Background tasks that live as long as the service that owns them: aborted on drop.
#[derive(Default)]
pub struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    /// Keeps `task` until these tasks are dropped.
    pub fn push(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.0.lock() {
            tasks.push(task);
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Ok(tasks) = self.0.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

/// What notifications need beyond the platform.
#[derive(Clone, Debug)]
pub struct NotificationsOptions {
    /// Catalog, for project ids on webhooks and names in payloads.
    pub catalog: Option<CatalogClient>,
    /// Seals webhook secrets; every replica must use the same key.
    pub secrets: SecretBox,
    pub config: NotificationsConfig,
}

/// Mounts `NotificationService` behind authentication and starts the event consumer and
/// the sender; they run, like `tasks`, as long as the server holds the service.
pub fn mount_notifications(
    server: GrpcServer,
    platform: &Platform,
    options: NotificationsOptions,
    tasks: Arc<Tasks>,
) -> GrpcServer {
    let store = store::NotificationStore::new(platform.db.clone());
    let wake = Arc::new(Notify::new());
    let recorder = events::Recorder {
        store: store.clone(),
        deployments: crate::store::Store::new(platform.db.clone()),
        catalog: options.catalog.clone(),
        wake: Arc::clone(&wake),
    };
    let bus = Arc::clone(&platform.bus);
    tasks.push(tokio::spawn(events::consume(bus, recorder)));
    let sender = deliver::Sender::new(
        store.clone(),
        options.secrets.clone(),
        options.config.clone(),
    );
    let poll = options.config.poll_interval;
    let woken = Arc::clone(&wake);
    let pruning = store.clone();
    tasks.push(tokio::spawn(async move {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            sender.send_due().await;
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                let before = crate::store::now() - chrono::Duration::days(KEEP_DAYS);
                let pending = slipway_proto::deploy::v1::WebhookDeliveryStatus::Pending as i32;
                if let Err(error) = pruning.prune(pending, before).await {
                    tracing::warn!(%error, "cannot prune the webhook delivery log");
                }
            }
            let _ = tokio::time::timeout(poll, woken.notified()).await;
        }
    }));
    let service = Notifications {
        store,
        secrets: options.secrets,
        catalog: options.catalog,
        wake,
        _tasks: tasks,
    };
    let authenticate = AuthenticateLayer::new(Arc::clone(&platform.auth));
    server.add_service(authenticate.layer(NotificationServiceServer::new(service)))
}
