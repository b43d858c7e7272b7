//! The operations of a command on one workload: apply, stop, restart, delete, run a job.
//! Each reports its steps (`apply`, `rollout`, `scale_down`, `restart`, `delete`,
//! `run_job`) and returns how it ended; the command's result is built from them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_proto::agent::v1 as pb;
use tokio::sync::watch;
use tokio::time::Instant;

use super::instance::{self, InstanceCtx, WorkloadState};
use super::output::LogIds;
use super::spec::{self, LaunchPlan};
use super::{InstanceHandle, ProcessRuntime, RunState, Workload, now};
use crate::runtime::{CommandFailure, RuntimeEvent, RuntimeEvents};

/// A job's timeout when its policy sets none.
pub(super) const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reports the steps of one workload of a command.
pub(super) struct Steps {
    pub events: RuntimeEvents,
    pub service_id: String,
}

impl Steps {
    fn send(
        &self,
        step: &str,
        status: pb::StepStatus,
        message: impl Into<String>,
        state: pb::RuntimeState,
        reason: Option<pb::FailureReason>,
    ) {
        let _ = self.events.send(RuntimeEvent::Step(pb::StepReport {
            service_id: self.service_id.clone(),
            step: step.to_owned(),
            status: status as i32,
            message: instance::truncate(&message.into(), 1024),
            runtime_state: state as i32,
            failure_reason: reason.map_or(0, |r| r as i32),
            time: now(),
            ..Default::default()
        }));
    }

    fn started(&self, step: &str, message: impl Into<String>, state: pb::RuntimeState) {
        self.send(step, pb::StepStatus::Started, message, state, None);
    }

    fn progress(&self, step: &str, message: impl Into<String>, state: pb::RuntimeState) {
        self.send(step, pb::StepStatus::Progress, message, state, None);
    }

    fn succeeded(&self, step: &str, message: impl Into<String>, state: pb::RuntimeState) {
        self.send(step, pb::StepStatus::Succeeded, message, state, None);
    }

    /// Reports the failure and hands it back, for `return Err(steps.failed(…))`.
    fn failed(
        &self,
        step: &str,
        failure: CommandFailure,
        state: pb::RuntimeState,
    ) -> CommandFailure {
        self.send(
            step,
            pb::StepStatus::Failed,
            failure.message.clone(),
            state,
            Some(failure.reason),
        );
        failure
    }
}

/// `JobPolicy.timeout` of a job or cron job workload, or the default.
pub(super) fn job_timeout(spec: &pb::WorkloadSpec) -> Duration {
    use pb::workload_spec::Settings;
    let policy = match &spec.settings {
        Some(Settings::Job(job)) => job.policy.as_ref(),
        Some(Settings::CronJob(cron)) => cron.policy.as_ref(),
        _ => None,
    };
    policy
        .and_then(|p| p.timeout)
        .and_then(|t| Duration::try_from(t).ok())
        .unwrap_or(DEFAULT_JOB_TIMEOUT)
}

fn job_retries(spec: &pb::WorkloadSpec) -> u32 {
    use pb::workload_spec::Settings;
    let policy = match &spec.settings {
        Some(Settings::Job(job)) => job.policy.as_ref(),
        Some(Settings::CronJob(cron)) => cron.policy.as_ref(),
        _ => None,
    };
    policy.map_or(0, |p| p.retries.min(10))
}

fn is_job(spec: &pb::WorkloadSpec) -> bool {
    use pb::workload_spec::Settings;
    matches!(spec.settings, Some(Settings::Job(_) | Settings::CronJob(_)))
}

/// Runs `operation` on one workload.
pub(super) async fn run(
    rt: &ProcessRuntime,
    command: &pb::Command,
    operation: pb::CommandOperation,
    spec: &pb::WorkloadSpec,
    steps: Steps,
    deadline: Instant,
) -> Result<(), CommandFailure> {
    match operation {
        pb::CommandOperation::Apply => apply(rt, command, spec, &steps, deadline).await,
        pb::CommandOperation::Stop => stop(rt, command, spec, &steps).await,
        pb::CommandOperation::Restart => restart(rt, command, spec, &steps, deadline).await,
        pb::CommandOperation::Delete => delete(rt, command, spec, &steps).await,
        pb::CommandOperation::RunJob => run_job(rt, command, spec, &steps, deadline).await,
        pb::CommandOperation::Unspecified => Err(CommandFailure::new(
            pb::FailureReason::InvalidSpec,
            "the command has no operation",
        )),
    }
}

fn current_state(workload: &Workload) -> pb::RuntimeState {
    workload.cell.tx.borrow().runtime_state()
}

async fn apply(
    rt: &ProcessRuntime,
    command: &pb::Command,
    spec: &pb::WorkloadSpec,
    steps: &Steps,
    deadline: Instant,
) -> Result<(), CommandFailure> {
    if is_job(spec) {
        steps.succeeded(
            "apply",
            "job workloads run with run_job: nothing to apply",
            pb::RuntimeState::Stopped,
        );
        return Ok(());
    }
    let workload = rt.entry(command, spec);
    let generation = {
        let mut run = workload.run.lock().await;
        steps.started("apply", "", pb::RuntimeState::Starting);
        if run.revision == spec.revision && !run.instances.is_empty() {
            steps.succeeded(
                "apply",
                "revision unchanged: left running",
                current_state(&workload),
            );
        } else {
            let plan = match spec::prepare(&rt.environment_dir(&command.namespace), spec).await {
                Ok(plan) => Arc::new(plan),
                Err(failure) => {
                    return Err(steps.failed("apply", failure, pb::RuntimeState::Error));
                }
            };
            stop_instances(&workload, &mut run).await;
            run.revision = spec.revision.clone();
            run.name = spec.name.clone();
            run.ids = LogIds::from_command(command, &spec.service_id, false);
            run.plan = Some(plan.clone());
            if let Err(failure) = start_instances(&workload, &mut run, &plan) {
                return Err(steps.failed("apply", failure, pb::RuntimeState::Error));
            }
            steps.succeeded(
                "apply",
                format!(
                    "started {} instances of {}",
                    plan.instances,
                    plan.program_name()
                ),
                pb::RuntimeState::Starting,
            );
        }
        workload.cell.tx.borrow().generation
    };
    wait_ready(&workload, generation, steps, "rollout", deadline).await
}

/// Picks a free port on the loopback interface (bound, then released for the program).
fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()
        .map(|a| a.port())
}

/// Starts the plan's instances under a new generation.
fn start_instances(
    workload: &Workload,
    run: &mut RunState,
    plan: &Arc<LaunchPlan>,
) -> Result<(), CommandFailure> {
    let count = plan.instances;
    let mut all_ports = Vec::new();
    for index in 0..count {
        let ports = plan
            .ports
            .iter()
            .map(|decl| {
                if index == 0 {
                    Ok((decl.port, decl.port))
                } else {
                    free_port().map(|p| (decl.port, p))
                }
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| {
                CommandFailure::new(
                    pb::FailureReason::RuntimeError,
                    format!("no free port for an instance: {e}"),
                )
            })?;
        all_ports.push(ports);
    }
    let names: Vec<String> = (0..count).map(|n| format!("{}-{n}", run.name)).collect();
    let revision = run.revision.clone();
    workload.cell.update(|state| {
        state.generation += 1;
        state.desired = count;
        state.stopping = false;
        state.job_state = None;
        state.message.clear();
        state.revision = revision;
        state.instances = names
            .iter()
            .map(|name| instance::InstanceState {
                name: name.clone(),
                ..Default::default()
            })
            .collect();
    });
    for (index, (name, ports)) in names.into_iter().zip(all_ports).enumerate() {
        let (stop, stop_rx) = watch::channel(false);
        let ctx = InstanceCtx {
            index,
            name,
            plan: plan.clone(),
            ports,
            ids: run.ids.clone(),
            cell: workload.cell.clone(),
        };
        let task = tokio::spawn(instance::supervise(ctx, stop_rx));
        run.instances.push(InstanceHandle { stop, task });
    }
    Ok(())
}

/// Stops every instance (gracefully, in parallel) and waits until they are gone.
pub(super) async fn stop_instances(workload: &Workload, run: &mut RunState) {
    if run.instances.is_empty() {
        return;
    }
    workload.cell.update(|state| state.stopping = true);
    for handle in &run.instances {
        let _ = handle.stop.send(true);
    }
    for handle in run.instances.drain(..) {
        let _ = handle.task.await;
    }
    workload.cell.update(|state| {
        state.stopping = false;
        state.desired = 0;
        state.instances.clear();
    });
}

/// Waits until every instance of `generation` is ready, reporting progress as `step`.
async fn wait_ready(
    workload: &Workload,
    generation: u64,
    steps: &Steps,
    step: &str,
    deadline: Instant,
) -> Result<(), CommandFailure> {
    let mut rx = workload.cell.tx.subscribe();
    let desired = rx.borrow().desired;
    steps.started(
        step,
        format!("{}/{desired} instances ready", rx.borrow().ready_count()),
        pb::RuntimeState::Starting,
    );
    let mut last_ready = None;
    loop {
        let verdict = {
            let state = rx.borrow_and_update();
            judge(&state, generation, &mut last_ready, steps, step)
        };
        if let Some(verdict) = verdict {
            return verdict;
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    let failure = CommandFailure::new(pb::FailureReason::Internal, "the workload went away");
                    return Err(steps.failed(step, failure, pb::RuntimeState::Error));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let state = rx.borrow().clone();
                let waited = format!("{}/{} instances ready", state.ready_count(), state.desired);
                let detail = state.to_status().message;
                let failing = state.instances.iter().any(|i| i.alive && i.probe_failing);
                let failure = if failing {
                    CommandFailure::new(pb::FailureReason::ProbeFailed, format!("{waited}: {detail}"))
                } else {
                    CommandFailure::new(pb::FailureReason::Timeout, format!("timed out with {waited}: {detail}"))
                };
                return Err(steps.failed(step, failure, state.runtime_state()));
            }
        }
    }
}

/// Whether the rollout is over (ready, crash loop, superseded), reporting progress.
fn judge(
    state: &WorkloadState,
    generation: u64,
    last_ready: &mut Option<u32>,
    steps: &Steps,
    step: &str,
) -> Option<Result<(), CommandFailure>> {
    if state.generation != generation || state.desired == 0 {
        let failure = CommandFailure::new(
            pb::FailureReason::RuntimeError,
            "the workload was stopped or replaced during its rollout",
        );
        return Some(Err(steps.failed(step, failure, state.runtime_state())));
    }
    let ready = state.ready_count();
    if ready >= state.desired {
        steps.succeeded(
            step,
            format!("{ready}/{} instances ready", state.desired),
            pb::RuntimeState::Running,
        );
        return Some(Ok(()));
    }
    if let Some(looping) = state.instances.iter().find(|i| i.crash_looping) {
        let failure = CommandFailure::new(
            pb::FailureReason::CrashLoop,
            format!(
                "{} keeps exiting ({} restarts): {}",
                looping.name, looping.restart_count, looping.message
            ),
        );
        return Some(Err(steps.failed(step, failure, pb::RuntimeState::Error)));
    }
    if last_ready.is_some_and(|last| last != ready) {
        steps.progress(
            step,
            format!("{ready}/{} instances ready", state.desired),
            pb::RuntimeState::Starting,
        );
    }
    *last_ready = Some(ready);
    None
}

async fn stop(
    rt: &ProcessRuntime,
    command: &pb::Command,
    spec: &pb::WorkloadSpec,
    steps: &Steps,
) -> Result<(), CommandFailure> {
    let Some(workload) = rt.get(&command.namespace, &spec.name) else {
        steps.succeeded("scale_down", "not running", pb::RuntimeState::Stopped);
        return Ok(());
    };
    let mut run = workload.run.lock().await;
    steps.started("scale_down", "", pb::RuntimeState::Stopping);
    stop_instances(&workload, &mut run).await;
    steps.succeeded("scale_down", "no instance runs", pb::RuntimeState::Stopped);
    Ok(())
}

async fn restart(
    rt: &ProcessRuntime,
    command: &pb::Command,
    spec: &pb::WorkloadSpec,
    steps: &Steps,
    deadline: Instant,
) -> Result<(), CommandFailure> {
    let workload = rt.get(&command.namespace, &spec.name);
    let generation = match &workload {
        None => None,
        Some(workload) => {
            let mut run = workload.run.lock().await;
            match run.plan.clone() {
                Some(plan) if !run.instances.is_empty() => {
                    steps.started("restart", "", pb::RuntimeState::Stopping);
                    stop_instances(workload, &mut run).await;
                    if let Err(failure) = start_instances(workload, &mut run, &plan) {
                        return Err(steps.failed("restart", failure, pb::RuntimeState::Error));
                    }
                    steps.succeeded("restart", "processes restarted", pb::RuntimeState::Starting);
                    Some(workload.cell.tx.borrow().generation)
                }
                _ => None,
            }
        }
    };
    match (workload, generation) {
        (Some(workload), Some(generation)) => {
            wait_ready(&workload, generation, steps, "rollout", deadline).await
        }
        _ => {
            steps.succeeded(
                "restart",
                "not running: nothing to restart",
                pb::RuntimeState::Stopped,
            );
            Ok(())
        }
    }
}

async fn remove_dir(path: &std::path::Path) -> Result<(), CommandFailure> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CommandFailure::new(
            pb::FailureReason::RuntimeError,
            format!("cannot remove {}: {e}", path.display()),
        )),
    }
}

/// A status saying the workload is gone.
fn deleted_status(command: &pb::Command, service_id: &str, revision: String) -> pb::WorkloadStatus {
    pb::WorkloadStatus {
        environment_id: command.environment_id.clone(),
        service_id: service_id.to_owned(),
        runtime_state: pb::RuntimeState::Stopped as i32,
        revision,
        message: "deleted".into(),
        observe_time: Some(SystemTime::now().into()),
        ..Default::default()
    }
}

async fn delete(
    rt: &ProcessRuntime,
    command: &pb::Command,
    spec: &pb::WorkloadSpec,
    steps: &Steps,
) -> Result<(), CommandFailure> {
    steps.started("delete", "", pb::RuntimeState::Stopping);
    let revision = delete_one(rt, &command.namespace, &spec.name).await;
    let dir = spec::workload_dir(&rt.environment_dir(&command.namespace), &spec.name);
    if let Err(failure) = remove_dir(&dir).await {
        return Err(steps.failed("delete", failure, pb::RuntimeState::Error));
    }
    rt.shared.emit(RuntimeEvent::Status(deleted_status(
        command,
        &spec.service_id,
        revision.unwrap_or_default(),
    )));
    steps.succeeded("delete", "deleted", pb::RuntimeState::Stopped);
    Ok(())
}

/// Stops and forgets a workload; returns its revision when it existed.
async fn delete_one(rt: &ProcessRuntime, namespace: &str, name: &str) -> Option<String> {
    let workload = rt.get(namespace, name)?;
    let mut run = workload.run.lock().await;
    stop_instances(&workload, &mut run).await;
    rt.remove(namespace, name);
    Some(run.revision.clone())
}

/// `delete_namespace`: everything else of the environment, and its directory.
pub(super) async fn delete_namespace(
    rt: &ProcessRuntime,
    command: &pb::Command,
) -> Result<(), CommandFailure> {
    for name in rt.names_in(&command.namespace) {
        let service_id = rt
            .get(&command.namespace, &name)
            .map(|w| w.cell.tx.borrow().service_id.clone())
            .unwrap_or_default();
        if let Some(revision) = delete_one(rt, &command.namespace, &name).await {
            rt.shared.emit(RuntimeEvent::Status(deleted_status(
                command,
                &service_id,
                revision,
            )));
        }
    }
    remove_dir(&rt.environment_dir(&command.namespace)).await
}

async fn run_job(
    rt: &ProcessRuntime,
    command: &pb::Command,
    spec: &pb::WorkloadSpec,
    steps: &Steps,
    command_deadline: Instant,
) -> Result<(), CommandFailure> {
    let workload = rt.entry(command, spec);
    let _run = workload.run.lock().await;
    steps.started("run_job", "", pb::RuntimeState::Starting);
    let plan = match spec::prepare(&rt.environment_dir(&command.namespace), spec).await {
        Ok(plan) => plan,
        Err(failure) => return Err(steps.failed("run_job", failure, pb::RuntimeState::Error)),
    };
    let deadline = command_deadline.min(Instant::now() + job_timeout(spec));
    let attempts = job_retries(spec) + 1;
    let ids = LogIds::from_command(command, &spec.service_id, true);
    let shared = rt.shared.clone();
    let revision = spec.revision.clone();
    workload.cell.update(|state| {
        state.revision = revision;
        state.desired = 1;
        state.job_state = Some(pb::RuntimeState::Starting);
        state.message.clear();
        state.instances.clear();
    });

    let attempts_run = async {
        for attempt in 0..attempts {
            let name = format!("{}-{attempt}", spec.name);
            workload.cell.update(|state| {
                state.instances = vec![instance::InstanceState {
                    name: name.clone(),
                    alive: true,
                    start_time: Some(SystemTime::now()),
                    restart_count: attempt,
                    ..Default::default()
                }];
            });
            let outcome = match instance::spawn(&plan, &[], &name, &ids, &shared) {
                Err(e) => Err(format!("could not start {}: {e}", plan.program_name())),
                Ok((mut child, _guard)) => {
                    let status = child.wait().await;
                    match status {
                        Ok(status) if status.success() => Ok(()),
                        other => Err(instance::describe_exit(other)),
                    }
                }
            };
            let message = match &outcome {
                Ok(()) => "completed".to_owned(),
                Err(why) => why.clone(),
            };
            workload.cell.update(|state| {
                if let Some(instance) = state.instances.first_mut() {
                    instance.alive = false;
                    instance.message = message.clone();
                }
            });
            match outcome {
                Ok(()) => return Ok(()),
                Err(why) if attempt + 1 < attempts => {
                    steps.progress(
                        "run_job",
                        format!(
                            "attempt {} of {attempts} failed: {why}; retrying",
                            attempt + 1
                        ),
                        pb::RuntimeState::Starting,
                    );
                    tokio::time::sleep(rt.shared.settings.job_retry_backoff).await;
                }
                Err(why) => {
                    return Err(format!(
                        "attempt {} of {attempts} failed: {why}",
                        attempt + 1
                    ));
                }
            }
        }
        Err("no attempt ran".to_owned())
    };
    // On timeout the attempt's future is dropped: its child is killed (`kill_on_drop`, and
    // the group guard for what it started).
    let result = match tokio::time::timeout_at(deadline, attempts_run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(CommandFailure::new(pb::FailureReason::JobFailed, why)),
        Err(_) => Err(CommandFailure::new(
            pb::FailureReason::Timeout,
            "the job did not finish in time and was killed",
        )),
    };
    let (state, message) = match &result {
        Ok(()) => (pb::RuntimeState::Completed, "completed".to_owned()),
        Err(failure) => (pb::RuntimeState::Error, failure.message.clone()),
    };
    workload.cell.update(|s| {
        s.desired = 0;
        s.job_state = Some(state);
        s.message = message;
        for instance in &mut s.instances {
            instance.alive = false;
        }
    });
    match result {
        Ok(()) => {
            steps.succeeded("run_job", "completed", pb::RuntimeState::Completed);
            Ok(())
        }
        Err(failure) => Err(steps.failed("run_job", failure, pb::RuntimeState::Error)),
    }
}
