//! ServiceService over gRPC, authenticated through identity, on real PostgreSQL and NATS:
//! services of every kind, their validation, update masks, etags, request ids, listing,
//! and who may see and change them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BoxError, Harness, Org, TestResult, violations, with_token};
use slipway_catalog::api::CatalogMessage as _;
use slipway_catalog::store::{Kind, NewRow, Store, new_id};
use slipway_identity::store::BuiltinRole;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::helm_settings::ChartSource;
use slipway_proto::catalog::v1::job_source::Source;
use slipway_proto::catalog::v1::service::Settings;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use tonic::Code;

/// A project, a cluster and a development environment of `org`; returns the environment.
async fn environment(h: &Harness, org: &Org) -> Result<pb::Environment, BoxError> {
    let project = h.project(org, "shop").await?;
    let cluster = h.cluster(org, "main").await?;
    h.environment(org, &project, "dev", EnvironmentMode::Development, &cluster)
        .await
}

/// A registry or git credential row of `org`, written to the store directly (so these
/// tests do not depend on those services).
async fn reference(h: &Harness, org: &Org, kind: Kind, name: &str) -> Result<String, BoxError> {
    let store = Store::new(h.platform.db.clone());
    let spec = match kind {
        Kind::Registry => pb::Registry {
            name: name.into(),
            ..Default::default()
        }
        .to_spec(),
        _ => pb::GitCredential {
            name: name.into(),
            ..Default::default()
        }
        .to_spec(),
    };
    let row = NewRow {
        id: new_id(),
        organization_id: org.id.clone(),
        parent_id: org.id.clone(),
        name: name.into(),
        spec,
        ..Default::default()
    };
    let (row, _) = store.insert(kind, row, None).await?;
    Ok(row.id)
}

fn service(name: &str, kind: ServiceKind, settings: Settings) -> pb::Service {
    pb::Service {
        name: name.into(),
        kind: kind.into(),
        settings: Some(settings),
        ..Default::default()
    }
}

fn git(credential: &str) -> pb::GitSource {
    pb::GitSource {
        repository_url: "https://github.com/acme/shop.git".into(),
        branch: "main".into(),
        root_path: "api".into(),
        dockerfile_path: "Dockerfile".into(),
        build_arguments: [("RUST_VERSION".to_owned(), "1.90".to_owned())].into(),
        git_credential_id: credential.into(),
        build_command: "cargo build --release".into(),
    }
}

fn image(registry: &str) -> pb::ImageSource {
    pb::ImageSource {
        registry_id: registry.into(),
        image: "acme/worker".into(),
        tag: "1.4.2".into(),
    }
}

fn http_port(port: u32, public: bool) -> pb::Port {
    pb::Port {
        internal_port: port,
        external_port: 0,
        protocol: pb::PortProtocol::Http.into(),
        public,
    }
}

fn seconds(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn application(name: &str, credential: &str) -> pb::Service {
    service(
        name,
        ServiceKind::Application,
        Settings::Application(pb::ApplicationSettings {
            source: Some(git(credential)),
            runtime: Some(pb::RuntimeSettings {
                ports: vec![http_port(8080, true), http_port(9090, false)],
                cpu_millicores: 250,
                memory_mib: 256,
                min_instances: 1,
                max_instances: 3,
                liveness_probe: Some(pb::Probe {
                    r#type: pb::ProbeType::Http.into(),
                    path: "/healthz".into(),
                    port: 8080,
                    period: seconds(10),
                    timeout: seconds(2),
                    ..Default::default()
                }),
                readiness_probe: Some(pb::Probe {
                    r#type: pb::ProbeType::Tcp.into(),
                    port: 9090,
                    ..Default::default()
                }),
                custom_domains: vec![pb::CustomDomain {
                    domain: format!("{name}.example.com"),
                    port: 8080,
                }],
                command: vec!["cargo".into(), "run".into()],
                args: vec!["--release".into()],
            }),
        }),
    )
}

fn container(name: &str, registry: &str) -> pb::Service {
    service(
        name,
        ServiceKind::Container,
        Settings::Container(pb::ContainerSettings {
            source: Some(image(registry)),
            runtime: Some(pb::RuntimeSettings {
                ports: vec![pb::Port {
                    internal_port: 5000,
                    external_port: 80,
                    protocol: pb::PortProtocol::Grpc.into(),
                    public: true,
                }],
                ..Default::default()
            }),
        }),
    )
}

fn database(name: &str) -> pb::Service {
    service(
        name,
        ServiceKind::Database,
        Settings::Database(pb::DatabaseSettings {
            engine: pb::DatabaseEngine::Postgresql.into(),
            version: "16".into(),
            mode: pb::DatabaseMode::Container.into(),
            managed_provider: String::new(),
            storage_gib: 20,
            runtime: Some(pb::RuntimeSettings {
                memory_mib: 1024,
                readiness_probe: Some(pb::Probe {
                    r#type: pb::ProbeType::Exec.into(),
                    command: vec!["pg_isready".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
    )
}

fn cron_job(name: &str, registry: &str) -> pb::Service {
    service(
        name,
        ServiceKind::CronJob,
        Settings::CronJob(pb::CronJobSettings {
            schedule: "0 3 * * 1-5".into(),
            timezone: "Europe/Paris".into(),
            source: Some(pb::JobSource {
                source: Some(Source::Image(image(registry))),
            }),
            command: vec!["/bin/cleanup".into()],
            args: vec!["--all".into()],
            runtime: Some(pb::RuntimeSettings {
                cpu_millicores: 100,
                ..Default::default()
            }),
        }),
    )
}

fn lifecycle_job(name: &str, credential: &str) -> pb::Service {
    service(
        name,
        ServiceKind::LifecycleJob,
        Settings::LifecycleJob(pb::LifecycleJobSettings {
            events: vec![pb::LifecycleJobEvent::Start.into()],
            source: Some(pb::JobSource {
                source: Some(Source::Git(git(credential))),
            }),
            command: vec!["./migrate".into()],
            args: Vec::new(),
            timeout: seconds(300),
            max_retries: 2,
            runtime: None,
        }),
    )
}

fn helm(name: &str, registry: &str) -> pb::Service {
    service(
        name,
        ServiceKind::Helm,
        Settings::Helm(pb::HelmSettings {
            chart_source: Some(ChartSource::Repository(pb::HelmRepositorySource {
                url: "https://charts.bitnami.com/bitnami".into(),
                registry_id: registry.into(),
            })),
            chart_name: "redis".into(),
            chart_version: "19.0.1".into(),
            values_yaml: "# cache\narchitecture: standalone\nauth:\n  enabled: false\n".into(),
        }),
    )
}

fn create(
    environment_id: &str,
    service: pb::Service,
    request_id: &str,
) -> pb::CreateServiceRequest {
    pb::CreateServiceRequest {
        environment_id: environment_id.into(),
        service: Some(service),
        request_id: request_id.into(),
    }
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
}

async fn list_all(
    h: &Harness,
    token: &str,
    environment_id: &str,
    kind: ServiceKind,
    page_size: i32,
) -> Result<Vec<pb::Service>, BoxError> {
    let mut services = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = h
            .services()
            .list_services(with_token(
                pb::ListServicesRequest {
                    environment_id: environment_id.into(),
                    page_size,
                    page_token: page_token.clone(),
                    kind: kind.into(),
                },
                token,
            ))
            .await?
            .into_inner();
        services.extend(page.services);
        if page.next_page_token.is_empty() {
            return Ok(services);
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_created_read_updated_and_deleted() -> TestResult {
    let h = Harness::start().await?;
    let env = environment(&h, &h.a).await?;
    let registry = reference(&h, &h.a, Kind::Registry, "ghcr").await?;
    let credential = reference(&h, &h.a, Kind::GitCredential, "github").await?;
    let mut events = h
        .platform
        .bus
        .subscribe("slipway.events.catalog.service.>")
        .await?;
    let mut client = h.services();
    let oci_helm = service(
        "grafana",
        ServiceKind::Helm,
        Settings::Helm(pb::HelmSettings {
            chart_source: Some(ChartSource::Oci(pb::HelmOciSource {
                reference: "oci://ghcr.io/acme/charts/grafana".into(),
                registry_id: String::new(),
            })),
            chart_version: "7.3.0".into(),
            ..Default::default()
        }),
    );
    let git_helm = service(
        "ingress",
        ServiceKind::Helm,
        Settings::Helm(pb::HelmSettings {
            chart_source: Some(ChartSource::Git(pb::HelmGitSource {
                repository_url: "git@github.com:acme/charts.git".into(),
                branch: "main".into(),
                chart_path: "charts/ingress".into(),
                git_credential_id: credential.clone(),
            })),
            values_yaml: "{replicas: 2}".into(),
            ..Default::default()
        }),
    );
    let wanted = vec![
        application("api", &credential),
        container("worker", &registry),
        database("db"),
        cron_job("cleanup", &registry),
        lifecycle_job("migrate", &credential),
        helm("cache", &registry),
        oci_helm,
        git_helm,
    ];
    let mut created = Vec::new();
    for wanted in &wanted {
        let service = client
            .create_service(with_token(create(&env.id, wanted.clone(), ""), &h.a.admin))
            .await?
            .into_inner()
            .service
            .unwrap();
        assert_eq!(service.organization_id, h.a.id);
        assert_eq!(service.project_id, env.project_id);
        assert_eq!(service.environment_id, env.id);
        assert_eq!((&service.name, service.kind), (&wanted.name, wanted.kind));
        assert_eq!(service.settings, wanted.settings, "{}", wanted.name);
        assert!(!service.id.is_empty() && !service.etag.is_empty());
        assert!(service.create_time.is_some() && service.update_time.is_some());
        let got = client
            .get_service(with_token(
                pb::GetServiceRequest {
                    id: service.id.clone(),
                },
                &h.a.admin,
            ))
            .await?
            .into_inner()
            .service
            .unwrap();
        assert_eq!(got, service);
        created.push(service);
    }
    // The row records the kind in its subtype, so ListServices filters by it.
    let store = Store::new(h.platform.db.clone());
    assert_eq!(
        store.get(Kind::Service, &created[3].id).await?.subtype,
        "CRON_JOB"
    );
    let listed = list_all(&h, &h.a.admin, &env.id, ServiceKind::Unspecified, 0).await?;
    assert_eq!(listed.len(), created.len());

    // The created event.
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await?
        .unwrap();
    assert_eq!(message.subject, "slipway.events.catalog.service.created");
    let event = <slipway_proto::events::v1::Event as prost::Message>::decode(message.payload)?;
    assert_eq!(event.r#type, "catalog.service.created");
    let Some(slipway_proto::events::v1::event::Payload::ServiceCreated(payload)) = event.payload
    else {
        panic!("not a ServiceCreated: {:?}", event.payload);
    };
    assert_eq!(payload.service_id, created[0].id);
    assert_eq!(payload.kind, i32::from(ServiceKind::Application));

    // One update per kind, through a path inside its block.
    let mut updates: Vec<(pb::Service, &str)> = Vec::new();
    {
        let mut s = created[0].clone();
        let Some(Settings::Application(app)) = &mut s.settings else {
            panic!()
        };
        app.source.as_mut().unwrap().branch = "release".into();
        updates.push((s, "application.source.branch"));
    }
    {
        let mut s = created[1].clone();
        let Some(Settings::Container(c)) = &mut s.settings else {
            panic!()
        };
        c.runtime.as_mut().unwrap().memory_mib = 2048;
        updates.push((s, "container.runtime.memory_mib"));
    }
    {
        let mut s = created[2].clone();
        let Some(Settings::Database(d)) = &mut s.settings else {
            panic!()
        };
        d.version = "17".into();
        updates.push((s, "database.version"));
    }
    {
        let mut s = created[3].clone();
        let Some(Settings::CronJob(c)) = &mut s.settings else {
            panic!()
        };
        c.schedule = "@hourly".into();
        updates.push((s, "cron_job.schedule"));
    }
    {
        let mut s = created[4].clone();
        let Some(Settings::LifecycleJob(l)) = &mut s.settings else {
            panic!()
        };
        l.events = vec![
            pb::LifecycleJobEvent::Stop.into(),
            pb::LifecycleJobEvent::Delete.into(),
        ];
        updates.push((s, "lifecycle_job.events"));
    }
    {
        let mut s = created[5].clone();
        let Some(Settings::Helm(helm)) = &mut s.settings else {
            panic!()
        };
        helm.chart_version = "19.1.0".into();
        updates.push((s, "helm.chart_version"));
    }
    for (wanted, path) in updates {
        let updated = client
            .update_service(with_token(
                pb::UpdateServiceRequest {
                    service: Some(wanted.clone()),
                    update_mask: mask(&[path]),
                },
                &h.a.admin,
            ))
            .await?
            .into_inner()
            .service
            .unwrap();
        assert_eq!(updated.settings, wanted.settings, "{path}");
        assert_ne!(updated.etag, wanted.etag, "{path}");
    }

    // A rename, sending only the id and the name.
    let renamed = client
        .update_service(with_token(
            pb::UpdateServiceRequest {
                service: Some(pb::Service {
                    id: created[0].id.clone(),
                    name: "backend".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
            },
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .service
        .unwrap();
    assert_eq!(renamed.name, "backend");
    assert_eq!(renamed.kind, i32::from(ServiceKind::Application));
    assert!(matches!(renamed.settings, Some(Settings::Application(_))));

    for service in &created {
        client
            .delete_service(with_token(
                pb::DeleteServiceRequest {
                    id: service.id.clone(),
                    etag: String::new(),
                },
                &h.a.admin,
            ))
            .await?;
        let gone = client
            .get_service(with_token(
                pb::GetServiceRequest {
                    id: service.id.clone(),
                },
                &h.a.admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    }
    assert!(
        list_all(&h, &h.a.admin, &env.id, ServiceKind::Unspecified, 0)
            .await?
            .is_empty()
    );
    h.stop().await
}

/// The sorted field paths of an INVALID_ARGUMENT.
fn fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut fields = violations(status);
    fields.sort();
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_of_every_kind_name_their_fields_and_write_nothing() -> TestResult {
    let h = Harness::start().await?;
    let env = environment(&h, &h.a).await?;
    let mut client = h.services();
    let mut cases: Vec<(pb::Service, Vec<&str>)> = Vec::new();

    // Name, kind and block.
    cases.push((
        pb::Service {
            name: "Bad_Name".into(),
            ..Default::default()
        },
        vec!["service.kind", "service.name"],
    ));
    cases.push((
        pb::Service {
            name: "9lives".into(),
            kind: ServiceKind::Container.into(),
            ..Default::default()
        },
        vec!["service.container", "service.name"],
    ));
    cases.push((
        pb::Service {
            kind: ServiceKind::Container.into(),
            ..database("db")
        },
        vec!["service.kind"],
    ));

    // APPLICATION.
    let mut app = application("api", "");
    if let Some(Settings::Application(a)) = &mut app.settings {
        let source = a.source.as_mut().unwrap();
        source.repository_url = "github.com/acme/shop".into();
        source.branch = String::new();
        source.root_path = "../outside".into();
        source.build_arguments = [("1BAD".to_owned(), "x".to_owned())].into();
        let runtime = a.runtime.as_mut().unwrap();
        runtime.ports = vec![
            http_port(0, true),
            http_port(8080, true),
            http_port(8080, false),
        ];
        runtime.cpu_millicores = 5;
        runtime.memory_mib = 8;
        runtime.min_instances = 4;
        runtime.max_instances = 2;
        runtime.liveness_probe = Some(pb::Probe {
            r#type: pb::ProbeType::Http.into(),
            path: "healthz".into(),
            port: 1234,
            period: seconds(5),
            timeout: seconds(6),
            failure_threshold: 101,
            ..Default::default()
        });
        runtime.readiness_probe = Some(pb::Probe::default());
        runtime.custom_domains = vec![
            pb::CustomDomain {
                domain: "*.example.com".into(),
                port: 0,
            },
            pb::CustomDomain {
                domain: "ok.example.com".into(),
                port: 9999,
            },
        ];
        runtime.command = vec![String::new()];
    }
    cases.push((
        app,
        vec![
            "service.application.runtime.cpu_millicores",
            "service.application.runtime.custom_domains[0].domain",
            "service.application.runtime.custom_domains[1].port",
            "service.application.runtime.liveness_probe.failure_threshold",
            "service.application.runtime.liveness_probe.path",
            "service.application.runtime.liveness_probe.port",
            "service.application.runtime.liveness_probe.timeout",
            "service.application.runtime.max_instances",
            "service.application.runtime.memory_mib",
            "service.application.runtime.ports[0].internal_port",
            "service.application.runtime.ports[2].external_port",
            "service.application.runtime.ports[2].internal_port",
            "service.application.runtime.readiness_probe.type",
            "service.application.runtime.command[0]",
            "service.application.source.branch",
            "service.application.source.build_arguments[\"1BAD\"]",
            "service.application.source.repository_url",
            "service.application.source.root_path",
        ],
    ));

    // CONTAINER.
    let mut c = container("worker", "");
    if let Some(Settings::Container(settings)) = &mut c.settings {
        settings.source = Some(pb::ImageSource {
            registry_id: String::new(),
            image: "acme/worker:latest".into(),
            tag: "sha256:nope".into(),
        });
        let runtime = settings.runtime.as_mut().unwrap();
        runtime.ports[0].internal_port = 70000;
        runtime.ports[0].external_port = 70000;
    }
    cases.push((
        c,
        vec![
            "service.container.runtime.ports[0].external_port",
            "service.container.runtime.ports[0].internal_port",
            "service.container.source.image",
            "service.container.source.tag",
        ],
    ));

    // DATABASE.
    cases.push((
        service(
            "db",
            ServiceKind::Database,
            Settings::Database(pb::DatabaseSettings {
                engine: 0,
                version: "latest".into(),
                mode: pb::DatabaseMode::Container.into(),
                managed_provider: "aws".into(),
                storage_gib: 20_000,
                runtime: Some(pb::RuntimeSettings {
                    ports: vec![http_port(5432, false), http_port(5433, false)],
                    min_instances: 2,
                    custom_domains: vec![pb::CustomDomain {
                        domain: "db.example.com".into(),
                        port: 0,
                    }],
                    ..Default::default()
                }),
            }),
        ),
        vec![
            "service.database.engine",
            "service.database.managed_provider",
            "service.database.runtime.custom_domains",
            "service.database.runtime.min_instances",
            "service.database.runtime.ports",
            "service.database.storage_gib",
            "service.database.version",
        ],
    ));
    cases.push((
        service(
            "managed",
            ServiceKind::Database,
            Settings::Database(pb::DatabaseSettings {
                engine: pb::DatabaseEngine::Mysql.into(),
                version: "8.0".into(),
                mode: pb::DatabaseMode::Managed.into(),
                managed_provider: String::new(),
                storage_gib: 0,
                runtime: Some(pb::RuntimeSettings {
                    memory_mib: 2048,
                    liveness_probe: Some(pb::Probe {
                        r#type: pb::ProbeType::Tcp.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
        ),
        vec![
            "service.database.managed_provider",
            "service.database.runtime.liveness_probe",
        ],
    ));

    // CRON_JOB.
    cases.push((
        service(
            "cleanup",
            ServiceKind::CronJob,
            Settings::CronJob(pb::CronJobSettings {
                schedule: "61 * * * *".into(),
                timezone: "Mars/Olympus".into(),
                source: None,
                command: vec!["x".repeat(4097)],
                args: Vec::new(),
                runtime: Some(pb::RuntimeSettings {
                    ports: vec![http_port(80, false)],
                    min_instances: 2,
                    ..Default::default()
                }),
            }),
        ),
        vec![
            "service.cron_job.command[0]",
            "service.cron_job.runtime.min_instances",
            "service.cron_job.runtime.ports",
            "service.cron_job.schedule",
            "service.cron_job.source",
            "service.cron_job.timezone",
        ],
    ));

    // LIFECYCLE_JOB.
    cases.push((
        service(
            "migrate",
            ServiceKind::LifecycleJob,
            Settings::LifecycleJob(pb::LifecycleJobSettings {
                events: Vec::new(),
                source: Some(pb::JobSource {
                    source: Some(Source::Image(pb::ImageSource::default())),
                }),
                command: Vec::new(),
                args: Vec::new(),
                timeout: seconds(2 * 24 * 3600),
                max_retries: 11,
                runtime: Some(pb::RuntimeSettings {
                    command: vec!["npm".into()],
                    ..Default::default()
                }),
            }),
        ),
        vec![
            "service.lifecycle_job.events",
            "service.lifecycle_job.max_retries",
            "service.lifecycle_job.runtime.command",
            "service.lifecycle_job.source.image.image",
            "service.lifecycle_job.source.image.tag",
            "service.lifecycle_job.timeout",
        ],
    ));
    cases.push((
        service(
            "twice",
            ServiceKind::LifecycleJob,
            Settings::LifecycleJob(pb::LifecycleJobSettings {
                events: vec![
                    pb::LifecycleJobEvent::Start.into(),
                    pb::LifecycleJobEvent::Start.into(),
                    0,
                ],
                source: Some(pb::JobSource {
                    source: Some(Source::Git(git(""))),
                }),
                ..Default::default()
            }),
        ),
        vec![
            "service.lifecycle_job.events[1]",
            "service.lifecycle_job.events[2]",
        ],
    ));

    // HELM.
    cases.push((
        service(
            "cache",
            ServiceKind::Helm,
            Settings::Helm(pb::HelmSettings {
                chart_source: Some(ChartSource::Repository(pb::HelmRepositorySource {
                    url: "http://charts.example.com".into(),
                    registry_id: String::new(),
                })),
                chart_name: String::new(),
                chart_version: "^19".into(),
                values_yaml: "- not\n- a mapping\n".into(),
            }),
        ),
        vec![
            "service.helm.chart_name",
            "service.helm.chart_version",
            "service.helm.repository.url",
            "service.helm.values_yaml",
        ],
    ));
    cases.push((
        service(
            "chart",
            ServiceKind::Helm,
            Settings::Helm(pb::HelmSettings {
                chart_source: Some(ChartSource::Git(pb::HelmGitSource {
                    repository_url: "https://github.com/acme/charts".into(),
                    branch: "main".into(),
                    chart_path: "/abs".into(),
                    git_credential_id: String::new(),
                })),
                chart_name: "x".into(),
                chart_version: "1.0.0".into(),
                values_yaml: String::new(),
            }),
        ),
        vec![
            "service.helm.chart_name",
            "service.helm.chart_version",
            "service.helm.git.chart_path",
        ],
    ));
    cases.push((
        service(
            "empty",
            ServiceKind::Helm,
            Settings::Helm(pb::HelmSettings::default()),
        ),
        vec!["service.helm.chart_source"],
    ));

    for (service, expected) in cases {
        let name = service.name.clone();
        let status = client
            .create_service(with_token(create(&env.id, service, ""), &h.a.admin))
            .await
            .unwrap_err();
        let mut expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
        expected.sort();
        assert_eq!(fields(&status), expected, "{name}");
    }

    // A managed database that is otherwise valid: no provider exists yet, and it says so.
    let managed = service(
        "managed",
        ServiceKind::Database,
        Settings::Database(pb::DatabaseSettings {
            engine: pb::DatabaseEngine::Postgresql.into(),
            version: "16".into(),
            mode: pb::DatabaseMode::Managed.into(),
            managed_provider: "rds".into(),
            storage_gib: 0,
            runtime: Some(pb::RuntimeSettings {
                cpu_millicores: 1000,
                ..Default::default()
            }),
        }),
    );
    let status = client
        .create_service(with_token(create(&env.id, managed, ""), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status.message().contains("provider"),
        "{}",
        status.message()
    );

    // References must name a registry or git credential of the organization.
    let foreign = reference(&h, &h.b, Kind::Registry, "theirs").await?;
    let credential_as_registry = reference(&h, &h.a, Kind::GitCredential, "github").await?;
    for registry in [new_id(), foreign, credential_as_registry] {
        let status = client
            .create_service(with_token(
                create(&env.id, container("worker", &registry), ""),
                &h.a.admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{registry}");
    }
    let status = client
        .create_service(with_token(
            create(&env.id, application("api", &new_id()), ""),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // An unknown environment.
    let status = client
        .create_service(with_token(
            create(&new_id(), database("db"), ""),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    assert!(
        list_all(&h, &h.a.admin, &env.id, ServiceKind::Unspecified, 0)
            .await?
            .is_empty(),
        "a refused create wrote nothing"
    );
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_follow_masks_etags_and_immutable_fields() -> TestResult {
    let h = Harness::start().await?;
    let env = environment(&h, &h.a).await?;
    let mut client = h.services();
    let mut created = Vec::new();
    for service in [application("api", ""), database("db"), container("web", "")] {
        created.push(
            client
                .create_service(with_token(create(&env.id, service, ""), &h.a.admin))
                .await?
                .into_inner()
                .service
                .unwrap(),
        );
    }
    let (api, db, web) = (&created[0], &created[1], &created[2]);
    let update = |service: pb::Service, paths: &[&str]| pb::UpdateServiceRequest {
        service: Some(service),
        update_mask: mask(paths),
    };

    // Stale etag.
    let mut changed = db.clone();
    if let Some(Settings::Database(d)) = &mut changed.settings {
        d.storage_gib = 40;
    }
    client
        .update_service(with_token(
            update(changed.clone(), &["database.storage_gib"]),
            &h.a.admin,
        ))
        .await?;
    let stale = client
        .update_service(with_token(
            update(changed.clone(), &["database.storage_gib"]),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let stale = client
        .delete_service(with_token(
            pb::DeleteServiceRequest {
                id: db.id.clone(),
                etag: db.etag.clone(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);

    // Immutable, unknown and other-kind paths.
    let status = client
        .update_service(with_token(
            update(
                pb::Service {
                    id: db.id.clone(),
                    ..Default::default()
                },
                &[
                    "kind",
                    "database.engine",
                    "database.nope",
                    "application.source",
                ],
            ),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&status),
        vec![
            "update_mask.paths[0]",
            "update_mask.paths[1]",
            "update_mask.paths[2]"
        ]
    );
    let status = client
        .update_service(with_token(
            update(
                pb::Service {
                    id: db.id.clone(),
                    ..Default::default()
                },
                &["application.source.branch"],
            ),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), vec!["update_mask.paths[0]"]);
    // The kind cannot change, even by sending another kind with the whole block.
    let mut other = api.clone();
    other.id = db.id.clone();
    other.etag.clear();
    let status = client
        .update_service(with_token(update(other, &["name"]), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), vec!["service.kind"]);
    // A whole database block may not switch the engine, shrink the volume or downgrade.
    let mut replaced = db.clone();
    replaced.etag.clear();
    if let Some(Settings::Database(d)) = &mut replaced.settings {
        d.engine = pb::DatabaseEngine::Mysql.into();
        d.version = "15".into();
        d.storage_gib = 5;
    }
    let status = client
        .update_service(with_token(update(replaced, &["database"]), &h.a.admin))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&status),
        vec![
            "service.database.engine",
            "service.database.storage_gib",
            "service.database.version",
        ]
    );
    // A merged result is validated like a create.
    let mut bad = api.clone();
    bad.etag.clear();
    if let Some(Settings::Application(a)) = &mut bad.settings {
        a.runtime.as_mut().unwrap().max_instances = 200;
    }
    let status = client
        .update_service(with_token(
            update(bad, &["application.runtime.max_instances"]),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&status),
        vec!["service.application.runtime.max_instances"]
    );

    // Names and custom domains are unique.
    let status = client
        .update_service(with_token(
            update(
                pb::Service {
                    id: web.id.clone(),
                    name: "api".into(),
                    ..Default::default()
                },
                &["name"],
            ),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let mut web_domain = web.clone();
    web_domain.etag.clear();
    if let Some(Settings::Container(c)) = &mut web_domain.settings {
        c.runtime.as_mut().unwrap().custom_domains = vec![pb::CustomDomain {
            domain: "api.example.com".into(),
            port: 0,
        }];
    }
    let status = client
        .update_service(with_token(
            update(web_domain.clone(), &["container.runtime.custom_domains"]),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    // The same domain in another environment of the organization is taken too.
    let other_env = h
        .environment(
            &h.a,
            &h.projects()
                .get_project(with_token(
                    pb::GetProjectRequest {
                        id: env.project_id.clone(),
                    },
                    &h.a.admin,
                ))
                .await?
                .into_inner()
                .project
                .unwrap(),
            "staging",
            EnvironmentMode::Staging,
            &env.cluster_id,
        )
        .await?;
    let status = client
        .create_service(with_token(
            create(&other_env.id, application("api", ""), ""),
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    // A sub-message path changes only what it names.
    if let Some(Settings::Container(c)) = &mut web_domain.settings {
        let runtime = c.runtime.as_mut().unwrap();
        runtime.custom_domains[0].domain = "web.example.com".into();
        runtime.cpu_millicores = 2000;
    }
    let updated = client
        .update_service(with_token(
            update(web_domain, &["container.runtime.custom_domains"]),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .service
        .unwrap();
    let Some(Settings::Container(c)) = &updated.settings else {
        panic!("kind changed")
    };
    let runtime = c.runtime.as_ref().unwrap();
    assert_eq!(runtime.custom_domains[0].domain, "web.example.com");
    assert_eq!(runtime.cpu_millicores, 0, "cpu was not in the mask");
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_pages_and_kind_filter() -> TestResult {
    let h = Harness::start().await?;
    let env = environment(&h, &h.a).await?;
    let mut client = h.services();
    let first = client
        .create_service(with_token(
            create(&env.id, database("db"), "req-1"),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .service
        .unwrap();
    // The repeat differs, yet returns the first result and creates nothing.
    let again = client
        .create_service(with_token(
            create(&env.id, database("other-db"), "req-1"),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .service
        .unwrap();
    assert_eq!(again, first);
    // Even with custom domains, which a repeat would otherwise find taken by itself.
    let api = client
        .create_service(with_token(
            create(&env.id, application("api", ""), "req-2"),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .service
        .unwrap();
    let again = client
        .create_service(with_token(
            create(&env.id, application("api", ""), "req-2"),
            &h.a.admin,
        ))
        .await?
        .into_inner()
        .service
        .unwrap();
    assert_eq!(again, api);
    let all = list_all(&h, &h.a.admin, &env.id, ServiceKind::Unspecified, 0).await?;
    assert_eq!(all.len(), 2);

    let mut ids = vec![first.id.clone(), api.id.clone()];
    for i in 0..5 {
        let service = if i % 2 == 0 {
            cron_job(&format!("job-{i}"), "")
        } else {
            container(&format!("web-{i}"), "")
        };
        ids.push(
            client
                .create_service(with_token(create(&env.id, service, ""), &h.a.admin))
                .await?
                .into_inner()
                .service
                .unwrap()
                .id,
        );
    }
    // Walking pages of 2 returns every service exactly once.
    let walked: Vec<String> = list_all(&h, &h.a.admin, &env.id, ServiceKind::Unspecified, 2)
        .await?
        .into_iter()
        .map(|service| service.id)
        .collect();
    let mut sorted = walked.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), walked.len(), "no service twice");
    ids.sort();
    assert_eq!(sorted, ids);
    let jobs = list_all(&h, &h.a.admin, &env.id, ServiceKind::CronJob, 1).await?;
    assert_eq!(jobs.len(), 3);
    assert!(
        jobs.iter()
            .all(|service| service.kind == i32::from(ServiceKind::CronJob))
    );
    assert!(
        list_all(&h, &h.a.admin, &env.id, ServiceKind::Helm, 0)
            .await?
            .is_empty()
    );

    // A token of another listing, a negative size and an unknown kind are refused.
    let page = client
        .list_services(with_token(
            pb::ListServicesRequest {
                environment_id: env.id.clone(),
                page_size: 1,
                ..Default::default()
            },
            &h.a.admin,
        ))
        .await?
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let status = client
        .list_services(with_token(
            pb::ListServicesRequest {
                environment_id: env.id.clone(),
                page_size: -1,
                page_token: String::new(),
                kind: 99,
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), vec!["kind", "page_size"]);
    let status = client
        .list_services(with_token(
            pb::ListServicesRequest {
                environment_id: env.id.clone(),
                page_size: 1,
                page_token: page.next_page_token,
                kind: ServiceKind::Database.into(),
            },
            &h.a.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), vec!["page_token"]);
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_get_not_found_and_viewers_only_read() -> TestResult {
    let h = Harness::start().await?;
    let env = environment(&h, &h.a).await?;
    let mut client = h.services();
    let db = client
        .create_service(with_token(create(&env.id, database("db"), ""), &h.a.admin))
        .await?
        .into_inner()
        .service
        .unwrap();
    let rename = |token: &str| {
        with_token(
            pb::UpdateServiceRequest {
                service: Some(pb::Service {
                    id: db.id.clone(),
                    name: "mine".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
            },
            token,
        )
    };
    let delete = |token: &str| {
        with_token(
            pb::DeleteServiceRequest {
                id: db.id.clone(),
                etag: String::new(),
            },
            token,
        )
    };
    let get = |token: &str| with_token(pb::GetServiceRequest { id: db.id.clone() }, token);
    let list = |token: &str| {
        with_token(
            pb::ListServicesRequest {
                environment_id: env.id.clone(),
                ..Default::default()
            },
            token,
        )
    };

    let intruder = h.b.admin.as_str();
    let codes = [
        client
            .create_service(with_token(create(&env.id, database("x"), ""), intruder))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        client
            .get_service(get(intruder))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        client
            .list_services(list(intruder))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        client
            .update_service(rename(intruder))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        client
            .delete_service(delete(intruder))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
    ];
    assert!(
        codes.iter().all(|code| *code == Code::NotFound),
        "{codes:?}"
    );

    let viewer = h.builtin(&h.a.id, BuiltinRole::Viewer).await?;
    assert_eq!(
        client.get_service(get(&viewer)).await?.into_inner().service,
        Some(db.clone())
    );
    assert_eq!(
        client
            .list_services(list(&viewer))
            .await?
            .into_inner()
            .services,
        vec![db.clone()]
    );
    let codes = [
        client
            .create_service(with_token(create(&env.id, database("x"), ""), &viewer))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        client
            .update_service(rename(&viewer))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        client
            .delete_service(delete(&viewer))
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
    ];
    assert!(
        codes.iter().all(|code| *code == Code::PermissionDenied),
        "{codes:?}"
    );
    // Nothing changed.
    assert_eq!(
        client
            .get_service(get(&h.a.admin))
            .await?
            .into_inner()
            .service,
        Some(db)
    );
    let unauthenticated = client
        .get_service(tonic::Request::new(pb::GetServiceRequest {
            id: env.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    h.stop().await
}
