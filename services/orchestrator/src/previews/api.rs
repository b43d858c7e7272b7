//! `slipway.deploy.v1.PreviewService`: validates, reads the blueprint or preview from the
//! catalog (as the orchestrator), authorizes the caller with `slipway_auth` for the
//! permissions the proto names, then acts through [`super::lifecycle`].

use std::sync::Arc;

use slipway_api::{Violations, page, timestamp};
use slipway_auth::AuthenticateLayer;
use slipway_auth::rbac::{
    Action as RbacAction, Answer, Decision, EnvironmentMode as RbacMode, Principal, Resource,
};
use slipway_kit::GrpcServer;
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::preview_service_server::{PreviewService, PreviewServiceServer};
use slipway_service::Platform;
use tonic::{Request, Response, Status};
use tower::Layer as _;

use super::lifecycle::{Ensured, Origin, PullRequest, deploys_automatically};
use super::store::PreviewRow;
use super::{Previews, catalog_status, repository_key};
use crate::api::Deployments;
use crate::api::{IdCursor, caller};
use crate::store::{DeploymentFilter, DeploymentRow};

/// Mounts `PreviewService` behind authentication.
pub fn mount_previews(server: GrpcServer, platform: &Platform, previews: Previews) -> GrpcServer {
    let authenticate = AuthenticateLayer::new(Arc::clone(&platform.auth));
    let deployments = Deployments::over(previews.engine.clone());
    server.add_service(authenticate.layer(PreviewServiceServer::new(PreviewApi {
        previews,
        deployments,
    })))
}

/// The gRPC service.
#[derive(Clone)]
pub struct PreviewApi {
    previews: Previews,
    deployments: Deployments,
}

/// Checks `action`; a denial answers as RBAC says (`NOT_FOUND` when the caller may not
/// learn the target exists).
fn authorize(
    principal: &Principal,
    action: RbacAction,
    resource: &Resource<'_>,
    kind: &str,
    id: &str,
) -> Result<(), ApiError> {
    match slipway_auth::authorize(principal, action, resource) {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(denial) => Err(match denial.answer() {
            Answer::PermissionDenied => ApiError::PermissionDenied {
                permission: denial.action().as_str().to_owned(),
            },
            Answer::Unauthenticated => {
                ApiError::Unauthenticated(slipway_proto::AuthFailure::TokenInvalid)
            }
            _ => ApiError::not_found(kind, id),
        }),
    }
}

fn rbac_mode(mode: i32) -> Option<RbacMode> {
    match EnvironmentMode::try_from(mode).ok()? {
        EnvironmentMode::Unspecified => None,
        EnvironmentMode::Production => Some(RbacMode::Production),
        EnvironmentMode::Staging => Some(RbacMode::Staging),
        EnvironmentMode::Development => Some(RbacMode::Development),
        EnvironmentMode::Preview => Some(RbacMode::Preview),
    }
}

fn environment_resource(environment: &cat::Environment) -> Resource<'_> {
    let resource =
        Resource::in_organization(&environment.organization_id).in_project(&environment.project_id);
    match rbac_mode(environment.mode) {
        Some(mode) => resource.in_environment(&environment.id, mode),
        None => resource,
    }
}

fn later(
    a: Option<prost_types::Timestamp>,
    b: Option<prost_types::Timestamp>,
) -> Option<prost_types::Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if (b.seconds, b.nanos) > (a.seconds, a.nanos) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

fn validate_pull_request(v: &mut Violations, pull_request: Option<&pb::PullRequest>) {
    let field = "preview_environment.pull_request";
    let Some(pr) = pull_request else {
        v.add(field, "is required");
        return;
    };
    if pr.repository_url.is_empty() {
        v.add(format!("{field}.repository_url"), "is required");
    }
    v.max_chars(&format!("{field}.repository_url"), &pr.repository_url, 2048);
    if pr.number == 0 {
        v.add(format!("{field}.number"), "must be greater than 0");
    } else if i64::try_from(pr.number).is_err() {
        v.add(format!("{field}.number"), "is too large");
    }
    if pr.source_branch.is_empty() {
        v.add(format!("{field}.source_branch"), "is required");
    }
    v.max_chars(&format!("{field}.source_branch"), &pr.source_branch, 255);
    v.max_chars(&format!("{field}.target_branch"), &pr.target_branch, 255);
    v.max_chars(&format!("{field}.web_url"), &pr.web_url, 2048);
}

impl PreviewApi {
    /// The catalog environment `id`, or NOT_FOUND.
    async fn environment(&self, id: &str, kind: &str) -> Result<cat::Environment, ApiError> {
        self.previews
            .catalog
            .environment(id)
            .await
            .map_err(|error| catalog_status(&error.0, kind, id))
    }

    /// A preview environment the caller may do `action` on: NOT_FOUND for an environment
    /// that is not a preview, is another organization's, or (for reads) is not readable.
    async fn preview(
        &self,
        principal: &Principal,
        id: &str,
        action: RbacAction,
    ) -> Result<cat::Environment, ApiError> {
        let mut v = Violations::new();
        v.required("id", id);
        v.finish()?;
        let environment = match self.environment(id, "preview_environment").await {
            Err(ApiError::InvalidArgument(_)) => {
                return Err(ApiError::not_found("preview_environment", id));
            }
            other => other?,
        };
        if environment.mode != EnvironmentMode::Preview as i32 {
            return Err(ApiError::not_found("preview_environment", id));
        }
        let read = authorize(
            principal,
            RbacAction::CatalogEnvironmentsRead,
            &environment_resource(&environment),
            "preview_environment",
            id,
        );
        if read.is_err() {
            return Err(ApiError::not_found("preview_environment", id));
        }
        if action != RbacAction::CatalogEnvironmentsRead {
            authorize(
                principal,
                action,
                &environment_resource(&environment),
                "preview_environment",
                id,
            )?;
        }
        Ok(environment)
    }

    /// The public view of a preview: the catalog environment, what the orchestrator
    /// recorded, and its latest deployment.
    async fn view(
        &self,
        environment: cat::Environment,
        row: Option<&PreviewRow>,
    ) -> Result<pb::PreviewEnvironment, ApiError> {
        let latest = self.latest_deployment(&environment).await?;
        let mut update_time = later(
            environment.update_time,
            row.map(|r| timestamp(r.update_time)),
        );
        update_time = later(
            update_time,
            latest.as_ref().map(|d| timestamp(d.update_time)),
        );
        let blueprint = if environment.source_environment_id.is_empty() {
            row.map(|r| r.blueprint_environment_id.clone())
                .unwrap_or_default()
        } else {
            environment.source_environment_id.clone()
        };
        Ok(pb::PreviewEnvironment {
            id: environment.id,
            organization_id: environment.organization_id,
            project_id: environment.project_id,
            name: environment.name,
            blueprint_environment_id: blueprint,
            cluster_id: environment.cluster_id,
            pull_request: environment.pull_request.map(|pr| pb::PullRequest {
                repository_url: pr.repository_url,
                number: pr.number,
                source_branch: pr.source_branch,
                target_branch: pr.target_branch,
                web_url: pr.web_url,
            }),
            last_deployment_id: latest.as_ref().map(|d| d.id.clone()).unwrap_or_default(),
            last_deployment_status: latest.as_ref().map_or(0, |d| d.status),
            deployed_git_commit_sha: row
                .map(|r| r.deployed_git_commit_sha.clone())
                .unwrap_or_default(),
            create_time: environment.create_time,
            update_time,
            etag: environment.etag,
        })
    }

    async fn latest_deployment(
        &self,
        environment: &cat::Environment,
    ) -> Result<Option<DeploymentRow>, ApiError> {
        let (mut rows, _) = self
            .previews
            .engine
            .store()
            .list_deployments(
                &DeploymentFilter {
                    organization_id: environment.organization_id.clone(),
                    environment_id: Some(environment.id.clone()),
                    ..DeploymentFilter::default()
                },
                1,
                None,
            )
            .await?;
        Ok(rows.pop())
    }

    /// The first deploy of a preview, for a repeated create.
    async fn first_deploy(
        &self,
        environment: &cat::Environment,
    ) -> Result<Option<pb::Deployment>, ApiError> {
        let (rows, _) = self
            .previews
            .engine
            .store()
            .list_deployments(
                &DeploymentFilter {
                    organization_id: environment.organization_id.clone(),
                    environment_id: Some(environment.id.clone()),
                    ..DeploymentFilter::default()
                },
                slipway_api::validation::MAX_PAGE_SIZE,
                None,
            )
            .await?;
        let first = rows
            .iter()
            .rev()
            .find(|d| d.action == pb::DeploymentAction::Deploy as i32);
        match first {
            Some(row) => Ok(Some(self.deployments.to_proto(row).await?)),
            None => Ok(None),
        }
    }

    /// The answer to a repeated create: the preview the first request made.
    async fn replay(
        &self,
        row: &PreviewRow,
    ) -> Result<pb::CreatePreviewEnvironmentResponse, ApiError> {
        let Some(environment_id) = &row.environment_id else {
            return Err(ApiError::Unavailable(
                "the first request with this request_id is still in progress; retry shortly"
                    .to_owned(),
            ));
        };
        let environment = self
            .environment(environment_id, "preview_environment")
            .await?;
        let deployment = self.first_deploy(&environment).await?;
        Ok(pb::CreatePreviewEnvironmentResponse {
            preview_environment: Some(self.view(environment, Some(row)).await?),
            deployment,
        })
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreatePreviewEnvironmentRequest,
    ) -> Result<pb::CreatePreviewEnvironmentResponse, ApiError> {
        let mut v = Violations::new();
        v.required("project_id", &request.project_id);
        v.request_id(&request.request_id);
        let preview = request.preview_environment.clone().unwrap_or_default();
        if request.preview_environment.is_none() {
            v.add("preview_environment", "is required");
        } else {
            v.required(
                "preview_environment.blueprint_environment_id",
                &preview.blueprint_environment_id,
            );
            if !preview.name.is_empty() {
                v.dns_label("preview_environment.name", &preview.name);
            }
            validate_pull_request(&mut v, preview.pull_request.as_ref());
        }
        v.finish()?;
        let pr = preview.pull_request.unwrap_or_default();

        let project = self
            .previews
            .catalog
            .project(&request.project_id)
            .await
            .map_err(|error| catalog_status(&error.0, "project", &request.project_id))?;
        let organization_id = project.organization_id.clone();
        authorize(
            principal,
            RbacAction::CatalogProjectsRead,
            &Resource::in_organization(&organization_id).in_project(&project.id),
            "project",
            &project.id,
        )?;
        let request_id = (!request.request_id.is_empty()).then(|| request.request_id.clone());
        if let Some(key) = &request_id
            && let Some(row) = self
                .previews
                .store
                .by_request(&organization_id, key)
                .await
                .map_err(super::PreviewError::from)?
        {
            return self.replay(&row).await;
        }

        let blueprint_id = &preview.blueprint_environment_id;
        let blueprint = self.environment(blueprint_id, "environment").await?;
        if blueprint.organization_id != organization_id {
            return Err(ApiError::not_found("environment", blueprint_id));
        }
        authorize(
            principal,
            RbacAction::CatalogEnvironmentsRead,
            &environment_resource(&blueprint),
            "environment",
            blueprint_id,
        )
        .map_err(|error| match error {
            ApiError::PermissionDenied { .. } => ApiError::not_found("environment", blueprint_id),
            other => other,
        })?;
        if blueprint.project_id != project.id {
            return Err(ApiError::invalid_field(
                "preview_environment.blueprint_environment_id",
                "is an environment of another project",
            ));
        }
        if !blueprint.blueprint {
            return Err(ApiError::FailedPrecondition {
                message: "the environment is not a blueprint".to_owned(),
                violations: vec![slipway_proto::PreconditionViolation {
                    kind: "NOT_A_BLUEPRINT".to_owned(),
                    subject: "environment".to_owned(),
                    description: "previews are cloned from blueprint environments only".to_owned(),
                }],
            });
        }
        authorize(
            principal,
            RbacAction::CatalogEnvironmentsCreate,
            &Resource::in_organization(&organization_id)
                .in_project(&project.id)
                .in_mode(RbacMode::Preview)
                .on_cluster(&blueprint.cluster_id),
            "environment",
            blueprint_id,
        )?;
        let automatic = deploys_automatically(&blueprint);
        if automatic {
            authorize(
                principal,
                RbacAction::DeployEnvironmentsDeploy,
                &Resource::in_organization(&organization_id)
                    .in_project(&project.id)
                    .in_mode(RbacMode::Preview),
                "environment",
                blueprint_id,
            )?;
        }

        let pull_request = PullRequest {
            repository_url: pr.repository_url,
            number: pr.number,
            source_branch: pr.source_branch,
            target_branch: pr.target_branch,
            web_url: pr.web_url,
        };
        let name = (!preview.name.is_empty()).then_some(preview.name);
        let row = match self
            .previews
            .ensure(&blueprint, &pull_request, name, request_id.clone())
            .await?
        {
            Ensured::Created(row) => row,
            // Two concurrent repeats: the other one created it.
            Ensured::Existing(row) if row.request_id.is_some() && row.request_id == request_id => {
                return self.replay(&row).await;
            }
            Ensured::Existing(row) => {
                return Err(ApiError::already_exists(
                    "preview_environment",
                    row.environment_id.unwrap_or_default(),
                ));
            }
        };
        let deployment = if automatic {
            let queued = self
                .previews
                .deploy(&row, "", &Origin::caller(principal))
                .await?;
            Some(self.deployments.to_proto(&queued).await?)
        } else {
            None
        };
        let environment_id = row.environment_id.clone().unwrap_or_default();
        let environment = self
            .environment(&environment_id, "preview_environment")
            .await?;
        Ok(pb::CreatePreviewEnvironmentResponse {
            preview_environment: Some(self.view(environment, Some(&row)).await?),
            deployment,
        })
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListPreviewEnvironmentsRequest,
    ) -> Result<pb::ListPreviewEnvironmentsResponse, ApiError> {
        let mut v = Violations::new();
        v.required("project_id", &request.project_id);
        let size = v.page_size(request.page_size);
        let query = format!(
            "previews/{}/{}/{}/{}",
            request.project_id,
            request.blueprint_environment_id,
            request.repository_url,
            request.pull_request_number
        );
        let after = match page::decode::<IdCursor>(&request.page_token, &query) {
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
        let project = self
            .previews
            .catalog
            .project(&request.project_id)
            .await
            .map_err(|error| catalog_status(&error.0, "project", &request.project_id))?;
        authorize(
            principal,
            RbacAction::CatalogProjectsRead,
            &Resource::in_organization(&project.organization_id).in_project(&project.id),
            "project",
            &project.id,
        )
        .map_err(|_| ApiError::not_found("project", &request.project_id))?;
        let readable = slipway_auth::authorize(
            principal,
            RbacAction::CatalogEnvironmentsRead,
            &Resource::in_organization(&project.organization_id)
                .in_project(&project.id)
                .in_mode(RbacMode::Preview),
        )
        .is_allowed();
        if !readable {
            return Ok(pb::ListPreviewEnvironmentsResponse::default());
        }
        let key =
            (!request.repository_url.is_empty()).then(|| repository_key(&request.repository_url));
        let mut previews: Vec<cat::Environment> = self
            .previews
            .catalog
            .project_environments(&project.id)
            .await
            .map_err(|error| catalog_status(&error.0, "project", &project.id))?
            .into_iter()
            .filter(|e| e.mode == EnvironmentMode::Preview as i32)
            .filter(|e| {
                request.blueprint_environment_id.is_empty()
                    || e.source_environment_id == request.blueprint_environment_id
            })
            .filter(|e| {
                let pr = e.pull_request.as_ref();
                key.as_ref().is_none_or(|key| {
                    pr.is_some_and(|pr| &repository_key(&pr.repository_url) == key)
                }) && (request.pull_request_number == 0
                    || pr.is_some_and(|pr| pr.number == request.pull_request_number))
            })
            .filter(|e| after.as_ref().is_none_or(|cursor| e.id < cursor.id))
            .collect();
        // Ids are UUIDv7: descending ids are newest first.
        previews.sort_by(|a, b| b.id.cmp(&a.id));
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next = if previews.len() > size {
            previews.truncate(size);
            previews.last().map(|e| IdCursor { id: e.id.clone() })
        } else {
            None
        };
        let mut out = Vec::with_capacity(previews.len());
        for environment in previews {
            let row = self
                .previews
                .store
                .by_environment(&environment.id)
                .await
                .map_err(super::PreviewError::from)?;
            out.push(self.view(environment, row.as_ref()).await?);
        }
        Ok(pb::ListPreviewEnvironmentsResponse {
            preview_environments: out,
            next_page_token: page::encode(next, &query),
        })
    }
}

#[tonic::async_trait]
impl PreviewService for PreviewApi {
    async fn create_preview_environment(
        &self,
        request: Request<pb::CreatePreviewEnvironmentRequest>,
    ) -> Result<Response<pb::CreatePreviewEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.create(&principal, request.into_inner()).await?,
        ))
    }

    async fn get_preview_environment(
        &self,
        request: Request<pb::GetPreviewEnvironmentRequest>,
    ) -> Result<Response<pb::GetPreviewEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let environment = self
            .preview(&principal, &r.id, RbacAction::CatalogEnvironmentsRead)
            .await?;
        let row = self
            .previews
            .store
            .by_environment(&environment.id)
            .await
            .map_err(|error| ApiError::from(super::PreviewError::from(error)))?;
        Ok(Response::new(pb::GetPreviewEnvironmentResponse {
            preview_environment: Some(self.view(environment, row.as_ref()).await?),
        }))
    }

    async fn list_preview_environments(
        &self,
        request: Request<pb::ListPreviewEnvironmentsRequest>,
    ) -> Result<Response<pb::ListPreviewEnvironmentsResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn delete_preview_environment(
        &self,
        request: Request<pb::DeletePreviewEnvironmentRequest>,
    ) -> Result<Response<pb::DeletePreviewEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let environment = self
            .preview(&principal, &r.id, RbacAction::CatalogEnvironmentsDelete)
            .await?;
        if !r.etag.is_empty() && r.etag != environment.etag {
            return Err(ApiError::stale_etag("preview_environment").into());
        }
        self.previews
            .teardown(
                &environment.organization_id,
                &environment.id,
                &r.etag,
                &Origin::caller(&principal),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeletePreviewEnvironmentResponse {}))
    }
}
