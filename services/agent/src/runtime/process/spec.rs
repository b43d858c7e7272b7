//! What a workload spec means for a local process: the checks that decide whether the
//! process runtime accepts a command, and the preparation (directories, files, program
//! lookup) that turns a spec into a [`LaunchPlan`].
//!
//! Directory layout under the runtime's state directory:
//!
//! ```text
//! <state_dir>/<namespace>/                  one per environment (`Command.namespace`)
//! <state_dir>/<namespace>/<workload name>/
//!     work/    working directory when the program has no artifact directory
//!     root/    absolute file mount paths, re-rooted: `/etc/app/x.yaml` → `root/etc/app/x.yaml`
//!     data/    a database's data directory when `data_path` is empty
//! ```
//!
//! File mounts with a relative path are written relative to the process working directory,
//! as the proto says (the artifact directory, or `work/`). A process cannot see an absolute
//! mount at its absolute path (there is no container filesystem), so absolute mounts are
//! re-rooted under `root/`; a program must be told where to look (an argument or variable
//! naming the re-rooted path).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use slipway_proto::agent::v1 as pb;

use crate::runtime::{CommandFailure, Unsupported};

/// Variables of the agent's own environment a workload inherits. Everything else is
/// dropped so the agent's settings (its token among them) never leak into workloads.
const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TZ",
];

/// Whether `name` is a DNS label: it becomes a directory name, so anything else (`..`, `/`)
/// is refused before it can reach the filesystem.
pub(super) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A relative path that stays below its base (no `..`, no root).
fn is_contained(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
        && path.components().next().is_some()
}

/// The `Unsupported` checks of [`crate::runtime::Runtime::check`] for the process runtime.
pub(super) fn check(command: &pb::Command) -> Result<(), Unsupported> {
    let operation = pb::CommandOperation::try_from(command.operation)
        .unwrap_or(pb::CommandOperation::Unspecified);
    if operation == pb::CommandOperation::Unspecified {
        return Err(Unsupported("the command has no operation".into()));
    }
    if !is_dns_label(&command.namespace) {
        return Err(Unsupported(format!(
            "namespace {:?} is not a dns label",
            command.namespace
        )));
    }
    for workload in &command.workloads {
        if !is_dns_label(&workload.name) {
            return Err(Unsupported(format!(
                "workload name {:?} is not a dns label",
                workload.name
            )));
        }
        check_workload(operation, workload)
            .map_err(|Unsupported(why)| Unsupported(format!("{}: {why}", workload.name)))?;
    }
    Ok(())
}

fn check_workload(
    operation: pb::CommandOperation,
    workload: &pb::WorkloadSpec,
) -> Result<(), Unsupported> {
    use pb::workload_spec::Settings;
    let needs_settings = matches!(
        operation,
        pb::CommandOperation::Apply | pb::CommandOperation::RunJob
    );
    match (&workload.settings, operation) {
        (Some(Settings::Helm(_)), _) if needs_settings => Err(Unsupported(
            "helm releases need the kubernetes runtime".into(),
        )),
        (None, _) if needs_settings => Err(Unsupported("the workload has no settings".into())),
        (Some(Settings::CronJob(_)), pb::CommandOperation::Apply) => Err(Unsupported(
            "cron schedules are not run by the process runtime; use run_job to run one now".into(),
        )),
        (Some(Settings::Application(_) | Settings::Database(_)), pb::CommandOperation::RunJob) => {
            Err(Unsupported(
                "run_job takes job and cron job workloads only".into(),
            ))
        }
        (Some(settings), _) if needs_settings => program_of(settings)
            .map_or(Ok(()), check_program)
            .and_then(|()| match settings {
                Settings::Database(db) if db.data_path.contains("..") => {
                    Err(Unsupported("data_path may not contain `..`".into()))
                }
                _ => Ok(()),
            }),
        _ => Ok(()),
    }
}

fn program_of(settings: &pb::workload_spec::Settings) -> Option<&pb::Program> {
    use pb::workload_spec::Settings;
    match settings {
        Settings::Application(app) => app.program.as_ref(),
        Settings::Database(db) => db.program.as_ref(),
        Settings::CronJob(cron) => cron.program.as_ref(),
        Settings::Job(job) => job.program.as_ref(),
        Settings::Helm(_) => None,
    }
}

fn check_program(program: &pb::Program) -> Result<(), Unsupported> {
    match &program.artifact {
        // The service's local run command (catalog's `RuntimeSettings.command`, "run by the
        // local process runtime instead of a container") stands in for the image here.
        Some(pb::program::Artifact::Image(_)) if program.command.is_empty() => {
            return Err(Unsupported(
                "a container image runs on the kubernetes runtime only; give the service a \
                 local run command (runtime.command) to run it as a process"
                    .into(),
            ));
        }
        Some(pb::program::Artifact::Image(_)) => {}
        None => return Err(Unsupported("program.local is required".into())),
        Some(pb::program::Artifact::Local(local)) => {
            if !local.path.is_empty() && !Path::new(&local.path).is_absolute() {
                return Err(Unsupported(
                    "the local artifact path must be absolute".into(),
                ));
            }
        }
    }
    if program.command.first().is_none_or(String::is_empty) {
        return Err(Unsupported("program.command is required".into()));
    }
    if program.working_dir.contains("..") {
        return Err(Unsupported("working_dir may not contain `..`".into()));
    }
    for var in &program.env {
        if !is_env_name(&var.name) {
            return Err(Unsupported(format!(
                "{:?} is not a variable name",
                var.name
            )));
        }
    }
    for file in &program.files {
        let path = Path::new(&file.path);
        let relative = path.strip_prefix("/").unwrap_or(path);
        if !is_contained(relative) {
            return Err(Unsupported(format!(
                "file path {:?} must be absolute or relative, without `..`",
                file.path
            )));
        }
    }
    Ok(())
}

/// A declared port of a workload, as the program is told about it.
#[derive(Clone, Debug)]
pub(super) struct PortDecl {
    /// `PORT_<NAME>` suffix: the port name (or `p<port>`), upper-cased, `-` → `_`.
    pub env_suffix: String,
    pub port: u16,
}

/// One health check, with the proto's defaults filled in.
#[derive(Clone, Debug)]
pub(super) struct ProbeSpec {
    pub check: CheckSpec,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

#[derive(Clone, Debug)]
pub(super) enum CheckSpec {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
    Exec { argv: Vec<String> },
}

/// Everything needed to start instances of a workload; built once per applied revision.
#[derive(Clone, Debug)]
pub(super) struct LaunchPlan {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub working_dir: PathBuf,
    /// Inherited allowlist, then the spec's variables (the `PORT…` variables are added per
    /// instance, and win over the spec's: they carry the instance's actual ports).
    pub env: Vec<(String, String)>,
    pub ports: Vec<PortDecl>,
    pub instances: u32,
    pub startup: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
}

impl LaunchPlan {
    /// The program's display name, for messages.
    pub fn program_name(&self) -> String {
        self.program.display().to_string()
    }
}

fn duration(value: Option<&prost_types::Duration>, default: Duration) -> Duration {
    value
        .and_then(|d| Duration::try_from(*d).ok())
        .unwrap_or(default)
}

fn port_u16(port: u32) -> Result<u16, CommandFailure> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(format!("port {port} is out of range")))
}

fn invalid(message: impl Into<String>) -> CommandFailure {
    CommandFailure::new(pb::FailureReason::InvalidSpec, message)
}

fn runtime_error(message: impl Into<String>) -> CommandFailure {
    CommandFailure::new(pb::FailureReason::RuntimeError, message)
}

fn probe_spec(probe: Option<&pb::Probe>) -> Result<Option<ProbeSpec>, CommandFailure> {
    let Some(probe) = probe else { return Ok(None) };
    let check = match &probe.check {
        Some(pb::probe::Check::Http(http)) => CheckSpec::Http {
            path: if http.path.starts_with('/') {
                http.path.clone()
            } else {
                format!("/{}", http.path)
            },
            port: port_u16(http.port)?,
        },
        Some(pb::probe::Check::Tcp(tcp)) => CheckSpec::Tcp {
            port: port_u16(tcp.port)?,
        },
        Some(pb::probe::Check::Exec(exec)) if !exec.command.is_empty() => CheckSpec::Exec {
            argv: exec.command.clone(),
        },
        _ => return Err(invalid("a probe has no check")),
    };
    Ok(Some(ProbeSpec {
        check,
        initial_delay: duration(probe.initial_delay.as_ref(), Duration::ZERO),
        period: duration(probe.period.as_ref(), Duration::from_secs(10)),
        timeout: duration(probe.timeout.as_ref(), Duration::from_secs(1)),
        failure_threshold: if probe.failure_threshold == 0 {
            3
        } else {
            probe.failure_threshold
        },
    }))
}

/// The engine's default port when a database sets none.
fn default_db_port(engine: i32) -> u32 {
    match pb::DatabaseEngine::try_from(engine) {
        Ok(pb::DatabaseEngine::Mysql) => 3306,
        Ok(pb::DatabaseEngine::Mongodb) => 27017,
        Ok(pb::DatabaseEngine::Redis) => 6379,
        _ => 5432,
    }
}

/// The directory of one workload.
pub(super) fn workload_dir(env_dir: &Path, name: &str) -> PathBuf {
    env_dir.join(name)
}

/// Re-roots an absolute path under the workload's `root/`; joins a relative one to `base`.
fn place(workload_dir: &Path, base: &Path, path: &str) -> PathBuf {
    match Path::new(path).strip_prefix("/") {
        Ok(relative) => workload_dir.join("root").join(relative),
        Err(_) => base.join(path),
    }
}

/// Prepares `spec` to run under `env_dir`: creates the directories, writes the files, finds
/// the program. Runs on every apply of a new revision (files carry the revision's values).
pub(super) async fn prepare(
    env_dir: &Path,
    spec: &pb::WorkloadSpec,
) -> Result<LaunchPlan, CommandFailure> {
    use pb::workload_spec::Settings;
    let dir = workload_dir(env_dir, &spec.name);
    let (program, ports, instances, probes, data_path) = match &spec.settings {
        Some(Settings::Application(app)) => {
            let ports = app
                .ports
                .iter()
                .map(|p| {
                    let name = if p.name.is_empty() {
                        format!("p{}", p.internal_port)
                    } else {
                        p.name.clone()
                    };
                    Ok(PortDecl {
                        env_suffix: name.to_ascii_uppercase().replace('-', "_"),
                        port: port_u16(p.internal_port)?,
                    })
                })
                .collect::<Result<Vec<_>, CommandFailure>>()?;
            let instances = app.replicas.as_ref().map_or(1, |r| r.min.max(1));
            (
                app.program.as_ref(),
                ports,
                instances,
                app.probes.clone(),
                None,
            )
        }
        Some(Settings::Database(db)) => {
            let port = port_u16(if db.port == 0 {
                default_db_port(db.engine)
            } else {
                db.port
            })?;
            // A database is ready when it accepts connections, unless told otherwise.
            let probes = db.program.as_ref().map(|_| pb::Probes {
                readiness: Some(pb::Probe {
                    check: Some(pb::probe::Check::Tcp(pb::TcpCheck {
                        port: u32::from(port),
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let decl = PortDecl {
                env_suffix: "DB".into(),
                port,
            };
            (
                db.program.as_ref(),
                vec![decl],
                1,
                probes,
                Some(db.data_path.clone()),
            )
        }
        Some(Settings::Job(job)) => (job.program.as_ref(), Vec::new(), 1, None, None),
        Some(Settings::CronJob(cron)) => (cron.program.as_ref(), Vec::new(), 1, None, None),
        Some(Settings::Helm(_)) | None => {
            return Err(invalid("the workload has nothing to run as a process"));
        }
    };
    let program = program.ok_or_else(|| invalid("the workload has no program"))?;
    let artifact_dir = match &program.artifact {
        Some(pb::program::Artifact::Local(local)) if !local.path.is_empty() => {
            let path = PathBuf::from(&local.path);
            if !tokio::fs::metadata(&path)
                .await
                .is_ok_and(|meta| meta.is_dir())
            {
                return Err(invalid(format!(
                    "artifact directory {} does not exist",
                    path.display()
                )));
            }
            Some(path)
        }
        // An image with a local run command runs that command from PATH (checked above).
        Some(pb::program::Artifact::Local(_) | pb::program::Artifact::Image(_)) => None,
        None => return Err(invalid("the process runtime runs local artifacts only")),
    };
    let base = artifact_dir.clone().unwrap_or_else(|| dir.join("work"));
    let working_dir = if program.working_dir.is_empty() {
        base.clone()
    } else {
        base.join(&program.working_dir)
    };
    create_dir(&working_dir).await?;
    if let Some(data_path) = data_path {
        let data_dir = if data_path.is_empty() {
            dir.join("data")
        } else {
            place(&dir, &working_dir, &data_path)
        };
        create_dir(&data_dir).await?;
    }
    for file in &program.files {
        write_file(&place(&dir, &working_dir, &file.path), file).await?;
    }

    let (first, rest) = program
        .command
        .split_first()
        .ok_or_else(|| invalid("program.command is required"))?;
    // A relative program is looked up in the artifact directory, then on PATH.
    let program_path = match &artifact_dir {
        Some(artifact) if Path::new(first).is_relative() => {
            let candidate = artifact.join(first);
            if tokio::fs::metadata(&candidate)
                .await
                .is_ok_and(|meta| meta.is_file())
            {
                candidate
            } else {
                PathBuf::from(first)
            }
        }
        _ => PathBuf::from(first),
    };
    let mut args = rest.to_vec();
    args.extend(program.args.iter().cloned());

    let mut env: Vec<(String, String)> = INHERITED_ENV
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect();
    let spec_env: HashMap<&str, &str> = program
        .env
        .iter()
        .map(|var| (var.name.as_str(), var.value.as_str()))
        .collect();
    env.retain(|(name, _)| !spec_env.contains_key(name.as_str()));
    env.extend(
        program
            .env
            .iter()
            .map(|var| (var.name.clone(), var.value.clone())),
    );

    let probes = probes.unwrap_or_default();
    Ok(LaunchPlan {
        program: program_path,
        args,
        working_dir,
        env,
        ports,
        instances,
        startup: probe_spec(probes.startup.as_ref())?,
        readiness: probe_spec(probes.readiness.as_ref())?,
        liveness: probe_spec(probes.liveness.as_ref())?,
    })
}

async fn create_dir(path: &Path) -> Result<(), CommandFailure> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|e| runtime_error(format!("cannot create {}: {e}", path.display())))
}

/// Writes a file mount with its mode: into a temporary file created with the final mode,
/// then renamed, so a secret is never readable by others even for a moment.
async fn write_file(path: &Path, file: &pb::FileMount) -> Result<(), CommandFailure> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = match (file.mode, file.is_secret) {
        (0, true) => 0o600,
        (0, false) => 0o644,
        (mode, _) => mode & 0o7777,
    };
    let parent = path.parent().unwrap_or(path);
    create_dir(parent).await?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{name}.slipway-tmp"));
    let fail = |e: std::io::Error| runtime_error(format!("cannot write {}: {e}", path.display()));
    let _ = tokio::fs::remove_file(&temp).await;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut out = options.open(&temp).await.map_err(fail)?;
    tokio::io::AsyncWriteExt::write_all(&mut out, &file.content)
        .await
        .map_err(fail)?;
    drop(out);
    tokio::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(fail)?;
    tokio::fs::rename(&temp, path).await.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_keep_paths_out() {
        assert!(is_dns_label("api-1"));
        assert!(!is_dns_label(".."));
        assert!(!is_dns_label("a/b"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("-a"));
    }

    #[test]
    fn absolute_mounts_are_rerooted() {
        let dir = Path::new("/state/env/api");
        assert_eq!(
            place(dir, Path::new("/art"), "/etc/app.yaml"),
            PathBuf::from("/state/env/api/root/etc/app.yaml")
        );
        assert_eq!(
            place(dir, Path::new("/art"), "conf/app.yaml"),
            PathBuf::from("/art/conf/app.yaml")
        );
        assert!(!is_contained(Path::new("../x")));
        assert!(is_contained(Path::new("a/b")));
    }
}
