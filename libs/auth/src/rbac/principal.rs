//! Who is calling: `slipway.identity.v1.Principal`, with roles resolved for local checks.

use std::fmt;
use std::time::SystemTime;

use super::role::Role;

/// What kind of caller a principal is; each comes from one credential kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A person, signed in with an OIDC JWT.
    User,
    /// An API token of one organization (`slp_…`), acting with the token's role.
    ApiToken,
    /// The agent of one cluster (`slpa_…`); it may only connect for its own cluster.
    Agent,
    /// A Slipway control-plane service (`slps_…`) acting on its own behalf.
    Service,
}

impl PrincipalKind {
    /// A lowercase name for messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiToken => "api token",
            Self::Agent => "agent",
            Self::Service => "service",
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal's place in one organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    organization_id: Box<str>,
    member_id: Option<Box<str>>,
    role: Option<Role>,
}

impl Membership {
    /// A membership with a role: a user's (add [`Membership::with_member_id`]) or a token's.
    pub fn new(organization_id: impl Into<Box<str>>, role: impl Into<Role>) -> Self {
        Self {
            organization_id: organization_id.into(),
            member_id: None,
            role: Some(role.into()),
        }
    }

    /// Sets the Member id, which lets a user act on itself (leave the organization).
    pub fn with_member_id(mut self, member_id: impl Into<Box<str>>) -> Self {
        self.member_id = Some(member_id.into());
        self
    }

    /// The organization.
    pub fn organization_id(&self) -> &str {
        &self.organization_id
    }

    /// The Member id; users only.
    pub fn member_id(&self) -> Option<&str> {
        self.member_id.as_deref()
    }

    /// The role held there; none for an agent, which acts only through its cluster.
    pub fn role(&self) -> Option<&Role> {
        self.role.as_ref()
    }
}

/// Who a credential stands for, with the roles it had when resolved. Services cache it and
/// drop it on identity change events; [`authorize`](super::authorize) decides from it
/// alone, with no lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    kind: PrincipalKind,
    id: Box<str>,
    display_name: Box<str>,
    memberships: Vec<Membership>,
    expire_time: Option<SystemTime>,
}

impl Principal {
    /// A user with its memberships (possibly none yet).
    pub fn user(
        id: impl Into<Box<str>>,
        memberships: impl IntoIterator<Item = Membership>,
    ) -> Self {
        Self::new(
            PrincipalKind::User,
            id.into(),
            memberships.into_iter().collect(),
        )
    }

    /// An API token: one organization, one role.
    pub fn api_token(
        id: impl Into<Box<str>>,
        organization_id: impl Into<Box<str>>,
        role: impl Into<Role>,
    ) -> Self {
        Self::new(
            PrincipalKind::ApiToken,
            id.into(),
            vec![Membership::new(organization_id, role)],
        )
    }

    /// The agent of `cluster_id`, a cluster of `organization_id`. It holds no role.
    pub fn agent(cluster_id: impl Into<Box<str>>, organization_id: impl Into<Box<str>>) -> Self {
        let membership = Membership {
            organization_id: organization_id.into(),
            member_id: None,
            role: None,
        };
        Self::new(PrincipalKind::Agent, cluster_id.into(), vec![membership])
    }

    /// A control-plane service, named e.g. `orchestrator`. It acts in every organization,
    /// so it has no memberships.
    pub fn service(name: impl Into<Box<str>>) -> Self {
        Self::new(PrincipalKind::Service, name.into(), Vec::new())
    }

    fn new(kind: PrincipalKind, id: Box<str>, memberships: Vec<Membership>) -> Self {
        Self {
            kind,
            id,
            display_name: Box::default(),
            memberships,
            expire_time: None,
        }
    }

    /// Sets the name shown to people: email, token name, cluster name or service name.
    pub fn with_display_name(mut self, name: impl Into<Box<str>>) -> Self {
        self.display_name = name.into();
        self
    }

    /// Sets when the credential stops being valid (JWT `exp`, token `expire_time`).
    pub fn with_expire_time(mut self, expire_time: SystemTime) -> Self {
        self.expire_time = Some(expire_time);
        self
    }

    /// The kind of caller.
    pub const fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The user id, API token id, cluster id (agent) or service name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name shown to people; empty when not set.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// The organizations the principal acts in.
    pub fn memberships(&self) -> &[Membership] {
        &self.memberships
    }

    /// The membership in `organization_id`, if any.
    pub fn membership(&self, organization_id: &str) -> Option<&Membership> {
        self.memberships
            .iter()
            .find(|m| &*m.organization_id == organization_id)
    }

    /// When the credential expires; `None`: never (it may still be revoked).
    pub const fn expire_time(&self) -> Option<SystemTime> {
        self.expire_time
    }
}
