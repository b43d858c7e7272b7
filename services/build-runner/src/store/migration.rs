//! The build-runner schema: one table of `Build` records, on PostgreSQL and SQLite alike.
//!
//! Released migrations are never edited; changes come as new steps.

use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

/// Creates the `builds` table.
pub struct CreateBuilds;

impl MigrationName for CreateBuilds {
    fn name(&self) -> &str {
        "m0001_create_builds"
    }
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum Builds {
    Table,
    /// The job id.
    Id,
    OrganizationId,
    ProjectId,
    EnvironmentId,
    ServiceId,
    DeploymentId,
    /// `BuildStatus` number, for the status filter.
    Status,
    /// `create_time` in microseconds since the epoch: the listing's sort key.
    CreateMicros,
    /// Set by `CancelBuild`; the worker reads it when it picks the job up.
    CancelRequested,
    CancelReason,
    /// The `slipway.build.v1.Build` message, protobuf-encoded: never searched, only served.
    Build,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateBuilds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Builds as B;
        manager
            .create_table(
                Table::create()
                    .table(B::Table)
                    .col(ColumnDef::new(B::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(B::OrganizationId).text().not_null())
                    .col(ColumnDef::new(B::ProjectId).text().not_null())
                    .col(ColumnDef::new(B::EnvironmentId).text().not_null())
                    .col(ColumnDef::new(B::ServiceId).text().not_null())
                    .col(ColumnDef::new(B::DeploymentId).text().not_null())
                    .col(ColumnDef::new(B::Status).integer().not_null())
                    .col(ColumnDef::new(B::CreateMicros).big_integer().not_null())
                    .col(
                        ColumnDef::new(B::CancelRequested)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(B::CancelReason)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .col(ColumnDef::new(B::Build).blob().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("builds_environment_created_idx")
                    .table(B::Table)
                    .col(B::EnvironmentId)
                    .col(B::CreateMicros)
                    .col(B::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
