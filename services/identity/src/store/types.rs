//! The domain values the store takes and returns.
//!
//! They are plain Rust types, independent of sea-orm and of the protobuf messages: the gRPC
//! adapter converts to and from the API, and the store converts to and from rows. Enum-like
//! values are stored as stable UPPER_SNAKE strings (`OWNER`, `PENDING`, `API_TOKEN`), which
//! read well in SQL and survive reordering of the Rust enums.

use chrono::{DateTime, SubsecRound as _, Utc};
use serde::{Deserialize, Serialize};

/// The current time, truncated to whole microseconds.
///
/// PostgreSQL keeps microseconds; a value with nanoseconds would come back different from
/// what was written, breaking equality checks, and on SQLite (where times are text) two
/// encodings of "the same" instant would not compare equal. Every time the store writes
/// goes through this function or [`truncate_time`].
pub fn now() -> DateTime<Utc> {
    truncate_time(Utc::now())
}

/// `time` truncated to whole microseconds, the precision every backend keeps.
pub fn truncate_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// A new id: a UUIDv7 in its hyphenated lowercase text form.
///
/// UUIDv7 starts with a millisecond timestamp, so ids sort by creation time; this is what
/// lets invitations be listed newest-first by id alone.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A new etag. Any value never used before would do; a UUIDv7 is cheap and unique.
pub(crate) fn new_etag() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The key emails are compared by: lowercase. Invitations and users are matched on it, so
/// `Ada@Example.com` and `ada@example.com` are one invitee on every backend (SQLite's
/// `lower()` only knows ASCII, so lowercasing happens here, not in SQL).
pub(crate) fn email_key(email: &str) -> String {
    email.to_lowercase()
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The stable text stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value stored as `text`, if it is one.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// The roles every organization has (DESIGN.md, RBAC).
    BuiltinRole {
        /// Everything; exactly one member holds it.
        Owner => "OWNER",
        /// Everything but deleting the organization and transferring ownership.
        Admin => "ADMIN",
        /// Runs the platform: clusters, tokens, deploys anywhere; no members.
        Devops => "DEVOPS",
        /// Only what every member holds.
        Billing => "BILLING",
        /// Reads, changes nothing.
        Viewer => "VIEWER",
    }
}

string_enum! {
    /// What kind of caller a principal is.
    PrincipalKind {
        /// A person signed in through OIDC.
        User => "USER",
        /// An API token of one organization.
        ApiToken => "API_TOKEN",
        /// The agent of one cluster.
        Agent => "AGENT",
        /// A Slipway control-plane service.
        Service => "SERVICE",
    }
}

string_enum! {
    /// Where an invitation stands.
    InvitationStatus {
        /// Waiting for the invitee.
        Pending => "PENDING",
        /// Accepted; the invitee is a member (final).
        Accepted => "ACCEPTED",
        /// Revoked before acceptance (final).
        Revoked => "REVOKED",
        /// Its expire time passed before acceptance (final).
        Expired => "EXPIRED",
    }
}

/// The role held by a member, an invitation or an API token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RoleRef {
    /// A built-in role.
    Builtin(BuiltinRole),
    /// The id of a custom [`Role`] of the same organization.
    Custom(String),
}

impl RoleRef {
    /// Whether this is the built-in `OWNER` role.
    pub fn is_owner(&self) -> bool {
        matches!(self, Self::Builtin(BuiltinRole::Owner))
    }

    /// The `(builtin_role, custom_role_id)` column pair this role is stored as: exactly one
    /// is set, so a custom role id can carry a foreign key to `roles`.
    pub(crate) fn to_columns(&self) -> (Option<String>, Option<String>) {
        match self {
            Self::Builtin(role) => (Some(role.as_str().to_owned()), None),
            Self::Custom(id) => (None, Some(id.clone())),
        }
    }
}

/// A short reference to a principal, as recorded on what it created and in audit events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalRef {
    /// The kind of principal.
    pub kind: PrincipalKind,
    /// Its id: user id, API token id, cluster id or service name.
    pub id: String,
    /// The name shown to people at the time it was recorded.
    pub display_name: String,
}

/// The SHA-256 digest of a secret (an API token or invitation token), the only form in
/// which the store ever sees one.
///
/// A distinct type rather than a string, so that a plaintext secret cannot be passed where
/// its hash is expected. Stored as 64 lowercase hex characters under a unique index, which
/// is what makes "find the token for this secret" one indexed lookup.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretHash(String);

impl SecretHash {
    /// Wraps a SHA-256 digest computed by the caller.
    pub fn from_digest(digest: [u8; 32]) -> Self {
        use std::fmt::Write as _;
        let mut hex = String::with_capacity(64);
        for byte in digest {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        Self(hex)
    }

    /// The digest as 64 lowercase hex characters.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretHash {
    /// A hash is not the secret, but there is no reason to print it whole either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// A person known to Slipway, created on first sight of a valid OIDC JWT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub oidc_issuer: String,
    pub oidc_subject: String,
    pub email: String,
    pub display_name: String,
    pub create_time: DateTime<Utc>,
    /// When the email or name last changed.
    pub update_time: DateTime<Utc>,
}

/// What a verified OIDC JWT says about its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `email`.
    pub email: String,
    /// `name`; may be empty.
    pub display_name: String,
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    /// DNS label, unique in the installation.
    pub name: String,
    pub display_name: String,
    /// The user id of the one member holding `OWNER`.
    pub owner_user_id: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub etag: String,
}

/// The fields of a new organization (validated by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrganization {
    pub name: String,
    pub display_name: String,
}

/// The fields an organization update changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrganizationChanges {
    pub name: Option<String>,
    pub display_name: Option<String>,
}

/// The outcome of a transfer of ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnershipTransfer {
    /// The organization with its new owner and etag.
    pub organization: Organization,
    /// The previous owner, now `ADMIN`.
    pub previous_owner: Member,
    /// The new owner, now `OWNER`.
    pub new_owner: Member,
}

/// One user's place in one organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    /// The user's email (from the users table, so always current).
    pub email: String,
    /// The user's name (from the users table).
    pub display_name: String,
    pub role: RoleRef,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub etag: String,
}

/// A user's membership as a principal carries it: enough to authorize without another read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserMembership {
    pub organization_id: String,
    pub organization_name: String,
    pub member_id: String,
    pub role: RoleRef,
}

/// An invitation for one email address to join an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub organization_id: String,
    /// As the inviter wrote it; compared case-insensitively.
    pub email: String,
    pub role: RoleRef,
    pub status: InvitationStatus,
    pub inviter: PrincipalRef,
    pub expire_time: DateTime<Utc>,
    /// The member created on acceptance.
    pub member_id: Option<String>,
    /// When it was accepted, revoked or marked expired.
    pub close_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// The fields of a new invitation (validated by the caller: role not `OWNER`, expiry range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvitation {
    pub organization_id: String,
    pub email: String,
    pub role: RoleRef,
    /// The hash of the invitation token handed to the invitee.
    pub token_hash: SecretHash,
    pub expire_time: DateTime<Utc>,
    pub inviter: PrincipalRef,
}

/// A custom role of an organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub organization_id: String,
    /// DNS label, unique in the organization.
    pub name: String,
    pub description: String,
    /// The role's grants as JSON. The RBAC code owns their shape; the store keeps them as
    /// one document because they are always read and replaced whole.
    pub grants: serde_json::Value,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub etag: String,
}

/// The fields of a new custom role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRole {
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub grants: serde_json::Value,
}

/// The fields a role update changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub grants: Option<serde_json::Value>,
}

/// An API token's metadata (its secret is never stored, only its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub id: String,
    pub organization_id: String,
    /// DNS label, unique among the organization's tokens.
    pub name: String,
    pub description: String,
    pub role: RoleRef,
    /// `None`: it never expires.
    pub expire_time: Option<DateTime<Utc>>,
    /// The first characters of the secret, to recognise a leaked token.
    pub secret_hint: String,
    pub creator: PrincipalRef,
    pub last_use_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
}

/// The fields of a new API token (validated by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApiToken {
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub role: RoleRef,
    pub secret_hash: SecretHash,
    pub secret_hint: String,
    pub expire_time: Option<DateTime<Utc>>,
    pub creator: PrincipalRef,
}

/// What an audited call acted on. Kinds and modes are the API's enum names without their
/// prefix (`ENVIRONMENT`, `PRODUCTION`); `None` is "not set".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditTarget {
    pub kind: Option<String>,
    pub id: Option<String>,
    pub project_id: Option<String>,
    pub environment_id: Option<String>,
    pub environment_mode: Option<String>,
    pub cluster_id: Option<String>,
}

/// Where an audited call came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub ip_address: String,
    pub user_agent: String,
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    pub organization_id: String,
    pub actor: PrincipalRef,
    /// The permission checked, e.g. `deploy.environments.deploy`.
    pub action: String,
    /// The full gRPC method.
    pub method: String,
    pub target: AuditTarget,
    pub event_time: DateTime<Utc>,
    pub origin: Origin,
    /// The gRPC status code name of the answer (`OK`, `PERMISSION_DENIED`, …).
    pub status_code: String,
    /// The `ErrorInfo` reason of a failed call; empty otherwise.
    pub error_reason: String,
}

/// A call to record; the store assigns the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub organization_id: String,
    pub actor: PrincipalRef,
    pub action: String,
    pub method: String,
    pub target: AuditTarget,
    pub event_time: DateTime<Utc>,
    pub origin: Origin,
    pub status_code: String,
    pub error_reason: String,
}

/// Which actions an audit listing keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionFilter {
    /// Exactly this action.
    Exact(String),
    /// Actions starting with this text (`deploy.` for the API's `deploy.*`).
    Prefix(String),
}

/// Filters of an audit listing; they combine with AND, and `None` keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only calls by this principal (kind and id).
    pub actor: Option<(PrincipalKind, String)>,
    pub action: Option<ActionFilter>,
    /// Only calls on targets matching every field set here.
    pub target: AuditTarget,
    /// Only events at or after this time.
    pub start_time: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub end_time: Option<DateTime<Utc>>,
}

/// The largest page the store returns, whatever is asked (API-STYLE.md caps at 500).
pub const MAX_PAGE_SIZE: u64 = 500;

/// One page of a keyset-paginated listing: at most `size` items after `after`.
///
/// Keyset rather than offset pagination: each page is one indexed range scan however deep
/// the listing goes, and rows inserted or deleted meanwhile neither shift later pages nor
/// make an item appear twice. The cursor holds the sort key of the last item returned, so it
/// stays valid whatever happens to that item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// How many items at most, clamped to `1..=MAX_PAGE_SIZE` (the API maps 0 to 50
    /// before calling).
    pub size: u64,
    /// Where to continue: [`Page::next`] of the previous page; `None` for the first page.
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    /// The first page of `size` items.
    pub fn first(size: u64) -> Self {
        Self { size, after: None }
    }

    /// The page size actually used.
    pub(crate) fn limit(&self) -> u64 {
        self.size.clamp(1, MAX_PAGE_SIZE)
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    /// The cursor of the next page; `None` when this page is the last (the store reads one
    /// row more than it returns to know).
    pub next: Option<C>,
}

/// Cursor of listings ordered by a name unique in their scope (organizations, roles, API
/// tokens). Serializable so the API can seal it into a page token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCursor {
    pub name: String,
}

/// Cursor of member listings, ordered by email then member id (emails need not be unique).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCursor {
    pub email: String,
    pub id: String,
}

/// Cursor of listings ordered by id (invitations, newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdCursor {
    pub id: String,
}

/// Cursor of audit listings, ordered by event time then id, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCursor {
    pub event_time: DateTime<Utc>,
    pub id: String,
}

/// Splits a result of `limit + 1` rows into a page: the extra row only says there is more.
pub(crate) fn into_page<T, C>(
    mut items: Vec<T>,
    limit: u64,
    cursor_of: impl Fn(&T) -> C,
) -> Page<T, C> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next }
}
