//! Projects, environments and clusters.

use prost_types::FieldMask;
use slipway_proto::{catalog::v1 as cpb, common::v1::EnvironmentMode};
use tonic::Request;

use crate::app::{App, list_clusters, list_environments, resolve_environment, resolve_project};
use crate::client::{Client, all_pages};
use crate::commands::identity::{deleted, nothing_to_update};
use crate::errors::UserError;
use crate::output::{self, Format, age, label, or_dash, time};

pub const PROJECT_EXAMPLES: &str = "Examples:
  slipway project create shop --description \"the web shop\"
  slipway project list
  slipway -o json project get shop
  slipway project update shop --name store
  slipway project delete shop --force      # with its environments";

#[derive(Debug, clap::Subcommand)]
pub enum ProjectCommand {
    /// Creates a project in the organization.
    #[command(after_help = PROJECT_EXAMPLES)]
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Lists the organization's projects.
    #[command(after_help = PROJECT_EXAMPLES)]
    List,
    /// Shows one project (name or id).
    #[command(after_help = PROJECT_EXAMPLES)]
    Get {
        #[arg(value_name = "PROJECT")]
        target: String,
    },
    /// Renames a project or changes its description.
    #[command(after_help = PROJECT_EXAMPLES)]
    Update {
        #[arg(value_name = "PROJECT")]
        target: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Deletes a project (with --force, its environments too).
    #[command(after_help = PROJECT_EXAMPLES)]
    Delete {
        #[arg(value_name = "PROJECT")]
        target: String,
        #[arg(long)]
        force: bool,
    },
}

fn project_fields(p: &cpb::Project) -> Vec<(&'static str, String)> {
    vec![
        ("id", p.id.clone()),
        ("name", p.name.clone()),
        ("description", or_dash(&p.description)),
        ("created", time(p.create_time.as_ref())),
        ("updated", time(p.update_time.as_ref())),
    ]
}

async fn find_project(app: &App, client: &Client, value: &str) -> anyhow::Result<cpb::Project> {
    let organization = if crate::app::is_id(value) {
        String::new()
    } else {
        app.organization_id(client).await?
    };
    resolve_project(client, &organization, value).await
}

pub async fn project(app: &App, command: ProjectCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        ProjectCommand::Create { name, description } => {
            let organization_id = app.organization_id(&client).await?;
            let created = client
                .projects()
                .create_project(Request::new(cpb::CreateProjectRequest {
                    organization_id,
                    project: Some(cpb::Project {
                        name,
                        description: description.unwrap_or_default(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await?
                .into_inner()
                .project
                .unwrap_or_default();
            output::one(format, &created, &project_fields(&created))
        }
        ProjectCommand::List => {
            let organization_id = app.organization_id(&client).await?;
            let projects = all_pages(|page_token| {
                let mut projects = client.projects();
                let request = cpb::ListProjectsRequest {
                    organization_id: organization_id.clone(),
                    page_size: 500,
                    page_token,
                    name_contains: String::new(),
                };
                async move {
                    let response = projects.list_projects(request).await?.into_inner();
                    Ok((response.projects, response.next_page_token))
                }
            })
            .await?;
            output::list(
                format,
                &projects,
                "projects",
                &["NAME", "DESCRIPTION", "ID", "AGE"],
                |p| {
                    vec![
                        p.name.clone(),
                        or_dash(&p.description),
                        p.id.clone(),
                        age(p.create_time.as_ref()),
                    ]
                },
            )
        }
        ProjectCommand::Get { target } => {
            let found = find_project(app, &client, &target).await?;
            output::one(format, &found, &project_fields(&found))
        }
        ProjectCommand::Update {
            target,
            name,
            description,
        } => {
            let mut found = find_project(app, &client, &target).await?;
            let mut paths = Vec::new();
            if let Some(name) = name {
                found.name = name;
                paths.push("name".to_owned());
            }
            if let Some(description) = description {
                found.description = description;
                paths.push("description".to_owned());
            }
            nothing_to_update(&paths, "--name or --description")?;
            let updated = client
                .projects()
                .update_project(Request::new(cpb::UpdateProjectRequest {
                    project: Some(found),
                    update_mask: Some(FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .project
                .unwrap_or_default();
            output::one(format, &updated, &project_fields(&updated))
        }
        ProjectCommand::Delete { target, force } => {
            let found = find_project(app, &client, &target).await?;
            client
                .projects()
                .delete_project(Request::new(cpb::DeleteProjectRequest {
                    id: found.id,
                    etag: String::new(),
                    force,
                }))
                .await?;
            deleted(format, "project", &found.name);
            Ok(())
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Production,
    Staging,
    Development,
    Preview,
}

impl ModeArg {
    pub fn proto(self) -> EnvironmentMode {
        match self {
            Self::Production => EnvironmentMode::Production,
            Self::Staging => EnvironmentMode::Staging,
            Self::Development => EnvironmentMode::Development,
            Self::Preview => EnvironmentMode::Preview,
        }
    }
}

pub const ENVIRONMENT_EXAMPLES: &str = "Examples:
  slipway environment create staging --mode staging                # on the only cluster
  slipway environment create prod --mode production --cluster eu-1
  slipway environment list -p shop
  slipway environment get staging
  slipway environment update staging --name qa
  slipway environment clone staging pr-42 --mode preview
  slipway environment delete qa --force";

#[derive(Debug, clap::Subcommand)]
pub enum EnvironmentCommand {
    /// Creates an environment in the project.
    #[command(after_help = ENVIRONMENT_EXAMPLES)]
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "development")]
        mode: ModeArg,
        /// Cluster to run on (name or id); default: the organization's only cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// A blueprint: a template for clones, never deployed itself.
        #[arg(long)]
        blueprint: bool,
    },
    /// Lists the project's environments.
    #[command(after_help = ENVIRONMENT_EXAMPLES)]
    List,
    /// Shows one environment (name or id).
    #[command(after_help = ENVIRONMENT_EXAMPLES)]
    Get {
        #[arg(value_name = "ENVIRONMENT")]
        target: String,
    },
    /// Renames an environment or changes its mode.
    #[command(after_help = ENVIRONMENT_EXAMPLES)]
    Update {
        #[arg(value_name = "ENVIRONMENT")]
        target: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
    },
    /// Deletes an environment (with --force, also while it has resources running).
    #[command(after_help = ENVIRONMENT_EXAMPLES)]
    Delete {
        #[arg(value_name = "ENVIRONMENT")]
        target: String,
        #[arg(long)]
        force: bool,
    },
    /// Copies an environment with its services and variables under a new name.
    #[command(after_help = ENVIRONMENT_EXAMPLES)]
    Clone {
        /// The environment to copy (name or id).
        source: String,
        /// The new environment's name.
        name: String,
        /// Mode of the copy; default: the source's.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Cluster of the copy (name or id); default: the source's.
        #[arg(long)]
        cluster: Option<String>,
    },
}

fn environment_fields(e: &cpb::Environment) -> Vec<(&'static str, String)> {
    vec![
        ("id", e.id.clone()),
        ("name", e.name.clone()),
        ("mode", label!(EnvironmentMode, e.mode)),
        ("project", e.project_id.clone()),
        ("cluster", e.cluster_id.clone()),
        ("blueprint", e.blueprint.to_string()),
        ("cloned from", or_dash(&e.source_environment_id)),
        ("created", time(e.create_time.as_ref())),
        ("updated", time(e.update_time.as_ref())),
    ]
}

async fn find_environment(
    app: &App,
    client: &Client,
    value: &str,
) -> anyhow::Result<cpb::Environment> {
    let project = if crate::app::is_id(value) {
        String::new()
    } else {
        app.project_id(client).await?
    };
    resolve_environment(client, &project, value).await
}

/// The cluster an environment goes on: the one named, else the organization's only one.
async fn choose_cluster(app: &App, client: &Client, value: Option<&str>) -> anyhow::Result<String> {
    if let Some(value) = value {
        return app.cluster_id(client, value).await;
    }
    let organization = app.organization_id(client).await?;
    let clusters = list_clusters(client, &organization).await?;
    match clusters.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => Err(UserError::hinted(
            "the organization has no cluster",
            "register one with `slipway cluster register NAME`",
        )
        .into()),
        _ => Err(UserError::hinted(
            "the organization has several clusters",
            "pass --cluster NAME (`slipway cluster list` shows them)",
        )
        .into()),
    }
}

pub async fn environment(app: &App, command: EnvironmentCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        EnvironmentCommand::Create {
            name,
            mode,
            cluster,
            blueprint,
        } => {
            let project_id = app.project_id(&client).await?;
            let cluster_id = choose_cluster(app, &client, cluster.as_deref()).await?;
            let created = client
                .environments()
                .create_environment(Request::new(cpb::CreateEnvironmentRequest {
                    project_id,
                    environment: Some(cpb::Environment {
                        name,
                        mode: mode.proto().into(),
                        cluster_id,
                        blueprint,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await?
                .into_inner()
                .environment
                .unwrap_or_default();
            output::one(format, &created, &environment_fields(&created))
        }
        EnvironmentCommand::List => {
            let project_id = app.project_id(&client).await?;
            let environments = list_environments(&client, &project_id).await?;
            // People read cluster names; a failed lookup only leaves the ids.
            let clusters: std::collections::HashMap<String, String> = match environments.first() {
                Some(first) => list_clusters(&client, &first.organization_id)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| (c.id, c.name))
                    .collect(),
                None => Default::default(),
            };
            output::list(
                format,
                &environments,
                "environments",
                &["NAME", "MODE", "CLUSTER", "ID", "AGE"],
                |e| {
                    vec![
                        e.name.clone(),
                        label!(EnvironmentMode, e.mode),
                        clusters
                            .get(&e.cluster_id)
                            .cloned()
                            .unwrap_or_else(|| e.cluster_id.clone()),
                        e.id.clone(),
                        age(e.create_time.as_ref()),
                    ]
                },
            )
        }
        EnvironmentCommand::Get { target } => {
            let found = find_environment(app, &client, &target).await?;
            output::one(format, &found, &environment_fields(&found))
        }
        EnvironmentCommand::Update { target, name, mode } => {
            let mut found = find_environment(app, &client, &target).await?;
            let mut paths = Vec::new();
            if let Some(name) = name {
                found.name = name;
                paths.push("name".to_owned());
            }
            if let Some(mode) = mode {
                found.mode = mode.proto().into();
                paths.push("mode".to_owned());
            }
            nothing_to_update(&paths, "--name or --mode")?;
            let updated = client
                .environments()
                .update_environment(Request::new(cpb::UpdateEnvironmentRequest {
                    environment: Some(found),
                    update_mask: Some(FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .environment
                .unwrap_or_default();
            output::one(format, &updated, &environment_fields(&updated))
        }
        EnvironmentCommand::Delete { target, force } => {
            let found = find_environment(app, &client, &target).await?;
            client
                .environments()
                .delete_environment(Request::new(cpb::DeleteEnvironmentRequest {
                    id: found.id,
                    etag: String::new(),
                    force,
                }))
                .await?;
            deleted(format, "environment", &found.name);
            Ok(())
        }
        EnvironmentCommand::Clone {
            source,
            name,
            mode,
            cluster,
        } => {
            let found = find_environment(app, &client, &source).await?;
            let cluster_id = match cluster {
                Some(cluster) => app.cluster_id(&client, &cluster).await?,
                None => String::new(),
            };
            let cloned = client
                .environments()
                .clone_environment(Request::new(cpb::CloneEnvironmentRequest {
                    id: found.id,
                    name,
                    mode: mode.map_or(0, |m| m.proto().into()),
                    cluster_id,
                    pull_request: None,
                    request_id: String::new(),
                }))
                .await?
                .into_inner()
                .environment
                .unwrap_or_default();
            output::one(format, &cloned, &environment_fields(&cloned))
        }
    }
}

pub const CLUSTER_EXAMPLES: &str = "Examples:
  slipway cluster register eu-1 > agent.yaml     # then: kubectl apply -f agent.yaml
  slipway cluster list
  slipway cluster get eu-1
  slipway cluster manifest eu-1 --rotate-token   # a new manifest, the old token stops
  slipway cluster update eu-1 --description \"Frankfurt\"
  slipway cluster delete eu-1";

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Registers a self-managed cluster and prints the agent's install manifest (it holds
    /// the agent token, shown once).
    #[command(after_help = CLUSTER_EXAMPLES, visible_alias = "create")]
    Register {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Lists the organization's clusters and whether their agent is connected.
    #[command(after_help = CLUSTER_EXAMPLES)]
    List,
    /// Shows one cluster (name or id).
    #[command(after_help = CLUSTER_EXAMPLES)]
    Get { cluster: String },
    /// Prints a cluster's agent install manifest again.
    #[command(after_help = CLUSTER_EXAMPLES)]
    Manifest {
        cluster: String,
        /// Issue a new agent token (the old one stops working) and put it in the manifest.
        #[arg(long)]
        rotate_token: bool,
    },
    /// Renames a cluster or changes its description.
    #[command(after_help = CLUSTER_EXAMPLES)]
    Update {
        cluster: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Deletes a cluster (refused while environments run on it).
    #[command(after_help = CLUSTER_EXAMPLES)]
    Delete { cluster: String },
}

fn cluster_connection(c: &cpb::Cluster) -> String {
    c.connection
        .as_ref()
        .map(|conn| label!(cpb::ClusterConnectionState, conn.state))
        .unwrap_or_else(|| "-".to_owned())
}

fn cluster_fields(c: &cpb::Cluster) -> Vec<(&'static str, String)> {
    vec![
        ("id", c.id.clone()),
        ("name", c.name.clone()),
        ("description", or_dash(&c.description)),
        ("kind", label!(cpb::ClusterKind, c.kind)),
        ("agent", cluster_connection(c)),
        (
            "agent version",
            or_dash(
                &c.connection
                    .as_ref()
                    .map(|conn| conn.agent_version.clone())
                    .unwrap_or_default(),
            ),
        ),
        ("created", time(c.create_time.as_ref())),
    ]
}

async fn get_cluster(app: &App, client: &Client, value: &str) -> anyhow::Result<cpb::Cluster> {
    let id = app.cluster_id(client, value).await?;
    Ok(client
        .clusters()
        .get_cluster(Request::new(cpb::GetClusterRequest { id }))
        .await?
        .into_inner()
        .cluster
        .unwrap_or_default())
}

pub async fn cluster(app: &App, command: ClusterCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        ClusterCommand::Register { name, description } => {
            let organization_id = app.organization_id(&client).await?;
            let registered = client
                .clusters()
                .register_cluster(Request::new(cpb::RegisterClusterRequest {
                    organization_id,
                    cluster: Some(cpb::Cluster {
                        name,
                        description: description.unwrap_or_default(),
                        kind: cpb::ClusterKind::SelfManaged.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await?
                .into_inner();
            match format {
                Format::Json => output::one(format, &registered, &[]),
                Format::Table => {
                    let cluster = registered.cluster.unwrap_or_default();
                    eprintln!(
                        "cluster {} registered ({}); its install manifest follows and holds the \
                         agent token, shown once",
                        cluster.name, cluster.id
                    );
                    print!("{}", registered.install_manifest_yaml);
                    Ok(())
                }
            }
        }
        ClusterCommand::List => {
            let organization_id = app.organization_id(&client).await?;
            let clusters = list_clusters(&client, &organization_id).await?;
            output::list(
                format,
                &clusters,
                "clusters",
                &["NAME", "KIND", "AGENT", "ID", "AGE"],
                |c| {
                    vec![
                        c.name.clone(),
                        label!(cpb::ClusterKind, c.kind),
                        cluster_connection(c),
                        c.id.clone(),
                        age(c.create_time.as_ref()),
                    ]
                },
            )
        }
        ClusterCommand::Get { cluster } => {
            let found = get_cluster(app, &client, &cluster).await?;
            output::one(format, &found, &cluster_fields(&found))
        }
        ClusterCommand::Manifest {
            cluster,
            rotate_token,
        } => {
            let id = app.cluster_id(&client, &cluster).await?;
            let manifest = client
                .clusters()
                .get_cluster_install_manifest(Request::new(cpb::GetClusterInstallManifestRequest {
                    id,
                    rotate_agent_token: rotate_token,
                    request_id: String::new(),
                }))
                .await?
                .into_inner();
            match format {
                Format::Json => output::one(format, &manifest, &[]),
                Format::Table => {
                    print!("{}", manifest.install_manifest_yaml);
                    Ok(())
                }
            }
        }
        ClusterCommand::Update {
            cluster,
            name,
            description,
        } => {
            let mut found = get_cluster(app, &client, &cluster).await?;
            let mut paths = Vec::new();
            if let Some(name) = name {
                found.name = name;
                paths.push("name".to_owned());
            }
            if let Some(description) = description {
                found.description = description;
                paths.push("description".to_owned());
            }
            nothing_to_update(&paths, "--name or --description")?;
            let updated = client
                .clusters()
                .update_cluster(Request::new(cpb::UpdateClusterRequest {
                    cluster: Some(found),
                    update_mask: Some(FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .cluster
                .unwrap_or_default();
            output::one(format, &updated, &cluster_fields(&updated))
        }
        ClusterCommand::Delete { cluster } => {
            let found = get_cluster(app, &client, &cluster).await?;
            client
                .clusters()
                .delete_cluster(Request::new(cpb::DeleteClusterRequest {
                    id: found.id,
                    etag: String::new(),
                }))
                .await?;
            deleted(format, "cluster", &found.name);
            Ok(())
        }
    }
}
