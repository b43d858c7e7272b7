//! The status machine of a deployment per action, and the events announcing it.

use std::sync::Arc;

use slipway_events::{EventBus, EventBusExt as _};
use slipway_proto::deploy::v1::{DeploymentAction, DeploymentStatus as S};
use slipway_proto::events::v1 as ev;

use crate::store::{DeploymentRow, now};

/// What a deployment does (the proto's action without its unspecified value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Deploy,
    Stop,
    Restart,
    Delete,
}

impl Action {
    /// The action stored as `action`; `None` for an unknown value.
    pub fn from_i32(value: i32) -> Option<Self> {
        match DeploymentAction::try_from(value).ok()? {
            DeploymentAction::Deploy => Some(Action::Deploy),
            DeploymentAction::Stop => Some(Action::Stop),
            DeploymentAction::Restart => Some(Action::Restart),
            DeploymentAction::Delete => Some(Action::Delete),
            DeploymentAction::Unspecified => None,
        }
    }

    pub fn proto(self) -> DeploymentAction {
        match self {
            Action::Deploy => DeploymentAction::Deploy,
            Action::Stop => DeploymentAction::Stop,
            Action::Restart => DeploymentAction::Restart,
            Action::Delete => DeploymentAction::Delete,
        }
    }

    /// Waiting in the queue.
    pub fn queued(self) -> S {
        match self {
            Action::Deploy => S::Queued,
            Action::Stop => S::StopQueued,
            Action::Restart => S::RestartQueued,
            Action::Delete => S::DeleteQueued,
        }
    }

    /// Applying its stages.
    pub fn running(self) -> S {
        match self {
            Action::Deploy => S::Deploying,
            Action::Stop => S::Stopping,
            Action::Restart => S::Restarting,
            Action::Delete => S::Deleting,
        }
    }

    /// Final, every service done.
    pub fn succeeded(self) -> S {
        match self {
            Action::Deploy => S::Deployed,
            Action::Stop => S::Stopped,
            Action::Restart => S::Restarted,
            Action::Delete => S::Deleted,
        }
    }

    /// Final, a stage failed.
    pub fn failed(self) -> S {
        match self {
            Action::Deploy => S::DeploymentError,
            Action::Stop => S::StopError,
            Action::Restart => S::RestartError,
            Action::Delete => S::DeleteError,
        }
    }
}

/// The running status of a stored action value (for the store's claim).
pub fn running_status(action: i32) -> i32 {
    Action::from_i32(action).map_or(S::Deploying, Action::running) as i32
}

/// Whether `status` is final.
pub fn is_final(status: i32) -> bool {
    matches!(
        S::try_from(status),
        Ok(S::Deployed
            | S::BuildError
            | S::DeploymentError
            | S::Canceled
            | S::Stopped
            | S::StopError
            | S::Restarted
            | S::RestartError
            | S::Deleted
            | S::DeleteError)
    )
}

/// Who caused an event.
pub fn actor(kind: ev::ActorKind, id: &str, display_name: &str) -> ev::Actor {
    ev::Actor {
        kind: kind.into(),
        id: id.to_owned(),
        display_name: display_name.to_owned(),
    }
}

/// The orchestrator itself, as the actor of the engine's changes.
pub fn orchestrator_actor() -> ev::Actor {
    actor(ev::ActorKind::Service, "orchestrator", "orchestrator")
}

use slipway_api::timestamp;

/// Publishes a deploy event on the EVENTS stream. A failed publish is logged, not
/// returned: the change is committed, and the events are notifications.
pub async fn publish(
    bus: &Arc<dyn EventBus>,
    organization_id: &str,
    actor: ev::Actor,
    verb: &str,
    payload: ev::event::Payload,
) {
    let id = uuid::Uuid::now_v7().to_string();
    let event = ev::Event {
        id: id.clone(),
        time: Some(timestamp(now())),
        organization_id: organization_id.to_owned(),
        actor: Some(actor),
        r#type: format!("deploy.deployment.{verb}"),
        payload: Some(payload),
    };
    let subject = format!("slipway.events.deploy.deployment.{verb}");
    if let Err(error) = bus.publish_proto(&subject, &id, &event).await {
        tracing::error!(%error, %subject, "cannot publish a deploy event");
    }
}

/// `deploy.deployment.queued`.
pub async fn queued(bus: &Arc<dyn EventBus>, actor: ev::Actor, row: &DeploymentRow) {
    let payload = ev::event::Payload::DeploymentQueued(ev::DeploymentQueued {
        deployment_id: row.id.clone(),
        project_id: row.project_id.clone(),
        environment_id: row.environment_id.clone(),
        environment_mode: row.environment_mode,
        service_id: row.service_id.clone(),
        action: row.action,
        status: row.status,
    });
    publish(bus, &row.organization_id, actor, "queued", payload).await;
}

/// `deploy.deployment.status_changed`, and `deploy.deployment.finished` after a final one.
pub async fn changed(
    bus: &Arc<dyn EventBus>,
    actor: ev::Actor,
    row: &DeploymentRow,
    previous: i32,
    status: i32,
    error_message: &str,
) {
    if previous == status {
        return;
    }
    let payload = ev::event::Payload::DeploymentStatusChanged(ev::DeploymentStatusChanged {
        deployment_id: row.id.clone(),
        project_id: row.project_id.clone(),
        environment_id: row.environment_id.clone(),
        environment_mode: row.environment_mode,
        service_id: row.service_id.clone(),
        action: row.action,
        previous_status: previous,
        status,
    });
    publish(
        bus,
        &row.organization_id,
        actor.clone(),
        "status_changed",
        payload,
    )
    .await;
    if is_final(status) {
        let payload = ev::event::Payload::DeploymentFinished(ev::DeploymentFinished {
            deployment_id: row.id.clone(),
            project_id: row.project_id.clone(),
            environment_id: row.environment_id.clone(),
            environment_mode: row.environment_mode,
            service_id: row.service_id.clone(),
            action: row.action,
            status,
            error_message: error_message.to_owned(),
            start_time: row.start_time.map(timestamp),
            end_time: Some(timestamp(now())),
        });
        publish(bus, &row.organization_id, actor, "finished", payload).await;
    }
}
