//! A preview's life: claimed and cloned from its blueprint, deployed (again after each
//! push), torn down. Callers have authorized whoever asked; everything here acts as the
//! orchestrator (catalog through the service credential, deployments through the engine's
//! queue).

use prost::Message as _;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use slipway_proto::deploy::v1 as pb;
use slipway_proto::events::v1 as ev;

use super::store::{PreviewRow, PreviewStoreError};
use super::{PreviewError, Previews, repository_key};
use crate::engine::status::{self, Action};
use crate::store::{DeploymentFilter, DeploymentRow, NewDeployment, RequestKey, new_id, now};

/// A pull request as previews see it (the API's `PullRequest`, the catalog's
/// `PullRequestRef`, or what a webhook said).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullRequest {
    /// As the blueprint's services spell it: the catalog retargets sources equal to it.
    pub repository_url: String,
    pub number: u64,
    pub source_branch: String,
    pub target_branch: String,
    pub web_url: String,
}

impl PullRequest {
    fn to_catalog(&self) -> cat::PullRequestRef {
        cat::PullRequestRef {
            repository_url: self.repository_url.clone(),
            number: self.number,
            source_branch: self.source_branch.clone(),
            target_branch: self.target_branch.clone(),
            web_url: self.web_url.clone(),
        }
    }
}

/// Who set a preview change off, as deployments record it.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The trigger of deploys (`PREVIEW_WEBHOOK` or `MANUAL`).
    pub deploy_trigger: pb::DeploymentTrigger,
    /// `triggered_by` of the deployments queued.
    pub triggered_by: String,
    /// The actor of the events published.
    pub actor: ev::Actor,
}

impl Origin {
    /// A git provider's webhook: the orchestrator acts on its own.
    pub fn webhook() -> Self {
        Self {
            deploy_trigger: pb::DeploymentTrigger::PreviewWebhook,
            triggered_by: "orchestrator".to_owned(),
            actor: status::orchestrator_actor(),
        }
    }

    /// A caller of `PreviewService`.
    pub fn caller(principal: &slipway_auth::Principal) -> Self {
        Self {
            deploy_trigger: pb::DeploymentTrigger::Manual,
            triggered_by: principal.id().to_owned(),
            actor: slipway_auth::convert::event_actor(principal),
        }
    }
}

/// How old a claim without an environment must be before another attempt finishes its
/// clone: far longer than a clone takes, so a clone in flight is never raced.
const STALE_CLAIM: chrono::Duration = chrono::Duration::minutes(5);

/// What [`Previews::ensure`] found.
#[derive(Clone, Debug)]
pub enum Ensured {
    /// A new preview, cloned now.
    Created(PreviewRow),
    /// The preview (or a claim still being cloned) that already tracks the pull request.
    Existing(PreviewRow),
}

/// Whether a blueprint's previews deploy on creation and on every push.
pub fn deploys_automatically(blueprint: &cat::Environment) -> bool {
    blueprint
        .preview_settings
        .as_ref()
        .is_none_or(|settings| settings.mode != cat::PreviewMode::OnDemand as i32)
}

impl Previews {
    /// The preview of `blueprint` for `pull_request`: the existing one, or a new claim
    /// cloned through the catalog. `name` defaults to `<blueprint>-pr-<number>`.
    pub async fn ensure(
        &self,
        blueprint: &cat::Environment,
        pull_request: &PullRequest,
        name: Option<String>,
        request_id: Option<String>,
    ) -> Result<Ensured, PreviewError> {
        let key = repository_key(&pull_request.repository_url);
        if let Some(row) = self
            .store
            .by_pull_request(&blueprint.id, &key, pull_request.number)
            .await?
        {
            // A claim left without its environment by a process that stopped mid-clone:
            // finished with the same request id, which reaches the copy if one was made.
            if row.environment_id.is_none() && now() - row.create_time > STALE_CLAIM {
                let row = self.clone_claimed(blueprint, pull_request, row).await?;
                return Ok(Ensured::Created(row));
            }
            return Ok(Ensured::Existing(row));
        }
        let time = now();
        let row = PreviewRow {
            id: new_id(),
            organization_id: blueprint.organization_id.clone(),
            project_id: blueprint.project_id.clone(),
            blueprint_environment_id: blueprint.id.clone(),
            environment_id: None,
            cluster_id: blueprint.cluster_id.clone(),
            name: name.unwrap_or_else(|| super::default_name(&blueprint.name, pull_request.number)),
            repository_url: pull_request.repository_url.clone(),
            repository_key: key.clone(),
            pull_request_number: pull_request.number,
            source_branch: pull_request.source_branch.clone(),
            target_branch: pull_request.target_branch.clone(),
            web_url: pull_request.web_url.clone(),
            request_id,
            deployed_git_commit_sha: String::new(),
            create_time: time,
            update_time: time,
        };
        match self.store.claim(&row).await {
            Ok(()) => {}
            // Another delivery (or caller) claimed it first.
            Err(PreviewStoreError::Taken) => {
                return match self
                    .store
                    .by_pull_request(&blueprint.id, &key, pull_request.number)
                    .await?
                {
                    Some(existing) => Ok(Ensured::Existing(existing)),
                    None => Err(PreviewStoreError::Taken.into()),
                };
            }
            Err(error) => return Err(error.into()),
        }
        let row = self.clone_claimed(blueprint, pull_request, row).await?;
        Ok(Ensured::Created(row))
    }

    /// Asks the catalog to clone the blueprint for a claimed row, and records the copy.
    /// A failed clone drops the claim, so the next delivery or call starts afresh.
    async fn clone_claimed(
        &self,
        blueprint: &cat::Environment,
        pull_request: &PullRequest,
        row: PreviewRow,
    ) -> Result<PreviewRow, PreviewError> {
        let cloned = self
            .catalog
            .clone_environment(cat::CloneEnvironmentRequest {
                id: blueprint.id.clone(),
                name: row.name.clone(),
                mode: EnvironmentMode::Preview as i32,
                cluster_id: String::new(),
                pull_request: Some(pull_request.to_catalog()),
                // The claim's id: a retry after a lost answer reaches the same copy.
                request_id: row.id.clone(),
            })
            .await;
        let environment = match cloned {
            Ok(environment) => environment,
            Err(error) => {
                if let Err(cleanup) = self.store.remove(&row.id).await {
                    tracing::warn!(error = %cleanup, "cannot remove a failed preview claim");
                }
                return Err(error.into());
            }
        };
        self.store
            .set_environment(&row.id, &environment.id, &environment.name)
            .await?;
        Ok(PreviewRow {
            environment_id: Some(environment.id),
            name: environment.name,
            cluster_id: environment.cluster_id,
            ..row
        })
    }

    /// Queues a deploy of the preview's environment through the engine's queue. With a
    /// `head_sha`, the deploy is keyed by the move from the commit last deployed to it, so
    /// two deliveries about one push queue one deployment.
    pub async fn deploy(
        &self,
        row: &PreviewRow,
        head_sha: &str,
        origin: &Origin,
    ) -> Result<DeploymentRow, PreviewError> {
        let environment_id = row.environment_id.clone().unwrap_or_default();
        let key = (!head_sha.is_empty()).then(|| RequestKey {
            organization_id: row.organization_id.clone(),
            method: "PreviewDeploy",
            request_id: format!(
                "{environment_id}/{}->{head_sha}",
                row.deployed_git_commit_sha
            ),
        });
        let new = NewDeployment {
            id: new_id(),
            organization_id: row.organization_id.clone(),
            project_id: row.project_id.clone(),
            environment_id,
            environment_mode: EnvironmentMode::Preview as i32,
            action: Action::Deploy.proto() as i32,
            status: Action::Deploy.queued() as i32,
            trigger: origin.deploy_trigger as i32,
            triggered_by: origin.triggered_by.clone(),
            ..NewDeployment::default()
        };
        let deployment = self.enqueue(new, key, origin).await?;
        if !head_sha.is_empty() {
            self.store.set_deployed_sha(&row.id, head_sha).await?;
        }
        Ok(deployment)
    }

    async fn enqueue(
        &self,
        new: NewDeployment,
        key: Option<RequestKey>,
        origin: &Origin,
    ) -> Result<DeploymentRow, PreviewError> {
        let (deployment, created) = self.engine.store().insert_deployment(new, key).await?;
        if created {
            status::queued(self.engine.bus(), origin.actor.clone(), &deployment).await;
            self.engine.wake();
        }
        Ok(deployment)
    }

    /// Deletes a preview: what is queued or running for it is canceled, a delete
    /// deployment is queued with the plan frozen now (the environment is about to leave
    /// the catalog), then the catalog environment goes (refused on a stale `etag`) and
    /// the preview is forgotten. Returns the teardown deployment, none when nothing was
    /// ever deployed. An environment already gone from the catalog is only forgotten.
    pub async fn teardown(
        &self,
        organization_id: &str,
        environment_id: &str,
        etag: &str,
        origin: &Origin,
    ) -> Result<Option<DeploymentRow>, PreviewError> {
        let snapshot = match self
            .catalog
            .environment_snapshot(cat::GetEnvironmentSnapshotRequest {
                environment_id: environment_id.to_owned(),
                service_ids: Vec::new(),
            })
            .await
        {
            Ok(response) => response.snapshot,
            Err(error) if error.0.code() == tonic::Code::NotFound => None,
            Err(error) => return Err(error.into()),
        };
        let mut teardown = None;
        if let Some(snapshot) = snapshot {
            self.engine
                .cancel_pending(environment_id, &origin.actor)
                .await?;
            let (ever, _) = self
                .engine
                .store()
                .list_deployments(
                    &DeploymentFilter {
                        organization_id: organization_id.to_owned(),
                        environment_id: Some(environment_id.to_owned()),
                        ..DeploymentFilter::default()
                    },
                    1,
                    None,
                )
                .await?;
            let environment = snapshot.environment.clone().unwrap_or_default();
            if !ever.is_empty() && !snapshot.services.is_empty() {
                let new = NewDeployment {
                    id: new_id(),
                    organization_id: organization_id.to_owned(),
                    project_id: environment.project_id.clone(),
                    environment_id: environment_id.to_owned(),
                    environment_mode: EnvironmentMode::Preview as i32,
                    action: Action::Delete.proto() as i32,
                    status: Action::Delete.queued() as i32,
                    trigger: pb::DeploymentTrigger::CatalogDeletion as i32,
                    triggered_by: origin.triggered_by.clone(),
                    plan: Some(snapshot.encode_to_vec()),
                    cluster_id: environment.cluster_id.clone(),
                    ..NewDeployment::default()
                };
                let key = RequestKey {
                    organization_id: organization_id.to_owned(),
                    method: "PreviewTeardown",
                    request_id: environment_id.to_owned(),
                };
                teardown = Some(self.enqueue(new, Some(key), origin).await?);
            }
            match self.catalog.delete_environment(environment_id, etag).await {
                Ok(()) => {}
                Err(error) if error.0.code() == tonic::Code::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        if let Some(row) = self.store.by_environment(environment_id).await? {
            self.store.remove(&row.id).await?;
        }
        Ok(teardown)
    }

    /// The blueprints of an organization with automatic previews that a pull request on
    /// `repository_key` into `target_branch` concerns: those with an `APPLICATION`
    /// service built from that repository and branch. Each comes with the repository
    /// URL as that service spells it.
    pub async fn auto_blueprints(
        &self,
        organization_id: &str,
        repository_key: &str,
        target_branch: &str,
    ) -> Result<Vec<(cat::Environment, String)>, PreviewError> {
        let mut found = Vec::new();
        let projects = match self.catalog.organization_projects(organization_id).await {
            Ok(projects) => projects,
            // No such organization: nothing of it to preview.
            Err(error)
                if matches!(
                    error.0.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                Vec::new()
            }
            Err(error) => return Err(error.into()),
        };
        for project in projects {
            for environment in self.catalog.project_environments(&project.id).await? {
                let auto = environment.blueprint
                    && environment
                        .preview_settings
                        .as_ref()
                        .is_some_and(|settings| settings.auto_preview);
                if !auto {
                    continue;
                }
                let services = self
                    .catalog
                    .environment_services(&environment.id, ServiceKind::Application)
                    .await?;
                let url = services.iter().find_map(|service| match &service.settings {
                    Some(cat::service::Settings::Application(app)) => app
                        .source
                        .as_ref()
                        .filter(|source| {
                            source.branch == target_branch
                                && super::repository_key(&source.repository_url) == repository_key
                        })
                        .map(|source| source.repository_url.clone()),
                    _ => None,
                });
                if let Some(url) = url {
                    found.push((environment, url));
                }
            }
        }
        Ok(found)
    }
}
