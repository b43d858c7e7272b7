//! The deployment engine: claims queued deployments (or running ones whose engine died),
//! freezes their plan, builds what needs an image, sends one command per stage to the
//! cluster's agent over NATS and folds the agent's reports into statuses.
//!
//! Durability rests on the database, not on this process: a deployment is claimed with a
//! conditional UPDATE that takes a lease ([`EngineConfig::lease_ttl`]), renewed while it
//! runs. A replica that dies leaves its lease to expire; another engine claims the
//! deployment and resumes it from its stored stages. A stage's `command_id` is stored
//! before the command is published, so a resumed stage republishes the same id: NATS
//! deduplicates it in its window, and the agent applies each id once after that.

pub mod plan;
pub mod reports;
pub mod status;
pub mod teardown;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use slipway_events::{EventBus, EventBusExt as _};
use slipway_proto::agent::v1 as agent;
use slipway_proto::build::v1 as build;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::deploy::v1 as deploy;
use slipway_proto::events::v1 as ev;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::catalog::CatalogClient;
use crate::store::{
    DeploymentRow, Phase, ServiceStateRow, StageRow, StepReportRow, Store, StoreError, now,
};
use status::Action;

/// How the engine runs. The defaults suit production; tests shorten the times.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This replica's identity in leases; unique per process.
    pub owner: String,
    /// How long a claim holds without renewal: the time a dead replica's deployments wait
    /// before another replica resumes them. Renewed every third of it.
    pub lease_ttl: Duration,
    /// How often the engine looks for work and for reports other replicas stored, when
    /// nothing in this process woke it.
    pub poll_interval: Duration,
    /// Most deployments this replica runs at once.
    pub max_running: usize,
    /// Longest a stage waits for the agent's final report before it fails.
    pub command_timeout: Duration,
    /// Longest a deployment waits for a build result before it fails with `BUILD_ERROR`.
    /// The build-runner does not exist yet: until it does, a service that needs a build
    /// fails after this long with a message saying so.
    pub build_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            owner: uuid::Uuid::now_v7().to_string(),
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            max_running: 64,
            command_timeout: Duration::from_secs(15 * 60),
            build_timeout: Duration::from_secs(15 * 60),
        }
    }
}

/// Why a run stopped before a final status; the deployment is left for another claim.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the lease was lost to another engine")]
    LeaseLost,
    #[error("publishing on the bus failed: {0}")]
    Bus(#[from] slipway_events::EventsError),
    #[error("catalog is unavailable: {0}")]
    Catalog(String),
    #[error("the stored plan does not decode: {0}")]
    CorruptPlan(#[from] prost::DecodeError),
}

/// The engine's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: Arc<dyn EventBus>,
    catalog: Option<CatalogClient>,
    config: EngineConfig,
    /// Woken when a deployment is queued or ends in this process.
    work: Notify,
    /// Woken when a report or build result is stored by this process.
    reports: Notify,
    /// Deployments this replica runs now.
    running: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The engine's tasks; dropping it stops them (the deployments they ran stay claimed
/// until their lease expires, then another engine resumes them).
pub struct EngineHandle {
    tasks: Vec<JoinHandle<()>>,
    engine: Engine,
}

impl EngineHandle {
    /// The engine these tasks run.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(mut running) = self.engine.inner.running.lock() {
            running.clear();
        }
    }
}

/// Outcome of one stage's command.
enum StageOutcome {
    Done(Vec<StepReportRow>),
    Failed(String, Vec<StepReportRow>),
}

impl Engine {
    /// An engine on `store` and `bus`, freezing plans from `catalog` (`None`: deployments
    /// without a frozen plan fail with a clear message).
    pub fn new(
        store: Store,
        bus: Arc<dyn EventBus>,
        catalog: Option<CatalogClient>,
        config: EngineConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                bus,
                catalog,
                config,
                work: Notify::new(),
                reports: Notify::new(),
                running: std::sync::Mutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.inner.bus
    }

    pub fn catalog(&self) -> Option<&CatalogClient> {
        self.inner.catalog.as_ref()
    }

    /// Tells the worker loop there may be work (a deployment was queued here).
    pub fn wake(&self) {
        self.inner.work.notify_waiters();
    }

    /// Tells waiting stages a report was stored.
    pub fn reported(&self) {
        self.inner.reports.notify_waiters();
    }

    /// Starts the worker loop and the report and build-result consumers.
    pub fn start(self) -> EngineHandle {
        let worker = {
            let engine = self.clone();
            tokio::spawn(async move { engine.work_loop().await })
        };
        let reports = {
            let engine = self.clone();
            tokio::spawn(async move { reports::consume_reports(engine).await })
        };
        let builds = {
            let engine = self.clone();
            tokio::spawn(async move { reports::consume_build_results(engine).await })
        };
        let deletions = {
            let engine = self.clone();
            tokio::spawn(async move { teardown::follow_deletions(engine).await })
        };
        EngineHandle {
            tasks: vec![worker, reports, builds, deletions],
            engine: self,
        }
    }

    /// Cancels the environment's queued deployments and asks its running one to stop
    /// (deletes excepted): they would deploy what is about to be deleted.
    pub async fn cancel_pending(
        &self,
        environment_id: &str,
        actor: &ev::Actor,
    ) -> Result<(), StoreError> {
        let store = self.store();
        let mut pending = store.in_environment(environment_id, Phase::Queued).await?;
        pending.extend(store.in_environment(environment_id, Phase::Running).await?);
        for deployment in pending {
            if deployment.action == Action::Delete.proto() as i32 {
                continue;
            }
            let (after, changed) = store
                .cancel(
                    &deployment.id,
                    deploy::DeploymentStatus::Canceled as i32,
                    deploy::DeploymentStatus::Canceling as i32,
                )
                .await?;
            if changed {
                status::changed(
                    self.bus(),
                    actor.clone(),
                    &after,
                    deployment.status,
                    after.status,
                    "",
                )
                .await;
            }
        }
        self.wake();
        Ok(())
    }

    async fn work_loop(self) {
        let config = &self.inner.config;
        loop {
            let busy = self.inner.running.lock().map_or(0, |r| r.len());
            if busy < config.max_running {
                let notified = self.inner.work.notified();
                match self
                    .inner
                    .store
                    .claim(&config.owner, config.lease_ttl, status::running_status)
                    .await
                {
                    Ok(Some(row)) => {
                        self.spawn_run(row);
                        continue;
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot claim deployments"),
                }
                let _ = tokio::time::timeout(config.poll_interval, notified).await;
            } else {
                tokio::time::sleep(config.poll_interval).await;
            }
        }
    }

    fn spawn_run(&self, row: DeploymentRow) {
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(row.id.clone());
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let id = row.id.clone();
            let lost = Arc::new(AtomicBool::new(false));
            let renewer = engine.spawn_renewer(id.clone(), Arc::clone(&lost));
            match engine.run(row, &lost).await {
                Ok(()) => {}
                Err(EngineError::LeaseLost) => {
                    tracing::warn!(deployment = %id, "lease lost; another engine continues")
                }
                Err(error) => {
                    // Left claimed: the lease expires and an engine retries it.
                    tracing::warn!(deployment = %id, %error, "deployment interrupted; it will be resumed")
                }
            }
            renewer.abort();
            if let Ok(mut running) = engine.inner.running.lock() {
                running.remove(&id);
            }
            engine.wake();
        });
    }

    fn spawn_renewer(&self, id: String, lost: Arc<AtomicBool>) -> JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let config = &engine.inner.config;
            let period = config.lease_ttl / 3;
            loop {
                tokio::time::sleep(period).await;
                match engine
                    .inner
                    .store
                    .renew(&id, &config.owner, config.lease_ttl)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(error) => tracing::warn!(%error, deployment = %id, "cannot renew a lease"),
                }
            }
        })
    }

    fn owner(&self) -> &str {
        &self.inner.config.owner
    }

    /// Runs (or resumes) one claimed deployment to a final status.
    async fn run(&self, row: DeploymentRow, lost: &AtomicBool) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let action = Action::from_i32(row.action).unwrap_or(Action::Deploy);
        let mut row = row;
        if row.start_time.is_some() && row.status == action.running() as i32 {
            // First claim from the queue: announce the move out of it.
            status::changed(
                &self.inner.bus,
                status::orchestrator_actor(),
                &row,
                action.queued() as i32,
                row.status,
                "",
            )
            .await;
        }
        let mut stages = store.stages(&row.id).await?;
        let snapshot = if stages.is_empty() {
            match self.freeze(&row, action).await? {
                Ok(snapshot) => {
                    row = store.deployment(&row.id).await?;
                    stages = store.stages(&row.id).await?;
                    snapshot
                }
                Err(message) => {
                    return self
                        .finish(&row, action.failed() as i32, &message, HashMap::new())
                        .await;
                }
            }
        } else {
            cat::EnvironmentSnapshot::decode(row.plan.as_deref().unwrap_or_default())?
        };
        let services = plan::services(&snapshot);
        let mut statuses = decode_statuses(&row);

        // Builds, for a deploy whose applied services need an image.
        let mut artifacts: HashMap<String, agent::program::Artifact> = HashMap::new();
        if action == Action::Deploy {
            let to_build: Vec<&cat::ServiceSnapshot> = stages
                .iter()
                .filter(|s| s.operation == agent::CommandOperation::Apply as i32)
                .flat_map(|s| s.service_ids.iter())
                .filter_map(|id| services.get(id).copied())
                .filter(|s| s.service.as_ref().is_some_and(plan::needs_build))
                .collect();
            if !to_build.is_empty() {
                self.set_status(&row, deploy::DeploymentStatus::Building as i32, lost)
                    .await?;
                match self.build(&row, &snapshot, &to_build, lost).await? {
                    Ok(built) => artifacts = built,
                    Err(message) => {
                        for stage in &mut stages {
                            if !is_stage_final(stage.status) {
                                stage.status = deploy::StageStatus::Skipped as i32;
                                stage.end_time = Some(now());
                                store.update_stage(stage).await?;
                            }
                        }
                        for entry in statuses.values_mut() {
                            entry.status = deploy::DeploymentStatus::BuildError as i32;
                            entry.error_message = message.clone();
                        }
                        return self
                            .finish(
                                &row,
                                deploy::DeploymentStatus::BuildError as i32,
                                &message,
                                statuses,
                            )
                            .await;
                    }
                }
                self.set_status(&row, action.running() as i32, lost).await?;
            }
        }

        let count = stages.len();
        for index in 0..count {
            if lost.load(Ordering::SeqCst) {
                return Err(EngineError::LeaseLost);
            }
            if is_stage_final(stages[index].status) {
                continue;
            }
            // Cancel between stages.
            let current = store.deployment(&row.id).await?;
            if current.cancel_requested {
                let time = now();
                for stage in stages.iter_mut().skip(index) {
                    if !is_stage_final(stage.status) {
                        stage.status = deploy::StageStatus::Canceled as i32;
                        stage.end_time = Some(time);
                        store.update_stage(stage).await?;
                    }
                }
                return self
                    .finish(
                        &current,
                        deploy::DeploymentStatus::Canceled as i32,
                        "",
                        statuses,
                    )
                    .await;
            }
            if stages[index].service_ids.is_empty() {
                stages[index].status = deploy::StageStatus::Skipped as i32;
                stages[index].end_time = Some(now());
                store.update_stage(&stages[index]).await?;
                continue;
            }
            let is_last_agent_stage = stages
                .iter()
                .skip(index + 1)
                .all(|s| s.service_ids.is_empty());
            let outcome = self
                .run_stage(
                    &row,
                    &snapshot,
                    &mut stages[index],
                    &artifacts,
                    action,
                    is_last_agent_stage,
                    lost,
                )
                .await?;
            match outcome {
                StageOutcome::Done(reports) => {
                    self.fold(
                        &row,
                        &snapshot,
                        &stages[index],
                        action,
                        &reports,
                        None,
                        &mut statuses,
                    )
                    .await?;
                    store
                        .set_status(
                            &row.id,
                            self.owner(),
                            current.status,
                            Some(encode_statuses(&statuses)),
                        )
                        .await?;
                }
                StageOutcome::Failed(message, reports) => {
                    self.fold(
                        &row,
                        &snapshot,
                        &stages[index],
                        action,
                        &reports,
                        Some(&message),
                        &mut statuses,
                    )
                    .await?;
                    let time = now();
                    for stage in stages.iter_mut().skip(index + 1) {
                        stage.status = deploy::StageStatus::Skipped as i32;
                        stage.end_time = Some(time);
                        store.update_stage(stage).await?;
                    }
                    let kind = deploy::StageKind::try_from(stages[index].kind)
                        .map_or("unknown", |k| stage_name(k));
                    let message = format!("the {kind} stage failed: {message}");
                    return self
                        .finish(&row, action.failed() as i32, &message, statuses)
                        .await;
                }
            }
        }
        let current = store.deployment(&row.id).await?;
        let final_status = if current.cancel_requested && count == 0 {
            deploy::DeploymentStatus::Canceled as i32
        } else {
            action.succeeded() as i32
        };
        self.finish(&current, final_status, "", statuses).await
    }

    async fn set_status(
        &self,
        row: &DeploymentRow,
        status: i32,
        lost: &AtomicBool,
    ) -> Result<(), EngineError> {
        if lost.load(Ordering::SeqCst) {
            return Err(EngineError::LeaseLost);
        }
        let current = self.inner.store.deployment(&row.id).await?;
        if current.status == status || current.cancel_requested {
            return Ok(());
        }
        if !self
            .inner
            .store
            .set_status(&row.id, self.owner(), status, None)
            .await?
        {
            return Err(EngineError::LeaseLost);
        }
        status::changed(
            &self.inner.bus,
            status::orchestrator_actor(),
            row,
            current.status,
            status,
            "",
        )
        .await;
        Ok(())
    }

    async fn finish(
        &self,
        row: &DeploymentRow,
        final_status: i32,
        message: &str,
        mut statuses: HashMap<String, deploy::DeploymentServiceStatus>,
    ) -> Result<(), EngineError> {
        // A service of the plan no command touched (a lifecycle job that does not run on
        // this action, or one whose stage never ran) ends with the deployment: its status
        // must be final too, never the running status it was frozen with.
        let failed = is_error_status(final_status);
        for entry in statuses.values_mut() {
            if !status::is_final(entry.status) {
                entry.status = final_status;
                if failed && entry.error_message.is_empty() {
                    entry.error_message = message.to_owned();
                }
            }
        }
        let current = self.inner.store.deployment(&row.id).await?;
        let done = self
            .inner
            .store
            .finish(
                &row.id,
                self.owner(),
                final_status,
                message,
                encode_statuses(&statuses),
            )
            .await?;
        if !done {
            return Err(EngineError::LeaseLost);
        }
        status::changed(
            &self.inner.bus,
            status::orchestrator_actor(),
            &current,
            current.status,
            final_status,
            message,
        )
        .await;
        self.wake();
        Ok(())
    }

    /// Freezes the plan: the catalog's snapshot now (or the rollback's plan already
    /// stored), pins applied, stages computed. `Ok(Err(message))` fails the deployment.
    async fn freeze(
        &self,
        row: &DeploymentRow,
        action: Action,
    ) -> Result<Result<cat::EnvironmentSnapshot, String>, EngineError> {
        let mut snapshot = match &row.plan {
            Some(plan) => cat::EnvironmentSnapshot::decode(plan.as_slice())?,
            None => {
                let Some(catalog) = &self.inner.catalog else {
                    return Ok(Err(
                        "the orchestrator has no catalog to read the environment from".to_owned(),
                    ));
                };
                let request = cat::GetEnvironmentSnapshotRequest {
                    environment_id: row.environment_id.clone(),
                    service_ids: if row.service_id.is_empty() {
                        Vec::new()
                    } else {
                        vec![row.service_id.clone()]
                    },
                };
                match catalog.environment_snapshot(request).await {
                    Ok(response) => response.snapshot.unwrap_or_default(),
                    Err(error) if error.0.code() == tonic::Code::NotFound => {
                        return Ok(Err(
                            "the environment or service no longer exists in the catalog".to_owned(),
                        ));
                    }
                    Err(error) => return Err(EngineError::Catalog(error.to_string())),
                }
            }
        };
        if !row.image_tag.is_empty() {
            for service in &mut snapshot.services {
                if let Some(svc) = service.service.as_mut()
                    && let Some(cat::service::Settings::Container(c)) = svc.settings.as_mut()
                    && let Some(source) = c.source.as_mut()
                {
                    source.tag = row.image_tag.clone();
                }
            }
        }
        if !row.git_commit_sha.is_empty() {
            for service in &mut snapshot.services {
                if let Some(svc) = service.service.as_mut()
                    && let Some(cat::service::Settings::Application(a)) = svc.settings.as_mut()
                    && let Some(source) = a.source.as_mut()
                {
                    source.branch = row.git_commit_sha.clone();
                }
            }
        }
        let cluster_id = snapshot
            .environment
            .as_ref()
            .map(|e| e.cluster_id.clone())
            .unwrap_or_default();
        if cluster_id.is_empty() {
            return Ok(Err("the environment has no cluster to deploy to".to_owned()));
        }
        let planned = plan::stages(action, &snapshot);
        let stages: Vec<StageRow> = planned
            .iter()
            .enumerate()
            .map(|(index, stage)| StageRow {
                deployment_id: row.id.clone(),
                index: i32::try_from(index).unwrap_or(i32::MAX),
                kind: stage.kind as i32,
                operation: stage.operation as i32,
                status: if stage.service_ids.is_empty() {
                    deploy::StageStatus::Skipped as i32
                } else {
                    deploy::StageStatus::Queued as i32
                },
                command_id: None,
                service_ids: stage.service_ids.clone(),
                message: String::new(),
                start_time: None,
                end_time: stage.service_ids.is_empty().then(now),
            })
            .collect();
        let statuses: HashMap<String, deploy::DeploymentServiceStatus> = snapshot
            .services
            .iter()
            .filter_map(|s| s.service.as_ref())
            .map(|s| {
                (
                    s.id.clone(),
                    deploy::DeploymentServiceStatus {
                        service_id: s.id.clone(),
                        service_name: s.name.clone(),
                        service_kind: s.kind,
                        status: row.status,
                        build_id: String::new(),
                        git_commit_sha: String::new(),
                        image: String::new(),
                        error_message: String::new(),
                    },
                )
            })
            .collect();
        let service_ids: Vec<String> = statuses.keys().cloned().collect();
        let frozen = self
            .inner
            .store
            .freeze(
                &row.id,
                self.owner(),
                snapshot.encode_to_vec(),
                &cluster_id,
                &stages,
                &service_ids,
                encode_statuses(&statuses),
            )
            .await?;
        if !frozen {
            return Err(EngineError::LeaseLost);
        }
        Ok(Ok(snapshot))
    }

    /// Publishes a build job per service and waits for each result.
    async fn build(
        &self,
        row: &DeploymentRow,
        snapshot: &cat::EnvironmentSnapshot,
        services: &[&cat::ServiceSnapshot],
        lost: &AtomicBool,
    ) -> Result<Result<HashMap<String, agent::program::Artifact>, String>, EngineError> {
        let mut jobs = Vec::new();
        for service in services {
            let Some(svc) = service.service.as_ref() else {
                continue;
            };
            let Some(cat::service::Settings::Application(app)) = &svc.settings else {
                continue;
            };
            let source = app.source.clone().unwrap_or_default();
            // Stable per deployment and service, so a resumed deployment republishes the
            // same job and NATS drops the repeat.
            let job_id = stable_uuid(&format!("{}/{}", row.id, svc.id));
            let job = build::BuildJob {
                job_id: job_id.clone(),
                organization_id: row.organization_id.clone(),
                project_id: row.project_id.clone(),
                environment_id: row.environment_id.clone(),
                service_id: svc.id.clone(),
                deployment_id: row.id.clone(),
                source: Some(build::GitSource {
                    repository_url: source.repository_url.clone(),
                    r#ref: source.branch.clone(),
                    root_path: source.root_path.clone(),
                    ..Default::default()
                }),
                dockerfile_path: source.dockerfile_path.clone(),
                build_args: source.build_arguments.clone(),
                local_build_command: if source.build_command.is_empty() {
                    Vec::new()
                } else {
                    vec![source.build_command.clone()]
                },
                git_credentials: plan::git_credentials(snapshot, &source.git_credential_id),
                registry: plan::build_registry(snapshot, &svc.name),
                create_time: Some(status_timestamp()),
                ..Default::default()
            };
            self.inner
                .bus
                .publish_proto("slipway.build.jobs", &job_id, &job)
                .await?;
            jobs.push((svc.id.clone(), svc.name.clone(), job_id));
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.build_timeout;
        let mut artifacts = HashMap::new();
        for (service_id, name, job_id) in jobs {
            loop {
                if lost.load(Ordering::SeqCst) {
                    return Err(EngineError::LeaseLost);
                }
                if let Some(result) = self.inner.store.build_result(&job_id).await? {
                    if result.outcome != build::BuildOutcome::Succeeded as i32 {
                        let detail = if result.message.is_empty() {
                            "see the build's logs".to_owned()
                        } else {
                            result.message
                        };
                        return Ok(Err(format!("the build of service {name} failed: {detail}")));
                    }
                    let artifact = if result.image_reference.is_empty() {
                        agent::program::Artifact::Local(agent::LocalArtifact {
                            path: result.local_artifact_path,
                        })
                    } else {
                        agent::program::Artifact::Image(agent::ImageArtifact {
                            reference: result.image_reference,
                            pull_credentials: plan::build_registry_pull(snapshot),
                        })
                    };
                    artifacts.insert(service_id.clone(), artifact);
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Err(format!(
                        "no build result for service {name} within {} s: is a build-runner taking jobs from the BUILDS stream?",
                        self.inner.config.build_timeout.as_secs()
                    )));
                }
                let notified = self.inner.reports.notified();
                let _ = tokio::time::timeout(self.inner.config.poll_interval, notified).await;
            }
        }
        Ok(Ok(artifacts))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_stage(
        &self,
        row: &DeploymentRow,
        snapshot: &cat::EnvironmentSnapshot,
        stage: &mut StageRow,
        artifacts: &HashMap<String, agent::program::Artifact>,
        action: Action,
        last: bool,
        lost: &AtomicBool,
    ) -> Result<StageOutcome, EngineError> {
        let store = &self.inner.store;
        let services = plan::services(snapshot);
        let full = matches!(
            agent::CommandOperation::try_from(stage.operation),
            Ok(agent::CommandOperation::Apply | agent::CommandOperation::RunJob)
        );
        let mut workloads = Vec::new();
        for id in &stage.service_ids {
            let Some(service) = services.get(id) else {
                continue;
            };
            match plan::workload(snapshot, service, artifacts.get(id).cloned(), full) {
                Ok(workload) => workloads.push(workload),
                Err(error) => return Ok(StageOutcome::Failed(error.to_string(), Vec::new())),
            }
        }
        // The command id is stored before the command is published.
        if stage.command_id.is_none() {
            stage.command_id = Some(uuid::Uuid::now_v7().to_string());
            stage.status = deploy::StageStatus::Ongoing as i32;
            stage.start_time = Some(now());
            store.update_stage(stage).await?;
        }
        let command_id = stage.command_id.clone().unwrap_or_default();
        let namespace = snapshot
            .environment
            .as_ref()
            .map(|e| {
                format!(
                    "{}-{}",
                    e.name,
                    &e.id.replace('-', "")[..8.min(e.id.replace('-', "").len())]
                )
            })
            .unwrap_or_default();
        let command = agent::Command {
            command_id: command_id.clone(),
            cluster_id: row.cluster_id.clone(),
            organization_id: row.organization_id.clone(),
            project_id: row.project_id.clone(),
            environment_id: row.environment_id.clone(),
            deployment_id: row.id.clone(),
            namespace,
            stage: command_stage(stage.kind) as i32,
            operation: stage.operation,
            workloads,
            timeout: None,
            delete_namespace: action == Action::Delete
                && row.service_id.is_empty()
                && last
                && stage.operation == agent::CommandOperation::Delete as i32,
            create_time: Some(status_timestamp()),
        };
        let subject = slipway_events::subject::agent_commands(&row.cluster_id)?;
        self.inner
            .bus
            .publish_proto(&subject, &command_id, &command)
            .await?;

        let deadline = tokio::time::Instant::now() + self.inner.config.command_timeout;
        loop {
            if lost.load(Ordering::SeqCst) {
                return Err(EngineError::LeaseLost);
            }
            let notified = self.inner.reports.notified();
            let reports = store.step_reports(&command_id).await?;
            if let Some(last) = reports.iter().rev().find(|r| {
                r.service_id.is_empty()
                    && (r.status == agent::StepStatus::Succeeded as i32
                        || r.status == agent::StepStatus::Failed as i32)
            }) {
                let time = now();
                stage.end_time = Some(time);
                stage.message = last.message.clone();
                if last.status == agent::StepStatus::Succeeded as i32 {
                    stage.status = deploy::StageStatus::Done as i32;
                    store.update_stage(stage).await?;
                    return Ok(StageOutcome::Done(reports));
                }
                stage.status = deploy::StageStatus::Error as i32;
                store.update_stage(stage).await?;
                let message = if last.message.is_empty() {
                    "the agent reported a failure".to_owned()
                } else {
                    last.message.clone()
                };
                return Ok(StageOutcome::Failed(message, reports));
            }
            if tokio::time::Instant::now() >= deadline {
                stage.status = deploy::StageStatus::Error as i32;
                stage.end_time = Some(now());
                stage.message = "the agent did not finish the stage in time".to_owned();
                store.update_stage(stage).await?;
                return Ok(StageOutcome::Failed(
                    "the agent did not report the end of the stage in time (is it connected?)"
                        .to_owned(),
                    reports,
                ));
            }
            let _ = tokio::time::timeout(self.inner.config.poll_interval, notified).await;
        }
    }

    /// Folds a finished stage into the per-service statuses of the deployment and the
    /// environment's service states.
    #[allow(clippy::too_many_arguments)]
    async fn fold(
        &self,
        row: &DeploymentRow,
        snapshot: &cat::EnvironmentSnapshot,
        stage: &StageRow,
        action: Action,
        reports: &[StepReportRow],
        failure: Option<&str>,
        statuses: &mut HashMap<String, deploy::DeploymentServiceStatus>,
    ) -> Result<(), EngineError> {
        let services = plan::services(snapshot);
        let states: HashMap<String, ServiceStateRow> = self
            .inner
            .store
            .service_states(&row.environment_id)
            .await?
            .into_iter()
            .map(|s| (s.service_id.clone(), s))
            .collect();
        for id in &stage.service_ids {
            let own: Vec<&StepReportRow> = reports.iter().filter(|r| &r.service_id == id).collect();
            let failed_step = own
                .iter()
                .rev()
                .find(|r| r.status == agent::StepStatus::Failed as i32);
            let failed = failed_step.is_some() || (failure.is_some() && own.is_empty());
            let message = failed_step
                .map(|r| r.message.clone())
                .or_else(|| failure.filter(|_| failed).map(str::to_owned))
                .unwrap_or_default();
            let runtime = own
                .iter()
                .rev()
                .find(|r| r.runtime_state != 0)
                .map_or(0, |r| r.runtime_state);
            let status = if failed {
                action.failed()
            } else {
                action.succeeded()
            } as i32;
            let entry = statuses.entry(id.clone()).or_default();
            entry.service_id = id.clone();
            // A service may appear in two commands of a stage group: an error sticks.
            if entry.status != action.failed() as i32 || failed {
                entry.status = status;
                entry.error_message = message.clone();
            }
            let Some(service) = services.get(id) else {
                continue;
            };
            let svc = service.service.clone().unwrap_or_default();
            entry.service_name = svc.name.clone();
            entry.service_kind = svc.kind;
            let mut state = states.get(id).cloned().unwrap_or_default();
            state.environment_id = row.environment_id.clone();
            state.service_id = id.clone();
            state.organization_id = row.organization_id.clone();
            state.service_name = svc.name.clone();
            state.service_kind = svc.kind;
            state.last_deployment_id = row.id.clone();
            state.last_deployment_status = entry.status;
            state.message = message;
            if !failed {
                match action {
                    Action::Deploy => {
                        let pinned = !row.image_tag.is_empty() || !row.git_commit_sha.is_empty();
                        state.catalog_revision = if pinned {
                            format!("pinned:{}", plan::catalog_revision(service))
                        } else {
                            plan::catalog_revision(service)
                        };
                        state.deleted = false;
                    }
                    Action::Delete => {
                        state.deleted = true;
                        state.catalog_revision.clear();
                    }
                    _ => {}
                }
            }
            state.runtime_state = if runtime != 0 {
                runtime
            } else if failed {
                deploy::RuntimeState::Error as i32
            } else {
                match action {
                    Action::Deploy | Action::Restart => {
                        if svc.kind == slipway_proto::common::v1::ServiceKind::LifecycleJob as i32 {
                            deploy::RuntimeState::Completed as i32
                        } else {
                            deploy::RuntimeState::Running as i32
                        }
                    }
                    Action::Stop | Action::Delete => deploy::RuntimeState::Stopped as i32,
                }
            };
            state.observe_time = Some(now());
            self.inner.store.upsert_service_state(&state).await?;
        }
        Ok(())
    }
}

/// The `Deployment` holding only service statuses, as the row stores them.
pub fn decode_statuses(row: &DeploymentRow) -> HashMap<String, deploy::DeploymentServiceStatus> {
    deploy::Deployment::decode(row.service_statuses.as_slice())
        .map(|d| {
            d.service_statuses
                .into_iter()
                .map(|s| (s.service_id.clone(), s))
                .collect()
        })
        .unwrap_or_default()
}

fn encode_statuses(statuses: &HashMap<String, deploy::DeploymentServiceStatus>) -> Vec<u8> {
    let mut list: Vec<_> = statuses.values().cloned().collect();
    list.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    deploy::Deployment {
        service_statuses: list,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Whether `status` is one of the final `*_ERROR` deployment statuses.
fn is_error_status(status: i32) -> bool {
    matches!(
        deploy::DeploymentStatus::try_from(status),
        Ok(deploy::DeploymentStatus::BuildError
            | deploy::DeploymentStatus::DeploymentError
            | deploy::DeploymentStatus::StopError
            | deploy::DeploymentStatus::RestartError
            | deploy::DeploymentStatus::DeleteError)
    )
}

fn is_stage_final(status: i32) -> bool {
    matches!(
        deploy::StageStatus::try_from(status),
        Ok(deploy::StageStatus::Done
            | deploy::StageStatus::Error
            | deploy::StageStatus::Skipped
            | deploy::StageStatus::Canceled)
    )
}

fn command_stage(kind: i32) -> agent::CommandStage {
    match deploy::StageKind::try_from(kind) {
        Ok(deploy::StageKind::Databases) => agent::CommandStage::Databases,
        Ok(deploy::StageKind::Jobs) => agent::CommandStage::Jobs,
        Ok(deploy::StageKind::Helm) => agent::CommandStage::Helm,
        _ => agent::CommandStage::Applications,
    }
}

/// The lowercase name of a stage kind, for messages.
pub fn stage_name(kind: deploy::StageKind) -> &'static str {
    match kind {
        deploy::StageKind::Databases => "databases",
        deploy::StageKind::Jobs => "jobs",
        deploy::StageKind::Applications => "applications",
        deploy::StageKind::Helm => "helm",
        deploy::StageKind::Unspecified => "unknown",
    }
}

fn status_timestamp() -> prost_types::Timestamp {
    let time = now();
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A UUID-formatted id derived from `key`: the same key always gives the same id.
fn stable_uuid(key: &str) -> String {
    let hash = plan::digest(key.as_bytes());
    let mut bytes = [0u8; 16];
    for (i, chunk) in hash.as_bytes().chunks(2).take(16).enumerate() {
        let text = std::str::from_utf8(chunk).unwrap_or("00");
        bytes[i] = u8::from_str_radix(text, 16).unwrap_or(0);
    }
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}
