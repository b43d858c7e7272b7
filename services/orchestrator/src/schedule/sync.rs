//! Keeps the scheduler's copy of the rules in step with catalog.
//!
//! Catalog announces each create, update and delete of a rule; the announcement names the
//! rule, and the scheduler reloads it (a deleted or vanished rule is forgotten). One
//! durable consumer shared by the replicas, from the start of the stream, so rules created
//! while no orchestrator ran are learnt when one starts.

use std::sync::Arc;
use std::time::Duration;

use slipway_events::{ConsumerSpec, Delivery, EventBus, StreamKind};
use slipway_proto::events::v1 as ev;

use super::store::ScheduleStore;
use crate::catalog::CatalogClient;

const DURABLE: &str = "orchestrator-schedule";

/// Applies rule announcements until the bus ends.
pub async fn follow(bus: Arc<dyn EventBus>, store: ScheduleStore, catalog: CatalogClient) {
    // Catalog publishes `catalog.deployment_rule.<created|updated|deleted>`, each carrying
    // a `DeploymentRuleChanged`; the wildcard also takes a single `changed` subject.
    let spec = ConsumerSpec::new(StreamKind::Events, DURABLE)
        .filter("slipway.events.catalog.deployment_rule.>")
        .ack_wait(Duration::from_secs(30));
    let mut consumer = loop {
        match bus.consumer(spec.clone()).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot follow deployment rules; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    while let Some(next) = consumer.next().await {
        match next {
            Ok(delivery) => handle(&store, &catalog, &delivery).await,
            Err(error) => tracing::debug!(%error, "deployment rule consumer hiccup"),
        }
    }
}

async fn handle(store: &ScheduleStore, catalog: &CatalogClient, delivery: &Delivery) {
    let changed = match delivery.decode::<ev::Event>() {
        Ok(ev::Event {
            payload: Some(ev::event::Payload::DeploymentRuleChanged(changed)),
            ..
        }) => changed,
        Ok(_) => {
            let _ = delivery.ack().await;
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "undecodable rule announcement dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    match reload(store, catalog, &changed).await {
        Ok(()) => {
            let _ = delivery.ack().await;
        }
        Err(error) => {
            tracing::warn!(%error, rule = %changed.deployment_rule_id, "cannot reload a deployment rule; retrying");
            let _ = delivery.nack(Some(Duration::from_secs(2))).await;
        }
    }
}

/// Brings one rule's copy up to date with catalog.
pub async fn reload(
    store: &ScheduleStore,
    catalog: &CatalogClient,
    changed: &ev::DeploymentRuleChanged,
) -> Result<(), super::ScheduleError> {
    if changed.deleted {
        store.delete_rule(&changed.deployment_rule_id).await?;
        return Ok(());
    }
    match catalog.deployment_rule(&changed.deployment_rule_id).await {
        Ok(rule) => store.upsert_rule(&rule).await?,
        Err(error) if error.0.code() == tonic::Code::NotFound => {
            store.delete_rule(&changed.deployment_rule_id).await?;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}
