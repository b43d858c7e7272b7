//! From a frozen plan (catalog's `EnvironmentSnapshot`) to stages and the agent's
//! `WorkloadSpec`s: pure functions, so a resumed deployment computes exactly what the
//! first run computed.

use std::collections::HashMap;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use slipway_proto::agent::v1 as agent;
use slipway_proto::build::v1 as build;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::common::v1::ServiceKind;
use slipway_proto::deploy::v1 as deploy;

use super::status::Action;

/// One command's worth of a deployment: a stage kind, an operation and its services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedStage {
    pub kind: deploy::StageKind,
    pub operation: agent::CommandOperation,
    pub service_ids: Vec<String>,
}

/// Why a service of the plan cannot be turned into a workload.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The service's settings do not match its kind, or lack what the agent needs.
    #[error("service {service}: {reason}")]
    Unsupported { service: String, reason: String },
}

/// The stage group of a service kind; `None` for what never reaches an agent.
fn group(service: &cat::Service) -> Option<deploy::StageKind> {
    match ServiceKind::try_from(service.kind).ok()? {
        ServiceKind::Database => match &service.settings {
            Some(cat::service::Settings::Database(db))
                if db.mode == cat::DatabaseMode::Managed as i32 =>
            {
                None
            }
            _ => Some(deploy::StageKind::Databases),
        },
        ServiceKind::CronJob | ServiceKind::LifecycleJob => Some(deploy::StageKind::Jobs),
        ServiceKind::Application | ServiceKind::Container => Some(deploy::StageKind::Applications),
        ServiceKind::Helm => Some(deploy::StageKind::Helm),
        ServiceKind::Unspecified => None,
    }
}

/// The lifecycle event an action raises.
fn lifecycle_event(action: Action) -> Option<cat::LifecycleJobEvent> {
    match action {
        Action::Deploy => Some(cat::LifecycleJobEvent::Start),
        Action::Stop => Some(cat::LifecycleJobEvent::Stop),
        Action::Delete => Some(cat::LifecycleJobEvent::Delete),
        Action::Restart => None,
    }
}

fn runs_on(service: &cat::Service, event: cat::LifecycleJobEvent) -> bool {
    match &service.settings {
        Some(cat::service::Settings::LifecycleJob(job)) => job.events.contains(&(event as i32)),
        _ => false,
    }
}

/// The stages of `action` over the plan's services, in the order they run: databases,
/// jobs, applications, helm to deploy and restart; the reverse to stop and delete. Every
/// kind appears (an empty one is skipped when run); the jobs group may carry two commands:
/// the cron jobs' operation, and the lifecycle jobs run for the action's event.
pub fn stages(action: Action, snapshot: &cat::EnvironmentSnapshot) -> Vec<PlannedStage> {
    let services: Vec<&cat::Service> = snapshot
        .services
        .iter()
        .filter_map(|s| s.service.as_ref())
        .collect();
    let of = |kind: deploy::StageKind, filter: &dyn Fn(&cat::Service) -> bool| -> Vec<String> {
        services
            .iter()
            .filter(|s| group(s) == Some(kind) && filter(s))
            .map(|s| s.id.clone())
            .collect()
    };
    let is_lifecycle = |s: &cat::Service| s.kind == ServiceKind::LifecycleJob as i32;
    let base = match action {
        Action::Deploy => agent::CommandOperation::Apply,
        Action::Stop => agent::CommandOperation::Stop,
        Action::Restart => agent::CommandOperation::Restart,
        Action::Delete => agent::CommandOperation::Delete,
    };
    let mut plan = Vec::new();
    let order = [
        deploy::StageKind::Databases,
        deploy::StageKind::Jobs,
        deploy::StageKind::Applications,
        deploy::StageKind::Helm,
    ];
    let ordered: Vec<deploy::StageKind> = match action {
        Action::Deploy | Action::Restart => order.to_vec(),
        Action::Stop | Action::Delete => order.iter().rev().copied().collect(),
    };
    for kind in ordered {
        if kind != deploy::StageKind::Jobs {
            let ids = match (action, kind) {
                // Restart is a no-op for helm releases: nothing to send.
                (Action::Restart, deploy::StageKind::Helm) => Vec::new(),
                _ => of(kind, &|_| true),
            };
            plan.push(PlannedStage {
                kind,
                operation: base,
                service_ids: ids,
            });
            continue;
        }
        // Jobs: lifecycle jobs run for the action's event (before their own teardown on
        // delete); cron jobs take the action's operation. Restart leaves jobs alone.
        let run = lifecycle_event(action)
            .map(|event| of(kind, &|s| runs_on(s, event)))
            .unwrap_or_default();
        let workloads = match action {
            Action::Deploy => of(kind, &|s| !is_lifecycle(s)),
            Action::Stop => of(kind, &|s| !is_lifecycle(s)),
            Action::Delete => of(kind, &|_| true),
            Action::Restart => Vec::new(),
        };
        let run_stage = PlannedStage {
            kind,
            operation: agent::CommandOperation::RunJob,
            service_ids: run,
        };
        let op_stage = PlannedStage {
            kind,
            operation: base,
            service_ids: workloads,
        };
        match action {
            // Cron jobs are applied, then start jobs run (migrations before applications).
            Action::Deploy => plan.extend([op_stage, run_stage]),
            // Stop and delete jobs run before their workloads go away.
            Action::Stop | Action::Delete => plan.extend([run_stage, op_stage]),
            Action::Restart => plan.push(op_stage),
        }
    }
    plan
}

/// Hex SHA-256 of `bytes`, shortened: revisions and stable ids.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What the catalog said of a service, hashed: equal when the service's settings and
/// variables are unchanged, so a later snapshot tells `UP_TO_DATE` from `OUT_OF_DATE`.
pub fn catalog_revision(snapshot: &cat::ServiceSnapshot) -> String {
    let mut copy = snapshot.clone();
    if let Some(service) = copy.service.as_mut() {
        service.create_time = None;
        service.update_time = None;
        service.etag.clear();
    }
    digest(&copy.encode_to_vec())
}

/// The services of a plan by id.
pub fn services(snapshot: &cat::EnvironmentSnapshot) -> HashMap<String, &cat::ServiceSnapshot> {
    snapshot
        .services
        .iter()
        .filter_map(|s| s.service.as_ref().map(|svc| (svc.id.clone(), s)))
        .collect()
}

/// Whether a service needs an image built before it can be applied: an `APPLICATION`
/// builds from git.
pub fn needs_build(service: &cat::Service) -> bool {
    matches!(
        &service.settings,
        Some(cat::service::Settings::Application(app)) if app.source.is_some()
    )
}

/// The snapshot's registry `id`, with its password.
fn registry<'a>(
    snapshot: &'a cat::EnvironmentSnapshot,
    id: &str,
) -> Option<&'a cat::RegistryWithSecret> {
    if id.is_empty() {
        return None;
    }
    snapshot
        .registries
        .iter()
        .find(|r| r.registry.as_ref().is_some_and(|reg| reg.id == id))
}

/// A registry's host (with port and any path), as image references name it.
fn registry_host(registry: &cat::Registry) -> String {
    registry
        .url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Pull credentials for a registry that has a user; none for anonymous pulls.
fn pull_credentials(registry: &cat::RegistryWithSecret) -> Option<agent::RegistryCredentials> {
    let reg = registry.registry.as_ref()?;
    (!reg.username.is_empty()).then(|| agent::RegistryCredentials {
        server: registry_host(reg),
        username: reg.username.clone(),
        password: registry.password.clone(),
    })
}

/// An image reference and its pull credentials, from an `ImageSource`.
fn image(snapshot: &cat::EnvironmentSnapshot, source: &cat::ImageSource) -> agent::ImageArtifact {
    let registry = registry(snapshot, &source.registry_id);
    let host = registry
        .and_then(|r| r.registry.as_ref())
        .map(registry_host)
        .unwrap_or_default();
    let tag = if source.tag.is_empty() {
        "latest"
    } else {
        source.tag.as_str()
    };
    let reference = if host.is_empty() {
        format!("{}:{tag}", source.image)
    } else {
        format!("{host}/{}:{tag}", source.image)
    };
    agent::ImageArtifact {
        reference,
        pull_credentials: registry.and_then(pull_credentials),
    }
}

/// The cluster's build registry, where images built for its environments go.
fn cluster_build_registry(snapshot: &cat::EnvironmentSnapshot) -> Option<&cat::RegistryWithSecret> {
    let cluster = snapshot.cluster.as_ref()?;
    registry(snapshot, &cluster.build_registry_id)
}

/// Where a build of `service_name` pushes: the cluster's build registry, in repository
/// `<project>/<service>` (names are unique per organization and per project), with the
/// registry's credentials. None when the cluster has no build registry: the runner's local
/// builder needs none, and an image builder says what is missing.
pub fn build_registry(
    snapshot: &cat::EnvironmentSnapshot,
    service_name: &str,
) -> Option<build::RegistryTarget> {
    let registry = cluster_build_registry(snapshot)?;
    let reg = registry.registry.as_ref()?;
    let project = snapshot.project.as_ref().map_or("", |p| p.name.as_str());
    // A registry URL may carry a namespace (`https://ghcr.io/acme`): the host is the
    // registry, the rest prefixes the repository.
    let url = reg.url.trim().trim_end_matches('/');
    let (scheme, rest) = url
        .split_once("://")
        .map_or(("", url), |(scheme, rest)| (scheme, rest));
    let (host, namespace) = rest.split_once('/').unwrap_or((rest, ""));
    let repository = [namespace, project, service_name]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
        .to_lowercase();
    Some(build::RegistryTarget {
        url: if scheme.is_empty() {
            host.to_owned()
        } else {
            format!("{scheme}://{host}")
        },
        repository,
        // The runner tags with the commit it built.
        tag: String::new(),
        credentials: (!reg.username.is_empty()).then(|| build::RegistryCredentials {
            username: reg.username.clone(),
            password: registry.password.clone(),
        }),
    })
}

/// What the agent pulls a built image with: the build registry's credentials.
pub fn build_registry_pull(
    snapshot: &cat::EnvironmentSnapshot,
) -> Option<agent::RegistryCredentials> {
    cluster_build_registry(snapshot).and_then(pull_credentials)
}

/// The git credential a source names, opened, as the build runner takes it.
pub fn git_credentials(
    snapshot: &cat::EnvironmentSnapshot,
    id: &str,
) -> Option<build::GitCredentials> {
    use build::git_credentials::Method;
    if id.is_empty() {
        return None;
    }
    let found = snapshot
        .git_credentials
        .iter()
        .find(|c| c.git_credential.as_ref().is_some_and(|g| g.id == id))?;
    let credential = found.git_credential.as_ref()?;
    let method = if found.ssh_private_key.is_empty() {
        Method::Token(build::GitTokenCredentials {
            username: credential.username.clone(),
            token: found.token.clone(),
        })
    } else {
        Method::Ssh(build::GitSshCredentials {
            private_key: found.ssh_private_key.clone(),
            known_hosts: credential.ssh_known_hosts.clone(),
        })
    };
    Some(build::GitCredentials {
        method: Some(method),
    })
}

fn env_and_files(snapshot: &cat::ServiceSnapshot) -> (Vec<agent::EnvVar>, Vec<agent::FileMount>) {
    let mut env = Vec::new();
    let mut files = Vec::new();
    for variable in &snapshot.variables {
        if variable.file_mount_path.is_empty() {
            env.push(agent::EnvVar {
                name: variable.key.clone(),
                value: variable.value.clone(),
                is_secret: variable.is_secret,
            });
        } else {
            files.push(agent::FileMount {
                path: variable.file_mount_path.clone(),
                content: variable.value.clone().into_bytes(),
                is_secret: variable.is_secret,
                mode: 0,
            });
        }
    }
    (env, files)
}

fn program(
    snapshot: &cat::ServiceSnapshot,
    artifact: Option<agent::program::Artifact>,
    runtime: Option<&cat::RuntimeSettings>,
    command: &[String],
    args: &[String],
) -> agent::Program {
    let (env, files) = env_and_files(snapshot);
    let runtime = runtime.cloned().unwrap_or_default();
    let command = if command.is_empty() {
        runtime.command.clone()
    } else {
        command.to_vec()
    };
    let args = if args.is_empty() {
        runtime.args.clone()
    } else {
        args.to_vec()
    };
    agent::Program {
        artifact,
        command,
        args,
        working_dir: String::new(),
        env,
        files,
        resources: Some(agent::Resources {
            cpu_millicores: runtime.cpu_millicores,
            memory_mib: runtime.memory_mib,
        }),
    }
}

fn ports(runtime: Option<&cat::RuntimeSettings>) -> Vec<agent::Port> {
    let Some(runtime) = runtime else {
        return Vec::new();
    };
    runtime
        .ports
        .iter()
        .map(|port| {
            let protocol = match cat::PortProtocol::try_from(port.protocol) {
                Ok(cat::PortProtocol::Grpc) => agent::PortProtocol::Grpc,
                Ok(cat::PortProtocol::Tcp) => agent::PortProtocol::Tcp,
                Ok(cat::PortProtocol::Udp) => agent::PortProtocol::Udp,
                _ => agent::PortProtocol::Http,
            };
            let public_hosts = runtime
                .custom_domains
                .iter()
                .filter(|d| port.public && (d.port == 0 || d.port == port.internal_port))
                .map(|d| d.domain.clone())
                .collect();
            agent::Port {
                name: String::new(),
                internal_port: port.internal_port,
                service_port: port.external_port,
                protocol: protocol.into(),
                public_hosts,
                public_path_prefix: String::new(),
            }
        })
        .collect()
}

fn probe(probe: Option<&cat::Probe>) -> Option<agent::Probe> {
    let probe = probe?;
    let check = match cat::ProbeType::try_from(probe.r#type).ok()? {
        cat::ProbeType::Http => agent::probe::Check::Http(agent::HttpCheck {
            path: if probe.path.is_empty() {
                "/".to_owned()
            } else {
                probe.path.clone()
            },
            port: probe.port,
        }),
        cat::ProbeType::Tcp => agent::probe::Check::Tcp(agent::TcpCheck { port: probe.port }),
        cat::ProbeType::Exec => agent::probe::Check::Exec(agent::ExecCheck {
            command: probe.command.clone(),
        }),
        cat::ProbeType::Unspecified => return None,
    };
    Some(agent::Probe {
        check: Some(check),
        initial_delay: probe.initial_delay,
        period: probe.period,
        timeout: probe.timeout,
        failure_threshold: probe.failure_threshold,
    })
}

fn replicas(runtime: Option<&cat::RuntimeSettings>) -> agent::Replicas {
    let min = runtime.map_or(1, |r| r.min_instances.max(1));
    let max = runtime.map_or(min, |r| r.max_instances.max(min));
    agent::Replicas {
        min,
        max,
        target_cpu_percent: 0,
    }
}

fn job_artifact(
    snapshot: &cat::EnvironmentSnapshot,
    source: Option<&cat::JobSource>,
) -> Option<agent::program::Artifact> {
    match source.and_then(|s| s.source.as_ref()) {
        Some(cat::job_source::Source::Image(src)) => {
            Some(agent::program::Artifact::Image(image(snapshot, src)))
        }
        // A job from git runs its command on the agent's PATH until jobs are built too.
        _ => Some(agent::program::Artifact::Local(
            agent::LocalArtifact::default(),
        )),
    }
}

fn database_image(engine: cat::DatabaseEngine, version: &str) -> (agent::DatabaseEngine, String) {
    let version = if version.is_empty() {
        "latest"
    } else {
        version
    };
    match engine {
        cat::DatabaseEngine::Mysql => (agent::DatabaseEngine::Mysql, format!("mysql:{version}")),
        cat::DatabaseEngine::Mongodb => {
            (agent::DatabaseEngine::Mongodb, format!("mongo:{version}"))
        }
        cat::DatabaseEngine::Redis => (agent::DatabaseEngine::Redis, format!("redis:{version}")),
        _ => (
            agent::DatabaseEngine::Postgresql,
            format!("postgres:{version}"),
        ),
    }
}

/// The agent's spec of one service. `built` is the artifact a build produced for an
/// `APPLICATION`; `full` is false for operations that need only the identity fields
/// (stop, restart, delete).
pub fn workload(
    snapshot: &cat::EnvironmentSnapshot,
    service: &cat::ServiceSnapshot,
    built: Option<agent::program::Artifact>,
    full: bool,
) -> Result<agent::WorkloadSpec, PlanError> {
    let svc = service.service.clone().unwrap_or_default();
    let unsupported = |reason: &str| PlanError::Unsupported {
        service: svc.name.clone(),
        reason: reason.to_owned(),
    };
    let mut spec = agent::WorkloadSpec {
        service_id: svc.id.clone(),
        name: svc.name.clone(),
        kind: svc.kind,
        revision: String::new(),
        labels: HashMap::new(),
        settings: None,
    };
    if full {
        use agent::workload_spec::Settings as W;
        spec.settings = Some(match &svc.settings {
            Some(cat::service::Settings::Application(app)) => {
                let artifact = built.ok_or_else(|| unsupported("no image was built"))?;
                W::Application(agent::ApplicationWorkload {
                    program: Some(program(
                        service,
                        Some(artifact),
                        app.runtime.as_ref(),
                        &[],
                        &[],
                    )),
                    ports: ports(app.runtime.as_ref()),
                    replicas: Some(replicas(app.runtime.as_ref())),
                    probes: Some(agent::Probes {
                        startup: None,
                        readiness: probe(
                            app.runtime
                                .as_ref()
                                .and_then(|r| r.readiness_probe.as_ref()),
                        ),
                        liveness: probe(
                            app.runtime.as_ref().and_then(|r| r.liveness_probe.as_ref()),
                        ),
                    }),
                })
            }
            Some(cat::service::Settings::Container(container)) => {
                let source = container
                    .source
                    .as_ref()
                    .ok_or_else(|| unsupported("the container has no image source"))?;
                let artifact = agent::program::Artifact::Image(image(snapshot, source));
                W::Application(agent::ApplicationWorkload {
                    program: Some(program(
                        service,
                        Some(artifact),
                        container.runtime.as_ref(),
                        &[],
                        &[],
                    )),
                    ports: ports(container.runtime.as_ref()),
                    replicas: Some(replicas(container.runtime.as_ref())),
                    probes: Some(agent::Probes {
                        startup: None,
                        readiness: probe(
                            container
                                .runtime
                                .as_ref()
                                .and_then(|r| r.readiness_probe.as_ref()),
                        ),
                        liveness: probe(
                            container
                                .runtime
                                .as_ref()
                                .and_then(|r| r.liveness_probe.as_ref()),
                        ),
                    }),
                })
            }
            Some(cat::service::Settings::Database(db)) => {
                let engine = cat::DatabaseEngine::try_from(db.engine)
                    .unwrap_or(cat::DatabaseEngine::Postgresql);
                let (engine, reference) = database_image(engine, &db.version);
                let artifact = agent::program::Artifact::Image(agent::ImageArtifact {
                    reference,
                    pull_credentials: None,
                });
                W::Database(agent::DatabaseWorkload {
                    program: Some(program(
                        service,
                        Some(artifact),
                        db.runtime.as_ref(),
                        &[],
                        &[],
                    )),
                    engine: engine.into(),
                    version: db.version.clone(),
                    port: 0,
                    volume_size_gib: db.storage_gib.max(1),
                    storage_class: String::new(),
                    data_path: String::new(),
                })
            }
            Some(cat::service::Settings::CronJob(cron)) => W::CronJob(agent::CronJobWorkload {
                program: Some(program(
                    service,
                    job_artifact(snapshot, cron.source.as_ref()),
                    cron.runtime.as_ref(),
                    &cron.command,
                    &cron.args,
                )),
                schedule: cron.schedule.clone(),
                timezone: cron.timezone.clone(),
                policy: None,
            }),
            Some(cat::service::Settings::LifecycleJob(job)) => W::Job(agent::JobWorkload {
                program: Some(program(
                    service,
                    job_artifact(snapshot, job.source.as_ref()),
                    job.runtime.as_ref(),
                    &job.command,
                    &job.args,
                )),
                policy: Some(agent::JobPolicy {
                    timeout: job.timeout,
                    retries: job.max_retries.min(10),
                }),
            }),
            Some(cat::service::Settings::Helm(helm)) => {
                let (repository_url, registry_id) = match &helm.chart_source {
                    Some(cat::helm_settings::ChartSource::Repository(repo)) => {
                        (repo.url.clone(), repo.registry_id.clone())
                    }
                    Some(cat::helm_settings::ChartSource::Oci(oci)) => {
                        let url = if oci.reference.starts_with("oci://") {
                            oci.reference.clone()
                        } else {
                            format!("oci://{}", oci.reference)
                        };
                        (url, oci.registry_id.clone())
                    }
                    _ => {
                        return Err(unsupported(
                            "helm charts from git are not supported yet; use a chart repository or an oci reference",
                        ));
                    }
                };
                let credentials = snapshot
                    .registries
                    .iter()
                    .find(|r| r.registry.as_ref().is_some_and(|reg| reg.id == registry_id))
                    .and_then(|r| {
                        let reg = r.registry.as_ref()?;
                        Some(agent::RegistryCredentials {
                            server: reg.url.clone(),
                            username: reg.username.clone(),
                            password: r.password.clone(),
                        })
                    });
                W::Helm(agent::HelmWorkload {
                    chart: Some(agent::HelmChart {
                        repository_url,
                        name: helm.chart_name.clone(),
                        version: helm.chart_version.clone(),
                        credentials,
                    }),
                    release_name: String::new(),
                    values_yaml: helm.values_yaml.clone(),
                })
            }
            None => return Err(unsupported("the service has no settings")),
        });
        spec.revision = digest(&spec.encode_to_vec());
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn service(
        id: &str,
        kind: ServiceKind,
        settings: cat::service::Settings,
    ) -> cat::ServiceSnapshot {
        cat::ServiceSnapshot {
            service: Some(cat::Service {
                id: id.into(),
                name: id.into(),
                kind: kind.into(),
                settings: Some(settings),
                ..Default::default()
            }),
            variables: Vec::new(),
        }
    }

    fn snapshot() -> cat::EnvironmentSnapshot {
        cat::EnvironmentSnapshot {
            services: vec![
                service(
                    "db",
                    ServiceKind::Database,
                    cat::service::Settings::Database(cat::DatabaseSettings::default()),
                ),
                service(
                    "web",
                    ServiceKind::Container,
                    cat::service::Settings::Container(cat::ContainerSettings::default()),
                ),
                service(
                    "migrate",
                    ServiceKind::LifecycleJob,
                    cat::service::Settings::LifecycleJob(cat::LifecycleJobSettings {
                        events: vec![cat::LifecycleJobEvent::Start as i32],
                        ..Default::default()
                    }),
                ),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn deploy_runs_databases_jobs_applications_helm_and_stop_the_reverse() {
        let deploy = stages(Action::Deploy, &snapshot());
        let kinds: Vec<_> = deploy.iter().map(|s| (s.kind, s.operation)).collect();
        assert_eq!(
            kinds,
            vec![
                (deploy::StageKind::Databases, agent::CommandOperation::Apply),
                (deploy::StageKind::Jobs, agent::CommandOperation::Apply),
                (deploy::StageKind::Jobs, agent::CommandOperation::RunJob),
                (
                    deploy::StageKind::Applications,
                    agent::CommandOperation::Apply
                ),
                (deploy::StageKind::Helm, agent::CommandOperation::Apply),
            ]
        );
        assert_eq!(deploy[2].service_ids, vec!["migrate".to_owned()]);
        assert!(deploy[1].service_ids.is_empty());
        let stop = stages(Action::Stop, &snapshot());
        assert_eq!(stop[0].kind, deploy::StageKind::Helm);
        assert_eq!(stop.last().unwrap().kind, deploy::StageKind::Databases);
        // The start job does not run on stop.
        assert!(
            stop.iter()
                .all(|s| !s.service_ids.contains(&"migrate".to_owned()))
        );
    }

    fn with_build_registry(url: &str, username: &str) -> cat::EnvironmentSnapshot {
        cat::EnvironmentSnapshot {
            project: Some(cat::Project {
                name: "Shop".into(),
                ..Default::default()
            }),
            cluster: Some(cat::Cluster {
                build_registry_id: "reg-1".into(),
                ..Default::default()
            }),
            registries: vec![cat::RegistryWithSecret {
                registry: Some(cat::Registry {
                    id: "reg-1".into(),
                    url: url.into(),
                    username: username.into(),
                    ..Default::default()
                }),
                password: "pw".into(),
            }],
            git_credentials: vec![cat::GitCredentialWithSecret {
                git_credential: Some(cat::GitCredential {
                    id: "git-1".into(),
                    username: "bot".into(),
                    ..Default::default()
                }),
                token: "tok".into(),
                ssh_private_key: String::new(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn builds_push_to_the_clusters_registry_under_project_and_service() {
        let snapshot = with_build_registry("https://ghcr.io/acme/", "bot");
        let target = build_registry(&snapshot, "web").unwrap();
        assert_eq!(target.url, "https://ghcr.io");
        assert_eq!(target.repository, "acme/shop/web");
        assert!(target.tag.is_empty());
        let credentials = target.credentials.unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("bot", "pw")
        );
        let pull = build_registry_pull(&snapshot).unwrap();
        assert_eq!(pull.server, "ghcr.io/acme");

        let anonymous = with_build_registry("127.0.0.1:5000", "");
        let target = build_registry(&anonymous, "web").unwrap();
        assert_eq!(
            (target.url.as_str(), target.repository.as_str()),
            ("127.0.0.1:5000", "shop/web")
        );
        assert!(target.credentials.is_none());
        assert!(build_registry_pull(&anonymous).is_none());

        let mut none = snapshot.clone();
        none.cluster = Some(cat::Cluster::default());
        assert!(build_registry(&none, "web").is_none());
    }

    #[test]
    fn a_git_credential_is_handed_over_by_the_id_its_source_names() {
        use build::git_credentials::Method;
        let snapshot = with_build_registry("ghcr.io", "");
        let Some(Method::Token(token)) = git_credentials(&snapshot, "git-1").and_then(|c| c.method)
        else {
            panic!("a token credential");
        };
        assert_eq!(
            (token.username.as_str(), token.token.as_str()),
            ("bot", "tok")
        );
        assert!(git_credentials(&snapshot, "").is_none());
        assert!(git_credentials(&snapshot, "git-2").is_none());

        let mut ssh = snapshot;
        ssh.git_credentials[0].ssh_private_key = "KEY".into();
        ssh.git_credentials[0].token.clear();
        assert!(matches!(
            git_credentials(&ssh, "git-1").and_then(|c| c.method),
            Some(Method::Ssh(key)) if key.private_key == "KEY"
        ));
    }
}
