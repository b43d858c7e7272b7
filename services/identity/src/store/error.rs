//! [`StoreError`]: what a store operation can fail with, already classified for the API.

use slipway_db::DbErr;

/// The kinds of record the store keeps, named in [`StoreError`] so the API can fill
/// `ResourceInfo` without guessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    User,
    Organization,
    Member,
    Invitation,
    Role,
    ApiToken,
}

impl Resource {
    /// The lowercase name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Organization => "organization",
            Self::Member => "member",
            Self::Invitation => "invitation",
            Self::Role => "role",
            Self::ApiToken => "api token",
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a change was refused although everything named exists: the state does not allow it.
/// Each maps to `FAILED_PRECONDITION` (or, for [`Self::AlreadyOwner`], `INVALID_ARGUMENT`)
/// with the `ErrorInfo` reason given by [`Self::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precondition {
    /// The owner's role or membership changes only through a transfer of ownership, and no
    /// one else can be given `OWNER`.
    OwnerImmutable,
    /// The member named as new owner already is the owner.
    AlreadyOwner,
    /// A member, pending invitation or API token still holds the role.
    RoleInUse,
    /// The invitation's expire time has passed.
    InvitationExpired,
    /// The invitation was revoked.
    InvitationRevoked,
    /// The invitation was already accepted.
    InvitationAlreadyAccepted,
}

impl Precondition {
    /// The stable `ErrorInfo` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::OwnerImmutable => "OWNER_IMMUTABLE",
            Self::AlreadyOwner => "ALREADY_OWNER",
            Self::RoleInUse => "ROLE_IN_USE",
            Self::InvitationExpired => "INVITATION_EXPIRED",
            Self::InvitationRevoked => "INVITATION_REVOKED",
            Self::InvitationAlreadyAccepted => "INVITATION_ALREADY_ACCEPTED",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::OwnerImmutable => "the owner changes only through a transfer of ownership",
            Self::AlreadyOwner => "the member already is the owner",
            Self::RoleInUse => "the role is held by a member, a pending invitation or an api token",
            Self::InvitationExpired => "the invitation has expired",
            Self::InvitationRevoked => "the invitation was revoked",
            Self::InvitationAlreadyAccepted => "the invitation was already accepted",
        }
    }
}

impl std::fmt::Display for Precondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// What a store operation failed with.
///
/// The variants are the distinctions the API answers differently; driver errors are
/// classified with slipway-db's helpers, so PostgreSQL and SQLite fail the same way. The
/// messages are lowercase and carry no SQL, safe to show; the database error stays
/// available as the `source` for logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (`NOT_FOUND`).
    #[error("{0} not found")]
    NotFound(Resource),

    /// A record with the same unique key exists (`ALREADY_EXISTS`): a name taken in its
    /// scope, a user already a member, an email already invited.
    #[error("{0} already exists")]
    AlreadyExists(Resource),

    /// The record changed since the caller read it (`FAILED_PRECONDITION`).
    #[error("the {0} was changed since it was read (stale etag)")]
    EtagMismatch(Resource),

    /// The record's state does not allow the change.
    #[error("{0}")]
    FailedPrecondition(Precondition),

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

    /// A row holding a value the code cannot read back (an unknown role name, say).
    pub(crate) fn corrupt(what: String) -> Self {
        Self::Internal(DbErr::Custom(what))
    }

    /// An error of an insert or update that may hit a unique key of `resource`.
    pub(crate) fn on_write(resource: Resource) -> impl Fn(DbErr) -> Self {
        move |err| {
            if slipway_db::is_unique_violation(&err) {
                Self::AlreadyExists(resource)
            } else {
                Self::db(err)
            }
        }
    }
}

/// Results of the store.
pub type StoreResult<T> = Result<T, StoreError>;
