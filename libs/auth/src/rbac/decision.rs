//! The outcome of a check: `slipway.identity.v1.Decision`, with how to answer a denial.

use std::fmt;

use super::action::Action;
use super::principal::PrincipalKind;
use super::resource::{EnvironmentMode, ScopeError};
use super::role::BuiltinRole;

/// Allowed or denied, and why. Small and `Copy`: deciding allocates nothing; a message is
/// only formatted when a denial is displayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// The action may go ahead.
    Allow(AllowReason),
    /// It may not; [`Denial::answer`] says what to tell the caller.
    Deny(Denial),
}

impl Decision {
    /// Whether the action is allowed.
    pub const fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// `Ok` when allowed, so a handler can write `authorize(…).into_result()?` with a
    /// `From<Denial>` for its error type.
    pub const fn into_result(self) -> Result<AllowReason, Denial> {
        match self {
            Self::Allow(reason) => Ok(reason),
            Self::Deny(denial) => Err(denial),
        }
    }

    /// The `slipway.identity.v1.DecisionReason` number, for Check's response. 0
    /// (UNSPECIFIED) for an invalid resource, which Check answers as INVALID_ARGUMENT
    /// instead of a decision.
    pub const fn reason_number(&self) -> i32 {
        match self {
            Self::Allow(reason) => reason.number(),
            Self::Deny(denial) => denial.reason.number(),
        }
    }
}

/// Why an action is allowed (`DecisionReason` 1–3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllowReason {
    /// The principal's role in the organization grants the action on the resource.
    RoleGrants,
    /// The principal acts on itself: a member leaving, a token reading or revoking itself,
    /// an agent connecting for its own cluster.
    OnItself,
    /// A Slipway control-plane service principal.
    ControlPlane,
}

impl AllowReason {
    /// The `DecisionReason` number.
    pub const fn number(self) -> i32 {
        match self {
            Self::RoleGrants => 1,
            Self::OnItself => 2,
            Self::ControlPlane => 3,
        }
    }
}

/// Why an action is denied (`DecisionReason` 4–8, plus the invalid request Check refuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The principal has no place in the resource's organization. Answered NOT_FOUND, so
    /// other organizations' resources stay invisible.
    NotAMember,
    /// A member whose role does not grant the action here. PERMISSION_DENIED, or NOT_FOUND
    /// when the role cannot even see the target.
    RoleLacksPermission,
    /// The action is never open to this kind of principal (a user connecting as an agent,
    /// a token resolving secrets, an agent reading anything).
    PrincipalKindNotAllowed,
    /// The principal no longer exists (token revoked, user or cluster deleted). Never
    /// produced by [`authorize`](super::authorize), which sees only a live principal;
    /// identity's Check produces it when the principal it was asked about is gone.
    PrincipalRevoked,
    /// The credential expired after it was resolved.
    PrincipalExpired,
    /// The resource lacks a scope field the action needs: the asking service's bug. Not a
    /// proto DecisionReason; Check answers INVALID_ARGUMENT naming the field.
    InvalidResource(ScopeError),
}

impl DenyReason {
    /// The `DecisionReason` number; 0 for [`DenyReason::InvalidResource`].
    pub const fn number(self) -> i32 {
        match self {
            Self::NotAMember => 4,
            Self::RoleLacksPermission => 5,
            Self::PrincipalKindNotAllowed => 6,
            Self::PrincipalRevoked => 7,
            Self::PrincipalExpired => 8,
            Self::InvalidResource(_) => 0,
        }
    }
}

/// The gRPC status a service answers a denial with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// `NOT_FOUND`: the caller may not learn that the target exists.
    NotFound,
    /// `PERMISSION_DENIED`: the caller sees the target but may not do this.
    PermissionDenied,
    /// `UNAUTHENTICATED`: the credential is no longer good.
    Unauthenticated,
    /// `INVALID_ARGUMENT`: the check itself was malformed.
    InvalidArgument,
}

/// A denial, with enough context to answer and to explain it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    reason: DenyReason,
    answer: Answer,
    action: Action,
    principal: PrincipalKind,
    role: Option<RoleLabel>,
    mode: Option<EnvironmentMode>,
}

/// Which role a denial is about, for its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoleLabel {
    /// A built-in role.
    Builtin(BuiltinRole),
    /// A custom role (its id stays in the cached role, not in the denial).
    Custom,
}

impl Denial {
    pub(crate) const fn new(
        reason: DenyReason,
        answer: Answer,
        action: Action,
        principal: PrincipalKind,
    ) -> Self {
        Self {
            reason,
            answer,
            action,
            principal,
            role: None,
            mode: None,
        }
    }

    /// A denial for a principal that is gone. Identity's Check answers it when the principal
    /// it is asked about was revoked or deleted, which a cached principal cannot know.
    pub const fn principal_revoked(action: Action, principal: PrincipalKind) -> Self {
        Self::new(
            DenyReason::PrincipalRevoked,
            Answer::Unauthenticated,
            action,
            principal,
        )
    }

    pub(crate) const fn with_role(
        mut self,
        role: RoleLabel,
        mode: Option<EnvironmentMode>,
    ) -> Self {
        self.role = Some(role);
        self.mode = mode;
        self
    }

    /// Why.
    pub const fn reason(&self) -> DenyReason {
        self.reason
    }

    /// What to answer.
    pub const fn answer(&self) -> Answer {
        self.answer
    }

    /// The action denied.
    pub const fn action(&self) -> Action {
        self.action
    }

    /// The `ErrorInfo` reason (domain `slipway.dev`) to attach, if the answer carries one:
    /// NOT_FOUND carries none, so it reads like any other missing resource.
    pub const fn error_reason(&self) -> Option<&'static str> {
        match self.reason {
            DenyReason::NotAMember => None,
            DenyReason::RoleLacksPermission => match self.answer {
                Answer::NotFound => None,
                _ => Some("PERMISSION_DENIED"),
            },
            DenyReason::PrincipalKindNotAllowed => Some("PRINCIPAL_KIND_NOT_ALLOWED"),
            DenyReason::PrincipalRevoked => Some("TOKEN_INVALID"),
            DenyReason::PrincipalExpired => Some("TOKEN_EXPIRED"),
            DenyReason::InvalidResource(_) => None,
        }
    }
}

/// A short lowercase sentence for logs and `Decision.message`, e.g. "role viewer does not
/// grant deploy.environments.deploy in production environments". Not for clients of a
/// NOT_FOUND answer, which must not learn why.
impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = self.action;
        match self.reason {
            DenyReason::NotAMember => {
                write!(
                    f,
                    "the {} is not a member of the resource's organization",
                    self.principal
                )
            }
            DenyReason::RoleLacksPermission => {
                match self.role {
                    Some(RoleLabel::Builtin(role)) => {
                        write!(f, "role {role} does not grant {action}")?
                    }
                    Some(RoleLabel::Custom) => {
                        write!(f, "the custom role does not grant {action}")?
                    }
                    None => write!(f, "the {} may not perform {action} here", self.principal)?,
                }
                match self.mode {
                    Some(mode) => write!(f, " in {mode} environments"),
                    None => Ok(()),
                }
            }
            DenyReason::PrincipalKindNotAllowed => {
                write!(f, "{action} is not open to {} principals", self.principal)
            }
            DenyReason::PrincipalRevoked => write!(f, "the {} no longer exists", self.principal),
            DenyReason::PrincipalExpired => {
                write!(f, "the {}'s credential has expired", self.principal)
            }
            DenyReason::InvalidResource(error) => write!(f, "{action}: {error}"),
        }
    }
}
