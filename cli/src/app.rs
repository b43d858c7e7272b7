//! What every client command starts from: the config, the output format, the
//! organization/project/environment the flags or the context name, and how names become
//! ids (a flag or context value may be either).

use slipway_proto::{catalog::v1 as cpb, identity::v1 as ipb};
use tonic::Request;

use crate::client::{Client, all_pages};
use crate::config::Config;
use crate::errors::UserError;
use crate::output::Format;

/// The scope flags every command accepts (global, so `-p` works after the subcommand).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeArgs {
    /// Organization (name or id); default: the context's.
    #[arg(long = "org", global = true, value_name = "ORG")]
    pub organization: Option<String>,
    /// Project (name or id); default: the context's.
    #[arg(short = 'p', long, global = true)]
    pub project: Option<String>,
    /// Environment (name or id); default: the context's.
    #[arg(short = 'e', long, global = true)]
    pub environment: Option<String>,
}

pub struct App {
    pub config: Config,
    pub format: Format,
    pub scope: ScopeArgs,
}

/// Ids are UUIDs; names are DNS labels, so a name never looks like one.
pub fn is_id(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The address and token to use: `SLIPWAY_ADDRESS`/`SLIPWAY_TOKEN` (for CI), else the
/// config file.
impl App {
    pub fn address(&self) -> Option<String> {
        std::env::var("SLIPWAY_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
            .or_else(|| self.config.address.clone())
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        let address = self.address().ok_or_else(|| {
            UserError::hinted(
                "no Slipway address is configured",
                "run `slipway login --address 127.0.0.1:7800` (or set SLIPWAY_ADDRESS)",
            )
        })?;
        let token = std::env::var("SLIPWAY_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| self.config.token.clone());
        Client::new(&address, token.as_deref())
    }

    pub async fn organization_id(&self, client: &Client) -> anyhow::Result<String> {
        if let Some(value) = &self.scope.organization {
            return resolve_organization(client, value).await.map(|(id, _)| id);
        }
        self.config.context.organization_id.clone().ok_or_else(|| {
            UserError::hinted(
                "no organization is selected",
                "pass --org NAME, or run `slipway context set --org NAME`",
            )
            .into()
        })
    }

    pub async fn project_id(&self, client: &Client) -> anyhow::Result<String> {
        match &self.scope.project {
            Some(value) => {
                let organization = if is_id(value) {
                    String::new()
                } else {
                    self.organization_id(client).await?
                };
                resolve_project(client, &organization, value)
                    .await
                    .map(|p| p.id)
            }
            None => self.config.context.project_id.clone().ok_or_else(|| {
                UserError::hinted(
                    "no project is selected",
                    "pass -p PROJECT, or run `slipway context set --project NAME`",
                )
                .into()
            }),
        }
    }

    pub async fn environment_id(&self, client: &Client) -> anyhow::Result<String> {
        match &self.scope.environment {
            Some(value) if is_id(value) => Ok(value.clone()),
            Some(value) => {
                let project = self.project_id(client).await?;
                resolve_environment(client, &project, value)
                    .await
                    .map(|e| e.id)
            }
            None if self.scope.project.is_some() => Err(UserError::hinted(
                "no environment is selected for that project",
                "pass -e ENVIRONMENT",
            )
            .into()),
            None => self.config.context.environment_id.clone().ok_or_else(|| {
                UserError::hinted(
                    "no environment is selected",
                    "pass -e ENVIRONMENT, or run `slipway context set --environment NAME`",
                )
                .into()
            }),
        }
    }

    /// The service `value` (name or id) of the selected environment.
    pub async fn service(&self, client: &Client, value: &str) -> anyhow::Result<cpb::Service> {
        if is_id(value) {
            let response = client
                .services()
                .get_service(Request::new(cpb::GetServiceRequest {
                    id: value.to_owned(),
                }))
                .await?;
            return response
                .into_inner()
                .service
                .ok_or_else(|| UserError::plain("the server returned no service").into());
        }
        let environment = self.environment_id(client).await?;
        let services = list_services(client, &environment).await?;
        services
            .into_iter()
            .find(|s| s.name == value)
            .ok_or_else(|| not_found("service", value, "slipway service list"))
    }

    pub async fn cluster_id(&self, client: &Client, value: &str) -> anyhow::Result<String> {
        if is_id(value) {
            return Ok(value.to_owned());
        }
        let organization = self.organization_id(client).await?;
        let clusters = list_clusters(client, &organization).await?;
        clusters
            .into_iter()
            .find(|c| c.name == value)
            .map(|c| c.id)
            .ok_or_else(|| not_found("cluster", value, "slipway cluster list"))
    }
}

pub fn not_found(kind: &str, name: &str, list: &str) -> anyhow::Error {
    UserError::hinted(
        format!("{kind} {name:?} not found"),
        format!("`{list}` shows what there is; `slipway context` shows where you are"),
    )
    .into()
}

pub async fn resolve_organization(
    client: &Client,
    value: &str,
) -> anyhow::Result<(String, String)> {
    if is_id(value) {
        let organization = client
            .organizations()
            .get_organization(Request::new(ipb::GetOrganizationRequest {
                id: value.to_owned(),
            }))
            .await?
            .into_inner()
            .organization
            .unwrap_or_default();
        return Ok((organization.id, organization.name));
    }
    let organizations = list_organizations(client).await?;
    organizations
        .into_iter()
        .find(|o| o.name == value)
        .map(|o| (o.id, o.name))
        .ok_or_else(|| not_found("organization", value, "slipway organization list"))
}

pub async fn resolve_project(
    client: &Client,
    organization_id: &str,
    value: &str,
) -> anyhow::Result<cpb::Project> {
    if is_id(value) {
        return client
            .projects()
            .get_project(Request::new(cpb::GetProjectRequest {
                id: value.to_owned(),
            }))
            .await?
            .into_inner()
            .project
            .ok_or_else(|| UserError::plain("the server returned no project").into());
    }
    let projects = all_pages(|page_token| {
        let mut projects = client.projects();
        let request = cpb::ListProjectsRequest {
            organization_id: organization_id.to_owned(),
            page_size: 500,
            page_token,
            name_contains: value.to_owned(),
        };
        async move {
            let response = projects.list_projects(request).await?.into_inner();
            Ok((response.projects, response.next_page_token))
        }
    })
    .await?;
    projects
        .into_iter()
        .find(|p| p.name == value)
        .ok_or_else(|| not_found("project", value, "slipway project list"))
}

pub async fn resolve_environment(
    client: &Client,
    project_id: &str,
    value: &str,
) -> anyhow::Result<cpb::Environment> {
    if is_id(value) {
        return client
            .environments()
            .get_environment(Request::new(cpb::GetEnvironmentRequest {
                id: value.to_owned(),
            }))
            .await?
            .into_inner()
            .environment
            .ok_or_else(|| UserError::plain("the server returned no environment").into());
    }
    list_environments(client, project_id)
        .await?
        .into_iter()
        .find(|e| e.name == value)
        .ok_or_else(|| not_found("environment", value, "slipway environment list"))
}

pub async fn list_organizations(client: &Client) -> Result<Vec<ipb::Organization>, tonic::Status> {
    all_pages(|page_token| {
        let mut organizations = client.organizations();
        async move {
            let response = organizations
                .list_organizations(ipb::ListOrganizationsRequest {
                    page_size: 500,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((response.organizations, response.next_page_token))
        }
    })
    .await
}

pub async fn list_environments(
    client: &Client,
    project_id: &str,
) -> Result<Vec<cpb::Environment>, tonic::Status> {
    all_pages(|page_token| {
        let mut environments = client.environments();
        let request = cpb::ListEnvironmentsRequest {
            project_id: project_id.to_owned(),
            page_size: 500,
            page_token,
            ..Default::default()
        };
        async move {
            let response = environments.list_environments(request).await?.into_inner();
            Ok((response.environments, response.next_page_token))
        }
    })
    .await
}

pub async fn list_services(
    client: &Client,
    environment_id: &str,
) -> Result<Vec<cpb::Service>, tonic::Status> {
    all_pages(|page_token| {
        let mut services = client.services();
        let request = cpb::ListServicesRequest {
            environment_id: environment_id.to_owned(),
            page_size: 500,
            page_token,
            ..Default::default()
        };
        async move {
            let response = services.list_services(request).await?.into_inner();
            Ok((response.services, response.next_page_token))
        }
    })
    .await
}

pub async fn list_clusters(
    client: &Client,
    organization_id: &str,
) -> Result<Vec<cpb::Cluster>, tonic::Status> {
    all_pages(|page_token| {
        let mut clusters = client.clusters();
        let request = cpb::ListClustersRequest {
            organization_id: organization_id.to_owned(),
            page_size: 500,
            page_token,
            ..Default::default()
        };
        async move {
            let response = clusters.list_clusters(request).await?.into_inner();
            Ok((response.clusters, response.next_page_token))
        }
    })
    .await
}
