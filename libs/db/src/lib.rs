#![forbid(unsafe_code)]
//! Database access shared by every Slipway service.
//!
//! A service keeps its sea-orm entities, migrations and queries in its own `store/`; this
//! crate owns what must behave the same everywhere:
//!
//! - [`connect`]: one way to open a pool, for PostgreSQL (`postgres://…`, a real install)
//!   and SQLite (`sqlite://path`, the embedded `slipway dev` mode), with the pool settings
//!   passed in as plain values so this crate depends on no other Slipway crate.
//! - [`migrate`]: apply a service's sea-orm-migration [`MigratorTrait`] at start-up,
//!   idempotently, and safely when several replicas start together.
//! - [`is_unique_violation`] and friends: classify a [`DbErr`] the same way on both
//!   backends, so the API answers `ALREADY_EXISTS`, `UNAVAILABLE`, … consistently.
//! - [`Error`]: whose messages never contain the password of the URL.
//!
//! ```no_run
//! # async fn start() -> Result<(), slipway_db::Error> {
//! # struct Migrator;
//! # #[sea_orm_migration::async_trait::async_trait]
//! # impl slipway_db::MigratorTrait for Migrator {
//! #     fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> { vec![] }
//! # }
//! use std::time::Duration;
//! let db = slipway_db::connect("sqlite://data/catalog.db", 8, Duration::from_secs(5)).await?;
//! slipway_db::migrate::<Migrator>(&db).await?;
//! # Ok(()) }
//! ```

mod classify;
mod connect;
mod error;
mod migrate;
mod url;

pub use classify::{is_foreign_key_violation, is_unavailable, is_unique_violation};
pub use connect::connect;
pub use error::Error;
pub use migrate::migrate;
pub use url::{backend_for_url, redact_url};

/// Re-exported so services name the exact sea-orm this crate was built with.
pub use sea_orm;
pub use sea_orm::{DatabaseConnection, DbBackend, DbErr};
/// Re-exported so services' migrators implement the trait [`migrate`] expects.
pub use sea_orm_migration;
pub use sea_orm_migration::MigratorTrait;

/// [`connect`], then [`migrate`]: what a service does at start-up.
pub async fn connect_and_migrate<M: MigratorTrait>(
    url: &str,
    max_connections: u32,
    connect_timeout: std::time::Duration,
) -> Result<DatabaseConnection, Error> {
    let db = connect(url, max_connections, connect_timeout).await?;
    migrate::<M>(&db).await?;
    Ok(db)
}
