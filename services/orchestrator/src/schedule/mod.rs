//! Deployment rules run: the scheduler starts and stops environments when their rule says.
//!
//! Catalog owns the rules and announces every change (`catalog.deployment_rule.*`); the
//! scheduler keeps a copy ([`store`]), reloading a rule from catalog on each
//! announcement ([`sync`]). Every tick it computes each rule's latest transition
//! ([`rules`]) and fires it once:
//!
//! - each environment the rule covers gets a deployment queued through the same store
//!   insert and `deploy.deployment.queued` event as `DeployEnvironment`/`StopEnvironment`,
//!   keyed by a request id derived from (rule, transition, environment): replicas that
//!   fire the same transition at once queue one deployment, whatever the backend;
//! - an auto-delete rule's stop deletes instead: a delete deployment, then the
//!   environment leaves the catalog;
//! - then the transition is marked fired (a conditional insert), so later ticks skip it.
//!
//! A transition missed while no orchestrator ran is the latest one when the scheduler
//! comes back, so it fires then, once; the ones it superseded never fire. Production
//! environments are never touched.

pub mod clock;
pub mod rules;
pub mod store;
pub mod sync;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use slipway_events::EventBus;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::deploy::v1 as pb;
use slipway_proto::events::v1 as ev;
use slipway_service::AbortOnDrop;

pub use clock::{Clock, SystemClock, TestClock};
pub use rules::{Schedule, Transition};
pub use store::ScheduleStore;

use crate::catalog::CatalogClient;
use crate::engine::Engine;
use crate::engine::status::{self, Action};
use crate::store::{NewDeployment, Phase, RequestKey, Store, StoreError, new_id};

/// What a tick or a firing failed with; the transition is tried again next tick.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// A transition fired by one tick, with the deployments this replica queued for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    pub rule_id: String,
    pub transition: Transition,
    pub at: DateTime<Utc>,
    pub deployment_ids: Vec<String>,
}

/// The scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    store: ScheduleStore,
    deployments: Store,
    bus: Arc<dyn EventBus>,
    catalog: CatalogClient,
    clock: Arc<dyn Clock>,
    /// Woken after queuing, so the deployment starts without waiting for its poll.
    engine: Option<Engine>,
}

impl Scheduler {
    pub fn new(
        db: slipway_db::DatabaseConnection,
        bus: Arc<dyn EventBus>,
        catalog: CatalogClient,
        clock: Arc<dyn Clock>,
        engine: Option<Engine>,
    ) -> Self {
        Self {
            store: ScheduleStore::new(db.clone()),
            deployments: Store::new(db),
            bus,
            catalog,
            clock,
            engine,
        }
    }

    pub fn store(&self) -> &ScheduleStore {
        &self.store
    }

    /// Follows catalog's rule announcements and ticks every `every` until dropped.
    pub async fn run(self, every: Duration) {
        let follower = tokio::spawn(sync::follow(
            Arc::clone(&self.bus),
            self.store.clone(),
            self.catalog.clone(),
        ));
        // The follower ends with this task (aborted on drop of the guard).
        let _guard = AbortOnDrop::new(follower);
        loop {
            if let Err(error) = self.tick().await {
                tracing::warn!(%error, "scheduler tick failed; retrying next tick");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Fires every rule's latest transition not fired yet; returns what it fired.
    pub async fn tick(&self) -> Result<Vec<Fired>, ScheduleError> {
        let now = self.clock.now();
        let rules = self.store.rules().await?;
        // An environment with its own rule (enabled or not) follows only that rule.
        let own_rules: HashSet<String> = rules
            .iter()
            .filter_map(|rule| match &rule.target {
                Some(cat::deployment_rule::Target::EnvironmentId(id)) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let mut fired = Vec::new();
        for rule in rules.iter().filter(|rule| rule.enabled) {
            let schedule = match Schedule::from_rule(rule) {
                Ok(schedule) => schedule,
                Err(error) => {
                    tracing::warn!(%error, rule = %rule.id, "deployment rule skipped");
                    continue;
                }
            };
            let Some((transition, at)) = schedule.latest_transition(now) else {
                continue;
            };
            if self.store.fired(&rule.id, at, transition).await? {
                continue;
            }
            match self.fire(rule, transition, at, &own_rules, &rules).await {
                Ok(deployment_ids) => {
                    self.store.mark_fired(&rule.id, at, transition).await?;
                    tracing::info!(rule = %rule.id, transition = transition.as_str(), %at, queued = deployment_ids.len(), "deployment rule fired");
                    fired.push(Fired {
                        rule_id: rule.id.clone(),
                        transition,
                        at,
                        deployment_ids,
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, rule = %rule.id, "deployment rule not fired; retrying next tick");
                }
            }
        }
        Ok(fired)
    }

    /// Queues the transition's action on every environment `rule` acts on: its own
    /// environment, or the project's environments it covers where no environment rule and
    /// no project rule of higher priority (`all` holds them) takes precedence.
    async fn fire(
        &self,
        rule: &cat::DeploymentRule,
        transition: Transition,
        at: DateTime<Utc>,
        own_rules: &HashSet<String>,
        all: &[cat::DeploymentRule],
    ) -> Result<Vec<String>, ScheduleError> {
        let targets: Vec<String> = match &rule.target {
            Some(cat::deployment_rule::Target::EnvironmentId(id)) => vec![id.clone()],
            Some(cat::deployment_rule::Target::ProjectId(project)) => {
                let environments = match self.catalog.project_environments(project).await {
                    Ok(environments) => environments,
                    Err(error) if error.0.code() == tonic::Code::NotFound => Vec::new(),
                    Err(error) => return Err(error.into()),
                };
                environments
                    .into_iter()
                    .filter(|env| {
                        !own_rules.contains(&env.id)
                            && rules::acting_project_rule(all, project, env)
                                .is_some_and(|acting| acting.id == rule.id)
                    })
                    .map(|env| env.id)
                    .collect()
            }
            None => Vec::new(),
        };
        let mut queued = Vec::new();
        for environment_id in targets {
            if let Some(id) = self.queue(rule, transition, at, &environment_id).await? {
                queued.push(id);
            }
        }
        Ok(queued)
    }

    /// Queues one environment's deployment; `None` when there is nothing to do (gone,
    /// production, no services, or nothing deployed to stop) or another replica queued it.
    async fn queue(
        &self,
        rule: &cat::DeploymentRule,
        transition: Transition,
        at: DateTime<Utc>,
        environment_id: &str,
    ) -> Result<Option<String>, ScheduleError> {
        let snapshot = match self
            .catalog
            .environment_snapshot(cat::GetEnvironmentSnapshotRequest {
                environment_id: environment_id.to_owned(),
                service_ids: Vec::new(),
            })
            .await
        {
            Ok(response) => response.snapshot.unwrap_or_default(),
            Err(error) if error.0.code() == tonic::Code::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let Some(environment) = snapshot.environment.clone() else {
            return Ok(None);
        };
        if environment.mode == EnvironmentMode::Production as i32
            || environment.organization_id != rule.organization_id
        {
            return Ok(None);
        }
        let action = match transition {
            Transition::Start => Action::Deploy,
            Transition::Stop if rule.auto_delete => Action::Delete,
            Transition::Stop => Action::Stop,
        };
        if action == Action::Delete {
            return self.delete(rule, transition, at, snapshot).await;
        }
        if snapshot.services.is_empty()
            || (action == Action::Stop && !self.has_something_to_stop(environment_id).await?)
        {
            return Ok(None);
        }
        self.enqueue(rule, transition, at, &environment, action, None)
            .await
    }

    /// An auto-delete rule's stop: what the environment runs is deleted from its cluster
    /// (the plan frozen now, as the environment is about to leave the catalog), then the
    /// environment is deleted from the catalog. Every replica that fires the transition
    /// deletes (a repeat is a no-op), so a replica that dies between the two steps leaves
    /// the second to the next tick.
    async fn delete(
        &self,
        rule: &cat::DeploymentRule,
        transition: Transition,
        at: DateTime<Utc>,
        snapshot: cat::EnvironmentSnapshot,
    ) -> Result<Option<String>, ScheduleError> {
        let environment = snapshot.environment.clone().unwrap_or_default();
        let queued = if snapshot.services.is_empty() {
            None
        } else {
            let plan = snapshot.encode_to_vec();
            self.enqueue(
                rule,
                transition,
                at,
                &environment,
                Action::Delete,
                Some(plan),
            )
            .await?
        };
        match self.catalog.delete_environment(&environment.id, "").await {
            Ok(()) => {
                tracing::info!(rule = %rule.id, environment = %environment.id, "environment deleted by its deployment rule");
            }
            Err(error) if error.0.code() == tonic::Code::NotFound => {}
            Err(error) => return Err(error.into()),
        }
        Ok(queued)
    }

    /// Queues `action` on `environment` for the rule's transition, once whatever the
    /// replica; None when another replica queued it already.
    async fn enqueue(
        &self,
        rule: &cat::DeploymentRule,
        transition: Transition,
        at: DateTime<Utc>,
        environment: &cat::Environment,
        action: Action,
        plan: Option<Vec<u8>>,
    ) -> Result<Option<String>, ScheduleError> {
        let environment_id = environment.id.as_str();
        let new = NewDeployment {
            id: new_id(),
            organization_id: environment.organization_id.clone(),
            project_id: environment.project_id.clone(),
            environment_id: environment.id.clone(),
            environment_mode: environment.mode,
            action: action.proto() as i32,
            status: action.queued() as i32,
            trigger: pb::DeploymentTrigger::DeploymentRule as i32,
            triggered_by: rule.id.clone(),
            plan,
            ..NewDeployment::default()
        };
        let key = RequestKey {
            organization_id: environment.organization_id.clone(),
            method: "DeploymentRule",
            request_id: firing_key(&rule.id, transition, at, environment_id),
        };
        let (row, created) = self.deployments.insert_deployment(new, Some(key)).await?;
        if !created {
            return Ok(None);
        }
        let actor = status::actor(ev::ActorKind::Service, "scheduler", "deployment rules");
        status::queued(&self.bus, actor, &row).await;
        if let Some(engine) = &self.engine {
            engine.wake();
        }
        Ok(Some(row.id))
    }
}

impl Scheduler {
    /// Whether a stop would act: something is deployed, or a deployment waiting or
    /// running will deploy something (a start fired while no engine ran).
    async fn has_something_to_stop(&self, environment_id: &str) -> Result<bool, StoreError> {
        let states = self.deployments.service_states(environment_id).await?;
        if states
            .iter()
            .any(|s| !s.deleted && !s.catalog_revision.is_empty())
        {
            return Ok(true);
        }
        for phase in [Phase::Queued, Phase::Running] {
            if self
                .deployments
                .in_environment(environment_id, phase)
                .await?
                .iter()
                .any(|row| row.action == Action::Deploy.proto() as i32)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The request id of one transition on one environment: the same on every replica.
fn firing_key(
    rule_id: &str,
    transition: Transition,
    at: DateTime<Utc>,
    environment_id: &str,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule_id.as_bytes());
    hasher.update([0]);
    hasher.update(transition.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(at.timestamp().to_string().as_bytes());
    hasher.update([0]);
    hasher.update(environment_id.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
