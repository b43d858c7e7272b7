//! ProjectService and EnvironmentService over gRPC, authenticated through identity, on
//! real PostgreSQL and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, TestResult, violations, with_token};
use slipway_identity::store::BuiltinRole;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::common::v1::EnvironmentMode;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_crud_etags_and_request_ids() -> TestResult {
    let h = Harness::start().await?;
    let mut projects = h.projects();
    let create = |name: &str, request_id: &str| pb::CreateProjectRequest {
        organization_id: h.a.id.clone(),
        project: Some(pb::Project {
            name: name.into(),
            description: "the shop".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    };
    let first = projects
        .create_project(with_token(create("shop", "r1"), &h.a.admin))
        .await?
        .into_inner()
        .project
        .unwrap();
    assert_eq!(first.organization_id, h.a.id);
    assert!(!first.etag.is_empty() && first.create_time.is_some());
    // A repeated request id returns the first result and creates nothing.
    let again = projects
        .create_project(with_token(create("other-name", "r1"), &h.a.admin))
        .await?
        .into_inner()
        .project
        .unwrap();
    assert_eq!(again, first);
    let taken = projects
        .create_project(with_token(create("shop", ""), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let listed = projects
        .list_projects(with_token(
            pb::ListProjectsRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.projects, vec![first.clone()]);

    // Update with a mask; a stale etag is refused.
    let update = |etag: &str| pb::UpdateProjectRequest {
        project: Some(pb::Project {
            id: first.id.clone(),
            description: "renamed".into(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["description".into()],
        }),
    };
    let updated = projects
        .update_project(with_token(update(&first.etag), &h.a.admin))
        .await?
        .into_inner()
        .project
        .unwrap();
    assert_eq!(updated.description, "renamed");
    assert_eq!(updated.name, "shop");
    let stale = projects
        .update_project(with_token(update(&first.etag), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let bad_path = projects
        .update_project(with_token(
            pb::UpdateProjectRequest {
                project: Some(pb::Project {
                    id: first.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["organization_id".into()],
                }),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_path.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad_path), vec!["update_mask.paths[0]"]);

    // Delete refuses children unless forced.
    let cluster = h.cluster(&h.a, "main").await?;
    h.environment(
        &h.a,
        &updated,
        "dev",
        EnvironmentMode::Development,
        &cluster,
    )
    .await?;
    let refused = projects
        .delete_project(with_token(
            pb::DeleteProjectRequest {
                id: first.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    projects
        .delete_project(with_token(
            pb::DeleteProjectRequest {
                id: first.id.clone(),
                force: true,
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?;
    let gone = projects
        .get_project(with_token(
            pb::GetProjectRequest {
                id: first.id.clone(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_field_violations_and_nothing_written() -> TestResult {
    let h = Harness::start().await?;
    let mut projects = h.projects();
    for (name, description) in [
        ("", ""),
        ("Bad_Name", ""),
        (&"x".repeat(64) as &str, ""),
        ("ok", &"d".repeat(1025) as &str),
    ] {
        let status = projects
            .create_project(with_token(
                pb::CreateProjectRequest {
                    organization_id: h.a.id.clone(),
                    project: Some(pb::Project {
                        name: name.into(),
                        description: description.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &h.a.admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert!(!violations(&status).is_empty());
    }
    let listed = projects
        .list_projects(with_token(
            pb::ListProjectsRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(listed.projects.is_empty());
    let project = h.project(&h.a, "shop").await?;
    let status = h
        .environments()
        .create_environment(with_token(
            pb::CreateEnvironmentRequest {
                project_id: project.id.clone(),
                environment: Some(pb::Environment {
                    name: "prod".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = violations(&status);
    fields.sort();
    assert_eq!(fields, vec!["environment.cluster_id", "environment.mode"]);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organization_gets_not_found_and_roles_are_enforced() -> TestResult {
    let h = Harness::start().await?;
    let project = h.project(&h.a, "shop").await?;
    let cluster = h.cluster(&h.a, "main").await?;
    let prod = h
        .environment(
            &h.a,
            &project,
            "prod",
            EnvironmentMode::Production,
            &cluster,
        )
        .await?;
    let intruder = &h.b.admin;
    let mut projects = h.projects();
    let mut environments = h.environments();
    let codes = [
        projects
            .get_project(with_token(
                pb::GetProjectRequest {
                    id: project.id.clone(),
                },
                intruder,
            ))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        projects
            .list_projects(with_token(
                pb::ListProjectsRequest {
                    organization_id: h.a.id.clone(),
                    ..Default::default()
                },
                intruder,
            ))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        projects
            .delete_project(with_token(
                pb::DeleteProjectRequest {
                    id: project.id.clone(),
                    force: true,
                    ..Default::default()
                },
                intruder,
            ))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        environments
            .get_environment(with_token(
                pb::GetEnvironmentRequest {
                    id: prod.id.clone(),
                },
                intruder,
            ))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        environments
            .list_environments(with_token(
                pb::ListEnvironmentsRequest {
                    project_id: project.id.clone(),
                    ..Default::default()
                },
                intruder,
            ))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        environments
            .clone_environment(with_token(
                pb::CloneEnvironmentRequest {
                    id: prod.id.clone(),
                    name: "stolen".into(),
                    ..Default::default()
                },
                intruder,
            ))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        environments
            .create_environment(with_token(
                pb::CreateEnvironmentRequest {
                    project_id: project.id.clone(),
                    environment: Some(pb::Environment {
                        name: "x".into(),
                        mode: EnvironmentMode::Development.into(),
                        cluster_id: cluster.clone(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                intruder,
            ))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
    ];
    assert!(
        codes.iter().all(|code| *code == Code::NotFound),
        "{codes:?}"
    );

    // A viewer reads but cannot write; billing cannot read projects' insides.
    let viewer = h.builtin(&h.a.id, BuiltinRole::Viewer).await?;
    projects
        .get_project(with_token(
            pb::GetProjectRequest {
                id: project.id.clone(),
            },
            &viewer,
        ))
        .await?;
    environments
        .get_environment(with_token(
            pb::GetEnvironmentRequest {
                id: prod.id.clone(),
            },
            &viewer,
        ))
        .await?;
    let denied = projects
        .create_project(with_token(
            pb::CreateProjectRequest {
                organization_id: h.a.id.clone(),
                project: Some(pb::Project {
                    name: "nope".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let no_token = projects
        .get_project(tonic::Request::new(pb::GetProjectRequest {
            id: project.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(no_token.code(), Code::Unauthenticated);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_crud_and_clone_with_services() -> TestResult {
    let h = Harness::start().await?;
    let project = h.project(&h.a, "shop").await?;
    let cluster = h.cluster(&h.a, "main").await?;
    let other_cluster = h.cluster(&h.a, "edge").await?;
    let staging = h
        .environment(
            &h.a,
            &project,
            "staging",
            EnvironmentMode::Staging,
            &cluster,
        )
        .await?;
    let mut environments = h.environments();
    let renamed = environments
        .update_environment(with_token(
            pb::UpdateEnvironmentRequest {
                environment: Some(pb::Environment {
                    id: staging.id.clone(),
                    blueprint: true,
                    etag: staging.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["blueprint".into()],
                }),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .environment
        .unwrap();
    assert!(renamed.blueprint);
    let immutable = environments
        .update_environment(with_token(
            pb::UpdateEnvironmentRequest {
                environment: Some(pb::Environment {
                    id: staging.id.clone(),
                    cluster_id: other_cluster.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["cluster_id".into()],
                }),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(immutable.code(), Code::InvalidArgument);

    let clone = |request_id: &str| pb::CloneEnvironmentRequest {
        id: staging.id.clone(),
        name: "pr-7".into(),
        mode: EnvironmentMode::Preview.into(),
        cluster_id: other_cluster.clone(),
        pull_request: Some(pb::PullRequestRef {
            number: 7,
            source_branch: "feature".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    };
    let preview = environments
        .clone_environment(with_token(clone("c1"), &h.a.admin))
        .await?
        .into_inner()
        .environment
        .unwrap();
    assert_eq!(preview.source_environment_id, staging.id);
    assert_eq!(preview.mode, i32::from(EnvironmentMode::Preview));
    assert_eq!(preview.cluster_id, other_cluster);
    assert!(!preview.blueprint, "a preview is never a blueprint");
    assert_eq!(preview.pull_request.as_ref().unwrap().number, 7);
    let again = environments
        .clone_environment(with_token(clone("c1"), &h.a.admin))
        .await?
        .into_inner()
        .environment
        .unwrap();
    assert_eq!(again.id, preview.id);

    let listed = environments
        .list_environments(with_token(
            pb::ListEnvironmentsRequest {
                project_id: project.id.clone(),
                mode: EnvironmentMode::Preview.into(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.environments.len(), 1);
    environments
        .delete_environment(with_token(
            pb::DeleteEnvironmentRequest {
                id: preview.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?;
    h.stop().await
}

/// ListProjects, ListClusters and ListEnvironments answer in name order, as their protos
/// say, whatever the order of creation, and small pages walk that order without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_ordered_by_name_across_pages() -> TestResult {
    let h = Harness::start().await?;
    let names = ["zeta", "alpha", "mid", "beta", "omega"];
    let mut sorted = names.to_vec();
    sorted.sort_unstable();

    let mut projects = Vec::new();
    for name in names {
        projects.push(h.project(&h.a, name).await?);
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .projects()
            .list_projects(with_token(
                pb::ListProjectsRequest {
                    organization_id: h.a.id.clone(),
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                },
                &h.a.admin,
            ))
            .await?
            .into_inner();
        listed.extend(page.projects.into_iter().map(|p| p.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, sorted);

    let mut cluster_ids = Vec::new();
    for name in names {
        cluster_ids.push(h.cluster(&h.a, name).await?);
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .clusters()
            .list_clusters(with_token(
                pb::ListClustersRequest {
                    organization_id: h.a.id.clone(),
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                },
                &h.a.admin,
            ))
            .await?
            .into_inner();
        listed.extend(page.clusters.into_iter().map(|c| c.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, sorted);

    for name in names {
        h.environment(
            &h.a,
            &projects[0],
            name,
            EnvironmentMode::Development,
            &cluster_ids[0],
        )
        .await?;
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .environments()
            .list_environments(with_token(
                pb::ListEnvironmentsRequest {
                    project_id: projects[0].id.clone(),
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                },
                &h.a.admin,
            ))
            .await?
            .into_inner();
        listed.extend(page.environments.into_iter().map(|e| e.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, sorted);
    h.stop().await
}

/// Another replica's cached rows follow this replica's changes: its cache drops entries on
/// catalog events, so a read there sees an update within moments, never a TTL later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_cache_follows_changes() -> TestResult {
    use slipway_catalog::store::{Kind, Store};
    let h = Harness::start().await?;
    let other_replica =
        Store::new(h.platform.db.clone()).following_changes(std::sync::Arc::clone(&h.platform.bus));
    // Let the follower subscribe before the change it must see.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let project = h.project(&h.a, "shop").await?;
    let cached = other_replica.get(Kind::Project, &project.id).await?;
    assert_eq!(cached.etag, project.etag);
    let updated = h
        .projects()
        .update_project(with_token(
            pb::UpdateProjectRequest {
                project: Some(pb::Project {
                    id: project.id.clone(),
                    description: "changed".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["description".into()],
                }),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .project
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let seen = other_replica.get(Kind::Project, &project.id).await?;
        if seen.etag == updated.etag {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica still serves the old row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    h.stop().await
}
