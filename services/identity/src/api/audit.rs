//! `slipway.identity.v1.AuditService`: an organization's audit log, for its owners and
//! admins, newest first, with filters.

use slipway_auth::principal;
use slipway_auth::rbac::{Action, Principal, Resource, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::audit_service_server::AuditService;
use tonic::{Request, Response, Status};

use super::{Call, Context, target};
use crate::convert;
use crate::page;
use crate::store::{self, ActionFilter, AuditCursor, AuditFilter, AuditTarget, PageRequest};
use crate::validation::Violations;

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Audit {
    ctx: Context,
}

impl Audit {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// Whether `text` is dot-separated lower_snake segments, as action names are.
fn segments(text: &str) -> Option<usize> {
    let parts: Vec<&str> = text.split('.').collect();
    parts
        .iter()
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then_some(parts.len())
}

/// The action filter: an exact name (three segments) or a prefix of one or two segments
/// followed by `.*`.
fn action_filter(action: &str, v: &mut Violations) -> Option<ActionFilter> {
    if action.is_empty() {
        return None;
    }
    if let Some(prefix) = action.strip_suffix(".*") {
        if matches!(segments(prefix), Some(1 | 2)) {
            return Some(ActionFilter::Prefix(format!("{prefix}.")));
        }
    } else if segments(action) == Some(3) {
        return Some(ActionFilter::Exact(action.to_owned()));
    }
    v.add(
        "action",
        "must be an action name (`deploy.environments.deploy`) or a prefix ending in `.*`",
    );
    None
}

/// The stored text of an enum value: its proto name without the prefix.
fn stored_name(full: &str, prefix: &str) -> Option<String> {
    full.strip_prefix(prefix).map(str::to_owned)
}

fn target_filter(target: Option<&pb::Resource>) -> AuditTarget {
    let Some(target) = target else {
        return AuditTarget::default();
    };
    let present = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    AuditTarget {
        kind: pb::ResourceKind::try_from(target.kind)
            .ok()
            .filter(|kind| *kind != pb::ResourceKind::Unspecified)
            .and_then(|kind| stored_name(kind.as_str_name(), "RESOURCE_KIND_")),
        id: present(&target.id),
        project_id: present(&target.project_id),
        environment_id: present(&target.environment_id),
        environment_mode: EnvironmentMode::try_from(target.environment_mode)
            .ok()
            .filter(|mode| *mode != EnvironmentMode::Unspecified)
            .and_then(|mode| stored_name(mode.as_str_name(), "ENVIRONMENT_MODE_")),
        cluster_id: present(&target.cluster_id),
    }
}

fn event_to_proto(event: &store::AuditEvent) -> pb::AuditEvent {
    let target = &event.target;
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    pb::AuditEvent {
        id: event.id.clone(),
        organization_id: event.organization_id.clone(),
        actor: Some(convert::principal_ref_to_proto(&event.actor)),
        action: event.action.clone(),
        method: event.method.clone(),
        target: Some(pb::Resource {
            kind: target
                .kind
                .as_deref()
                .and_then(|kind| pb::ResourceKind::from_str_name(&format!("RESOURCE_KIND_{kind}")))
                .map_or(0, i32::from),
            id: text(&target.id),
            organization_id: event.organization_id.clone(),
            project_id: text(&target.project_id),
            environment_id: text(&target.environment_id),
            environment_mode: target
                .environment_mode
                .as_deref()
                .and_then(|mode| {
                    EnvironmentMode::from_str_name(&format!("ENVIRONMENT_MODE_{mode}"))
                })
                .map_or(0, i32::from),
            cluster_id: text(&target.cluster_id),
        }),
        event_time: Some(convert::timestamp(event.event_time)),
        origin: Some(pb::Origin {
            ip_address: event.origin.ip_address.clone(),
            user_agent: event.origin.user_agent.clone(),
        }),
        status_code: event.status_code.clone(),
        error_reason: event.error_reason.clone(),
    }
}

impl Audit {
    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListAuditEventsRequest,
        call: &Call,
    ) -> Result<pb::ListAuditEventsResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        let size = v.page_size(request.page_size);
        let actor = match request.actor.as_ref() {
            None => None,
            Some(actor) => {
                let kind = pb::PrincipalKind::try_from(actor.kind)
                    .ok()
                    .and_then(|kind| {
                        store::PrincipalKind::parse(
                            kind.as_str_name().trim_start_matches("PRINCIPAL_KIND_"),
                        )
                    });
                if kind.is_none() {
                    v.add("actor.kind", "is required with an actor filter");
                }
                if actor.id.is_empty() {
                    v.add("actor.id", "is required with an actor filter");
                }
                kind.map(|kind| (kind, actor.id.clone()))
            }
        };
        let action = action_filter(&request.action, &mut v);
        let time = |field: &str, value: Option<&prost_types::Timestamp>, v: &mut Violations| {
            value.and_then(|time| {
                let converted = convert::from_timestamp(time).map(store::truncate_time);
                if converted.is_none() {
                    v.add(field, "is not a valid time");
                }
                converted
            })
        };
        let start_time = time("start_time", request.start_time.as_ref(), &mut v);
        let end_time = time("end_time", request.end_time.as_ref(), &mut v);
        if let (Some(start), Some(end)) = (start_time, end_time)
            && start >= end
        {
            v.add("start_time", "must be before end_time");
        }
        v.finish()?;
        let org = request.organization_id.as_str();
        let filter = AuditFilter {
            actor,
            action,
            target: target_filter(request.target.as_ref()),
            start_time,
            end_time,
        };
        // Every filter field is part of the query a page token continues.
        let query = format!("audit_events/{org}/{filter:?}");
        let after = page::decode::<AuditCursor>(&request.page_token, &query)?;
        let resource = Resource::in_organization(org).of_kind(ResourceKind::AuditEvent);
        self.ctx
            .authorize_audited(
                principal,
                Action::IdentityAuditEventsRead,
                &resource,
                "organization",
                org,
                call,
                target("AUDIT_EVENT", ""),
            )
            .await?;
        let listed = self
            .ctx
            .store
            .list_audit_events(org, &filter, &PageRequest { size, after })
            .await?;
        Ok(pb::ListAuditEventsResponse {
            audit_events: listed.items.iter().map(event_to_proto).collect(),
            next_page_token: page::encode(listed.next, &query),
        })
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let call = Call::of(
            &request,
            "/slipway.identity.v1.AuditService/ListAuditEvents",
        );
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.list(&principal, request.into_inner(), &call).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_patterns() {
        let mut v = Violations::new();
        assert_eq!(
            action_filter("deploy.*", &mut v),
            Some(ActionFilter::Prefix("deploy.".into()))
        );
        assert_eq!(
            action_filter("catalog.variables.*", &mut v),
            Some(ActionFilter::Prefix("catalog.variables.".into()))
        );
        assert_eq!(
            action_filter("deploy.environments.deploy", &mut v),
            Some(ActionFilter::Exact("deploy.environments.deploy".into()))
        );
        assert!(v.finish().is_ok());
        for bad in ["*", "deploy", "Deploy.x.y", "a.b.c.*", "a..b", "a.b.c.d"] {
            let mut v = Violations::new();
            assert_eq!(action_filter(bad, &mut v), None, "{bad}");
            assert!(v.has("action"), "{bad}");
        }
    }
}
