//! Local `authorize` checks per second on one thread, for a quick look while changing the
//! evaluator (`make bench` carries the measured scenario):
//!
//!     cargo run --release -p slipway-auth --example authorize_throughput

use std::hint::black_box;
use std::time::{Duration, Instant};

use slipway_auth::credential::{Credential, CredentialKind, NewCredential};
use slipway_auth::rbac::{
    Action, BuiltinRole, ClusterPermission, CustomRole, EnvironmentMode, Membership,
    ModePermissions, Principal, ProjectPermission, Resource, authorize,
};

const ORG: &str = "0190f5c2-7a4e-7cc1-9b1e-6a1f0c2d3e4f";

fn main() {
    let devops = Principal::user(
        "user-1",
        [
            Membership::new("0190f5c2-0000-7000-8000-000000000001", BuiltinRole::Viewer),
            Membership::new(ORG, BuiltinRole::Devops),
        ],
    );
    // The largest custom role RoleService accepts: 500 project and 500 cluster grants.
    let mut builder = CustomRole::builder("role")
        .default_cluster_permission(ClusterPermission::Viewer)
        .default_project_permissions(ModePermissions::NONE);
    for i in 0..500 {
        builder = builder
            .project(
                format!("0190f5c2-7a4e-7cc1-9b1e-{i:012}"),
                ModePermissions::uniform(ProjectPermission::Deployer),
            )
            .cluster(
                format!("0190f5c2-7a4e-7cc1-9b1e-{i:012}"),
                ClusterPermission::EnvCreator,
            );
    }
    let custom = match builder.build() {
        Ok(role) => Principal::user("user-2", [Membership::new(ORG, role)]),
        Err(error) => panic!("{error}"),
    };

    let project = "0190f5c2-7a4e-7cc1-9b1e-000000000250";
    let resources = [
        (
            Action::DeployEnvironmentsDeploy,
            Resource::in_organization(ORG)
                .in_project(project)
                .in_environment("env", EnvironmentMode::Production),
        ),
        (
            Action::CatalogVariablesRead,
            Resource::in_organization(ORG).in_project(project),
        ),
        (
            Action::CatalogClustersManage,
            Resource::in_organization(ORG).on_cluster(project),
        ),
        (
            Action::CatalogEnvironmentsCreate,
            Resource::in_organization(ORG)
                .in_project("0190f5c2-7a4e-7cc1-9b1e-999999999999")
                .in_mode(EnvironmentMode::Staging)
                .on_cluster(project),
        ),
    ];

    for (name, principal) in [
        ("built-in role", &devops),
        ("custom role, 500+500 grants", &custom),
    ] {
        let rate = measure(|| {
            let mut allowed = 0u32;
            for (action, resource) in &resources {
                allowed += u32::from(
                    authorize(
                        black_box(principal),
                        black_box(*action),
                        black_box(resource),
                    )
                    .is_allowed(),
                );
            }
            black_box(allowed);
            resources.len() as u64
        });
        println!("authorize, {name}: {:>12.0} checks/s", rate);
    }

    let token = match NewCredential::generate(CredentialKind::ApiToken) {
        Ok(token) => token,
        Err(error) => panic!("{error}"),
    };
    let text = token.expose_secret();
    let rate = measure(|| {
        let _ = black_box(Credential::parse(black_box(text)).map(|c| c.hash()));
        1
    });
    println!("parse + sha-256 of a token: {:>10.0} /s", rate);
}

/// Runs `batch` (returning how many operations it did) for about a second.
fn measure(mut batch: impl FnMut() -> u64) -> f64 {
    for _ in 0..10_000 {
        batch();
    }
    let start = Instant::now();
    let mut operations = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1_000 {
            operations += batch();
        }
    }
    operations as f64 / start.elapsed().as_secs_f64()
}
