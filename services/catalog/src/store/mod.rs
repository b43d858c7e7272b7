//! Catalog's persistence: every resource kind in its own table of the same shape.
//!
//! The catalog holds many kinds of resource (projects, environments, services of six kinds,
//! clusters, registries, git credentials, variables, deployment rules) whose settings are
//! rich, nested and versioned by their protobuf schema. So each row keeps, in typed and
//! indexed columns, only what the database must enforce or search — identity, ownership,
//! parentage, name uniqueness, the etag — and the resource's settings as its protobuf
//! encoding ([`Row::spec`]). Adding a setting is then a proto change, not a migration, and
//! one generic store ([`rows`]) serves every kind with the same guarantees: conditional
//! updates on the etag, keyset pagination by id or by name, `request_id` idempotency in
//! the insert's transaction, children refused or removed together on delete.
//!
//! Secrets never sit in `spec`: they go, sealed by [`crate::secrets`], in [`Row::sealed`].
//!
//! Getters take an id alone and return the row with its `organization_id`: the API checks
//! that the caller may see that organization and answers `NOT_FOUND` otherwise. Listings
//! always filter by organization.

mod cache;
mod error;
mod keys;
pub mod migration;
mod rows;

use chrono::{DateTime, SubsecRound as _, Utc};
use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::sea_query::{Alias, DynIden, IntoIden as _};
use slipway_db::sea_orm::{DatabaseTransaction, TransactionTrait as _};
use slipway_db::sea_orm_migration::{MigrationTrait, MigratorTrait};

pub use error::{StoreError, StoreResult};
pub use keys::ClusterConnection;
pub use rows::{
    Children, Cursor, Filter, IdCursor, Kind, NameCursor, NewRow, Order, Page, PageRequest,
    RequestKey, Row, RowChanges,
};

/// The migrations of `slipway-catalog`, applied at start-up.
///
/// Each service keeps its own migrations table, so services can share one database (as
/// `slipway dev` does) without seeing each other's history.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(migration::CreateCatalogSchema),
            Box::new(migration::IndexNamesPerOrganization),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_catalog").into_iden()
    }
}

/// The catalog's tables on PostgreSQL or SQLite. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    cache: std::sync::Arc<cache::RowCache>,
    /// The task dropping cached rows on other replicas' changes; stops with the last clone.
    follower: Option<std::sync::Arc<slipway_service::AbortOnDrop>>,
}

impl Store {
    /// A store on a connection whose database has [`Migrator`]'s migrations applied.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            cache: std::sync::Arc::default(),
            follower: None,
        }
    }

    /// This store, dropping its cached rows whenever a catalog event arrives on `bus`
    /// (another replica changed something). Spawns the follower: call inside a runtime.
    pub fn following_changes(mut self, bus: std::sync::Arc<dyn slipway_events::EventBus>) -> Self {
        let cache = std::sync::Arc::clone(&self.cache);
        let task = tokio::spawn(async move {
            loop {
                match bus.subscribe("slipway.events.catalog.>").await {
                    Ok(mut subscription) => {
                        // Events may have been missed while not subscribed.
                        cache.clear();
                        while subscription.next().await.is_some() {
                            cache.clear();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot follow catalog events; retrying");
                    }
                }
                cache.clear();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        self.follower = Some(std::sync::Arc::new(slipway_service::AbortOnDrop::new(task)));
        self
    }

    /// Drops every cached row: another replica changed something (see [`cache`]).
    pub fn forget_cached_rows(&self) {
        self.cache.clear();
    }

    /// The connection the store runs on.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn begin(&self) -> StoreResult<DatabaseTransaction> {
        self.db.begin().await.map_err(StoreError::db)
    }
}

/// Commits `txn`; a failed commit means nothing was written.
async fn commit(txn: DatabaseTransaction) -> StoreResult<()> {
    txn.commit().await.map_err(StoreError::db)
}

/// Now, truncated to whole microseconds: the precision both backends keep, so a time read
/// back equals the time written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new id: a UUIDv7, so ids sort by creation time and keyset pages by id see rows
/// inserted during a walk only after the rows that existed before it.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A new etag: opaque, different on every write.
pub fn new_etag() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
