//! Which webhook event a deploy event is, and the JSON body sent for it: the proto3 JSON
//! form of `WebhookPayload` (lowerCamelCase names, enums by name, RFC 3339 times, empty
//! values left out), written by hand because the generated types carry no serde.

use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message as _;
use serde_json::{Map, Value, json};
use slipway_proto::catalog::v1 as cat;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::{
    DeploymentAction, DeploymentStatus as S, DeploymentTrigger, StageKind, StageStatus,
    WebhookEventType as T,
};
use slipway_proto::events::v1 as ev;

use crate::engine::decode_statuses;
use crate::store::{DeploymentRow, StageRow};

/// The webhook event a deploy event announces, with the deployment it is about and the
/// status it reached; `None` for deploy events no webhook hears (queued, a running status
/// after the first, a final status announced by `status_changed`: `finished` carries it).
pub fn webhook_event(event: &ev::Event) -> Option<(T, String, i32)> {
    match event.payload.as_ref()? {
        ev::event::Payload::DeploymentStatusChanged(changed) => {
            let was_queued = matches!(
                S::try_from(changed.previous_status),
                Ok(S::Queued | S::StopQueued | S::RestartQueued | S::DeleteQueued)
            );
            let queued_or_final = matches!(
                S::try_from(changed.status),
                Ok(S::Queued | S::StopQueued | S::RestartQueued | S::DeleteQueued)
            ) || crate::engine::status::is_final(changed.status);
            (was_queued && !queued_or_final).then(|| {
                (
                    T::DeploymentStarted,
                    changed.deployment_id.clone(),
                    changed.status,
                )
            })
        }
        ev::event::Payload::DeploymentFinished(finished) => {
            let kind = match S::try_from(finished.status).ok()? {
                S::Deployed | S::Stopped | S::Restarted | S::Deleted => T::DeploymentSucceeded,
                S::BuildError
                | S::DeploymentError
                | S::StopError
                | S::RestartError
                | S::DeleteError => T::DeploymentFailed,
                S::Canceled => T::DeploymentCanceled,
                _ => return None,
            };
            Some((kind, finished.deployment_id.clone(), finished.status))
        }
        _ => None,
    }
}

/// The names people read: the project's and environment's, from the deployment's frozen
/// plan when it has one.
pub fn names_from_plan(row: &DeploymentRow) -> Option<(String, String)> {
    let plan = cat::EnvironmentSnapshot::decode(row.plan.as_deref()?).ok()?;
    Some((plan.project?.name, plan.environment?.name))
}

fn time(value: DateTime<Utc>) -> Value {
    Value::String(value.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn put(map: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

fn put_time(map: &mut Map<String, Value>, key: &str, value: Option<DateTime<Utc>>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), time(value));
    }
}

fn enum_name<E: TryFrom<i32>>(value: i32, name: impl Fn(&E) -> &'static str) -> Value {
    match E::try_from(value) {
        Ok(known) => Value::String(name(&known).to_owned()),
        // Proto3 JSON writes an unknown enum value as its number.
        Err(_) => Value::from(value),
    }
}

/// Everything a webhook event says, for [`body`].
pub struct Event<'a> {
    pub event_id: &'a str,
    pub event_type: T,
    pub time: DateTime<Utc>,
    pub project_name: &'a str,
    pub environment_name: &'a str,
    /// The deployment, its status set to the one the event announced.
    pub deployment: &'a DeploymentRow,
    pub stages: &'a [StageRow],
}

/// The JSON body of a delivery.
pub fn body(event: &Event<'_>) -> Vec<u8> {
    let row = event.deployment;
    let mut deployment = Map::new();
    put(&mut deployment, "id", &row.id);
    put(&mut deployment, "organizationId", &row.organization_id);
    put(&mut deployment, "projectId", &row.project_id);
    put(&mut deployment, "environmentId", &row.environment_id);
    put(&mut deployment, "serviceId", &row.service_id);
    put(&mut deployment, "clusterId", &row.cluster_id);
    deployment.insert(
        "action".into(),
        enum_name(row.action, DeploymentAction::as_str_name),
    );
    deployment.insert("status".into(), enum_name(row.status, S::as_str_name));
    deployment.insert(
        "trigger".into(),
        enum_name(row.trigger, DeploymentTrigger::as_str_name),
    );
    put(&mut deployment, "triggeredBy", &row.triggered_by);
    put(
        &mut deployment,
        "rolledBackFromDeploymentId",
        &row.rolled_back_from,
    );
    put(&mut deployment, "gitCommitSha", &row.git_commit_sha);
    put(&mut deployment, "imageTag", &row.image_tag);
    let stages: Vec<Value> = event
        .stages
        .iter()
        .map(|stage| {
            let mut out = Map::new();
            out.insert("kind".into(), enum_name(stage.kind, StageKind::as_str_name));
            out.insert(
                "status".into(),
                enum_name(stage.status, StageStatus::as_str_name),
            );
            put(&mut out, "message", &stage.message);
            put_time(&mut out, "startTime", stage.start_time);
            put_time(&mut out, "endTime", stage.end_time);
            Value::Object(out)
        })
        .collect();
    if !stages.is_empty() {
        deployment.insert("stages".into(), Value::Array(stages));
    }
    let mut statuses: Vec<pb::DeploymentServiceStatus> =
        decode_statuses(row).into_values().collect();
    statuses.sort_by(|a, b| a.service_id.cmp(&b.service_id));
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|status| {
            let mut out = Map::new();
            put(&mut out, "serviceId", &status.service_id);
            put(&mut out, "serviceName", &status.service_name);
            out.insert("status".into(), enum_name(status.status, S::as_str_name));
            put(&mut out, "errorMessage", &status.error_message);
            Value::Object(out)
        })
        .collect();
    if !statuses.is_empty() {
        deployment.insert("serviceStatuses".into(), Value::Array(statuses));
    }
    put(&mut deployment, "errorMessage", &row.error_message);
    put_time(&mut deployment, "createTime", Some(row.create_time));
    put_time(&mut deployment, "startTime", row.start_time);
    put_time(&mut deployment, "endTime", row.end_time);
    put_time(&mut deployment, "updateTime", Some(row.update_time));
    put(&mut deployment, "etag", &row.etag);

    let mut payload = Map::new();
    put(&mut payload, "eventId", event.event_id);
    payload.insert("eventType".into(), json!(event.event_type.as_str_name()));
    payload.insert("time".into(), time(event.time));
    put(&mut payload, "organizationId", &row.organization_id);
    put(&mut payload, "projectName", event.project_name);
    put(&mut payload, "environmentName", event.environment_name);
    payload.insert(
        "environmentMode".into(),
        enum_name(row.environment_mode, EnvironmentMode::as_str_name),
    );
    payload.insert("deployment".into(), Value::Object(deployment));
    // Serializing a map of strings and numbers cannot fail.
    serde_json::to_vec(&Value::Object(payload)).unwrap_or_default()
}

/// The `Slipway-Event` header: `deployment.started` and so on.
pub fn header_name(event_type: i32) -> &'static str {
    match T::try_from(event_type) {
        Ok(T::DeploymentStarted) => "deployment.started",
        Ok(T::DeploymentSucceeded) => "deployment.succeeded",
        Ok(T::DeploymentFailed) => "deployment.failed",
        Ok(T::DeploymentCanceled) => "deployment.canceled",
        _ => "deployment.unknown",
    }
}
