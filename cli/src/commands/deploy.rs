//! Deployments: `deploy`, `stop`, `restart`, `delete`, `cancel`, `rollback` (waiting with
//! live progress unless `--no-wait`), `status` and `deployments`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use slipway_proto::common::v1::ServiceKind;
use slipway_proto::deploy::v1::{self as dpb, DeploymentStatus};
use tonic::{Code, Request};

use crate::app::App;
use crate::client::Client;
use crate::errors::{DeploymentFailed, UserError};
use crate::output::{self, Format, age, label, or_dash, time};

const DEPLOY_EXAMPLES: &str = "Examples:
  slipway deploy                          # the whole environment of the context, waiting
  slipway deploy -p shop -e staging --no-wait
  slipway deploy --service web --image-tag 1.28
  slipway deploy --service api --commit 4f2a9c1
  slipway stop                            # stop everything that runs (kept for a restart)
  slipway restart --service web
  slipway delete                          # remove the environment's resources from its cluster
  slipway cancel                          # the running deployment
  slipway rollback 0190f1a2-…             # deploy again what that deployment deployed
Exit codes: 0 done, 1 the request failed, 3 the deployment failed.";

/// What `deploy`, `stop`, `restart` and `delete` take.
#[derive(Debug, clap::Args)]
#[command(after_help = DEPLOY_EXAMPLES)]
pub struct ActionArgs {
    /// Act on this service only (name or id) instead of the whole environment.
    #[arg(long, short = 's')]
    service: Option<String>,
    /// Git commit to deploy (with --service; default: the branch's latest).
    #[arg(long, requires = "service", conflicts_with = "image_tag")]
    commit: Option<String>,
    /// Image tag to deploy (with --service; default: the configured one).
    #[arg(long, requires = "service")]
    image_tag: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Return as soon as the deployment is queued instead of following it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Deploy,
    Stop,
    Restart,
    Delete,
}

#[derive(Debug, clap::Args)]
#[command(after_help = DEPLOY_EXAMPLES)]
pub struct CancelArgs {
    /// The deployment to cancel; default: the environment's running one.
    deployment: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, clap::Args)]
#[command(after_help = DEPLOY_EXAMPLES)]
pub struct RollbackArgs {
    /// A DEPLOYED deployment whose versions to deploy again (`slipway deployments`).
    deployment: String,
    #[command(flatten)]
    wait: WaitArgs,
}

pub async fn action(app: &App, action: Action, args: ActionArgs) -> anyhow::Result<()> {
    let client = app.client()?;
    let mut deployments = client.deployments();
    let deployment = match &args.service {
        Some(service) => {
            let service_id = app.service(&client, service).await?.id;
            match action {
                Action::Deploy => {
                    let version = match (args.commit, args.image_tag) {
                        (Some(sha), _) => {
                            Some(dpb::deploy_service_request::Version::GitCommitSha(sha))
                        }
                        (None, Some(tag)) => {
                            Some(dpb::deploy_service_request::Version::ImageTag(tag))
                        }
                        (None, None) => None,
                    };
                    deployments
                        .deploy_service(Request::new(dpb::DeployServiceRequest {
                            service_id,
                            version,
                            request_id: String::new(),
                        }))
                        .await?
                        .into_inner()
                        .deployment
                }
                Action::Stop => {
                    deployments
                        .stop_service(Request::new(dpb::StopServiceRequest {
                            service_id,
                            request_id: String::new(),
                        }))
                        .await?
                        .into_inner()
                        .deployment
                }
                Action::Restart => {
                    deployments
                        .restart_service(Request::new(dpb::RestartServiceRequest {
                            service_id,
                            request_id: String::new(),
                        }))
                        .await?
                        .into_inner()
                        .deployment
                }
                Action::Delete => {
                    deployments
                        .delete_service_resources(Request::new(
                            dpb::DeleteServiceResourcesRequest {
                                service_id,
                                request_id: String::new(),
                            },
                        ))
                        .await?
                        .into_inner()
                        .deployment
                }
            }
        }
        None => {
            let environment_id = app.environment_id(&client).await?;
            let request_id = String::new();
            match action {
                Action::Deploy => {
                    deployments
                        .deploy_environment(Request::new(dpb::DeployEnvironmentRequest {
                            environment_id,
                            request_id,
                        }))
                        .await?
                        .into_inner()
                        .deployment
                }
                Action::Stop => {
                    deployments
                        .stop_environment(Request::new(dpb::StopEnvironmentRequest {
                            environment_id,
                            request_id,
                        }))
                        .await?
                        .into_inner()
                        .deployment
                }
                Action::Restart => {
                    deployments
                        .restart_environment(Request::new(dpb::RestartEnvironmentRequest {
                            environment_id,
                            request_id,
                        }))
                        .await?
                        .into_inner()
                        .deployment
                }
                Action::Delete => {
                    deployments
                        .delete_environment_resources(Request::new(
                            dpb::DeleteEnvironmentResourcesRequest {
                                environment_id,
                                request_id,
                            },
                        ))
                        .await?
                        .into_inner()
                        .deployment
                }
            }
        }
    };
    let deployment =
        deployment.ok_or_else(|| UserError::plain("the server returned no deployment"))?;
    follow(app, &client, deployment, args.wait.no_wait, false).await
}

pub async fn cancel(app: &App, args: CancelArgs) -> anyhow::Result<()> {
    let client = app.client()?;
    let id = match args.deployment {
        Some(id) => id,
        None => {
            let environment_id = app.environment_id(&client).await?;
            let status = environment_status(&client, &environment_id).await?;
            if status.running_deployment_id.is_empty() {
                return Err(UserError::hinted(
                    "no deployment is running in this environment",
                    "name one: `slipway cancel DEPLOYMENT_ID` (see `slipway deployments`)",
                )
                .into());
            }
            status.running_deployment_id
        }
    };
    let deployment = client
        .deployments()
        .cancel_deployment(Request::new(dpb::CancelDeploymentRequest {
            id,
            request_id: String::new(),
        }))
        .await?
        .into_inner()
        .deployment
        .ok_or_else(|| UserError::plain("the server returned no deployment"))?;
    follow(app, &client, deployment, args.wait.no_wait, true).await
}

pub async fn rollback(app: &App, args: RollbackArgs) -> anyhow::Result<()> {
    let client = app.client()?;
    let deployment = client
        .deployments()
        .rollback_deployment(Request::new(dpb::RollbackDeploymentRequest {
            id: args.deployment,
            request_id: String::new(),
        }))
        .await?
        .into_inner()
        .deployment
        .ok_or_else(|| UserError::plain("the server returned no deployment"))?;
    follow(app, &client, deployment, args.wait.no_wait, false).await
}

fn is_final(status: i32) -> bool {
    matches!(
        DeploymentStatus::try_from(status),
        Ok(DeploymentStatus::Deployed
            | DeploymentStatus::BuildError
            | DeploymentStatus::DeploymentError
            | DeploymentStatus::Canceled
            | DeploymentStatus::Stopped
            | DeploymentStatus::StopError
            | DeploymentStatus::Restarted
            | DeploymentStatus::RestartError
            | DeploymentStatus::Deleted
            | DeploymentStatus::DeleteError)
    )
}

/// A final status that is not what the command asked for.
fn is_failure(status: i32, canceling: bool) -> bool {
    match DeploymentStatus::try_from(status) {
        Ok(DeploymentStatus::Canceled) => !canceling,
        Ok(
            DeploymentStatus::BuildError
            | DeploymentStatus::DeploymentError
            | DeploymentStatus::StopError
            | DeploymentStatus::RestartError
            | DeploymentStatus::DeleteError,
        ) => true,
        _ => false,
    }
}

/// Prints the deployment at once (`--no-wait`), or follows it to its end with progress on
/// stderr, then prints it; a failed deployment is an error (exit code 3).
async fn follow(
    app: &App,
    client: &Client,
    deployment: dpb::Deployment,
    no_wait: bool,
    canceling: bool,
) -> anyhow::Result<()> {
    if no_wait {
        return print_summary(app.format, &deployment);
    }
    let finished = watch(client, deployment).await?;
    print_summary(app.format, &finished)?;
    if is_failure(finished.status, canceling) {
        let reason = if finished.error_message.is_empty() {
            String::new()
        } else {
            format!(": {}", finished.error_message)
        };
        return Err(DeploymentFailed(format!(
            "deployment {} ended {}{reason}",
            finished.id,
            label!(DeploymentStatus, finished.status)
        ))
        .into());
    }
    Ok(())
}

fn print_summary(format: Format, d: &dpb::Deployment) -> anyhow::Result<()> {
    match format {
        Format::Json => output::one(format, d, &[]),
        Format::Table => {
            println!(
                "deployment {} {}: {}",
                d.id,
                label!(dpb::DeploymentAction, d.action).to_lowercase(),
                label!(DeploymentStatus, d.status)
            );
            Ok(())
        }
    }
}

/// Follows WatchDeployment to a final state, reconnecting when the stream breaks.
async fn watch(
    client: &Client,
    mut deployment: dpb::Deployment,
) -> anyhow::Result<dpb::Deployment> {
    let mut progress = Progress::new();
    progress.show(&deployment);
    let mut retries = 0;
    while !is_final(deployment.status) {
        let opened = client
            .deployments()
            .watch_deployment(Request::new(dpb::WatchDeploymentRequest {
                id: deployment.id.clone(),
            }))
            .await;
        let outcome = match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            if let Some(next) = message.deployment {
                                progress.show(&next);
                                deployment = next;
                                retries = 0;
                            }
                            if is_final(deployment.status) {
                                break Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                }
            }
            Err(status) => Err(status),
        };
        match outcome {
            Ok(()) => {}
            Err(status) if retryable(&status) && retries < 10 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(status) => return Err(status.into()),
        }
        if !is_final(deployment.status) {
            // The stream ended early (a server restart): read where it is, then watch again.
            deployment = client
                .deployments()
                .get_deployment(Request::new(dpb::GetDeploymentRequest {
                    id: deployment.id.clone(),
                }))
                .await?
                .into_inner()
                .deployment
                .unwrap_or(deployment);
            progress.show(&deployment);
        }
    }
    Ok(deployment)
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal
    )
}

/// Live progress on stderr: one line per change of the deployment, a stage, a step or a
/// service, so it reads the same on a terminal and in a CI log.
struct Progress {
    started: Instant,
    status: Option<i32>,
    stages: HashMap<i32, i32>,
    steps: HashMap<(String, String), (i32, String)>,
    services: HashMap<String, i32>,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            status: None,
            stages: HashMap::new(),
            steps: HashMap::new(),
            services: HashMap::new(),
        }
    }

    fn line(&self, text: &str) {
        eprintln!("[{:>4}s] {text}", self.started.elapsed().as_secs());
    }

    fn show(&mut self, d: &dpb::Deployment) {
        if self.status != Some(d.status) {
            self.status = Some(d.status);
            let mut text = format!(
                "deployment {} ({}): {}",
                d.id,
                label!(dpb::DeploymentAction, d.action).to_lowercase(),
                label!(DeploymentStatus, d.status)
            );
            if d.queue_position > 0 {
                text.push_str(&format!(", position {} in queue", d.queue_position));
            }
            if !d.error_message.is_empty() {
                text.push_str(&format!(": {}", d.error_message));
            }
            self.line(&text);
        }
        for stage in &d.stages {
            if self.stages.insert(stage.kind, stage.status) != Some(stage.status) {
                self.line(&format!(
                    "  stage {}: {}",
                    label!(dpb::StageKind, stage.kind).to_lowercase(),
                    label!(dpb::StageStatus, stage.status)
                ));
            }
            for step in &stage.steps {
                let key = (step.service_id.clone(), step.phase.clone());
                let value = (step.status, step.message.clone());
                if self.steps.get(&key) != Some(&value) {
                    let mut text = format!("    {}", or_dash(&step.service_name));
                    if !step.phase.is_empty() {
                        text.push_str(&format!(" {}", step.phase));
                    }
                    text.push_str(&format!(": {}", label!(dpb::StepStatus, step.status)));
                    if !step.message.is_empty() {
                        text.push_str(&format!(" ({})", step.message));
                    }
                    self.line(&text);
                    self.steps.insert(key, value);
                }
            }
        }
        for service in &d.service_statuses {
            if self
                .services
                .insert(service.service_id.clone(), service.status)
                != Some(service.status)
            {
                let mut text = format!(
                    "  service {}: {}",
                    service.service_name,
                    label!(DeploymentStatus, service.status)
                );
                if !service.error_message.is_empty() {
                    text.push_str(&format!(": {}", service.error_message));
                }
                self.line(&text);
            }
        }
    }
}

async fn environment_status(
    client: &Client,
    environment_id: &str,
) -> anyhow::Result<dpb::EnvironmentStatus> {
    Ok(client
        .deployments()
        .get_environment_status(Request::new(dpb::GetEnvironmentStatusRequest {
            environment_id: environment_id.to_owned(),
        }))
        .await?
        .into_inner()
        .environment_status
        .unwrap_or_default())
}

const STATUS_EXAMPLES: &str = "Examples:
  slipway status
  slipway status -p shop -e staging
  slipway -o json status | jq '.services[] | {service_name, runtime_state}'";

#[derive(Debug, clap::Args)]
#[command(after_help = STATUS_EXAMPLES)]
pub struct StatusArgs {}

pub async fn status(app: &App, _args: StatusArgs) -> anyhow::Result<()> {
    let client = app.client()?;
    let environment_id = app.environment_id(&client).await?;
    let status = environment_status(&client, &environment_id).await?;
    if app.format == Format::Json {
        return output::one(app.format, &status, &[]);
    }
    let last = if status.last_deployment_id.is_empty() {
        "-".to_owned()
    } else {
        format!(
            "{} ({})",
            status.last_deployment_id,
            label!(DeploymentStatus, status.last_deployment_status)
        )
    };
    output::one(
        app.format,
        &status,
        &[
            ("environment", status.environment_id.clone()),
            ("state", label!(dpb::RuntimeState, status.runtime_state)),
            (
                "agent",
                if status.agent_connected {
                    "connected".into()
                } else {
                    "not connected".into()
                },
            ),
            ("running", or_dash(&status.running_deployment_id)),
            ("queued", status.queued_deployment_count.to_string()),
            ("last deployment", last),
        ],
    )?;
    if status.services.is_empty() {
        eprintln!("no services");
        return Ok(());
    }
    println!();
    let rows: Vec<Vec<String>> = status
        .services
        .iter()
        .map(|s| {
            let version = if s.image.is_empty() {
                s.git_commit_sha.chars().take(12).collect()
            } else {
                s.image.clone()
            };
            vec![
                s.service_name.clone(),
                label!(ServiceKind, s.service_kind),
                label!(dpb::ServiceDeploymentState, s.deployment_state),
                label!(dpb::RuntimeState, s.runtime_state),
                format!("{}/{}", s.ready_instances, s.desired_instances),
                or_dash(&version),
                or_dash(&s.message),
            ]
        })
        .collect();
    output::table(
        &[
            "SERVICE", "KIND", "DEPLOYED", "STATE", "READY", "VERSION", "MESSAGE",
        ],
        &rows,
    );
    Ok(())
}

const DEPLOYMENTS_EXAMPLES: &str = "Examples:
  slipway deployments                     # the environment's latest deployments
  slipway deployments --service web --limit 5
  slipway deployments 0190f1a2-…          # one in detail: stages, steps, services
  slipway -o json deployments 0190f1a2-…";

#[derive(Debug, clap::Args)]
#[command(after_help = DEPLOYMENTS_EXAMPLES)]
pub struct DeploymentsArgs {
    /// Show this deployment in detail instead of the list.
    deployment: Option<String>,
    /// Only deployments of this service (name or id).
    #[arg(long, short = 's')]
    service: Option<String>,
    /// How many to list, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u16,
}

pub async fn deployments(app: &App, args: DeploymentsArgs) -> anyhow::Result<()> {
    let client = app.client()?;
    if let Some(id) = args.deployment {
        let deployment = client
            .deployments()
            .get_deployment(Request::new(dpb::GetDeploymentRequest { id }))
            .await?
            .into_inner()
            .deployment
            .unwrap_or_default();
        return show_deployment(app.format, &deployment);
    }
    let organization_id = app.organization_id(&client).await?;
    let (environment_id, service_id) = match &args.service {
        Some(service) => (String::new(), app.service(&client, service).await?.id),
        None => (app.environment_id(&client).await?, String::new()),
    };
    let names: HashMap<String, String> = if environment_id.is_empty() {
        HashMap::new()
    } else {
        crate::app::list_services(&client, &environment_id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect()
    };
    let listed = client
        .deployments()
        .list_deployments(Request::new(dpb::ListDeploymentsRequest {
            organization_id,
            page_size: i32::from(args.limit),
            page_token: String::new(),
            project_id: String::new(),
            environment_id,
            service_id,
            statuses: Vec::new(),
        }))
        .await?
        .into_inner();
    output::list(
        app.format,
        &listed.deployments,
        "deployments",
        &[
            "ID", "ACTION", "STATUS", "TRIGGER", "SERVICE", "AGE", "DURATION",
        ],
        |d| {
            vec![
                d.id.clone(),
                label!(dpb::DeploymentAction, d.action).to_lowercase(),
                label!(DeploymentStatus, d.status),
                label!(dpb::DeploymentTrigger, d.trigger).to_lowercase(),
                if d.service_id.is_empty() {
                    "(all)".into()
                } else {
                    names
                        .get(&d.service_id)
                        .cloned()
                        .unwrap_or_else(|| d.service_id.clone())
                },
                age(d.create_time.as_ref()),
                duration(d),
            ]
        },
    )
}

fn duration(d: &dpb::Deployment) -> String {
    match (&d.start_time, &d.end_time) {
        (Some(start), Some(end)) => format!("{}s", (end.seconds - start.seconds).max(0)),
        (Some(_), None) => "running".to_owned(),
        _ => "-".to_owned(),
    }
}

fn show_deployment(format: Format, d: &dpb::Deployment) -> anyhow::Result<()> {
    output::one(
        format,
        d,
        &[
            ("id", d.id.clone()),
            (
                "action",
                label!(dpb::DeploymentAction, d.action).to_lowercase(),
            ),
            ("status", label!(DeploymentStatus, d.status)),
            (
                "trigger",
                label!(dpb::DeploymentTrigger, d.trigger).to_lowercase(),
            ),
            ("by", or_dash(&d.triggered_by)),
            ("environment", d.environment_id.clone()),
            ("service", or_dash(&d.service_id)),
            (
                "rolled back from",
                or_dash(&d.rolled_back_from_deployment_id),
            ),
            ("error", or_dash(&d.error_message)),
            ("created", time(d.create_time.as_ref())),
            ("started", time(d.start_time.as_ref())),
            ("ended", time(d.end_time.as_ref())),
            ("duration", duration(d)),
        ],
    )?;
    if format == Format::Json {
        return Ok(());
    }
    if !d.stages.is_empty() {
        println!();
        let mut rows = Vec::new();
        for stage in &d.stages {
            rows.push(vec![
                label!(dpb::StageKind, stage.kind).to_lowercase(),
                String::new(),
                label!(dpb::StageStatus, stage.status),
                String::new(),
            ]);
            for step in &stage.steps {
                rows.push(vec![
                    format!("  {}", or_dash(&step.service_name)),
                    step.phase.clone(),
                    label!(dpb::StepStatus, step.status),
                    or_dash(&step.message),
                ]);
            }
        }
        output::table(&["STAGE", "PHASE", "STATUS", "MESSAGE"], &rows);
    }
    if !d.service_statuses.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = d
            .service_statuses
            .iter()
            .map(|s| {
                vec![
                    s.service_name.clone(),
                    label!(ServiceKind, s.service_kind),
                    label!(DeploymentStatus, s.status),
                    or_dash(if s.image.is_empty() {
                        &s.git_commit_sha
                    } else {
                        &s.image
                    }),
                    or_dash(&s.error_message),
                ]
            })
            .collect();
        output::table(&["SERVICE", "KIND", "STATUS", "VERSION", "ERROR"], &rows);
    }
    Ok(())
}
