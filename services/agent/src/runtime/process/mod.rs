//! The process runtime: runs workloads as local processes supervised by the agent, for
//! `slipway dev` (everything in one process) and the end-to-end tests.
//!
//! Each environment (`Command.namespace`) gets a directory under the state directory, each
//! workload one under it (layout in [`spec`]). An application or database runs as
//! `replicas.min` (at least 1) processes named `<name>-<n>`; instance 0 listens on the
//! declared ports, and instances 1… get free ports picked by the runtime (processes share
//! the host, so they cannot all bind the same port). Every instance is told its ports:
//! `PORT` is the first, `PORT_<NAME>` each one (name upper-cased, `-` → `_`, unnamed ports
//! are `p<port>`); these override variables of the same name from the spec. A program
//! that binds the declared port regardless fails on instances 1… — run one instance, or
//! read `PORT`. Probes of instance n check its own ports.
//!
//! A new revision (and `RESTART`) stops every instance, then starts the new ones: not a
//! rolling update, since instance 0 of the new revision needs the same port. An `APPLY` of
//! the revision already running leaves the processes alone.
//!
//! Not done here: cron schedules (an `APPLY` of a cron job is rejected; `RUN_JOB` runs one
//! now), resource limits, and readmitting processes after an agent restart (the state is
//! in memory, and the processes died with the agent).

mod instance;
mod ops;
mod output;
mod probe;
mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use slipway_proto::agent::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::instance::{StateCell, WorkloadState};
use self::spec::LaunchPlan;
use super::{BoxFuture, CommandFailure, Runtime, RuntimeEvent, RuntimeEvents, Unsupported};

/// Timings of the process runtime. The defaults suit a developer's machine; tests shorten
/// them.
#[derive(Clone, Debug)]
pub struct ProcessSettings {
    /// Without a readiness probe, an instance is ready once it has run this long.
    pub ready_grace: Duration,
    /// Time between `SIGTERM` and `SIGKILL` when stopping.
    pub stop_grace: Duration,
    /// First wait before restarting an exited instance; doubles per quick exit.
    pub restart_backoff: Duration,
    /// Longest wait before a restart.
    pub max_restart_backoff: Duration,
    /// Quick exits in a row that make a crash loop (the rollout fails with
    /// `FAILURE_REASON_CRASH_LOOP`; the instance keeps being restarted).
    pub crash_loop_restarts: u32,
    /// An exit within this time of the start is a quick exit; running longer clears the
    /// count.
    pub crash_window: Duration,
    /// Longest time between probe checks until a probe first passes.
    pub probe_poll: Duration,
    /// Wait before retrying a failed job attempt.
    pub job_retry_backoff: Duration,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        Self {
            ready_grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(10),
            restart_backoff: Duration::from_millis(500),
            max_restart_backoff: Duration::from_secs(30),
            crash_loop_restarts: 3,
            crash_window: Duration::from_secs(10),
            probe_poll: Duration::from_millis(250),
            job_retry_backoff: Duration::from_secs(1),
        }
    }
}

/// What supervisors and log readers share with the runtime.
pub(crate) struct Shared {
    settings: ProcessSettings,
    /// Where events outside a command go (crash statuses, output of running processes):
    /// the `events` sender of the latest command, or the one given to
    /// [`ProcessRuntime::attach`].
    sink: Mutex<Option<RuntimeEvents>>,
}

impl Shared {
    fn emit(&self, event: RuntimeEvent) {
        let sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = sink.as_ref() {
            // A closed channel means nobody listens right now; the event is not needed
            // later (statuses are resent in full after each `Welcome`).
            let _ = sink.send(event);
        }
    }
}

/// Identity of a workload: its environment directory and name.
type Key = (String, String);

/// A running (or stopped, or finished) workload.
struct Workload {
    cell: Arc<StateCell>,
    /// Serializes operations on the workload and holds its instances.
    run: tokio::sync::Mutex<RunState>,
}

#[derive(Default)]
struct RunState {
    /// The workload name: instances are `<name>-<n>`.
    name: String,
    revision: String,
    plan: Option<Arc<LaunchPlan>>,
    ids: output::LogIds,
    instances: Vec<InstanceHandle>,
}

struct InstanceHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs workloads as local processes. Dropping it kills every process it started.
pub struct ProcessRuntime {
    state_dir: PathBuf,
    shared: Arc<Shared>,
    workloads: Mutex<HashMap<Key, Arc<Workload>>>,
}

impl ProcessRuntime {
    /// A runtime keeping environment directories under `state_dir` (created when needed),
    /// with the default timings.
    pub fn new(state_dir: PathBuf) -> Self {
        Self::with_settings(state_dir, ProcessSettings::default())
    }

    /// A runtime with the given timings.
    pub fn with_settings(state_dir: PathBuf, settings: ProcessSettings) -> Self {
        Self {
            state_dir,
            shared: Arc::new(Shared {
                settings,
                sink: Mutex::new(None),
            }),
            workloads: Mutex::new(HashMap::new()),
        }
    }

    /// Where events outside any command (a crash, output of running processes) are sent
    /// until the next command replaces it. `execute` also sets it: the session's channel
    /// then receives them without calling this.
    pub fn attach(&self, events: RuntimeEvents) {
        *self
            .shared
            .sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(events);
    }

    /// The directory of environment `namespace`.
    pub fn environment_dir(&self, namespace: &str) -> PathBuf {
        self.state_dir.join(namespace)
    }

    /// Stops every process gracefully (`SIGTERM`, then `SIGKILL` after the stop grace),
    /// for an orderly agent shutdown. Dropping the runtime kills them at once instead.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Workload>> = self.lock_map().values().cloned().collect();
        futures::future::join_all(all.iter().map(|w| async move {
            let mut run = w.run.lock().await;
            ops::stop_instances(w, &mut run).await;
        }))
        .await;
    }

    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Workload>>> {
        self.workloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<Workload>> {
        self.lock_map()
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The workload, created (stopped) when new.
    fn entry(&self, command: &pb::Command, spec: &pb::WorkloadSpec) -> Arc<Workload> {
        let key = (command.namespace.clone(), spec.name.clone());
        self.lock_map()
            .entry(key)
            .or_insert_with(|| {
                let state = WorkloadState {
                    environment_id: command.environment_id.clone(),
                    service_id: spec.service_id.clone(),
                    ..Default::default()
                };
                Arc::new(Workload {
                    cell: Arc::new(StateCell {
                        tx: watch::channel(state).0,
                        shared: self.shared.clone(),
                    }),
                    run: tokio::sync::Mutex::new(RunState::default()),
                })
            })
            .clone()
    }

    fn remove(&self, namespace: &str, name: &str) {
        self.lock_map()
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn names_in(&self, namespace: &str) -> Vec<String> {
        self.lock_map()
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, name)| name.clone())
            .collect()
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        // Aborting a supervisor drops its child (`kill_on_drop`) and its group guard.
        for workload in self.lock_map().values() {
            if let Ok(run) = workload.run.try_lock() {
                for handle in &run.instances {
                    handle.task.abort();
                }
            }
        }
    }
}

/// The command's deadline: its timeout, else 10 minutes, else (jobs) the longest job
/// timeout.
fn command_timeout(command: &pb::Command) -> Duration {
    if let Some(timeout) = command.timeout.and_then(|t| Duration::try_from(t).ok()) {
        return timeout;
    }
    if command.operation == pb::CommandOperation::RunJob as i32 {
        return command
            .workloads
            .iter()
            .map(ops::job_timeout)
            .max()
            .unwrap_or(ops::DEFAULT_JOB_TIMEOUT);
    }
    Duration::from_secs(600)
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> pb::RuntimeKind {
        pb::RuntimeKind::Process
    }

    fn version(&self) -> BoxFuture<'_, String> {
        Box::pin(async {
            let uname = tokio::process::Command::new("uname")
                .args(["-sr"])
                .output()
                .await
                .ok()
                .filter(|out| out.status.success())
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
            uname.unwrap_or_else(|| std::env::consts::OS.to_owned())
        })
    }

    fn check(&self, command: &pb::Command) -> Result<(), Unsupported> {
        spec::check(command)
    }

    fn execute<'a>(
        &'a self,
        command: &'a pb::Command,
        events: RuntimeEvents,
    ) -> BoxFuture<'a, Result<(), CommandFailure>> {
        Box::pin(async move {
            spec::check(command)
                .map_err(|e| CommandFailure::new(pb::FailureReason::InvalidSpec, e.0))?;
            self.attach(events.clone());
            let deadline = tokio::time::Instant::now() + command_timeout(command);
            let operation = pb::CommandOperation::try_from(command.operation)
                .unwrap_or(pb::CommandOperation::Unspecified);
            let results = futures::future::join_all(command.workloads.iter().map(|spec| {
                let steps = ops::Steps {
                    events: events.clone(),
                    service_id: spec.service_id.clone(),
                };
                ops::run(self, command, operation, spec, steps, deadline)
            }))
            .await;
            if command.delete_namespace && operation == pb::CommandOperation::Delete {
                ops::delete_namespace(self, command).await?;
            }
            let failures: Vec<(String, CommandFailure)> = command
                .workloads
                .iter()
                .zip(results)
                .filter_map(|(spec, result)| result.err().map(|e| (spec.name.clone(), e)))
                .collect();
            match failures.as_slice() {
                [] => Ok(()),
                [(name, failure)] => Err(CommandFailure::new(
                    failure.reason,
                    instance::truncate(&format!("{name}: {}", failure.message), 1024),
                )),
                [(_, first), ..] => {
                    let all: Vec<String> = failures
                        .iter()
                        .map(|(name, f)| format!("{name}: {}", f.message))
                        .collect();
                    Err(CommandFailure::new(
                        first.reason,
                        instance::truncate(
                            &format!("{} workloads failed: {}", failures.len(), all.join("; ")),
                            1024,
                        ),
                    ))
                }
            }
        })
    }

    fn workloads(&self) -> BoxFuture<'_, Result<Vec<pb::WorkloadStatus>, CommandFailure>> {
        Box::pin(async {
            let all: Vec<Arc<Workload>> = self.lock_map().values().cloned().collect();
            Ok(all.iter().map(|w| w.cell.tx.borrow().to_status()).collect())
        })
    }
}

/// Now, as a proto timestamp.
fn now() -> Option<prost_types::Timestamp> {
    Some(SystemTime::now().into())
}
