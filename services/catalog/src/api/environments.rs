//! `slipway.catalog.v1.EnvironmentService`: one version of a project's services on one
//! cluster, and clones of it (previews included).

use slipway_api::Violations;
use slipway_auth::rbac::{Action, EnvironmentMode as RbacMode, Principal, Resource, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::environment_service_server::EnvironmentService;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::events::v1 as ev;
use tonic::{Request, Response, Status};

use super::{
    CatalogMessage as _, Context, authorize, caller, next_page_token, page_request, rbac_mode,
    request_key, require,
};
use crate::mask::UpdateMask;
use crate::store::{Children, Filter, Kind, NewRow, Row, RowChanges, new_id};

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Environments {
    ctx: Context,
}

impl Environments {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// The fields of an environment an update may change (`cluster_id` is immutable).
const MUTABLE: &[&str] = &["name", "mode", "blueprint", "preview_settings"];

fn resource<'a>(
    organization_id: &'a str,
    project_id: &'a str,
    environment_id: &'a str,
    mode: RbacMode,
) -> Resource<'a> {
    Resource::in_organization(organization_id)
        .in_project(project_id)
        .in_environment(environment_id, mode)
        .target(ResourceKind::Environment, environment_id)
}

/// Validates the mode (required) and the blueprint flag (not on previews).
fn validate_mode(environment: &pb::Environment, prefix: &str, v: &mut Violations) {
    if rbac_mode(environment.mode).is_none() {
        v.add(format!("{prefix}mode"), "is required");
    }
    if environment.blueprint && environment.mode == i32::from(EnvironmentMode::Preview) {
        v.add(
            format!("{prefix}blueprint"),
            "a preview environment cannot be a blueprint",
        );
    }
}

fn event_of(row: &Row, environment: &pb::Environment) -> (String, String, String, i32, String) {
    (
        row.id.clone(),
        row.parent_id.clone(),
        row.name.clone(),
        environment.mode,
        row.cluster_id.clone().unwrap_or_default(),
    )
}

impl Environments {
    /// The cluster `id` of `organization_id`, NOT_FOUND otherwise (also when it belongs to
    /// another organization).
    async fn cluster(&self, organization_id: &str, id: &str) -> Result<Row, ApiError> {
        let cluster = self.ctx.row(Kind::Cluster, id).await?;
        if cluster.organization_id != organization_id {
            return Err(ApiError::not_found("cluster", id));
        }
        Ok(cluster)
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateEnvironmentRequest,
    ) -> Result<pb::Environment, ApiError> {
        let environment = request.environment.unwrap_or_default();
        let mut v = Violations::new();
        v.required("project_id", &request.project_id);
        v.request_id(&request.request_id);
        v.dns_label("environment.name", &environment.name);
        v.required("environment.cluster_id", &environment.cluster_id);
        validate_mode(&environment, "environment.", &mut v);
        v.finish()?;
        let mode = rbac_mode(environment.mode).unwrap_or(RbacMode::Development);
        let project = self.ctx.row(Kind::Project, &request.project_id).await?;
        let org = project.organization_id.clone();
        let target = Resource::in_organization(&org)
            .in_project(&project.id)
            .in_mode(mode)
            .on_cluster(&environment.cluster_id);
        authorize(
            principal,
            Action::CatalogEnvironmentsCreate,
            &target,
            Kind::Project,
            &request.project_id,
        )?;
        self.cluster(&org, &environment.cluster_id).await?;
        let mut stored = environment.clone();
        stored.source_environment_id.clear();
        stored.pull_request = None;
        let row = NewRow {
            id: new_id(),
            organization_id: org.clone(),
            parent_id: project.id.clone(),
            name: environment.name.clone(),
            project_id: Some(project.id.clone()),
            cluster_id: Some(environment.cluster_id.clone()),
            spec: stored.to_spec(),
            ..NewRow::default()
        };
        let key = request_key(&org, "CreateEnvironment", &request.request_id);
        let (row, created) = self.ctx.store.insert(Kind::Environment, row, key).await?;
        let environment = pb::Environment::from_row(&row)?;
        if created {
            self.publish_created(principal, &row, &environment).await;
        }
        Ok(environment)
    }

    async fn publish_created(&self, principal: &Principal, row: &Row, env: &pb::Environment) {
        let (environment_id, project_id, name, mode, cluster_id) = event_of(row, env);
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "environment",
                "created",
                ev::event::Payload::EnvironmentCreated(ev::EnvironmentCreated {
                    environment_id,
                    project_id,
                    name,
                    mode,
                    cluster_id,
                }),
            )
            .await;
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::Environment, ApiError> {
        require("id", id)?;
        let row = self.ctx.row(Kind::Environment, id).await?;
        let scope = self.ctx.environment_scope(&row)?;
        authorize(
            principal,
            Action::CatalogEnvironmentsRead,
            &scope.resource().target(ResourceKind::Environment, id),
            Kind::Environment,
            id,
        )?;
        pb::Environment::from_row(&row)
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListEnvironmentsRequest,
    ) -> Result<pb::ListEnvironmentsResponse, ApiError> {
        let mut v = Violations::new();
        v.required("project_id", &request.project_id);
        let query = format!(
            "environments/{}/{}/{}/{}",
            request.project_id, request.mode, request.cluster_id, request.blueprints_only
        );
        let page = page_request(request.page_size, &request.page_token, &query, &mut v);
        let mode_filter = rbac_mode(request.mode);
        if request.mode != 0 && mode_filter.is_none() {
            v.add("mode", "is not an environment mode");
        }
        v.finish()?;
        let project = self.ctx.row(Kind::Project, &request.project_id).await?;
        // Reading the project is what lets a caller learn it exists; environments in modes
        // the caller may not read are then left out of the page.
        authorize(
            principal,
            Action::CatalogProjectsRead,
            &Resource::in_organization(&project.organization_id).in_project(&project.id),
            Kind::Project,
            &project.id,
        )?;
        let filter = Filter {
            organization_id: project.organization_id.clone(),
            parent_id: Some(project.id.clone()),
            cluster_id: (!request.cluster_id.is_empty()).then(|| request.cluster_id.clone()),
            ..Filter::default()
        };
        let found = self
            .ctx
            .store
            .list_by(Kind::Environment, &filter, &page)
            .await?;
        let mut environments = Vec::with_capacity(found.rows.len());
        for row in &found.rows {
            let environment = pb::Environment::from_row(row)?;
            let Some(mode) = rbac_mode(environment.mode) else {
                continue;
            };
            if mode_filter.is_some_and(|wanted| wanted != mode)
                || (request.blueprints_only && !environment.blueprint)
            {
                continue;
            }
            let readable = slipway_auth::authorize(
                principal,
                Action::CatalogEnvironmentsRead,
                &resource(&row.organization_id, &row.parent_id, &row.id, mode),
            )
            .is_allowed();
            if readable {
                environments.push(environment);
            }
        }
        Ok(pb::ListEnvironmentsResponse {
            environments,
            next_page_token: next_page_token(found.next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateEnvironmentRequest,
    ) -> Result<pb::Environment, ApiError> {
        let update = request.environment.unwrap_or_default();
        let mut v = Violations::new();
        v.required("environment.id", &update.id);
        let mask = UpdateMask::parse(request.update_mask.as_ref(), MUTABLE, &mut v);
        if mask.has("name") {
            v.dns_label("environment.name", &update.name);
        }
        if mask.has("mode") && rbac_mode(update.mode).is_none() {
            v.add("environment.mode", "is required");
        }
        v.finish()?;
        let row = self.ctx.row(Kind::Environment, &update.id).await?;
        let scope = self.ctx.environment_scope(&row)?;
        authorize(
            principal,
            Action::CatalogEnvironmentsUpdate,
            &scope.resource().target(ResourceKind::Environment, &row.id),
            Kind::Environment,
            &row.id,
        )?;
        let mut environment = pb::Environment::from_row(&row)?;
        if mask.has("name") {
            environment.name = update.name.clone();
        }
        if mask.has("mode") {
            environment.mode = update.mode;
        }
        if mask.has("blueprint") {
            environment.blueprint = update.blueprint;
        }
        if mask.has("preview_settings") {
            environment.preview_settings = update.preview_settings;
        }
        let mut v = Violations::new();
        validate_mode(&environment, "environment.", &mut v);
        v.finish()?;
        if let Some(new_mode) = rbac_mode(environment.mode)
            && Some(new_mode) != scope.environment.as_ref().map(|(_, mode)| *mode)
        {
            authorize(
                principal,
                Action::CatalogEnvironmentsUpdate,
                &resource(&row.organization_id, &row.parent_id, &row.id, new_mode),
                Kind::Environment,
                &row.id,
            )?;
        }
        let changes = RowChanges {
            name: Some(environment.name.clone()),
            spec: Some(environment.to_spec()),
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::Environment, &row.id, etag, changes)
            .await?;
        let environment = pb::Environment::from_row(&row)?;
        let (environment_id, project_id, name, mode, cluster_id) = event_of(&row, &environment);
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "environment",
                "updated",
                ev::event::Payload::EnvironmentUpdated(ev::EnvironmentUpdated {
                    environment_id,
                    project_id,
                    name,
                    mode,
                    cluster_id,
                    update_mask: Some(mask.to_proto()),
                }),
            )
            .await;
        Ok(environment)
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteEnvironmentRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let row = self.ctx.row(Kind::Environment, &request.id).await?;
        let scope = self.ctx.environment_scope(&row)?;
        authorize(
            principal,
            Action::CatalogEnvironmentsDelete,
            &scope.resource().target(ResourceKind::Environment, &row.id),
            Kind::Environment,
            &row.id,
        )?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        let children = if request.force {
            Children::Delete
        } else {
            Children::Refuse
        };
        self.ctx
            .store
            .delete(Kind::Environment, &row.id, etag, children)
            .await?;
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "environment",
                "deleted",
                ev::event::Payload::EnvironmentDeleted(ev::EnvironmentDeleted {
                    environment_id: row.id.clone(),
                    project_id: row.parent_id.clone(),
                }),
            )
            .await;
        Ok(())
    }

    /// Copies an environment with its services and their variables under a new name, mode
    /// and cluster, in one transaction: a clone is whole or absent.
    async fn clone_environment(
        &self,
        principal: &Principal,
        request: pb::CloneEnvironmentRequest,
    ) -> Result<pb::Environment, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.dns_label("name", &request.name);
        v.request_id(&request.request_id);
        if request.mode != 0 && rbac_mode(request.mode).is_none() {
            v.add("mode", "is not an environment mode");
        }
        if request.pull_request.is_some() && request.mode != i32::from(EnvironmentMode::Preview) {
            v.add("pull_request", "is only allowed with mode PREVIEW");
        }
        v.finish()?;
        let source_row = self.ctx.row(Kind::Environment, &request.id).await?;
        let source_scope = self.ctx.environment_scope(&source_row)?;
        authorize(
            principal,
            Action::CatalogEnvironmentsRead,
            &source_scope
                .resource()
                .target(ResourceKind::Environment, &source_row.id),
            Kind::Environment,
            &source_row.id,
        )?;
        let source = pb::Environment::from_row(&source_row)?;
        let mut clone = source.clone();
        clone.name = request.name.clone();
        if request.mode != 0 {
            clone.mode = request.mode;
        }
        if !request.cluster_id.is_empty() {
            clone.cluster_id = request.cluster_id.clone();
        }
        clone.source_environment_id = source_row.id.clone();
        clone.pull_request = request.pull_request.clone();
        if clone.mode == i32::from(EnvironmentMode::Preview) {
            clone.blueprint = false;
        }
        let org = source_row.organization_id.clone();
        let mode = rbac_mode(clone.mode).unwrap_or(RbacMode::Development);
        authorize(
            principal,
            Action::CatalogEnvironmentsCreate,
            &Resource::in_organization(&org)
                .in_project(&source_row.parent_id)
                .in_mode(mode)
                .on_cluster(&clone.cluster_id),
            Kind::Environment,
            &source_row.id,
        )?;
        self.cluster(&org, &clone.cluster_id).await?;

        let environment_id = new_id();
        let project_id = source_row.parent_id.clone();
        let mut rows = vec![(
            Kind::Environment,
            NewRow {
                id: environment_id.clone(),
                organization_id: org.clone(),
                parent_id: project_id.clone(),
                name: clone.name.clone(),
                project_id: Some(project_id.clone()),
                cluster_id: Some(clone.cluster_id.clone()),
                spec: clone.to_spec(),
                ..NewRow::default()
            },
        )];
        let in_source = Filter {
            organization_id: org.clone(),
            environment_id: Some(source_row.id.clone()),
            ..Filter::default()
        };
        let services = self.ctx.store.list_all(Kind::Service, &in_source).await?;
        let variables = self.ctx.store.list_all(Kind::Variable, &in_source).await?;
        let mut service_ids = std::collections::HashMap::new();
        for service in &services {
            let id = new_id();
            service_ids.insert(service.id.clone(), id.clone());
            rows.push((
                Kind::Service,
                NewRow {
                    id,
                    parent_id: environment_id.clone(),
                    environment_id: Some(environment_id.clone()),
                    ..copy_of(service)
                },
            ));
        }
        for variable in &variables {
            // Environment-scoped variables move to the clone; service-scoped ones to the
            // clone of their service. Sealed values are bound to the organization, not
            // the row, so they are copied as they are.
            let (parent_id, service_id) = match &variable.service_id {
                Some(service) => match service_ids.get(service) {
                    Some(clone) => (clone.clone(), Some(clone.clone())),
                    None => continue,
                },
                None => (environment_id.clone(), None),
            };
            rows.push((
                Kind::Variable,
                NewRow {
                    id: new_id(),
                    parent_id,
                    environment_id: Some(environment_id.clone()),
                    service_id,
                    ..copy_of(variable)
                },
            ));
        }
        let key = request_key(&org, "CloneEnvironment", &request.request_id);
        let (created_rows, created) = self.ctx.store.insert_kinds(rows, key).await?;
        let row = created_rows
            .first()
            .ok_or_else(|| ApiError::Unavailable("the clone was not stored; retry".to_owned()))?;
        let environment = pb::Environment::from_row(row)?;
        if created {
            self.publish_created(principal, row, &environment).await;
        }
        Ok(environment)
    }
}

/// A new row with `row`'s content; the caller gives it its own id and parents.
fn copy_of(row: &Row) -> NewRow {
    NewRow {
        id: String::new(),
        organization_id: row.organization_id.clone(),
        parent_id: row.parent_id.clone(),
        name: row.name.clone(),
        subtype: row.subtype.clone(),
        project_id: row.project_id.clone(),
        environment_id: row.environment_id.clone(),
        service_id: row.service_id.clone(),
        cluster_id: row.cluster_id.clone(),
        spec: row.spec.clone(),
        sealed: row.sealed.clone(),
        lookup_hash: None,
    }
}

#[tonic::async_trait]
impl EnvironmentService for Environments {
    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::CreateEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let environment = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateEnvironmentResponse {
            environment: Some(environment),
        }))
    }

    async fn get_environment(
        &self,
        request: Request<pb::GetEnvironmentRequest>,
    ) -> Result<Response<pb::GetEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let environment = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetEnvironmentResponse {
            environment: Some(environment),
        }))
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_environment(
        &self,
        request: Request<pb::UpdateEnvironmentRequest>,
    ) -> Result<Response<pb::UpdateEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let environment = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateEnvironmentResponse {
            environment: Some(environment),
        }))
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteEnvironmentResponse {}))
    }

    async fn clone_environment(
        &self,
        request: Request<pb::CloneEnvironmentRequest>,
    ) -> Result<Response<pb::CloneEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let environment = self
            .clone_environment(&principal, request.into_inner())
            .await?;
        Ok(Response::new(pb::CloneEnvironmentResponse {
            environment: Some(environment),
        }))
    }
}
