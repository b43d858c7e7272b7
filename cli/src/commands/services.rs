//! Services of every kind. One set of flags describes them all; each kind reads the flags
//! that fit it, and `create` guesses the kind from them when `--kind` is not given.

use prost_types::FieldMask;
use slipway_proto::catalog::v1::{self as cpb, service::Settings};
use slipway_proto::common::v1::ServiceKind;
use tonic::Request;

use crate::app::{App, list_services};
use crate::commands::identity::deleted;
use crate::errors::UserError;
use crate::output::{self, age, label, or_dash, time};

pub const SERVICE_EXAMPLES: &str = "Examples:
  # an application built from git, run with a command, ready when GET / answers:
  slipway service create hello --git-url /src/hello --branch main --port 8080 \\
      --http-probe / -- python3 app.py
  # a container image:
  slipway service create web --image nginx --tag 1.27 --port 80:8080/http --public \\
      --cpu 250 --memory 256 --instances 2
  slipway service create db --engine postgresql --engine-version 16 --storage-gib 10
  slipway service create nightly --schedule \"0 3 * * *\" --timezone Europe/Paris \\
      --image alpine --tag 3 -- sh -c 'echo hi'
  slipway service create migrate --on start --git-url https://git.example.com/app.git \\
      --timeout 5m -- ./migrate
  slipway service create grafana --chart-repo https://grafana.github.io/helm-charts \\
      --chart grafana --chart-version 8.0.0 --values values.yaml
  slipway service list
  slipway service update web --tag 1.28
  slipway service delete web";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Application,
    Container,
    Database,
    CronJob,
    LifecycleJob,
    Helm,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EngineArg {
    Postgresql,
    Mysql,
    Redis,
    Mongodb,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EventArg {
    Start,
    Stop,
    Delete,
}

/// What a service is: the flags of every kind (each kind reads its own).
#[derive(Debug, Default, clap::Args)]
pub struct ServiceSpec {
    /// Git repository to build from (application; jobs; a local path works with
    /// `slipway dev`).
    #[arg(long, help_heading = "Git source")]
    git_url: Option<String>,
    /// Branch to build (default: the repository's default branch).
    #[arg(long, help_heading = "Git source")]
    branch: Option<String>,
    /// Directory of the service inside the repository.
    #[arg(long, help_heading = "Git source")]
    root: Option<String>,
    /// Dockerfile path, relative to --root.
    #[arg(long, help_heading = "Git source")]
    dockerfile: Option<String>,
    /// Build command for builds without a Dockerfile.
    #[arg(long, help_heading = "Git source")]
    build_command: Option<String>,

    /// Container image (container; jobs).
    #[arg(long, help_heading = "Image source")]
    image: Option<String>,
    /// Image tag.
    #[arg(long, help_heading = "Image source")]
    tag: Option<String>,

    /// Database engine.
    #[arg(long, value_enum, help_heading = "Database")]
    engine: Option<EngineArg>,
    /// Engine version, e.g. 16.
    #[arg(long, help_heading = "Database")]
    engine_version: Option<String>,
    /// Storage size in GiB.
    #[arg(long, help_heading = "Database")]
    storage_gib: Option<u32>,

    /// Cron schedule (five fields), e.g. "0 3 * * *" (cron job).
    #[arg(long, help_heading = "Jobs")]
    schedule: Option<String>,
    /// IANA time zone of the schedule (default UTC).
    #[arg(long, help_heading = "Jobs")]
    timezone: Option<String>,
    /// Environment events a lifecycle job runs on (comma-separated).
    #[arg(long = "on", value_enum, value_delimiter = ',', help_heading = "Jobs")]
    on: Vec<EventArg>,
    /// Lifecycle job time limit (e.g. 5m).
    #[arg(long, help_heading = "Jobs")]
    timeout: Option<String>,
    /// Lifecycle job retries after a failure.
    #[arg(long, help_heading = "Jobs")]
    max_retries: Option<u32>,

    /// Helm chart repository URL.
    #[arg(long, help_heading = "Helm")]
    chart_repo: Option<String>,
    /// Helm chart OCI reference (oci://…).
    #[arg(long, help_heading = "Helm")]
    chart_oci: Option<String>,
    /// Git repository holding the chart.
    #[arg(long, help_heading = "Helm")]
    chart_git: Option<String>,
    /// Chart directory in --chart-git.
    #[arg(long, help_heading = "Helm")]
    chart_path: Option<String>,
    /// Chart name in the repository.
    #[arg(long, help_heading = "Helm")]
    chart: Option<String>,
    /// Chart version.
    #[arg(long, help_heading = "Helm")]
    chart_version: Option<String>,
    /// Values file (YAML) to install with.
    #[arg(long, value_name = "FILE", help_heading = "Helm")]
    values: Option<std::path::PathBuf>,

    /// Port the service listens on: INTERNAL[:EXTERNAL][/http|http2|grpc|tcp|udp];
    /// repeat for several. Replaces the ports on update.
    #[arg(long = "port", value_name = "PORT", help_heading = "Runtime")]
    ports: Vec<String>,
    /// Expose the ports outside the cluster.
    #[arg(long, help_heading = "Runtime")]
    public: bool,
    /// CPU in millicores (1000 = one core).
    #[arg(long, value_name = "MILLICORES", help_heading = "Runtime")]
    cpu: Option<u32>,
    /// Memory in MiB.
    #[arg(long, value_name = "MIB", help_heading = "Runtime")]
    memory: Option<u32>,
    /// Number of instances (sets min and max).
    #[arg(long, help_heading = "Runtime")]
    instances: Option<u32>,
    /// Maximum instances when autoscaling (after --instances).
    #[arg(long, help_heading = "Runtime")]
    max_instances: Option<u32>,
    /// Ready when an HTTP GET of this path on the first port answers 2xx/3xx.
    #[arg(long, value_name = "PATH", help_heading = "Runtime")]
    http_probe: Option<String>,
    /// The command to run, after `--` (for jobs: the job's command; otherwise it replaces
    /// the image's entrypoint, or says how to run a local build).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

const SERVICE_CREATE_HELP: &str = "The kind is guessed from the flags when --kind is not given: --engine → database, \
--schedule → cron-job, --on → lifecycle-job, --chart* → helm, --image → container, --git-url → application.";

#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Creates a service in the environment.
    #[command(after_help = SERVICE_EXAMPLES, long_about = SERVICE_CREATE_HELP)]
    Create {
        name: String,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        #[command(flatten)]
        spec: Box<ServiceSpec>,
    },
    /// Lists the environment's services.
    #[command(after_help = SERVICE_EXAMPLES)]
    List {
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    /// Shows one service (name or id).
    #[command(after_help = SERVICE_EXAMPLES)]
    Get { service: String },
    /// Changes a service: the flags given replace those settings, the rest is kept.
    #[command(after_help = SERVICE_EXAMPLES)]
    Update {
        service: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        spec: Box<ServiceSpec>,
    },
    /// Deletes a service from the catalog (`slipway delete --service` removes what runs).
    #[command(after_help = SERVICE_EXAMPLES)]
    Delete { service: String },
}

impl KindArg {
    fn proto(self) -> ServiceKind {
        match self {
            Self::Application => ServiceKind::Application,
            Self::Container => ServiceKind::Container,
            Self::Database => ServiceKind::Database,
            Self::CronJob => ServiceKind::CronJob,
            Self::LifecycleJob => ServiceKind::LifecycleJob,
            Self::Helm => ServiceKind::Helm,
        }
    }
}

impl ServiceSpec {
    fn guess_kind(&self) -> Option<KindArg> {
        if self.engine.is_some() {
            Some(KindArg::Database)
        } else if self.schedule.is_some() {
            Some(KindArg::CronJob)
        } else if !self.on.is_empty() {
            Some(KindArg::LifecycleJob)
        } else if self.chart_repo.is_some() || self.chart_oci.is_some() || self.chart_git.is_some()
        {
            Some(KindArg::Helm)
        } else if self.image.is_some() {
            Some(KindArg::Container)
        } else if self.git_url.is_some() {
            Some(KindArg::Application)
        } else {
            None
        }
    }

    fn apply_git(&self, git: &mut cpb::GitSource) {
        set(
            &mut git.repository_url,
            &self.git_url.as_deref().map(clone_url),
        );
        set(&mut git.branch, &self.branch);
        set(&mut git.root_path, &self.root);
        set(&mut git.dockerfile_path, &self.dockerfile);
        set(&mut git.build_command, &self.build_command);
    }

    fn apply_image(&self, image: &mut cpb::ImageSource) {
        set(&mut image.image, &self.image);
        set(&mut image.tag, &self.tag);
    }

    fn apply_job_source(&self, source: &mut Option<cpb::JobSource>) {
        use cpb::job_source::Source;
        let current = source.get_or_insert_with(Default::default);
        if self.git_url.is_some() {
            let mut git = match current.source.take() {
                Some(Source::Git(git)) => git,
                _ => cpb::GitSource::default(),
            };
            self.apply_git(&mut git);
            current.source = Some(Source::Git(git));
        } else if self.image.is_some() || self.tag.is_some() {
            let mut image = match current.source.take() {
                Some(Source::Image(image)) => image,
                _ => cpb::ImageSource::default(),
            };
            self.apply_image(&mut image);
            current.source = Some(Source::Image(image));
        } else if let Some(Source::Git(git)) = &mut current.source {
            self.apply_git(git);
        }
    }

    /// Runtime flags onto `runtime`; `with_command` when the trailing command belongs
    /// here (not to a job).
    fn apply_runtime(
        &self,
        runtime: &mut Option<cpb::RuntimeSettings>,
        with_command: bool,
    ) -> anyhow::Result<()> {
        let runtime = runtime.get_or_insert_with(Default::default);
        if !self.ports.is_empty() {
            runtime.ports = self
                .ports
                .iter()
                .map(|spec| parse_port(spec, self.public))
                .collect::<anyhow::Result<_>>()?;
        } else if self.public {
            for port in &mut runtime.ports {
                port.public = true;
            }
        }
        if let Some(cpu) = self.cpu {
            runtime.cpu_millicores = cpu;
        }
        if let Some(memory) = self.memory {
            runtime.memory_mib = memory;
        }
        if let Some(instances) = self.instances {
            runtime.min_instances = instances;
            runtime.max_instances = instances;
        }
        if let Some(max) = self.max_instances {
            runtime.max_instances = max;
        }
        if let Some(path) = &self.http_probe {
            let port = runtime
                .ports
                .first()
                .map(|p| p.internal_port)
                .ok_or_else(|| {
                    UserError::hinted("--http-probe needs a port", "pass --port PORT too")
                })?;
            runtime.readiness_probe = Some(cpb::Probe {
                r#type: cpb::ProbeType::Http.into(),
                path: path.clone(),
                port,
                period: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            });
        }
        if with_command && !self.command.is_empty() {
            runtime.command.clone_from(&self.command);
        }
        Ok(())
    }

    /// The flags onto `settings` (a block of `kind`, new or read).
    fn apply(&self, settings: &mut Settings) -> anyhow::Result<()> {
        match settings {
            Settings::Application(app) => {
                self.apply_git(app.source.get_or_insert_with(Default::default));
                self.apply_runtime(&mut app.runtime, true)?;
            }
            Settings::Container(container) => {
                self.apply_image(container.source.get_or_insert_with(Default::default));
                self.apply_runtime(&mut container.runtime, true)?;
            }
            Settings::Database(db) => {
                if let Some(engine) = self.engine {
                    db.engine = match engine {
                        EngineArg::Postgresql => cpb::DatabaseEngine::Postgresql,
                        EngineArg::Mysql => cpb::DatabaseEngine::Mysql,
                        EngineArg::Redis => cpb::DatabaseEngine::Redis,
                        EngineArg::Mongodb => cpb::DatabaseEngine::Mongodb,
                    }
                    .into();
                }
                if db.mode == 0 {
                    db.mode = cpb::DatabaseMode::Container.into();
                }
                set(&mut db.version, &self.engine_version);
                if let Some(storage) = self.storage_gib {
                    db.storage_gib = storage;
                }
                self.apply_runtime(&mut db.runtime, true)?;
            }
            Settings::CronJob(cron) => {
                set(&mut cron.schedule, &self.schedule);
                set(&mut cron.timezone, &self.timezone);
                self.apply_job_source(&mut cron.source);
                if !self.command.is_empty() {
                    cron.command.clone_from(&self.command);
                }
                self.apply_runtime(&mut cron.runtime, false)?;
            }
            Settings::LifecycleJob(job) => {
                if !self.on.is_empty() {
                    job.events = self
                        .on
                        .iter()
                        .map(|event| {
                            i32::from(match event {
                                EventArg::Start => cpb::LifecycleJobEvent::Start,
                                EventArg::Stop => cpb::LifecycleJobEvent::Stop,
                                EventArg::Delete => cpb::LifecycleJobEvent::Delete,
                            })
                        })
                        .collect();
                }
                self.apply_job_source(&mut job.source);
                if !self.command.is_empty() {
                    job.command.clone_from(&self.command);
                }
                if let Some(timeout) = &self.timeout {
                    job.timeout = Some(crate::time::duration(timeout)?);
                }
                if let Some(retries) = self.max_retries {
                    job.max_retries = retries;
                }
                self.apply_runtime(&mut job.runtime, false)?;
            }
            Settings::Helm(helm) => {
                use cpb::helm_settings::ChartSource;
                if let Some(url) = &self.chart_repo {
                    helm.chart_source = Some(ChartSource::Repository(cpb::HelmRepositorySource {
                        url: url.clone(),
                        registry_id: String::new(),
                    }));
                } else if let Some(reference) = &self.chart_oci {
                    helm.chart_source = Some(ChartSource::Oci(cpb::HelmOciSource {
                        reference: reference.clone(),
                        registry_id: String::new(),
                    }));
                } else if let Some(url) = &self.chart_git {
                    helm.chart_source = Some(ChartSource::Git(cpb::HelmGitSource {
                        repository_url: url.clone(),
                        branch: self.branch.clone().unwrap_or_default(),
                        chart_path: self.chart_path.clone().unwrap_or_default(),
                        git_credential_id: String::new(),
                    }));
                }
                set(&mut helm.chart_name, &self.chart);
                set(&mut helm.chart_version, &self.chart_version);
                if let Some(path) = &self.values {
                    helm.values_yaml = std::fs::read_to_string(path).map_err(|error| {
                        UserError::plain(format!("cannot read {}: {error}", path.display()))
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// A local directory becomes a `file://` URL, so `--git-url ./hello` works with
/// `slipway dev` (which builds on this machine); anything else is sent as typed.
fn clone_url(url: &str) -> String {
    let scp_like = url.contains('@') && url.contains(':');
    if url.contains("://") || scp_like {
        return url.to_owned();
    }
    match std::fs::canonicalize(url) {
        Ok(path) if path.is_dir() => format!("file://{}", path.display()),
        _ => url.to_owned(),
    }
}

fn set(target: &mut String, value: &Option<String>) {
    if let Some(value) = value {
        target.clone_from(value);
    }
}

/// `8080`, `8080:80`, `8080/grpc`, `8080:443/http2`.
fn parse_port(spec: &str, public: bool) -> anyhow::Result<cpb::Port> {
    let bad = || {
        UserError::hinted(
            format!("{spec:?} is not a port"),
            "write INTERNAL[:EXTERNAL][/PROTOCOL], e.g. 8080 or 8080:80/http",
        )
    };
    let (ports, protocol) = match spec.split_once('/') {
        Some((ports, protocol)) => (ports, Some(protocol)),
        None => (spec, None),
    };
    let (internal, external) = match ports.split_once(':') {
        Some((internal, external)) => (internal, Some(external)),
        None => (ports, None),
    };
    let internal: u32 = internal.trim().parse().map_err(|_| bad())?;
    let external: u32 = match external {
        Some(external) => external.trim().parse().map_err(|_| bad())?,
        None => 0,
    };
    let protocol = match protocol.map(str::to_ascii_lowercase).as_deref() {
        None => cpb::PortProtocol::Unspecified,
        Some("http") => cpb::PortProtocol::Http,
        Some("http2") => cpb::PortProtocol::Http2,
        Some("grpc") => cpb::PortProtocol::Grpc,
        Some("tcp") => cpb::PortProtocol::Tcp,
        Some("udp") => cpb::PortProtocol::Udp,
        Some(_) => return Err(bad().into()),
    };
    Ok(cpb::Port {
        internal_port: internal,
        external_port: external,
        protocol: protocol.into(),
        public,
    })
}

fn empty_settings(kind: KindArg) -> Settings {
    match kind {
        KindArg::Application => Settings::Application(Default::default()),
        KindArg::Container => Settings::Container(Default::default()),
        KindArg::Database => Settings::Database(Default::default()),
        KindArg::CronJob => Settings::CronJob(Default::default()),
        KindArg::LifecycleJob => Settings::LifecycleJob(Default::default()),
        KindArg::Helm => Settings::Helm(Default::default()),
    }
}

fn kind_of(settings: &Settings) -> (KindArg, &'static str) {
    match settings {
        Settings::Application(_) => (KindArg::Application, "application"),
        Settings::Container(_) => (KindArg::Container, "container"),
        Settings::Database(_) => (KindArg::Database, "database"),
        Settings::CronJob(_) => (KindArg::CronJob, "cron_job"),
        Settings::LifecycleJob(_) => (KindArg::LifecycleJob, "lifecycle_job"),
        Settings::Helm(_) => (KindArg::Helm, "helm"),
    }
}

fn git_summary(git: Option<&cpb::GitSource>) -> String {
    match git {
        Some(git) if git.branch.is_empty() => git.repository_url.clone(),
        Some(git) => format!("{}@{}", git.repository_url, git.branch),
        None => "-".to_owned(),
    }
}

fn image_summary(image: Option<&cpb::ImageSource>) -> String {
    match image {
        Some(image) if image.tag.is_empty() => image.image.clone(),
        Some(image) => format!("{}:{}", image.image, image.tag),
        None => "-".to_owned(),
    }
}

fn job_summary(source: Option<&cpb::JobSource>) -> String {
    match source.and_then(|s| s.source.as_ref()) {
        Some(cpb::job_source::Source::Git(git)) => git_summary(Some(git)),
        Some(cpb::job_source::Source::Image(image)) => image_summary(Some(image)),
        None => "-".to_owned(),
    }
}

/// Where a service comes from, in one cell.
fn source_summary(service: &cpb::Service) -> String {
    match &service.settings {
        Some(Settings::Application(app)) => git_summary(app.source.as_ref()),
        Some(Settings::Container(container)) => image_summary(container.source.as_ref()),
        Some(Settings::Database(db)) => {
            format!(
                "{} {}",
                label!(cpb::DatabaseEngine, db.engine).to_lowercase(),
                db.version
            )
        }
        Some(Settings::CronJob(cron)) => {
            format!("{} ({})", job_summary(cron.source.as_ref()), cron.schedule)
        }
        Some(Settings::LifecycleJob(job)) => job_summary(job.source.as_ref()),
        Some(Settings::Helm(helm)) => format!("{} {}", helm.chart_name, helm.chart_version),
        None => "-".to_owned(),
    }
}

fn runtime_of(service: &cpb::Service) -> Option<&cpb::RuntimeSettings> {
    match &service.settings {
        Some(Settings::Application(app)) => app.runtime.as_ref(),
        Some(Settings::Container(container)) => container.runtime.as_ref(),
        Some(Settings::Database(db)) => db.runtime.as_ref(),
        Some(Settings::CronJob(cron)) => cron.runtime.as_ref(),
        Some(Settings::LifecycleJob(job)) => job.runtime.as_ref(),
        _ => None,
    }
}

fn ports_summary(service: &cpb::Service) -> String {
    let ports: Vec<String> = runtime_of(service)
        .map(|r| r.ports.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let mut text = p.internal_port.to_string();
            if p.external_port != 0 {
                text.push_str(&format!(":{}", p.external_port));
            }
            if p.public {
                text.push_str(" public");
            }
            text
        })
        .collect();
    if ports.is_empty() {
        "-".to_owned()
    } else {
        ports.join(", ")
    }
}

fn service_fields(s: &cpb::Service) -> Vec<(&'static str, String)> {
    let runtime = runtime_of(s).cloned().unwrap_or_default();
    let mut fields = vec![
        ("id", s.id.clone()),
        ("name", s.name.clone()),
        ("kind", label!(ServiceKind, s.kind)),
        ("source", source_summary(s)),
        ("ports", ports_summary(s)),
    ];
    if runtime.cpu_millicores != 0 || runtime.memory_mib != 0 {
        fields.push((
            "resources",
            format!(
                "{}m cpu, {} MiB",
                runtime.cpu_millicores, runtime.memory_mib
            ),
        ));
    }
    if runtime.max_instances != 0 {
        fields.push((
            "instances",
            format!("{}..{}", runtime.min_instances, runtime.max_instances),
        ));
    }
    let command = match &s.settings {
        Some(Settings::CronJob(cron)) => cron.command.join(" "),
        Some(Settings::LifecycleJob(job)) => job.command.join(" "),
        _ => runtime.command.join(" "),
    };
    fields.push(("command", or_dash(&command)));
    fields.push(("environment", s.environment_id.clone()));
    fields.push(("created", time(s.create_time.as_ref())));
    fields.push(("updated", time(s.update_time.as_ref())));
    fields
}

pub async fn service(app: &App, command: ServiceCommand) -> anyhow::Result<()> {
    let client = app.client()?;
    let format = app.format;
    match command {
        ServiceCommand::Create { name, kind, spec } => {
            let kind = kind.or_else(|| spec.guess_kind()).ok_or_else(|| {
                UserError::hinted(
                    "what kind of service is it?",
                    "pass --kind, or a source: --git-url, --image, --engine, --schedule, --on or --chart-repo",
                )
            })?;
            let mut settings = empty_settings(kind);
            spec.apply(&mut settings)?;
            let environment_id = app.environment_id(&client).await?;
            let created = client
                .services()
                .create_service(Request::new(cpb::CreateServiceRequest {
                    environment_id,
                    service: Some(cpb::Service {
                        name,
                        kind: kind.proto().into(),
                        settings: Some(settings),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                }))
                .await?
                .into_inner()
                .service
                .unwrap_or_default();
            output::one(format, &created, &service_fields(&created))
        }
        ServiceCommand::List { kind } => {
            let environment_id = app.environment_id(&client).await?;
            let mut services = list_services(&client, &environment_id).await?;
            if let Some(kind) = kind {
                let wanted = i32::from(kind.proto());
                services.retain(|s| s.kind == wanted);
            }
            output::list(
                format,
                &services,
                "services",
                &["NAME", "KIND", "SOURCE", "PORTS", "ID", "AGE"],
                |s| {
                    vec![
                        s.name.clone(),
                        label!(ServiceKind, s.kind),
                        source_summary(s),
                        ports_summary(s),
                        s.id.clone(),
                        age(s.create_time.as_ref()),
                    ]
                },
            )
        }
        ServiceCommand::Get { service } => {
            let found = app.service(&client, &service).await?;
            output::one(format, &found, &service_fields(&found))
        }
        ServiceCommand::Update {
            service,
            name,
            spec,
        } => {
            let mut found = app.service(&client, &service).await?;
            let mut paths = Vec::new();
            if let Some(name) = name {
                found.name = name;
                paths.push("name".to_owned());
            }
            let before = found.settings.clone();
            if let Some(mut settings) = found.settings.take() {
                let (kind, block) = kind_of(&settings);
                spec.apply(&mut settings)?;
                if Some(&settings) != before.as_ref() {
                    if kind == KindArg::Database {
                        // Engine and mode are immutable: name what may change.
                        for path in ["version", "storage_gib", "runtime"] {
                            paths.push(format!("database.{path}"));
                        }
                    } else {
                        paths.push(block.to_owned());
                    }
                }
                found.settings = Some(settings);
            }
            crate::commands::identity::nothing_to_update(
                &paths,
                "--name or a setting flag (see --help)",
            )?;
            let updated = client
                .services()
                .update_service(Request::new(cpb::UpdateServiceRequest {
                    service: Some(found),
                    update_mask: Some(FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .service
                .unwrap_or_default();
            output::one(format, &updated, &service_fields(&updated))
        }
        ServiceCommand::Delete { service } => {
            let found = app.service(&client, &service).await?;
            client
                .services()
                .delete_service(Request::new(cpb::DeleteServiceRequest {
                    id: found.id,
                    etag: String::new(),
                }))
                .await?;
            deleted(format, "service", &found.name);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_internal_external_and_protocol() {
        let port = parse_port("8080:80/grpc", true).ok();
        assert_eq!(
            port,
            Some(cpb::Port {
                internal_port: 8080,
                external_port: 80,
                protocol: cpb::PortProtocol::Grpc.into(),
                public: true,
            })
        );
        assert_eq!(
            parse_port("9000", false).ok().map(|p| p.internal_port),
            Some(9000)
        );
        assert!(parse_port("http", false).is_err());
        assert!(parse_port("80/smtp", false).is_err());
    }
}
