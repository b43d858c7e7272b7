//! Running a service's migrations at start-up.

use sea_orm::sqlx::{self, Connection as _, PgConnection};
use sea_orm::{DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;

use crate::Error;

/// Apply every pending migration of `M`, and nothing else.
///
/// Idempotent: migrations already recorded in `M`'s migration table are skipped, so every
/// service calls this on every start.
///
/// On PostgreSQL, several replicas of a service may start at the same moment against the
/// same database. sea-orm-migration on its own would let them race (both see migration N
/// pending, both apply it, one fails on "relation already exists"), so the run is
/// serialized with a session-level advisory lock whose key is derived from `M`'s migration
/// table name: replicas of one service wait for each other, while services with their own
/// migration tables in a shared database do not. The lock is held on a connection detached
/// from the pool, so it cannot starve the migrations themselves of a connection, and it is
/// released by the server if this process dies mid-migration (the session ends).
///
/// On SQLite (the single-process embedded mode) there is no second process to race with,
/// and SQLite serializes writers itself.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), Error> {
    let table = M::migration_table_name().to_string();
    match db.get_database_backend() {
        DbBackend::Postgres => migrate_postgres::<M>(db, &table).await,
        _ => {
            let result = M::up(db, None).await;
            result.map_err(|source| Error::Migrate { source })
        }
    }
}

async fn migrate_postgres<M: MigratorTrait>(
    db: &DatabaseConnection,
    table: &str,
) -> Result<(), Error> {
    let key = lock_key(table);
    let lock_err = |what: &str, err: sqlx::Error| Error::MigrationLock {
        detail: format!("{what}: {err}"),
    };

    let pooled = db
        .get_postgres_connection_pool()
        .acquire()
        .await
        .map_err(|e| lock_err("no connection for the lock", e))?;
    let mut lock_conn: PgConnection = pooled.detach();

    let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut lock_conn)
        .await
        .map_err(|e| lock_err("pg_try_advisory_lock", e))?;
    if !acquired {
        tracing::info!(
            migration_table = table,
            "another instance is migrating this database; waiting for it to finish"
        );
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut lock_conn)
            .await
            .map_err(|e| lock_err("pg_advisory_lock", e))?;
    }

    let result = M::up(db, None).await;

    // Closing the session releases the lock even if the explicit unlock fails, so a failed
    // unlock is only worth a warning.
    if let Err(err) = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(&mut lock_conn)
        .await
    {
        tracing::warn!(error = %err, "releasing the migration lock failed; closing its session");
    }
    if let Err(err) = lock_conn.close().await {
        tracing::debug!(error = %err, "closing the migration lock session failed");
    }

    result.map_err(|source| Error::Migrate { source })?;
    tracing::info!(
        migration_table = table,
        "database migrations are up to date"
    );
    Ok(())
}

/// A stable 64-bit advisory-lock key for a migration table.
///
/// FNV-1a, written out here because the key must stay the same across Rust versions and
/// builds (std's hashers make no such promise), or two replicas of different builds would
/// take different locks during a rolling upgrade.
pub(crate) fn lock_key(table: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in b"slipway-db/migrate/".iter().chain(table.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_key_is_stable_and_per_table() {
        // Pinned: if it changed, replicas of an old and a new build would take different
        // locks and could migrate at the same time during a rolling upgrade.
        assert_eq!(lock_key("seaql_migrations"), -4_935_665_423_544_813_636);
        assert_ne!(
            lock_key("seaql_migrations"),
            lock_key("identity_migrations")
        );
    }
}
