//! `slipway.deploy.v1.DeploymentService`: each handler validates the request, loads what
//! the decision needs (the environment's project and mode from catalog, or the stored
//! deployment), authorizes with `slipway_auth`, writes to the store, publishes the event,
//! wakes the engine and answers. Actions return the deployment at once, queued.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use slipway_api::{Violations, page};
use slipway_auth::AuthenticateLayer;
use slipway_auth::rbac::{
    Action as RbacAction, Answer, Decision, EnvironmentMode as RbacMode, Principal, PrincipalKind,
    Resource,
};
use slipway_kit::GrpcServer;
use slipway_proto::ApiError;
use slipway_proto::agent::v1 as agent;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::catalog::v1::service_service_client::ServiceServiceClient;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::deployment_service_server::{
    DeploymentService, DeploymentServiceServer,
};
use slipway_service::Platform;
use tokio_stream::Stream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tower::Layer as _;

use crate::catalog::CatalogClient;
use crate::engine::status::{self, Action};
use crate::engine::{Engine, EngineConfig, EngineHandle, decode_statuses};
use crate::store::{
    DeploymentFilter, DeploymentRow, NewDeployment, Phase, RequestKey, StoreError, new_id,
};

/// Catalog's public `ServiceService`, called with the service credential: the one way to
/// learn which environment a service id belongs to.
#[derive(Clone, Debug)]
pub struct ServiceLookup {
    client: ServiceServiceClient<Channel>,
    bearer: AsciiMetadataValue,
}

impl ServiceLookup {
    /// A lookup on `channel` presenting `service_credential`; `None` if it is not ASCII.
    pub fn new(channel: Channel, service_credential: &str) -> Option<Self> {
        Some(Self {
            client: ServiceServiceClient::new(channel),
            bearer: format!("Bearer {service_credential}").parse().ok()?,
        })
    }

    async fn service(&self, id: &str) -> Result<cat::Service, Status> {
        let mut request = Request::new(cat::GetServiceRequest { id: id.to_owned() });
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        self.client
            .clone()
            .get_service(request)
            .await?
            .into_inner()
            .service
            .ok_or_else(|| Status::internal("catalog answered no service"))
    }
}

/// What the deployments API and engine need beyond the platform.
#[derive(Clone, Debug, Default)]
pub struct DeploymentsOptions {
    /// Catalog's internal API: snapshots (plans, and the environment's project and mode).
    pub catalog: Option<CatalogClient>,
    /// Catalog's service lookup, for the service actions.
    pub services: Option<ServiceLookup>,
    pub engine: EngineConfig,
}

/// Mounts `DeploymentService` behind authentication and starts this replica's engine; the
/// engine runs as long as the returned handle lives.
pub fn mount_deployments(
    server: GrpcServer,
    platform: &Platform,
    options: DeploymentsOptions,
) -> (GrpcServer, EngineHandle) {
    let engine = Engine::new(
        crate::store::Store::new(platform.db.clone()),
        Arc::clone(&platform.bus),
        options.catalog,
        options.engine,
    );
    let handle = engine.clone().start();
    let api = Deployments {
        engine,
        services: options.services,
    };
    let authenticate = AuthenticateLayer::new(Arc::clone(&platform.auth));
    (
        server.add_service(authenticate.layer(DeploymentServiceServer::new(api))),
        handle,
    )
}

/// The gRPC service.
#[derive(Clone)]
pub struct Deployments {
    engine: Engine,
    services: Option<ServiceLookup>,
}

/// Where an environment sits, for authorization.
struct Scope {
    organization_id: String,
    project_id: String,
    environment_id: String,
    mode: i32,
    service_count: usize,
    cluster_id: String,
}

impl Scope {
    fn resource(&self) -> Resource<'_> {
        let resource =
            Resource::in_organization(&self.organization_id).in_project(&self.project_id);
        match rbac_mode(self.mode) {
            Some(mode) => resource.in_environment(&self.environment_id, mode),
            None => resource,
        }
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

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(kind) => ApiError::not_found(kind, ""),
            StoreError::Unavailable(_) => {
                ApiError::Unavailable("the database is unavailable; retry shortly".to_owned())
            }
            internal @ StoreError::Internal(_) => ApiError::internal(internal),
        }
    }
}

fn precondition(reason: &str, subject: &str, description: &str) -> ApiError {
    ApiError::FailedPrecondition {
        message: description.to_owned(),
        violations: vec![slipway_proto::PreconditionViolation {
            kind: reason.to_owned(),
            subject: subject.to_owned(),
            description: description.to_owned(),
        }],
    }
}

fn catalog_error(status: &Status, kind: &str, id: &str) -> ApiError {
    match status.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => ApiError::not_found(kind, id),
        _ => ApiError::Unavailable("catalog is unavailable; retry shortly".to_owned()),
    }
}

use slipway_api::timestamp;

use slipway_auth::convert::event_actor;

/// Where a listing ordered by id resumes: the last id of the page before (ids are
/// time-ordered). Shared by every orchestrator API that pages by id.
#[derive(Serialize, Deserialize)]
pub(crate) struct IdCursor {
    pub(crate) id: String,
}

/// What an action targets.
enum Target {
    Environment(String),
    Service(String),
}

impl Deployments {
    /// The deployments view over `engine`, for other APIs that answer with deployments
    /// (previews); service actions need a [`ServiceLookup`] and are not offered by it.
    pub fn over(engine: Engine) -> Self {
        Self {
            engine,
            services: None,
        }
    }

    fn store(&self) -> &crate::store::Store {
        self.engine.store()
    }

    /// The environment's scope from catalog's snapshot (which also tells whether it has
    /// services). An unknown environment answers NOT_FOUND.
    async fn environment_scope(
        &self,
        environment_id: &str,
        service_id: Option<&str>,
    ) -> Result<Scope, ApiError> {
        let catalog = self.engine.catalog().ok_or_else(|| {
            ApiError::Unavailable("the orchestrator has no catalog configured".to_owned())
        })?;
        let response = catalog
            .environment_snapshot(cat::GetEnvironmentSnapshotRequest {
                environment_id: environment_id.to_owned(),
                service_ids: service_id.map(|s| vec![s.to_owned()]).unwrap_or_default(),
            })
            .await
            .map_err(|error| catalog_error(&error.0, "environment", environment_id))?;
        let snapshot = response.snapshot.unwrap_or_default();
        let environment = snapshot
            .environment
            .ok_or_else(|| ApiError::not_found("environment", environment_id))?;
        Ok(Scope {
            organization_id: environment.organization_id,
            project_id: environment.project_id,
            environment_id: environment.id,
            mode: environment.mode,
            service_count: snapshot.services.len(),
            cluster_id: environment.cluster_id,
        })
    }

    async fn target_scope(&self, target: &Target) -> Result<Scope, ApiError> {
        match target {
            Target::Environment(id) => self.environment_scope(id, None).await,
            Target::Service(id) => {
                let lookup = self.services.as_ref().ok_or_else(|| {
                    ApiError::Unavailable("the orchestrator has no catalog configured".to_owned())
                })?;
                let service = lookup
                    .service(id)
                    .await
                    .map_err(|status| catalog_error(&status, "service", id))?;
                self.environment_scope(&service.environment_id, Some(id))
                    .await
            }
        }
    }

    /// Queues an action after checking the caller may do it.
    #[allow(clippy::too_many_arguments)]
    async fn queue(
        &self,
        principal: &Principal,
        method: &'static str,
        target: Target,
        action: Action,
        request_id: &str,
        pins: (String, String),
    ) -> Result<pb::Deployment, ApiError> {
        let mut v = Violations::new();
        let (field, id) = match &target {
            Target::Environment(id) => ("environment_id", id.as_str()),
            Target::Service(id) => ("service_id", id.as_str()),
        };
        v.required(field, id);
        v.request_id(request_id);
        if !pins.0.is_empty()
            && (pins.0.len() != 40 || !pins.0.chars().all(|c| c.is_ascii_hexdigit()))
        {
            v.add(
                "git_commit_sha",
                "must be a full 40-character hexadecimal commit sha",
            );
        }
        if pins.1.len() > 128 {
            v.add("image_tag", "must be at most 128 characters");
        }
        v.finish()?;
        let scope = self.target_scope(&target).await?;
        let kind = if matches!(target, Target::Environment(_)) {
            "environment"
        } else {
            "service"
        };
        let rbac = if action == Action::Delete {
            RbacAction::DeployEnvironmentsDeleteResources
        } else {
            RbacAction::DeployEnvironmentsDeploy
        };
        authorize(principal, rbac, &scope.resource(), kind, id)?;
        if scope.service_count == 0 {
            return Err(precondition(
                "NO_SERVICES",
                "environment",
                "the environment has no service to act on",
            ));
        }
        if matches!(action, Action::Stop | Action::Restart) {
            let states = self.store().service_states(&scope.environment_id).await?;
            let deployed = states.iter().any(|s| {
                !s.deleted
                    && !s.catalog_revision.is_empty()
                    && match &target {
                        Target::Service(id) => &s.service_id == id,
                        Target::Environment(_) => true,
                    }
            });
            if !deployed {
                return Err(precondition(
                    "NOT_DEPLOYED",
                    kind,
                    "nothing is deployed: it was never deployed, or its runtime resources were deleted",
                ));
            }
        }
        let new = NewDeployment {
            id: new_id(),
            organization_id: scope.organization_id.clone(),
            project_id: scope.project_id.clone(),
            environment_id: scope.environment_id.clone(),
            environment_mode: scope.mode,
            service_id: match &target {
                Target::Service(id) => id.clone(),
                Target::Environment(_) => String::new(),
            },
            action: action.proto() as i32,
            status: action.queued() as i32,
            trigger: pb::DeploymentTrigger::Manual as i32,
            triggered_by: principal.id().to_owned(),
            git_commit_sha: pins.0,
            image_tag: pins.1,
            ..NewDeployment::default()
        };
        self.insert(principal, method, request_id, new).await
    }

    async fn insert(
        &self,
        principal: &Principal,
        method: &'static str,
        request_id: &str,
        new: NewDeployment,
    ) -> Result<pb::Deployment, ApiError> {
        let key = (!request_id.is_empty()).then(|| RequestKey {
            organization_id: new.organization_id.clone(),
            method,
            request_id: request_id.to_owned(),
        });
        let (row, created) = self.store().insert_deployment(new, key).await?;
        if created {
            status::queued(self.engine.bus(), event_actor(principal), &row).await;
            self.engine.wake();
        }
        self.to_proto(&row).await
    }

    /// A stored deployment the caller may read (NOT_FOUND otherwise).
    async fn readable(
        &self,
        principal: &Principal,
        id: &str,
        action: RbacAction,
    ) -> Result<DeploymentRow, ApiError> {
        require("id", id)?;
        let row = match self.store().deployment(id).await {
            Ok(row) => row,
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found("deployment", id)),
            Err(other) => return Err(other.into()),
        };
        authorize(principal, action, &row_resource(&row), "deployment", id)?;
        Ok(row)
    }

    /// The whole public view of a deployment: stages, steps, service statuses.
    pub async fn to_proto(&self, row: &DeploymentRow) -> Result<pb::Deployment, ApiError> {
        let stages = self.store().stages(&row.id).await?;
        let statuses = decode_statuses(row);
        let mut out: Vec<pb::Stage> = Vec::new();
        for stage in &stages {
            let reports = match &stage.command_id {
                Some(command) => self.store().step_reports(command).await?,
                None => Vec::new(),
            };
            let mut steps = Vec::new();
            for service_id in &stage.service_ids {
                let own: Vec<_> = reports
                    .iter()
                    .filter(|r| &r.service_id == service_id)
                    .collect();
                let last = own.last();
                let status = match (last, pb::StageStatus::try_from(stage.status)) {
                    (Some(r), _) => match agent::StepStatus::try_from(r.status) {
                        Ok(agent::StepStatus::Succeeded) => pb::StepStatus::Done,
                        Ok(agent::StepStatus::Failed) => pb::StepStatus::Error,
                        _ => pb::StepStatus::Ongoing,
                    },
                    (None, Ok(pb::StageStatus::Done)) => pb::StepStatus::Done,
                    (None, Ok(pb::StageStatus::Error)) => pb::StepStatus::Error,
                    (None, Ok(pb::StageStatus::Skipped)) => pb::StepStatus::Skipped,
                    (None, Ok(pb::StageStatus::Canceled)) => pb::StepStatus::Canceled,
                    (None, Ok(pb::StageStatus::Ongoing)) => pb::StepStatus::Ongoing,
                    (None, _) => pb::StepStatus::Queued,
                };
                let known = statuses.get(service_id);
                steps.push(pb::Step {
                    phase: last.map(|r| r.step.clone()).unwrap_or_default(),
                    service_id: service_id.clone(),
                    service_name: known.map(|s| s.service_name.clone()).unwrap_or_default(),
                    service_kind: known.map_or(0, |s| s.service_kind),
                    status: status as i32,
                    message: last.map(|r| r.message.clone()).unwrap_or_default(),
                    start_time: own.first().map(|r| timestamp(r.time)),
                    end_time: last
                        .filter(|r| {
                            r.status == agent::StepStatus::Succeeded as i32
                                || r.status == agent::StepStatus::Failed as i32
                        })
                        .map(|r| timestamp(r.time)),
                });
            }
            // The rows of one kind (jobs may carry two commands) make one stage.
            match out.last_mut() {
                Some(previous) if previous.kind == stage.kind => {
                    previous.steps.extend(steps);
                    previous.status = merge(previous.status, stage.status);
                    if previous.start_time.is_none() {
                        previous.start_time = stage.start_time.map(timestamp);
                    }
                    if stage.end_time.is_some() {
                        previous.end_time = stage.end_time.map(timestamp);
                    }
                }
                _ => out.push(pb::Stage {
                    kind: stage.kind,
                    status: stage.status,
                    steps,
                    start_time: stage.start_time.map(timestamp),
                    end_time: stage.end_time.map(timestamp),
                }),
            }
        }
        let mut service_statuses: Vec<_> = statuses.into_values().collect();
        service_statuses.sort_by(|a, b| a.service_name.cmp(&b.service_name));
        Ok(pb::Deployment {
            id: row.id.clone(),
            organization_id: row.organization_id.clone(),
            project_id: row.project_id.clone(),
            environment_id: row.environment_id.clone(),
            service_id: row.service_id.clone(),
            cluster_id: row.cluster_id.clone(),
            action: row.action,
            status: row.status,
            trigger: row.trigger,
            triggered_by: row.triggered_by.clone(),
            rolled_back_from_deployment_id: row.rolled_back_from.clone(),
            git_commit_sha: row.git_commit_sha.clone(),
            image_tag: row.image_tag.clone(),
            queue_position: self.store().queue_position(row).await?,
            stages: out,
            service_statuses,
            error_message: row.error_message.clone(),
            create_time: Some(timestamp(row.create_time)),
            start_time: row.start_time.map(timestamp),
            end_time: row.end_time.map(timestamp),
            update_time: Some(timestamp(row.update_time)),
            etag: row.etag.clone(),
        })
    }

    async fn environment_status(&self, scope: &Scope) -> Result<pb::EnvironmentStatus, ApiError> {
        let store = self.store();
        let running = store
            .in_environment(&scope.environment_id, Phase::Running)
            .await?;
        let queued = store
            .in_environment(&scope.environment_id, Phase::Queued)
            .await?;
        let last = store.last_finished(&scope.environment_id).await?;
        let states = store.service_states(&scope.environment_id).await?;
        // The catalog's current snapshot: its services, to tell up to date from out of
        // date, and its cluster's agent connection as catalog records it now.
        let snapshot = match self.engine.catalog() {
            Some(catalog) => catalog
                .environment_snapshot(cat::GetEnvironmentSnapshotRequest {
                    environment_id: scope.environment_id.clone(),
                    service_ids: Vec::new(),
                })
                .await
                .map(|r| r.snapshot.unwrap_or_default())
                .unwrap_or_default(),
            None => cat::EnvironmentSnapshot::default(),
        };
        let agent_connected = snapshot
            .cluster
            .as_ref()
            .and_then(|c| c.connection.as_ref())
            .is_some_and(|c| {
                c.agent_connected || c.state == cat::ClusterConnectionState::Connected as i32
            });
        let current: HashMap<String, (cat::ServiceSnapshot, String)> = snapshot
            .services
            .into_iter()
            .filter_map(|s| {
                let id = s.service.as_ref()?.id.clone();
                let revision = crate::engine::plan::catalog_revision(&s);
                Some((id, (s, revision)))
            })
            .collect();
        let by_id: HashMap<_, _> = states.iter().map(|s| (s.service_id.clone(), s)).collect();
        let mut services = Vec::new();
        let mut ids: Vec<&String> = current.keys().collect();
        ids.sort_by_key(|id| {
            current
                .get(*id)
                .and_then(|(s, _)| s.service.as_ref().map(|v| v.name.clone()))
        });
        for id in ids {
            let Some((snapshot, revision)) = current.get(id) else {
                continue;
            };
            let service = snapshot.service.clone().unwrap_or_default();
            let state = by_id.get(id);
            let deployed = state.is_some_and(|s| !s.catalog_revision.is_empty() && !s.deleted);
            let deployment_state = if !deployed {
                pb::ServiceDeploymentState::NeverDeployed
            } else if state.is_some_and(|s| &s.catalog_revision == revision) {
                pb::ServiceDeploymentState::UpToDate
            } else {
                pb::ServiceDeploymentState::OutOfDate
            };
            services.push(pb::ServiceStatus {
                service_id: id.clone(),
                service_name: service.name.clone(),
                service_kind: service.kind,
                deployment_state: deployment_state as i32,
                runtime_state: if deployed {
                    state.map_or(0, |s| s.runtime_state)
                } else {
                    0
                },
                desired_instances: state.map_or(0, |s| s.desired_instances),
                ready_instances: state.map_or(0, |s| s.ready_instances),
                last_deployment_id: state
                    .map(|s| s.last_deployment_id.clone())
                    .unwrap_or_default(),
                last_deployment_status: state.map_or(0, |s| s.last_deployment_status),
                git_commit_sha: state.map(|s| s.git_commit_sha.clone()).unwrap_or_default(),
                image: state.map(|s| s.image.clone()).unwrap_or_default(),
                message: state.map(|s| s.message.clone()).unwrap_or_default(),
                observe_time: state.and_then(|s| s.observe_time).map(timestamp),
            });
        }
        // Services deleted from the catalog whose resources still exist.
        for state in &states {
            if !current.contains_key(&state.service_id)
                && !state.deleted
                && !state.catalog_revision.is_empty()
            {
                services.push(pb::ServiceStatus {
                    service_id: state.service_id.clone(),
                    service_name: state.service_name.clone(),
                    service_kind: state.service_kind,
                    deployment_state: pb::ServiceDeploymentState::OutOfDate as i32,
                    runtime_state: state.runtime_state,
                    last_deployment_id: state.last_deployment_id.clone(),
                    last_deployment_status: state.last_deployment_status,
                    message: state.message.clone(),
                    observe_time: state.observe_time.map(timestamp),
                    ..Default::default()
                });
            }
        }
        let summary = summarize(services.iter().map(|s| s.runtime_state));
        Ok(pb::EnvironmentStatus {
            environment_id: scope.environment_id.clone(),
            organization_id: scope.organization_id.clone(),
            project_id: scope.project_id.clone(),
            cluster_id: scope.cluster_id.clone(),
            agent_connected,
            runtime_state: summary,
            running_deployment_id: running.first().map(|r| r.id.clone()).unwrap_or_default(),
            queued_deployment_count: i32::try_from(queued.len()).unwrap_or(i32::MAX),
            last_deployment_id: last.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
            last_deployment_status: last.as_ref().map_or(0, |r| r.status),
            services,
            update_time: Some(timestamp(crate::store::now())),
        })
    }
}

/// The environment's summary of its services' runtime states, as the proto orders them.
fn summarize(states: impl Iterator<Item = i32>) -> i32 {
    use pb::RuntimeState as R;
    let states: Vec<i32> = states.filter(|s| *s != 0).collect();
    for wanted in [
        R::Error,
        R::Stopping,
        R::Starting,
        R::Running,
        R::Stopped,
        R::Completed,
    ] {
        if states.contains(&(wanted as i32)) {
            return wanted as i32;
        }
    }
    0
}

fn merge(a: i32, b: i32) -> i32 {
    use pb::StageStatus as St;
    let rank = |s: i32| match St::try_from(s) {
        Ok(St::Error) => 6,
        Ok(St::Canceled) => 5,
        Ok(St::Ongoing) => 4,
        Ok(St::Queued) => 3,
        Ok(St::Done) => 2,
        _ => 1,
    };
    let (lo, hi) = if rank(a) >= rank(b) { (b, a) } else { (a, b) };
    // Done with skipped is done; queued after done is ongoing.
    if St::try_from(hi) == Ok(St::Queued) && St::try_from(lo) == Ok(St::Done) {
        return St::Ongoing as i32;
    }
    hi
}

fn require(field: &str, value: &str) -> Result<(), ApiError> {
    let mut v = Violations::new();
    v.required(field, value);
    v.finish()
}

fn row_resource(row: &DeploymentRow) -> Resource<'_> {
    let resource = Resource::in_organization(&row.organization_id).in_project(&row.project_id);
    match rbac_mode(row.environment_mode) {
        Some(mode) => resource.in_environment(&row.environment_id, mode),
        None => resource,
    }
}

/// The authenticated caller `AuthenticateLayer` put on the request.
pub(crate) fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    slipway_auth::principal(request)
        .cloned()
        .map_err(Status::from)
}

type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How often a watch looks for changes made by other replicas.
const WATCH_POLL: Duration = Duration::from_millis(250);

#[tonic::async_trait]
impl DeploymentService for Deployments {
    async fn deploy_environment(
        &self,
        request: Request<pb::DeployEnvironmentRequest>,
    ) -> Result<Response<pb::DeployEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let deployment = self
            .queue(
                &principal,
                "DeployEnvironment",
                Target::Environment(r.environment_id),
                Action::Deploy,
                &r.request_id,
                Default::default(),
            )
            .await?;
        Ok(Response::new(pb::DeployEnvironmentResponse {
            deployment: Some(deployment),
        }))
    }

    async fn stop_environment(
        &self,
        request: Request<pb::StopEnvironmentRequest>,
    ) -> Result<Response<pb::StopEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let deployment = self
            .queue(
                &principal,
                "StopEnvironment",
                Target::Environment(r.environment_id),
                Action::Stop,
                &r.request_id,
                Default::default(),
            )
            .await?;
        Ok(Response::new(pb::StopEnvironmentResponse {
            deployment: Some(deployment),
        }))
    }

    async fn restart_environment(
        &self,
        request: Request<pb::RestartEnvironmentRequest>,
    ) -> Result<Response<pb::RestartEnvironmentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let deployment = self
            .queue(
                &principal,
                "RestartEnvironment",
                Target::Environment(r.environment_id),
                Action::Restart,
                &r.request_id,
                Default::default(),
            )
            .await?;
        Ok(Response::new(pb::RestartEnvironmentResponse {
            deployment: Some(deployment),
        }))
    }

    async fn delete_environment_resources(
        &self,
        request: Request<pb::DeleteEnvironmentResourcesRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentResourcesResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let deployment = self
            .queue(
                &principal,
                "DeleteEnvironmentResources",
                Target::Environment(r.environment_id),
                Action::Delete,
                &r.request_id,
                Default::default(),
            )
            .await?;
        Ok(Response::new(pb::DeleteEnvironmentResourcesResponse {
            deployment: Some(deployment),
        }))
    }

    async fn deploy_service(
        &self,
        request: Request<pb::DeployServiceRequest>,
    ) -> Result<Response<pb::DeployServiceResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let pins = match r.version {
            Some(pb::deploy_service_request::Version::GitCommitSha(sha)) => (sha, String::new()),
            Some(pb::deploy_service_request::Version::ImageTag(tag)) => (String::new(), tag),
            None => (String::new(), String::new()),
        };
        let deployment = self
            .queue(
                &principal,
                "DeployService",
                Target::Service(r.service_id),
                Action::Deploy,
                &r.request_id,
                pins,
            )
            .await?;
        Ok(Response::new(pb::DeployServiceResponse {
            deployment: Some(deployment),
        }))
    }

    async fn stop_service(
        &self,
        request: Request<pb::StopServiceRequest>,
    ) -> Result<Response<pb::StopServiceResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let deployment = self
            .queue(
                &principal,
                "StopService",
                Target::Service(r.service_id),
                Action::Stop,
                &r.request_id,
                Default::default(),
            )
            .await?;
        Ok(Response::new(pb::StopServiceResponse {
            deployment: Some(deployment),
        }))
    }

    async fn restart_service(
        &self,
        request: Request<pb::RestartServiceRequest>,
    ) -> Result<Response<pb::RestartServiceResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let deployment = self
            .queue(
                &principal,
                "RestartService",
                Target::Service(r.service_id),
                Action::Restart,
                &r.request_id,
                Default::default(),
            )
            .await?;
        Ok(Response::new(pb::RestartServiceResponse {
            deployment: Some(deployment),
        }))
    }

    async fn delete_service_resources(
        &self,
        request: Request<pb::DeleteServiceResourcesRequest>,
    ) -> Result<Response<pb::DeleteServiceResourcesResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let deployment = self
            .queue(
                &principal,
                "DeleteServiceResources",
                Target::Service(r.service_id),
                Action::Delete,
                &r.request_id,
                Default::default(),
            )
            .await?;
        Ok(Response::new(pb::DeleteServiceResourcesResponse {
            deployment: Some(deployment),
        }))
    }

    async fn cancel_deployment(
        &self,
        request: Request<pb::CancelDeploymentRequest>,
    ) -> Result<Response<pb::CancelDeploymentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.required("id", &r.id);
        v.request_id(&r.request_id);
        v.finish()?;
        let row = self
            .readable(&principal, &r.id, RbacAction::DeployEnvironmentsDeploy)
            .await?;
        if row.phase == Phase::Done {
            // A repeat of a cancel that already ended it answers the same.
            if row.status == pb::DeploymentStatus::Canceled as i32 && row.cancel_requested {
                return Ok(Response::new(pb::CancelDeploymentResponse {
                    deployment: Some(self.to_proto(&row).await?),
                }));
            }
            return Err(precondition(
                "ALREADY_FINAL",
                "deployment",
                "the deployment already reached a final status",
            )
            .into());
        }
        let (after, changed) = self
            .store()
            .cancel(
                &r.id,
                pb::DeploymentStatus::Canceled as i32,
                pb::DeploymentStatus::Canceling as i32,
            )
            .await
            .map_err(ApiError::from)?;
        if changed {
            status::changed(
                self.engine.bus(),
                event_actor(&principal),
                &after,
                row.status,
                after.status,
                "",
            )
            .await;
            self.engine.wake();
        }
        Ok(Response::new(pb::CancelDeploymentResponse {
            deployment: Some(self.to_proto(&after).await?),
        }))
    }

    async fn rollback_deployment(
        &self,
        request: Request<pb::RollbackDeploymentRequest>,
    ) -> Result<Response<pb::RollbackDeploymentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.required("id", &r.id);
        v.request_id(&r.request_id);
        v.finish()?;
        let target = self
            .readable(&principal, &r.id, RbacAction::DeployEnvironmentsDeploy)
            .await?;
        if target.action != pb::DeploymentAction::Deploy as i32
            || target.status != pb::DeploymentStatus::Deployed as i32
        {
            return Err(precondition(
                "NOT_DEPLOYED",
                "deployment",
                "only a deploy that ended deployed can be rolled back to",
            )
            .into());
        }
        let Some(plan) = target.plan.clone() else {
            return Err(precondition(
                "PLAN_GONE",
                "deployment",
                "the deployment's plan is no longer retained",
            )
            .into());
        };
        // The environment (or service) must still exist in the catalog.
        let scope = self
            .environment_scope(
                &target.environment_id,
                (!target.service_id.is_empty()).then_some(target.service_id.as_str()),
            )
            .await
            .map_err(|error| match error {
                ApiError::NotFound { .. } => precondition(
                    "TARGET_DELETED",
                    "deployment",
                    "its environment or service was deleted from the catalog",
                ),
                other => other,
            })?;
        let decoded =
            cat::EnvironmentSnapshot::decode(plan.as_slice()).map_err(ApiError::internal)?;
        let new = NewDeployment {
            id: new_id(),
            organization_id: target.organization_id.clone(),
            project_id: target.project_id.clone(),
            environment_id: target.environment_id.clone(),
            environment_mode: scope.mode,
            service_id: target.service_id.clone(),
            action: pb::DeploymentAction::Deploy as i32,
            status: pb::DeploymentStatus::Queued as i32,
            trigger: pb::DeploymentTrigger::Rollback as i32,
            triggered_by: principal.id().to_owned(),
            rolled_back_from: target.id.clone(),
            git_commit_sha: target.git_commit_sha.clone(),
            image_tag: String::new(),
            cluster_id: decoded
                .environment
                .map(|e| e.cluster_id)
                .unwrap_or_default(),
            plan: Some(plan),
        };
        let deployment = self
            .insert(&principal, "RollbackDeployment", &r.request_id, new)
            .await?;
        Ok(Response::new(pb::RollbackDeploymentResponse {
            deployment: Some(deployment),
        }))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::GetDeploymentResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let row = self
            .readable(&principal, &r.id, RbacAction::DeployDeploymentsRead)
            .await?;
        Ok(Response::new(pb::GetDeploymentResponse {
            deployment: Some(self.to_proto(&row).await?),
        }))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.required("organization_id", &r.organization_id);
        let size = v.page_size(r.page_size);
        let query = format!(
            "deployments/{}/{}/{}/{}/{:?}",
            r.organization_id, r.project_id, r.environment_id, r.service_id, r.statuses
        );
        let after = match page::decode::<IdCursor>(&r.page_token, &query) {
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
        if principal.membership(&r.organization_id).is_none()
            && principal.kind() != PrincipalKind::Service
        {
            return Err(ApiError::not_found("organization", &r.organization_id).into());
        }
        let filter = DeploymentFilter {
            organization_id: r.organization_id.clone(),
            project_id: (!r.project_id.is_empty()).then_some(r.project_id),
            environment_id: (!r.environment_id.is_empty()).then_some(r.environment_id),
            service_id: (!r.service_id.is_empty()).then_some(r.service_id),
            statuses: r.statuses,
        };
        let (rows, next) = self
            .store()
            .list_deployments(&filter, size, after.as_ref().map(|c| c.id.as_str()))
            .await
            .map_err(ApiError::from)?;
        let mut deployments = Vec::with_capacity(rows.len());
        for row in &rows {
            if slipway_auth::authorize(
                &principal,
                RbacAction::DeployDeploymentsRead,
                &row_resource(row),
            )
            .is_allowed()
            {
                deployments.push(self.to_proto(row).await?);
            }
        }
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments,
            next_page_token: page::encode(next.map(|id| IdCursor { id }), &query),
        }))
    }

    async fn list_queued_deployments(
        &self,
        request: Request<pb::ListQueuedDeploymentsRequest>,
    ) -> Result<Response<pb::ListQueuedDeploymentsResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.required("environment_id", &r.environment_id);
        let size = v.page_size(r.page_size);
        let query = format!("queue/{}", r.environment_id);
        let after = page::decode::<IdCursor>(&r.page_token, &query).unwrap_or_else(|_| {
            v.add("page_token", "is not a page token of this listing");
            None
        });
        v.finish()?;
        let scope = self.environment_scope(&r.environment_id, None).await?;
        authorize(
            &principal,
            RbacAction::DeployDeploymentsRead,
            &scope.resource(),
            "environment",
            &r.environment_id,
        )?;
        let queued = self
            .store()
            .in_environment(&r.environment_id, Phase::Queued)
            .await
            .map_err(ApiError::from)?;
        let running = self
            .store()
            .in_environment(&r.environment_id, Phase::Running)
            .await
            .map_err(ApiError::from)?;
        let mut rows: Vec<_> = queued
            .into_iter()
            .filter(|row| after.as_ref().is_none_or(|c| row.id > c.id))
            .collect();
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|row| IdCursor { id: row.id.clone() })
        } else {
            None
        };
        let mut deployments = Vec::new();
        for row in &rows {
            deployments.push(self.to_proto(row).await?);
        }
        let running_deployment = match running.first() {
            Some(row) => Some(self.to_proto(row).await?),
            None => None,
        };
        Ok(Response::new(pb::ListQueuedDeploymentsResponse {
            deployments,
            next_page_token: page::encode(next, &query),
            running_deployment,
        }))
    }

    async fn get_environment_status(
        &self,
        request: Request<pb::GetEnvironmentStatusRequest>,
    ) -> Result<Response<pb::GetEnvironmentStatusResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        require("environment_id", &r.environment_id)?;
        let scope = self.environment_scope(&r.environment_id, None).await?;
        authorize(
            &principal,
            RbacAction::DeployDeploymentsRead,
            &scope.resource(),
            "environment",
            &r.environment_id,
        )?;
        Ok(Response::new(pb::GetEnvironmentStatusResponse {
            environment_status: Some(self.environment_status(&scope).await?),
        }))
    }

    type WatchDeploymentStream = WatchStream<pb::WatchDeploymentResponse>;

    async fn watch_deployment(
        &self,
        request: Request<pb::WatchDeploymentRequest>,
    ) -> Result<Response<Self::WatchDeploymentStream>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let row = self
            .readable(&principal, &r.id, RbacAction::DeployDeploymentsRead)
            .await?;
        let first = self.to_proto(&row).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let mut last = first.clone();
            if tx
                .send(Ok(pb::WatchDeploymentResponse {
                    deployment: Some(first),
                }))
                .await
                .is_err()
            {
                return;
            }
            while !status::is_final(last.status) {
                tokio::time::sleep(WATCH_POLL).await;
                let Ok(row) = api.store().deployment(&r.id).await else {
                    continue;
                };
                let Ok(current) = api.to_proto(&row).await else {
                    continue;
                };
                let mut a = current.clone();
                let mut b = last.clone();
                a.queue_position = 0;
                b.queue_position = 0;
                if current.etag != last.etag || a != b {
                    last = current.clone();
                    if tx
                        .send(Ok(pb::WatchDeploymentResponse {
                            deployment: Some(current),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type WatchEnvironmentStatusStream = WatchStream<pb::WatchEnvironmentStatusResponse>;

    async fn watch_environment_status(
        &self,
        request: Request<pb::WatchEnvironmentStatusRequest>,
    ) -> Result<Response<Self::WatchEnvironmentStatusStream>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        require("environment_id", &r.environment_id)?;
        let scope = self.environment_scope(&r.environment_id, None).await?;
        authorize(
            &principal,
            RbacAction::DeployDeploymentsRead,
            &scope.resource(),
            "environment",
            &r.environment_id,
        )?;
        let first = self.environment_status(&scope).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let strip = |mut s: pb::EnvironmentStatus| {
                s.update_time = None;
                s
            };
            let mut last = strip(first.clone());
            if tx
                .send(Ok(pb::WatchEnvironmentStatusResponse {
                    environment_status: Some(first),
                }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::time::sleep(WATCH_POLL * 2).await;
                if tx.is_closed() {
                    return;
                }
                match api.environment_scope(&scope.environment_id, None).await {
                    Err(ApiError::NotFound { .. }) => return,
                    Err(_) => continue,
                    Ok(_) => {}
                }
                let Ok(current) = api.environment_status(&scope).await else {
                    continue;
                };
                if strip(current.clone()) != last {
                    last = strip(current.clone());
                    if tx
                        .send(Ok(pb::WatchEnvironmentStatusResponse {
                            environment_status: Some(current),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The service lookup of a standalone orchestrator: `[catalog].url` with
/// `[auth].service_credential`; `None` when either is missing (service actions then answer
/// `UNAVAILABLE`).
pub fn service_lookup(settings: &crate::Settings) -> Option<ServiceLookup> {
    let url = settings.catalog.url.clone()?;
    let credential = settings.auth.service_credential.clone()?;
    let channel = match slipway_service::lazy_channel(url, "catalog.url") {
        Ok(channel) => channel,
        Err(error) => {
            tracing::warn!(%error, "service actions are unavailable");
            return None;
        }
    };
    ServiceLookup::new(channel, &credential)
}
