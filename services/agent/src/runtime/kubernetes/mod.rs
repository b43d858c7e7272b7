//! The Kubernetes runtime: turns each command's workloads into Kubernetes objects in the
//! environment's namespace (server-side apply, field manager `slipway-agent`), then waits
//! for the cluster to get there and reports why when it does not.
//!
//! Concerns live apart: [`objects`] builds objects (pure), [`apply`] talks to the API
//! server, [`rollout`] waits and classifies failures from pod status, [`helm`] drives the
//! `helm` CLI. This module dispatches operations and reports steps.
//!
//! Output is sent back by [`logs`]: a job run's once it is over, and the pods of running
//! applications and databases followed from a successful rollout (`APPLY`, `RESTART`) to
//! `STOP`/`DELETE` or until the pod goes away. Like the process runtime, output outside a
//! command goes to the `events` of the most recent `execute` (or of
//! [`KubernetesRuntime::attach`]).
//!
//! Known gaps: followers live in the agent's memory: after an agent restart, pods are
//! followed again only from the next `APPLY`/`RESTART` of their workload. The Secret and
//! ConfigMap of a workload are labelled, not owned (owner references), and objects a
//! workload no longer needs (an Ingress of a port made private, a Secret once no variable is
//! secret) stay until the workload is deleted.

pub mod apply;
pub mod helm;
pub mod logs;
pub mod objects;
pub mod rollout;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use kube::Client;
use kube::api::{Api, ListParams};
use slipway_proto::agent::v1 as pb;
use tokio::time::Instant;

use self::objects::{Controller, Meta, PodShape};
use self::rollout::{Progress, Rolled};
use super::{BoxFuture, CommandFailure, Runtime, RuntimeEvent, RuntimeEvents, Unsupported};

/// Why the runtime could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// No kubeconfig or in-cluster configuration could be loaded.
    #[error("cannot configure the kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Defaults and knobs of the Kubernetes runtime (agent settings fill them in).
#[derive(Clone, Debug)]
pub struct KubernetesSettings {
    /// Time between two looks at a rollout, a job or pods going away.
    pub poll_interval: Duration,
    /// CPU request of an instance whose program sets none.
    pub default_cpu_millicores: u32,
    /// Memory request and limit of an instance whose program sets none.
    pub default_memory_mib: u32,
    /// `ingressClassName` of public Ingresses; `None` uses the cluster's default class.
    pub ingress_class: Option<String>,
    /// cert-manager `ClusterIssuer` annotated on Ingresses for their TLS certificates;
    /// `None` when the cluster provides certificates another way.
    pub cluster_issuer: Option<String>,
    /// The `helm` executable: a bare name is looked up on `PATH`.
    pub helm_binary: PathBuf,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            default_cpu_millicores: 100,
            default_memory_mib: 256,
            ingress_class: None,
            cluster_issuer: None,
            helm_binary: PathBuf::from("helm"),
        }
    }
}

/// The runtime of an agent running in (or pointed at) a Kubernetes cluster.
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    settings: Arc<KubernetesSettings>,
    followers: Arc<logs::Followers>,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A command's timeout when it sets none (command.proto).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// A job run's timeout when its policy sets none (workload.proto).
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(3600);

impl KubernetesRuntime {
    /// A runtime over `client` (tests pass one over a scripted fake API server).
    pub fn new(client: Client, settings: KubernetesSettings) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            followers: Arc::new(logs::Followers::default()),
        }
    }

    /// Where events outside any command (output of followed pods) are sent until the next
    /// command replaces it. `execute` also sets it, as the process runtime's does.
    pub fn attach(&self, events: RuntimeEvents) {
        self.followers.attach(events);
    }

    /// How many pods of a workload are followed right now (for tests and diagnostics).
    pub fn followed_pods(&self, namespace: &str, service_id: &str) -> usize {
        self.followers.following(namespace, service_id)
    }

    /// The client the runtime talks to the API server with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A runtime over the in-cluster service account, or the local kubeconfig.
    pub async fn from_environment(settings: KubernetesSettings) -> Result<Self, KubernetesError> {
        Ok(Self::new(Client::try_default().await?, settings))
    }

    async fn execute_command(
        &self,
        command: &pb::Command,
        events: RuntimeEvents,
    ) -> Result<(), CommandFailure> {
        let operation = command.operation();
        let deadline = Instant::now() + command_timeout(command);
        self.followers.attach(events.clone());
        if matches!(
            operation,
            pb::CommandOperation::Apply | pb::CommandOperation::RunJob
        ) {
            apply::apply_namespace(&self.client, &objects::namespace(command)).await?;
        }
        let runs = command.workloads.iter().map(|workload| {
            let reporter = Reporter::new(events.clone(), command, workload);
            async move {
                let result = self
                    .run_workload(command, workload, operation, deadline, &reporter)
                    .await;
                if let Err(failure) = &result {
                    reporter.failed(failure);
                }
                result.map_err(|failure| (workload.name.clone(), failure))
            }
        });
        let results = futures::future::join_all(runs).await;
        let failures: Vec<(String, CommandFailure)> =
            results.into_iter().filter_map(Result::err).collect();
        if let Some((name, first)) = failures.first() {
            let others = match failures.len() {
                1 => String::new(),
                n => format!(" (and {} more workloads failed)", n - 1),
            };
            return Err(CommandFailure::new(
                first.reason,
                clip(&format!("{name}: {}{others}", first.message)),
            ));
        }
        if operation == pb::CommandOperation::Delete && command.delete_namespace {
            apply::delete_namespace(&self.client, &command.namespace).await?;
        }
        Ok(())
    }

    async fn run_workload(
        &self,
        command: &pb::Command,
        workload: &pb::WorkloadSpec,
        operation: pb::CommandOperation,
        deadline: Instant,
        reporter: &Reporter,
    ) -> Result<(), CommandFailure> {
        let controller = objects::controller(workload.kind()).ok_or_else(|| {
            CommandFailure::new(
                pb::FailureReason::InvalidSpec,
                format!("{}: unknown service kind", workload.name),
            )
        })?;
        reporter.set_step(match (operation, controller) {
            (pb::CommandOperation::Apply, Controller::Helm) => "helm_upgrade",
            (pb::CommandOperation::Apply, _) => "apply",
            (pb::CommandOperation::Stop, _) => "scale_down",
            (pb::CommandOperation::Restart, _) => "restart",
            (pb::CommandOperation::Delete, _) => "delete",
            (pb::CommandOperation::RunJob, _) => "run_job",
            (pb::CommandOperation::Unspecified, _) => "command",
        });
        match operation {
            pb::CommandOperation::Apply => {
                self.apply_workload(command, workload, controller, deadline, reporter)
                    .await
            }
            pb::CommandOperation::Stop => {
                let result = self
                    .stop_workload(command, workload, controller, deadline, reporter)
                    .await;
                // After the pods went (their last output is read), or the stop failed.
                self.followers
                    .stop_workload(&command.namespace, &workload.service_id);
                result
            }
            pb::CommandOperation::Restart => {
                self.restart_workload(command, workload, controller, deadline, reporter)
                    .await
            }
            pb::CommandOperation::Delete => {
                let result = self
                    .delete_workload(command, workload, controller, deadline, reporter)
                    .await;
                self.followers
                    .stop_workload(&command.namespace, &workload.service_id);
                result
            }
            pb::CommandOperation::RunJob => {
                self.run_job(command, workload, deadline, reporter).await
            }
            pb::CommandOperation::Unspecified => Err(CommandFailure::new(
                pb::FailureReason::InvalidSpec,
                "command operation not set",
            )),
        }
    }

    async fn apply_workload(
        &self,
        command: &pb::Command,
        workload: &pb::WorkloadSpec,
        controller: Controller,
        deadline: Instant,
        reporter: &Reporter,
    ) -> Result<(), CommandFailure> {
        let meta = Meta::new(command, workload);
        let ns = command.namespace.as_str();
        let client = &self.client;
        let settings = &*self.settings;
        match (&workload.settings, controller) {
            (Some(pb::workload_spec::Settings::Application(app)), Controller::Deployment) => {
                reporter.started("apply", pb::RuntimeState::Starting);
                let program = app.program.clone().unwrap_or_default();
                let shape = PodShape {
                    ports: &app.ports,
                    probes: app.probes.as_ref(),
                    restart_policy: "Always",
                    extra_env: &[],
                    extra_mounts: &[],
                };
                let built = objects::program_objects(meta, &program, shape, settings)?;
                let ingresses = objects::ingresses(meta, &app.ports, settings)?;
                self.apply_config(ns, &built).await?;
                let replicas = app.replicas.unwrap_or_default();
                apply::apply(client, ns, &objects::deployment(meta, app, built.template)).await?;
                if let Some(service) = objects::service(meta, &app.ports) {
                    apply::apply(client, ns, &service).await?;
                }
                for ingress in &ingresses {
                    apply::apply(client, ns, ingress).await?;
                }
                match objects::autoscaler(meta, &replicas) {
                    Some(hpa) => {
                        apply::apply(client, ns, &hpa).await?;
                        // An autoscaler never scales up from 0 (a stopped workload): start
                        // it at its minimum; the autoscaler takes it from there.
                        self.scale_up_from_zero(ns, &workload.name, replicas.min.max(1))
                            .await?;
                    }
                    None => {
                        apply::delete_one::<HorizontalPodAutoscaler>(client, ns, &workload.name)
                            .await?
                    }
                }
                reporter.succeeded("apply", "objects applied", pb::RuntimeState::Starting);
                reporter.started("rollout", pb::RuntimeState::Starting);
                rollout::wait_rollout(
                    client,
                    ns,
                    workload,
                    Rolled::Deployment,
                    deadline,
                    settings.poll_interval,
                    reporter,
                )
                .await?;
                reporter.succeeded(
                    "rollout",
                    "every instance is ready",
                    pb::RuntimeState::Running,
                );
                self.followers.follow_workload(client, meta).await;
                Ok(())
            }
            (Some(pb::workload_spec::Settings::Database(db)), Controller::StatefulSet) => {
                reporter.started("apply", pb::RuntimeState::Starting);
                let program = db.program.clone().unwrap_or_default();
                let ports = objects::database_ports(db);
                let (mounts, env, probes) = objects::database_shape(db);
                let shape = PodShape {
                    ports: &ports,
                    probes: Some(&probes),
                    restart_policy: "Always",
                    extra_env: &env,
                    extra_mounts: &mounts,
                };
                let built = objects::program_objects(meta, &program, shape, settings)?;
                self.apply_config(ns, &built).await?;
                apply::apply(client, ns, &objects::stateful_set(meta, db, built.template)).await?;
                if let Some(service) = objects::service(meta, &ports) {
                    apply::apply(client, ns, &service).await?;
                }
                reporter.succeeded("apply", "objects applied", pb::RuntimeState::Starting);
                reporter.started("rollout", pb::RuntimeState::Starting);
                rollout::wait_rollout(
                    client,
                    ns,
                    workload,
                    Rolled::StatefulSet,
                    deadline,
                    settings.poll_interval,
                    reporter,
                )
                .await?;
                reporter.succeeded("rollout", "database is ready", pb::RuntimeState::Running);
                self.followers.follow_workload(client, meta).await;
                Ok(())
            }
            (Some(pb::workload_spec::Settings::CronJob(cron)), Controller::CronJob) => {
                reporter.started("apply", pb::RuntimeState::Starting);
                let program = cron.program.clone().unwrap_or_default();
                let built = objects::program_objects(meta, &program, job_shape(), settings)?;
                self.apply_config(ns, &built).await?;
                apply::apply(client, ns, &objects::cron_job(meta, cron, built.template)).await?;
                reporter.succeeded("apply", "cron job scheduled", pb::RuntimeState::Running);
                Ok(())
            }
            (Some(pb::workload_spec::Settings::Job(job)), Controller::Job) => {
                // A lifecycle job runs only on `RUN_JOB`; applying it stores its configuration.
                reporter.started("apply", pb::RuntimeState::Stopped);
                let program = job.program.clone().unwrap_or_default();
                let built = objects::program_objects(meta, &program, job_shape(), settings)?;
                self.apply_config(ns, &built).await?;
                reporter.succeeded(
                    "apply",
                    "job configuration applied",
                    pb::RuntimeState::Stopped,
                );
                Ok(())
            }
            (Some(pb::workload_spec::Settings::Helm(spec)), Controller::Helm) => {
                let helm = helm::find(&settings.helm_binary)?;
                reporter.started("helm_upgrade", pb::RuntimeState::Starting);
                let left = deadline.saturating_duration_since(Instant::now());
                helm::upgrade(&helm, ns, workload, spec, &command.command_id, left).await?;
                reporter.succeeded(
                    "helm_upgrade",
                    "release installed",
                    pb::RuntimeState::Running,
                );
                Ok(())
            }
            _ => Err(CommandFailure::new(
                pb::FailureReason::InvalidSpec,
                format!("{}: settings do not match the service kind", workload.name),
            )),
        }
    }

    async fn scale_up_from_zero(
        &self,
        ns: &str,
        name: &str,
        min: u32,
    ) -> Result<(), CommandFailure> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let current = api
            .get_opt(name)
            .await
            .map_err(|e| apply::api_failure(&format!("read deployment {name}"), e))?;
        if current.is_some_and(|d| d.spec.replicas == Some(0)) {
            let min = i32::try_from(min).unwrap_or(1);
            apply::scale::<Deployment>(&self.client, ns, name, min).await?;
        }
        Ok(())
    }

    /// Applies the Secret, ConfigMap and pull Secret before the controller, so the first
    /// pods find them.
    async fn apply_config(
        &self,
        ns: &str,
        built: &objects::ProgramObjects,
    ) -> Result<(), CommandFailure> {
        let (secret, config_map, pull_secret) = built.config_objects();
        if let Some(secret) = secret {
            apply::apply(&self.client, ns, secret).await?;
        }
        if let Some(config_map) = config_map {
            apply::apply(&self.client, ns, config_map).await?;
        }
        if let Some(pull_secret) = pull_secret {
            apply::apply(&self.client, ns, pull_secret).await?;
        }
        Ok(())
    }

    async fn stop_workload(
        &self,
        command: &pb::Command,
        workload: &pb::WorkloadSpec,
        controller: Controller,
        deadline: Instant,
        reporter: &Reporter,
    ) -> Result<(), CommandFailure> {
        let ns = command.namespace.as_str();
        let client = &self.client;
        let poll = self.settings.poll_interval;
        reporter.started("scale_down", pb::RuntimeState::Stopping);
        let selector = match controller {
            Controller::Deployment => {
                apply::scale::<Deployment>(client, ns, &workload.name, 0).await?;
                objects::service_selector(&workload.service_id)
            }
            Controller::StatefulSet => {
                apply::scale::<StatefulSet>(client, ns, &workload.name, 0).await?;
                objects::service_selector(&workload.service_id)
            }
            Controller::CronJob => {
                let patch = serde_json::json!({ "spec": { "suspend": true } });
                apply::merge::<CronJob>(client, ns, &workload.name, &patch).await?;
                reporter.succeeded(
                    "scale_down",
                    "cron job suspended",
                    pb::RuntimeState::Stopped,
                );
                return Ok(());
            }
            Controller::Job => {
                reporter.succeeded("scale_down", "nothing runs", pb::RuntimeState::Stopped);
                return Ok(());
            }
            Controller::Helm => {
                let selector = format!(
                    "{}={}",
                    objects::LABEL_HELM_INSTANCE,
                    helm::release_name(workload)
                );
                let params = ListParams::default().labels(&selector);
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
                for item in deployments
                    .list(&params)
                    .await
                    .map_err(|e| apply::api_failure("list deployments", e))?
                {
                    if let Some(name) = item.metadata.name {
                        apply::scale::<Deployment>(client, ns, &name, 0).await?;
                    }
                }
                let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                for item in sets
                    .list(&params)
                    .await
                    .map_err(|e| apply::api_failure("list statefulsets", e))?
                {
                    if let Some(name) = item.metadata.name {
                        apply::scale::<StatefulSet>(client, ns, &name, 0).await?;
                    }
                }
                selector
            }
        };
        rollout::wait_no_pods(client, ns, &selector, deadline, poll).await?;
        reporter.status(
            Progress::default(),
            pb::RuntimeState::Stopped,
            &[],
            "stopped",
        );
        reporter.succeeded("scale_down", "no instance runs", pb::RuntimeState::Stopped);
        Ok(())
    }

    async fn restart_workload(
        &self,
        command: &pb::Command,
        workload: &pb::WorkloadSpec,
        controller: Controller,
        deadline: Instant,
        reporter: &Reporter,
    ) -> Result<(), CommandFailure> {
        let ns = command.namespace.as_str();
        let kind = match controller {
            Controller::Deployment => Rolled::Deployment,
            Controller::StatefulSet => Rolled::StatefulSet,
            Controller::CronJob | Controller::Job | Controller::Helm => {
                reporter.succeeded(
                    "restart",
                    "nothing to restart",
                    pb::RuntimeState::Unspecified,
                );
                return Ok(());
            }
        };
        reporter.started("restart", pb::RuntimeState::Starting);
        let now = humantime_now();
        let patch = serde_json::json!({
            "spec": { "template": { "metadata": { "annotations": {
                objects::ANNOTATION_RESTARTED_AT: now
            } } } }
        });
        let found = match kind {
            Rolled::Deployment => {
                apply::merge::<Deployment>(&self.client, ns, &workload.name, &patch).await?
            }
            Rolled::StatefulSet => {
                apply::merge::<StatefulSet>(&self.client, ns, &workload.name, &patch).await?
            }
        };
        if !found {
            return Err(CommandFailure::new(
                pb::FailureReason::InvalidSpec,
                format!("{} is not deployed", workload.name),
            ));
        }
        rollout::wait_rollout(
            &self.client,
            ns,
            workload,
            kind,
            deadline,
            self.settings.poll_interval,
            reporter,
        )
        .await?;
        reporter.succeeded(
            "restart",
            "every instance restarted",
            pb::RuntimeState::Running,
        );
        self.followers
            .follow_workload(&self.client, Meta::new(command, workload))
            .await;
        Ok(())
    }

    async fn delete_workload(
        &self,
        command: &pb::Command,
        workload: &pb::WorkloadSpec,
        controller: Controller,
        deadline: Instant,
        reporter: &Reporter,
    ) -> Result<(), CommandFailure> {
        let ns = command.namespace.as_str();
        reporter.started("delete", pb::RuntimeState::Stopping);
        if controller == Controller::Helm {
            let helm = helm::find(&self.settings.helm_binary)?;
            let left = deadline.saturating_duration_since(Instant::now());
            helm::uninstall(&helm, ns, workload, left).await?;
        }
        let selector = objects::service_selector(&workload.service_id);
        apply::delete_workload_objects(&self.client, ns, &selector).await?;
        rollout::wait_no_pods(
            &self.client,
            ns,
            &selector,
            deadline,
            self.settings.poll_interval,
        )
        .await?;
        reporter.succeeded("delete", "every object deleted", pb::RuntimeState::Stopped);
        Ok(())
    }

    async fn run_job(
        &self,
        command: &pb::Command,
        workload: &pb::WorkloadSpec,
        deadline: Instant,
        reporter: &Reporter,
    ) -> Result<(), CommandFailure> {
        let (program, policy) = match &workload.settings {
            Some(pb::workload_spec::Settings::Job(job)) => (job.program.clone(), job.policy),
            Some(pb::workload_spec::Settings::CronJob(cron)) => (cron.program.clone(), cron.policy),
            _ => {
                return Err(CommandFailure::new(
                    pb::FailureReason::InvalidSpec,
                    format!("{}: only jobs and cron jobs can be run", workload.name),
                ));
            }
        };
        let meta = Meta::new(command, workload);
        let ns = command.namespace.as_str();
        reporter.started("run_job", pb::RuntimeState::Starting);
        let built = objects::program_objects(
            meta,
            &program.unwrap_or_default(),
            job_shape(),
            &self.settings,
        )?;
        self.apply_config(ns, &built).await?;
        let job = objects::job(meta, policy.as_ref(), built.template);
        let name = job.metadata.name.clone().unwrap_or_default();
        apply::apply(&self.client, ns, &job).await?;
        let outcome = rollout::wait_job(
            &self.client,
            ns,
            &name,
            deadline,
            self.settings.poll_interval,
        )
        .await;
        // The output is sent either way: it is what tells why a job failed.
        logs::send_job_logs(&self.client, meta, &name, &reporter.events).await;
        outcome?;
        reporter.succeeded("run_job", "job succeeded", pb::RuntimeState::Completed);
        Ok(())
    }

    async fn list_workloads(&self) -> Result<Vec<pb::WorkloadStatus>, CommandFailure> {
        let params = ListParams::default().labels(&format!(
            "{}={}",
            objects::LABEL_MANAGED_BY,
            objects::FIELD_MANAGER
        ));
        let now = Some(prost_types::Timestamp::from(SystemTime::now()));
        let mut statuses = Vec::new();
        let status = |labels: Option<&std::collections::BTreeMap<String, String>>,
                      annotations: Option<&std::collections::BTreeMap<String, String>>,
                      progress: Progress,
                      state: pb::RuntimeState| {
            let label = |key: &str| labels.and_then(|l| l.get(key)).cloned().unwrap_or_default();
            pb::WorkloadStatus {
                environment_id: label(objects::LABEL_ENVIRONMENT),
                service_id: label(objects::LABEL_SERVICE),
                runtime_state: state as i32,
                ready_instances: progress.ready,
                desired_instances: progress.desired,
                instances: Vec::new(),
                revision: annotations
                    .and_then(|a| a.get(objects::ANNOTATION_REVISION))
                    .cloned()
                    .unwrap_or_default(),
                message: String::new(),
                observe_time: now,
            }
        };
        let deployments: Api<Deployment> = Api::all(self.client.clone());
        for item in deployments
            .list(&params)
            .await
            .map_err(|e| apply::api_failure("list deployments", e))?
        {
            let progress = rollout::deployment_progress(&item);
            statuses.push(status(
                item.metadata.labels.as_ref(),
                item.metadata.annotations.as_ref(),
                progress,
                state_of(progress),
            ));
        }
        let sets: Api<StatefulSet> = Api::all(self.client.clone());
        for item in sets
            .list(&params)
            .await
            .map_err(|e| apply::api_failure("list statefulsets", e))?
        {
            let progress = rollout::stateful_set_progress(&item);
            statuses.push(status(
                item.metadata.labels.as_ref(),
                item.metadata.annotations.as_ref(),
                progress,
                state_of(progress),
            ));
        }
        let crons: Api<CronJob> = Api::all(self.client.clone());
        for item in crons
            .list(&params)
            .await
            .map_err(|e| apply::api_failure("list cronjobs", e))?
        {
            let suspended = item.spec.suspend.unwrap_or(false);
            let state = if suspended {
                pb::RuntimeState::Stopped
            } else {
                pb::RuntimeState::Running
            };
            statuses.push(status(
                item.metadata.labels.as_ref(),
                item.metadata.annotations.as_ref(),
                Progress::default(),
                state,
            ));
        }
        Ok(statuses)
    }
}

impl Runtime for KubernetesRuntime {
    fn kind(&self) -> pb::RuntimeKind {
        pb::RuntimeKind::Kubernetes
    }

    fn version(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.client.apiserver_version().await {
                Ok(info) => info.git_version,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the kubernetes server version");
                    "unknown".to_owned()
                }
            }
        })
    }

    fn check(&self, command: &pb::Command) -> Result<(), Unsupported> {
        for workload in &command.workloads {
            let program = match &workload.settings {
                Some(pb::workload_spec::Settings::Application(app)) => app.program.as_ref(),
                Some(pb::workload_spec::Settings::Database(db)) => db.program.as_ref(),
                Some(pb::workload_spec::Settings::CronJob(cron)) => cron.program.as_ref(),
                Some(pb::workload_spec::Settings::Job(job)) => job.program.as_ref(),
                Some(pb::workload_spec::Settings::Helm(_)) | None => None,
            };
            if let Some(pb::program::Artifact::Local(_)) = program.and_then(|p| p.artifact.as_ref())
            {
                return Err(Unsupported(format!(
                    "{}: the kubernetes runtime runs container images, not local artifacts",
                    workload.name
                )));
            }
        }
        Ok(())
    }

    fn execute<'a>(
        &'a self,
        command: &'a pb::Command,
        events: RuntimeEvents,
    ) -> BoxFuture<'a, Result<(), CommandFailure>> {
        Box::pin(self.execute_command(command, events))
    }

    fn workloads(&self) -> BoxFuture<'_, Result<Vec<pb::WorkloadStatus>, CommandFailure>> {
        Box::pin(self.list_workloads())
    }
}

/// Reports the steps and statuses of one workload of one command.
pub struct Reporter {
    events: RuntimeEvents,
    service_id: String,
    environment_id: String,
    revision: String,
    /// The step under way, which a failure is reported on.
    current: std::sync::Mutex<String>,
}

impl Reporter {
    fn new(events: RuntimeEvents, command: &pb::Command, workload: &pb::WorkloadSpec) -> Self {
        Self {
            events,
            service_id: workload.service_id.clone(),
            environment_id: command.environment_id.clone(),
            revision: workload.revision.clone(),
            current: std::sync::Mutex::new("command".to_owned()),
        }
    }

    fn step(
        &self,
        step: &str,
        status: pb::StepStatus,
        message: &str,
        state: pb::RuntimeState,
        reason: pb::FailureReason,
    ) {
        // A closed channel means the session is gone; the command's result still returns.
        let _ = self.events.send(RuntimeEvent::Step(pb::StepReport {
            service_id: self.service_id.clone(),
            step: step.to_owned(),
            status: status as i32,
            message: clip(message),
            runtime_state: state as i32,
            failure_reason: reason as i32,
            time: Some(prost_types::Timestamp::from(SystemTime::now())),
            ..pb::StepReport::default()
        }));
    }

    /// Names the step a failure from now on is reported on.
    fn set_step(&self, step: &str) {
        if let Ok(mut current) = self.current.lock() {
            step.clone_into(&mut current);
        }
    }

    fn started(&self, step: &str, state: pb::RuntimeState) {
        self.set_step(step);
        self.step(
            step,
            pb::StepStatus::Started,
            "",
            state,
            pb::FailureReason::Unspecified,
        );
    }

    fn progress(&self, step: &str, message: &str, state: pb::RuntimeState) {
        self.step(
            step,
            pb::StepStatus::Progress,
            message,
            state,
            pb::FailureReason::Unspecified,
        );
    }

    fn succeeded(&self, step: &str, message: &str, state: pb::RuntimeState) {
        self.step(
            step,
            pb::StepStatus::Succeeded,
            message,
            state,
            pb::FailureReason::Unspecified,
        );
    }

    fn failed(&self, failure: &CommandFailure) {
        let step = self
            .current
            .lock()
            .map(|current| current.clone())
            .unwrap_or_else(|_| "command".to_owned());
        self.step(
            &step,
            pb::StepStatus::Failed,
            &failure.message,
            pb::RuntimeState::Error,
            failure.reason,
        );
    }

    /// Sends the workload's current status.
    fn status(
        &self,
        progress: Progress,
        state: pb::RuntimeState,
        pods: &[k8s_openapi::api::core::v1::Pod],
        message: &str,
    ) {
        let _ = self.events.send(RuntimeEvent::Status(pb::WorkloadStatus {
            environment_id: self.environment_id.clone(),
            service_id: self.service_id.clone(),
            runtime_state: state as i32,
            ready_instances: progress.ready,
            desired_instances: progress.desired,
            instances: rollout::instances(pods),
            revision: self.revision.clone(),
            message: clip(message),
            observe_time: Some(prost_types::Timestamp::from(SystemTime::now())),
        }));
    }
}

/// A job's pod: never restarted in place (retries are the Job's `backoffLimit`).
fn job_shape() -> PodShape<'static> {
    PodShape {
        ports: &[],
        probes: None,
        restart_policy: "Never",
        extra_env: &[],
        extra_mounts: &[],
    }
}

fn state_of(progress: Progress) -> pb::RuntimeState {
    if progress.desired == 0 {
        pb::RuntimeState::Stopped
    } else if progress.done {
        pb::RuntimeState::Running
    } else {
        pb::RuntimeState::Starting
    }
}

/// The command's timeout: its own, else 10 minutes, else for job runs the longest job
/// policy timeout (command.proto).
pub fn command_timeout(command: &pb::Command) -> Duration {
    if let Some(timeout) = command.timeout {
        return Duration::new(
            u64::try_from(timeout.seconds).unwrap_or(0),
            u32::try_from(timeout.nanos).unwrap_or(0),
        );
    }
    if command.operation() == pb::CommandOperation::RunJob {
        return command
            .workloads
            .iter()
            .filter_map(|w| match &w.settings {
                Some(pb::workload_spec::Settings::Job(job)) => Some(job.policy),
                Some(pb::workload_spec::Settings::CronJob(cron)) => Some(cron.policy),
                _ => None,
            })
            .map(|policy| {
                policy
                    .and_then(|p| p.timeout)
                    .map(|t| Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0)))
                    .unwrap_or(DEFAULT_JOB_TIMEOUT)
            })
            .max()
            .unwrap_or(DEFAULT_JOB_TIMEOUT);
    }
    DEFAULT_TIMEOUT
}

/// Seconds since the epoch, for the restart annotation (its value only has to change).
fn humantime_now() -> String {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_default()
}

/// Lowercase and at most 1024 characters, as report messages must be (report.proto).
pub(crate) fn clip(message: &str) -> String {
    message.to_lowercase().chars().take(1024).collect()
}
