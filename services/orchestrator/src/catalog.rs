//! The orchestrator's client of catalog's internal API, calling as the control plane.
//!
//! Deployments freeze catalog's resolved snapshot of an environment as their plan, and
//! agents are authenticated by catalog, which holds their token hashes. Both calls are
//! internal (`CatalogInternalService`): they carry the installation's service credential,
//! never a user's token.

use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::catalog_internal_service_client::CatalogInternalServiceClient;
use slipway_proto::catalog::v1::deployment_rule_service_client::DeploymentRuleServiceClient;
use slipway_proto::catalog::v1::environment_service_client::EnvironmentServiceClient;
use slipway_proto::catalog::v1::project_service_client::ProjectServiceClient;
use slipway_proto::catalog::v1::service_service_client::ServiceServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

/// Catalog's internal API with this installation's service credential. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CatalogClient {
    client: CatalogInternalServiceClient<Channel>,
    /// Public services the control plane reads as a service principal (which every
    /// organization's reads allow): deployment rules for the scheduler, environments and
    /// projects for the scheduler and the notifications.
    rules: DeploymentRuleServiceClient<Channel>,
    environments: EnvironmentServiceClient<Channel>,
    projects: ProjectServiceClient<Channel>,
    /// Services of blueprints, which previews match pull requests against.
    services: ServiceServiceClient<Channel>,
    bearer: AsciiMetadataValue,
}

/// A failed call to catalog, with the status catalog answered.
#[derive(Debug, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(#[from] pub tonic::Status);

/// The service credential cannot be sent as a header (it is not ASCII).
#[derive(Debug, thiserror::Error)]
#[error("the service credential is not a valid header value")]
pub struct BadCredential;

impl CatalogClient {
    /// A client on `channel` (typically lazily connecting) presenting `service_credential`.
    pub fn new(channel: Channel, service_credential: &str) -> Result<Self, BadCredential> {
        let bearer = format!("Bearer {service_credential}")
            .parse()
            .map_err(|_| BadCredential)?;
        Ok(Self {
            client: CatalogInternalServiceClient::new(channel.clone()),
            rules: DeploymentRuleServiceClient::new(channel.clone()),
            environments: EnvironmentServiceClient::new(channel.clone()),
            projects: ProjectServiceClient::new(channel.clone()),
            services: ServiceServiceClient::new(channel),
            bearer,
        })
    }

    /// The service credential's bytes: key material replicas share, for keys derived
    /// from it when no dedicated one is configured.
    pub fn credential_material(&self) -> &[u8] {
        self.bearer.as_bytes()
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        request
    }

    /// The environment's complete desired state, secrets decrypted.
    pub async fn environment_snapshot(
        &self,
        request: pb::GetEnvironmentSnapshotRequest,
    ) -> Result<pb::GetEnvironmentSnapshotResponse, CatalogError> {
        let request = self.request(request);
        Ok(self
            .client
            .clone()
            .get_environment_snapshot(request)
            .await?
            .into_inner())
    }

    /// The cluster an agent token belongs to.
    pub async fn authenticate_agent(
        &self,
        request: pb::AuthenticateClusterAgentRequest,
    ) -> Result<pb::AuthenticateClusterAgentResponse, CatalogError> {
        let request = self.request(request);
        Ok(self
            .client
            .clone()
            .authenticate_cluster_agent(request)
            .await?
            .into_inner())
    }

    /// Records an agent's connection state on its cluster.
    pub async fn report_connection(
        &self,
        request: pb::ReportClusterConnectionRequest,
    ) -> Result<pb::ReportClusterConnectionResponse, CatalogError> {
        let request = self.request(request);
        Ok(self
            .client
            .clone()
            .report_cluster_connection(request)
            .await?
            .into_inner())
    }

    /// One deployment rule (NOT_FOUND once deleted).
    pub async fn deployment_rule(&self, id: &str) -> Result<pb::DeploymentRule, CatalogError> {
        let request = self.request(pb::GetDeploymentRuleRequest { id: id.to_owned() });
        self.rules
            .clone()
            .get_deployment_rule(request)
            .await?
            .into_inner()
            .deployment_rule
            .ok_or_else(|| CatalogError(tonic::Status::internal("catalog answered no rule")))
    }

    /// Every environment of a project, all pages.
    pub async fn project_environments(
        &self,
        project_id: &str,
    ) -> Result<Vec<pb::Environment>, CatalogError> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = self.request(pb::ListEnvironmentsRequest {
                project_id: project_id.to_owned(),
                page_size: 500,
                page_token,
                ..Default::default()
            });
            let page = self
                .environments
                .clone()
                .list_environments(request)
                .await?
                .into_inner();
            out.extend(page.environments);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// One project (NOT_FOUND when it does not exist).
    pub async fn project(&self, id: &str) -> Result<pb::Project, CatalogError> {
        let request = self.request(pb::GetProjectRequest { id: id.to_owned() });
        self.projects
            .clone()
            .get_project(request)
            .await?
            .into_inner()
            .project
            .ok_or_else(|| CatalogError(tonic::Status::internal("catalog answered no project")))
    }

    /// One environment (NOT_FOUND when it does not exist).
    pub async fn environment(&self, id: &str) -> Result<pb::Environment, CatalogError> {
        let request = self.request(pb::GetEnvironmentRequest { id: id.to_owned() });
        self.environments
            .clone()
            .get_environment(request)
            .await?
            .into_inner()
            .environment
            .ok_or_else(|| CatalogError(tonic::Status::internal("catalog answered no environment")))
    }
    /// Every project of an organization, all pages (previews look for blueprints in them).
    pub async fn organization_projects(
        &self,
        organization_id: &str,
    ) -> Result<Vec<pb::Project>, CatalogError> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = self.request(pb::ListProjectsRequest {
                organization_id: organization_id.to_owned(),
                page_size: 500,
                page_token,
                ..Default::default()
            });
            let page = self
                .projects
                .clone()
                .list_projects(request)
                .await?
                .into_inner();
            out.extend(page.projects);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every service of an environment of one kind, all pages.
    pub async fn environment_services(
        &self,
        environment_id: &str,
        kind: slipway_proto::common::v1::ServiceKind,
    ) -> Result<Vec<pb::Service>, CatalogError> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = self.request(pb::ListServicesRequest {
                environment_id: environment_id.to_owned(),
                page_size: 500,
                page_token,
                kind: kind as i32,
            });
            let page = self
                .services
                .clone()
                .list_services(request)
                .await?
                .into_inner();
            out.extend(page.services);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    /// Copies an environment (a preview from its blueprint); `request_id` makes a retry
    /// return the first copy.
    pub async fn clone_environment(
        &self,
        request: pb::CloneEnvironmentRequest,
    ) -> Result<pb::Environment, CatalogError> {
        let request = self.request(request);
        self.environments
            .clone()
            .clone_environment(request)
            .await?
            .into_inner()
            .environment
            .ok_or_else(|| CatalogError(tonic::Status::internal("catalog answered no environment")))
    }

    /// Deletes an environment with its services (`force`), refused on a stale `etag`.
    pub async fn delete_environment(&self, id: &str, etag: &str) -> Result<(), CatalogError> {
        let request = self.request(pb::DeleteEnvironmentRequest {
            id: id.to_owned(),
            etag: etag.to_owned(),
            force: true,
        });
        self.environments
            .clone()
            .delete_environment(request)
            .await?;
        Ok(())
    }
}
