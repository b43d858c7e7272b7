//! The gRPC adapter: one file per service. Each handler decodes and validates the request,
//! authorizes it with `slipway_auth::authorize`, calls the store, records the audit event
//! of a mutating call, publishes the change, and encodes the answer.
//!
//! What the handlers share lives here: [`Context`] (the store, the bus and the resolver),
//! the mapping of store errors and RBAC denials to [`ApiError`], the audit record and the
//! event publisher.

pub mod api_tokens;
pub mod audit;
pub mod auth;
pub mod invitations;
pub mod members;
pub mod organizations;
pub mod roles;
pub mod users;

use std::sync::Arc;

use slipway_auth::rbac::{Action, Answer, Decision, Denial, DenyReason, Principal, Resource};
use slipway_events::{EventBus, EventBusExt as _};
use slipway_proto::events::v1 as ev;
use slipway_proto::{ApiError, AuthFailure, PreconditionViolation};

use crate::convert;
use crate::resolver::StoreResolver;
use crate::store::{self, AuditTarget, NewAuditEvent, Origin, Precondition, Store, StoreError};
use slipway_auth::CachingResolver;

/// What every handler needs. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub bus: Arc<dyn EventBus>,
    /// The cached resolver every authenticated call goes through; [`Context::publish`]
    /// drops what each change makes stale from it.
    pub resolver: Arc<CachingResolver<StoreResolver>>,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(resource) => ApiError::not_found(resource.as_str(), ""),
            StoreError::AlreadyExists(resource) => ApiError::already_exists(resource.as_str(), ""),
            StoreError::EtagMismatch(resource) => ApiError::stale_etag(resource.as_str()),
            StoreError::FailedPrecondition(Precondition::AlreadyOwner) => {
                ApiError::invalid_field("member_id", Precondition::AlreadyOwner.to_string())
            }
            StoreError::FailedPrecondition(precondition) => ApiError::FailedPrecondition {
                message: precondition.to_string(),
                violations: vec![PreconditionViolation {
                    kind: precondition.reason().to_owned(),
                    subject: String::new(),
                    description: precondition.to_string(),
                }],
            },
            StoreError::Unavailable(_) => {
                ApiError::Unavailable("the database is unavailable; retry shortly".to_owned())
            }
            internal @ StoreError::Internal(_) => ApiError::internal(internal),
        }
    }
}

/// A denial a handler built itself with a resource that lacks a scope field: a bug here.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadCheck(String);

/// The answer to a denied action on a resource of type `resource_type` named `name`.
pub fn denied(denial: Denial, resource_type: &str, name: &str) -> ApiError {
    match denial.answer() {
        Answer::NotFound => ApiError::not_found(resource_type, name),
        Answer::PermissionDenied => ApiError::PermissionDenied {
            permission: denial.action().as_str().to_owned(),
        },
        Answer::Unauthenticated => match denial.reason() {
            DenyReason::PrincipalExpired => ApiError::Unauthenticated(AuthFailure::TokenExpired),
            _ => ApiError::Unauthenticated(AuthFailure::TokenInvalid),
        },
        Answer::InvalidArgument => ApiError::internal(BadCheck(denial.to_string())),
    }
}

/// Authorizes `action` on `resource`; a denial is answered as [`denied`] says.
pub fn authorize(
    principal: &Principal,
    action: Action,
    resource: &Resource<'_>,
    resource_type: &str,
    name: &str,
) -> Result<(), ApiError> {
    match slipway_auth::authorize(principal, action, resource) {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(denial) => Err(denied(denial, resource_type, name)),
    }
}

/// Where a call came from, read before the request is consumed.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: &'static str,
    pub origin: Origin,
}

impl Call {
    pub fn of<T>(request: &tonic::Request<T>, method: &'static str) -> Self {
        let user_agent = request
            .metadata()
            .get("user-agent")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect();
        Self {
            method,
            origin: Origin {
                ip_address: request
                    .remote_addr()
                    .map(|addr| addr.ip().to_string())
                    .unwrap_or_default(),
                user_agent,
            },
        }
    }
}

/// The gRPC code name stored in the audit log.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Context {
    /// Runs `action` once per (caller, method, `request_id`): a repeat of a key that
    /// succeeded before answers with the first response and changes nothing (DESIGN.md,
    /// "Create and actions take an optional request_id"). Without a key, `action` just runs.
    pub async fn once<R, F, Fut>(
        &self,
        principal: &Principal,
        call: &Call,
        request_id: &str,
        action: F,
    ) -> Result<R, ApiError>
    where
        R: prost::Message + Default,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<R, ApiError>>,
    {
        let Some(key) = store::RequestKey::new(principal.id(), call.method, request_id) else {
            return action().await;
        };
        if let Some(recorded) = self.store.recorded_action(&key).await? {
            return R::decode(recorded.as_slice()).map_err(ApiError::internal);
        }
        let response = action().await?;
        // The action happened: failing to remember it must not turn its success into an
        // error (a repeat would then run again and answer what the state says).
        if let Err(error) = self
            .store
            .record_action(&key, response.encode_to_vec())
            .await
        {
            tracing::warn!(%error, method = call.method, "cannot record an action's request_id");
        }
        Ok(response)
    }

    /// [`authorize`], recording a refusal in the audit log of the resource's organization:
    /// every refused change, and every read answered PERMISSION_DENIED (audit.proto).
    /// Outsiders' refusals are not recorded (see [`Context::audit`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "the audit record needs each of them"
    )]
    pub async fn authorize_audited(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
        resource_type: &str,
        name: &str,
        call: &Call,
        target: AuditTarget,
    ) -> Result<(), ApiError> {
        let result = authorize(principal, action, resource, resource_type, name);
        if let Err(error) = &result
            && (!action.is_read_only() || matches!(error, ApiError::PermissionDenied { .. }))
        {
            self.audit(
                principal,
                resource.organization_id,
                action,
                call,
                target,
                Err(error),
            )
            .await;
        }
        result
    }

    /// Records a mutating call in `organization_id`'s audit log, whatever its outcome.
    ///
    /// Calls by principals with no place in that organization are not recorded there: the
    /// organization id is whatever the caller typed, and an outsider must not be able to
    /// write into another tenant's log. A failed write is logged, not answered: the change
    /// itself is already committed.
    pub async fn audit(
        &self,
        principal: &Principal,
        organization_id: &str,
        action: Action,
        call: &Call,
        target: AuditTarget,
        outcome: Result<(), &ApiError>,
    ) {
        if principal.membership(organization_id).is_none() {
            return;
        }
        let (status_code, error_reason) = match outcome {
            Ok(()) => ("OK", String::new()),
            Err(error) => (
                code_name(error.code()),
                match error {
                    ApiError::PermissionDenied { .. } => "PERMISSION_DENIED".to_owned(),
                    _ => String::new(),
                },
            ),
        };
        let event = NewAuditEvent {
            organization_id: organization_id.to_owned(),
            actor: convert::principal_ref(principal),
            action: action.as_str().to_owned(),
            method: call.method.to_owned(),
            target,
            event_time: store::now(),
            origin: call.origin.clone(),
            status_code: status_code.to_owned(),
            error_reason,
        };
        if let Err(error) = self.store.insert_audit_event(&event).await {
            tracing::error!(%error, method = call.method, "cannot record an audit event");
        }
    }

    /// Publishes an identity event on the EVENTS stream, subject
    /// `slipway.events.identity.<resource>.<verb>`.
    ///
    /// Before publishing, the change is applied to identity's own authentication cache,
    /// synchronously, so no later call to this replica is answered from a principal the
    /// change made stale (the event reaches other replicas' and services' caches).
    ///
    /// A failed publish is logged, not answered: the change is committed and retrying the
    /// call would repeat it. Consumers that missed it still see the change on their next
    /// resolution, once their short cache TTL passes.
    pub async fn publish(
        &self,
        principal: &Principal,
        organization_id: &str,
        resource: &str,
        verb: &str,
        payload: ev::event::Payload,
    ) {
        let id = uuid::Uuid::now_v7().to_string();
        let actor = convert::principal_ref(principal);
        let event = ev::Event {
            id: id.clone(),
            time: Some(convert::timestamp(store::now())),
            organization_id: organization_id.to_owned(),
            actor: Some(ev::Actor {
                // The event enum mirrors PrincipalKind number for number.
                kind: i32::from(convert::principal_kind_to_proto(actor.kind)),
                id: actor.id,
                display_name: actor.display_name,
            }),
            r#type: format!("identity.{resource}.{verb}"),
            payload: Some(payload),
        };
        for invalidation in slipway_auth::remote::invalidations_for(&event) {
            self.resolver.invalidate(&invalidation);
        }
        let subject = match slipway_events::subject::event("identity", resource) {
            Ok(prefix) => format!("{prefix}.{verb}"),
            Err(error) => {
                tracing::error!(%error, "bad event subject");
                return;
            }
        };
        if let Err(error) = self.bus.publish_proto(&subject, &id, &event).await {
            tracing::error!(%error, %subject, "cannot publish an identity event");
        }
    }
}

/// An audit target naming one identity resource.
pub fn target(kind: &str, id: &str) -> AuditTarget {
    AuditTarget {
        kind: Some(kind.to_owned()),
        id: (!id.is_empty()).then(|| id.to_owned()),
        ..AuditTarget::default()
    }
}
