//! The scheduler's tables: its copy of catalog's deployment rules, and the transitions
//! already fired.
//!
//! `schedule_firings` is the durable "last fired transition" record: its primary key
//! (rule, transition time, kind) makes the insert that marks a transition fired
//! conditional, so replicas agree on what was fired without electing anyone.

use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

/// Creates `schedule_rules` and `schedule_firings`.
pub struct CreateSchedule;

impl MigrationName for CreateSchedule {
    fn name(&self) -> &str {
        "m0004_schedule"
    }
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum ScheduleRules {
    Table,
    RuleId,
    OrganizationId,
    ProjectId,
    /// Empty for a project rule.
    EnvironmentId,
    /// The catalog's `DeploymentRule`, protobuf-encoded as catalog answered it.
    Spec,
    SyncTime,
}

#[derive(Clone, Copy, DeriveIden)]
pub(crate) enum ScheduleFirings {
    Table,
    RuleId,
    TransitionTime,
    /// `start` or `stop`.
    Kind,
    FireTime,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSchedule {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ScheduleRules as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(ColumnDef::new(R::RuleId).text().not_null().primary_key())
                    .col(ColumnDef::new(R::OrganizationId).text().not_null())
                    .col(ColumnDef::new(R::ProjectId).text().not_null())
                    .col(ColumnDef::new(R::EnvironmentId).text().not_null())
                    .col(ColumnDef::new(R::Spec).blob().not_null())
                    .col(
                        ColumnDef::new(R::SyncTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("schedule_rules_environment_idx")
                    .table(R::Table)
                    .col(R::EnvironmentId)
                    .to_owned(),
            )
            .await?;

        use ScheduleFirings as F;
        manager
            .create_table(
                Table::create()
                    .table(F::Table)
                    .col(ColumnDef::new(F::RuleId).text().not_null())
                    .col(
                        ColumnDef::new(F::TransitionTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(F::Kind).text().not_null())
                    .col(
                        ColumnDef::new(F::FireTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(F::RuleId)
                            .col(F::TransitionTime)
                            .col(F::Kind),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
