//! RegistryService and GitCredentialService over gRPC: secrets sealed at rest and never
//! returned, validation, and who may do what. Real PostgreSQL and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, TestResult, violations, with_token};
use prost::Message as _;
use slipway_catalog::store::{Kind, Row, Store};
use slipway_identity::store::BuiltinRole;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::git_credential_service_client::GitCredentialServiceClient;
use slipway_proto::catalog::v1::registry_service_client::RegistryServiceClient;
use tonic::Code;

const PASSWORD: &str = "registry-password-7f3a9c";
const TOKEN: &str = "ghp_gitTokenValue9x8y7z";
const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBsecretKeyMaterialXYZ\n-----END OPENSSH PRIVATE KEY-----\n";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Neither column of the stored row holds `secret` in clear.
fn sealed_only(row: &Row, secret: &str) {
    assert!(!contains(&row.spec, secret), "plaintext in spec");
    if let Some(sealed) = &row.sealed {
        assert!(!contains(sealed, secret), "plaintext in sealed");
    }
    // Nor any distinctive part of it (a key's body line).
    for line in secret
        .lines()
        .filter(|l| l.len() > 16 && !l.starts_with("-----"))
    {
        assert!(!contains(&row.spec, line));
        assert!(row.sealed.as_ref().is_none_or(|s| !contains(s, line)));
    }
}

fn registry(name: &str) -> pb::Registry {
    pb::Registry {
        name: name.into(),
        kind: pb::RegistryKind::Github.into(),
        url: "https://ghcr.io".into(),
        username: "octo".into(),
        password: PASSWORD.into(),
        ..Default::default()
    }
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_passwords_are_sealed_and_never_returned() -> TestResult {
    let h = Harness::start().await?;
    let store = Store::new(h.platform.db.clone());
    let mut registries = RegistryServiceClient::new(h.channel.clone());
    let create = |registry: pb::Registry, request_id: &str| pb::CreateRegistryRequest {
        organization_id: h.a.id.clone(),
        registry: Some(registry),
        request_id: request_id.into(),
    };
    let created = registries
        .create_registry(with_token(create(registry("ghcr"), "r1"), &h.a.admin))
        .await?
        .into_inner();
    assert!(!contains(&created.encode_to_vec(), PASSWORD));
    let first = created.registry.unwrap();
    assert!(first.has_password && first.password.is_empty());
    assert_eq!(first.username, "octo");
    let again = registries
        .create_registry(with_token(create(registry("other"), "r1"), &h.a.admin))
        .await?
        .into_inner()
        .registry
        .unwrap();
    assert_eq!(again, first);
    let row = store.get(Kind::Registry, &first.id).await?;
    assert!(row.sealed.is_some());
    sealed_only(&row, PASSWORD);

    let got = registries
        .get_registry(with_token(
            pb::GetRegistryRequest {
                id: first.id.clone(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(!contains(&got.encode_to_vec(), PASSWORD));
    assert!(got.registry.unwrap().has_password);
    let listed = registries
        .list_registries(with_token(
            pb::ListRegistriesRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.registries.len(), 1);
    assert!(!contains(&listed.encode_to_vec(), PASSWORD));
    let other_kind = registries
        .list_registries(with_token(
            pb::ListRegistriesRequest {
                organization_id: h.a.id.clone(),
                kind: pb::RegistryKind::AmazonEcr.into(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(other_kind.registries.is_empty());

    // Omitting the password keeps it; sending one replaces it; empty removes it.
    let update = |registry: pb::Registry, paths: &[&str]| pb::UpdateRegistryRequest {
        registry: Some(registry),
        update_mask: mask(paths),
    };
    let kept = registries
        .update_registry(with_token(
            update(
                pb::Registry {
                    id: first.id.clone(),
                    username: "octocat".into(),
                    ..Default::default()
                },
                &["username"],
            ),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .registry
        .unwrap();
    assert!(kept.has_password);
    assert_eq!(kept.username, "octocat");
    assert_eq!(
        store.get(Kind::Registry, &first.id).await?.sealed,
        row.sealed
    );
    let replaced = registries
        .update_registry(with_token(
            update(
                pb::Registry {
                    id: first.id.clone(),
                    password: "new-password-123456".into(),
                    ..Default::default()
                },
                &["password"],
            ),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(!contains(&replaced.encode_to_vec(), "new-password-123456"));
    let replaced_row = store.get(Kind::Registry, &first.id).await?;
    assert!(replaced_row.sealed.is_some() && replaced_row.sealed != row.sealed);
    sealed_only(&replaced_row, "new-password-123456");
    let removed = registries
        .update_registry(with_token(
            update(
                pb::Registry {
                    id: first.id.clone(),
                    ..Default::default()
                },
                &["password"],
            ),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .registry
        .unwrap();
    assert!(!removed.has_password);
    assert!(store.get(Kind::Registry, &first.id).await?.sealed.is_none());

    // Validation.
    let bad = [
        (
            pb::Registry {
                url: "http://registry.local".into(),
                ..registry("plain")
            },
            "registry.url",
        ),
        (
            pb::Registry {
                url: "ghcr.io".into(),
                ..registry("bare")
            },
            "registry.url",
        ),
        (
            pb::Registry {
                url: "https://user:pw@ghcr.io".into(),
                ..registry("userinfo")
            },
            "registry.url",
        ),
        (
            pb::Registry {
                kind: 0,
                ..registry("nokind")
            },
            "registry.kind",
        ),
        (registry("Bad_Name"), "registry.name"),
        (
            pb::Registry {
                password: "x".repeat(16 * 1024 + 1),
                ..registry("huge")
            },
            "registry.password",
        ),
    ];
    for (registry, field) in bad {
        let status = registries
            .create_registry(with_token(create(registry, ""), &h.a.admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(violations(&status).contains(&field.to_owned()), "{field}");
    }
    let taken = registries
        .create_registry(with_token(create(registry("ghcr"), ""), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    // A registry a cluster builds with cannot be deleted.
    let cluster = h
        .clusters()
        .register_cluster(with_token(
            pb::RegisterClusterRequest {
                organization_id: h.a.id.clone(),
                cluster: Some(pb::Cluster {
                    name: "builder".into(),
                    kind: pb::ClusterKind::SelfManaged.into(),
                    build_registry_id: first.id.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .cluster
        .unwrap();
    assert_eq!(cluster.build_registry_id, first.id);
    let delete = || pb::DeleteRegistryRequest {
        id: first.id.clone(),
        etag: String::new(),
    };
    let in_use = registries
        .delete_registry(with_token(delete(), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    h.clusters()
        .delete_cluster(with_token(
            pb::DeleteClusterRequest {
                id: cluster.id,
                etag: String::new(),
            },
            &h.a.admin,
        ))
        .await?;
    registries
        .delete_registry(with_token(delete(), &h.a.admin))
        .await?;
    assert!(matches!(
        store.get(Kind::Registry, &first.id).await,
        Err(slipway_catalog::store::StoreError::NotFound(_))
    ));
    h.stop().await
}

fn git_token(name: &str) -> pb::GitCredential {
    pb::GitCredential {
        name: name.into(),
        provider: pb::GitProviderKind::Github.into(),
        token: TOKEN.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_secrets_are_sealed_switchable_and_never_returned() -> TestResult {
    let h = Harness::start().await?;
    let store = Store::new(h.platform.db.clone());
    let mut git = GitCredentialServiceClient::new(h.channel.clone());
    let create = |credential: pb::GitCredential| pb::CreateGitCredentialRequest {
        organization_id: h.a.id.clone(),
        git_credential: Some(credential),
        request_id: String::new(),
    };
    let created = git
        .create_git_credential(with_token(create(git_token("github")), &h.a.admin))
        .await?
        .into_inner();
    assert!(!contains(&created.encode_to_vec(), TOKEN));
    let credential = created.git_credential.unwrap();
    assert!(credential.has_token && !credential.has_ssh_private_key);
    assert!(credential.token.is_empty());
    let row = store.get(Kind::GitCredential, &credential.id).await?;
    assert!(row.sealed.is_some());
    sealed_only(&row, TOKEN);
    let got = git
        .get_git_credential(with_token(
            pb::GetGitCredentialRequest {
                id: credential.id.clone(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(!contains(&got.encode_to_vec(), TOKEN));
    let listed = git
        .list_git_credentials(with_token(
            pb::ListGitCredentialsRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.git_credentials.len(), 1);
    assert!(!contains(&listed.encode_to_vec(), TOKEN));

    // Renaming keeps the secret as it is.
    let update = |credential: pb::GitCredential, paths: &[&str]| pb::UpdateGitCredentialRequest {
        git_credential: Some(credential),
        update_mask: mask(paths),
    };
    let renamed = git
        .update_git_credential(with_token(
            update(
                pb::GitCredential {
                    id: credential.id.clone(),
                    name: "github-ci".into(),
                    ..Default::default()
                },
                &["name"],
            ),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .git_credential
        .unwrap();
    assert_eq!(renamed.name, "github-ci");
    assert!(renamed.has_token);
    assert_eq!(
        store.get(Kind::GitCredential, &credential.id).await?.sealed,
        row.sealed
    );
    // Adding a key while the token stays would leave two secrets.
    let two = git
        .update_git_credential(with_token(
            update(
                pb::GitCredential {
                    id: credential.id.clone(),
                    ssh_private_key: SSH_KEY.into(),
                    ..Default::default()
                },
                &["ssh_private_key"],
            ),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(two.code(), Code::InvalidArgument);
    // Switching to SSH: both paths, the token emptied.
    let switched = git
        .update_git_credential(with_token(
            update(
                pb::GitCredential {
                    id: credential.id.clone(),
                    ssh_private_key: SSH_KEY.into(),
                    ..Default::default()
                },
                &["token", "ssh_private_key"],
            ),
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(!contains(&switched.encode_to_vec(), "secretKeyMaterial"));
    let switched = switched.git_credential.unwrap();
    assert!(!switched.has_token && switched.has_ssh_private_key);
    let row = store.get(Kind::GitCredential, &credential.id).await?;
    sealed_only(&row, SSH_KEY);
    sealed_only(&row, TOKEN);

    // Validation.
    let bad = [
        (
            pb::GitCredential {
                ssh_private_key: SSH_KEY.into(),
                ..git_token("both")
            },
            "git_credential.token",
        ),
        (
            pb::GitCredential {
                token: String::new(),
                ..git_token("neither")
            },
            "git_credential.token",
        ),
        (
            pb::GitCredential {
                provider: 0,
                ..git_token("noprovider")
            },
            "git_credential.provider",
        ),
        (
            pb::GitCredential {
                token: String::new(),
                ssh_private_key: "ssh-ed25519 AAAAC3Nza public key".into(),
                ..git_token("publickey")
            },
            "git_credential.ssh_private_key",
        ),
        (
            pb::GitCredential {
                provider: pb::GitProviderKind::Generic.into(),
                token: String::new(),
                ssh_private_key: SSH_KEY.into(),
                ..git_token("generic-ssh")
            },
            "git_credential.ssh_known_hosts",
        ),
        (
            pb::GitCredential {
                provider: pb::GitProviderKind::Generic.into(),
                ..git_token("generic-token")
            },
            "git_credential.username",
        ),
        (git_token("UPPER"), "git_credential.name"),
    ];
    for (credential, field) in bad {
        let status = git
            .create_git_credential(with_token(create(credential), &h.a.admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(violations(&status).contains(&field.to_owned()), "{field}");
    }
    // GENERIC over SSH with known hosts is fine.
    git.create_git_credential(with_token(
        create(pb::GitCredential {
            provider: pb::GitProviderKind::Generic.into(),
            token: String::new(),
            ssh_private_key: SSH_KEY.into(),
            ssh_known_hosts: "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA".into(),
            ..git_token("generic-ssh")
        }),
        &h.a.admin,
    ))
    .await?;

    git.delete_git_credential(with_token(
        pb::DeleteGitCredentialRequest {
            id: credential.id.clone(),
            etag: String::new(),
        },
        &h.a.admin,
    ))
    .await?;
    let gone = git
        .get_git_credential(with_token(
            pb::GetGitCredentialRequest { id: credential.id },
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
    let mut registries = RegistryServiceClient::new(h.channel.clone());
    let mut git = GitCredentialServiceClient::new(h.channel.clone());
    let reg = registries
        .create_registry(with_token(
            pb::CreateRegistryRequest {
                organization_id: h.a.id.clone(),
                registry: Some(registry("ghcr")),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .registry
        .unwrap();
    let cred = git
        .create_git_credential(with_token(
            pb::CreateGitCredentialRequest {
                organization_id: h.a.id.clone(),
                git_credential: Some(git_token("github")),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .git_credential
        .unwrap();
    let viewer = h.builtin(&h.a.id, BuiltinRole::Viewer).await?;

    for (token, expected) in [
        (&h.b.admin, Code::NotFound),
        (&viewer, Code::PermissionDenied),
    ] {
        let writes = [
            registries
                .create_registry(with_token(
                    pb::CreateRegistryRequest {
                        organization_id: h.a.id.clone(),
                        registry: Some(registry("sneaky")),
                        request_id: String::new(),
                    },
                    token,
                ))
                .await
                .map(|_| ())
                .unwrap_err(),
            registries
                .update_registry(with_token(
                    pb::UpdateRegistryRequest {
                        registry: Some(pb::Registry {
                            id: reg.id.clone(),
                            username: "x".into(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["username"]),
                    },
                    token,
                ))
                .await
                .map(|_| ())
                .unwrap_err(),
            registries
                .delete_registry(with_token(
                    pb::DeleteRegistryRequest {
                        id: reg.id.clone(),
                        etag: String::new(),
                    },
                    token,
                ))
                .await
                .map(|_| ())
                .unwrap_err(),
            git.create_git_credential(with_token(
                pb::CreateGitCredentialRequest {
                    organization_id: h.a.id.clone(),
                    git_credential: Some(git_token("sneaky")),
                    request_id: String::new(),
                },
                token,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
            git.update_git_credential(with_token(
                pb::UpdateGitCredentialRequest {
                    git_credential: Some(pb::GitCredential {
                        id: cred.id.clone(),
                        username: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["username"]),
                },
                token,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
            git.delete_git_credential(with_token(
                pb::DeleteGitCredentialRequest {
                    id: cred.id.clone(),
                    etag: String::new(),
                },
                token,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        ];
        for status in writes {
            assert_eq!(status.code(), expected, "{status:?}");
        }
    }

    // Organization B reads nothing of A's.
    let b = &h.b.admin;
    let reads = [
        registries
            .get_registry(with_token(pb::GetRegistryRequest { id: reg.id.clone() }, b))
            .await
            .map(|_| ())
            .unwrap_err(),
        registries
            .list_registries(with_token(
                pb::ListRegistriesRequest {
                    organization_id: h.a.id.clone(),
                    ..Default::default()
                },
                b,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        git.get_git_credential(with_token(
            pb::GetGitCredentialRequest {
                id: cred.id.clone(),
            },
            b,
        ))
        .await
        .map(|_| ())
        .unwrap_err(),
        git.list_git_credentials(with_token(
            pb::ListGitCredentialsRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            b,
        ))
        .await
        .map(|_| ())
        .unwrap_err(),
    ];
    for status in reads {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    // A VIEWER of A reads, without secrets.
    let got = registries
        .get_registry(with_token(
            pb::GetRegistryRequest { id: reg.id.clone() },
            &viewer,
        ))
        .await?
        .into_inner();
    assert!(!contains(&got.encode_to_vec(), PASSWORD));
    let got = git
        .get_git_credential(with_token(
            pb::GetGitCredentialRequest {
                id: cred.id.clone(),
            },
            &viewer,
        ))
        .await?
        .into_inner();
    assert!(!contains(&got.encode_to_vec(), TOKEN));
    let listed = git
        .list_git_credentials(with_token(
            pb::ListGitCredentialsRequest {
                organization_id: h.a.id.clone(),
                ..Default::default()
            },
            &viewer,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.git_credentials.len(), 1);
    h.stop().await
}

/// Deleting a registry or git credential is refused exactly while a service's settings
/// name it (here through Helm OCI and Helm git chart sources), and allowed when its id
/// merely appears in other text of a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_refused_only_for_real_references() -> TestResult {
    use slipway_catalog::api::CatalogMessage as _;
    use slipway_catalog::store::{Children, NewRow, new_id};
    use slipway_proto::catalog::v1::helm_settings::ChartSource;
    use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};

    let h = Harness::start().await?;
    let store = Store::new(h.platform.db.clone());
    let mut registries = RegistryServiceClient::new(h.channel.clone());
    let mut git = GitCredentialServiceClient::new(h.channel.clone());
    let registry = registries
        .create_registry(with_token(
            pb::CreateRegistryRequest {
                organization_id: h.a.id.clone(),
                registry: Some(registry("ghcr")),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .registry
        .unwrap();
    let credential = git
        .create_git_credential(with_token(
            pb::CreateGitCredentialRequest {
                organization_id: h.a.id.clone(),
                git_credential: Some(git_token("github")),
                request_id: String::new(),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .git_credential
        .unwrap();

    let project = h.project(&h.a, "shop").await?;
    let cluster = h.cluster(&h.a, "main").await?;
    let environment = h
        .environment(
            &h.a,
            &project,
            "dev",
            EnvironmentMode::Development,
            &cluster,
        )
        .await?;
    let insert = |name: &str, service: pb::Service| {
        let store = store.clone();
        let row = NewRow {
            id: new_id(),
            organization_id: h.a.id.clone(),
            parent_id: environment.id.clone(),
            name: name.into(),
            subtype: "HELM".into(),
            project_id: Some(project.id.clone()),
            environment_id: Some(environment.id.clone()),
            spec: service.to_spec(),
            ..NewRow::default()
        };
        async move {
            store
                .insert(Kind::Service, row, None)
                .await
                .map(|(row, _)| row)
        }
    };
    let helm = |source: ChartSource, values_yaml: String| pb::Service {
        name: "chart".into(),
        kind: ServiceKind::Helm.into(),
        settings: Some(pb::service::Settings::Helm(pb::HelmSettings {
            chart_source: Some(source),
            values_yaml,
            ..Default::default()
        })),
        ..Default::default()
    };
    // Both ids in text only: not references.
    insert(
        "decoy",
        helm(
            ChartSource::Oci(pb::HelmOciSource {
                reference: format!("oci://ghcr.io/acme/{}", registry.id),
                registry_id: String::new(),
            }),
            format!("previous: [{}, {}]\n", registry.id, credential.id),
        ),
    )
    .await?;
    let oci = insert(
        "oci",
        helm(
            ChartSource::Oci(pb::HelmOciSource {
                reference: "oci://ghcr.io/acme/charts/api".into(),
                registry_id: registry.id.clone(),
            }),
            String::new(),
        ),
    )
    .await?;
    let from_git = insert(
        "from-git",
        helm(
            ChartSource::Git(pb::HelmGitSource {
                repository_url: "https://github.com/acme/charts.git".into(),
                branch: "main".into(),
                chart_path: String::new(),
                git_credential_id: credential.id.clone(),
            }),
            String::new(),
        ),
    )
    .await?;

    let delete_registry = || pb::DeleteRegistryRequest {
        id: registry.id.clone(),
        etag: String::new(),
    };
    let delete_credential = || pb::DeleteGitCredentialRequest {
        id: credential.id.clone(),
        etag: String::new(),
    };
    let refused = registries
        .delete_registry(with_token(delete_registry(), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = git
        .delete_git_credential(with_token(delete_credential(), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // With the real references gone, the decoy's text does not hold the deletes back.
    for row in [oci, from_git] {
        store
            .delete(Kind::Service, &row.id, None, Children::Refuse)
            .await?;
    }
    registries
        .delete_registry(with_token(delete_registry(), &h.a.admin))
        .await?;
    git.delete_git_credential(with_token(delete_credential(), &h.a.admin))
        .await?;
    h.stop().await
}
