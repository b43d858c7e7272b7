//! This service's tables: the environment directory ([`crate::directory`]) as last read
//! from `EVENTS`, so that a restart does not depend on events `EVENTS` has since dropped.
//!
//! Catalog's events are the source; these tables are a copy of what they said, plus the
//! sequence they were read up to. Several replicas may share them: every write is an
//! idempotent upsert or delete, and the recorded sequence only moves forward.
//!
//! The sequence belongs to one `EVENTS` stream: if that stream is deleted and made again
//! (a NATS server wiped), its sequences restart below the recorded one and new events
//! would be skipped; delete the `log_directory_cursor` row when that happens, and the
//! directory reads the new stream from its start.

pub mod migration;

use std::collections::HashMap;

use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::sea_query::{
    Alias, DynIden, Expr, ExprTrait as _, IntoIden as _, OnConflict, Query,
};
use slipway_db::sea_orm::{ConnectionTrait, DbErr, TransactionTrait as _};
use slipway_db::sea_orm_migration::{MigrationTrait, MigratorTrait};

use migration::{DirectoryCursor as C, LogEnvironments as E};

/// The migrations of `slipway-log-streaming`, applied at start-up.
///
/// Each service keeps its own migrations table, so services can share one database (as
/// `slipway dev` does) without seeing each other's history.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(migration::CreateDirectory)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_log_streaming").into_iden()
    }
}

/// The one row of `log_directory_cursor`.
const CURSOR_ROW: i32 = 1;

/// An environment as catalog last described it: ids and its mode as the wire number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvironment {
    pub organization_id: String,
    pub project_id: String,
    pub mode: i32,
}

/// One change read from `EVENTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(String, StoredEnvironment),
    Remove(String),
}

/// The directory's tables.
#[derive(Clone, Debug)]
pub struct DirectoryStore {
    db: DatabaseConnection,
}

impl DirectoryStore {
    /// A store on a connection whose database has [`Migrator`]'s migrations applied.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Every stored environment, and the `EVENTS` sequence they are up to date with.
    pub async fn load(&self) -> Result<(HashMap<String, StoredEnvironment>, u64), DbErr> {
        let select = Query::select()
            .columns([E::EnvironmentId, E::OrganizationId, E::ProjectId, E::Mode])
            .from(E::Table)
            .to_owned();
        let mut environments = HashMap::new();
        for row in self.db.query_all(&select).await? {
            environments.insert(
                row.try_get("", "environment_id")?,
                StoredEnvironment {
                    organization_id: row.try_get("", "organization_id")?,
                    project_id: row.try_get("", "project_id")?,
                    mode: row.try_get("", "mode")?,
                },
            );
        }
        let cursor = Query::select()
            .column(C::Applied)
            .from(C::Table)
            .and_where(Expr::col(C::Id).eq(CURSOR_ROW))
            .to_owned();
        let applied = match self.db.query_one(&cursor).await? {
            Some(row) => u64::try_from(row.try_get::<i64>("", "applied")?).unwrap_or(0),
            None => 0,
        };
        Ok((environments, applied))
    }

    /// Writes `changes`, read from `EVENTS` up to sequence `applied`, in one transaction.
    pub async fn save(&self, changes: &[Change], applied: u64) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        for change in changes {
            match change {
                Change::Put(id, env) => {
                    let upsert = Query::insert()
                        .into_table(E::Table)
                        .columns([E::EnvironmentId, E::OrganizationId, E::ProjectId, E::Mode])
                        .values_panic([
                            id.clone().into(),
                            env.organization_id.clone().into(),
                            env.project_id.clone().into(),
                            env.mode.into(),
                        ])
                        .on_conflict(
                            OnConflict::column(E::EnvironmentId)
                                .update_columns([E::OrganizationId, E::ProjectId, E::Mode])
                                .to_owned(),
                        )
                        .to_owned();
                    txn.execute(&upsert).await?;
                }
                Change::Remove(id) => {
                    let delete = Query::delete()
                        .from_table(E::Table)
                        .and_where(Expr::col(E::EnvironmentId).eq(id.clone()))
                        .to_owned();
                    txn.execute(&delete).await?;
                }
            }
        }
        let applied = i64::try_from(applied).unwrap_or(i64::MAX);
        // Another replica may have recorded a later sequence: keep the larger one.
        let cursor = Query::insert()
            .into_table(C::Table)
            .columns([C::Id, C::Applied])
            .values_panic([CURSOR_ROW.into(), applied.into()])
            .on_conflict(
                OnConflict::column(C::Id)
                    .value(
                        C::Applied,
                        Expr::case(
                            Expr::col((C::Table, C::Applied)).lt(applied),
                            Expr::val(applied),
                        )
                        .finally(Expr::col((C::Table, C::Applied))),
                    )
                    .to_owned(),
            )
            .to_owned();
        txn.execute(&cursor).await?;
        txn.commit().await
    }
}
