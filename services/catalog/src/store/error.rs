//! [`StoreError`]: what a store operation can fail with, already classified for the API.

use slipway_db::DbErr;

use super::Kind;

/// What a store operation failed with. Messages are lowercase and carry no SQL; the
/// database error stays available as the `source` for logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (`NOT_FOUND`).
    #[error("{0} not found")]
    NotFound(Kind),

    /// A row with the same name exists in the same parent (`ALREADY_EXISTS`).
    #[error("{0} already exists")]
    AlreadyExists(Kind),

    /// The row changed since the caller read it (`FAILED_PRECONDITION`).
    #[error("the {0} was changed since it was read (stale etag)")]
    EtagMismatch(Kind),

    /// Deleting a row that still has children of `child` kind, without `force`
    /// (`FAILED_PRECONDITION`).
    #[error("the {parent} still has {child} resources; delete them first or pass force")]
    HasChildren { parent: Kind, child: Kind },

    /// A referenced row of another kind does not exist any more (`FAILED_PRECONDITION`).
    #[error("the {0} it refers to no longer exists")]
    MissingReference(Kind),

    /// The database could not be reached or had no free connection in time
    /// (`UNAVAILABLE`, worth retrying).
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),

    /// Anything else: a bug or a corrupt row (`INTERNAL`).
    #[error("internal database error")]
    Internal(#[source] DbErr),
}

impl StoreError {
    /// A database error that is not one of the expected refusals.
    pub(crate) fn db(err: DbErr) -> Self {
        if slipway_db::is_unavailable(&err) {
            Self::Unavailable(err)
        } else {
            Self::Internal(err)
        }
    }

    /// An error of an insert or update that may hit the name key of `kind`.
    pub(crate) fn on_write(kind: Kind) -> impl Fn(DbErr) -> Self {
        move |err| {
            if slipway_db::is_unique_violation(&err) {
                Self::AlreadyExists(kind)
            } else if slipway_db::is_foreign_key_violation(&err) {
                Self::MissingReference(kind.parent().unwrap_or(kind))
            } else {
                Self::db(err)
            }
        }
    }

    /// A row holding a value the code cannot read back.
    pub(crate) fn corrupt(what: String) -> Self {
        Self::Internal(DbErr::Custom(what))
    }
}

/// Results of the store.
pub type StoreResult<T> = Result<T, StoreError>;
