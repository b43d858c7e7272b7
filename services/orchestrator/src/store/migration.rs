//! The orchestrator schema, as sea-orm-migration steps that run unchanged on PostgreSQL and
//! SQLite.
//!
//! Integrity the engine relies on is enforced here, so concurrent replicas cannot break it:
//!
//! - one running deployment per environment: a unique partial index on `environment_id`
//!   where `phase = 'running'`, so a second claim fails instead of running two at once;
//! - a `request_id` is recorded once per organization and method;
//! - a step report is stored once per (command, service, sequence): redelivered reports
//!   are ignored.
//!
//! Released migrations are never edited; changes come as new steps.

use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

/// Creates every orchestrator table.
pub struct CreateDeploySchema;

impl MigrationName for CreateDeploySchema {
    fn name(&self) -> &str {
        "m0001_create_deploy_schema"
    }
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum Deployments {
    Table,
    Id,
    OrganizationId,
    ProjectId,
    EnvironmentId,
    EnvironmentMode,
    ServiceId,
    ClusterId,
    Action,
    Status,
    /// `queued`, `running` or `done`: what the queue and the claim look at.
    Phase,
    Trigger,
    TriggeredBy,
    RolledBackFrom,
    GitCommitSha,
    ImageTag,
    Plan,
    ServiceStatuses,
    ErrorMessage,
    CancelRequested,
    LeaseOwner,
    LeaseExpireTime,
    Etag,
    CreateTime,
    StartTime,
    EndTime,
    UpdateTime,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum DeploymentStages {
    Table,
    DeploymentId,
    Idx,
    Kind,
    Operation,
    Status,
    CommandId,
    ServiceIds,
    Message,
    StartTime,
    EndTime,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum DeploymentServices {
    Table,
    DeploymentId,
    ServiceId,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum StepReports {
    Table,
    CommandId,
    ServiceId,
    Sequence,
    DeploymentId,
    Step,
    Status,
    Message,
    RuntimeState,
    FailureReason,
    Time,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum ServiceStates {
    Table,
    EnvironmentId,
    ServiceId,
    OrganizationId,
    ServiceName,
    ServiceKind,
    CatalogRevision,
    LastDeploymentId,
    LastDeploymentStatus,
    RuntimeState,
    ReadyInstances,
    DesiredInstances,
    Image,
    GitCommitSha,
    Message,
    Deleted,
    ObserveTime,
    UpdateTime,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum BuildResults {
    Table,
    JobId,
    DeploymentId,
    ServiceId,
    Outcome,
    ImageReference,
    LocalArtifactPath,
    Message,
    ReceiveTime,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum DeploymentRequestIds {
    Table,
    OrganizationId,
    Method,
    RequestId,
    ResourceId,
    CreateTime,
}

fn time(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn optional_time(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateDeploySchema {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Deployments as D;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .col(ColumnDef::new(D::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(D::OrganizationId).text().not_null())
                    .col(ColumnDef::new(D::ProjectId).text().not_null())
                    .col(ColumnDef::new(D::EnvironmentId).text().not_null())
                    .col(ColumnDef::new(D::EnvironmentMode).integer().not_null())
                    .col(ColumnDef::new(D::ServiceId).text().not_null())
                    .col(ColumnDef::new(D::ClusterId).text().not_null())
                    .col(ColumnDef::new(D::Action).integer().not_null())
                    .col(ColumnDef::new(D::Status).integer().not_null())
                    .col(ColumnDef::new(D::Phase).text().not_null())
                    .col(ColumnDef::new(D::Trigger).integer().not_null())
                    .col(ColumnDef::new(D::TriggeredBy).text().not_null())
                    .col(ColumnDef::new(D::RolledBackFrom).text().not_null())
                    .col(ColumnDef::new(D::GitCommitSha).text().not_null())
                    .col(ColumnDef::new(D::ImageTag).text().not_null())
                    .col(ColumnDef::new(D::Plan).blob().null())
                    .col(ColumnDef::new(D::ServiceStatuses).blob().not_null())
                    .col(ColumnDef::new(D::ErrorMessage).text().not_null())
                    .col(ColumnDef::new(D::CancelRequested).boolean().not_null())
                    .col(ColumnDef::new(D::LeaseOwner).text().null())
                    .col(optional_time(D::LeaseExpireTime))
                    .col(ColumnDef::new(D::Etag).text().not_null())
                    .col(time(D::CreateTime))
                    .col(optional_time(D::StartTime))
                    .col(optional_time(D::EndTime))
                    .col(time(D::UpdateTime))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "deployments_environment_idx",
                vec![D::EnvironmentId, D::Phase, D::Id],
            ),
            (
                "deployments_organization_idx",
                vec![D::OrganizationId, D::Id],
            ),
            ("deployments_phase_idx", vec![D::Phase, D::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(D::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        // Partial unique index: the same SQL on both backends.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX deployments_one_running_idx \
                 ON deployments (environment_id) WHERE phase = 'running'",
            )
            .await?;

        use DeploymentStages as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .col(ColumnDef::new(S::DeploymentId).text().not_null())
                    .col(ColumnDef::new(S::Idx).integer().not_null())
                    .col(ColumnDef::new(S::Kind).integer().not_null())
                    .col(ColumnDef::new(S::Operation).integer().not_null())
                    .col(ColumnDef::new(S::Status).integer().not_null())
                    .col(ColumnDef::new(S::CommandId).text().null())
                    .col(ColumnDef::new(S::ServiceIds).text().not_null())
                    .col(ColumnDef::new(S::Message).text().not_null())
                    .col(optional_time(S::StartTime))
                    .col(optional_time(S::EndTime))
                    .primary_key(Index::create().col(S::DeploymentId).col(S::Idx))
                    .to_owned(),
            )
            .await?;

        use DeploymentServices as DS;
        manager
            .create_table(
                Table::create()
                    .table(DS::Table)
                    .col(ColumnDef::new(DS::DeploymentId).text().not_null())
                    .col(ColumnDef::new(DS::ServiceId).text().not_null())
                    .primary_key(Index::create().col(DS::DeploymentId).col(DS::ServiceId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deployment_services_service_idx")
                    .table(DS::Table)
                    .col(DS::ServiceId)
                    .to_owned(),
            )
            .await?;

        use StepReports as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(ColumnDef::new(R::CommandId).text().not_null())
                    .col(ColumnDef::new(R::ServiceId).text().not_null())
                    .col(ColumnDef::new(R::Sequence).big_integer().not_null())
                    .col(ColumnDef::new(R::DeploymentId).text().not_null())
                    .col(ColumnDef::new(R::Step).text().not_null())
                    .col(ColumnDef::new(R::Status).integer().not_null())
                    .col(ColumnDef::new(R::Message).text().not_null())
                    .col(ColumnDef::new(R::RuntimeState).integer().not_null())
                    .col(ColumnDef::new(R::FailureReason).integer().not_null())
                    .col(time(R::Time))
                    .primary_key(
                        Index::create()
                            .col(R::CommandId)
                            .col(R::ServiceId)
                            .col(R::Sequence),
                    )
                    .to_owned(),
            )
            .await?;

        use ServiceStates as SS;
        manager
            .create_table(
                Table::create()
                    .table(SS::Table)
                    .col(ColumnDef::new(SS::EnvironmentId).text().not_null())
                    .col(ColumnDef::new(SS::ServiceId).text().not_null())
                    .col(ColumnDef::new(SS::OrganizationId).text().not_null())
                    .col(ColumnDef::new(SS::ServiceName).text().not_null())
                    .col(ColumnDef::new(SS::ServiceKind).integer().not_null())
                    .col(ColumnDef::new(SS::CatalogRevision).text().not_null())
                    .col(ColumnDef::new(SS::LastDeploymentId).text().not_null())
                    .col(
                        ColumnDef::new(SS::LastDeploymentStatus)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(SS::RuntimeState).integer().not_null())
                    .col(ColumnDef::new(SS::ReadyInstances).integer().not_null())
                    .col(ColumnDef::new(SS::DesiredInstances).integer().not_null())
                    .col(ColumnDef::new(SS::Image).text().not_null())
                    .col(ColumnDef::new(SS::GitCommitSha).text().not_null())
                    .col(ColumnDef::new(SS::Message).text().not_null())
                    .col(ColumnDef::new(SS::Deleted).boolean().not_null())
                    .col(optional_time(SS::ObserveTime))
                    .col(time(SS::UpdateTime))
                    .primary_key(Index::create().col(SS::EnvironmentId).col(SS::ServiceId))
                    .to_owned(),
            )
            .await?;

        use BuildResults as B;
        manager
            .create_table(
                Table::create()
                    .table(B::Table)
                    .col(ColumnDef::new(B::JobId).text().not_null().primary_key())
                    .col(ColumnDef::new(B::DeploymentId).text().not_null())
                    .col(ColumnDef::new(B::ServiceId).text().not_null())
                    .col(ColumnDef::new(B::Outcome).integer().not_null())
                    .col(ColumnDef::new(B::ImageReference).text().not_null())
                    .col(ColumnDef::new(B::LocalArtifactPath).text().not_null())
                    .col(ColumnDef::new(B::Message).text().not_null())
                    .col(time(B::ReceiveTime))
                    .to_owned(),
            )
            .await?;

        use DeploymentRequestIds as Q;
        manager
            .create_table(
                Table::create()
                    .table(Q::Table)
                    .col(ColumnDef::new(Q::OrganizationId).text().not_null())
                    .col(ColumnDef::new(Q::Method).text().not_null())
                    .col(ColumnDef::new(Q::RequestId).text().not_null())
                    .col(ColumnDef::new(Q::ResourceId).text().not_null())
                    .col(time(Q::CreateTime))
                    .primary_key(
                        Index::create()
                            .col(Q::OrganizationId)
                            .col(Q::Method)
                            .col(Q::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
