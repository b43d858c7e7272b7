//! Classifying database errors, so services map them to the right gRPC code.
//!
//! The same logical failure has a different shape per backend (PostgreSQL SQLSTATE
//! `23505`, SQLite extended codes 2067/1555 for a duplicate key), and the API must answer
//! the same way on both (`ALREADY_EXISTS`). These helpers hide the difference.

use std::ops::Deref;

use sea_orm::sqlx::error::ErrorKind;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// The driver's database error inside a [`DbErr`], if it came from the server.
fn driver_error(err: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => match e.deref() {
            sea_orm::sqlx::Error::Database(db) => Some(db.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `err` is a unique or primary-key constraint violation, on PostgreSQL or SQLite.
///
/// Services map this to `ALREADY_EXISTS` (a duplicate name in its parent, a repeated id),
/// so the check must not depend on message text, which differs per backend and version.
pub fn is_unique_violation(err: &DbErr) -> bool {
    if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return true;
    }
    driver_error(err).is_some_and(|db| db.kind() == ErrorKind::UniqueViolation)
}

/// Whether `err` is a foreign-key constraint violation (a row refers to a missing parent,
/// or a parent still has children), on PostgreSQL or SQLite.
pub fn is_foreign_key_violation(err: &DbErr) -> bool {
    if matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    ) {
        return true;
    }
    driver_error(err).is_some_and(|db| db.kind() == ErrorKind::ForeignKeyViolation)
}

/// Whether `err` says the database could not be reached or no connection was free in time,
/// rather than that the statement was wrong: services answer `UNAVAILABLE` (retryable)
/// for these instead of `INTERNAL`.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            e.deref(),
            sea_orm::sqlx::Error::Io(_)
                | sea_orm::sqlx::Error::PoolTimedOut
                | sea_orm::sqlx::Error::PoolClosed
                | sea_orm::sqlx::Error::WorkerCrashed
        ),
        DbErr::Conn(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ConnAcquireErr;

    #[test]
    fn non_driver_errors_are_not_violations() {
        let err = DbErr::Custom("duplicate key value violates unique constraint".into());
        assert!(!is_unique_violation(&err));
        assert!(!is_foreign_key_violation(&err));
        assert!(!is_unavailable(&err));
        assert!(!is_unique_violation(&DbErr::RecordNotFound("x".into())));
    }

    #[test]
    fn pool_exhaustion_is_unavailable() {
        assert!(is_unavailable(&DbErr::ConnectionAcquire(
            ConnAcquireErr::Timeout
        )));
        assert!(is_unavailable(&DbErr::Conn(RuntimeErr::Internal(
            "gone".into()
        ))));
    }
}
