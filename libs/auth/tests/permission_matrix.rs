//! The permission matrix: every built-in role and a sample custom role × every action, as
//! the AuthService table documents it.
//!
//! Legend:
//!
//! - `+` allowed;
//! - `-` denied, PERMISSION_DENIED (the caller sees the target);
//! - `h` denied, NOT_FOUND (hidden: the role cannot even read the target);
//! - `k` denied, PERMISSION_DENIED / PRINCIPAL_KIND_NOT_ALLOWED (never open to users or
//!   tokens: only services resolve secrets, only agents connect).
//!
//! Built-in columns (O A D B V = OWNER ADMIN DEVOPS BILLING VIEWER) act on project `web`,
//! mode DEVELOPMENT, cluster `dev-cluster`; where does not matter to a built-in role.
//!
//! The custom role `web-team` grants project `web`: PRODUCTION VIEWER, STAGING DEPLOYER,
//! DEVELOPMENT MANAGER, PREVIEW VIEWER (other projects nothing), and clusters
//! `stg-cluster` ENV_CREATOR, `dev-cluster` ADMIN, `secret-cluster` NO_ACCESS (others
//! VIEWER). Its columns act on:
//!
//! - `prod`:  project `web`, PRODUCTION,  cluster `prod-cluster` (VIEWER by default);
//! - `stg`:   project `web`, STAGING,     cluster `stg-cluster`;
//! - `dev`:   project `web`, DEVELOPMENT, cluster `dev-cluster`;
//! - `other`: project `api`, DEVELOPMENT, cluster `secret-cluster`.
//!
//! Preview actions always act in mode PREVIEW of the column's project.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures outside #[test] functions panic to report the unexpected, as tests do"
)]

mod common;

use common::{Place, web_team};
use slipway_auth::rbac::{
    Action, AllowReason, Answer, BuiltinRole, Decision, DenyReason, EnvironmentMode, Membership,
    Principal, Role, authorize,
};

const MATRIX: &str = "
action                                     O A D B V   prod stg dev other
identity.organizations.read                + + + + +   +    +   +   +
identity.organizations.update              + + - - -   -    -   -   -
identity.organizations.delete              + - - - -   -    -   -   -
identity.organizations.transfer_ownership  + - - - -   -    -   -   -
identity.members.read                      + + + + +   +    +   +   +
identity.members.update_role               + + - - -   -    -   -   -
identity.members.remove                    + + - - -   -    -   -   -
identity.invitations.read                  + + - - -   -    -   -   -
identity.invitations.write                 + + - - -   -    -   -   -
identity.roles.read                        + + + + +   +    +   +   +
identity.roles.write                       + + - - -   -    -   -   -
identity.api_tokens.read                   + + + - -   -    -   -   -
identity.api_tokens.write                  + + + - -   -    -   -   -
identity.audit_events.read                 + + - - -   -    -   -   -
catalog.clusters.register                  + + + - -   -    -   -   -
catalog.clusters.read                      + + + h +   +    +   +   h
catalog.clusters.manage                    + + + h -   -    -   +   h
catalog.registries.read                    + + + + +   +    +   +   +
catalog.registries.write                   + + + - -   -    -   -   -
catalog.git_credentials.read               + + + + +   +    +   +   +
catalog.git_credentials.write              + + + - -   -    -   -   -
catalog.projects.create                    + + - - -   -    -   -   -
catalog.projects.read                      + + + h +   +    +   +   h
catalog.projects.update                    + + + h -   -    -   -   h
catalog.projects.delete                    + + - h -   -    -   -   h
catalog.environments.create                + + + h -   -    -   +   h
catalog.environments.read                  + + + h +   +    +   +   h
catalog.environments.update                + + + h -   -    -   +   h
catalog.environments.delete                + + + h -   -    -   +   h
catalog.environments.resolve               k k k k k   k    k   k   k
catalog.services.read                      + + + h +   +    +   +   h
catalog.services.write                     + + + h -   -    -   +   h
catalog.variables.read                     + + + h +   +    +   +   h
catalog.variables.write                    + + + h -   -    -   +   h
catalog.deployment_rules.read              + + + h +   +    +   +   h
catalog.deployment_rules.write             + + + h -   -    -   +   h
deploy.environments.deploy                 + + + h -   -    +   +   h
deploy.environments.delete_resources       + + + h -   -    -   +   h
deploy.deployments.read                    + + + h +   +    +   +   h
deploy.previews.read                       + + + h +   +    +   +   h
deploy.previews.write                      + + + h -   -    -   -   h
deploy.webhooks.read                       + + + - -   -    -   -   -
deploy.webhooks.write                      + + - - -   -    -   -   -
deploy.agents.connect                      k k k k k   k    k   k   k
build.builds.read                          + + + h +   +    +   +   h
build.builds.cancel                        + + + h -   -    +   +   h
logs.entries.read                          + + + h +   +    +   +   h
";

const ORG: &str = "org-1";

const BUILTIN_PLACE: Place = Place {
    organization: ORG,
    project: "web",
    mode: EnvironmentMode::Development,
    cluster: "dev-cluster",
};

const CUSTOM_PLACES: [Place; 4] = [
    Place {
        organization: ORG,
        project: "web",
        mode: EnvironmentMode::Production,
        cluster: "prod-cluster",
    },
    Place {
        organization: ORG,
        project: "web",
        mode: EnvironmentMode::Staging,
        cluster: "stg-cluster",
    },
    Place {
        organization: ORG,
        project: "web",
        mode: EnvironmentMode::Development,
        cluster: "dev-cluster",
    },
    Place {
        organization: ORG,
        project: "api",
        mode: EnvironmentMode::Development,
        cluster: "secret-cluster",
    },
];

struct Row {
    action: Action,
    builtin: [char; 5],
    custom: [char; 4],
}

fn rows() -> Vec<Row> {
    let mut lines = MATRIX.lines().filter(|line| !line.trim().is_empty());
    let header = lines.next().expect("header");
    assert!(header.starts_with("action"), "{header}");
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 10, "{line}");
            let action = cells[0]
                .parse()
                .unwrap_or_else(|_| panic!("unknown action in matrix: {}", cells[0]));
            let cell = |i: usize| {
                let c = cells[i].chars().next().unwrap();
                assert!(
                    cells[i].len() == 1 && "+-hk".contains(c),
                    "bad cell in {line}"
                );
                c
            };
            Row {
                action,
                builtin: std::array::from_fn(|i| cell(1 + i)),
                custom: std::array::from_fn(|i| cell(6 + i)),
            }
        })
        .collect()
}

/// `+`, `-`, `h` or `k` for a decision, failing on one the matrix has no symbol for.
fn symbol(decision: Decision) -> char {
    match decision {
        Decision::Allow(AllowReason::RoleGrants) => '+',
        Decision::Deny(denial) => match (denial.reason(), denial.answer()) {
            (DenyReason::RoleLacksPermission, Answer::PermissionDenied) => '-',
            (DenyReason::RoleLacksPermission, Answer::NotFound) => 'h',
            (DenyReason::PrincipalKindNotAllowed, Answer::PermissionDenied) => 'k',
            other => panic!("unexpected denial {other:?}: {denial}"),
        },
        other => panic!("unexpected decision {other:?}"),
    }
}

fn user(role: impl Into<Role>) -> Principal {
    Principal::user(
        "user-1",
        [Membership::new(ORG, role).with_member_id("member-1")],
    )
}

fn token(role: impl Into<Role>) -> Principal {
    Principal::api_token("token-1", ORG, role)
}

#[test]
fn matrix_lists_every_action_once_in_table_order() {
    let listed: Vec<Action> = rows().iter().map(|row| row.action).collect();
    assert_eq!(listed, Action::ALL);
}

#[test]
fn builtin_roles_match_the_matrix() {
    let mut mismatches = Vec::new();
    for row in rows() {
        let resource = BUILTIN_PLACE.resource(row.action);
        for (role, &expected) in BuiltinRole::ALL.iter().zip(&row.builtin) {
            // API tokens act with their role exactly as members do; no token is OWNER.
            let principals = if role.is_assignable() {
                vec![user(*role), token(*role)]
            } else {
                vec![user(*role)]
            };
            for principal in principals {
                let got = symbol(authorize(&principal, row.action, &resource));
                if got != expected {
                    mismatches.push(format!(
                        "{} {role} ({}): expected {expected}, got {got}",
                        row.action,
                        principal.kind()
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn custom_role_matches_the_matrix() {
    let role = web_team();
    let mut mismatches = Vec::new();
    for row in rows() {
        for (place, &expected) in CUSTOM_PLACES.iter().zip(&row.custom) {
            let resource = place.resource(row.action);
            for principal in [user(role.clone()), token(role.clone())] {
                let got = symbol(authorize(&principal, row.action, &resource));
                if got != expected {
                    mismatches.push(format!(
                        "{} web-team at {}/{} on {} ({}): expected {expected}, got {got}",
                        row.action,
                        place.project,
                        place.mode,
                        place.cluster,
                        principal.kind()
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
