//! The catalog schema, as sea-orm-migration steps that run unchanged on PostgreSQL and
//! SQLite.
//!
//! Every resource table has the same columns (see [`super::rows`]): typed ones for what the
//! database enforces or searches, `spec` for the resource's protobuf encoding, `sealed` for
//! its encrypted secret. Integrity the API relies on is enforced here, so two concurrent
//! requests cannot break it:
//!
//! - a name (a variable's key) is unique in its parent (`UNIQUE (parent_id, name)`);
//! - an environment belongs to an existing project, a service to an existing environment
//!   (foreign keys: a create racing the parent's delete fails instead of leaving an orphan);
//! - a credential hash (a cluster's agent token) is unique;
//! - a `request_id` is recorded once per organization and method.
//!
//! Released migrations are never edited; changes come as new steps.

use slipway_db::sea_orm_migration::async_trait;
use slipway_db::sea_orm_migration::prelude::*;

use super::rows::{Column, Kind};

/// Creates every catalog table.
pub struct CreateCatalogSchema;

impl MigrationName for CreateCatalogSchema {
    fn name(&self) -> &str {
        "m0001_create_catalog_schema"
    }
}

#[derive(Clone, Copy, DeriveIden)]
enum RequestIds {
    Table,
    OrganizationId,
    Method,
    RequestId,
    ResourceId,
    CreateTime,
}

#[derive(Clone, Copy, DeriveIden)]
enum OrganizationKeys {
    Table,
    OrganizationId,
    WrappedKey,
    CreateTime,
}

#[derive(Clone, Copy, DeriveIden)]
enum ClusterConnections {
    Table,
    ClusterId,
    OrganizationId,
    Connected,
    AgentVersion,
    ReplicaId,
    LastHeartbeatTime,
    ConnectTime,
    UpdateTime,
}

fn resource_table(kind: Kind) -> TableCreateStatement {
    let table = Alias::new(kind.table());
    let mut create = Table::create();
    create
        .table(table.clone())
        .col(ColumnDef::new(Column::Id).text().not_null().primary_key())
        .col(ColumnDef::new(Column::OrganizationId).text().not_null())
        .col(ColumnDef::new(Column::ParentId).text().not_null())
        .col(ColumnDef::new(Column::Name).text().not_null())
        .col(ColumnDef::new(Column::Subtype).text().not_null())
        .col(ColumnDef::new(Column::ProjectId).text().null())
        .col(ColumnDef::new(Column::EnvironmentId).text().null())
        .col(ColumnDef::new(Column::ServiceId).text().null())
        .col(ColumnDef::new(Column::ClusterId).text().null())
        .col(ColumnDef::new(Column::Spec).blob().not_null())
        .col(ColumnDef::new(Column::Sealed).blob().null())
        .col(
            ColumnDef::new(Column::LookupHash)
                .text()
                .null()
                .unique_key(),
        )
        .col(ColumnDef::new(Column::Etag).text().not_null())
        .col(
            ColumnDef::new(Column::CreateTime)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(
            ColumnDef::new(Column::UpdateTime)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .index(
            Index::create()
                .unique()
                .name(format!("{}_parent_name_key", kind.table()))
                .col(Column::ParentId)
                .col(Column::Name),
        );
    match kind {
        Kind::Environment => {
            create.foreign_key(
                ForeignKey::create()
                    .name("environments_project_fk")
                    .from(table, Column::ProjectId)
                    .to(Alias::new(Kind::Project.table()), Column::Id),
            );
        }
        Kind::Service => {
            create.foreign_key(
                ForeignKey::create()
                    .name("services_environment_fk")
                    .from(table, Column::EnvironmentId)
                    .to(Alias::new(Kind::Environment.table()), Column::Id),
            );
        }
        _ => {}
    }
    create.to_owned()
}

fn index(kind: Kind, column: Column) -> IndexCreateStatement {
    Index::create()
        .name(format!("{}_{}_idx", kind.table(), column.to_string()))
        .table(Alias::new(kind.table()))
        .col(column)
        .col(Column::Id)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateCatalogSchema {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Parents before children, for the foreign keys.
        for kind in Kind::ALL {
            manager.create_table(resource_table(kind)).await?;
            for column in [
                Column::OrganizationId,
                Column::ProjectId,
                Column::EnvironmentId,
                Column::ServiceId,
                Column::ClusterId,
            ] {
                manager.create_index(index(kind, column)).await?;
            }
        }
        manager
            .create_table(
                Table::create()
                    .table(RequestIds::Table)
                    .col(ColumnDef::new(RequestIds::OrganizationId).text().not_null())
                    .col(ColumnDef::new(RequestIds::Method).text().not_null())
                    .col(ColumnDef::new(RequestIds::RequestId).text().not_null())
                    .col(ColumnDef::new(RequestIds::ResourceId).text().not_null())
                    .col(
                        ColumnDef::new(RequestIds::CreateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RequestIds::OrganizationId)
                            .col(RequestIds::Method)
                            .col(RequestIds::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrganizationKeys::Table)
                    .col(
                        ColumnDef::new(OrganizationKeys::OrganizationId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(OrganizationKeys::WrappedKey)
                            .blob()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OrganizationKeys::CreateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterConnections::Table)
                    .col(
                        ColumnDef::new(ClusterConnections::ClusterId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ClusterConnections::OrganizationId)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterConnections::Connected)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterConnections::AgentVersion)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterConnections::ReplicaId)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterConnections::LastHeartbeatTime)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ClusterConnections::ConnectTime)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ClusterConnections::UpdateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["cluster_connections", "organization_keys", "request_ids"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        for kind in Kind::ALL.into_iter().rev() {
            manager
                .drop_table(Table::drop().table(Alias::new(kind.table())).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Adds `(organization_id, name, id)` indexes to the kinds listed per organization.
///
/// Their List RPCs are ordered by name, and filter by organization alone, so the
/// `(parent_id, name)` key (whose parent is the organization, but which the query does not
/// name) cannot serve the sort; without these, each page would sort every row of the
/// organization. Kinds listed per parent (environments, services, rules) are served by
/// that key, whose names are unique, so need nothing new.
pub struct IndexNamesPerOrganization;

/// The kinds [`IndexNamesPerOrganization`] indexes.
const LISTED_PER_ORGANIZATION: [Kind; 4] = [
    Kind::Project,
    Kind::Cluster,
    Kind::Registry,
    Kind::GitCredential,
];

impl MigrationName for IndexNamesPerOrganization {
    fn name(&self) -> &str {
        "m0002_index_names_per_organization"
    }
}

fn organization_name_index(kind: Kind) -> String {
    format!("{}_organization_name_idx", kind.table())
}

#[async_trait::async_trait]
impl MigrationTrait for IndexNamesPerOrganization {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for kind in LISTED_PER_ORGANIZATION {
            manager
                .create_index(
                    Index::create()
                        .name(organization_name_index(kind))
                        .table(Alias::new(kind.table()))
                        .col(Column::OrganizationId)
                        .col(Column::Name)
                        .col(Column::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for kind in LISTED_PER_ORGANIZATION {
            manager
                .drop_index(
                    Index::drop()
                        .name(organization_name_index(kind))
                        .table(Alias::new(kind.table()))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
