//! `slipway.catalog.v1.ServiceService`: the services inside an environment, of every kind
//! (application, container, database, cron job, lifecycle job, Helm chart).
//!
//! A service is stored as a row of [`Kind::Service`] under its environment, its kind name
//! in the row's `subtype` so listings filter by kind without decoding specs. Every setting
//! is validated here, before anything is read, with one field violation per bad field:
//! what reaches the store is what the orchestrator and the agent can run as is.

use std::collections::HashSet;

use slipway_api::Violations;
use slipway_auth::rbac::{Action, Principal, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::service_service_server::ServiceService;
use slipway_proto::common::v1::ServiceKind;
use slipway_proto::events::v1 as ev;
use tonic::{Request, Response, Status};

use super::{
    CatalogMessage as _, Context, Scope, authorize, caller, next_page_token, page_request,
    request_key, require,
};
use crate::schedule::{CronSchedule, parse_timezone};
use crate::store::{Children, Filter, Kind, NewRow, Row, RowChanges, StoreError, new_id};

use pb::helm_settings::ChartSource;
use pb::job_source::Source as JobSourceKind;
use pb::service::Settings;

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Services {
    ctx: Context,
}

impl Services {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// Most ports, custom domains and build arguments a service may declare.
const MAX_PORTS: usize = 20;
const MAX_DOMAINS: usize = 20;
const MAX_BUILD_ARGUMENTS: usize = 100;
/// Most items of a command or argument list, and the longest item.
const MAX_ARGV: usize = 100;
const MAX_ARG_CHARS: usize = 4096;
/// Longest values file of a Helm chart, in bytes.
const MAX_VALUES_BYTES: usize = 256 * 1024;
/// Longest relative path (root path, Dockerfile path, chart path).
const MAX_PATH_CHARS: usize = 1024;

/// What the sentence of a managed database says: the contract promises UNIMPLEMENTED until
/// an installation can configure a provider, rather than accepting a database that would
/// never be created.
const NO_MANAGED_PROVIDER: &str = "managed databases are not available yet: this installation \
     has no managed database provider; use DATABASE_MODE_CONTAINER";

// ---------------------------------------------------------------------------------------
// Kinds
// ---------------------------------------------------------------------------------------

/// A service kind that may be written (not UNSPECIFIED, not an unknown number).
fn service_kind(value: i32) -> Option<ServiceKind> {
    match ServiceKind::try_from(value).ok()? {
        ServiceKind::Unspecified => None,
        kind => Some(kind),
    }
}

/// The settings block of a kind: its field name, also the first segment of update paths.
fn block_of(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Unspecified => "",
        ServiceKind::Application => "application",
        ServiceKind::Container => "container",
        ServiceKind::Database => "database",
        ServiceKind::CronJob => "cron_job",
        ServiceKind::LifecycleJob => "lifecycle_job",
        ServiceKind::Helm => "helm",
    }
}

/// The row subtype of a kind, what ListServices filters on.
fn subtype_of(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Unspecified => "",
        ServiceKind::Application => "APPLICATION",
        ServiceKind::Container => "CONTAINER",
        ServiceKind::Database => "DATABASE",
        ServiceKind::CronJob => "CRON_JOB",
        ServiceKind::LifecycleJob => "LIFECYCLE_JOB",
        ServiceKind::Helm => "HELM",
    }
}

/// The kind whose block `settings` is.
fn kind_of(settings: &Settings) -> ServiceKind {
    match settings {
        Settings::Application(_) => ServiceKind::Application,
        Settings::Container(_) => ServiceKind::Container,
        Settings::Database(_) => ServiceKind::Database,
        Settings::CronJob(_) => ServiceKind::CronJob,
        Settings::LifecycleJob(_) => ServiceKind::LifecycleJob,
        Settings::Helm(_) => ServiceKind::Helm,
    }
}

/// The kind whose block is named `block`.
fn kind_of_block(block: &str) -> Option<ServiceKind> {
    [
        ServiceKind::Application,
        ServiceKind::Container,
        ServiceKind::Database,
        ServiceKind::CronJob,
        ServiceKind::LifecycleJob,
        ServiceKind::Helm,
    ]
    .into_iter()
    .find(|kind| block_of(*kind) == block)
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Validates a whole service (a create's, or an update's after merging): name, kind and
/// the settings of its kind. Paths start with `service.`.
fn validate_service(service: &pb::Service, v: &mut Violations) {
    v.dns_label("service.name", &service.name);
    if !v.has("service.name") && !service.name.starts_with(|c: char| c.is_ascii_lowercase()) {
        // The name is a host name other services resolve; Kubernetes Service names must
        // start with a letter.
        v.add("service.name", "must start with a letter");
    }
    let Some(kind) = service_kind(service.kind) else {
        v.add(
            "service.kind",
            "is required: APPLICATION, CONTAINER, DATABASE, CRON_JOB, LIFECYCLE_JOB or HELM",
        );
        return;
    };
    let block = block_of(kind);
    let Some(settings) = &service.settings else {
        v.add(
            format!("service.{block}"),
            format!("is required for a service of kind {}", subtype_of(kind)),
        );
        return;
    };
    if kind_of(settings) != kind {
        v.add(
            "service.kind",
            format!(
                "is {} but the settings block set is `{}`; set exactly the block of the kind",
                subtype_of(kind),
                block_of(kind_of(settings))
            ),
        );
        return;
    }
    let p = format!("service.{block}");
    match settings {
        Settings::Application(app) => {
            match &app.source {
                Some(source) => validate_git(source, &format!("{p}.source"), v),
                None => v.add(format!("{p}.source"), "is required"),
            }
            if let Some(runtime) = &app.runtime {
                validate_runtime(runtime, &format!("{p}.runtime"), Usage::Full, v);
            }
        }
        Settings::Container(container) => {
            match &container.source {
                Some(source) => validate_image(source, &format!("{p}.source"), v),
                None => v.add(format!("{p}.source"), "is required"),
            }
            if let Some(runtime) = &container.runtime {
                validate_runtime(runtime, &format!("{p}.runtime"), Usage::Full, v);
            }
        }
        Settings::Database(database) => validate_database(database, &p, v),
        Settings::CronJob(job) => {
            validate_cron(job, &p, v);
        }
        Settings::LifecycleJob(job) => validate_lifecycle(job, &p, v),
        Settings::Helm(helm) => validate_helm(helm, &p, v),
    }
}

fn validate_database(database: &pb::DatabaseSettings, p: &str, v: &mut Violations) {
    let engine = match pb::DatabaseEngine::try_from(database.engine) {
        Ok(pb::DatabaseEngine::Unspecified) | Err(_) => {
            v.add(
                format!("{p}.engine"),
                "is required: POSTGRESQL, MYSQL, REDIS or MONGODB",
            );
            None
        }
        Ok(engine) => Some(engine),
    };
    if database.version.is_empty() {
        v.add(format!("{p}.version"), "is required");
    } else if parse_version(&database.version).is_none() {
        v.add(
            format!("{p}.version"),
            "must be a major version or major.minor, such as 16 or 8.0",
        );
    }
    let mode = match pb::DatabaseMode::try_from(database.mode) {
        Ok(pb::DatabaseMode::Unspecified) | Err(_) => {
            v.add(format!("{p}.mode"), "is required: CONTAINER or MANAGED");
            None
        }
        Ok(mode) => Some(mode),
    };
    match mode {
        Some(pb::DatabaseMode::Managed) if database.managed_provider.is_empty() => v.add(
            format!("{p}.managed_provider"),
            "is required with DATABASE_MODE_MANAGED",
        ),
        Some(pb::DatabaseMode::Container) if !database.managed_provider.is_empty() => v.add(
            format!("{p}.managed_provider"),
            "must be empty with DATABASE_MODE_CONTAINER",
        ),
        _ => v.max_chars(
            &format!("{p}.managed_provider"),
            &database.managed_provider,
            63,
        ),
    }
    if database.storage_gib > 16384 {
        v.add(
            format!("{p}.storage_gib"),
            "must be between 1 and 16384 GiB (0 means 10)",
        );
    }
    if let Some(runtime) = &database.runtime {
        let usage = match mode {
            Some(pb::DatabaseMode::Managed) => Usage::ManagedDatabase,
            _ => Usage::Database {
                default_port: engine.map(default_port),
            },
        };
        validate_runtime(runtime, &format!("{p}.runtime"), usage, v);
    }
}

/// The port an engine listens on when the service declares none.
fn default_port(engine: pb::DatabaseEngine) -> u32 {
    match engine {
        pb::DatabaseEngine::Postgresql | pb::DatabaseEngine::Unspecified => 5432,
        pb::DatabaseEngine::Mysql => 3306,
        pb::DatabaseEngine::Redis => 6379,
        pb::DatabaseEngine::Mongodb => 27017,
    }
}

fn validate_cron(job: &pb::CronJobSettings, p: &str, v: &mut Violations) {
    if job.schedule.trim().is_empty() {
        v.add(format!("{p}.schedule"), "is required");
    } else if job.schedule.len() > 255 {
        v.add(format!("{p}.schedule"), "must be at most 255 characters");
    } else if let Err(error) = CronSchedule::parse(&job.schedule) {
        v.add(format!("{p}.schedule"), error.to_string());
    }
    if !job.timezone.is_empty()
        && let Err(error) = parse_timezone(&job.timezone)
    {
        v.add(format!("{p}.timezone"), error.to_string());
    }
    validate_job_source(job.source.as_ref(), &format!("{p}.source"), v);
    validate_argv(&job.command, &format!("{p}.command"), true, v);
    validate_argv(&job.args, &format!("{p}.args"), false, v);
    if let Some(runtime) = &job.runtime {
        validate_runtime(runtime, &format!("{p}.runtime"), Usage::Job, v);
    }
}

fn validate_lifecycle(job: &pb::LifecycleJobSettings, p: &str, v: &mut Violations) {
    if job.events.is_empty() {
        v.add(
            format!("{p}.events"),
            "needs at least one event: START, STOP or DELETE",
        );
    }
    let mut seen = HashSet::new();
    for (i, event) in job.events.iter().enumerate() {
        match pb::LifecycleJobEvent::try_from(*event) {
            Ok(pb::LifecycleJobEvent::Unspecified) | Err(_) => v.add(
                format!("{p}.events[{i}]"),
                "is not an event: START, STOP or DELETE",
            ),
            Ok(_) if !seen.insert(*event) => v.add(format!("{p}.events[{i}]"), "is listed twice"),
            Ok(_) => {}
        }
    }
    validate_job_source(job.source.as_ref(), &format!("{p}.source"), v);
    validate_argv(&job.command, &format!("{p}.command"), true, v);
    validate_argv(&job.args, &format!("{p}.args"), false, v);
    if let Some(timeout) = &job.timeout {
        match nanos(timeout) {
            Some(total) if (SECOND..=24 * 3600 * SECOND).contains(&total) => {}
            _ => v.add(
                format!("{p}.timeout"),
                "must be between 1 second and 24 hours (unset means 10 minutes)",
            ),
        }
    }
    if job.max_retries > 10 {
        v.add(format!("{p}.max_retries"), "must be between 0 and 10");
    }
    if let Some(runtime) = &job.runtime {
        validate_runtime(runtime, &format!("{p}.runtime"), Usage::Job, v);
    }
}

fn validate_job_source(source: Option<&pb::JobSource>, p: &str, v: &mut Violations) {
    match source.and_then(|source| source.source.as_ref()) {
        None => v.add(p, "is required: set git or image"),
        Some(JobSourceKind::Git(git)) => validate_git(git, &format!("{p}.git"), v),
        Some(JobSourceKind::Image(image)) => validate_image(image, &format!("{p}.image"), v),
    }
}

fn validate_helm(helm: &pb::HelmSettings, p: &str, v: &mut Violations) {
    let chart_name = format!("{p}.chart_name");
    let chart_version = format!("{p}.chart_version");
    match &helm.chart_source {
        None => v.add(
            format!("{p}.chart_source"),
            "is required: set repository, oci or git",
        ),
        Some(ChartSource::Repository(repository)) => {
            let q = format!("{p}.repository");
            if repository.url.is_empty() {
                v.add(format!("{q}.url"), "is required");
            } else if let Some(problem) = https_url_problem(&repository.url) {
                v.add(format!("{q}.url"), problem);
            }
            v.max_chars(&format!("{q}.registry_id"), &repository.registry_id, 128);
            if helm.chart_name.is_empty() {
                v.add(&chart_name, "is required with a repository source");
            } else if !is_chart_name(&helm.chart_name) {
                v.add(
                    &chart_name,
                    "must be a chart name: lowercase letters, digits, '-', '_' and '.'",
                );
            }
            chart_version_check(&helm.chart_version, &chart_version, "a repository", v);
        }
        Some(ChartSource::Oci(oci)) => {
            let q = format!("{p}.oci");
            if oci.reference.is_empty() {
                v.add(format!("{q}.reference"), "is required");
            } else if let Some(problem) = oci_reference_problem(&oci.reference) {
                v.add(format!("{q}.reference"), problem);
            }
            v.max_chars(&format!("{q}.registry_id"), &oci.registry_id, 128);
            if !helm.chart_name.is_empty() {
                v.add(
                    &chart_name,
                    "must be empty with an oci source: the reference names the chart",
                );
            }
            chart_version_check(&helm.chart_version, &chart_version, "an oci", v);
        }
        Some(ChartSource::Git(git)) => {
            let q = format!("{p}.git");
            git_url_check(&git.repository_url, &format!("{q}.repository_url"), v);
            branch_check(&git.branch, &format!("{q}.branch"), v);
            relative_path_check(&git.chart_path, &format!("{q}.chart_path"), v);
            v.max_chars(
                &format!("{q}.git_credential_id"),
                &git.git_credential_id,
                128,
            );
            if !helm.chart_name.is_empty() {
                v.add(
                    &chart_name,
                    "must be empty with a git source: the chart path names the chart",
                );
            }
            if !helm.chart_version.is_empty() {
                v.add(
                    &chart_version,
                    "must be empty with a git source: its branch decides",
                );
            }
        }
    }
    if helm.values_yaml.len() > MAX_VALUES_BYTES {
        v.add(format!("{p}.values_yaml"), "must be at most 256 KiB");
    } else if let Some(problem) = yaml_mapping_problem(&helm.values_yaml) {
        v.add(format!("{p}.values_yaml"), problem);
    }
}

fn chart_version_check(version: &str, field: &str, source: &str, v: &mut Violations) {
    if version.is_empty() {
        v.add(field, format!("is required with {source} source"));
    } else if !is_semver(version) {
        v.add(
            field,
            "must be an exact semantic version such as 1.2.3 (no ranges)",
        );
    }
}

fn validate_git(git: &pb::GitSource, p: &str, v: &mut Violations) {
    git_url_check(&git.repository_url, &format!("{p}.repository_url"), v);
    branch_check(&git.branch, &format!("{p}.branch"), v);
    relative_path_check(&git.root_path, &format!("{p}.root_path"), v);
    relative_path_check(&git.dockerfile_path, &format!("{p}.dockerfile_path"), v);
    if git.build_arguments.len() > MAX_BUILD_ARGUMENTS {
        v.add(
            format!("{p}.build_arguments"),
            format!("must have at most {MAX_BUILD_ARGUMENTS} entries"),
        );
    }
    let mut keys: Vec<&String> = git.build_arguments.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("{p}.build_arguments[{key:?}]");
        if !is_env_name(key) {
            v.add(&field, "key must match [A-Za-z_][A-Za-z0-9_]*");
        } else if git
            .build_arguments
            .get(key)
            .is_some_and(|value| value.chars().count() > MAX_ARG_CHARS)
        {
            v.add(
                &field,
                format!("must be at most {MAX_ARG_CHARS} characters"),
            );
        }
    }
    v.max_chars(
        &format!("{p}.git_credential_id"),
        &git.git_credential_id,
        128,
    );
    v.max_chars(
        &format!("{p}.build_command"),
        &git.build_command,
        MAX_ARG_CHARS,
    );
}

fn validate_image(image: &pb::ImageSource, p: &str, v: &mut Violations) {
    v.max_chars(&format!("{p}.registry_id"), &image.registry_id, 128);
    if image.image.is_empty() {
        v.add(format!("{p}.image"), "is required");
    } else if image.image.len() > 1024 {
        v.add(format!("{p}.image"), "must be at most 1024 characters");
    } else if let Some(problem) = image_problem(&image.image) {
        v.add(format!("{p}.image"), problem);
    }
    if image.tag.is_empty() {
        v.add(format!("{p}.tag"), "is required");
    } else if let Some(problem) = tag_problem(&image.tag) {
        v.add(format!("{p}.tag"), problem);
    }
}

/// Which runtime settings a service accepts, by kind (and a database's mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usage {
    /// Applications and containers: everything.
    Full,
    /// CONTAINER-mode databases: resources, at most one port (the engine's default when
    /// none), probes; exactly one instance.
    Database { default_port: Option<u32> },
    /// MANAGED-mode databases: a sizing hint only.
    ManagedDatabase,
    /// Cron and lifecycle jobs: resources only.
    Job,
}

impl Usage {
    /// Why a field this usage does not accept is refused.
    fn refusal(self) -> &'static str {
        match self {
            Usage::Full => "is not accepted here",
            Usage::Database { .. } => {
                "is not accepted for a database: it runs one instance with its engine's command and no custom domains"
            }
            Usage::ManagedDatabase => {
                "is not accepted for a managed database: only cpu_millicores and memory_mib apply"
            }
            Usage::Job => "is not accepted for a job: only cpu_millicores and memory_mib apply",
        }
    }
}

fn validate_runtime(runtime: &pb::RuntimeSettings, p: &str, usage: Usage, v: &mut Violations) {
    let refuse = |v: &mut Violations, field: &str| v.add(format!("{p}.{field}"), usage.refusal());
    // Ports.
    match usage {
        Usage::Full if runtime.ports.len() > MAX_PORTS => v.add(
            format!("{p}.ports"),
            format!("must have at most {MAX_PORTS} ports"),
        ),
        Usage::Database { .. } if runtime.ports.len() > 1 => {
            v.add(format!("{p}.ports"), "a database listens on one port")
        }
        Usage::ManagedDatabase | Usage::Job if !runtime.ports.is_empty() => refuse(v, "ports"),
        _ => validate_ports(&runtime.ports, p, v),
    }
    if runtime.cpu_millicores != 0 && !(10..=64_000).contains(&runtime.cpu_millicores) {
        v.add(
            format!("{p}.cpu_millicores"),
            "must be between 10 and 64000 (0 means 500)",
        );
    }
    if runtime.memory_mib != 0 && !(16..=262_144).contains(&runtime.memory_mib) {
        v.add(
            format!("{p}.memory_mib"),
            "must be between 16 and 262144 MiB (0 means 512)",
        );
    }
    // Instances.
    match usage {
        Usage::Full => {
            if runtime.min_instances > 100 {
                v.add(
                    format!("{p}.min_instances"),
                    "must be between 1 and 100 (0 means 1)",
                );
            }
            let min = runtime.min_instances.max(1);
            if runtime.max_instances != 0 && !(min..=100).contains(&runtime.max_instances) {
                v.add(
                    format!("{p}.max_instances"),
                    format!(
                        "must be between min_instances ({min}) and 100 (0 means min_instances)"
                    ),
                );
            }
        }
        Usage::Database { .. } => {
            for (field, value) in [
                ("min_instances", runtime.min_instances),
                ("max_instances", runtime.max_instances),
            ] {
                if value > 1 {
                    v.add(
                        format!("{p}.{field}"),
                        "a database runs exactly one instance",
                    );
                }
            }
        }
        Usage::ManagedDatabase | Usage::Job => {
            for (field, value) in [
                ("min_instances", runtime.min_instances),
                ("max_instances", runtime.max_instances),
            ] {
                if value != 0 {
                    refuse(v, field);
                }
            }
        }
    }
    // Probes check one of the declared ports, or the engine's default one.
    let checkable: Vec<u32> = match usage {
        Usage::Database {
            default_port: Some(port),
        } if runtime.ports.is_empty() => vec![port],
        _ => runtime
            .ports
            .iter()
            .map(|port| port.internal_port)
            .collect(),
    };
    for (field, probe) in [
        ("liveness_probe", &runtime.liveness_probe),
        ("readiness_probe", &runtime.readiness_probe),
    ] {
        let Some(probe) = probe else { continue };
        match usage {
            Usage::Full | Usage::Database { .. } => {
                validate_probe(probe, &format!("{p}.{field}"), &checkable, v);
            }
            Usage::ManagedDatabase | Usage::Job => refuse(v, field),
        }
    }
    // Custom domains and the local command belong to applications and containers.
    if usage == Usage::Full {
        validate_domains(runtime, p, v);
        validate_argv(&runtime.command, &format!("{p}.command"), true, v);
        validate_argv(&runtime.args, &format!("{p}.args"), false, v);
    } else {
        for (field, empty) in [
            ("custom_domains", runtime.custom_domains.is_empty()),
            ("command", runtime.command.is_empty()),
            ("args", runtime.args.is_empty()),
        ] {
            if !empty {
                refuse(v, field);
            }
        }
    }
}

fn validate_ports(ports: &[pb::Port], p: &str, v: &mut Violations) {
    let mut internal = HashSet::new();
    let mut external = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let q = format!("{p}.ports[{i}]");
        if !(1..=65_535).contains(&port.internal_port) {
            v.add(format!("{q}.internal_port"), "must be between 1 and 65535");
        } else if !internal.insert(port.internal_port) {
            v.add(
                format!("{q}.internal_port"),
                "is declared twice; each internal_port once",
            );
        }
        let protocol = pb::PortProtocol::try_from(port.protocol);
        if protocol.is_err() {
            v.add(
                format!("{q}.protocol"),
                "is not a protocol: HTTP, HTTP2, GRPC, TCP or UDP",
            );
        }
        if port.external_port > 65_535 {
            v.add(
                format!("{q}.external_port"),
                "must be between 1 and 65535 (0 means internal_port)",
            );
        } else {
            // A Kubernetes Service refuses two ports with the same number and transport.
            let number = if port.external_port == 0 {
                port.internal_port
            } else {
                port.external_port
            };
            let udp = protocol == Ok(pb::PortProtocol::Udp);
            if (1..=65_535).contains(&number) && !external.insert((number, udp)) {
                v.add(
                    format!("{q}.external_port"),
                    format!("{number} is already the external port of another port"),
                );
            }
        }
    }
}

fn validate_probe(probe: &pb::Probe, p: &str, ports: &[u32], v: &mut Violations) {
    let kind = match pb::ProbeType::try_from(probe.r#type) {
        Ok(pb::ProbeType::Unspecified) | Err(_) => {
            v.add(format!("{p}.type"), "is required: HTTP, TCP or EXEC");
            None
        }
        Ok(kind) => Some(kind),
    };
    if !probe.path.is_empty() {
        if kind != Some(pb::ProbeType::Http) {
            v.add(format!("{p}.path"), "is only accepted by HTTP probes");
        } else if !probe.path.starts_with('/')
            || probe.path.len() > 2048
            || probe
                .path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            v.add(
                format!("{p}.path"),
                "must start with '/', hold no spaces and be at most 2048 characters",
            );
        }
    }
    match kind {
        Some(pb::ProbeType::Http | pb::ProbeType::Tcp) => {
            if probe.port == 0 && ports.is_empty() {
                v.add(
                    format!("{p}.port"),
                    "the service declares no port to check; add one to ports",
                );
            } else if probe.port != 0 && !ports.contains(&probe.port) {
                v.add(
                    format!("{p}.port"),
                    "must be the internal_port of one of the service's ports",
                );
            }
            if !probe.command.is_empty() {
                v.add(format!("{p}.command"), "is only accepted by EXEC probes");
            }
        }
        Some(pb::ProbeType::Exec) => {
            if probe.port != 0 {
                v.add(format!("{p}.port"), "is not accepted by EXEC probes");
            }
            if probe.command.is_empty() {
                v.add(format!("{p}.command"), "is required with an EXEC probe");
            } else {
                validate_argv(&probe.command, &format!("{p}.command"), true, v);
            }
        }
        _ => {}
    }
    let hour = 3600 * SECOND;
    duration_check(
        probe.initial_delay.as_ref(),
        &format!("{p}.initial_delay"),
        (0, hour),
        "must be whole seconds from 0 to 1 hour",
        v,
    );
    duration_check(
        probe.period.as_ref(),
        &format!("{p}.period"),
        (SECOND, hour),
        "must be whole seconds from 1 second to 1 hour",
        v,
    );
    let period = probe.period.as_ref().and_then(nanos).unwrap_or(10 * SECOND);
    duration_check(
        probe.timeout.as_ref(),
        &format!("{p}.timeout"),
        (SECOND, period.max(SECOND)),
        "must be whole seconds from 1 second up to the period",
        v,
    );
    if probe.failure_threshold > 100 {
        v.add(
            format!("{p}.failure_threshold"),
            "must be between 1 and 100 (0 means 3)",
        );
    }
}

fn validate_domains(runtime: &pb::RuntimeSettings, p: &str, v: &mut Violations) {
    if runtime.custom_domains.is_empty() {
        return;
    }
    if runtime.custom_domains.len() > MAX_DOMAINS {
        v.add(
            format!("{p}.custom_domains"),
            format!("must have at most {MAX_DOMAINS} domains"),
        );
    }
    let routable: Vec<u32> = runtime
        .ports
        .iter()
        .filter(|port| port.public && is_http_like(port.protocol))
        .map(|port| port.internal_port)
        .collect();
    let mut seen = HashSet::new();
    for (i, domain) in runtime.custom_domains.iter().enumerate() {
        let q = format!("{p}.custom_domains[{i}]");
        if domain.domain.is_empty() {
            v.add(format!("{q}.domain"), "is required");
        } else if let Some(problem) = domain_problem(&domain.domain) {
            v.add(format!("{q}.domain"), problem);
        } else if !seen.insert(domain.domain.as_str()) {
            v.add(format!("{q}.domain"), "is listed twice");
        }
        if domain.port == 0 && routable.is_empty() {
            v.add(
                format!("{q}.port"),
                "the service has no public HTTP, HTTP2 or GRPC port to route the domain to",
            );
        } else if domain.port != 0 && !routable.contains(&domain.port) {
            v.add(
                format!("{q}.port"),
                "must be the internal_port of a public HTTP, HTTP2 or GRPC port of the service",
            );
        }
    }
}

fn is_http_like(protocol: i32) -> bool {
    matches!(
        pb::PortProtocol::try_from(protocol),
        Ok(pb::PortProtocol::Unspecified
            | pb::PortProtocol::Http
            | pb::PortProtocol::Http2
            | pb::PortProtocol::Grpc)
    )
}

/// A command or argument list: at most 100 items of up to 4096 characters; a command's
/// executable (its first item) is not blank.
fn validate_argv(items: &[String], p: &str, is_command: bool, v: &mut Violations) {
    if items.len() > MAX_ARGV {
        v.add(p, format!("must have at most {MAX_ARGV} items"));
        return;
    }
    for (i, item) in items.iter().enumerate() {
        if item.chars().count() > MAX_ARG_CHARS {
            v.add(
                format!("{p}[{i}]"),
                format!("must be at most {MAX_ARG_CHARS} characters"),
            );
        } else if i == 0 && is_command && item.trim().is_empty() {
            v.add(format!("{p}[0]"), "the executable must not be blank");
        }
    }
}

const SECOND: i128 = 1_000_000_000;

/// A duration in nanoseconds; `None` when it is negative or not normalized.
fn nanos(duration: &prost_types::Duration) -> Option<i128> {
    if duration.seconds < 0 || !(0..1_000_000_000).contains(&duration.nanos) {
        return None;
    }
    Some(i128::from(duration.seconds) * SECOND + i128::from(duration.nanos))
}

/// A whole-second duration within `(min, max)` nanoseconds, when set.
fn duration_check(
    duration: Option<&prost_types::Duration>,
    field: &str,
    (min, max): (i128, i128),
    message: &str,
    v: &mut Violations,
) {
    let Some(duration) = duration else { return };
    let fits =
        nanos(duration).is_some_and(|total| duration.nanos == 0 && (min..=max).contains(&total));
    if !fits {
        v.add(field, message);
    }
}

fn git_url_check(url: &str, field: &str, v: &mut Violations) {
    if url.is_empty() {
        v.add(field, "is required");
    } else if url.len() > 2048 {
        v.add(field, "must be at most 2048 characters");
    } else if let Some(problem) = git_url_problem(url) {
        v.add(field, problem);
    }
}

/// Why a clone URL is none of the accepted forms: `https://host/path`,
/// `ssh://[user@]host[:port]/path`, `user@host:path`, `file:///absolute/path`.
///
/// `file://` exists for `slipway dev` and tests, which build from a repository on the same
/// machine; in a real cluster it only works when every build-runner can read that path.
fn git_url_problem(url: &str) -> Option<&'static str> {
    const FORMS: &str = "must be a clone url: https://host/owner/repo, ssh://git@host/owner/repo.git, git@host:owner/repo.git or file:///absolute/path";
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces");
    }
    if let Some(path) = url.strip_prefix("file://") {
        // Only the empty host form (`file:///path`): a host would be ignored by git.
        if !path.starts_with('/')
            || path.trim_matches('/').is_empty()
            || path.contains(['?', '#'])
            || path.split('/').any(|segment| segment == "..")
        {
            return Some("must be a file:///absolute/path url (without '..')");
        }
        return None;
    }
    if let Some(rest) = url.strip_prefix("https://") {
        let Some((authority, path)) = rest.split_once('/') else {
            return Some(FORMS);
        };
        if authority.contains('@') {
            return Some(
                "must not hold credentials; use a git credential (git_credential_id) instead",
            );
        }
        if !is_host(authority) || path.trim_matches('/').is_empty() || path.contains(['?', '#']) {
            return Some(FORMS);
        }
        return None;
    }
    if let Some(rest) = url.strip_prefix("ssh://") {
        let Some((authority, path)) = rest.split_once('/') else {
            return Some(FORMS);
        };
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if !is_host(host) || path.trim_matches('/').is_empty() {
            return Some(FORMS);
        }
        return None;
    }
    if url.contains("://") {
        return Some(FORMS);
    }
    // scp-like: user@host:path
    let Some((user_host, path)) = url.split_once(':') else {
        return Some(FORMS);
    };
    match user_host.split_once('@') {
        Some((user, host)) if !user.is_empty() && is_host(host) && !path.is_empty() => None,
        _ => Some(FORMS),
    }
}

/// Why an `https://` URL (a chart repository) is refused.
fn https_url_problem(url: &str) -> Option<&'static str> {
    if url.len() > 2048 {
        return Some("must be at most 2048 characters");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces");
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Some("must be an https:// url");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Some("must not hold credentials; use a registry (registry_id) instead");
    }
    if !is_host(authority) {
        return Some("must be an https:// url with a host");
    }
    None
}

/// A host name or address with an optional port.
fn is_host(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return false,
        None => authority,
    };
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host.starts_with(['.', '-'])
}

/// A branch name git accepts (`git check-ref-format --branch`, simplified).
fn branch_check(branch: &str, field: &str, v: &mut Violations) {
    if branch.is_empty() {
        v.add(field, "is required");
    } else if branch.chars().count() > 255 {
        v.add(field, "must be at most 255 characters");
    } else if branch
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
        || branch.contains("..")
        || branch.contains("@{")
        || branch.contains("//")
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
    {
        v.add(field, "is not a valid git branch name");
    }
}

/// A path inside a repository: relative, without `..`.
fn relative_path_check(path: &str, field: &str, v: &mut Violations) {
    if path.is_empty() {
        return;
    }
    if path.chars().count() > MAX_PATH_CHARS {
        v.add(
            field,
            format!("must be at most {MAX_PATH_CHARS} characters"),
        );
    } else if path.starts_with('/')
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || path.split('/').any(|segment| segment == "..")
    {
        v.add(
            field,
            "must be a relative path inside the repository (no leading '/', no '..')",
        );
    }
}

/// Why an image repository reference is refused: lowercase path components, an optional
/// registry host first, no tag or digest (they go in `tag`).
fn image_problem(image: &str) -> Option<&'static str> {
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces");
    }
    if image.contains("://") {
        return Some("must be a repository such as team/api or ghcr.io/acme/api, without scheme");
    }
    if image.contains('@') {
        return Some("must not hold a digest; put sha256:<digest> in tag");
    }
    let components: Vec<&str> = image.split('/').collect();
    if components.last().is_some_and(|last| last.contains(':')) {
        return Some("must not hold a tag; put it in tag");
    }
    let has_host = components.len() > 1
        && components
            .first()
            .is_some_and(|first| first.contains(['.', ':']) || *first == "localhost");
    for (i, component) in components.iter().enumerate() {
        let valid = if i == 0 && has_host {
            is_host(component)
        } else {
            !component.is_empty()
                && component.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && component.starts_with(|c: char| c.is_ascii_alphanumeric())
                && component.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !valid {
            return Some(
                "must be an image repository: lowercase components separated by '/', optionally after a registry host",
            );
        }
    }
    None
}

/// Why an image tag is refused: a tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a digest.
fn tag_problem(tag: &str) -> Option<&'static str> {
    if let Some(hex) = tag.strip_prefix("sha256:") {
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        return (!valid).then_some("a digest must be sha256: followed by 64 lowercase hex digits");
    }
    let valid = tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    (!valid).then_some(
        "must be a tag (letters, digits, '_', '.', '-'; up to 128) or sha256:<64 hex digits>",
    )
}

/// Why an OCI chart reference is refused.
fn oci_reference_problem(reference: &str) -> Option<&'static str> {
    if reference.len() > 1024 {
        return Some("must be at most 1024 characters");
    }
    let Some(rest) = reference.strip_prefix("oci://") else {
        return Some("must start with oci://, such as oci://ghcr.io/acme/charts/api");
    };
    let Some((host, path)) = rest.split_once('/') else {
        return Some("must name a registry host and a chart path");
    };
    if !is_host(host) || path.is_empty() || path.split('/').any(str::is_empty) {
        return Some("must name a registry host and a chart path");
    }
    if path.contains(['@', ':']) {
        return Some("must not hold a version or digest; put the version in chart_version");
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c.is_ascii_uppercase())
    {
        return Some("must be lowercase without spaces");
    }
    None
}

fn is_chart_name(name: &str) -> bool {
    name.len() <= 250
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// An exact semantic version (`1.2.3`, `v1.2.3-rc.1+build.5`): what Helm requires of a
/// chart version. Ranges (`^1.2`, `~1`, `>=1`, `1.x`) are not versions.
fn is_semver(version: &str) -> bool {
    let version = version.strip_prefix('v').unwrap_or(version);
    let (version, build) = match version.split_once('+') {
        Some((version, build)) => (version, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let identifiers_ok = |text: Option<&str>| {
        text.is_none_or(|text| {
            text.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        })
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty() && part.len() <= 9 && part.bytes().all(|b| b.is_ascii_digit())
        })
        && identifiers_ok(pre)
        && identifiers_ok(build)
}

/// A database version `major` or `major.minor`, as numbers to compare upgrades.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let number = |text: &str| {
        (!text.is_empty() && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u32>().ok())
            .flatten()
    };
    match version.split_once('.') {
        Some((major, minor)) => Some((number(major)?, number(minor)?)),
        None => Some((number(version)?, 0)),
    }
}

/// An environment-variable-like name, as Docker build arguments take.
fn is_env_name(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a custom domain is refused: a lowercase fully qualified host name of DNS labels,
/// no wildcard, up to 253 characters.
fn domain_problem(domain: &str) -> Option<&'static str> {
    if domain.len() > 253 {
        return Some("must be at most 253 characters");
    }
    if domain.contains('*') {
        return Some("must not be a wildcard");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.iter().all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    let tld_ok = labels
        .last()
        .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    if labels.len() < 2 || !labels_ok || !tld_ok {
        return Some("must be a lowercase fully qualified host name such as api.example.com");
    }
    None
}

/// Why a values file is not a YAML mapping, as far as can be told without a YAML parser:
/// the catalog has none, so this catches the usual mistakes (a list or a lone scalar at
/// the top, tabs for indentation, several documents); Helm reports anything subtler at
/// deploy time.
fn yaml_mapping_problem(text: &str) -> Option<&'static str> {
    let mut first: Option<&str> = None;
    let mut documents = 0;
    for line in text.lines() {
        let trimmed = line.trim_end();
        let content = trimmed.trim_start();
        if content.is_empty() || content.starts_with('#') || content.starts_with('%') {
            continue;
        }
        if trimmed.starts_with("---") && (trimmed.len() == 3 || trimmed[3..].starts_with(' ')) {
            documents += 1;
            if documents > 1 || first.is_some() {
                return Some("must hold one YAML document");
            }
            continue;
        }
        if line.starts_with(|c: char| c.is_whitespace())
            && line
                .chars()
                .take_while(|c| c.is_whitespace())
                .any(|c| c == '\t')
        {
            return Some("uses a tab for indentation; YAML indents with spaces");
        }
        if first.is_none() {
            first = Some(content);
        }
    }
    let first = first?;
    if first == "-" || first.starts_with("- ") || first.starts_with('[') {
        return Some("must be a mapping of keys to values, not a list");
    }
    if first.starts_with('{') || first.contains(": ") || first.ends_with(':') {
        return None;
    }
    Some("must be a mapping of keys to values (key: value)")
}

// ---------------------------------------------------------------------------------------
// Update paths
// ---------------------------------------------------------------------------------------

/// A mask path that names no field a service update may set.
#[derive(Debug)]
struct BadPath;

type Apply<T> = fn(&mut T, &T, &[&str]) -> Result<(), BadPath>;

/// Copies a scalar, repeated or map field (replaced whole: nothing below it is a path).
fn leaf<T: Clone>(dst: &mut T, src: &T, rest: &[&str]) -> Result<(), BadPath> {
    if !rest.is_empty() {
        return Err(BadPath);
    }
    dst.clone_from(src);
    Ok(())
}

/// Copies an optional sub-message, whole or the field `rest` names inside it.
fn sub<T: Default + Clone>(
    dst: &mut Option<T>,
    src: &Option<T>,
    rest: &[&str],
    apply: Apply<T>,
) -> Result<(), BadPath> {
    if rest.is_empty() {
        dst.clone_from(src);
        return Ok(());
    }
    let empty = T::default();
    apply(
        dst.get_or_insert_with(T::default),
        src.as_ref().unwrap_or(&empty),
        rest,
    )
}

fn apply_git(dst: &mut pb::GitSource, src: &pb::GitSource, path: &[&str]) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "repository_url" => leaf(&mut dst.repository_url, &src.repository_url, rest),
        "branch" => leaf(&mut dst.branch, &src.branch, rest),
        "root_path" => leaf(&mut dst.root_path, &src.root_path, rest),
        "dockerfile_path" => leaf(&mut dst.dockerfile_path, &src.dockerfile_path, rest),
        "build_arguments" => leaf(&mut dst.build_arguments, &src.build_arguments, rest),
        "git_credential_id" => leaf(&mut dst.git_credential_id, &src.git_credential_id, rest),
        "build_command" => leaf(&mut dst.build_command, &src.build_command, rest),
        _ => Err(BadPath),
    }
}

fn apply_image(
    dst: &mut pb::ImageSource,
    src: &pb::ImageSource,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "registry_id" => leaf(&mut dst.registry_id, &src.registry_id, rest),
        "image" => leaf(&mut dst.image, &src.image, rest),
        "tag" => leaf(&mut dst.tag, &src.tag, rest),
        _ => Err(BadPath),
    }
}

fn apply_job_source(
    dst: &mut pb::JobSource,
    src: &pb::JobSource,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    // Setting a member of the oneof makes it the one set, as with any oneof.
    match *first {
        "git" => {
            let from = match &src.source {
                Some(JobSourceKind::Git(git)) => Some(git.clone()),
                _ => None,
            };
            let mut current = match &dst.source {
                Some(JobSourceKind::Git(git)) => Some(git.clone()),
                _ => None,
            };
            sub(&mut current, &from, rest, apply_git)?;
            match current {
                Some(git) => dst.source = Some(JobSourceKind::Git(git)),
                None if matches!(dst.source, Some(JobSourceKind::Git(_))) => dst.source = None,
                None => {}
            }
            Ok(())
        }
        "image" => {
            let from = match &src.source {
                Some(JobSourceKind::Image(image)) => Some(image.clone()),
                _ => None,
            };
            let mut current = match &dst.source {
                Some(JobSourceKind::Image(image)) => Some(image.clone()),
                _ => None,
            };
            sub(&mut current, &from, rest, apply_image)?;
            match current {
                Some(image) => dst.source = Some(JobSourceKind::Image(image)),
                None if matches!(dst.source, Some(JobSourceKind::Image(_))) => dst.source = None,
                None => {}
            }
            Ok(())
        }
        _ => Err(BadPath),
    }
}

fn apply_probe(dst: &mut pb::Probe, src: &pb::Probe, path: &[&str]) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "type" => leaf(&mut dst.r#type, &src.r#type, rest),
        "path" => leaf(&mut dst.path, &src.path, rest),
        "port" => leaf(&mut dst.port, &src.port, rest),
        "command" => leaf(&mut dst.command, &src.command, rest),
        "initial_delay" => leaf(&mut dst.initial_delay, &src.initial_delay, rest),
        "period" => leaf(&mut dst.period, &src.period, rest),
        "timeout" => leaf(&mut dst.timeout, &src.timeout, rest),
        "failure_threshold" => leaf(&mut dst.failure_threshold, &src.failure_threshold, rest),
        _ => Err(BadPath),
    }
}

fn apply_runtime(
    dst: &mut pb::RuntimeSettings,
    src: &pb::RuntimeSettings,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "ports" => leaf(&mut dst.ports, &src.ports, rest),
        "cpu_millicores" => leaf(&mut dst.cpu_millicores, &src.cpu_millicores, rest),
        "memory_mib" => leaf(&mut dst.memory_mib, &src.memory_mib, rest),
        "min_instances" => leaf(&mut dst.min_instances, &src.min_instances, rest),
        "max_instances" => leaf(&mut dst.max_instances, &src.max_instances, rest),
        "liveness_probe" => sub(
            &mut dst.liveness_probe,
            &src.liveness_probe,
            rest,
            apply_probe,
        ),
        "readiness_probe" => sub(
            &mut dst.readiness_probe,
            &src.readiness_probe,
            rest,
            apply_probe,
        ),
        "custom_domains" => leaf(&mut dst.custom_domains, &src.custom_domains, rest),
        "command" => leaf(&mut dst.command, &src.command, rest),
        "args" => leaf(&mut dst.args, &src.args, rest),
        _ => Err(BadPath),
    }
}

fn apply_application(
    dst: &mut pb::ApplicationSettings,
    src: &pb::ApplicationSettings,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "source" => sub(&mut dst.source, &src.source, rest, apply_git),
        "runtime" => sub(&mut dst.runtime, &src.runtime, rest, apply_runtime),
        _ => Err(BadPath),
    }
}

fn apply_container(
    dst: &mut pb::ContainerSettings,
    src: &pb::ContainerSettings,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "source" => sub(&mut dst.source, &src.source, rest, apply_image),
        "runtime" => sub(&mut dst.runtime, &src.runtime, rest, apply_runtime),
        _ => Err(BadPath),
    }
}

fn apply_database(
    dst: &mut pb::DatabaseSettings,
    src: &pb::DatabaseSettings,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "engine" => leaf(&mut dst.engine, &src.engine, rest),
        "version" => leaf(&mut dst.version, &src.version, rest),
        "mode" => leaf(&mut dst.mode, &src.mode, rest),
        "managed_provider" => leaf(&mut dst.managed_provider, &src.managed_provider, rest),
        "storage_gib" => leaf(&mut dst.storage_gib, &src.storage_gib, rest),
        "runtime" => sub(&mut dst.runtime, &src.runtime, rest, apply_runtime),
        _ => Err(BadPath),
    }
}

fn apply_cron(
    dst: &mut pb::CronJobSettings,
    src: &pb::CronJobSettings,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "schedule" => leaf(&mut dst.schedule, &src.schedule, rest),
        "timezone" => leaf(&mut dst.timezone, &src.timezone, rest),
        "source" => sub(&mut dst.source, &src.source, rest, apply_job_source),
        "command" => leaf(&mut dst.command, &src.command, rest),
        "args" => leaf(&mut dst.args, &src.args, rest),
        "runtime" => sub(&mut dst.runtime, &src.runtime, rest, apply_runtime),
        _ => Err(BadPath),
    }
}

fn apply_lifecycle(
    dst: &mut pb::LifecycleJobSettings,
    src: &pb::LifecycleJobSettings,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "events" => leaf(&mut dst.events, &src.events, rest),
        "source" => sub(&mut dst.source, &src.source, rest, apply_job_source),
        "command" => leaf(&mut dst.command, &src.command, rest),
        "args" => leaf(&mut dst.args, &src.args, rest),
        "timeout" => leaf(&mut dst.timeout, &src.timeout, rest),
        "max_retries" => leaf(&mut dst.max_retries, &src.max_retries, rest),
        "runtime" => sub(&mut dst.runtime, &src.runtime, rest, apply_runtime),
        _ => Err(BadPath),
    }
}

fn apply_helm(
    dst: &mut pb::HelmSettings,
    src: &pb::HelmSettings,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        dst.clone_from(src);
        return Ok(());
    };
    match *first {
        "repository" | "oci" | "git" => apply_chart_source(dst, src, first, rest),
        "chart_name" => leaf(&mut dst.chart_name, &src.chart_name, rest),
        "chart_version" => leaf(&mut dst.chart_version, &src.chart_version, rest),
        "values_yaml" => leaf(&mut dst.values_yaml, &src.values_yaml, rest),
        _ => Err(BadPath),
    }
}

/// Sets the chart source member `member` (making it the one set) from `src`.
fn apply_chart_source(
    dst: &mut pb::HelmSettings,
    src: &pb::HelmSettings,
    member: &str,
    rest: &[&str],
) -> Result<(), BadPath> {
    fn member_of(source: Option<&ChartSource>, member: &str) -> Option<ChartSource> {
        source
            .filter(|source| {
                matches!(
                    (member, source),
                    ("repository", ChartSource::Repository(_))
                        | ("oci", ChartSource::Oci(_))
                        | ("git", ChartSource::Git(_))
                )
            })
            .cloned()
    }
    let from = member_of(src.chart_source.as_ref(), member);
    let current = member_of(dst.chart_source.as_ref(), member);
    let updated = match member {
        "repository" => {
            let unwrap = |source: Option<ChartSource>| match source {
                Some(ChartSource::Repository(repository)) => Some(repository),
                _ => None,
            };
            let mut value = unwrap(current.clone());
            sub(&mut value, &unwrap(from), rest, |d, s, p| {
                let Some((first, rest)) = p.split_first() else {
                    d.clone_from(s);
                    return Ok(());
                };
                match *first {
                    "url" => leaf(&mut d.url, &s.url, rest),
                    "registry_id" => leaf(&mut d.registry_id, &s.registry_id, rest),
                    _ => Err(BadPath),
                }
            })?;
            value.map(ChartSource::Repository)
        }
        "oci" => {
            let unwrap = |source: Option<ChartSource>| match source {
                Some(ChartSource::Oci(oci)) => Some(oci),
                _ => None,
            };
            let mut value = unwrap(current.clone());
            sub(&mut value, &unwrap(from), rest, |d, s, p| {
                let Some((first, rest)) = p.split_first() else {
                    d.clone_from(s);
                    return Ok(());
                };
                match *first {
                    "reference" => leaf(&mut d.reference, &s.reference, rest),
                    "registry_id" => leaf(&mut d.registry_id, &s.registry_id, rest),
                    _ => Err(BadPath),
                }
            })?;
            value.map(ChartSource::Oci)
        }
        _ => {
            let unwrap = |source: Option<ChartSource>| match source {
                Some(ChartSource::Git(git)) => Some(git),
                _ => None,
            };
            let mut value = unwrap(current.clone());
            sub(&mut value, &unwrap(from), rest, |d, s, p| {
                let Some((first, rest)) = p.split_first() else {
                    d.clone_from(s);
                    return Ok(());
                };
                match *first {
                    "repository_url" => leaf(&mut d.repository_url, &s.repository_url, rest),
                    "branch" => leaf(&mut d.branch, &s.branch, rest),
                    "chart_path" => leaf(&mut d.chart_path, &s.chart_path, rest),
                    "git_credential_id" => {
                        leaf(&mut d.git_credential_id, &s.git_credential_id, rest)
                    }
                    _ => Err(BadPath),
                }
            })?;
            value.map(ChartSource::Git)
        }
    };
    match updated {
        Some(source) => dst.chart_source = Some(source),
        // Clearing the member that is set clears the source; clearing another is a no-op.
        None if current.is_some() => dst.chart_source = None,
        None => {}
    }
    Ok(())
}

/// Copies `path` (a mask path split on '.') from `src` into `dst`, whose settings block is
/// that of `kind`.
fn apply_path(
    dst: &mut pb::Service,
    src: &pb::Service,
    kind: ServiceKind,
    path: &[&str],
) -> Result<(), BadPath> {
    let Some((first, rest)) = path.split_first() else {
        return Err(BadPath);
    };
    if *first == "name" {
        return leaf(&mut dst.name, &src.name, rest);
    }
    if kind_of_block(first) != Some(kind) {
        return Err(BadPath);
    }
    // The source's block when it is of the same kind; defaults otherwise.
    let from = match &src.settings {
        Some(settings) if kind_of(settings) == kind => settings.clone(),
        _ => empty_settings(kind),
    };
    let mut settings = match dst.settings.take() {
        Some(settings) if kind_of(&settings) == kind => settings,
        _ => empty_settings(kind),
    };
    let applied = match (&mut settings, &from) {
        (Settings::Application(d), Settings::Application(s)) => apply_application(d, s, rest),
        (Settings::Container(d), Settings::Container(s)) => apply_container(d, s, rest),
        (Settings::Database(d), Settings::Database(s)) => apply_database(d, s, rest),
        (Settings::CronJob(d), Settings::CronJob(s)) => apply_cron(d, s, rest),
        (Settings::LifecycleJob(d), Settings::LifecycleJob(s)) => apply_lifecycle(d, s, rest),
        (Settings::Helm(d), Settings::Helm(s)) => apply_helm(d, s, rest),
        _ => Err(BadPath),
    };
    dst.settings = Some(settings);
    applied
}

/// An empty settings block of `kind`.
fn empty_settings(kind: ServiceKind) -> Settings {
    match kind {
        ServiceKind::Application | ServiceKind::Unspecified => {
            Settings::Application(pb::ApplicationSettings::default())
        }
        ServiceKind::Container => Settings::Container(pb::ContainerSettings::default()),
        ServiceKind::Database => Settings::Database(pb::DatabaseSettings::default()),
        ServiceKind::CronJob => Settings::CronJob(pb::CronJobSettings::default()),
        ServiceKind::LifecycleJob => Settings::LifecycleJob(pb::LifecycleJobSettings::default()),
        ServiceKind::Helm => Settings::Helm(pb::HelmSettings::default()),
    }
}

/// Paths an update may never change.
const IMMUTABLE: &[&str] = &[
    "kind",
    "database.engine",
    "database.mode",
    "database.managed_provider",
];

/// Checks a mask's paths before anything is read: each names `name` or a field inside
/// some kind's block, and none is immutable. Which block is allowed depends on the stored
/// kind, checked by [`mask_paths_for_kind`] once the service is loaded.
fn check_mask_paths(paths: &[String], v: &mut Violations) {
    for (i, path) in paths.iter().enumerate() {
        let field = format!("update_mask.paths[{i}]");
        if IMMUTABLE.contains(&path.as_str()) {
            v.add(field, format!("`{path}` is immutable"));
            continue;
        }
        let segments: Vec<&str> = path.split('.').collect();
        let known = segments.first().is_some_and(|first| {
            *first == "name"
                || kind_of_block(first).is_some_and(|kind| {
                    let mut scratch = pb::Service::default();
                    apply_path(&mut scratch, &pb::Service::default(), kind, &segments).is_ok()
                })
        });
        if !known {
            v.add(
                field,
                format!(
                    "`{path}` is not a field an update may change: `name`, or a path inside the settings block of the service's kind"
                ),
            );
        }
    }
}

/// Refuses mask paths inside another kind's block than the service's.
fn mask_paths_for_kind(paths: &[String], kind: ServiceKind, v: &mut Violations) {
    for (i, path) in paths.iter().enumerate() {
        let first = path.split('.').next().unwrap_or_default();
        if let Some(other) = kind_of_block(first)
            && other != kind
        {
            v.add(
                format!("update_mask.paths[{i}]"),
                format!(
                    "`{path}` is a field of {} services; this service is {} and its kind cannot change",
                    subtype_of(other),
                    subtype_of(kind)
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// References and domains
// ---------------------------------------------------------------------------------------

/// The registries and git credentials a service names: (kind, id). The one list of where
/// a service points at them: creates and updates check these exist, and deleting a
/// registry or git credential refuses while one of these names it.
pub(crate) fn references(service: &pb::Service) -> Vec<(Kind, String)> {
    let mut found = Vec::new();
    let mut git = |git: &pb::GitSource| {
        if !git.git_credential_id.is_empty() {
            found.push((Kind::GitCredential, git.git_credential_id.clone()));
        }
    };
    let mut registries = Vec::new();
    match &service.settings {
        Some(Settings::Application(app)) => {
            if let Some(source) = &app.source {
                git(source);
            }
        }
        Some(Settings::CronJob(pb::CronJobSettings { source, .. }))
        | Some(Settings::LifecycleJob(pb::LifecycleJobSettings { source, .. })) => {
            match source.as_ref().and_then(|source| source.source.as_ref()) {
                Some(JobSourceKind::Git(source)) => git(source),
                Some(JobSourceKind::Image(image)) => registries.push(image.registry_id.clone()),
                None => {}
            }
        }
        Some(Settings::Container(container)) => {
            if let Some(source) = &container.source {
                registries.push(source.registry_id.clone());
            }
        }
        Some(Settings::Helm(helm)) => match &helm.chart_source {
            Some(ChartSource::Repository(repository)) => {
                registries.push(repository.registry_id.clone())
            }
            Some(ChartSource::Oci(oci)) => registries.push(oci.registry_id.clone()),
            Some(ChartSource::Git(source)) if !source.git_credential_id.is_empty() => {
                found.push((Kind::GitCredential, source.git_credential_id.clone()));
            }
            Some(ChartSource::Git(_)) | None => {}
        },
        Some(Settings::Database(_)) | None => {}
    }
    found.extend(
        registries
            .into_iter()
            .filter(|id| !id.is_empty())
            .map(|id| (Kind::Registry, id)),
    );
    found
}

/// The custom domains of a service.
fn domains(service: &pb::Service) -> Vec<String> {
    let runtime = match &service.settings {
        Some(Settings::Application(app)) => app.runtime.as_ref(),
        Some(Settings::Container(container)) => container.runtime.as_ref(),
        _ => None,
    };
    runtime
        .map(|runtime| {
            runtime
                .custom_domains
                .iter()
                .map(|domain| domain.domain.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn is_managed_database(service: &pb::Service) -> bool {
    matches!(
        &service.settings,
        Some(Settings::Database(database))
            if database.mode == i32::from(pb::DatabaseMode::Managed)
    )
}

impl Services {
    /// The scope of a service row (its environment's); NOT_FOUND for the service should
    /// the environment be gone, rather than naming the environment.
    async fn scope_of(&self, row: &Row) -> Result<Scope, ApiError> {
        self.ctx
            .scope_of_environment(&row.parent_id)
            .await
            .map_err(|error| match error {
                ApiError::NotFound { .. } => ApiError::not_found(Kind::Service.as_str(), &row.id),
                other => other,
            })
    }

    /// NOT_FOUND unless every registry and git credential `service` names (and `before`
    /// did not) is a row of that kind in `organization_id`.
    async fn check_references(
        &self,
        organization_id: &str,
        service: &pb::Service,
        before: Option<&pb::Service>,
    ) -> Result<(), ApiError> {
        let known = before.map(references).unwrap_or_default();
        for (kind, id) in references(service) {
            if known.contains(&(kind, id.clone())) {
                continue;
            }
            match self.ctx.store.get(kind, &id).await {
                Ok(row) if row.organization_id == organization_id => {}
                Ok(_) | Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(kind.as_str(), id));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    /// ALREADY_EXISTS when another service of the organization already routes one of
    /// `service`'s custom domains.
    ///
    /// `skip` is the service itself on update; on create it is the service of the same
    /// name in the same environment, which is either this very request repeated (the
    /// insert then answers with it) or a name conflict (the insert then refuses it).
    async fn check_domains(
        &self,
        organization_id: &str,
        service: &pb::Service,
        skip: impl Fn(&Row) -> bool,
    ) -> Result<(), ApiError> {
        let wanted = domains(service);
        if wanted.is_empty() {
            return Ok(());
        }
        for kind in [ServiceKind::Application, ServiceKind::Container] {
            let filter = Filter {
                organization_id: organization_id.to_owned(),
                subtype: Some(subtype_of(kind).to_owned()),
                ..Filter::default()
            };
            for row in self.ctx.store.list_all(Kind::Service, &filter).await? {
                if skip(&row) {
                    continue;
                }
                let other = pb::Service::from_row(&row)?;
                if let Some(taken) = domains(&other).into_iter().find(|d| wanted.contains(d)) {
                    return Err(ApiError::already_exists("custom domain", taken));
                }
            }
        }
        Ok(())
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateServiceRequest,
    ) -> Result<pb::Service, ApiError> {
        let service = request.service.unwrap_or_default();
        let mut v = Violations::new();
        v.required("environment_id", &request.environment_id);
        v.request_id(&request.request_id);
        validate_service(&service, &mut v);
        v.finish()?;
        let kind = service_kind(service.kind).unwrap_or(ServiceKind::Application);
        let environment = self
            .ctx
            .row(Kind::Environment, &request.environment_id)
            .await?;
        let scope = self.ctx.environment_scope(&environment)?;
        authorize(
            principal,
            Action::CatalogServicesWrite,
            &scope.resource().of_kind(ResourceKind::Service),
            Kind::Environment,
            &environment.id,
        )?;
        if is_managed_database(&service) {
            return Err(ApiError::Unimplemented(NO_MANAGED_PROVIDER.to_owned()));
        }
        let org = scope.organization_id.clone();
        self.check_references(&org, &service, None).await?;
        self.check_domains(&org, &service, |row| {
            row.parent_id == environment.id && row.name == service.name
        })
        .await?;
        let row = NewRow {
            id: new_id(),
            organization_id: org.clone(),
            parent_id: environment.id.clone(),
            name: service.name.clone(),
            subtype: subtype_of(kind).to_owned(),
            project_id: Some(scope.project_id.clone()),
            environment_id: Some(environment.id.clone()),
            spec: service.to_spec(),
            ..NewRow::default()
        };
        let key = request_key(&org, "CreateService", &request.request_id);
        let (row, created) = self.ctx.store.insert(Kind::Service, row, key).await?;
        let service = pb::Service::from_row(&row)?;
        if created {
            self.ctx
                .publish(
                    principal,
                    &org,
                    "service",
                    "created",
                    ev::event::Payload::ServiceCreated(ev::ServiceCreated {
                        service_id: row.id.clone(),
                        environment_id: service.environment_id.clone(),
                        project_id: service.project_id.clone(),
                        name: row.name.clone(),
                        kind: service.kind,
                    }),
                )
                .await;
        }
        Ok(service)
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::Service, ApiError> {
        require("id", id)?;
        let row = self.ctx.row(Kind::Service, id).await?;
        let scope = self.scope_of(&row).await?;
        authorize(
            principal,
            Action::CatalogServicesRead,
            &scope.resource().target(ResourceKind::Service, &row.id),
            Kind::Service,
            id,
        )?;
        pb::Service::from_row(&row)
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListServicesRequest,
    ) -> Result<pb::ListServicesResponse, ApiError> {
        let mut v = Violations::new();
        v.required("environment_id", &request.environment_id);
        let query = format!("services/{}/{}", request.environment_id, request.kind);
        let page = page_request(request.page_size, &request.page_token, &query, &mut v);
        let kind = match ServiceKind::try_from(request.kind) {
            Ok(ServiceKind::Unspecified) => None,
            Ok(kind) => Some(kind),
            Err(_) => {
                v.add("kind", "is not a service kind");
                None
            }
        };
        v.finish()?;
        let scope = self
            .ctx
            .scope_of_environment(&request.environment_id)
            .await?;
        // Every service of the environment shares its scope: one decision covers the page.
        authorize(
            principal,
            Action::CatalogServicesRead,
            &scope.resource().of_kind(ResourceKind::Service),
            Kind::Environment,
            &request.environment_id,
        )?;
        let filter = Filter {
            organization_id: scope.organization_id.clone(),
            parent_id: Some(request.environment_id.clone()),
            subtype: kind.map(|kind| subtype_of(kind).to_owned()),
            ..Filter::default()
        };
        let found = self
            .ctx
            .store
            .list_by(Kind::Service, &filter, &page)
            .await?;
        let services = found
            .rows
            .iter()
            .map(pb::Service::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(pb::ListServicesResponse {
            services,
            next_page_token: next_page_token(found.next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateServiceRequest,
    ) -> Result<pb::Service, ApiError> {
        let update = request.service.unwrap_or_default();
        let requested: Vec<String> = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        let mut v = Violations::new();
        v.required("service.id", &update.id);
        check_mask_paths(&requested, &mut v);
        v.finish()?;
        let row = self.ctx.row(Kind::Service, &update.id).await?;
        let scope = self.scope_of(&row).await?;
        authorize(
            principal,
            Action::CatalogServicesWrite,
            &scope.resource().target(ResourceKind::Service, &row.id),
            Kind::Service,
            &update.id,
        )?;
        let current = pb::Service::from_row(&row)?;
        let kind = service_kind(current.kind)
            .ok_or_else(|| ApiError::internal(BadRow(format!("service {} has no kind", row.id))))?;
        let mut v = Violations::new();
        if update.kind != 0 && update.kind != current.kind {
            v.add(
                "service.kind",
                format!(
                    "is immutable: this service is {}; create a new service instead",
                    subtype_of(kind)
                ),
            );
        }
        mask_paths_for_kind(&requested, kind, &mut v);
        v.finish()?;
        // An empty mask replaces everything an update may change.
        let paths = if requested.is_empty() {
            vec!["name".to_owned(), block_of(kind).to_owned()]
        } else {
            requested
        };
        let mut merged = current.clone();
        for (i, path) in paths.iter().enumerate() {
            let segments: Vec<&str> = path.split('.').collect();
            if apply_path(&mut merged, &update, kind, &segments).is_err() {
                return Err(ApiError::invalid_field(
                    format!("update_mask.paths[{i}]"),
                    format!("`{path}` is not a field an update may change"),
                ));
            }
        }
        let mut v = Violations::new();
        validate_service(&merged, &mut v);
        check_immutable(&current, &merged, &mut v);
        v.finish()?;
        let org = row.organization_id.clone();
        self.check_references(&org, &merged, Some(&current)).await?;
        self.check_domains(&org, &merged, |other| other.id == row.id)
            .await?;
        let changes = RowChanges {
            name: Some(merged.name.clone()),
            spec: Some(merged.to_spec()),
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::Service, &row.id, etag, changes)
            .await?;
        let service = pb::Service::from_row(&row)?;
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "service",
                "updated",
                ev::event::Payload::ServiceUpdated(ev::ServiceUpdated {
                    service_id: row.id.clone(),
                    environment_id: service.environment_id.clone(),
                    project_id: service.project_id.clone(),
                    name: row.name.clone(),
                    kind: service.kind,
                    update_mask: Some(prost_types::FieldMask { paths }),
                }),
            )
            .await;
        Ok(service)
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteServiceRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let row = self.ctx.row(Kind::Service, &request.id).await?;
        let scope = self.scope_of(&row).await?;
        authorize(
            principal,
            Action::CatalogServicesWrite,
            &scope.resource().target(ResourceKind::Service, &row.id),
            Kind::Service,
            &request.id,
        )?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        // Its service-scoped variables go with it, as the contract says.
        self.ctx
            .store
            .delete(Kind::Service, &row.id, etag, Children::Delete)
            .await?;
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "service",
                "deleted",
                ev::event::Payload::ServiceDeleted(ev::ServiceDeleted {
                    service_id: row.id.clone(),
                    environment_id: row.parent_id.clone(),
                    project_id: scope.project_id.clone(),
                }),
            )
            .await;
        Ok(())
    }
}

/// A stored service that cannot be read back: a bug or a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("unreadable service: {0}")]
struct BadRow(String);

/// What an update may not change even through a whole block: a database's engine, mode
/// and provider; its version only goes up and its volume only grows.
fn check_immutable(current: &pb::Service, merged: &pb::Service, v: &mut Violations) {
    let (Some(Settings::Database(before)), Some(Settings::Database(after))) =
        (&current.settings, &merged.settings)
    else {
        return;
    };
    let p = "service.database";
    if before.engine != after.engine {
        v.add(format!("{p}.engine"), "is immutable");
    }
    if before.mode != after.mode {
        v.add(format!("{p}.mode"), "is immutable");
    }
    if before.managed_provider != after.managed_provider {
        v.add(format!("{p}.managed_provider"), "is immutable");
    }
    if let (Some(old), Some(new)) = (
        parse_version(&before.version),
        parse_version(&after.version),
    ) && new < old
    {
        v.add(
            format!("{p}.version"),
            format!("may only be upgraded: it is {} now", before.version),
        );
    }
    let size = |gib: u32| if gib == 0 { 10 } else { gib };
    if size(after.storage_gib) < size(before.storage_gib) {
        v.add(
            format!("{p}.storage_gib"),
            format!("may only grow: it is {} GiB now", size(before.storage_gib)),
        );
    }
}

#[tonic::async_trait]
impl ServiceService for Services {
    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::CreateServiceResponse>, Status> {
        let principal = caller(&request)?;
        let service = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateServiceResponse {
            service: Some(service),
        }))
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        let principal = caller(&request)?;
        let service = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetServiceResponse {
            service: Some(service),
        }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::UpdateServiceResponse>, Status> {
        let principal = caller(&request)?;
        let service = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateServiceResponse {
            service: Some(service),
        }))
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteServiceResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_urls_images_tags_and_versions() {
        for good in [
            "https://github.com/acme/api",
            "https://github.com/acme/api.git",
            "ssh://git@github.com/acme/api.git",
            "git@github.com:acme/api.git",
            "https://git.example.com:8443/group/sub/repo.git",
            "file:///tmp/repo",
            "file:///home/dev/src/app.git",
        ] {
            assert_eq!(git_url_problem(good), None, "{good}");
        }
        for bad in [
            "github.com/acme/api",
            "http://github.com/acme/api",
            "https://github.com",
            "https://user:pw@github.com/acme/api",
            "file://tmp/repo",
            "file:///",
            "file:///tmp/../etc",
            "git@:acme/api",
        ] {
            assert!(git_url_problem(bad).is_some(), "{bad}");
        }
        for good in [
            "nginx",
            "library/nginx",
            "ghcr.io/acme/api",
            "localhost:5000/api",
        ] {
            assert_eq!(image_problem(good), None, "{good}");
        }
        for bad in [
            "nginx:1.25",
            "Team/API",
            "a//b",
            "ghcr.io/acme/api@sha256:00",
        ] {
            assert!(image_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(tag_problem("1.25-alpine"), None);
        assert_eq!(tag_problem(&format!("sha256:{}", "a".repeat(64))), None);
        assert!(tag_problem("sha256:xyz").is_some());
        assert!(tag_problem("-bad").is_some());
        assert!(is_semver("1.2.3") && is_semver("v0.1.0-rc.1+b5"));
        assert!(!is_semver("^1.2") && !is_semver("1.x") && !is_semver("1.2"));
        assert_eq!(parse_version("16"), Some((16, 0)));
        assert_eq!(parse_version("8.0"), Some((8, 0)));
        assert_eq!(parse_version("8.0.1"), None);
        assert_eq!(domain_problem("api.example.com"), None);
        for bad in [
            "*.example.com",
            "API.example.com",
            "localhost",
            "1.2.3.4",
            "a..b",
        ] {
            assert!(domain_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn values_files_must_be_mappings() {
        for good in [
            "",
            "# only a comment\n",
            "replicas: 2\nimage:\n  tag: x\n",
            "---\na: 1\n",
            "{a: 1}",
        ] {
            assert_eq!(yaml_mapping_problem(good), None, "{good:?}");
        }
        for bad in [
            "- a\n- b\n",
            "just a string",
            "a: 1\n\tb: 2\n",
            "a: 1\n---\nb: 2\n",
        ] {
            assert!(yaml_mapping_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn mask_paths_reach_inside_blocks_and_oneofs() {
        let mut v = Violations::new();
        check_mask_paths(
            &[
                "name".into(),
                "application.source.branch".into(),
                "cron_job.source.git.branch".into(),
                "helm.oci.reference".into(),
                "container.runtime.liveness_probe.period".into(),
            ],
            &mut v,
        );
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        check_mask_paths(
            &[
                "kind".into(),
                "database.engine".into(),
                "application.nope".into(),
                "application.source.branch.x".into(),
                "container.runtime.ports.internal_port".into(),
            ],
            &mut v,
        );
        for i in 0..5 {
            assert!(v.has(&format!("update_mask.paths[{i}]")), "{i}");
        }

        let stored = pb::Service {
            kind: ServiceKind::CronJob.into(),
            settings: Some(Settings::CronJob(pb::CronJobSettings {
                schedule: "@daily".into(),
                source: Some(pb::JobSource {
                    source: Some(JobSourceKind::Image(pb::ImageSource {
                        image: "nginx".into(),
                        tag: "1".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let update = pb::Service {
            settings: Some(Settings::CronJob(pb::CronJobSettings {
                schedule: "0 3 * * *".into(),
                source: Some(pb::JobSource {
                    source: Some(JobSourceKind::Image(pb::ImageSource {
                        tag: "2".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut merged = stored.clone();
        for path in ["cron_job.schedule", "cron_job.source.image.tag"] {
            let segments: Vec<&str> = path.split('.').collect();
            assert!(apply_path(&mut merged, &update, ServiceKind::CronJob, &segments).is_ok());
        }
        let Some(Settings::CronJob(job)) = &merged.settings else {
            panic!("kind changed");
        };
        assert_eq!(job.schedule, "0 3 * * *");
        let Some(JobSourceKind::Image(image)) = job.source.as_ref().and_then(|s| s.source.as_ref())
        else {
            panic!("source changed");
        };
        assert_eq!((image.image.as_str(), image.tag.as_str()), ("nginx", "2"));
    }
}
