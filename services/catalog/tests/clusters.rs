//! ClusterService over gRPC and the cluster half of CatalogInternalService, authenticated
//! through identity, on real PostgreSQL and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, TestResult, violations, with_token};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use slipway_catalog::api::clusters::managed_provisioning_unimplemented;
use slipway_catalog::api::internal_clusters::InternalClusters;
use slipway_catalog::store::{Kind, Store};
use slipway_identity::store::BuiltinRole;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::common::v1::EnvironmentMode;
use tonic::Code;

fn self_managed(name: &str) -> pb::Cluster {
    pb::Cluster {
        name: name.into(),
        description: "on-prem".into(),
        kind: pb::ClusterKind::SelfManaged.into(),
        ..Default::default()
    }
}

fn register(org: &str, cluster: pb::Cluster, request_id: &str) -> pb::RegisterClusterRequest {
    pb::RegisterClusterRequest {
        organization_id: org.into(),
        cluster: Some(cluster),
        request_id: request_id.into(),
    }
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn state(cluster: &pb::Cluster) -> pb::ClusterConnectionState {
    pb::ClusterConnectionState::try_from(cluster.connection.as_ref().unwrap().state).unwrap()
}

fn now() -> prost_types::Timestamp {
    let now = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_token_is_shown_once_authenticates_and_rotates() -> TestResult {
    let (h, service_token) = Harness::start_with_service().await?;
    let mut clusters = h.clusters();
    let first = clusters
        .register_cluster(with_token(
            register(&h.a.id, self_managed("prod-eu"), "r1"),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    let cluster = first.cluster.clone().unwrap();
    let token = first.agent_token.clone();
    assert!(token.starts_with("slpa_"), "{token}");
    assert_eq!(cluster.organization_id, h.a.id);
    assert!(cluster.agent_token_create_time.is_some());
    assert_eq!(state(&cluster), pb::ClusterConnectionState::AwaitingAgent);
    assert!(first.install_manifest_yaml.contains(&token));
    assert!(first.install_manifest_yaml.contains("slipway-system"));
    assert!(first.install_manifest_yaml.contains(&cluster.id));
    assert!(first.install_manifest_yaml.contains("\nkind: Secret\n"));

    // A repeat returns the cluster and a manifest without the token.
    let again = clusters
        .register_cluster(with_token(
            register(&h.a.id, self_managed("other"), "r1"),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(again.cluster.unwrap().id, cluster.id);
    assert!(again.agent_token.is_empty());
    assert!(!again.install_manifest_yaml.contains(&token));
    assert!(!again.install_manifest_yaml.contains("\nkind: Secret\n"));

    // Reads never show the token; the row holds its SHA-256 only.
    let got = clusters
        .get_cluster(with_token(
            pb::GetClusterRequest {
                id: cluster.id.clone(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(!contains(&got.encode_to_vec(), &token));
    let listed = clusters
        .list_clusters(with_token(
            pb::ListClustersRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.clusters.len(), 1);
    assert!(!contains(&listed.encode_to_vec(), &token));
    let store = Store::new(h.platform.db.clone());
    let row = store.get(Kind::Cluster, &cluster.id).await?;
    assert_eq!(
        row.lookup_hash.as_deref(),
        Some(hex_sha256(&token).as_str())
    );
    assert!(!contains(&row.spec, &token));

    // AuthenticateClusterAgent: service principals only; the token resolves to its cluster.
    let internal = InternalClusters::new(h.context()?);
    let service = h.principal(&service_token).await?;
    let admin = h.principal(&h.a.admin).await?;
    let auth = |token: &str| pb::AuthenticateClusterAgentRequest {
        agent_token: token.into(),
    };
    let found = internal
        .authenticate_cluster_agent(&service, auth(&token))
        .await?;
    assert_eq!(found.cluster_id, cluster.id);
    assert_eq!(found.organization_id, h.a.id);
    let denied = internal
        .authenticate_cluster_agent(&admin, auth(&token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let other = slipway_auth::NewCredential::generate(slipway_auth::CredentialKind::Agent)?;
    for wrong in [other.expose_secret(), "slpa_nonsense", h.a.admin.as_str()] {
        let refused = internal
            .authenticate_cluster_agent(&service, auth(wrong))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{wrong}");
    }

    // Rotation: a new token, the old one stops working; a repeat rotates nothing.
    let rotate = |request_id: &str| pb::RotateClusterAgentTokenRequest {
        id: cluster.id.clone(),
        request_id: request_id.into(),
    };
    let rotated = clusters
        .rotate_cluster_agent_token(with_token(rotate("rot-1"), &h.a.admin))
        .await?
        .into_inner();
    let new_token = rotated.agent_token.clone();
    assert!(new_token.starts_with("slpa_") && new_token != token);
    assert_ne!(
        rotated.cluster.unwrap().agent_token_create_time,
        cluster.agent_token_create_time
    );
    let old = internal
        .authenticate_cluster_agent(&service, auth(&token))
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    let found = internal
        .authenticate_cluster_agent(&service, auth(&new_token))
        .await?;
    assert_eq!(found.cluster_id, cluster.id);
    let repeat = clusters
        .rotate_cluster_agent_token(with_token(rotate("rot-1"), &h.a.admin))
        .await?
        .into_inner();
    assert!(repeat.agent_token.is_empty());
    internal
        .authenticate_cluster_agent(&service, auth(&new_token))
        .await?;

    // The manifest carries no token unless it rotates.
    let manifest = |rotate: bool| pb::GetClusterInstallManifestRequest {
        id: cluster.id.clone(),
        rotate_agent_token: rotate,
        request_id: String::new(),
    };
    let plain = clusters
        .get_cluster_install_manifest(with_token(manifest(false), &h.a.admin))
        .await?
        .into_inner();
    assert!(plain.agent_token.is_empty());
    assert!(!plain.install_manifest_yaml.contains("\nkind: Secret\n"));
    assert!(!plain.install_manifest_yaml.contains(&new_token));
    assert!(plain.install_manifest_yaml.contains("slipway-system"));
    let with_rotation = clusters
        .get_cluster_install_manifest(with_token(manifest(true), &h.a.admin))
        .await?
        .into_inner();
    let third = with_rotation.agent_token;
    assert!(third.starts_with("slpa_") && third != new_token);
    assert!(with_rotation.install_manifest_yaml.contains(&third));
    internal
        .authenticate_cluster_agent(&service, auth(&third))
        .await?;
    assert_eq!(
        internal
            .authenticate_cluster_agent(&service, auth(&new_token))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reports_show_in_get_cluster() -> TestResult {
    let (h, service_token) = Harness::start_with_service().await?;
    let mut clusters = h.clusters();
    let cluster = clusters
        .register_cluster(with_token(
            register(&h.a.id, self_managed("edge"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .cluster
        .unwrap();
    let internal = InternalClusters::new(h.context()?);
    let service = h.principal(&service_token).await?;
    let admin = h.principal(&h.a.admin).await?;
    let report = |connected: bool, time: Option<prost_types::Timestamp>, version: &str| {
        pb::ReportClusterConnectionRequest {
            cluster_id: cluster.id.clone(),
            connected,
            heartbeat_time: time,
            agent_version: version.into(),
        }
    };
    let get = || {
        let mut clusters = h.clusters();
        let id = cluster.id.clone();
        let admin = h.a.admin.clone();
        async move {
            clusters
                .get_cluster(with_token(pb::GetClusterRequest { id }, &admin))
                .await
                .map(|r| r.into_inner().cluster.unwrap())
        }
    };

    let denied = internal
        .report_cluster_connection(&admin, report(true, Some(now()), "1.4.2"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let missing = internal
        .report_cluster_connection(&service, report(true, None, "1.4.2"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);

    let heartbeat = now();
    internal
        .report_cluster_connection(&service, report(true, Some(heartbeat), "1.4.2"))
        .await?;
    let connected = get().await?;
    let connection = connected.connection.clone().unwrap();
    assert_eq!(state(&connected), pb::ClusterConnectionState::Connected);
    assert!(connection.agent_connected);
    assert_eq!(connection.agent_version, "1.4.2");
    assert_eq!(connection.last_heartbeat_time, Some(heartbeat));

    // An older report is ignored.
    let older = prost_types::Timestamp {
        seconds: heartbeat.seconds - 60,
        nanos: 0,
    };
    internal
        .report_cluster_connection(&service, report(false, Some(older), ""))
        .await?;
    assert_eq!(state(&get().await?), pb::ClusterConnectionState::Connected);

    // Listing by connection state.
    let by_state = |s: pb::ClusterConnectionState| pb::ListClustersRequest {
        organization_id: h.a.id.clone(),
        connection_state: s.into(),
        ..Default::default()
    };
    let listed = clusters
        .list_clusters(with_token(
            by_state(pb::ClusterConnectionState::Connected),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.clusters.len(), 1);
    let listed = clusters
        .list_clusters(with_token(
            by_state(pb::ClusterConnectionState::AwaitingAgent),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(listed.clusters.is_empty());

    // Disconnect: the version stays.
    let later = prost_types::Timestamp {
        seconds: heartbeat.seconds + 1,
        nanos: 0,
    };
    internal
        .report_cluster_connection(&service, report(false, Some(later), ""))
        .await?;
    let gone = get().await?;
    assert_eq!(state(&gone), pb::ClusterConnectionState::Disconnected);
    let connection = gone.connection.unwrap();
    assert!(!connection.agent_connected);
    assert_eq!(connection.agent_version, "1.4.2");

    let unknown = internal
        .report_cluster_connection(
            &service,
            pb::ReportClusterConnectionRequest {
                cluster_id: uuid::Uuid::now_v7().to_string(),
                connected: true,
                heartbeat_time: Some(now()),
                agent_version: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_clusters_are_recorded_but_not_provisioned() -> TestResult {
    let (h, service_token) = Harness::start_with_service().await?;
    let mut clusters = h.clusters();
    let managed = pb::Cluster {
        name: "eks".into(),
        kind: pb::ClusterKind::Managed.into(),
        managed: Some(pb::ManagedClusterSettings {
            provider: "aws-eks".into(),
            region: "eu-west-3".into(),
        }),
        ..Default::default()
    };
    let registered = clusters
        .register_cluster(with_token(register(&h.a.id, managed, ""), &h.a.admin))
        .await?
        .into_inner();
    assert!(registered.agent_token.is_empty());
    assert!(registered.install_manifest_yaml.is_empty());
    let cluster = registered.cluster.unwrap();
    assert_eq!(state(&cluster), pb::ClusterConnectionState::NotProvisioned);
    assert!(cluster.agent_token_create_time.is_none());
    assert_eq!(cluster.managed.as_ref().unwrap().provider, "aws-eks");
    let row = Store::new(h.platform.db.clone())
        .get(Kind::Cluster, &cluster.id)
        .await?;
    assert!(row.lookup_hash.is_none());

    // Provisioning is not built: it says so.
    let unimplemented = managed_provisioning_unimplemented();
    assert_eq!(unimplemented.code(), Code::Unimplemented);
    assert!(unimplemented.to_string().contains("not implemented"));

    // No agent: no manifest, no rotation, no connection reports.
    let manifest = clusters
        .get_cluster_install_manifest(with_token(
            pb::GetClusterInstallManifestRequest {
                id: cluster.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(manifest.code(), Code::FailedPrecondition);
    let rotate = clusters
        .rotate_cluster_agent_token(with_token(
            pb::RotateClusterAgentTokenRequest {
                id: cluster.id.clone(),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(rotate.code(), Code::FailedPrecondition);
    let internal = InternalClusters::new(h.context()?);
    let report = internal
        .report_cluster_connection(
            &h.principal(&service_token).await?,
            pb::ReportClusterConnectionRequest {
                cluster_id: cluster.id.clone(),
                connected: true,
                heartbeat_time: Some(now()),
                agent_version: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(report.code(), Code::FailedPrecondition);

    // Listing by kind.
    clusters
        .register_cluster(with_token(
            register(&h.a.id, self_managed("home"), ""),
            &h.a.admin,
        ))
        .await?;
    let only_managed = clusters
        .list_clusters(with_token(
            pb::ListClustersRequest {
                organization_id: h.a.id.clone(),
                kind: pb::ClusterKind::Managed.into(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(only_managed.clusters.len(), 1);
    assert_eq!(only_managed.clusters[0].id, cluster.id);

    // Validation, one violation per field.
    let bad = [
        (
            pb::Cluster {
                name: "m".into(),
                kind: pb::ClusterKind::Managed.into(),
                ..Default::default()
            },
            "cluster.managed",
        ),
        (
            pb::Cluster {
                managed: Some(pb::ManagedClusterSettings::default()),
                ..self_managed("s")
            },
            "cluster.managed",
        ),
        (
            pb::Cluster {
                name: "k".into(),
                ..Default::default()
            },
            "cluster.kind",
        ),
        (self_managed("Not_A_Label"), "cluster.name"),
        (
            pb::Cluster {
                kind: pb::ClusterKind::Managed.into(),
                managed: Some(pb::ManagedClusterSettings {
                    provider: String::new(),
                    region: "eu".into(),
                }),
                ..self_managed("x")
            },
            "cluster.managed.provider",
        ),
    ];
    for (cluster, field) in bad {
        let status = clusters
            .register_cluster(with_token(register(&h.a.id, cluster, ""), &h.a.admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(violations(&status).contains(&field.to_owned()), "{field}");
    }
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_delete_and_environments_on_the_cluster() -> TestResult {
    let h = Harness::start().await?;
    let mut clusters = h.clusters();
    let cluster = clusters
        .register_cluster(with_token(
            register(&h.a.id, self_managed("main"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .cluster
        .unwrap();
    let update = |cluster: pb::Cluster, paths: &[&str]| pb::UpdateClusterRequest {
        cluster: Some(cluster),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    };
    let updated = clusters
        .update_cluster(with_token(
            update(
                pb::Cluster {
                    id: cluster.id.clone(),
                    name: "main-eu".into(),
                    description: "renamed".into(),
                    etag: cluster.etag.clone(),
                    ..Default::default()
                },
                &["name", "description"],
            ),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .cluster
        .unwrap();
    assert_eq!(updated.name, "main-eu");
    assert_eq!(updated.description, "renamed");
    assert_eq!(updated.kind, i32::from(pb::ClusterKind::SelfManaged));
    assert_eq!(
        updated.agent_token_create_time,
        cluster.agent_token_create_time
    );
    assert_ne!(updated.etag, cluster.etag);
    // A stale etag, an immutable path, an unknown registry.
    let stale = clusters
        .update_cluster(with_token(
            update(
                pb::Cluster {
                    id: cluster.id.clone(),
                    description: "again".into(),
                    etag: cluster.etag.clone(),
                    ..Default::default()
                },
                &["description"],
            ),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let immutable = clusters
        .update_cluster(with_token(
            update(
                pb::Cluster {
                    id: cluster.id.clone(),
                    kind: pb::ClusterKind::Managed.into(),
                    ..Default::default()
                },
                &["kind"],
            ),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(immutable.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&immutable),
        vec!["update_mask.paths[0]".to_owned()]
    );
    let no_registry = clusters
        .update_cluster(with_token(
            update(
                pb::Cluster {
                    id: cluster.id.clone(),
                    build_registry_id: uuid::Uuid::now_v7().to_string(),
                    ..Default::default()
                },
                &["build_registry_id"],
            ),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(no_registry.code(), Code::NotFound);

    // Delete is refused while an environment runs on the cluster.
    let project = h.project(&h.a, "shop").await?;
    h.environment(
        &h.a,
        &project,
        "prod",
        EnvironmentMode::Production,
        &cluster.id,
    )
    .await?;
    let refused = clusters
        .delete_cluster(with_token(
            pb::DeleteClusterRequest {
                id: cluster.id.clone(),
                etag: String::new(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    clusters
        .get_cluster(with_token(
            pb::GetClusterRequest {
                id: cluster.id.clone(),
            },
            &h.a.admin,
        ))
        .await?;

    // A cluster nothing runs on is deleted, and its token with it.
    let spare = clusters
        .register_cluster(with_token(
            register(&h.a.id, self_managed("spare"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .cluster
        .unwrap();
    clusters
        .delete_cluster(with_token(
            pb::DeleteClusterRequest {
                id: spare.id.clone(),
                etag: String::new(),
            },
            &h.a.admin,
        ))
        .await?;
    let gone = clusters
        .get_cluster(with_token(
            pb::GetClusterRequest { id: spare.id },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_organizations_see_nothing_and_viewers_only_read() -> TestResult {
    let h = Harness::start().await?;
    let mut clusters = h.clusters();
    let cluster = clusters
        .register_cluster(with_token(
            register(&h.a.id, self_managed("private"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .cluster
        .unwrap();
    let id = cluster.id.clone();
    let viewer = h.builtin(&h.a.id, BuiltinRole::Viewer).await?;

    // Organization B: NOT_FOUND everywhere.
    let b = h.b.admin.clone();
    let codes = [
        clusters
            .get_cluster(with_token(pb::GetClusterRequest { id: id.clone() }, &b))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .list_clusters(with_token(
                pb::ListClustersRequest {
                    organization_id: h.a.id.clone(),
                    ..Default::default()
                },
                &b,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .update_cluster(with_token(
                pb::UpdateClusterRequest {
                    cluster: Some(pb::Cluster {
                        id: id.clone(),
                        description: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["description".into()],
                    }),
                },
                &b,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .delete_cluster(with_token(
                pb::DeleteClusterRequest {
                    id: id.clone(),
                    etag: String::new(),
                },
                &b,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .get_cluster_install_manifest(with_token(
                pb::GetClusterInstallManifestRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                &b,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .rotate_cluster_agent_token(with_token(
                pb::RotateClusterAgentTokenRequest {
                    id: id.clone(),
                    request_id: String::new(),
                },
                &b,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .register_cluster(with_token(
                register(&h.a.id, self_managed("intruder"), ""),
                &b,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
    ];
    for status in codes {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    // VIEWER: reads, but every write is PERMISSION_DENIED.
    let got = clusters
        .get_cluster(with_token(
            pb::GetClusterRequest { id: id.clone() },
            &viewer,
        ))
        .await?
        .into_inner();
    assert_eq!(got.cluster.unwrap().id, id);
    let listed = clusters
        .list_clusters(with_token(
            pb::ListClustersRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            &viewer,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.clusters.len(), 1);
    let denied = [
        clusters
            .register_cluster(with_token(
                register(&h.a.id, self_managed("viewer-made"), ""),
                &viewer,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .update_cluster(with_token(
                pb::UpdateClusterRequest {
                    cluster: Some(pb::Cluster {
                        id: id.clone(),
                        description: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["description".into()],
                    }),
                },
                &viewer,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .delete_cluster(with_token(
                pb::DeleteClusterRequest {
                    id: id.clone(),
                    etag: String::new(),
                },
                &viewer,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .get_cluster_install_manifest(with_token(
                pb::GetClusterInstallManifestRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                &viewer,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        clusters
            .rotate_cluster_agent_token(with_token(
                pb::RotateClusterAgentTokenRequest {
                    id: id.clone(),
                    request_id: String::new(),
                },
                &viewer,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
    ];
    for status in denied {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    h.stop().await
}

/// `mount_with` carries the configured orchestrator address into install manifests; plain
/// `mount` keeps the dev default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_point_at_the_configured_orchestrator() -> TestResult {
    let url = "https://slipway.example.com:443";
    let h = Harness::start_with_orchestrator_url(url).await?;
    let registered = h
        .clusters()
        .register_cluster(with_token(
            register(&h.a.id, self_managed("prod-eu"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(
        registered.install_manifest_yaml.contains(url),
        "{}",
        registered.install_manifest_yaml
    );
    assert!(
        !registered
            .install_manifest_yaml
            .contains(slipway_catalog::api::clusters::DEFAULT_ORCHESTRATOR_URL)
    );
    h.stop().await?;

    let h = Harness::start().await?;
    let registered = h
        .clusters()
        .register_cluster(with_token(
            register(&h.a.id, self_managed("prod-eu"), ""),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(
        registered
            .install_manifest_yaml
            .contains(slipway_catalog::api::clusters::DEFAULT_ORCHESTRATOR_URL)
    );
    h.stop().await
}
