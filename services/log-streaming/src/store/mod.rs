//! This service's tables: sea-orm entities and migrations.

use slipway_db::sea_orm::sea_query::{Alias, DynIden, IntoIden as _};
use slipway_db::sea_orm_migration::{MigrationTrait, MigratorTrait};

/// The migrations of `slipway-log-streaming`, applied at start-up.
///
/// Each service keeps its own migrations table, so services can share one database (as
/// `slipway dev` does) without seeing each other's history.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_log_streaming").into_iden()
    }
}
