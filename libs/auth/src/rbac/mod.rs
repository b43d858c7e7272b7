//! Role-based access control, evaluated locally from cached role data.
//!
//! [`authorize`] gives the same answers as identity's `AuthService.Check` (identity itself
//! decides with it), so a service can decide in nanoseconds without a call, and identity
//! stays the one place roles are stored. The permission table lives in one `match`
//! (`evaluate.rs`) that mirrors the table on `slipway.identity.v1.AuthService` row for row.

mod action;
mod decision;
mod evaluate;
mod principal;
mod resource;
mod role;

pub use action::{Action, Scope, UnknownAction};
pub use decision::{AllowReason, Answer, Decision, Denial, DenyReason, RoleLabel};
pub use evaluate::{authorize, authorize_at};
pub use principal::{Membership, Principal, PrincipalKind};
pub use resource::{EnvironmentMode, Resource, ResourceKind, ScopeError, ScopeField};
pub use role::{
    BuiltinRole, ClusterPermission, CustomRole, CustomRoleBuilder, MAX_CLUSTER_GRANTS,
    MAX_PROJECT_GRANTS, ModePermissions, ProjectPermission, Role, RoleError, UnknownRole,
};
