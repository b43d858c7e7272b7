//! This service's tables and every query on them.
//!
//! A deployment is one row whose typed columns hold what the queue, the claim and the
//! listings search on (environment, phase, lease, status), and whose frozen plan is the
//! catalog snapshot's protobuf encoding: the plan is never searched, only replayed, and it
//! must stay byte-for-byte what was frozen so a resumed or rolled-back deployment applies
//! exactly the same thing. Stages are rows of their own because the engine updates them one
//! by one, and a stage's `command_id` must be stored before its command is published.
//!
//! Getters take an id alone and return the row with its `organization_id`: the API checks
//! that the caller may see that organization and answers `NOT_FOUND` otherwise.

pub mod m0003_notifications;
pub mod m0004_schedule;
pub mod m0005_previews;
pub mod migration;

use chrono::{DateTime, Duration as TimeDelta, SubsecRound as _, Utc};
use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::sea_query::{
    Alias, Cond, Expr, ExprTrait as _, OnConflict, Order, Query, SelectStatement,
};
use slipway_db::sea_orm::sea_query::{DynIden, IntoIden as _};
use slipway_db::sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbErr, QueryResult, TransactionTrait as _,
};
use slipway_db::sea_orm_migration::{MigrationTrait, MigratorTrait};

use migration::{
    BuildResults as B, DeploymentRequestIds as Q, DeploymentServices as DS, DeploymentStages as S,
    Deployments as D, ServiceStates as SS, StepReports as R,
};

/// The migrations of `slipway-orchestrator`, applied at start-up.
///
/// Each service keeps its own migrations table, so services can share one database (as
/// `slipway dev` does) without seeing each other's history.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(migration::CreateDeploySchema),
            Box::new(m0003_notifications::CreateNotifications),
            Box::new(m0004_schedule::CreateSchedule),
            Box::new(m0005_previews::CreatePreviews),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_orchestrator").into_iden()
    }
}

/// What a store operation failed with. Messages are lowercase and carry no SQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (`NOT_FOUND`).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database could not be reached (`UNAVAILABLE`, worth retrying).
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// Anything else: a bug or a corrupt row (`INTERNAL`).
    #[error("internal database error")]
    Internal(#[source] DbErr),
}

impl StoreError {
    /// Classifies a database error: worth retrying (`Unavailable`) or not (`Internal`).
    pub(crate) fn db(err: DbErr) -> Self {
        if slipway_db::is_unavailable(&err) {
            Self::Unavailable(err)
        } else {
            Self::Internal(err)
        }
    }
}

/// Results of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// Runs `select` and reads every row it returns with `read`; the caller maps the error
/// into its own store's kind.
pub(crate) async fn query_rows<T>(
    db: &impl ConnectionTrait,
    select: &SelectStatement,
    read: fn(&QueryResult) -> Result<T, DbErr>,
) -> Result<Vec<T>, DbErr> {
    db.query_all(select).await?.iter().map(read).collect()
}

/// Where a deployment is, as the queue sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waits in its environment's queue.
    Queued,
    /// Claimed by an engine (or was, and its lease may have expired).
    Running,
    /// Final status reached.
    Done,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Done => "done",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(Phase::Queued),
            "running" => Some(Phase::Running),
            "done" => Some(Phase::Done),
            _ => None,
        }
    }
}

/// One stored deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentRow {
    pub id: String,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    /// `slipway.common.v1.EnvironmentMode`, for authorization and events.
    pub environment_mode: i32,
    /// Empty for a whole-environment deployment.
    pub service_id: String,
    /// Empty until the plan is frozen.
    pub cluster_id: String,
    pub action: i32,
    pub status: i32,
    pub phase: Phase,
    pub trigger: i32,
    pub triggered_by: String,
    pub rolled_back_from: String,
    pub git_commit_sha: String,
    pub image_tag: String,
    /// The frozen `EnvironmentSnapshot`, secrets included; `None` until frozen.
    pub plan: Option<Vec<u8>>,
    /// A `slipway.deploy.v1.Deployment` holding only `service_statuses`.
    pub service_statuses: Vec<u8>,
    pub error_message: String,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expire_time: Option<DateTime<Utc>>,
    pub etag: String,
    pub create_time: DateTime<Utc>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub update_time: DateTime<Utc>,
}

const DEPLOYMENT_COLUMNS: [D; 26] = [
    D::Id,
    D::OrganizationId,
    D::ProjectId,
    D::EnvironmentId,
    D::EnvironmentMode,
    D::ServiceId,
    D::ClusterId,
    D::Action,
    D::Status,
    D::Phase,
    D::Trigger,
    D::TriggeredBy,
    D::RolledBackFrom,
    D::GitCommitSha,
    D::ImageTag,
    D::Plan,
    D::ServiceStatuses,
    D::ErrorMessage,
    D::CancelRequested,
    D::LeaseOwner,
    D::LeaseExpireTime,
    D::Etag,
    D::CreateTime,
    D::StartTime,
    D::EndTime,
    D::UpdateTime,
];

impl DeploymentRow {
    fn from_result(r: &QueryResult) -> Result<Self, DbErr> {
        let phase: String = r.try_get("", "phase")?;
        Ok(Self {
            id: r.try_get("", "id")?,
            organization_id: r.try_get("", "organization_id")?,
            project_id: r.try_get("", "project_id")?,
            environment_id: r.try_get("", "environment_id")?,
            environment_mode: r.try_get("", "environment_mode")?,
            service_id: r.try_get("", "service_id")?,
            cluster_id: r.try_get("", "cluster_id")?,
            action: r.try_get("", "action")?,
            status: r.try_get("", "status")?,
            phase: Phase::parse(&phase)
                .ok_or_else(|| DbErr::Custom(format!("unknown phase {phase}")))?,
            trigger: r.try_get("", "trigger")?,
            triggered_by: r.try_get("", "triggered_by")?,
            rolled_back_from: r.try_get("", "rolled_back_from")?,
            git_commit_sha: r.try_get("", "git_commit_sha")?,
            image_tag: r.try_get("", "image_tag")?,
            plan: r.try_get("", "plan")?,
            service_statuses: r.try_get("", "service_statuses")?,
            error_message: r.try_get("", "error_message")?,
            cancel_requested: r.try_get("", "cancel_requested")?,
            lease_owner: r.try_get("", "lease_owner")?,
            lease_expire_time: r.try_get("", "lease_expire_time")?,
            etag: r.try_get("", "etag")?,
            create_time: r.try_get("", "create_time")?,
            start_time: r.try_get("", "start_time")?,
            end_time: r.try_get("", "end_time")?,
            update_time: r.try_get("", "update_time")?,
        })
    }
}

/// A deployment to queue; the store sets the phase, etag and times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewDeployment {
    pub id: String,
    pub organization_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub environment_mode: i32,
    pub service_id: String,
    pub action: i32,
    /// The queued status of `action`.
    pub status: i32,
    pub trigger: i32,
    pub triggered_by: String,
    pub rolled_back_from: String,
    pub git_commit_sha: String,
    pub image_tag: String,
    /// Set for a rollback: the plan of the deployment rolled back to.
    pub plan: Option<Vec<u8>>,
    pub cluster_id: String,
}

/// The idempotency key of an action: a repeat returns the deployment the first created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    pub organization_id: String,
    pub method: &'static str,
    pub request_id: String,
}

/// One stage (one command) of a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageRow {
    pub deployment_id: String,
    pub index: i32,
    /// `slipway.deploy.v1.StageKind`.
    pub kind: i32,
    /// `slipway.agent.v1.CommandOperation`.
    pub operation: i32,
    /// `slipway.deploy.v1.StageStatus`.
    pub status: i32,
    /// Set, and stored, before the command is published.
    pub command_id: Option<String>,
    /// The services of the stage, comma-separated, in order.
    pub service_ids: Vec<String>,
    pub message: String,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

impl StageRow {
    fn from_result(r: &QueryResult) -> Result<Self, DbErr> {
        let ids: String = r.try_get("", "service_ids")?;
        Ok(Self {
            deployment_id: r.try_get("", "deployment_id")?,
            index: r.try_get("", "idx")?,
            kind: r.try_get("", "kind")?,
            operation: r.try_get("", "operation")?,
            status: r.try_get("", "status")?,
            command_id: r.try_get("", "command_id")?,
            service_ids: ids
                .split(',')
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect(),
            message: r.try_get("", "message")?,
            start_time: r.try_get("", "start_time")?,
            end_time: r.try_get("", "end_time")?,
        })
    }
}

/// One step report of an agent, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReportRow {
    pub command_id: String,
    /// Empty for a command-level report.
    pub service_id: String,
    pub sequence: i64,
    pub deployment_id: String,
    pub step: String,
    /// `slipway.agent.v1.StepStatus`.
    pub status: i32,
    pub message: String,
    pub runtime_state: i32,
    pub failure_reason: i32,
    pub time: DateTime<Utc>,
}

impl StepReportRow {
    fn from_result(r: &QueryResult) -> Result<Self, DbErr> {
        Ok(Self {
            command_id: r.try_get("", "command_id")?,
            service_id: r.try_get("", "service_id")?,
            sequence: r.try_get("", "sequence")?,
            deployment_id: r.try_get("", "deployment_id")?,
            step: r.try_get("", "step")?,
            status: r.try_get("", "status")?,
            message: r.try_get("", "message")?,
            runtime_state: r.try_get("", "runtime_state")?,
            failure_reason: r.try_get("", "failure_reason")?,
            time: r.try_get("", "time")?,
        })
    }
}

/// What the orchestrator knows of one service of an environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStateRow {
    pub environment_id: String,
    pub service_id: String,
    pub organization_id: String,
    pub service_name: String,
    pub service_kind: i32,
    /// Hash of the catalog configuration last deployed; empty when never deployed.
    pub catalog_revision: String,
    pub last_deployment_id: String,
    pub last_deployment_status: i32,
    /// `slipway.deploy.v1.RuntimeState`.
    pub runtime_state: i32,
    pub ready_instances: i32,
    pub desired_instances: i32,
    pub image: String,
    pub git_commit_sha: String,
    pub message: String,
    /// Its runtime resources were deleted.
    pub deleted: bool,
    pub observe_time: Option<DateTime<Utc>>,
}

impl ServiceStateRow {
    fn from_result(r: &QueryResult) -> Result<Self, DbErr> {
        Ok(Self {
            environment_id: r.try_get("", "environment_id")?,
            service_id: r.try_get("", "service_id")?,
            organization_id: r.try_get("", "organization_id")?,
            service_name: r.try_get("", "service_name")?,
            service_kind: r.try_get("", "service_kind")?,
            catalog_revision: r.try_get("", "catalog_revision")?,
            last_deployment_id: r.try_get("", "last_deployment_id")?,
            last_deployment_status: r.try_get("", "last_deployment_status")?,
            runtime_state: r.try_get("", "runtime_state")?,
            ready_instances: r.try_get("", "ready_instances")?,
            desired_instances: r.try_get("", "desired_instances")?,
            image: r.try_get("", "image")?,
            git_commit_sha: r.try_get("", "git_commit_sha")?,
            message: r.try_get("", "message")?,
            deleted: r.try_get("", "deleted")?,
            observe_time: r.try_get("", "observe_time")?,
        })
    }
}

/// A build's outcome, as the build-runner reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResultRow {
    pub job_id: String,
    pub deployment_id: String,
    pub service_id: String,
    /// `slipway.build.v1.BuildOutcome`.
    pub outcome: i32,
    pub image_reference: String,
    pub local_artifact_path: String,
    pub message: String,
}

/// Which deployments a listing returns; always one organization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    pub organization_id: String,
    pub project_id: Option<String>,
    pub environment_id: Option<String>,
    /// Deployments targeting the service, or whose plan included it.
    pub service_id: Option<String>,
    pub statuses: Vec<i32>,
}

/// The orchestrator's tables on PostgreSQL or SQLite. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

/// Now, truncated to whole microseconds: the precision both backends keep.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new id: a UUIDv7, so ids sort by creation time (the queue's order).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn new_etag() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn select_deployments() -> SelectStatement {
    Query::select()
        .columns(DEPLOYMENT_COLUMNS)
        .from(D::Table)
        .to_owned()
}

fn lease_until(ttl: std::time::Duration) -> DateTime<Utc> {
    now() + TimeDelta::from_std(ttl).unwrap_or(TimeDelta::seconds(30))
}

impl Store {
    /// A store on a connection whose database has [`Migrator`]'s migrations applied.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The connection the store runs on.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn begin(&self) -> StoreResult<DatabaseTransaction> {
        self.db.begin().await.map_err(StoreError::db)
    }

    async fn query_deployments(
        &self,
        statement: SelectStatement,
    ) -> StoreResult<Vec<DeploymentRow>> {
        query_rows(&self.db, &statement, DeploymentRow::from_result)
            .await
            .map_err(StoreError::db)
    }

    /// Queues `new`. With a `request` key already recorded, queues nothing and returns the
    /// deployment the first request created (`Ok((row, false))`). The key is recorded in
    /// the insert's transaction, so two concurrent repeats queue one deployment.
    pub async fn insert_deployment(
        &self,
        new: NewDeployment,
        request: Option<RequestKey>,
    ) -> StoreResult<(DeploymentRow, bool)> {
        let txn = self.begin().await?;
        if let Some(key) = &request {
            let record = record_request(key, &new.id);
            if let Err(err) = txn.execute(&record).await {
                drop(txn);
                if slipway_db::is_unique_violation(&err) {
                    let id = self.replay(key).await?;
                    return self.deployment(&id).await.map(|row| (row, false));
                }
                return Err(StoreError::db(err));
            }
        }
        let time = now();
        let row = DeploymentRow {
            id: new.id,
            organization_id: new.organization_id,
            project_id: new.project_id,
            environment_id: new.environment_id,
            environment_mode: new.environment_mode,
            service_id: new.service_id,
            cluster_id: new.cluster_id,
            action: new.action,
            status: new.status,
            phase: Phase::Queued,
            trigger: new.trigger,
            triggered_by: new.triggered_by,
            rolled_back_from: new.rolled_back_from,
            git_commit_sha: new.git_commit_sha,
            image_tag: new.image_tag,
            plan: new.plan,
            service_statuses: Vec::new(),
            error_message: String::new(),
            cancel_requested: false,
            lease_owner: None,
            lease_expire_time: None,
            etag: new_etag(),
            create_time: time,
            start_time: None,
            end_time: None,
            update_time: time,
        };
        let statement = Query::insert()
            .into_table(D::Table)
            .columns(DEPLOYMENT_COLUMNS)
            .values_panic([
                row.id.clone().into(),
                row.organization_id.clone().into(),
                row.project_id.clone().into(),
                row.environment_id.clone().into(),
                row.environment_mode.into(),
                row.service_id.clone().into(),
                row.cluster_id.clone().into(),
                row.action.into(),
                row.status.into(),
                row.phase.as_str().into(),
                row.trigger.into(),
                row.triggered_by.clone().into(),
                row.rolled_back_from.clone().into(),
                row.git_commit_sha.clone().into(),
                row.image_tag.clone().into(),
                row.plan.clone().into(),
                row.service_statuses.clone().into(),
                row.error_message.clone().into(),
                row.cancel_requested.into(),
                row.lease_owner.clone().into(),
                row.lease_expire_time.into(),
                row.etag.clone().into(),
                row.create_time.into(),
                row.start_time.into(),
                row.end_time.into(),
                row.update_time.into(),
            ])
            .to_owned();
        txn.execute(&statement).await.map_err(StoreError::db)?;
        txn.commit().await.map_err(StoreError::db)?;
        Ok((row, true))
    }

    async fn replay(&self, key: &RequestKey) -> StoreResult<String> {
        let statement = recorded_request(key);
        let result = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
            .ok_or(StoreError::NotFound("deployment"))?;
        result.try_get("", "resource_id").map_err(StoreError::db)
    }

    /// The deployment with `id`, whatever its organization.
    pub async fn deployment(&self, id: &str) -> StoreResult<DeploymentRow> {
        let statement = select_deployments()
            .and_where(Expr::col(D::Id).eq(id))
            .to_owned();
        self.query_deployments(statement)
            .await?
            .pop()
            .ok_or(StoreError::NotFound("deployment"))
    }

    /// A page of deployments, newest first, strictly older than `before` (an id).
    pub async fn list_deployments(
        &self,
        filter: &DeploymentFilter,
        size: u64,
        before: Option<&str>,
    ) -> StoreResult<(Vec<DeploymentRow>, Option<String>)> {
        let mut cond =
            Cond::all().add(Expr::col(D::OrganizationId).eq(filter.organization_id.as_str()));
        if let Some(project) = &filter.project_id {
            cond = cond.add(Expr::col(D::ProjectId).eq(project.as_str()));
        }
        if let Some(environment) = &filter.environment_id {
            cond = cond.add(Expr::col(D::EnvironmentId).eq(environment.as_str()));
        }
        if let Some(service) = &filter.service_id {
            cond = cond.add(
                Cond::any()
                    .add(Expr::col(D::ServiceId).eq(service.as_str()))
                    .add(
                        Expr::col(D::Id).in_subquery(
                            Query::select()
                                .column(DS::DeploymentId)
                                .from(DS::Table)
                                .and_where(Expr::col(DS::ServiceId).eq(service.as_str()))
                                .to_owned(),
                        ),
                    ),
            );
        }
        if !filter.statuses.is_empty() {
            cond = cond.add(Expr::col(D::Status).is_in(filter.statuses.iter().copied()));
        }
        if let Some(before) = before {
            cond = cond.add(Expr::col(D::Id).lt(before));
        }
        let statement = select_deployments()
            .cond_where(cond)
            .order_by(D::Id, Order::Desc)
            .limit(size.saturating_add(1))
            .to_owned();
        let mut rows = self.query_deployments(statement).await?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|row| row.id.clone())
        } else {
            None
        };
        Ok((rows, next))
    }

    /// The deployments of an environment in `phase`, oldest first.
    pub async fn in_environment(
        &self,
        environment_id: &str,
        phase: Phase,
    ) -> StoreResult<Vec<DeploymentRow>> {
        let statement = select_deployments()
            .and_where(Expr::col(D::EnvironmentId).eq(environment_id))
            .and_where(Expr::col(D::Phase).eq(phase.as_str()))
            .order_by(D::Id, Order::Asc)
            .to_owned();
        self.query_deployments(statement).await
    }

    /// 1-based position of a queued deployment in its environment's queue; 0 otherwise.
    pub async fn queue_position(&self, row: &DeploymentRow) -> StoreResult<i32> {
        if row.phase != Phase::Queued {
            return Ok(0);
        }
        let statement = Query::select()
            .expr_as(Expr::col(D::Id).count(), Alias::new("n"))
            .from(D::Table)
            .and_where(Expr::col(D::EnvironmentId).eq(row.environment_id.as_str()))
            .and_where(Expr::col(D::Phase).eq(Phase::Queued.as_str()))
            .and_where(Expr::col(D::Id).lte(row.id.as_str()))
            .to_owned();
        let count: i64 = match self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
        {
            Some(result) => result.try_get("", "n").map_err(StoreError::db)?,
            None => 0,
        };
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// The most recent deployment of an environment that reached a final status.
    pub async fn last_finished(&self, environment_id: &str) -> StoreResult<Option<DeploymentRow>> {
        let statement = select_deployments()
            .and_where(Expr::col(D::EnvironmentId).eq(environment_id))
            .and_where(Expr::col(D::Phase).eq(Phase::Done.as_str()))
            .order_by(D::EndTime, Order::Desc)
            .order_by(D::Id, Order::Desc)
            .limit(1)
            .to_owned();
        Ok(self.query_deployments(statement).await?.pop())
    }

    /// Cancels a queued deployment at once (`canceled` status), or asks a running one to
    /// stop between stages (`canceling` status). Returns the row after, and whether it
    /// changed; a final one is returned unchanged.
    pub async fn cancel(
        &self,
        id: &str,
        canceled: i32,
        canceling: i32,
    ) -> StoreResult<(DeploymentRow, bool)> {
        let time = now();
        let queued = Query::update()
            .table(D::Table)
            .value(D::Status, canceled)
            .value(D::Phase, Phase::Done.as_str())
            .value(D::CancelRequested, true)
            .value(D::EndTime, time)
            .value(D::UpdateTime, time)
            .value(D::Etag, new_etag())
            .and_where(Expr::col(D::Id).eq(id))
            .and_where(Expr::col(D::Phase).eq(Phase::Queued.as_str()))
            .to_owned();
        let result = self.db.execute(&queued).await.map_err(StoreError::db)?;
        if result.rows_affected() == 1 {
            return Ok((self.deployment(id).await?, true));
        }
        let running = Query::update()
            .table(D::Table)
            .value(D::Status, canceling)
            .value(D::CancelRequested, true)
            .value(D::UpdateTime, time)
            .value(D::Etag, new_etag())
            .and_where(Expr::col(D::Id).eq(id))
            .and_where(Expr::col(D::Phase).eq(Phase::Running.as_str()))
            .and_where(Expr::col(D::CancelRequested).eq(false))
            .to_owned();
        let result = self.db.execute(&running).await.map_err(StoreError::db)?;
        Ok((self.deployment(id).await?, result.rows_affected() == 1))
    }

    /// Claims one deployment for `owner` for `ttl`: first a running one whose lease expired
    /// (its engine died), then the oldest queued one of an environment with none running.
    /// Claims are conditional UPDATEs; the unique index on running deployments per
    /// environment refuses a second concurrent claim in one environment. Returns the
    /// deployment claimed, `running_status` maps the action to its running status.
    pub async fn claim(
        &self,
        owner: &str,
        ttl: std::time::Duration,
        running_status: impl Fn(i32) -> i32,
    ) -> StoreResult<Option<DeploymentRow>> {
        let time = now();
        let expired = select_deployments()
            .and_where(Expr::col(D::Phase).eq(Phase::Running.as_str()))
            .and_where(Expr::col(D::LeaseExpireTime).lt(time))
            .order_by(D::Id, Order::Asc)
            .limit(10)
            .to_owned();
        for row in self.query_deployments(expired).await? {
            let take = Query::update()
                .table(D::Table)
                .value(D::LeaseOwner, owner)
                .value(D::LeaseExpireTime, lease_until(ttl))
                .and_where(Expr::col(D::Id).eq(row.id.as_str()))
                .and_where(Expr::col(D::Phase).eq(Phase::Running.as_str()))
                .and_where(Expr::col(D::LeaseExpireTime).lt(time))
                .to_owned();
            let result = self.db.execute(&take).await.map_err(StoreError::db)?;
            if result.rows_affected() == 1 {
                tracing::info!(deployment = %row.id, previous = ?row.lease_owner, "resuming a deployment whose engine stopped");
                return Ok(Some(self.deployment(&row.id).await?));
            }
        }
        // The head of each environment's queue, for environments with nothing running.
        let heads = select_deployments()
            .and_where(Expr::col(D::Phase).eq(Phase::Queued.as_str()))
            .and_where(
                Expr::col(D::EnvironmentId).not_in_subquery(
                    Query::select()
                        .column(D::EnvironmentId)
                        .from(D::Table)
                        .and_where(Expr::col(D::Phase).eq(Phase::Running.as_str()))
                        .to_owned(),
                ),
            )
            .order_by(D::Id, Order::Asc)
            .limit(50)
            .to_owned();
        let mut seen = std::collections::HashSet::new();
        for row in self.query_deployments(heads).await? {
            if !seen.insert(row.environment_id.clone()) {
                continue;
            }
            // Stamped now, after the heads were read: the previous deployment of this
            // environment finished (and stamped its end) before it left the running set,
            // so this start can never precede that end.
            let start = now();
            let take = Query::update()
                .table(D::Table)
                .value(D::Phase, Phase::Running.as_str())
                .value(D::Status, running_status(row.action))
                .value(D::LeaseOwner, owner)
                .value(D::LeaseExpireTime, lease_until(ttl))
                .value(D::StartTime, start)
                .value(D::UpdateTime, start)
                .value(D::Etag, new_etag())
                .and_where(Expr::col(D::Id).eq(row.id.as_str()))
                .and_where(Expr::col(D::Phase).eq(Phase::Queued.as_str()))
                .to_owned();
            match self.db.execute(&take).await {
                Ok(result) if result.rows_affected() == 1 => {
                    return Ok(Some(self.deployment(&row.id).await?));
                }
                Ok(_) => {}
                // Another replica claimed a deployment of this environment first.
                Err(err) if slipway_db::is_unique_violation(&err) => {}
                Err(err) => return Err(StoreError::db(err)),
            }
        }
        Ok(None)
    }

    /// Extends `owner`'s lease; false when the lease was lost (another engine took over).
    pub async fn renew(
        &self,
        id: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let statement = Query::update()
            .table(D::Table)
            .value(D::LeaseExpireTime, lease_until(ttl))
            .and_where(Expr::col(D::Id).eq(id))
            .and_where(Expr::col(D::LeaseOwner).eq(owner))
            .and_where(Expr::col(D::Phase).eq(Phase::Running.as_str()))
            .to_owned();
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores the frozen plan, the cluster, the stages and the services of the plan, while
    /// `owner` holds the lease. False when the lease was lost.
    #[allow(clippy::too_many_arguments)]
    pub async fn freeze(
        &self,
        id: &str,
        owner: &str,
        plan: Vec<u8>,
        cluster_id: &str,
        stages: &[StageRow],
        service_ids: &[String],
        service_statuses: Vec<u8>,
    ) -> StoreResult<bool> {
        let txn = self.begin().await?;
        let statement = Query::update()
            .table(D::Table)
            .value(D::Plan, plan)
            .value(D::ClusterId, cluster_id)
            .value(D::ServiceStatuses, service_statuses)
            .value(D::UpdateTime, now())
            .value(D::Etag, new_etag())
            .and_where(Expr::col(D::Id).eq(id))
            .and_where(Expr::col(D::LeaseOwner).eq(owner))
            .to_owned();
        let result = txn.execute(&statement).await.map_err(StoreError::db)?;
        if result.rows_affected() == 0 {
            return Ok(false);
        }
        let remove = Query::delete()
            .from_table(S::Table)
            .and_where(Expr::col(S::DeploymentId).eq(id))
            .to_owned();
        txn.execute(&remove).await.map_err(StoreError::db)?;
        for stage in stages {
            let insert = Query::insert()
                .into_table(S::Table)
                .columns([
                    S::DeploymentId,
                    S::Idx,
                    S::Kind,
                    S::Operation,
                    S::Status,
                    S::CommandId,
                    S::ServiceIds,
                    S::Message,
                    S::StartTime,
                    S::EndTime,
                ])
                .values_panic([
                    id.into(),
                    stage.index.into(),
                    stage.kind.into(),
                    stage.operation.into(),
                    stage.status.into(),
                    stage.command_id.clone().into(),
                    stage.service_ids.join(",").into(),
                    stage.message.clone().into(),
                    stage.start_time.into(),
                    stage.end_time.into(),
                ])
                .to_owned();
            txn.execute(&insert).await.map_err(StoreError::db)?;
        }
        for service in service_ids {
            let insert = Query::insert()
                .into_table(DS::Table)
                .columns([DS::DeploymentId, DS::ServiceId])
                .values_panic([id.into(), service.clone().into()])
                .on_conflict(
                    OnConflict::columns([DS::DeploymentId, DS::ServiceId])
                        .do_nothing()
                        .to_owned(),
                )
                .to_owned();
            txn.execute(&insert).await.map_err(StoreError::db)?;
        }
        txn.commit().await.map_err(StoreError::db)?;
        Ok(true)
    }

    /// Changes a running deployment's status (and service statuses, when given) while
    /// `owner` holds the lease. False when the lease was lost.
    pub async fn set_status(
        &self,
        id: &str,
        owner: &str,
        status: i32,
        service_statuses: Option<Vec<u8>>,
    ) -> StoreResult<bool> {
        let mut statement = Query::update();
        statement
            .table(D::Table)
            .value(D::Status, status)
            .value(D::UpdateTime, now())
            .value(D::Etag, new_etag())
            .and_where(Expr::col(D::Id).eq(id))
            .and_where(Expr::col(D::LeaseOwner).eq(owner))
            .and_where(Expr::col(D::Phase).eq(Phase::Running.as_str()));
        if let Some(statuses) = service_statuses {
            statement.value(D::ServiceStatuses, statuses);
        }
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected() == 1)
    }

    /// Ends a running deployment with its final `status`, releasing the environment's
    /// queue. False when the lease was lost.
    pub async fn finish(
        &self,
        id: &str,
        owner: &str,
        status: i32,
        error_message: &str,
        service_statuses: Vec<u8>,
    ) -> StoreResult<bool> {
        let time = now();
        let statement = Query::update()
            .table(D::Table)
            .value(D::Status, status)
            .value(D::Phase, Phase::Done.as_str())
            .value(D::ErrorMessage, error_message)
            .value(D::ServiceStatuses, service_statuses)
            .value(D::LeaseOwner, Option::<String>::None)
            .value(D::LeaseExpireTime, Option::<DateTime<Utc>>::None)
            .value(D::EndTime, time)
            .value(D::UpdateTime, time)
            .value(D::Etag, new_etag())
            .and_where(Expr::col(D::Id).eq(id))
            .and_where(Expr::col(D::LeaseOwner).eq(owner))
            .and_where(Expr::col(D::Phase).eq(Phase::Running.as_str()))
            .to_owned();
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected() == 1)
    }

    /// The stages of a deployment, in order.
    pub async fn stages(&self, deployment_id: &str) -> StoreResult<Vec<StageRow>> {
        let statement = Query::select()
            .columns([
                S::DeploymentId,
                S::Idx,
                S::Kind,
                S::Operation,
                S::Status,
                S::CommandId,
                S::ServiceIds,
                S::Message,
                S::StartTime,
                S::EndTime,
            ])
            .from(S::Table)
            .and_where(Expr::col(S::DeploymentId).eq(deployment_id))
            .order_by(S::Idx, Order::Asc)
            .to_owned();
        query_rows(&self.db, &statement, StageRow::from_result)
            .await
            .map_err(StoreError::db)
    }

    /// Writes a stage's status, command id, message and times, and bumps the deployment's
    /// etag (a stage change is a change of the deployment).
    pub async fn update_stage(&self, stage: &StageRow) -> StoreResult<()> {
        let txn = self.begin().await?;
        let statement = Query::update()
            .table(S::Table)
            .value(S::Status, stage.status)
            .value(S::CommandId, stage.command_id.clone())
            .value(S::Message, stage.message.clone())
            .value(S::StartTime, stage.start_time)
            .value(S::EndTime, stage.end_time)
            .and_where(Expr::col(S::DeploymentId).eq(stage.deployment_id.as_str()))
            .and_where(Expr::col(S::Idx).eq(stage.index))
            .to_owned();
        txn.execute(&statement).await.map_err(StoreError::db)?;
        let touch = Query::update()
            .table(D::Table)
            .value(D::UpdateTime, now())
            .value(D::Etag, new_etag())
            .and_where(Expr::col(D::Id).eq(stage.deployment_id.as_str()))
            .to_owned();
        txn.execute(&touch).await.map_err(StoreError::db)?;
        txn.commit().await.map_err(StoreError::db)
    }

    /// Records a step report; a repeat (same command, service and sequence) is ignored.
    /// Returns whether it was new.
    pub async fn insert_step_report(&self, report: &StepReportRow) -> StoreResult<bool> {
        let statement = Query::insert()
            .into_table(R::Table)
            .columns([
                R::CommandId,
                R::ServiceId,
                R::Sequence,
                R::DeploymentId,
                R::Step,
                R::Status,
                R::Message,
                R::RuntimeState,
                R::FailureReason,
                R::Time,
            ])
            .values_panic([
                report.command_id.clone().into(),
                report.service_id.clone().into(),
                report.sequence.into(),
                report.deployment_id.clone().into(),
                report.step.clone().into(),
                report.status.into(),
                report.message.clone().into(),
                report.runtime_state.into(),
                report.failure_reason.into(),
                report.time.into(),
            ])
            .on_conflict(
                OnConflict::columns([R::CommandId, R::ServiceId, R::Sequence])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected() == 1)
    }

    /// Every report of a command, in the order the agent sent them.
    pub async fn step_reports(&self, command_id: &str) -> StoreResult<Vec<StepReportRow>> {
        let statement = Query::select()
            .columns([
                R::CommandId,
                R::ServiceId,
                R::Sequence,
                R::DeploymentId,
                R::Step,
                R::Status,
                R::Message,
                R::RuntimeState,
                R::FailureReason,
                R::Time,
            ])
            .from(R::Table)
            .and_where(Expr::col(R::CommandId).eq(command_id))
            .order_by(R::Sequence, Order::Asc)
            .to_owned();
        query_rows(&self.db, &statement, StepReportRow::from_result)
            .await
            .map_err(StoreError::db)
    }

    /// The service states of an environment.
    pub async fn service_states(&self, environment_id: &str) -> StoreResult<Vec<ServiceStateRow>> {
        let statement = Query::select()
            .columns([
                SS::EnvironmentId,
                SS::ServiceId,
                SS::OrganizationId,
                SS::ServiceName,
                SS::ServiceKind,
                SS::CatalogRevision,
                SS::LastDeploymentId,
                SS::LastDeploymentStatus,
                SS::RuntimeState,
                SS::ReadyInstances,
                SS::DesiredInstances,
                SS::Image,
                SS::GitCommitSha,
                SS::Message,
                SS::Deleted,
                SS::ObserveTime,
            ])
            .from(SS::Table)
            .and_where(Expr::col(SS::EnvironmentId).eq(environment_id))
            .order_by(SS::ServiceName, Order::Asc)
            .to_owned();
        query_rows(&self.db, &statement, ServiceStateRow::from_result)
            .await
            .map_err(StoreError::db)
    }

    /// Writes a service's state, replacing what was stored.
    pub async fn upsert_service_state(&self, state: &ServiceStateRow) -> StoreResult<()> {
        let statement = Query::insert()
            .into_table(SS::Table)
            .columns([
                SS::EnvironmentId,
                SS::ServiceId,
                SS::OrganizationId,
                SS::ServiceName,
                SS::ServiceKind,
                SS::CatalogRevision,
                SS::LastDeploymentId,
                SS::LastDeploymentStatus,
                SS::RuntimeState,
                SS::ReadyInstances,
                SS::DesiredInstances,
                SS::Image,
                SS::GitCommitSha,
                SS::Message,
                SS::Deleted,
                SS::ObserveTime,
                SS::UpdateTime,
            ])
            .values_panic([
                state.environment_id.clone().into(),
                state.service_id.clone().into(),
                state.organization_id.clone().into(),
                state.service_name.clone().into(),
                state.service_kind.into(),
                state.catalog_revision.clone().into(),
                state.last_deployment_id.clone().into(),
                state.last_deployment_status.into(),
                state.runtime_state.into(),
                state.ready_instances.into(),
                state.desired_instances.into(),
                state.image.clone().into(),
                state.git_commit_sha.clone().into(),
                state.message.clone().into(),
                state.deleted.into(),
                state.observe_time.into(),
                now().into(),
            ])
            .on_conflict(
                OnConflict::columns([SS::EnvironmentId, SS::ServiceId])
                    .update_columns([
                        SS::OrganizationId,
                        SS::ServiceName,
                        SS::ServiceKind,
                        SS::CatalogRevision,
                        SS::LastDeploymentId,
                        SS::LastDeploymentStatus,
                        SS::RuntimeState,
                        SS::ReadyInstances,
                        SS::DesiredInstances,
                        SS::Image,
                        SS::GitCommitSha,
                        SS::Message,
                        SS::Deleted,
                        SS::ObserveTime,
                        SS::UpdateTime,
                    ])
                    .to_owned(),
            )
            .to_owned();
        self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Applies an agent's observation of a workload to a known service; unknown ones are
    /// ignored (the orchestrator never deployed them).
    #[allow(clippy::too_many_arguments)]
    pub async fn observe_workload(
        &self,
        environment_id: &str,
        service_id: &str,
        runtime_state: i32,
        ready: i32,
        desired: i32,
        message: &str,
        time: DateTime<Utc>,
    ) -> StoreResult<()> {
        let statement = Query::update()
            .table(SS::Table)
            .value(SS::RuntimeState, runtime_state)
            .value(SS::ReadyInstances, ready)
            .value(SS::DesiredInstances, desired)
            .value(SS::Message, message)
            .value(SS::ObserveTime, time)
            .value(SS::UpdateTime, now())
            .and_where(Expr::col(SS::EnvironmentId).eq(environment_id))
            .and_where(Expr::col(SS::ServiceId).eq(service_id))
            .to_owned();
        self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Records a build result; a repeat is ignored.
    pub async fn insert_build_result(&self, result: &BuildResultRow) -> StoreResult<()> {
        let statement = Query::insert()
            .into_table(B::Table)
            .columns([
                B::JobId,
                B::DeploymentId,
                B::ServiceId,
                B::Outcome,
                B::ImageReference,
                B::LocalArtifactPath,
                B::Message,
                B::ReceiveTime,
            ])
            .values_panic([
                result.job_id.clone().into(),
                result.deployment_id.clone().into(),
                result.service_id.clone().into(),
                result.outcome.into(),
                result.image_reference.clone().into(),
                result.local_artifact_path.clone().into(),
                result.message.clone().into(),
                now().into(),
            ])
            .on_conflict(OnConflict::column(B::JobId).do_nothing().to_owned())
            .to_owned();
        self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// The result of build job `job_id`, once reported.
    pub async fn build_result(&self, job_id: &str) -> StoreResult<Option<BuildResultRow>> {
        let statement = Query::select()
            .columns([
                B::JobId,
                B::DeploymentId,
                B::ServiceId,
                B::Outcome,
                B::ImageReference,
                B::LocalArtifactPath,
                B::Message,
            ])
            .from(B::Table)
            .and_where(Expr::col(B::JobId).eq(job_id))
            .to_owned();
        let Some(r) = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
        else {
            return Ok(None);
        };
        let read = || -> Result<BuildResultRow, DbErr> {
            Ok(BuildResultRow {
                job_id: r.try_get("", "job_id")?,
                deployment_id: r.try_get("", "deployment_id")?,
                service_id: r.try_get("", "service_id")?,
                outcome: r.try_get("", "outcome")?,
                image_reference: r.try_get("", "image_reference")?,
                local_artifact_path: r.try_get("", "local_artifact_path")?,
                message: r.try_get("", "message")?,
            })
        };
        read().map(Some).map_err(StoreError::db)
    }
}

/// Records that `key` created `resource_id` (`deployment_request_ids`): the insert that
/// fails on a repeated key, for every orchestrator resource created with a `request_id`.
pub(crate) fn record_request(
    key: &RequestKey,
    resource_id: &str,
) -> slipway_db::sea_orm::sea_query::InsertStatement {
    Query::insert()
        .into_table(Q::Table)
        .columns([
            Q::OrganizationId,
            Q::Method,
            Q::RequestId,
            Q::ResourceId,
            Q::CreateTime,
        ])
        .values_panic([
            key.organization_id.clone().into(),
            key.method.into(),
            key.request_id.clone().into(),
            resource_id.into(),
            now().into(),
        ])
        .to_owned()
}

/// The resource id recorded for `key`, if any.
pub(crate) fn recorded_request(
    key: &RequestKey,
) -> slipway_db::sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(Q::ResourceId)
        .from(Q::Table)
        .and_where(Expr::col(Q::OrganizationId).eq(key.organization_id.as_str()))
        .and_where(Expr::col(Q::Method).eq(key.method))
        .and_where(Expr::col(Q::RequestId).eq(key.request_id.as_str()))
        .to_owned()
}
