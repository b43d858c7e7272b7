//! This service's tables: sea-orm entities, migrations, and the typed [`Store`] the RPCs
//! use.
//!
//! The store speaks domain values ([`types`]) and classified errors ([`StoreError`]); no
//! sea-orm type crosses its boundary except the [`DatabaseConnection`] it is built on. It
//! validates nothing the API layer validates (name syntax, role not `OWNER` on an
//! invitation, expiry ranges), but it keeps every invariant that two concurrent requests
//! could otherwise break, with constraints and transactions (see [`migration`]).
//!
//! Getters take an id alone and return the record with its `organization_id`: the caller
//! checks that the principal belongs to that organization and answers `NOT_FOUND`
//! otherwise. Listings always take the organization and never return another's rows.
//!
//! Transactions start with a write whenever they have one to make (a conditional update of
//! the parent's etag, say). On PostgreSQL that takes the row lock before anything is read;
//! on SQLite it takes the database's write lock at once, instead of upgrading a read
//! transaction later, which SQLite refuses (`SQLITE_BUSY`) when another writer got in
//! first.

mod api_tokens;
mod audit;
pub mod entity;
mod error;
mod invitations;
mod members;
pub mod migration;
mod organizations;
mod owner_credentials;
mod requests;
mod roles;
pub mod types;
mod users;

use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::sea_query::{Alias, DynIden, IntoIden as _};
use slipway_db::sea_orm::{DatabaseTransaction, TransactionTrait as _};
use slipway_db::sea_orm_migration::{MigrationTrait, MigratorTrait};

pub use error::{Precondition, Resource, StoreError, StoreResult};
pub use requests::{Created, RequestKey};
pub use types::*;

/// The migrations of `slipway-identity`, applied at start-up.
///
/// Each service keeps its own migrations table, so services can share one database (as
/// `slipway dev` does) without seeing each other's history.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(migration::CreateIdentitySchema),
            Box::new(migration::CreateRequestIds),
            Box::new(migration::CreateActionResults),
            Box::new(migration::CreateOwnerCredentials),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_identity").into_iden()
    }
}

/// Identity's persistence: organizations, users, members, invitations, roles, API tokens
/// and the audit log, on PostgreSQL or SQLite.
///
/// Cheap to clone (the connection is a pool handle); the methods live in one file per
/// resource next to this one.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// A store on a connection whose database has [`Migrator`]'s migrations applied.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
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

/// The role stored in a `(builtin_role, custom_role_id)` column pair.
fn role_from_columns(builtin: Option<&str>, custom: Option<&str>) -> StoreResult<RoleRef> {
    match (builtin, custom) {
        (Some(name), None) => BuiltinRole::parse(name)
            .map(RoleRef::Builtin)
            .ok_or_else(|| StoreError::corrupt(format!("unknown built-in role {name:?}"))),
        (None, Some(id)) => Ok(RoleRef::Custom(id.to_owned())),
        _ => Err(StoreError::corrupt(
            "a row holds both or neither of a built-in and a custom role".to_owned(),
        )),
    }
}

/// The principal stored in `*_kind`, `*_id`, `*_display_name` columns.
fn principal_from_columns(kind: &str, id: &str, display_name: &str) -> StoreResult<PrincipalRef> {
    let kind = PrincipalKind::parse(kind)
        .ok_or_else(|| StoreError::corrupt(format!("unknown principal kind {kind:?}")))?;
    Ok(PrincipalRef {
        kind,
        id: id.to_owned(),
        display_name: display_name.to_owned(),
    })
}

/// Why a conditional update or delete of the row `id` touched nothing: the row is gone
/// ([`StoreError::NotFound`]) or its etag moved on ([`StoreError::EtagMismatch`]).
async fn missed_update<E, C>(conn: &C, id: &str, resource: Resource) -> StoreError
where
    E: slipway_db::sea_orm::EntityTrait,
    C: slipway_db::sea_orm::ConnectionTrait,
    String: Into<<E::PrimaryKey as slipway_db::sea_orm::PrimaryKeyTrait>::ValueType>,
{
    match E::find_by_id(id.to_owned()).one(conn).await {
        Ok(Some(_)) => StoreError::EtagMismatch(resource),
        Ok(None) => StoreError::NotFound(resource),
        Err(err) => StoreError::db(err),
    }
}
