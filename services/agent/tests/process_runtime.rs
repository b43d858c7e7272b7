//! The process runtime against real processes: `sh` scripts, and `python3 -m http.server`
//! for a program that answers an HTTP readiness probe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use slipway_agent::runtime::process::{ProcessRuntime, ProcessSettings};
use slipway_agent::runtime::{Runtime, RuntimeEvent};
use slipway_proto::agent::v1 as pb;
use slipway_proto::common::v1::ServiceKind;
use tokio::sync::mpsc;

fn settings() -> ProcessSettings {
    ProcessSettings {
        ready_grace: Duration::from_millis(300),
        stop_grace: Duration::from_secs(2),
        restart_backoff: Duration::from_millis(50),
        max_restart_backoff: Duration::from_millis(400),
        crash_loop_restarts: 3,
        crash_window: Duration::from_secs(2),
        probe_poll: Duration::from_millis(100),
        job_retry_backoff: Duration::from_millis(50),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn program(argv: &[&str]) -> pb::Program {
    pb::Program {
        artifact: Some(pb::program::Artifact::Local(pb::LocalArtifact::default())),
        command: argv.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

fn app(name: &str, revision: &str, program: pb::Program, port: Option<u16>) -> pb::WorkloadSpec {
    pb::WorkloadSpec {
        service_id: format!("svc-{name}"),
        name: name.into(),
        kind: ServiceKind::Application as i32,
        revision: revision.into(),
        settings: Some(pb::workload_spec::Settings::Application(
            pb::ApplicationWorkload {
                program: Some(program),
                ports: port
                    .map(|p| pb::Port {
                        name: "http".into(),
                        internal_port: u32::from(p),
                        protocol: pb::PortProtocol::Http as i32,
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                replicas: Some(pb::Replicas {
                    min: 1,
                    max: 1,
                    ..Default::default()
                }),
                probes: port.map(|p| pb::Probes {
                    readiness: Some(pb::Probe {
                        check: Some(pb::probe::Check::Http(pb::HttpCheck {
                            path: "/".into(),
                            port: u32::from(p),
                        })),
                        period: Some(prost_types::Duration {
                            seconds: 1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        )),
        ..Default::default()
    }
}

fn job(name: &str, program: pb::Program, retries: u32, timeout: Option<u64>) -> pb::WorkloadSpec {
    pb::WorkloadSpec {
        service_id: format!("svc-{name}"),
        name: name.into(),
        kind: ServiceKind::LifecycleJob as i32,
        revision: "r1".into(),
        settings: Some(pb::workload_spec::Settings::Job(pb::JobWorkload {
            program: Some(program),
            policy: Some(pb::JobPolicy {
                timeout: timeout.map(|s| prost_types::Duration {
                    seconds: s as i64,
                    nanos: 0,
                }),
                retries,
            }),
        })),
        ..Default::default()
    }
}

fn command(
    operation: pb::CommandOperation,
    workloads: Vec<pb::WorkloadSpec>,
    timeout_secs: i64,
) -> pb::Command {
    pb::Command {
        command_id: "cmd".into(),
        cluster_id: "cluster".into(),
        organization_id: "org".into(),
        project_id: "proj".into(),
        environment_id: "env".into(),
        deployment_id: "dep".into(),
        namespace: "env-one".into(),
        stage: pb::CommandStage::Applications as i32,
        operation: operation as i32,
        workloads,
        timeout: Some(prost_types::Duration {
            seconds: timeout_secs,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<RuntimeEvent>) -> Vec<RuntimeEvent> {
    let mut all = Vec::new();
    while let Ok(event) = rx.try_recv() {
        all.push(event);
    }
    all
}

fn steps(events: &[RuntimeEvent]) -> Vec<(String, pb::StepStatus)> {
    events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Step(s) => Some((s.step.clone(), s.status())),
            _ => None,
        })
        .collect()
}

fn log_text(events: &[RuntimeEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Log(chunk) => Some(chunk),
            _ => None,
        })
        .flat_map(|c| c.lines.iter().map(|l| l.text.clone()))
        .collect()
}

async fn http_ok(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200")
}

async fn status_of(rt: &ProcessRuntime, service: &str) -> Option<pb::WorkloadStatus> {
    rt.workloads()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.service_id == service)
}

fn http_server(port: u16) -> pb::Program {
    // `exec`: the shell becomes the server, as a real start script would do.
    program(&[
        "sh",
        "-c",
        "echo starting on $PORT; exec python3 -u -m http.server $PORT --bind 127.0.0.1",
    ])
    .tap_port(port)
}

trait TapPort {
    fn tap_port(self, port: u16) -> Self;
}

impl TapPort for pb::Program {
    /// Adds a variable, to see variables reach the program.
    fn tap_port(mut self, port: u16) -> Self {
        self.env.push(pb::EnvVar {
            name: "EXPECTED_PORT".into(),
            value: port.to_string(),
            is_secret: false,
        });
        self
    }
}

#[tokio::test]
async fn an_application_starts_stops_restarts_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::with_settings(dir.path().to_owned(), settings());
    let port = free_port();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut spec = app("web", "r1", http_server(port), Some(port));
    if let Some(pb::workload_spec::Settings::Application(a)) = &mut spec.settings {
        let program = a.program.as_mut().unwrap();
        program.files.push(pb::FileMount {
            path: "conf/app.txt".into(),
            content: b"hello".to_vec(),
            is_secret: true,
            mode: 0,
        });
        program.files.push(pb::FileMount {
            path: "/etc/web.conf".into(),
            content: b"x".to_vec(),
            is_secret: false,
            mode: 0,
        });
    }

    // Apply: started, ready through the HTTP probe on its port.
    let apply = command(pb::CommandOperation::Apply, vec![spec.clone()], 20);
    rt.execute(&apply, tx.clone()).await.expect("apply");
    assert!(http_ok(port).await, "the server answers");
    let events = drain(&mut rx);
    let apply_steps = steps(&events);
    assert_eq!(
        apply_steps.first(),
        Some(&("apply".to_owned(), pb::StepStatus::Started))
    );
    assert!(apply_steps.contains(&("apply".to_owned(), pb::StepStatus::Succeeded)));
    assert_eq!(
        apply_steps.last(),
        Some(&("rollout".to_owned(), pb::StepStatus::Succeeded))
    );
    let status = status_of(&rt, "svc-web").await.unwrap();
    assert_eq!(status.runtime_state(), pb::RuntimeState::Running);
    assert_eq!((status.ready_instances, status.desired_instances), (1, 1));
    assert_eq!(status.instances[0].name, "web-0");
    assert_eq!(status.revision, "r1");

    // Files: relative to the working directory (no artifact: the workload's `work/`),
    // absolute ones re-rooted under `root/`; a secret is 0600.
    let work = dir.path().join("env-one/web/work");
    assert_eq!(std::fs::read(work.join("conf/app.txt")).unwrap(), b"hello");
    assert_eq!(mode(&work.join("conf/app.txt")), 0o600);
    assert_eq!(
        std::fs::read(dir.path().join("env-one/web/root/etc/web.conf")).unwrap(),
        b"x"
    );

    // Logs: the script's line arrives with the ids of the command.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = [events, drain(&mut rx)].concat();
    assert!(
        log_text(&events).contains(&format!("starting on {port}")),
        "logs: {:?}",
        log_text(&events)
    );
    let chunk = events
        .iter()
        .find_map(|e| match e {
            RuntimeEvent::Log(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            chunk.organization_id.as_str(),
            chunk.service_id.as_str(),
            chunk.instance.as_str()
        ),
        ("org", "svc-web", "web-0")
    );
    assert_eq!(chunk.deployment_id, "dep");
    assert!(!chunk.from_command);

    // The same revision again: left running (same process).
    let pid_before = listener_alive(port).await;
    rt.execute(&apply, tx.clone()).await.expect("reapply");
    assert!(pid_before && http_ok(port).await);
    let events = drain(&mut rx);
    assert!(events.iter().any(|e| matches!(e, RuntimeEvent::Step(s)
        if s.step == "apply" && s.message.contains("unchanged"))));

    // Stop: STOPPED, the process is gone (port closed).
    let stop = command(pb::CommandOperation::Stop, vec![spec.clone()], 20);
    rt.execute(&stop, tx.clone()).await.expect("stop");
    assert!(!listener_alive(port).await, "the server is gone");
    let status = status_of(&rt, "svc-web").await.unwrap();
    assert_eq!(status.runtime_state(), pb::RuntimeState::Stopped);
    assert_eq!(status.desired_instances, 0);
    let events = drain(&mut rx);
    assert!(events.iter().any(|e| matches!(e, RuntimeEvent::Status(s)
        if s.runtime_state() == pb::RuntimeState::Stopping)));

    // Start again, then restart.
    rt.execute(&apply, tx.clone()).await.expect("start again");
    assert!(http_ok(port).await);
    let restart = command(pb::CommandOperation::Restart, vec![spec.clone()], 20);
    rt.execute(&restart, tx.clone()).await.expect("restart");
    assert!(http_ok(port).await);
    let restart_steps = steps(&drain(&mut rx));
    assert!(restart_steps.contains(&("restart".to_owned(), pb::StepStatus::Succeeded)));
    assert_eq!(
        restart_steps.last(),
        Some(&("rollout".to_owned(), pb::StepStatus::Succeeded))
    );

    // Delete with the namespace: processes gone, directory removed, nothing reported.
    let mut delete = command(pb::CommandOperation::Delete, vec![spec], 20);
    delete.delete_namespace = true;
    rt.execute(&delete, tx.clone()).await.expect("delete");
    assert!(!listener_alive(port).await);
    assert!(!dir.path().join("env-one").exists());
    assert!(rt.workloads().await.unwrap().is_empty());
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn listener_alive(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[tokio::test]
async fn a_crashing_program_is_a_crash_loop_and_a_crash_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::with_settings(dir.path().to_owned(), settings());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = app(
        "crash",
        "r1",
        program(&["sh", "-c", "echo boom >&2; exit 3"]),
        None,
    );
    let failure = rt
        .execute(&command(pb::CommandOperation::Apply, vec![spec], 20), tx)
        .await
        .expect_err("crash loop");
    assert_eq!(failure.reason, pb::FailureReason::CrashLoop);
    assert!(
        failure.message.contains("exited with status 3"),
        "{failure}"
    );
    let events = drain(&mut rx);
    let last = events.iter().rev().find_map(|e| match e {
        RuntimeEvent::Step(s) => Some(s.clone()),
        _ => None,
    });
    let last = last.unwrap();
    assert_eq!(
        (last.step.as_str(), last.status()),
        ("rollout", pb::StepStatus::Failed)
    );
    assert_eq!(last.failure_reason(), pb::FailureReason::CrashLoop);
    assert_eq!(last.runtime_state(), pb::RuntimeState::Error);
    assert!(log_text(&events).contains(&"boom".to_owned()));
    assert!(events.iter().any(|e| matches!(e, RuntimeEvent::Log(c)
        if c.stream() == slipway_proto::logs::v1::LogStream::Stderr)));
    let status = status_of(&rt, "svc-crash").await.unwrap();
    assert_eq!(status.runtime_state(), pb::RuntimeState::Error);
    assert!(status.instances[0].restart_count >= 3);
}

#[tokio::test]
async fn a_crash_after_the_rollout_is_restarted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::with_settings(dir.path().to_owned(), settings());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let marker = dir.path().join("ran-once");
    // First run: stays up long enough to be ready, then exits 1; later runs stay up.
    let script = format!(
        "if [ -e {m} ]; then exec sleep 30; else touch {m}; sleep 1; exit 1; fi",
        m = marker.display()
    );
    let spec = app("flaky", "r1", program(&["sh", "-c", &script]), None);
    rt.execute(&command(pb::CommandOperation::Apply, vec![spec], 20), tx)
        .await
        .expect("apply");
    drain(&mut rx);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let events = drain(&mut rx);
    let statuses: Vec<&pb::WorkloadStatus> = events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(
        statuses
            .iter()
            .any(|s| s.runtime_state() == pb::RuntimeState::Starting
                && s.instances[0].message.contains("exited with status 1")),
        "{statuses:?}"
    );
    let status = status_of(&rt, "svc-flaky").await.unwrap();
    assert_eq!(status.runtime_state(), pb::RuntimeState::Running);
    assert_eq!(status.instances[0].restart_count, 1);
}

#[tokio::test]
async fn a_probe_that_never_passes_fails_the_rollout_and_an_image_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::with_settings(dir.path().to_owned(), settings());
    let (tx, _rx) = mpsc::unbounded_channel();
    let port = free_port();
    // Runs, but nobody listens on the probed port.
    let spec = app("deaf", "r1", program(&["sleep", "30"]), Some(port));
    let failure = rt
        .execute(&command(pb::CommandOperation::Apply, vec![spec], 2), tx)
        .await
        .expect_err("probe failed");
    assert_eq!(failure.reason, pb::FailureReason::ProbeFailed, "{failure}");

    // An image alone cannot run as a process; with the service's local run command it
    // runs that command instead.
    let image = |name: &str, run: &[&str]| {
        let mut spec = app(name, "r1", program(run), None);
        if let Some(pb::workload_spec::Settings::Application(a)) = &mut spec.settings {
            let program = a.program.as_mut().unwrap();
            program.artifact = Some(pb::program::Artifact::Image(pb::ImageArtifact {
                reference: "nginx:1".into(),
                pull_credentials: None,
            }));
            program.command.retain(|word| !word.is_empty());
        }
        spec
    };
    let rejected = rt
        .check(&command(
            pb::CommandOperation::Apply,
            vec![image("img", &[""])],
            2,
        ))
        .expect_err("unsupported");
    assert!(
        rejected.0.contains("runs on the kubernetes runtime only"),
        "{}",
        rejected.0
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let local = command(
        pb::CommandOperation::Apply,
        vec![image("img-local", &["sleep", "30"])],
        3,
    );
    rt.check(&local).expect("an image with a local run command");
    rt.execute(&local, tx)
        .await
        .expect("the local run command runs in place of the image");
    let status = status_of(&rt, "svc-img-local").await.unwrap();
    assert_eq!(status.runtime_state(), pb::RuntimeState::Running);
    let mut bad = app("x", "r1", program(&["x"]), None);
    bad.name = "../escape".into();
    assert!(
        rt.check(&command(pb::CommandOperation::Apply, vec![bad], 2))
            .is_err()
    );
}

#[tokio::test]
async fn jobs_succeed_fail_after_retries_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::with_settings(dir.path().to_owned(), settings());
    let (tx, mut rx) = mpsc::unbounded_channel();

    let ok = job("migrate", program(&["sh", "-c", "echo migrated"]), 0, None);
    rt.execute(
        &command(pb::CommandOperation::RunJob, vec![ok], 20),
        tx.clone(),
    )
    .await
    .expect("job succeeds");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = drain(&mut rx);
    assert!(log_text(&events).contains(&"migrated".to_owned()));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RuntimeEvent::Log(c) if c.from_command))
    );
    assert_eq!(
        steps(&events).last(),
        Some(&("run_job".to_owned(), pb::StepStatus::Succeeded))
    );
    let status = status_of(&rt, "svc-migrate").await.unwrap();
    assert_eq!(status.runtime_state(), pb::RuntimeState::Completed);

    let failing = job("seed", program(&["sh", "-c", "echo try; exit 2"]), 2, None);
    let failure = rt
        .execute(
            &command(pb::CommandOperation::RunJob, vec![failing], 20),
            tx.clone(),
        )
        .await
        .expect_err("job fails");
    assert_eq!(failure.reason, pb::FailureReason::JobFailed);
    assert!(failure.message.contains("attempt 3 of 3"), "{failure}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events = drain(&mut rx);
    let tries = log_text(&events).iter().filter(|l| *l == "try").count();
    assert_eq!(tries, 3);
    let progress = steps(&events)
        .iter()
        .filter(|(_, s)| *s == pb::StepStatus::Progress)
        .count();
    assert_eq!(progress, 2);

    let slow = job("slow", program(&["sleep", "30"]), 0, Some(1));
    let started = std::time::Instant::now();
    let failure = rt
        .execute(&command(pb::CommandOperation::RunJob, vec![slow], 20), tx)
        .await
        .expect_err("timeout");
    assert_eq!(failure.reason, pb::FailureReason::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn dropping_the_runtime_kills_its_processes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let rt = ProcessRuntime::with_settings(dir.path().to_owned(), settings());
        let (tx, _rx) = mpsc::unbounded_channel();
        let spec = app("web", "r1", http_server(port), Some(port));
        rt.execute(&command(pb::CommandOperation::Apply, vec![spec], 20), tx)
            .await
            .expect("apply");
        assert!(listener_alive(port).await);
    }
    // Aborted supervisors drop their children on the runtime's next turn.
    for _ in 0..50 {
        if !listener_alive(port).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the process outlived the runtime");
}
