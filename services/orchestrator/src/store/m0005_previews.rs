//! The preview tables: which preview environment tracks which pull request of which
//! blueprint, and the git providers' webhook deliveries already handled.
//!
//! Both make redelivered or concurrent webhooks harmless: `preview_deliveries` is keyed by
//! the provider's delivery id, so a redelivery is recognised and does nothing, and
//! `previews` holds one row per (blueprint, repository, pull request number), claimed
//! before the catalog is asked to clone, so two deliveries for the same pull request
//! (an `opened` and a quick `synchronize`) cannot make two previews.

use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

/// Creates `previews` and `preview_deliveries`.
pub struct CreatePreviews;

impl MigrationName for CreatePreviews {
    fn name(&self) -> &str {
        "m0005_previews"
    }
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum Previews {
    Table,
    /// The claim's id, also the `request_id` of the catalog clone: a retried claim
    /// reaches the environment the first attempt made.
    Id,
    OrganizationId,
    ProjectId,
    BlueprintEnvironmentId,
    /// The preview's catalog environment; null while the clone is in flight.
    EnvironmentId,
    ClusterId,
    Name,
    /// The repository URL as the blueprint's services spell it (what catalog compares).
    RepositoryUrl,
    /// The URL normalised (scheme, `.git` and case of the host dropped): what webhooks
    /// are matched on, whichever of the provider's URLs they carry.
    RepositoryKey,
    PullRequestNumber,
    SourceBranch,
    TargetBranch,
    WebUrl,
    /// `CreatePreviewEnvironment`'s idempotency key; null for webhook-made previews.
    RequestId,
    /// The pull request head commit last queued for deployment.
    DeployedGitCommitSha,
    CreateTime,
    UpdateTime,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum PreviewDeliveries {
    Table,
    /// `github` or `gitlab`.
    Provider,
    DeliveryId,
    OrganizationId,
    /// What the delivery did, for people reading the table.
    Outcome,
    ReceiveTime,
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePreviews {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Previews as P;
        manager
            .create_table(
                Table::create()
                    .table(P::Table)
                    .col(ColumnDef::new(P::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(P::OrganizationId).text().not_null())
                    .col(ColumnDef::new(P::ProjectId).text().not_null())
                    .col(ColumnDef::new(P::BlueprintEnvironmentId).text().not_null())
                    .col(ColumnDef::new(P::EnvironmentId).text().null())
                    .col(ColumnDef::new(P::ClusterId).text().not_null())
                    .col(ColumnDef::new(P::Name).text().not_null())
                    .col(ColumnDef::new(P::RepositoryUrl).text().not_null())
                    .col(ColumnDef::new(P::RepositoryKey).text().not_null())
                    .col(
                        ColumnDef::new(P::PullRequestNumber)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(P::SourceBranch).text().not_null())
                    .col(ColumnDef::new(P::TargetBranch).text().not_null())
                    .col(ColumnDef::new(P::WebUrl).text().not_null())
                    .col(ColumnDef::new(P::RequestId).text().null())
                    .col(ColumnDef::new(P::DeployedGitCommitSha).text().not_null())
                    .col(
                        ColumnDef::new(P::CreateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(P::UpdateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("previews_pull_request_key")
                    .table(P::Table)
                    .col(P::BlueprintEnvironmentId)
                    .col(P::RepositoryKey)
                    .col(P::PullRequestNumber)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("previews_environment_key")
                    .table(P::Table)
                    .col(P::EnvironmentId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("previews_request_key")
                    .table(P::Table)
                    .col(P::OrganizationId)
                    .col(P::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("previews_repository_idx")
                    .table(P::Table)
                    .col(P::OrganizationId)
                    .col(P::RepositoryKey)
                    .col(P::PullRequestNumber)
                    .to_owned(),
            )
            .await?;

        use PreviewDeliveries as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .col(ColumnDef::new(W::Provider).text().not_null())
                    .col(ColumnDef::new(W::DeliveryId).text().not_null())
                    .col(ColumnDef::new(W::OrganizationId).text().not_null())
                    .col(ColumnDef::new(W::Outcome).text().not_null())
                    .col(
                        ColumnDef::new(W::ReceiveTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(W::Provider).col(W::DeliveryId))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
