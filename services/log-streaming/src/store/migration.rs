//! The log-streaming schema, on PostgreSQL and SQLite alike.
//!
//! Released migrations are never edited; changes come as new steps.

use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

/// Creates the environment directory's tables.
pub struct CreateDirectory;

impl MigrationName for CreateDirectory {
    fn name(&self) -> &str {
        "m0001_create_directory"
    }
}

/// Environments as catalog's events last described them.
#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum LogEnvironments {
    Table,
    EnvironmentId,
    OrganizationId,
    ProjectId,
    /// `slipway.common.v1.EnvironmentMode` number.
    Mode,
}

/// One row: the `EVENTS` sequence the directory has read up to.
#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum DirectoryCursor {
    #[sea_orm(iden = "log_directory_cursor")]
    Table,
    Id,
    Applied,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateDirectory {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use LogEnvironments as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .col(
                        ColumnDef::new(E::EnvironmentId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(E::OrganizationId).text().not_null())
                    .col(ColumnDef::new(E::ProjectId).text().not_null())
                    .col(ColumnDef::new(E::Mode).integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DirectoryCursor::Table)
                    .col(
                        ColumnDef::new(DirectoryCursor::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(DirectoryCursor::Applied)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DirectoryCursor::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(LogEnvironments::Table).to_owned())
            .await
    }
}
