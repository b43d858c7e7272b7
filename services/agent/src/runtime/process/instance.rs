//! One supervised process ("instance") of a workload, and the workload state the
//! supervisors share.
//!
//! Each instance runs in its own process group, so stopping it reaches the whole tree a
//! shell script may start: `SIGTERM` to the group (sent with the `kill` utility, as the
//! agent links no signal crate and allows no `unsafe`), `SIGKILL` after the grace period.
//! Children are spawned with `kill_on_drop(true)` and a guard that `SIGKILL`s their group
//! when dropped: when the runtime is dropped or the agent's async runtime shuts down, every
//! process it started dies with it. Only a `SIGKILL` of the agent itself leaves them behind.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_proto::agent::v1 as pb;
use slipway_proto::logs::v1::LogStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::output::{self, LogIds};
use super::probe;
use super::spec::{LaunchPlan, ProbeSpec};
use crate::runtime::RuntimeEvent;

/// What the runtime knows of one instance.
#[derive(Clone, Debug, Default)]
pub(super) struct InstanceState {
    pub name: String,
    pub alive: bool,
    pub ready: bool,
    pub restart_count: u32,
    /// Exits in a row that came shortly after a start.
    pub quick_exits: u32,
    pub crash_looping: bool,
    /// The readiness probe failed `failure_threshold` times in a row (and never passed
    /// since the start).
    pub probe_failing: bool,
    pub start_time: Option<SystemTime>,
    pub message: String,
}

/// What the runtime knows of one workload; lives in a `watch` channel so a command can
/// wait for changes.
#[derive(Clone, Debug, Default)]
pub(super) struct WorkloadState {
    pub environment_id: String,
    pub service_id: String,
    pub revision: String,
    /// Bumped on every (re)start, so a waiting command notices it was superseded.
    pub generation: u64,
    pub desired: u32,
    pub stopping: bool,
    /// Set for job workloads: the state of the last run.
    pub job_state: Option<pb::RuntimeState>,
    pub instances: Vec<InstanceState>,
    pub message: String,
}

impl WorkloadState {
    pub fn ready_count(&self) -> u32 {
        let ready = self.instances.iter().filter(|i| i.ready).count();
        u32::try_from(ready).unwrap_or(u32::MAX)
    }

    pub fn runtime_state(&self) -> pb::RuntimeState {
        if let Some(job) = self.job_state {
            return job;
        }
        let alive = self.instances.iter().any(|i| i.alive);
        if self.stopping || (self.desired == 0 && alive) {
            pb::RuntimeState::Stopping
        } else if self.desired == 0 {
            pb::RuntimeState::Stopped
        } else if self.ready_count() >= self.desired {
            pb::RuntimeState::Running
        } else if self.instances.iter().any(|i| i.crash_looping) {
            pb::RuntimeState::Error
        } else {
            pb::RuntimeState::Starting
        }
    }

    pub fn to_status(&self) -> pb::WorkloadStatus {
        let state = self.runtime_state();
        let message = if !self.message.is_empty() {
            self.message.clone()
        } else {
            self.instances
                .iter()
                .find(|i| !i.ready && !i.message.is_empty())
                .map(|i| format!("{}: {}", i.name, i.message))
                .unwrap_or_default()
        };
        pb::WorkloadStatus {
            environment_id: self.environment_id.clone(),
            service_id: self.service_id.clone(),
            runtime_state: state as i32,
            ready_instances: self.ready_count(),
            desired_instances: self.desired,
            instances: self
                .instances
                .iter()
                .take(100)
                .map(|i| pb::InstanceStatus {
                    name: i.name.clone(),
                    runtime_state: instance_state(i, state) as i32,
                    ready: i.ready,
                    restart_count: i.restart_count,
                    start_time: i.start_time.map(prost_types::Timestamp::from),
                    message: truncate(&i.message, 256),
                })
                .collect(),
            revision: self.revision.clone(),
            message: truncate(&message, 1024),
            observe_time: Some(SystemTime::now().into()),
        }
    }
}

fn instance_state(instance: &InstanceState, workload: pb::RuntimeState) -> pb::RuntimeState {
    if let pb::RuntimeState::Completed = workload {
        return workload;
    }
    match (instance.alive, instance.ready) {
        (_, true) => pb::RuntimeState::Running,
        _ if instance.crash_looping => pb::RuntimeState::Error,
        (true, false) if workload == pb::RuntimeState::Stopping => pb::RuntimeState::Stopping,
        (true, false) => pb::RuntimeState::Starting,
        (false, false) if workload == pb::RuntimeState::Error => pb::RuntimeState::Error,
        (false, false) => pb::RuntimeState::Stopped,
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

/// A workload's state channel plus where to report its changes.
pub(super) struct StateCell {
    pub tx: watch::Sender<WorkloadState>,
    pub shared: Arc<Shared>,
}

impl StateCell {
    /// Changes the state and reports the new status. The status is sent while the change
    /// is held, so concurrent updates arrive in the order they were made.
    pub fn update(&self, change: impl FnOnce(&mut WorkloadState)) {
        self.tx.send_modify(|state| {
            change(state);
            self.shared.emit(RuntimeEvent::Status(state.to_status()));
        });
    }

    fn update_instance(&self, index: usize, change: impl FnOnce(&mut InstanceState)) {
        self.update(|state| {
            if let Some(instance) = state.instances.get_mut(index) {
                change(instance);
            }
        });
    }
}

/// `SIGKILL`s a process group when dropped: whatever a program left behind (a shell's
/// background children) must not outlive it and hold its port.
pub(super) struct GroupGuard(pub u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // Synchronous on purpose: it also runs while an async runtime shuts down. `kill` is
        // quick, and a group already gone is an error nobody needs to see.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// `SIGTERM` to the child's group, `SIGKILL` after `grace`.
pub(super) async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    signal_group(pid, "TERM").await;
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, "KILL").await;
        let _ = child.kill().await;
    }
}

/// Starts `plan` as instance `name` with the given extra variables, its output captured.
pub(super) fn spawn(
    plan: &LaunchPlan,
    extra_env: &[(String, String)],
    name: &str,
    ids: &LogIds,
    shared: &Arc<Shared>,
) -> std::io::Result<(Child, GroupGuard)> {
    let mut command = Command::new(&plan.program);
    command
        .args(&plan.args)
        .current_dir(&plan.working_dir)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command.spawn()?;
    let guard = GroupGuard(child.id().unwrap_or_default());
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(output::capture(
            stdout,
            LogStream::Stdout,
            ids.clone(),
            name.to_owned(),
            shared.clone(),
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(output::capture(
            stderr,
            LogStream::Stderr,
            ids.clone(),
            name.to_owned(),
            shared.clone(),
        ));
    }
    Ok((child, guard))
}

/// How a process ended, in words.
pub(super) fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) if status.success() => "exited with status 0".into(),
        Ok(status) => match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("ended: {status}"),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// Everything one instance's supervisor needs.
pub(super) struct InstanceCtx {
    pub index: usize,
    pub name: String,
    pub plan: Arc<LaunchPlan>,
    /// `(declared, actual)` ports of this instance.
    pub ports: Vec<(u16, u16)>,
    pub ids: LogIds,
    pub cell: Arc<StateCell>,
}

impl InstanceCtx {
    fn actual_port(&self, declared: u16) -> u16 {
        self.ports
            .iter()
            .find(|(d, _)| *d == declared)
            .map_or(declared, |(_, actual)| *actual)
    }

    /// `PORT` (the first port) and `PORT_<NAME>` for every port, with this instance's ports.
    fn port_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some((_, first)) = self.ports.first() {
            env.push(("PORT".to_owned(), first.to_string()));
        }
        for (decl, (_, actual)) in self.plan.ports.iter().zip(&self.ports) {
            env.push((format!("PORT_{}", decl.env_suffix), actual.to_string()));
        }
        env
    }

    async fn check(&self, probe: &ProbeSpec) -> Result<(), String> {
        let mut env = self.plan.env.clone();
        env.extend(self.port_env());
        probe::check(
            probe,
            |port| self.actual_port(port),
            &self.plan.working_dir,
            &env,
        )
        .await
    }
}

/// What ended an instance's life.
enum End {
    Exited(String),
    Stop,
    Liveness(String),
}

/// Keeps instance `ctx` running until `stop` turns true: starts it, restarts it with
/// exponential backoff whenever it exits (or fails its liveness probe), and records its
/// state. Exits shortly after start count towards a crash loop.
pub(super) async fn supervise(ctx: InstanceCtx, mut stop: watch::Receiver<bool>) {
    let settings = ctx.cell.shared.settings.clone();
    let mut backoff = settings.restart_backoff;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let end = match spawn(
            &ctx.plan,
            &ctx.port_env(),
            &ctx.name,
            &ctx.ids,
            &ctx.cell.shared,
        ) {
            Err(e) => End::Exited(format!("could not start {}: {e}", ctx.plan.program_name())),
            Ok((mut child, guard)) => {
                ctx.cell.update_instance(ctx.index, |i| {
                    i.alive = true;
                    i.ready = false;
                    i.probe_failing = false;
                    i.start_time = Some(SystemTime::now());
                    i.message.clear();
                });
                let end = run_alive(&ctx, &mut child, &mut stop).await;
                if matches!(end, End::Stop | End::Liveness(_)) {
                    terminate(&mut child, settings.stop_grace).await;
                }
                drop(guard);
                end
            }
        };
        let message = match end {
            End::Stop => {
                ctx.cell.update_instance(ctx.index, |i| {
                    i.alive = false;
                    i.ready = false;
                    i.message = "stopped".into();
                });
                return;
            }
            End::Exited(message) => message,
            End::Liveness(why) => format!("liveness probe failed: {why}"),
        };
        let quick = started.elapsed() < settings.crash_window;
        if !quick {
            backoff = settings.restart_backoff;
        }
        ctx.cell.update_instance(ctx.index, |i| {
            i.alive = false;
            i.ready = false;
            i.restart_count = i.restart_count.saturating_add(1);
            i.quick_exits = if quick { i.quick_exits + 1 } else { 0 };
            i.crash_looping = i.quick_exits >= settings.crash_loop_restarts;
            i.message = format!("{message}; restarting in {backoff:?}");
        });
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
        backoff = (backoff * 2).min(settings.max_restart_backoff);
    }
}

/// Waits while the instance runs: for its exit, a stop, or a liveness failure; meanwhile
/// runs its probes and clears the crash count once it has run long enough.
async fn run_alive(ctx: &InstanceCtx, child: &mut Child, stop: &mut watch::Receiver<bool>) -> End {
    let settings = &ctx.cell.shared.settings;
    let readiness = readiness_loop(ctx);
    let liveness = liveness_loop(ctx);
    let window = tokio::time::sleep(settings.crash_window);
    tokio::pin!(readiness, liveness, window);
    let mut window_passed = false;
    loop {
        tokio::select! {
            status = child.wait() => return End::Exited(describe_exit(status)),
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return End::Stop;
                }
            }
            why = &mut liveness => return End::Liveness(why),
            () = &mut readiness => {}
            () = &mut window, if !window_passed => {
                window_passed = true;
                ctx.cell.update_instance(ctx.index, |i| {
                    i.quick_exits = 0;
                    i.crash_looping = false;
                });
            }
        }
    }
}

fn set_ready(ctx: &InstanceCtx, ready: bool, message: String) {
    let current = ctx
        .cell
        .tx
        .borrow()
        .instances
        .get(ctx.index)
        .map(|i| (i.ready, i.message.clone()));
    if current == Some((ready, message.clone())) {
        return;
    }
    ctx.cell.update_instance(ctx.index, |i| {
        i.ready = ready;
        if ready {
            i.probe_failing = false;
        }
        i.message = message;
    });
}

/// Startup gate, then readiness: "running after a short grace" without a probe, else the
/// probe's verdict. Never returns.
async fn readiness_loop(ctx: &InstanceCtx) {
    let poll = ctx.cell.shared.settings.probe_poll;
    if let Some(startup) = &ctx.plan.startup {
        tokio::time::sleep(startup.initial_delay).await;
        while let Err(why) = ctx.check(startup).await {
            set_ready(ctx, false, format!("startup probe: {why}"));
            tokio::time::sleep(probe::next_delay(startup, false, poll)).await;
        }
    }
    let Some(readiness) = &ctx.plan.readiness else {
        tokio::time::sleep(ctx.cell.shared.settings.ready_grace).await;
        set_ready(ctx, true, String::new());
        return std::future::pending().await;
    };
    tokio::time::sleep(readiness.initial_delay).await;
    let mut passed_once = false;
    let mut failures = 0u32;
    loop {
        match ctx.check(readiness).await {
            Ok(()) => {
                failures = 0;
                passed_once = true;
                set_ready(ctx, true, String::new());
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                let ready_now = ctx
                    .cell
                    .tx
                    .borrow()
                    .instances
                    .get(ctx.index)
                    .is_some_and(|i| i.ready);
                if !ready_now || failures >= readiness.failure_threshold {
                    set_ready(ctx, false, format!("readiness probe: {why}"));
                }
                if failures >= readiness.failure_threshold && !passed_once {
                    let failing = ctx
                        .cell
                        .tx
                        .borrow()
                        .instances
                        .get(ctx.index)
                        .is_some_and(|i| i.probe_failing);
                    if !failing {
                        ctx.cell
                            .update_instance(ctx.index, |i| i.probe_failing = true);
                    }
                }
            }
        }
        tokio::time::sleep(probe::next_delay(readiness, passed_once, poll)).await;
    }
}

/// Returns why the liveness probe failed `failure_threshold` times in a row; never returns
/// without a liveness probe.
async fn liveness_loop(ctx: &InstanceCtx) -> String {
    let Some(liveness) = &ctx.plan.liveness else {
        return std::future::pending().await;
    };
    tokio::time::sleep(liveness.initial_delay).await;
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(liveness.period).await;
        match ctx.check(liveness).await {
            Ok(()) => failures = 0,
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures >= liveness.failure_threshold {
                    return why;
                }
            }
        }
    }
}
