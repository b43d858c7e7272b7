//! `slipway.catalog.v1.CatalogInternalService`: what Slipway's own services ask the
//! catalog, never users. `GetEnvironmentSnapshot` lives here; the cluster RPCs are
//! [`InternalClusters`]'.
//!
//! The snapshot is the one place secrets leave the catalog decrypted, so the caller is
//! checked twice: it must be a control-plane service principal (an `slps_` credential
//! from the installation's configuration), and RBAC must allow it
//! `catalog.environments.resolve`, which it grants to services only. A user or API token
//! is refused with PERMISSION_DENIED whatever its role, before anything is read.

use std::collections::BTreeSet;

use slipway_auth::rbac::{Action, Principal};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::catalog_internal_service_server::CatalogInternalService;
use tonic::{Request, Response, Status};

use super::clusters::connection_of;
use super::git_credentials::GitSecrets;
use super::internal_clusters::{InternalClusters, require_service};
use super::variables::EnvironmentVariables;
use super::{CatalogMessage as _, Context, authorize, caller, precondition, require, timestamp};
use crate::store::{Filter, Kind, Row, StoreError};

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Internal {
    ctx: Context,
    clusters: InternalClusters,
}

impl Internal {
    pub fn new(ctx: Context) -> Self {
        Self {
            clusters: InternalClusters::new(ctx.clone()),
            ctx,
        }
    }
}

/// A FAILED_PRECONDITION for a reference the snapshot cannot follow.
fn unresolvable(kind: Kind, id: &str, referrer: &str) -> ApiError {
    precondition(
        "REFERENCE_UNRESOLVABLE",
        kind.as_str(),
        format!("{referrer} refers to {kind} {id}, which does not exist"),
    )
}

/// For a preview, the pull request's branch in place of the blueprint's on git sources of
/// the pull request's repository: a preview builds the change it previews.
fn apply_pull_request(service: &mut pb::Service, pull_request: &pb::PullRequestRef) {
    use pb::service::Settings;
    let retarget = |source: &mut pb::GitSource| {
        if source.repository_url == pull_request.repository_url {
            source.branch = pull_request.source_branch.clone();
        }
    };
    let job = |source: Option<&mut pb::JobSource>| {
        if let Some(pb::job_source::Source::Git(git)) = source.and_then(|s| s.source.as_mut()) {
            retarget(git);
        }
    };
    match &mut service.settings {
        Some(Settings::Application(app)) => {
            if let Some(source) = app.source.as_mut() {
                retarget(source);
            }
        }
        Some(Settings::CronJob(cron)) => job(cron.source.as_mut()),
        Some(Settings::LifecycleJob(lifecycle)) => job(lifecycle.source.as_mut()),
        _ => {}
    }
}

impl Internal {
    async fn snapshot(
        &self,
        principal: &Principal,
        request: pb::GetEnvironmentSnapshotRequest,
    ) -> Result<pb::EnvironmentSnapshot, ApiError> {
        require("environment_id", &request.environment_id)?;
        require_service(principal)?;
        let environment_row = self
            .ctx
            .row(Kind::Environment, &request.environment_id)
            .await?;
        let scope = self.ctx.environment_scope(&environment_row)?;
        authorize(
            principal,
            Action::CatalogEnvironmentsResolve,
            &scope.resource(),
            Kind::Environment,
            &environment_row.id,
        )?;
        let snapshot_time = timestamp(crate::store::now());
        let org = environment_row.organization_id.clone();
        let project_row = self
            .ctx
            .row(Kind::Project, &environment_row.parent_id)
            .await?;
        let environment = pb::Environment::from_row(&environment_row)?;
        let cluster = match environment_row.cluster_id.as_deref() {
            Some(id) => match self.ctx.store.get(Kind::Cluster, id).await {
                // The connection as ClusterService shows it, so the orchestrator sees the
                // same state (and heartbeat rule) a user does.
                Ok(row) => {
                    let mut cluster = pb::Cluster::from_row(&row)?;
                    let reported = self.ctx.store.cluster_connection(&row.id).await?;
                    cluster.connection = Some(connection_of(
                        cluster.kind,
                        reported.as_ref(),
                        crate::store::now(),
                    ));
                    Some(cluster)
                }
                Err(StoreError::NotFound(_)) => None,
                Err(error) => return Err(error.into()),
            },
            None => None,
        };
        let mut service_rows = self
            .ctx
            .store
            .list_all(
                Kind::Service,
                &Filter {
                    organization_id: org.clone(),
                    parent_id: Some(environment_row.id.clone()),
                    ..Filter::default()
                },
            )
            .await?;
        service_rows.sort_by(|a, b| a.name.cmp(&b.name));
        // Every service stays in the built-ins (neighbours' host names and ports) even
        // when only some are asked for.
        let variables = EnvironmentVariables::load(
            &self.ctx,
            &project_row,
            &environment_row,
            &service_rows,
            true,
        )
        .await?;
        let wanted: BTreeSet<&str> = request.service_ids.iter().map(String::as_str).collect();
        if let Some(missing) = wanted
            .iter()
            .find(|id| !service_rows.iter().any(|row| row.id == **id))
        {
            return Err(ApiError::not_found("service", *missing));
        }
        let mut services = Vec::new();
        let mut registry_ids = Vec::new();
        let mut git_ids = Vec::new();
        for row in &service_rows {
            if !wanted.is_empty() && !wanted.contains(row.id.as_str()) {
                continue;
            }
            let mut service = pb::Service::from_row(row)?;
            if let Some(pull_request) = &environment.pull_request {
                apply_pull_request(&mut service, pull_request);
            }
            // The same references deletes are checked against, Helm sources included.
            for (kind, id) in super::services::references(&service) {
                match kind {
                    Kind::Registry => registry_ids.push((id, format!("service {}", row.name))),
                    Kind::GitCredential => git_ids.push((id, format!("service {}", row.name))),
                    _ => {}
                }
            }
            services.push(pb::ServiceSnapshot {
                variables: variables.effective(row)?,
                service: Some(service),
            });
        }
        // Where the cluster's images are built to, with its password for the push.
        if let Some(cluster) = cluster.as_ref().filter(|c| !c.build_registry_id.is_empty()) {
            registry_ids.push((
                cluster.build_registry_id.clone(),
                format!("cluster {}", cluster.name),
            ));
        }
        let registries = self.registries(&org, registry_ids).await?;
        let git_credentials = self.git_credentials(&org, git_ids).await?;
        Ok(pb::EnvironmentSnapshot {
            environment: Some(environment),
            project: Some(pb::Project::from_row(&project_row)?),
            cluster,
            services,
            registries,
            git_credentials,
            snapshot_time: Some(snapshot_time),
        })
    }

    /// A referenced row of `kind` in `org`; FAILED_PRECONDITION naming what refers to it
    /// (`service web`, `cluster eu-1`) when it is gone (or, never expected, another
    /// organization's).
    async fn referenced(
        &self,
        org: &str,
        kind: Kind,
        id: &str,
        referrer: &str,
    ) -> Result<Row, ApiError> {
        match self.ctx.store.get(kind, id).await {
            Ok(row) if row.organization_id == org => Ok(row),
            Ok(_) | Err(StoreError::NotFound(_)) => Err(unresolvable(kind, id, referrer)),
            Err(error) => Err(error.into()),
        }
    }

    /// The registries referenced, each once, with their passwords opened.
    async fn registries(
        &self,
        org: &str,
        ids: Vec<(String, String)>,
    ) -> Result<Vec<pb::RegistryWithSecret>, ApiError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (id, referrer) in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            let row = self.referenced(org, Kind::Registry, &id, &referrer).await?;
            let password = match &row.sealed {
                Some(sealed) => {
                    let plain = self.ctx.keyring.open(org, Kind::Registry, sealed).await?;
                    String::from_utf8(plain).map_err(ApiError::internal)?
                }
                None => String::new(),
            };
            out.push(pb::RegistryWithSecret {
                registry: Some(pb::Registry::from_row(&row)?),
                password,
            });
        }
        Ok(out)
    }

    /// The git credentials referenced, each once, with their secrets opened.
    async fn git_credentials(
        &self,
        org: &str,
        ids: Vec<(String, String)>,
    ) -> Result<Vec<pb::GitCredentialWithSecret>, ApiError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (id, referrer) in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            let row = self
                .referenced(org, Kind::GitCredential, &id, &referrer)
                .await?;
            let secrets = match &row.sealed {
                Some(sealed) => {
                    let plain = self
                        .ctx
                        .keyring
                        .open(org, Kind::GitCredential, sealed)
                        .await?;
                    serde_json::from_slice::<GitSecrets>(&plain).map_err(ApiError::internal)?
                }
                None => GitSecrets::default(),
            };
            out.push(pb::GitCredentialWithSecret {
                git_credential: Some(pb::GitCredential::from_row(&row)?),
                token: secrets.token,
                ssh_private_key: secrets.ssh_private_key,
            });
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl CatalogInternalService for Internal {
    async fn get_environment_snapshot(
        &self,
        request: Request<pb::GetEnvironmentSnapshotRequest>,
    ) -> Result<Response<pb::GetEnvironmentSnapshotResponse>, Status> {
        let principal = caller(&request)?;
        let snapshot = self.snapshot(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::GetEnvironmentSnapshotResponse {
            snapshot: Some(snapshot),
        }))
    }

    async fn authenticate_cluster_agent(
        &self,
        request: Request<pb::AuthenticateClusterAgentRequest>,
    ) -> Result<Response<pb::AuthenticateClusterAgentResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.clusters
                .authenticate_cluster_agent(&principal, request.into_inner())
                .await?,
        ))
    }

    async fn report_cluster_connection(
        &self,
        request: Request<pb::ReportClusterConnectionRequest>,
    ) -> Result<Response<pb::ReportClusterConnectionResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.clusters
                .report_cluster_connection(&principal, request.into_inner())
                .await?,
        ))
    }
}
