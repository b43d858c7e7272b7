//! Pure builders: one `WorkloadSpec` of one `Command` in, typed Kubernetes objects out.
//! Nothing here talks to the API server, so every mapping (labels, secrets kept out of the
//! pod spec, probes, volumes) can be read and tested on its own.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, LocalObjectReference, Namespace,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use slipway_proto::agent::v1 as pb;
use slipway_proto::common::v1::ServiceKind;

use super::KubernetesSettings;
use crate::runtime::CommandFailure;

/// The field manager of every server-side apply, so `kubectl` edits show who owns what.
pub const FIELD_MANAGER: &str = "slipway-agent";
/// Organization id of the workload (workload.proto: the `slipway.dev/*` labels).
pub const LABEL_ORGANIZATION: &str = "slipway.dev/organization-id";
/// Project id of the workload.
pub const LABEL_PROJECT: &str = "slipway.dev/project-id";
/// Environment id of the workload; `WorkloadStatus.environment_id` is read back from it.
pub const LABEL_ENVIRONMENT: &str = "slipway.dev/environment-id";
/// Service id of the workload: the selector of everything the workload owns.
pub const LABEL_SERVICE: &str = "slipway.dev/service-id";
/// Deployment that last applied the object.
pub const LABEL_DEPLOYMENT: &str = "slipway.dev/deployment-id";
/// Command that last applied the object.
pub const LABEL_COMMAND: &str = "slipway.dev/command-id";
/// Marks objects this agent manages, so the resync lists only those.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The workload's `WorkloadSpec.revision`, on objects and pod templates: a changed revision
/// changes the pod template, which rolls the pods even when only a secret changed.
pub const ANNOTATION_REVISION: &str = "slipway.dev/revision";
/// Set on the pod template by a restart, like `kubectl rollout restart` does.
pub const ANNOTATION_RESTARTED_AT: &str = "slipway.dev/restarted-at";
/// Label Helm puts on a release's objects; stop scales what carries it.
pub const LABEL_HELM_INSTANCE: &str = "app.kubernetes.io/instance";

/// Name of the volume claim template of a database StatefulSet.
const DATA_VOLUME: &str = "data";
/// Volume holding the secret files of a workload.
const SECRET_FILES_VOLUME: &str = "slipway-secret-files";
/// Volume holding the plain files of a workload.
const CONFIG_FILES_VOLUME: &str = "slipway-files";

/// The identity of one workload of one command: everything labels are made of.
#[derive(Clone, Copy, Debug)]
pub struct Meta<'a> {
    pub command: &'a pb::Command,
    pub workload: &'a pb::WorkloadSpec,
}

impl<'a> Meta<'a> {
    pub fn new(command: &'a pb::Command, workload: &'a pb::WorkloadSpec) -> Self {
        Self { command, workload }
    }

    /// Labels that never change for the workload: on pod templates (a changing label there
    /// would roll the pods on every deployment) and volume claims.
    pub fn stable_labels(&self) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self
            .workload
            .labels
            .iter()
            .filter(|(key, _)| !key.starts_with("slipway.dev/"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        labels.insert(LABEL_MANAGED_BY.into(), FIELD_MANAGER.into());
        labels.insert(
            LABEL_ORGANIZATION.into(),
            self.command.organization_id.clone(),
        );
        labels.insert(LABEL_PROJECT.into(), self.command.project_id.clone());
        labels.insert(
            LABEL_ENVIRONMENT.into(),
            self.command.environment_id.clone(),
        );
        labels.insert(LABEL_SERVICE.into(), self.workload.service_id.clone());
        labels
    }

    /// Labels of the objects themselves: the stable ones plus the deployment and command
    /// that applied them.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.stable_labels();
        labels.insert(LABEL_DEPLOYMENT.into(), self.command.deployment_id.clone());
        labels.insert(LABEL_COMMAND.into(), self.command.command_id.clone());
        labels
    }

    /// The selector of the workload's pods: the service id alone, which never changes
    /// (a Deployment's selector is immutable).
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_SERVICE.to_owned(), self.workload.service_id.clone())])
    }

    /// Object metadata named `name` in the command's namespace.
    pub fn object_meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.command.namespace.clone()),
            labels: Some(self.labels()),
            annotations: Some(self.revision_annotation()),
            ..ObjectMeta::default()
        }
    }

    fn revision_annotation(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            ANNOTATION_REVISION.to_owned(),
            self.workload.revision.clone(),
        )])
    }

    fn name(&self) -> &'a str {
        &self.workload.name
    }
}

/// The label selector, as a query string, of every object of the service `service_id`.
pub fn service_selector(service_id: &str) -> String {
    format!("{LABEL_SERVICE}={service_id}")
}

/// The environment's namespace, labelled so the environment can be found from it.
pub fn namespace(command: &pb::Command) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(command.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
                (
                    LABEL_ORGANIZATION.to_owned(),
                    command.organization_id.clone(),
                ),
                (LABEL_PROJECT.to_owned(), command.project_id.clone()),
                (LABEL_ENVIRONMENT.to_owned(), command.environment_id.clone()),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// A name derived from `base` with `suffix`, cut to the 63 characters of a DNS label.
pub fn child_name(base: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len() + 1);
    let base = base.get(..room.min(base.len())).unwrap_or(base);
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

/// Everything a program needs besides its controller: the Secret and ConfigMap holding its
/// variables and files, its image pull Secret, and the pod template that uses them.
#[derive(Clone, Debug, Default)]
pub struct ProgramObjects {
    /// Secret variables and secret files; `None` when there are none.
    pub secret: Option<Secret>,
    /// Plain variables and plain files; `None` when there are none.
    pub config_map: Option<ConfigMap>,
    /// `kubernetes.io/dockerconfigjson` Secret for the image's registry credentials.
    pub pull_secret: Option<Secret>,
    /// The pod template of the controller.
    pub template: PodTemplateSpec,
}

impl ProgramObjects {
    /// The objects to apply before the controller, in order.
    pub fn config_objects(&self) -> (Option<&Secret>, Option<&ConfigMap>, Option<&Secret>) {
        (
            self.secret.as_ref(),
            self.config_map.as_ref(),
            self.pull_secret.as_ref(),
        )
    }
}

/// How the program is run inside its pod.
#[derive(Clone, Copy, Debug)]
pub struct PodShape<'p> {
    pub ports: &'p [pb::Port],
    pub probes: Option<&'p pb::Probes>,
    /// `Always` for services, `Never` for jobs (retries are the Job's `backoffLimit`).
    pub restart_policy: &'static str,
    /// Extra environment set literally (never a secret): database engine defaults.
    pub extra_env: &'p [(String, String)],
    /// Extra mounts of volumes defined elsewhere (the database's volume claim).
    pub extra_mounts: &'p [VolumeMount],
}

/// Builds the Secret, ConfigMap, pull Secret and pod template of `program`.
pub fn program_objects(
    meta: Meta<'_>,
    program: &pb::Program,
    shape: PodShape<'_>,
    settings: &KubernetesSettings,
) -> Result<ProgramObjects, CommandFailure> {
    let image = match &program.artifact {
        Some(pb::program::Artifact::Image(image)) => image,
        _ => {
            return Err(invalid(format!(
                "{}: the kubernetes runtime runs only container images",
                meta.name()
            )));
        }
    };
    let name = meta.name();

    let mut secret_data = BTreeMap::new();
    let mut config_data = BTreeMap::new();
    let mut env = Vec::new();
    for (key, value) in shape.extra_env {
        env.push(EnvVar {
            name: key.clone(),
            value: Some(value.clone()),
            ..EnvVar::default()
        });
    }
    for var in &program.env {
        // Secret values live in the Secret only; plain ones in the ConfigMap, so the pod
        // spec never carries a value and changes show up as a new revision.
        let value_from = if var.is_secret {
            secret_data.insert(var.name.clone(), ByteString(var.value.clone().into_bytes()));
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: name.to_owned(),
                    key: var.name.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }
        } else {
            config_data.insert(var.name.clone(), var.value.clone());
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: name.to_owned(),
                    key: var.name.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }
        };
        env.push(EnvVar {
            name: var.name.clone(),
            value_from: Some(value_from),
            ..EnvVar::default()
        });
    }

    let mut config_binary = BTreeMap::new();
    let mut secret_items = Vec::new();
    let mut config_items = Vec::new();
    let mut mounts: Vec<VolumeMount> = shape.extra_mounts.to_vec();
    for (index, file) in program.files.iter().enumerate() {
        // Keys contain `-`, which no variable name can, so files and variables never clash.
        let key = format!("file-{index}");
        let mode = match (file.mode, file.is_secret) {
            (0, true) => 0o600,
            (0, false) => 0o644,
            (mode, _) => mode,
        };
        let item = KeyToPath {
            key: key.clone(),
            path: key.clone(),
            mode: i32::try_from(mode).ok(),
            user: None,
        };
        let volume = if file.is_secret {
            secret_data.insert(key.clone(), ByteString(file.content.clone()));
            secret_items.push(item);
            SECRET_FILES_VOLUME
        } else {
            config_binary.insert(key.clone(), ByteString(file.content.clone()));
            config_items.push(item);
            CONFIG_FILES_VOLUME
        };
        mounts.push(VolumeMount {
            name: volume.to_owned(),
            mount_path: container_path(&program.working_dir, &file.path),
            sub_path: Some(key),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let mut volumes = Vec::new();
    if !secret_items.is_empty() {
        volumes.push(Volume {
            name: SECRET_FILES_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.to_owned()),
                items: Some(secret_items),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if !config_items.is_empty() {
        volumes.push(Volume {
            name: CONFIG_FILES_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.to_owned(),
                items: Some(config_items),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let secret = (!secret_data.is_empty()).then(|| Secret {
        metadata: meta.object_meta(name),
        type_: Some("Opaque".to_owned()),
        data: Some(secret_data),
        ..Secret::default()
    });
    let config_map = (!config_data.is_empty() || !config_binary.is_empty()).then(|| ConfigMap {
        metadata: meta.object_meta(name),
        data: (!config_data.is_empty()).then_some(config_data),
        binary_data: (!config_binary.is_empty()).then_some(config_binary),
        ..ConfigMap::default()
    });
    let pull_secret = image
        .pull_credentials
        .as_ref()
        .map(|credentials| pull_secret(meta, credentials));

    let resources = program.resources.unwrap_or_default();
    let cpu = nonzero_or(resources.cpu_millicores, settings.default_cpu_millicores);
    let memory = nonzero_or(resources.memory_mib, settings.default_memory_mib);
    let container = Container {
        name: name.to_owned(),
        image: Some(image.reference.clone()),
        command: (!program.command.is_empty()).then(|| program.command.clone()),
        args: (!program.args.is_empty()).then(|| program.args.clone()),
        working_dir: (!program.working_dir.is_empty()).then(|| program.working_dir.clone()),
        env: (!env.is_empty()).then_some(env),
        ports: (!shape.ports.is_empty()).then(|| shape.ports.iter().map(container_port).collect()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(format!("{cpu}m"))),
                ("memory".to_owned(), Quantity(format!("{memory}Mi"))),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity(format!("{memory}Mi")),
            )])),
            ..ResourceRequirements::default()
        }),
        startup_probe: shape.probes.and_then(|p| p.startup.as_ref()).map(probe),
        readiness_probe: shape.probes.and_then(|p| p.readiness.as_ref()).map(probe),
        liveness_probe: shape.probes.and_then(|p| p.liveness.as_ref()).map(probe),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    };

    // Only the revision: anything that changes with every deployment would roll the pods
    // of an unchanged workload.
    let template_annotations = meta.revision_annotation();
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(meta.stable_labels()),
            annotations: Some(template_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some(shape.restart_policy.to_owned()),
            image_pull_secrets: pull_secret.as_ref().map(|secret| {
                vec![LocalObjectReference {
                    name: secret.metadata.name.clone().unwrap_or_default(),
                }]
            }),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..PodSpec::default()
        }),
    };
    Ok(ProgramObjects {
        secret,
        config_map,
        pull_secret,
        template,
    })
}

/// The Deployment of an application; `replicas` is left to the autoscaler when it scales.
pub fn deployment(
    meta: Meta<'_>,
    app: &pb::ApplicationWorkload,
    template: PodTemplateSpec,
) -> Deployment {
    let replicas = app.replicas.unwrap_or_default();
    Deployment {
        metadata: meta.object_meta(meta.name()),
        spec: DeploymentSpec {
            replicas: fixed_replicas(&replicas),
            selector: LabelSelector {
                match_labels: Some(meta.selector()),
                ..LabelSelector::default()
            },
            template,
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The fixed instance count, or `None` when `min < max` and the autoscaler owns it.
pub fn fixed_replicas(replicas: &pb::Replicas) -> Option<i32> {
    (replicas.min >= replicas.max).then(|| i32::try_from(replicas.min.max(1)).unwrap_or(1))
}

/// The Service in front of the workload's ports; `None` without ports.
pub fn service(meta: Meta<'_>, ports: &[pb::Port]) -> Option<Service> {
    if ports.is_empty() {
        return None;
    }
    let ports = ports
        .iter()
        .map(|port| {
            let protocol = port.protocol();
            ServicePort {
                name: Some(port_name(port)),
                port: to_i32(if port.service_port == 0 {
                    port.internal_port
                } else {
                    port.service_port
                }),
                target_port: Some(IntOrString::Int(to_i32(port.internal_port))),
                protocol: Some(k8s_protocol(protocol).to_owned()),
                app_protocol: match protocol {
                    pb::PortProtocol::Http => Some("http".to_owned()),
                    pb::PortProtocol::Grpc => Some("kubernetes.io/h2c".to_owned()),
                    _ => None,
                },
                ..ServicePort::default()
            }
        })
        .collect();
    Some(Service {
        metadata: meta.object_meta(meta.name()),
        spec: Some(ServiceSpec {
            selector: Some(meta.selector()),
            ports: Some(ports),
            type_: Some("ClusterIP".to_owned()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// One Ingress per public port (its public hosts, with TLS), so a gRPC port can carry its
/// own backend-protocol annotation. TCP and UDP ports are never public.
pub fn ingresses(
    meta: Meta<'_>,
    ports: &[pb::Port],
    settings: &KubernetesSettings,
) -> Result<Vec<Ingress>, CommandFailure> {
    let mut ingresses = Vec::new();
    for port in ports.iter().filter(|port| !port.public_hosts.is_empty()) {
        let protocol = port.protocol();
        if !matches!(protocol, pb::PortProtocol::Http | pb::PortProtocol::Grpc) {
            return Err(invalid(format!(
                "{}: port {} has public hosts but only http and grpc ports can be public",
                meta.name(),
                port.internal_port
            )));
        }
        let name = child_name(meta.name(), &port_name(port));
        let mut metadata = meta.object_meta(&name);
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        if let Some(issuer) = &settings.cluster_issuer {
            annotations.insert("cert-manager.io/cluster-issuer".to_owned(), issuer.clone());
        }
        if protocol == pb::PortProtocol::Grpc {
            annotations.insert(
                "nginx.ingress.kubernetes.io/backend-protocol".to_owned(),
                "GRPC".to_owned(),
            );
        }
        let path = if port.public_path_prefix.is_empty() {
            "/".to_owned()
        } else {
            port.public_path_prefix.clone()
        };
        let backend = IngressBackend {
            service: Some(IngressServiceBackend {
                name: meta.name().to_owned(),
                port: Some(ServiceBackendPort {
                    name: Some(port_name(port)),
                    number: None,
                }),
            }),
            ..IngressBackend::default()
        };
        let rules = port
            .public_hosts
            .iter()
            .map(|host| IngressRule {
                host: Some(host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(path.clone()),
                        path_type: "Prefix".to_owned(),
                        backend: backend.clone(),
                    }],
                }),
            })
            .collect();
        ingresses.push(Ingress {
            spec: Some(IngressSpec {
                ingress_class_name: settings.ingress_class.clone(),
                rules: Some(rules),
                tls: Some(vec![IngressTLS {
                    hosts: Some(port.public_hosts.clone()),
                    secret_name: Some(child_name(&name, "tls")),
                }]),
                ..IngressSpec::default()
            }),
            metadata,
            ..Ingress::default()
        });
    }
    Ok(ingresses)
}

/// The autoscaler of an application whose `min < max`; `None` for a fixed count.
pub fn autoscaler(meta: Meta<'_>, replicas: &pb::Replicas) -> Option<HorizontalPodAutoscaler> {
    if fixed_replicas(replicas).is_some() {
        return None;
    }
    let target = if replicas.target_cpu_percent == 0 {
        70
    } else {
        replicas.target_cpu_percent
    };
    Some(HorizontalPodAutoscaler {
        metadata: meta.object_meta(meta.name()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: meta.name().to_owned(),
            },
            min_replicas: Some(to_i32(replicas.min.max(1))),
            max_replicas: to_i32(replicas.max),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(to_i32(target)),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    })
}

/// Port, data directory and extra variables of a database engine.
pub struct EngineDefaults {
    pub port: u32,
    pub data_path: &'static str,
}

/// Defaults of `engine`, used when the workload leaves them empty.
pub fn engine_defaults(engine: pb::DatabaseEngine) -> EngineDefaults {
    match engine {
        pb::DatabaseEngine::Mysql => EngineDefaults {
            port: 3306,
            data_path: "/var/lib/mysql",
        },
        pb::DatabaseEngine::Mongodb => EngineDefaults {
            port: 27017,
            data_path: "/data/db",
        },
        pb::DatabaseEngine::Redis => EngineDefaults {
            port: 6379,
            data_path: "/data",
        },
        pb::DatabaseEngine::Postgresql | pb::DatabaseEngine::Unspecified => EngineDefaults {
            port: 5432,
            data_path: "/var/lib/postgresql/data",
        },
    }
}

/// The database's ports (one TCP port named after the engine's default).
pub fn database_ports(db: &pb::DatabaseWorkload) -> Vec<pb::Port> {
    let port = nonzero_or(db.port, engine_defaults(db.engine()).port);
    vec![pb::Port {
        name: "db".to_owned(),
        internal_port: port,
        service_port: port,
        protocol: pb::PortProtocol::Tcp as i32,
        public_hosts: Vec::new(),
        public_path_prefix: String::new(),
    }]
}

/// The database's mount of its volume, its literal variables and its default readiness
/// check (a TCP connection on its port: the proto gives databases no probes).
pub fn database_shape(
    db: &pb::DatabaseWorkload,
) -> (Vec<VolumeMount>, Vec<(String, String)>, pb::Probes) {
    let defaults = engine_defaults(db.engine());
    let data_path = if db.data_path.is_empty() {
        defaults.data_path.to_owned()
    } else {
        db.data_path.clone()
    };
    let mut env = Vec::new();
    if db.engine() == pb::DatabaseEngine::Postgresql
        && !db
            .program
            .as_ref()
            .is_some_and(|p| p.env.iter().any(|v| v.name == "PGDATA"))
    {
        // PostgreSQL refuses a data directory that is a mount point holding `lost+found`.
        env.push((
            "PGDATA".to_owned(),
            format!("{}/pgdata", data_path.trim_end_matches('/')),
        ));
    }
    let mounts = vec![VolumeMount {
        name: DATA_VOLUME.to_owned(),
        mount_path: data_path,
        ..VolumeMount::default()
    }];
    let port = nonzero_or(db.port, defaults.port);
    let probes = pb::Probes {
        startup: None,
        readiness: Some(pb::Probe {
            check: Some(pb::probe::Check::Tcp(pb::TcpCheck { port })),
            initial_delay: None,
            period: None,
            timeout: None,
            failure_threshold: 0,
        }),
        liveness: None,
    };
    (mounts, env, probes)
}

/// The StatefulSet of a container-mode database: one instance with its volume claim.
pub fn stateful_set(
    meta: Meta<'_>,
    db: &pb::DatabaseWorkload,
    template: PodTemplateSpec,
) -> StatefulSet {
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(meta.stable_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: (!db.storage_class.is_empty()).then(|| db.storage_class.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(format!("{}Gi", db.volume_size_gib.max(1))),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: meta.object_meta(meta.name()),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(meta.name().to_owned()),
            selector: LabelSelector {
                match_labels: Some(meta.selector()),
                ..LabelSelector::default()
            },
            template,
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// The spec of one run of a job: retries, deadline, cleanup a day after it finished.
pub fn job_spec(policy: Option<&pb::JobPolicy>, template: PodTemplateSpec) -> JobSpec {
    let policy = policy.cloned().unwrap_or_default();
    JobSpec {
        backoff_limit: Some(to_i32(policy.retries)),
        active_deadline_seconds: Some(policy.timeout.map(|t| t.seconds.max(1)).unwrap_or(3600)),
        ttl_seconds_after_finished: Some(86_400),
        template,
        ..JobSpec::default()
    }
}

/// The CronJob of a cron workload, never suspended (a stop suspends it; an apply resumes).
pub fn cron_job(meta: Meta<'_>, cron: &pb::CronJobWorkload, template: PodTemplateSpec) -> CronJob {
    CronJob {
        metadata: meta.object_meta(meta.name()),
        spec: CronJobSpec {
            schedule: cron.schedule.clone(),
            time_zone: (!cron.timezone.is_empty()).then(|| cron.timezone.clone()),
            concurrency_policy: Some("Forbid".to_owned()),
            suspend: Some(false),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(meta.stable_labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(job_spec(cron.policy.as_ref(), template)),
            },
            ..CronJobSpec::default()
        },
        ..CronJob::default()
    }
}

/// One run of a job workload for `command`: a Job named after the workload and the command,
/// so applying the same command again finds the same run.
pub fn job(meta: Meta<'_>, policy: Option<&pb::JobPolicy>, template: PodTemplateSpec) -> Job {
    let name = job_name(meta.workload, meta.command);
    Job {
        metadata: meta.object_meta(&name),
        spec: Some(job_spec(policy, template)),
        ..Job::default()
    }
}

/// The name of the run of `workload` for `command`: the command id's random tail keeps
/// runs of different commands apart.
pub fn job_name(workload: &pb::WorkloadSpec, command: &pb::Command) -> String {
    let id: String = command
        .command_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_lowercase();
    let tail = id.get(id.len().saturating_sub(10)..).unwrap_or("run");
    child_name(&workload.name, tail)
}

/// The kind of controller a service kind runs as; stop, restart and delete act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    Deployment,
    StatefulSet,
    CronJob,
    Job,
    Helm,
}

/// The controller of `kind`; `None` for an unspecified kind.
pub fn controller(kind: ServiceKind) -> Option<Controller> {
    match kind {
        ServiceKind::Application | ServiceKind::Container => Some(Controller::Deployment),
        ServiceKind::Database => Some(Controller::StatefulSet),
        ServiceKind::CronJob => Some(Controller::CronJob),
        ServiceKind::LifecycleJob => Some(Controller::Job),
        ServiceKind::Helm => Some(Controller::Helm),
        _ => None,
    }
}

fn pull_secret(meta: Meta<'_>, credentials: &pb::RegistryCredentials) -> Secret {
    let auth = base64(format!("{}:{}", credentials.username, credentials.password).as_bytes());
    let config = serde_json::json!({
        "auths": {
            credentials.server.clone(): {
                "username": credentials.username,
                "password": credentials.password,
                "auth": auth,
            }
        }
    });
    Secret {
        metadata: meta.object_meta(&child_name(meta.name(), "pull")),
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(config.to_string().into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn probe(probe: &pb::Probe) -> Probe {
    let seconds = |d: Option<&prost_types::Duration>, default: i32| {
        d.map(|d| i32::try_from(d.seconds.max(0)).unwrap_or(i32::MAX))
            .unwrap_or(default)
    };
    let mut out = Probe {
        initial_delay_seconds: Some(seconds(probe.initial_delay.as_ref(), 0)),
        period_seconds: Some(seconds(probe.period.as_ref(), 10).max(1)),
        timeout_seconds: Some(seconds(probe.timeout.as_ref(), 1).max(1)),
        failure_threshold: Some(to_i32(nonzero_or(probe.failure_threshold, 3))),
        ..Probe::default()
    };
    match &probe.check {
        Some(pb::probe::Check::Http(http)) => {
            out.http_get = Some(HTTPGetAction {
                path: Some(http.path.clone()),
                port: IntOrString::Int(to_i32(http.port)),
                ..HTTPGetAction::default()
            });
        }
        Some(pb::probe::Check::Tcp(tcp)) => {
            out.tcp_socket = Some(TCPSocketAction {
                port: IntOrString::Int(to_i32(tcp.port)),
                host: None,
            });
        }
        Some(pb::probe::Check::Exec(exec)) => {
            out.exec = Some(ExecAction {
                command: Some(exec.command.clone()),
            });
        }
        None => {}
    }
    out
}

fn container_port(port: &pb::Port) -> ContainerPort {
    let name = port_name(port);
    ContainerPort {
        container_port: to_i32(port.internal_port),
        // Container port names are IANA service names: 15 characters at most.
        name: (name.len() <= 15).then_some(name),
        protocol: Some(k8s_protocol(port.protocol()).to_owned()),
        ..ContainerPort::default()
    }
}

/// The port's name, `p<internal_port>` when unnamed (workload.proto).
pub fn port_name(port: &pb::Port) -> String {
    if port.name.is_empty() {
        format!("p{}", port.internal_port)
    } else {
        port.name.clone()
    }
}

fn k8s_protocol(protocol: pb::PortProtocol) -> &'static str {
    if protocol == pb::PortProtocol::Udp {
        "UDP"
    } else {
        "TCP"
    }
}

/// An absolute path in the container: relative file paths are relative to the working
/// directory (the image's root when unset).
fn container_path(working_dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        let dir = if working_dir.is_empty() {
            "/"
        } else {
            working_dir
        };
        format!("{}/{}", dir.trim_end_matches('/'), path)
    }
}

fn nonzero_or(value: u32, default: u32) -> u32 {
    if value == 0 { default } else { value }
}

fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn invalid(message: String) -> CommandFailure {
    CommandFailure::new(pb::FailureReason::InvalidSpec, message)
}

/// Standard base64 with padding, for the `auth` field of a docker config (the one place the
/// agent encodes by hand; `ByteString` encodes Secret data itself).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    fn command() -> pb::Command {
        pb::Command {
            command_id: "c".into(),
            organization_id: "o".into(),
            project_id: "p".into(),
            environment_id: "e".into(),
            deployment_id: "d".into(),
            namespace: "ns".into(),
            ..pb::Command::default()
        }
    }

    fn program() -> pb::Program {
        pb::Program {
            artifact: Some(pb::program::Artifact::Image(pb::ImageArtifact {
                reference: "postgres:16".into(),
                pull_credentials: None,
            })),
            ..pb::Program::default()
        }
    }

    #[test]
    fn a_database_is_a_stateful_set_with_a_volume_claim() {
        let db = pb::DatabaseWorkload {
            program: Some(program()),
            engine: pb::DatabaseEngine::Postgresql as i32,
            version: "16".into(),
            volume_size_gib: 10,
            storage_class: "fast".into(),
            ..pb::DatabaseWorkload::default()
        };
        let workload = pb::WorkloadSpec {
            service_id: "s".into(),
            name: "db".into(),
            revision: "r".into(),
            ..pb::WorkloadSpec::default()
        };
        let command = command();
        let meta = Meta::new(&command, &workload);
        let ports = database_ports(&db);
        let (mounts, env, probes) = database_shape(&db);
        let shape = PodShape {
            ports: &ports,
            probes: Some(&probes),
            restart_policy: "Always",
            extra_env: &env,
            extra_mounts: &mounts,
        };
        let built =
            program_objects(meta, &program(), shape, &KubernetesSettings::default()).unwrap();
        assert!(built.secret.is_none() && built.config_map.is_none());
        let set = serde_json::to_value(stateful_set(meta, &db, built.template)).unwrap();
        let claim = &set["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["name"], "data");
        assert_eq!(claim["metadata"]["labels"][LABEL_SERVICE], "s");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
        assert_eq!(claim["spec"]["storageClassName"], "fast");
        let container = &set["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["volumeMounts"][0]["mountPath"],
            "/var/lib/postgresql/data"
        );
        assert_eq!(container["env"][0]["name"], "PGDATA");
        assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 5432);
        assert_eq!(container["ports"][0]["containerPort"], 5432);
    }

    #[test]
    fn min_below_max_autoscales_and_leaves_replicas_to_the_autoscaler() {
        let replicas = pb::Replicas {
            min: 2,
            max: 5,
            target_cpu_percent: 0,
        };
        let workload = pb::WorkloadSpec {
            service_id: "s".into(),
            name: "api".into(),
            ..pb::WorkloadSpec::default()
        };
        let command = command();
        let meta = Meta::new(&command, &workload);
        assert_eq!(fixed_replicas(&replicas), None);
        let hpa = serde_json::to_value(autoscaler(meta, &replicas).unwrap()).unwrap();
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 5);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "api");
        let fixed = pb::Replicas {
            min: 3,
            max: 3,
            target_cpu_percent: 0,
        };
        assert!(autoscaler(meta, &fixed).is_none());
        assert_eq!(fixed_replicas(&fixed), Some(3));
    }

    #[test]
    fn child_names_stay_dns_labels() {
        assert_eq!(child_name("api", "http"), "api-http");
        let long = "a".repeat(63);
        assert_eq!(child_name(&long, "tls").len(), 63);
    }
}
