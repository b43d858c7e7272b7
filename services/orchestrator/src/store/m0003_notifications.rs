//! Organization webhooks and their delivery log.
//!
//! A delivery is unique per (webhook, `dedup_key`): the key is the deployment id and event
//! type for a delivery caused by an event, so an event handled twice (redelivered by the
//! bus, or announced again) records one delivery. A manual redelivery uses its own id.

use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

/// Creates `webhooks` and `webhook_deliveries`.
pub struct CreateNotifications;

impl MigrationName for CreateNotifications {
    fn name(&self) -> &str {
        "m0003_notifications"
    }
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum Webhooks {
    Table,
    Id,
    OrganizationId,
    Name,
    Description,
    Url,
    /// AES-256-GCM sealed secret: signing needs the secret itself, so it cannot be hashed.
    SecretSealed,
    /// Comma-separated `WebhookEventType` numbers.
    EventTypes,
    /// Comma-separated project ids.
    ProjectIds,
    /// Comma-separated `EnvironmentMode` numbers.
    EnvironmentModes,
    Enabled,
    Etag,
    CreateTime,
    UpdateTime,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    OrganizationId,
    DedupKey,
    EventId,
    EventType,
    DeploymentId,
    Status,
    Attempt,
    ResponseStatusCode,
    ErrorMessage,
    AttemptTime,
    /// Due time while pending; a sender claims a delivery by moving it forward.
    NextRetryTime,
    /// Length-delimited `WebhookDeliveryAttempt` messages, oldest first.
    Attempts,
    /// The exact JSON body sent on every attempt.
    Body,
    RedeliveredFrom,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateNotifications {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Webhooks as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .col(ColumnDef::new(W::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(W::OrganizationId).text().not_null())
                    .col(ColumnDef::new(W::Name).text().not_null())
                    .col(ColumnDef::new(W::Description).text().not_null())
                    .col(ColumnDef::new(W::Url).text().not_null())
                    .col(ColumnDef::new(W::SecretSealed).blob().not_null())
                    .col(ColumnDef::new(W::EventTypes).text().not_null())
                    .col(ColumnDef::new(W::ProjectIds).text().not_null())
                    .col(ColumnDef::new(W::EnvironmentModes).text().not_null())
                    .col(ColumnDef::new(W::Enabled).boolean().not_null())
                    .col(ColumnDef::new(W::Etag).text().not_null())
                    .col(
                        ColumnDef::new(W::CreateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(W::UpdateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhooks_organization_name_idx")
                    .table(W::Table)
                    .col(W::OrganizationId)
                    .col(W::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        use WebhookDeliveries as D;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .col(ColumnDef::new(D::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(D::WebhookId).text().not_null())
                    .col(ColumnDef::new(D::OrganizationId).text().not_null())
                    .col(ColumnDef::new(D::DedupKey).text().not_null())
                    .col(ColumnDef::new(D::EventId).text().not_null())
                    .col(ColumnDef::new(D::EventType).integer().not_null())
                    .col(ColumnDef::new(D::DeploymentId).text().not_null())
                    .col(ColumnDef::new(D::Status).integer().not_null())
                    .col(ColumnDef::new(D::Attempt).integer().not_null())
                    .col(ColumnDef::new(D::ResponseStatusCode).integer().not_null())
                    .col(ColumnDef::new(D::ErrorMessage).text().not_null())
                    .col(
                        ColumnDef::new(D::AttemptTime)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(D::NextRetryTime)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(D::Attempts).blob().not_null())
                    .col(ColumnDef::new(D::Body).blob().not_null())
                    .col(ColumnDef::new(D::RedeliveredFrom).text().not_null())
                    .col(
                        ColumnDef::new(D::CreateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            (
                "webhook_deliveries_dedup_idx",
                vec![D::WebhookId, D::DedupKey],
                true,
            ),
            (
                "webhook_deliveries_webhook_idx",
                vec![D::WebhookId, D::Id],
                false,
            ),
            (
                "webhook_deliveries_due_idx",
                vec![D::Status, D::NextRetryTime],
                false,
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(D::Table);
            for column in columns {
                index.col(column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }
}
