//! Local authorization: `slipway_auth::authorize` checks per second on one core, beside a
//! floor measured in the same run — a hash-set lookup of (principal, action), the cheapest
//! conceivable permission check.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use slipway_auth::rbac::{
    Action, BuiltinRole, ClusterPermission, CustomRole, EnvironmentMode, Membership,
    ModePermissions, Principal, ProjectPermission, Resource, authorize,
};

use crate::report::Figure;

const ORG: &str = "0190f5c2-7a4e-7cc1-9b1e-6a1f0c2d3e4f";
const PROJECT: &str = "0190f5c2-7a4e-7cc1-9b1e-000000000250";
/// Checks per timed batch: large enough that reading the clock is noise.
const BATCH: u32 = 10_000;

/// Runs `check` (which performs `per_call` checks) in batches for `duration`; checks/s.
fn rate(duration: Duration, per_call: u32, mut check: impl FnMut() -> u32) -> f64 {
    let started = Instant::now();
    let mut checks: u64 = 0;
    let mut allowed: u64 = 0;
    while started.elapsed() < duration {
        for _ in 0..BATCH {
            allowed += u64::from(check());
        }
        checks += u64::from(BATCH * per_call);
    }
    black_box(allowed);
    checks as f64 / started.elapsed().as_secs_f64()
}

fn custom_role_principal() -> anyhow::Result<Principal> {
    // The largest custom role RoleService accepts: 500 project and 500 cluster grants.
    let mut builder = CustomRole::builder("role")
        .default_cluster_permission(ClusterPermission::Viewer)
        .default_project_permissions(ModePermissions::NONE);
    for i in 0..500 {
        let id = format!("0190f5c2-7a4e-7cc1-9b1e-{i:012}");
        builder = builder
            .project(
                id.clone(),
                ModePermissions::uniform(ProjectPermission::Deployer),
            )
            .cluster(id, ClusterPermission::EnvCreator);
    }
    Ok(Principal::user(
        "user-2",
        [Membership::new(ORG, builder.build()?)],
    ))
}

pub fn run(duration: Duration) -> anyhow::Result<Vec<Figure>> {
    let builtin = Principal::user(
        "user-1",
        [
            Membership::new("0190f5c2-0000-7000-8000-000000000001", BuiltinRole::Viewer),
            Membership::new(ORG, BuiltinRole::Devops),
        ],
    );
    let custom = custom_role_principal()?;
    let checks = [
        (
            Action::DeployEnvironmentsDeploy,
            Resource::in_organization(ORG)
                .in_project(PROJECT)
                .in_environment("env", EnvironmentMode::Production),
        ),
        (
            Action::CatalogVariablesRead,
            Resource::in_organization(ORG).in_project(PROJECT),
        ),
        (
            Action::CatalogClustersManage,
            Resource::in_organization(ORG).on_cluster(PROJECT),
        ),
        (
            Action::CatalogEnvironmentsCreate,
            Resource::in_organization(ORG)
                .in_project("0190f5c2-7a4e-7cc1-9b1e-999999999999")
                .in_mode(EnvironmentMode::Staging)
                .on_cluster(PROJECT),
        ),
    ];
    let per_call = u32::try_from(checks.len())?;

    let grants: HashSet<(&str, &str)> = checks
        .iter()
        .map(|(action, _)| ("user-1", action.as_str()))
        .collect();
    let floor_rate = rate(duration, per_call, || {
        checks
            .iter()
            .filter(|(action, _)| grants.contains(&(black_box("user-1"), action.as_str())))
            .count() as u32
    });
    let floor = Figure::new(
        "authz.floor.hashset_lookup",
        "throughput",
        floor_rate,
        "checks/s",
    );
    floor.print();
    let mut figures = vec![floor.clone()];
    for (scenario, principal) in [
        ("authz.local.builtin_role", &builtin),
        ("authz.local.custom_role_1000_grants", &custom),
    ] {
        let value = rate(duration, per_call, || {
            checks
                .iter()
                .filter(|(action, resource)| {
                    authorize(black_box(principal), *action, resource).is_allowed()
                })
                .count() as u32
        });
        let figure = Figure::new(scenario, "throughput", value, "checks/s").against(&floor);
        figure.print();
        figures.push(figure);
    }
    Ok(figures)
}
