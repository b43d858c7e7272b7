//! Turns the deploy events the engine publishes into deliveries.
//!
//! One durable consumer shared by every replica reads `slipway.events.deploy.deployment.>`.
//! For an event a webhook hears, each matching enabled webhook of the organization gets a
//! delivery keyed on the deployment and the event type, so a redelivered event (or a
//! start announced again by an engine resuming the deployment) records nothing new. The
//! consumer starts at the beginning of the stream the first time; events older than a
//! webhook are not sent to it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use slipway_events::{ConsumerSpec, Delivery, EventBus, StreamKind};
use slipway_proto::deploy::v1::WebhookDeliveryStatus as S;
use slipway_proto::events::v1 as ev;
use tokio::sync::Notify;

use super::payload::{self, webhook_event};
use super::store::{DeliveryRow, NotificationStore, WebhookRow};
use crate::catalog::CatalogClient;
use crate::store::{Store, StoreError, new_id, now};

/// The durable name the replicas share.
const DURABLE: &str = "orchestrator-notifications";

/// What the consumer needs.
#[derive(Clone)]
pub struct Recorder {
    pub store: NotificationStore,
    pub deployments: Store,
    pub catalog: Option<CatalogClient>,
    /// Wakes the sender when deliveries were recorded.
    pub wake: Arc<Notify>,
}

/// Consumes deploy events until the bus ends.
pub async fn consume(bus: Arc<dyn EventBus>, recorder: Recorder) {
    let spec = ConsumerSpec::new(StreamKind::Events, DURABLE)
        .filter("slipway.events.deploy.deployment.>")
        .ack_wait(Duration::from_secs(30));
    let mut consumer = loop {
        match bus.consumer(spec.clone()).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot consume deploy events; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    while let Some(next) = consumer.next().await {
        let delivery = match next {
            Ok(delivery) => delivery,
            Err(error) => {
                tracing::debug!(%error, "deploy event consumer hiccup");
                continue;
            }
        };
        handle(&recorder, &delivery).await;
    }
}

async fn handle(recorder: &Recorder, delivery: &Delivery) {
    let event: ev::Event = match delivery.decode() {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "undecodable deploy event dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    match recorder.record(&event).await {
        Ok(recorded) => {
            if recorded > 0 {
                recorder.wake.notify_one();
            }
            let _ = delivery.ack().await;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot record webhook deliveries; retrying the event");
            let _ = delivery.nack(Some(Duration::from_secs(2))).await;
        }
    }
}

impl Recorder {
    /// Records the deliveries `event` causes; returns how many were new.
    pub async fn record(&self, event: &ev::Event) -> Result<usize, StoreError> {
        let Some((kind, deployment_id, status)) = webhook_event(event) else {
            return Ok(0);
        };
        let event_time = event
            .time
            .as_ref()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0))
            .unwrap_or_else(now);
        let webhooks: Vec<WebhookRow> = self
            .store
            .enabled_webhooks(&event.organization_id)
            .await?
            .into_iter()
            .filter(|w| w.create_time <= event_time + chrono::Duration::seconds(1))
            .collect();
        if webhooks.is_empty() {
            return Ok(0);
        }
        let mut row = match self.deployments.deployment(&deployment_id).await {
            Ok(row) => row,
            Err(StoreError::NotFound(_)) => return Ok(0),
            Err(error) => return Err(error),
        };
        if row.organization_id != event.organization_id {
            return Ok(0);
        }
        let matching: Vec<&WebhookRow> = webhooks
            .iter()
            .filter(|w| {
                (w.event_types.is_empty() || w.event_types.contains(&(kind as i32)))
                    && (w.project_ids.is_empty() || w.project_ids.contains(&row.project_id))
                    && (w.environment_modes.is_empty()
                        || w.environment_modes.contains(&row.environment_mode))
            })
            .collect();
        if matching.is_empty() {
            return Ok(0);
        }
        row.status = status;
        let stages = self.deployments.stages(&row.id).await?;
        let (project_name, environment_name) = self.names(&row).await;
        let body = payload::body(&payload::Event {
            event_id: &event.id,
            event_type: kind,
            time: event_time,
            project_name: &project_name,
            environment_name: &environment_name,
            deployment: &row,
            stages: &stages,
        });
        let mut recorded = 0;
        let time = now();
        for webhook in matching {
            let delivery = DeliveryRow {
                id: new_id(),
                webhook_id: webhook.id.clone(),
                organization_id: webhook.organization_id.clone(),
                // One delivery per deployment and event type (the contract: at most one
                // start and one end per deployment), whatever the bus redelivers or a
                // resumed engine announces again.
                dedup_key: format!("{}:{}", row.id, kind as i32),
                event_id: event.id.clone(),
                event_type: kind as i32,
                deployment_id: row.id.clone(),
                status: S::Pending as i32,
                attempt: 0,
                response_status_code: 0,
                error_message: String::new(),
                attempt_time: None,
                next_retry_time: Some(time),
                attempts: Vec::new(),
                body: body.clone(),
                redelivered_from: String::new(),
                create_time: time,
            };
            if self.store.insert_delivery(&delivery).await? {
                recorded += 1;
            }
        }
        Ok(recorded)
    }

    /// Project and environment names: from the frozen plan, else from catalog, else none.
    async fn names(&self, row: &crate::store::DeploymentRow) -> (String, String) {
        if let Some(names) = payload::names_from_plan(row) {
            return names;
        }
        let Some(catalog) = &self.catalog else {
            return (String::new(), String::new());
        };
        let project = catalog
            .project(&row.project_id)
            .await
            .map(|p| p.name)
            .unwrap_or_default();
        let environment = catalog
            .environment(&row.environment_id)
            .await
            .map(|e| e.name)
            .unwrap_or_default();
        (project, environment)
    }
}
