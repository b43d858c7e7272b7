//! `slipway.catalog.v1.ProjectService`: projects group the services that work together.

use slipway_api::Violations;
use slipway_auth::rbac::{Action, Principal, Resource, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::project_service_server::ProjectService;
use slipway_proto::events::v1 as ev;
use tonic::{Request, Response, Status};

use super::{
    CatalogMessage as _, Context, MAX_DESCRIPTION, authorize, caller, next_page_token,
    page_request, request_key, require,
};
use crate::mask::UpdateMask;
use crate::store::{Children, Filter, Kind, NewRow, RowChanges, new_id};

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Projects {
    ctx: Context,
}

impl Projects {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// The fields of a project an update may change.
const MUTABLE: &[&str] = &["name", "description"];

fn validate(project: &pb::Project, prefix: &str, v: &mut Violations) {
    v.dns_label(&format!("{prefix}name"), &project.name);
    v.max_chars(
        &format!("{prefix}description"),
        &project.description,
        MAX_DESCRIPTION,
    );
}

fn project_resource<'a>(organization_id: &'a str, project_id: &'a str) -> Resource<'a> {
    Resource::in_organization(organization_id)
        .in_project(project_id)
        .target(ResourceKind::Project, project_id)
}

impl Projects {
    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateProjectRequest,
    ) -> Result<pb::Project, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let project = request.project.unwrap_or_default();
        validate(&project, "project.", &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        authorize(
            principal,
            Action::CatalogProjectsCreate,
            &Resource::in_organization(org),
            Kind::Project,
            "",
        )?;
        let row = NewRow {
            id: new_id(),
            organization_id: org.to_owned(),
            parent_id: org.to_owned(),
            name: project.name.clone(),
            spec: project.to_spec(),
            ..NewRow::default()
        };
        let key = request_key(org, "CreateProject", &request.request_id);
        let (row, created) = self.ctx.store.insert(Kind::Project, row, key).await?;
        let project = pb::Project::from_row(&row)?;
        if created {
            self.ctx
                .publish(
                    principal,
                    org,
                    "project",
                    "created",
                    ev::event::Payload::ProjectCreated(ev::ProjectCreated {
                        project_id: row.id.clone(),
                        name: row.name.clone(),
                    }),
                )
                .await;
        }
        Ok(project)
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::Project, ApiError> {
        require("id", id)?;
        let row = self.ctx.row(Kind::Project, id).await?;
        authorize(
            principal,
            Action::CatalogProjectsRead,
            &project_resource(&row.organization_id, &row.id),
            Kind::Project,
            id,
        )?;
        pb::Project::from_row(&row)
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListProjectsRequest,
    ) -> Result<pb::ListProjectsResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.max_chars("name_contains", &request.name_contains, 63);
        let query = format!(
            "projects/{}/{}",
            request.organization_id, request.name_contains
        );
        let page = page_request(request.page_size, &request.page_token, &query, &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        // Listing needs no grant on any one project: members see the projects they may
        // read, outsiders get NOT_FOUND for the organization.
        if principal.membership(org).is_none()
            && principal.kind() != slipway_auth::rbac::PrincipalKind::Service
        {
            return Err(ApiError::not_found("organization", org));
        }
        let filter = Filter {
            organization_id: org.to_owned(),
            name_contains: (!request.name_contains.is_empty()).then_some(request.name_contains),
            ..Filter::default()
        };
        let found = self
            .ctx
            .store
            .list_by(Kind::Project, &filter, &page)
            .await?;
        let mut projects = Vec::with_capacity(found.rows.len());
        for row in &found.rows {
            let readable = slipway_auth::authorize(
                principal,
                Action::CatalogProjectsRead,
                &project_resource(&row.organization_id, &row.id),
            )
            .is_allowed();
            if readable {
                projects.push(pb::Project::from_row(row)?);
            }
        }
        Ok(pb::ListProjectsResponse {
            projects,
            next_page_token: next_page_token(found.next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateProjectRequest,
    ) -> Result<pb::Project, ApiError> {
        let update = request.project.unwrap_or_default();
        let mut v = Violations::new();
        v.required("project.id", &update.id);
        let mask = UpdateMask::parse(request.update_mask.as_ref(), MUTABLE, &mut v);
        if mask.has("name") {
            v.dns_label("project.name", &update.name);
        }
        if mask.has("description") {
            v.max_chars("project.description", &update.description, MAX_DESCRIPTION);
        }
        v.finish()?;
        let row = self.ctx.row(Kind::Project, &update.id).await?;
        authorize(
            principal,
            Action::CatalogProjectsUpdate,
            &project_resource(&row.organization_id, &row.id),
            Kind::Project,
            &update.id,
        )?;
        let mut project = pb::Project::from_row(&row)?;
        if mask.has("name") {
            project.name = update.name.clone();
        }
        if mask.has("description") {
            project.description = update.description.clone();
        }
        let changes = RowChanges {
            name: Some(project.name.clone()),
            spec: Some(project.to_spec()),
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::Project, &row.id, etag, changes)
            .await?;
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "project",
                "updated",
                ev::event::Payload::ProjectUpdated(ev::ProjectUpdated {
                    project_id: row.id.clone(),
                    name: row.name.clone(),
                    update_mask: Some(mask.to_proto()),
                }),
            )
            .await;
        pb::Project::from_row(&row)
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteProjectRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let row = self.ctx.row(Kind::Project, &request.id).await?;
        authorize(
            principal,
            Action::CatalogProjectsDelete,
            &project_resource(&row.organization_id, &row.id),
            Kind::Project,
            &request.id,
        )?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        let children = if request.force {
            Children::Delete
        } else {
            Children::Refuse
        };
        self.ctx
            .store
            .delete(Kind::Project, &row.id, etag, children)
            .await?;
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "project",
                "deleted",
                ev::event::Payload::ProjectDeleted(ev::ProjectDeleted {
                    project_id: row.id.clone(),
                }),
            )
            .await;
        Ok(())
    }
}

#[tonic::async_trait]
impl ProjectService for Projects {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::CreateProjectResponse>, Status> {
        let principal = caller(&request)?;
        let project = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateProjectResponse {
            project: Some(project),
        }))
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::GetProjectResponse>, Status> {
        let principal = caller(&request)?;
        let project = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetProjectResponse {
            project: Some(project),
        }))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> Result<Response<pb::UpdateProjectResponse>, Status> {
        let principal = caller(&request)?;
        let project = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateProjectResponse {
            project: Some(project),
        }))
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> Result<Response<pb::DeleteProjectResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteProjectResponse {}))
    }
}
