//! `slipway.identity.v1.AuthService`: Authenticate, Check and BatchCheck.
//!
//! Mounted without `AuthenticateLayer`: Authenticate authenticates the credential in its
//! request, not the caller's, so it must answer callers without one. Check and BatchCheck
//! resolve the caller's own `authorization` here, through the same cached resolver the
//! layer uses (identity drops its entries itself on every change it makes). Authenticate
//! resolves uncached, through the store resolver, because its answer carries more than a
//! principal (token and organization records) and is what other services cache.

use std::sync::Arc;
use std::time::SystemTime;

use slipway_auth::authn::bearer;
use slipway_auth::rbac::{Action, Decision, DenyReason, Principal, PrincipalKind};
use slipway_auth::{AuthnError, CachingResolver, PrincipalResolver as _};
use slipway_proto::ApiError;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::resolver::{Resolved, StoreResolver};
use crate::store::Store;
use crate::validation::Violations;

/// Most checks in one BatchCheck: one full List page.
pub const MAX_BATCH: usize = 500;

/// The gRPC service; mount it as is (it authenticates Check's caller itself).
#[derive(Clone)]
pub struct Auth {
    store: Store,
    resolver: Arc<CachingResolver<StoreResolver>>,
}

impl Auth {
    pub fn new(store: Store, resolver: Arc<CachingResolver<StoreResolver>>) -> Self {
        Self { store, resolver }
    }

    /// The caller of a Check, resolved from its `authorization` metadata through the
    /// cache: its roles are those stored now, since identity drops cached entries itself
    /// on every change it makes, and other replicas' changes arrive as events.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, ApiError> {
        let headers = request.metadata().clone().into_headers();
        let credential = bearer(&headers)?;
        Ok(self.resolver.resolve(credential).await?)
    }

    /// Whose permissions to check: the caller, unless it names someone else, which is not
    /// supported yet for anyone (a control-plane service checking for another principal
    /// would need that principal resolved by id).
    fn subject(caller: Principal, named: Option<&pb::PrincipalRef>) -> Result<Principal, ApiError> {
        let Some(named) = named else {
            return Ok(caller);
        };
        let kind = pb::PrincipalKind::try_from(named.kind).ok();
        let is_caller = named.id == caller.id()
            && matches!(
                (kind, caller.kind()),
                (Some(pb::PrincipalKind::User), PrincipalKind::User)
                    | (Some(pb::PrincipalKind::ApiToken), PrincipalKind::ApiToken)
                    | (Some(pb::PrincipalKind::Agent), PrincipalKind::Agent)
                    | (Some(pb::PrincipalKind::Service), PrincipalKind::Service)
            );
        if is_caller {
            return Ok(caller);
        }
        Err(ApiError::PermissionDenied {
            permission: "checking another principal's permissions".to_owned(),
        })
    }

    async fn authenticate(
        &self,
        request: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, ApiError> {
        let credential = request.credential.trim();
        if credential.is_empty() {
            return Err(AuthnError::Missing.into());
        }
        let resolved = match self.resolver.inner().resolve_any(credential).await? {
            Resolved::Token(resolved) => resolved,
            Resolved::Service(principal) => {
                return Ok(pb::AuthenticateResponse {
                    principal: Some(slipway_auth::convert::principal_to_proto(&principal)),
                });
            }
            Resolved::User(resolved) => {
                return Ok(pb::AuthenticateResponse {
                    principal: Some(convert::user_principal(
                        &resolved.user,
                        &resolved.memberships,
                        resolved.principal.expire_time(),
                    )),
                });
            }
        };
        let token = &resolved.token;
        let organization = self
            .store
            .get_organization(&token.organization_id)
            .await
            .map_err(|error| match error {
                crate::store::StoreError::NotFound(_) => AuthnError::Invalid.into(),
                other => ApiError::from(other),
            })?;
        Ok(pb::AuthenticateResponse {
            principal: Some(convert::token_principal(token, &organization)),
        })
    }
}

/// Decides one check; a malformed one is INVALID_ARGUMENT naming `prefix`'s fields.
fn decide(
    principal: &Principal,
    action: &str,
    resource: Option<&pb::Resource>,
    prefix: &str,
    now: SystemTime,
) -> Result<pb::Decision, ApiError> {
    let mut v = Violations::new();
    let action = match action.parse::<Action>() {
        Ok(action) => Some(action),
        Err(_) => {
            v.add(
                format!("{prefix}action"),
                "is not an action listed on AuthService",
            );
            None
        }
    };
    if resource.is_none() {
        v.add(format!("{prefix}resource"), "is required");
    }
    v.finish()?;
    let (Some(action), Some(resource)) = (action, resource) else {
        return Err(ApiError::invalid_field(
            format!("{prefix}resource"),
            "is required",
        ));
    };
    let resource = convert::resource_from_proto(resource);
    let decision = slipway_auth::rbac::authorize_at(principal, action, &resource, now);
    let message = match decision {
        Decision::Allow(_) => format!("{action} is allowed"),
        Decision::Deny(denial) => {
            if let DenyReason::InvalidResource(error) = denial.reason() {
                return Err(ApiError::invalid_field(
                    format!("{prefix}resource.{}", error.field().as_str()),
                    error.to_string(),
                ));
            }
            denial.to_string()
        }
    };
    Ok(pb::Decision {
        allowed: decision.is_allowed(),
        reason: decision.reason_number(),
        message,
    })
}

#[tonic::async_trait]
impl AuthService for Auth {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Ok(Response::new(
            Auth::authenticate(self, request.into_inner()).await?,
        ))
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let principal = Self::subject(caller, request.principal.as_ref())?;
        let decision = decide(
            &principal,
            &request.action,
            request.resource.as_ref(),
            "",
            SystemTime::now(),
        )?;
        Ok(Response::new(pb::CheckResponse {
            decision: Some(decision),
        }))
    }

    async fn batch_check(
        &self,
        request: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let principal = Self::subject(caller, request.principal.as_ref())?;
        if request.checks.is_empty() || request.checks.len() > MAX_BATCH {
            return Err(ApiError::invalid_field(
                "checks",
                format!("must hold 1 to {MAX_BATCH} checks"),
            )
            .into());
        }
        // One instant for the whole batch, so an expiry cannot split it.
        let now = SystemTime::now();
        let decisions = request
            .checks
            .iter()
            .enumerate()
            .map(|(i, check)| {
                decide(
                    &principal,
                    &check.action,
                    check.resource.as_ref(),
                    &format!("checks[{i}]."),
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::BatchCheckResponse { decisions }))
    }
}
