//! `slipway.build.v1.BuildService`: reads the `Build` records the worker keeps, and
//! cancels builds. Every call is authenticated by `slipway_auth`'s layer and authorized
//! here; a build of an organization the caller does not belong to answers `NOT_FOUND`.
//!
//! A build job does not carry its environment's mode, and custom roles grant per mode. So
//! a build is authorized as strictly as its environment could be: the caller must be
//! allowed in every mode. Built-in roles are unaffected (they grant in every mode); a
//! custom role limited to some modes reads builds through the deployments instead.

use std::sync::Arc;

use slipway_api::{Violations, page};
use slipway_auth::rbac::{
    Action as RbacAction, Answer, Decision, EnvironmentMode as RbacMode, Principal,
};
use slipway_auth::{AuthenticateLayer, Resource};
use slipway_events::{EventBus, EventBusExt as _};
use slipway_kit::GrpcServer;
use slipway_proto::ApiError;
use slipway_proto::build::v1 as pb;
use slipway_proto::build::v1::build_service_server::{BuildService, BuildServiceServer};
use tonic::{Request, Response, Status};
use tower::Layer as _;

use crate::store::{Cursor, Filter, Store, StoreError};
use crate::worker::cancel_subject;

/// Mounts `BuildService` on `server`, behind authentication.
pub fn mount(
    server: GrpcServer,
    auth: Arc<dyn slipway_auth::PrincipalResolver>,
    store: Store,
    bus: Arc<dyn EventBus>,
) -> GrpcServer {
    let authenticate = AuthenticateLayer::new(auth);
    server.add_service(authenticate.layer(BuildServiceServer::new(Builds { store, bus })))
}

/// The gRPC service.
#[derive(Clone)]
pub struct Builds {
    store: Store,
    bus: Arc<dyn EventBus>,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                ApiError::Unavailable("the database is unavailable; retry shortly".to_owned())
            }
            internal @ StoreError::Internal(_) => ApiError::internal(internal),
        }
    }
}

fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    slipway_auth::principal(request)
        .cloned()
        .map_err(Status::from)
}

/// Allowed only when `action` is allowed on the build's environment in every mode.
fn authorize(principal: &Principal, action: RbacAction, build: &pb::Build) -> Result<(), ApiError> {
    for mode in RbacMode::ALL {
        let resource = Resource::in_organization(&build.organization_id)
            .in_project(&build.project_id)
            .in_environment(&build.environment_id, mode);
        if let Decision::Deny(denial) = slipway_auth::authorize(principal, action, &resource) {
            return Err(match denial.answer() {
                Answer::PermissionDenied => ApiError::PermissionDenied {
                    permission: denial.action().as_str().to_owned(),
                },
                Answer::Unauthenticated => {
                    ApiError::Unauthenticated(slipway_proto::AuthFailure::TokenInvalid)
                }
                _ => ApiError::not_found("build", &build.id),
            });
        }
    }
    Ok(())
}

/// The statuses a build ends in.
const STATUSES_FINAL: [pb::BuildStatus; 4] = [
    pb::BuildStatus::Succeeded,
    pb::BuildStatus::Failed,
    pb::BuildStatus::Canceled,
    pb::BuildStatus::TimedOut,
];

impl Builds {
    /// The build `id` when `principal` may do `action` on it.
    async fn visible(
        &self,
        principal: &Principal,
        id: &str,
        action: RbacAction,
    ) -> Result<crate::store::Stored, ApiError> {
        let mut v = Violations::new();
        v.required("id", id);
        v.finish()?;
        let Some(stored) = self.store.get(id).await? else {
            return Err(ApiError::not_found("build", id));
        };
        authorize(principal, action, &stored.build)?;
        Ok(stored)
    }
}

#[tonic::async_trait]
impl BuildService for Builds {
    async fn get_build(
        &self,
        request: Request<pb::GetBuildRequest>,
    ) -> Result<Response<pb::GetBuildResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let stored = self
            .visible(&principal, &r.id, RbacAction::BuildBuildsRead)
            .await?;
        Ok(Response::new(pb::GetBuildResponse {
            build: Some(stored.build),
        }))
    }

    async fn list_builds(
        &self,
        request: Request<pb::ListBuildsRequest>,
    ) -> Result<Response<pb::ListBuildsResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.required("environment_id", &r.environment_id);
        if r.page_size > 500 {
            v.add("page_size", "must be at most 500");
        }
        let size = v.page_size(r.page_size);
        for (i, status) in r.statuses.iter().enumerate() {
            if !matches!(pb::BuildStatus::try_from(*status), Ok(s) if s != pb::BuildStatus::Unspecified)
            {
                v.add(format!("statuses[{i}]"), "must be a build status");
            }
        }
        let mut statuses = r.statuses.clone();
        statuses.sort_unstable();
        statuses.dedup();
        let query = format!(
            "builds/{}/{}/{}/{:?}",
            r.environment_id, r.service_id, r.deployment_id, statuses
        );
        let after = match page::decode::<Cursor>(&r.page_token, &query) {
            Ok(after) => after,
            Err(_) => {
                v.add(
                    "page_token",
                    "is not a page token of this listing with these fields",
                );
                None
            }
        };
        v.finish()?;
        let filter = Filter {
            environment_id: r.environment_id.clone(),
            service_id: (!r.service_id.is_empty()).then_some(r.service_id),
            deployment_id: (!r.deployment_id.is_empty()).then_some(r.deployment_id),
            statuses,
        };
        let (rows, next) = self
            .store
            .list(&filter, size, after.as_ref())
            .await
            .map_err(ApiError::from)?;
        // Every build of an environment shares its organization and project: one decision
        // covers the page. An environment the caller cannot see lists as not found.
        if let Some(first) = rows.first() {
            authorize(&principal, RbacAction::BuildBuildsRead, &first.build).map_err(|error| {
                match error {
                    ApiError::NotFound { .. } => {
                        ApiError::not_found("environment", &r.environment_id)
                    }
                    other => other,
                }
            })?;
        }
        let builds = rows
            .into_iter()
            .map(|row| row.build)
            .filter(|build| rbac_allows(&principal, RbacAction::BuildBuildsRead, build))
            .collect();
        Ok(Response::new(pb::ListBuildsResponse {
            builds,
            next_page_token: page::encode(next, &query),
        }))
    }

    async fn cancel_build(
        &self,
        request: Request<pb::CancelBuildRequest>,
    ) -> Result<Response<pb::CancelBuildResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.request_id(&r.request_id);
        v.finish()?;
        let stored = self
            .visible(&principal, &r.id, RbacAction::BuildBuildsCancel)
            .await?;
        let status = pb::BuildStatus::try_from(stored.build.status).unwrap_or_default();
        if status == pb::BuildStatus::Canceled || stored.cancel_requested {
            return Ok(Response::new(pb::CancelBuildResponse {
                build: Some(stored.build),
            }));
        }
        if STATUSES_FINAL.contains(&status) {
            return Err(ApiError::FailedPrecondition {
                message: format!(
                    "the build has already ended ({})",
                    status.as_str_name().to_lowercase()
                ),
                violations: vec![slipway_proto::PreconditionViolation {
                    kind: "BUILD_ENDED".to_owned(),
                    subject: format!("builds/{}", r.id),
                    description: "only a build that has not ended can be canceled".to_owned(),
                }],
            }
            .into());
        }
        if !crate::worker::is_token(&r.id) {
            // No runner can follow a cancel subject for this id.
            return Err(ApiError::not_found("build", &r.id).into());
        }
        let reason = "canceled through the api";
        self.store
            .request_cancel(&r.id, reason)
            .await
            .map_err(ApiError::from)?;
        let cancel = pb::BuildCancel {
            job_id: r.id.clone(),
            reason: reason.to_owned(),
            request_time: Some(std::time::SystemTime::now().into()),
        };
        self.bus
            .publish_proto(&cancel_subject(&r.id), &format!("{}.cancel", r.id), &cancel)
            .await
            .map_err(|_| {
                ApiError::Unavailable("the build queue is unavailable; retry shortly".to_owned())
            })?;
        let build = self
            .store
            .get(&r.id)
            .await
            .map_err(ApiError::from)?
            .map(|s| s.build)
            .unwrap_or(stored.build);
        Ok(Response::new(pb::CancelBuildResponse {
            build: Some(build),
        }))
    }
}

fn rbac_allows(principal: &Principal, action: RbacAction, build: &pb::Build) -> bool {
    authorize(principal, action, build).is_ok()
}
