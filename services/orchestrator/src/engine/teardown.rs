//! Environments that left the catalog: catalog deletes an environment at once and says so
//! on EVENTS (`catalog.environment.deleted`); what runs on its cluster is the
//! orchestrator's to remove, as `EnvironmentService.DeleteEnvironment` promises.
//!
//! The environment's snapshot is gone with it, so the teardown deletes what the
//! environment's latest deployment with a frozen plan put there: a delete deployment with
//! that plan, queued like any other (one deployment per environment at a time). What was
//! queued for the environment is canceled first: it would deploy what no longer exists.
//! An environment whose latest deployment is already a delete (a preview's teardown, an
//! auto-delete rule, or someone's `slipway delete` before deleting it) needs nothing more.

use std::time::Duration;

use slipway_events::{ConsumerSpec, Delivery, StreamKind};
use slipway_proto::deploy::v1 as pb;
use slipway_proto::events::v1 as ev;

use super::Engine;
use super::status::{self, Action};
use crate::store::{DeploymentRow, NewDeployment, Phase, RequestKey, StoreError, new_id};

/// The durable consumer of environment deletions, shared by the replicas.
const DURABLE: &str = "orchestrator-environment-teardown";

/// Tears down deleted environments until the bus ends (reconnecting after errors).
pub async fn follow_deletions(engine: Engine) {
    loop {
        let spec = ConsumerSpec::new(StreamKind::Events, DURABLE)
            .filter("slipway.events.catalog.environment.deleted")
            .ack_wait(Duration::from_secs(30));
        let mut consumer = match engine.bus().consumer(spec).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "cannot follow environment deletions; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(delivery) = consumer.next().await {
            match delivery {
                Ok(delivery) => handle(&engine, &delivery).await,
                Err(error) => tracing::debug!(%error, "environment deletion consumer hiccup"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn handle(engine: &Engine, delivery: &Delivery) {
    let (organization_id, deleted) = match delivery.decode::<ev::Event>() {
        Ok(ev::Event {
            organization_id,
            payload: Some(ev::event::Payload::EnvironmentDeleted(deleted)),
            ..
        }) => (organization_id, deleted),
        Ok(_) => {
            let _ = delivery.ack().await;
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "undecodable environment deletion dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    match teardown(engine, &organization_id, &deleted.environment_id).await {
        Ok(queued) => {
            if let Some(row) = queued {
                tracing::info!(environment = %deleted.environment_id, deployment = %row.id, "deleted environment's teardown queued");
            }
            let _ = delivery.ack().await;
        }
        Err(error) => {
            tracing::warn!(%error, environment = %deleted.environment_id, "cannot queue a deleted environment's teardown; retrying");
            let _ = delivery.nack(Some(Duration::from_secs(2))).await;
        }
    }
}

/// Queues the teardown of `environment_id`, gone from the catalog; None when there is
/// nothing to tear down (never deployed, or already deleted) or another replica queued it.
pub async fn teardown(
    engine: &Engine,
    organization_id: &str,
    environment_id: &str,
) -> Result<Option<DeploymentRow>, StoreError> {
    let store = engine.store();
    let mut rows = Vec::new();
    for phase in [Phase::Queued, Phase::Running, Phase::Done] {
        rows.extend(store.in_environment(environment_id, phase).await?);
    }
    // Ids are time-ordered: the last one is the latest deployment.
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let Some(latest) = rows.last() else {
        return Ok(None);
    };
    if latest.action == Action::Delete.proto() as i32 || latest.organization_id != organization_id {
        return Ok(None);
    }
    let actor = status::actor(
        ev::ActorKind::Service,
        "orchestrator",
        "environment teardown",
    );
    engine.cancel_pending(environment_id, &actor).await?;
    let Some(planned) = rows.iter().rev().find(|row| row.plan.is_some()) else {
        // Only deployments that never started: nothing reached the cluster.
        return Ok(None);
    };
    let new = NewDeployment {
        id: new_id(),
        organization_id: planned.organization_id.clone(),
        project_id: planned.project_id.clone(),
        environment_id: environment_id.to_owned(),
        environment_mode: planned.environment_mode,
        action: Action::Delete.proto() as i32,
        status: Action::Delete.queued() as i32,
        trigger: pb::DeploymentTrigger::CatalogDeletion as i32,
        triggered_by: environment_id.to_owned(),
        plan: planned.plan.clone(),
        cluster_id: planned.cluster_id.clone(),
        ..NewDeployment::default()
    };
    let key = RequestKey {
        organization_id: planned.organization_id.clone(),
        method: "CatalogDeletion",
        request_id: environment_id.to_owned(),
    };
    let (row, created) = store.insert_deployment(new, Some(key)).await?;
    if !created {
        return Ok(None);
    }
    status::queued(engine.bus(), actor, &row).await;
    engine.wake();
    Ok(Some(row))
}
