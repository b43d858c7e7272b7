//! The Kubernetes runtime against a scripted fake API server at the HTTP level (the kube-rs
//! `tower-test` pattern, hand-rolled with `tower::service_fn`): every test lists the exact
//! API calls it expects, in order, checks the key parts of each (method, path, field
//! manager, labels, replicas, Secret keys) and answers each with canned JSON, or with a
//! log stream the test keeps open (followed pods).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use slipway_agent::runtime::kubernetes::{KubernetesRuntime, KubernetesSettings};
use slipway_agent::runtime::{Runtime, RuntimeEvent};
use slipway_proto::agent::v1 as pb;
use slipway_proto::common::v1::ServiceKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

const NS: &str = "env-ns";
const SERVICE_ID: &str = "0190a1b2-0000-7000-8000-00000000a001";
const SELECTOR: &str = "slipway.dev/service-id=0190a1b2-0000-7000-8000-00000000a001";
const SECRET_VALUE: &str = "hunter2-do-not-leak";

type Check = Box<dyn Fn(&str, &Value) + Send>;

/// One expected API call and its answer.
struct Call {
    method: &'static str,
    path: String,
    check: Check,
    status: u16,
    reply: Reply,
}

enum Reply {
    Json(Value),
    /// Answer with the request's own body (what an apply returns, near enough).
    Echo,
    /// Plain text (pod logs).
    Text(&'static str),
    /// A body streamed from a channel, open until its sender is dropped (a followed log).
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

#[derive(Default)]
struct Script {
    calls: Mutex<VecDeque<Call>>,
    errors: Mutex<Vec<String>>,
    seen: Mutex<Vec<String>>,
}

impl Script {
    fn expect(
        &self,
        method: &'static str,
        path: &str,
        check: impl Fn(&str, &Value) + Send + 'static,
        status: u16,
        reply: Reply,
    ) {
        self.calls.lock().unwrap().push_back(Call {
            method,
            path: path.to_owned(),
            check: Box::new(check),
            status,
            reply,
        });
    }

    fn apply(&self, path: &str, check: impl Fn(&Value) + Send + 'static) {
        self.expect(
            "PATCH",
            path,
            move |query, body| {
                assert!(
                    query.contains("fieldManager=slipway-agent"),
                    "field manager in {query}"
                );
                assert!(query.contains("force=true"), "force in {query}");
                check(body);
            },
            200,
            Reply::Echo,
        );
    }

    fn get(&self, path: &str, reply: Value) {
        self.expect("GET", path, |_, _| {}, 200, Reply::Json(reply));
    }

    fn pods(&self, selector: &str, items: Value) {
        let selector = selector.to_owned();
        self.expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods"),
            move |query, _| {
                assert!(
                    decode(query).contains(&format!("labelSelector={selector}")),
                    "{query}"
                )
            },
            200,
            Reply::Json(
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
            ),
        );
    }

    /// A followed pod log: `GET …/pods/{pod}/log?follow=true&timestamps=true&sinceSeconds=…`.
    fn follow_log(&self, pod: &str, reply: Reply) {
        self.expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods/{pod}/log"),
            |query, _| {
                assert!(query.contains("follow=true"), "{query}");
                assert!(query.contains("timestamps=true"), "{query}");
                assert!(query.contains("sinceSeconds="), "{query}");
            },
            200,
            reply,
        );
    }

    /// Every scripted call was made (or `timeout` passed): calls made by pod followers
    /// come after `execute` returned.
    async fn wait_drained(&self, timeout: Duration) {
        let until = tokio::time::Instant::now() + timeout;
        while !self.calls.lock().unwrap().is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn delete_collection(&self, path: &str) {
        self.expect(
            "DELETE",
            path,
            |query, _| {
                assert!(
                    decode(query).contains(&format!("labelSelector={SELECTOR}")),
                    "{query}"
                )
            },
            200,
            Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        );
    }

    /// Everything went as scripted: no mismatch, no call left unmade.
    fn assert_done(&self) {
        let errors = self.errors.lock().unwrap();
        assert!(
            errors.is_empty(),
            "fake API server: {errors:#?}\nseen: {:#?}",
            self.seen.lock().unwrap()
        );
        let left: Vec<String> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect();
        assert!(left.is_empty(), "calls never made: {left:#?}");
    }
}

fn decode(query: &str) -> String {
    query
        .replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",")
}

fn json_body(value: Value) -> UnsyncBoxBody<Bytes, Infallible> {
    Full::new(Bytes::from(value.to_string())).boxed_unsync()
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

/// A runtime whose client talks to `script`.
fn runtime(script: Arc<Script>) -> KubernetesRuntime {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let script = script.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            let query = parts.uri.query().unwrap_or_default().to_owned();
            script
                .seen
                .lock()
                .unwrap()
                .push(format!("{} {path}?{query}", parts.method));
            let call = script.calls.lock().unwrap().pop_front();
            let (status, reply): (u16, UnsyncBoxBody<Bytes, Infallible>) = match call {
                None => {
                    script
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("unexpected {} {path}", parts.method));
                    (
                        500,
                        json_body(
                            json!({"kind": "Status", "code": 500, "message": "unexpected call"}),
                        ),
                    )
                }
                Some(call) => {
                    if call.method != parts.method.as_str() || call.path != path {
                        script.errors.lock().unwrap().push(format!(
                            "expected {} {}, got {} {path}",
                            call.method, call.path, parts.method
                        ));
                    }
                    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        (call.check)(&query, &body)
                    }));
                    if let Err(panic) = checked {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        script
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("{} {path}: {message}", parts.method));
                    }
                    let reply = match call.reply {
                        Reply::Json(value) => json_body(value),
                        Reply::Echo => json_body(body),
                        Reply::Text(text) => Full::new(Bytes::from(text)).boxed_unsync(),
                        // Each chunk becomes one data frame (taken from a `Full` body: the
                        // frame type lives in `http-body`, not a dependency here).
                        Reply::Stream(lines) => StreamBody::new(
                            UnboundedReceiverStream::new(lines)
                                .then(|b| async move { Full::new(b).frame().await.unwrap() }),
                        )
                        .boxed_unsync(),
                    };
                    (call.status, reply)
                }
            };
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(reply)
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let client = kube::Client::new(service, "default");
    KubernetesRuntime::new(
        client,
        KubernetesSettings {
            poll_interval: Duration::from_millis(1),
            ..KubernetesSettings::default()
        },
    )
}

fn command(operation: pb::CommandOperation, workload: pb::WorkloadSpec) -> pb::Command {
    pb::Command {
        command_id: "0190a1b2-0000-7000-8000-0000000c0001".into(),
        cluster_id: "cluster-1".into(),
        organization_id: "org-1".into(),
        project_id: "project-1".into(),
        environment_id: "env-1".into(),
        deployment_id: "deployment-1".into(),
        namespace: NS.into(),
        stage: pb::CommandStage::Applications as i32,
        operation: operation as i32,
        workloads: vec![workload],
        timeout: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        delete_namespace: false,
        create_time: None,
    }
}

fn application(replicas: u32, ports: Vec<pb::Port>, env: Vec<pb::EnvVar>) -> pb::WorkloadSpec {
    pb::WorkloadSpec {
        service_id: SERVICE_ID.into(),
        name: "api".into(),
        kind: ServiceKind::Application as i32,
        revision: "rev-1".into(),
        labels: Default::default(),
        settings: Some(pb::workload_spec::Settings::Application(
            pb::ApplicationWorkload {
                program: Some(pb::Program {
                    artifact: Some(pb::program::Artifact::Image(pb::ImageArtifact {
                        reference: "ghcr.io/acme/api@sha256:abc".into(),
                        pull_credentials: None,
                    })),
                    env,
                    ..pb::Program::default()
                }),
                ports,
                replicas: Some(pb::Replicas {
                    min: replicas,
                    max: replicas,
                    target_cpu_percent: 0,
                }),
                probes: None,
            },
        )),
    }
}

fn bare(kind: ServiceKind) -> pb::WorkloadSpec {
    pb::WorkloadSpec {
        service_id: SERVICE_ID.into(),
        name: "api".into(),
        kind: kind as i32,
        ..pb::WorkloadSpec::default()
    }
}

fn deployment_status(desired: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": NS, "generation": 1},
        "spec": {
            "replicas": desired,
            "selector": {"matchLabels": {"slipway.dev/service-id": SERVICE_ID}},
            "template": {"spec": {"containers": [{"name": "api"}]}}
        },
        "status": {
            "observedGeneration": 1,
            "replicas": desired,
            "updatedReplicas": desired,
            "readyReplicas": ready,
            "availableReplicas": ready
        }
    })
}

fn pod(name: &str, container_status: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": {"slipway.dev/revision": "rev-1"}},
        "status": {"phase": "Running", "containerStatuses": [container_status]}
    })
}

fn assert_labels(body: &Value) {
    let labels = &body["metadata"]["labels"];
    assert_eq!(labels["slipway.dev/organization-id"], "org-1", "{body}");
    assert_eq!(labels["slipway.dev/project-id"], "project-1");
    assert_eq!(labels["slipway.dev/environment-id"], "env-1");
    assert_eq!(labels["slipway.dev/service-id"], SERVICE_ID);
    assert_eq!(labels["slipway.dev/deployment-id"], "deployment-1");
    assert_eq!(
        labels["slipway.dev/command-id"],
        "0190a1b2-0000-7000-8000-0000000c0001"
    );
    assert_eq!(
        body["metadata"]["annotations"]["slipway.dev/revision"],
        "rev-1"
    );
}

fn drain(mut events: mpsc::UnboundedReceiver<RuntimeEvent>) -> Vec<RuntimeEvent> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        out.push(event);
    }
    out
}

/// `(step, status)` of every step report, in order.
fn steps(events: &[RuntimeEvent]) -> Vec<(String, pb::StepStatus)> {
    events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Step(step) => Some((step.step.clone(), step.status())),
            _ => None,
        })
        .collect()
}

fn deployments_path() -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/api")
}

#[tokio::test]
async fn apply_of_an_application_with_two_instances_a_public_port_and_a_secret() {
    let script = Arc::new(Script::default());
    script.apply(&format!("/api/v1/namespaces/{NS}"), |body| {
        assert_eq!(body["kind"], "Namespace");
        assert_eq!(
            body["metadata"]["labels"]["slipway.dev/environment-id"],
            "env-1"
        );
    });
    script.apply(&format!("/api/v1/namespaces/{NS}/secrets/api"), |body| {
        assert_eq!(body["kind"], "Secret");
        assert_labels(body);
        let keys: Vec<&String> = body["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["DATABASE_PASSWORD"]);
        // Kubernetes Secret data is base64.
        assert_eq!(
            body["data"]["DATABASE_PASSWORD"],
            "aHVudGVyMi1kby1ub3QtbGVhaw=="
        );
    });
    script.apply(&format!("/api/v1/namespaces/{NS}/configmaps/api"), |body| {
        assert_eq!(body["kind"], "ConfigMap");
        assert_labels(body);
        assert_eq!(body["data"], json!({"LOG_LEVEL": "info"}));
    });
    script.apply(&deployments_path(), |body| {
        assert_eq!(body["kind"], "Deployment");
        assert_labels(body);
        assert_eq!(body["spec"]["replicas"], 2);
        assert_eq!(
            body["spec"]["selector"]["matchLabels"],
            json!({"slipway.dev/service-id": SERVICE_ID})
        );
        let template = &body["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["slipway.dev/service-id"], SERVICE_ID);
        assert_eq!(template["metadata"]["annotations"]["slipway.dev/revision"], "rev-1");
        let container = &template["spec"]["containers"][0];
        assert_eq!(container["image"], "ghcr.io/acme/api@sha256:abc");
        assert_eq!(container["ports"][0]["containerPort"], 8080);
        assert_eq!(
            container["env"],
            json!([
                {"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "api", "key": "LOG_LEVEL"}}},
                {"name": "DATABASE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "api", "key": "DATABASE_PASSWORD"}}}
            ])
        );
        assert!(!body.to_string().contains(SECRET_VALUE), "secret literal in the pod spec");
    });
    script.apply(&format!("/api/v1/namespaces/{NS}/services/api"), |body| {
        assert_eq!(body["kind"], "Service");
        assert_labels(body);
        assert_eq!(
            body["spec"]["selector"],
            json!({"slipway.dev/service-id": SERVICE_ID})
        );
        assert_eq!(body["spec"]["ports"][0]["port"], 80);
        assert_eq!(body["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(body["spec"]["ports"][0]["name"], "http");
    });
    script.apply(
        &format!("/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/api-http"),
        |body| {
            assert_eq!(body["kind"], "Ingress");
            assert_labels(body);
            let rule = &body["spec"]["rules"][0];
            assert_eq!(rule["host"], "api.example.com");
            assert_eq!(rule["http"]["paths"][0]["path"], "/");
            assert_eq!(
                rule["http"]["paths"][0]["backend"]["service"]["name"],
                "api"
            );
            assert_eq!(body["spec"]["tls"][0]["hosts"], json!(["api.example.com"]));
        },
    );
    // A fixed instance count: an autoscaler left from an earlier spec goes.
    script.expect(
        "DELETE",
        &format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/api"),
        |_, _| {},
        404,
        Reply::Json(not_found()),
    );
    script.get(&deployments_path(), deployment_status(2, 1));
    script.pods(
        SELECTOR,
        json!([
            pod("api-1", json!({"name": "api", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}})),
            pod("api-2", json!({"name": "api", "ready": false, "restartCount": 0, "image": "x", "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}))
        ]),
    );
    script.get(&deployments_path(), deployment_status(2, 2));
    // The rollout is done: the pods of its revision are followed (not one of an older one).
    let mut old = pod(
        "api-0",
        json!({"name": "api", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}),
    );
    old["metadata"]["annotations"]["slipway.dev/revision"] = json!("rev-0");
    script.pods(
        SELECTOR,
        json!([
            old,
            pod("api-1", json!({"name": "api", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}))
        ]),
    );
    script.follow_log(
        "api-1",
        Reply::Text("2026-11-26T15:00:00Z listening on :8080\n"),
    );
    // The stream ended: the pod went away, so it is no longer followed.
    script.expect(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods/api-1"),
        |_, _| {},
        404,
        Reply::Json(not_found()),
    );

    let runtime = runtime(script.clone());
    let workload = application(
        2,
        vec![pb::Port {
            name: "http".into(),
            internal_port: 8080,
            service_port: 80,
            protocol: pb::PortProtocol::Http as i32,
            public_hosts: vec!["api.example.com".into()],
            public_path_prefix: String::new(),
        }],
        vec![
            pb::EnvVar {
                name: "LOG_LEVEL".into(),
                value: "info".into(),
                is_secret: false,
            },
            pb::EnvVar {
                name: "DATABASE_PASSWORD".into(),
                value: SECRET_VALUE.into(),
                is_secret: true,
            },
        ],
    );
    let command = command(pb::CommandOperation::Apply, workload);
    assert!(runtime.check(&command).is_ok());
    let (tx, rx) = mpsc::unbounded_channel();
    let result = runtime.execute(&command, tx).await;
    script.wait_drained(Duration::from_secs(5)).await;
    for _ in 0..500 {
        if runtime.followed_pods(NS, SERVICE_ID) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(runtime.followed_pods(NS, SERVICE_ID), 0, "follower ended");
    script.assert_done();
    assert_eq!(result, Ok(()));

    let events = drain(rx);
    let logs: Vec<&pb::LogChunk> = events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Log(chunk) => Some(chunk),
            _ => None,
        })
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].instance, "api-1");
    assert_eq!(logs[0].lines[0].text, "listening on :8080");
    assert_eq!(
        steps(&events),
        [
            ("apply".to_owned(), pb::StepStatus::Started),
            ("apply".to_owned(), pb::StepStatus::Succeeded),
            ("rollout".to_owned(), pb::StepStatus::Started),
            ("rollout".to_owned(), pb::StepStatus::Progress),
            ("rollout".to_owned(), pb::StepStatus::Succeeded),
        ]
    );
    let progress = events.iter().find_map(|e| match e {
        RuntimeEvent::Step(s) if s.status() == pb::StepStatus::Progress => Some(s.message.clone()),
        _ => None,
    });
    assert_eq!(progress.as_deref(), Some("1/2 instances ready"));
    let status = events.iter().find_map(|e| match e {
        RuntimeEvent::Status(s) => Some(s.clone()),
        _ => None,
    });
    let status = status.expect("a workload status");
    assert_eq!(status.runtime_state(), pb::RuntimeState::Running);
    assert_eq!((status.ready_instances, status.desired_instances), (2, 2));
    assert_eq!(status.service_id, SERVICE_ID);
    assert_eq!(status.revision, "rev-1");
    for event in &events {
        assert!(
            !format!("{event:?}").contains(SECRET_VALUE),
            "secret in a report: {event:?}"
        );
    }
}

#[tokio::test]
async fn a_rollout_that_crash_loops_fails_with_crash_loop() {
    let script = Arc::new(Script::default());
    script.apply(&format!("/api/v1/namespaces/{NS}"), |_| {});
    script.apply(&deployments_path(), |body| {
        assert_eq!(body["spec"]["replicas"], 1)
    });
    script.expect(
        "DELETE",
        &format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/api"),
        |_, _| {},
        404,
        Reply::Json(not_found()),
    );
    script.get(&deployments_path(), deployment_status(1, 0));
    script.pods(
        SELECTOR,
        json!([pod(
            "api-1",
            json!({
                "name": "api", "ready": false, "restartCount": 4, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
            })
        )]),
    );

    let runtime = runtime(script.clone());
    let command = command(
        pb::CommandOperation::Apply,
        application(1, Vec::new(), Vec::new()),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let result = runtime.execute(&command, tx).await;
    script.assert_done();

    let failure = result.expect_err("the rollout must fail");
    assert_eq!(failure.reason, pb::FailureReason::CrashLoop);
    assert!(
        failure.message.contains("keeps crashing"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("exit code 1"),
        "{}",
        failure.message
    );

    let events = drain(rx);
    let failed: Vec<&pb::StepReport> = events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Step(s) if s.status() == pb::StepStatus::Failed => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].step, "rollout");
    assert_eq!(failed[0].service_id, SERVICE_ID);
    assert_eq!(failed[0].failure_reason(), pb::FailureReason::CrashLoop);
    assert_eq!(failed[0].runtime_state(), pb::RuntimeState::Error);
    let status = events.iter().find_map(|e| match e {
        RuntimeEvent::Status(s) => Some(s.clone()),
        _ => None,
    });
    let status = status.expect("a workload status");
    assert_eq!(status.runtime_state(), pb::RuntimeState::Error);
    assert_eq!(status.instances.len(), 1);
    assert_eq!(status.instances[0].restart_count, 4);
}

#[tokio::test]
async fn stop_scales_to_zero_and_waits_for_the_instances_to_go() {
    let script = Arc::new(Script::default());
    script.expect(
        "PATCH",
        &format!("{}/scale", deployments_path()),
        |query, body| {
            assert!(query.contains("fieldManager=slipway-agent"), "{query}");
            assert_eq!(body, &json!({"spec": {"replicas": 0}}));
        },
        200,
        Reply::Json(json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"replicas": 0}, "status": {"replicas": 1}
        })),
    );
    script.pods(
        SELECTOR,
        json!([pod("api-1", json!({"name": "api", "ready": false, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}))]),
    );
    script.pods(SELECTOR, json!([]));

    let runtime = runtime(script.clone());
    let command = command(pb::CommandOperation::Stop, bare(ServiceKind::Application));
    let (tx, rx) = mpsc::unbounded_channel();
    let result = runtime.execute(&command, tx).await;
    script.assert_done();
    assert_eq!(result, Ok(()));

    let events = drain(rx);
    assert_eq!(
        steps(&events),
        [
            ("scale_down".to_owned(), pb::StepStatus::Started),
            ("scale_down".to_owned(), pb::StepStatus::Succeeded),
        ]
    );
    let last = events.iter().rev().find_map(|e| match e {
        RuntimeEvent::Step(s) => Some(s.runtime_state()),
        _ => None,
    });
    assert_eq!(last, Some(pb::RuntimeState::Stopped));
}

#[tokio::test]
async fn stop_suspends_a_cron_job() {
    let script = Arc::new(Script::default());
    script.expect(
        "PATCH",
        &format!("/apis/batch/v1/namespaces/{NS}/cronjobs/api"),
        |_, body| assert_eq!(body, &json!({"spec": {"suspend": true}})),
        404,
        Reply::Json(not_found()),
    );
    let runtime = runtime(script.clone());
    let command = command(pb::CommandOperation::Stop, bare(ServiceKind::CronJob));
    let (tx, _rx) = mpsc::unbounded_channel();
    assert_eq!(runtime.execute(&command, tx).await, Ok(()));
    script.assert_done();
}

#[tokio::test]
async fn delete_removes_every_labelled_object_and_the_namespace() {
    let script = Arc::new(Script::default());
    script.delete_collection(&format!("/apis/batch/v1/namespaces/{NS}/cronjobs"));
    script.delete_collection(&format!("/apis/batch/v1/namespaces/{NS}/jobs"));
    script.delete_collection(&format!(
        "/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
    ));
    script.delete_collection(&format!("/apis/apps/v1/namespaces/{NS}/deployments"));
    script.delete_collection(&format!("/apis/apps/v1/namespaces/{NS}/statefulsets"));
    script.delete_collection(&format!(
        "/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"
    ));
    script.expect(
        "GET",
        &format!("/api/v1/namespaces/{NS}/services"),
        |query, _| {
            assert!(
                decode(query).contains(&format!("labelSelector={SELECTOR}")),
                "{query}"
            )
        },
        200,
        Reply::Json(json!({
            "apiVersion": "v1", "kind": "ServiceList", "metadata": {},
            "items": [{"metadata": {"name": "api", "namespace": NS}}]
        })),
    );
    script.expect(
        "DELETE",
        &format!("/api/v1/namespaces/{NS}/services/api"),
        |_, body| assert_eq!(body["propagationPolicy"], "Background"),
        200,
        Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
    );
    script.delete_collection(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"));
    script.delete_collection(&format!("/api/v1/namespaces/{NS}/secrets"));
    script.delete_collection(&format!("/api/v1/namespaces/{NS}/configmaps"));
    script.pods(SELECTOR, json!([]));
    script.expect(
        "DELETE",
        &format!("/api/v1/namespaces/{NS}"),
        |_, _| {},
        200,
        Reply::Json(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}, "status": {"phase": "Terminating"}})),
    );

    let runtime = runtime(script.clone());
    let mut command = command(pb::CommandOperation::Delete, bare(ServiceKind::Application));
    command.delete_namespace = true;
    let (tx, rx) = mpsc::unbounded_channel();
    let result = runtime.execute(&command, tx).await;
    script.assert_done();
    assert_eq!(result, Ok(()));
    assert_eq!(
        steps(&drain(rx)),
        [
            ("delete".to_owned(), pb::StepStatus::Started),
            ("delete".to_owned(), pb::StepStatus::Succeeded),
        ]
    );
}

#[tokio::test]
async fn helm_without_the_cli_fails_with_a_clear_error() {
    let script = Arc::new(Script::default());
    script.apply(&format!("/api/v1/namespaces/{NS}"), |_| {});
    let client_runtime = runtime(script.clone());
    // Rebuild with a helm binary that does not exist, over the same fake server.
    let runtime = KubernetesRuntime::new(
        client_runtime.client().clone(),
        KubernetesSettings {
            helm_binary: "/nonexistent/bin/helm".into(),
            poll_interval: Duration::from_millis(1),
            ..KubernetesSettings::default()
        },
    );
    let mut workload = bare(ServiceKind::Helm);
    workload.revision = "rev-1".into();
    workload.settings = Some(pb::workload_spec::Settings::Helm(pb::HelmWorkload {
        chart: Some(pb::HelmChart {
            repository_url: "https://charts.example.com".into(),
            name: "redis".into(),
            version: "1.0.0".into(),
            credentials: None,
        }),
        release_name: String::new(),
        values_yaml: String::new(),
    }));
    let command = command(pb::CommandOperation::Apply, workload);
    let (tx, _rx) = mpsc::unbounded_channel();
    let failure = runtime.execute(&command, tx).await.expect_err("no helm");
    script.assert_done();
    assert_eq!(failure.reason, pb::FailureReason::RuntimeError);
    assert!(
        failure
            .message
            .contains("helm is not installed on the agent"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn run_job_waits_for_the_job_and_sends_its_output() {
    const JOB: &str = "migrate-00000c0001";
    let job_path = format!("/apis/batch/v1/namespaces/{NS}/jobs/{JOB}");
    let job_status = |status: Value| {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": JOB, "namespace": NS},
            "spec": {"template": {"spec": {"containers": [{"name": "migrate"}]}}},
            "status": status
        })
    };
    let script = Arc::new(Script::default());
    script.apply(&format!("/api/v1/namespaces/{NS}"), |_| {});
    script.apply(&job_path, |body| {
        assert_eq!(body["kind"], "Job");
        assert_labels(body);
        assert_eq!(body["spec"]["backoffLimit"], 2);
        assert_eq!(body["spec"]["activeDeadlineSeconds"], 120);
        assert_eq!(body["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["command"],
            json!(["./migrate", "up"])
        );
    });
    script.get(&job_path, job_status(json!({"active": 1})));
    let job_pods = json!([pod(
        "migrate-00000c0001-abcde",
        json!({"name": "migrate", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}})
    )]);
    script.pods(&format!("job-name={JOB}"), job_pods.clone());
    script.get(&job_path, job_status(json!({"succeeded": 1})));
    script.pods(&format!("job-name={JOB}"), job_pods);
    script.expect(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods/migrate-00000c0001-abcde/log"),
        |query, _| assert!(query.contains("timestamps=true"), "{query}"),
        200,
        Reply::Text("2026-11-26T15:00:00Z migrating 3 tables\n2026-11-26T15:00:01.5Z done\n"),
    );

    let runtime = runtime(script.clone());
    let mut workload = bare(ServiceKind::LifecycleJob);
    workload.name = "migrate".into();
    workload.revision = "rev-1".into();
    workload.settings = Some(pb::workload_spec::Settings::Job(pb::JobWorkload {
        program: Some(pb::Program {
            artifact: Some(pb::program::Artifact::Image(pb::ImageArtifact {
                reference: "ghcr.io/acme/api@sha256:abc".into(),
                pull_credentials: None,
            })),
            command: vec!["./migrate".into(), "up".into()],
            ..pb::Program::default()
        }),
        policy: Some(pb::JobPolicy {
            timeout: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            retries: 2,
        }),
    }));
    let command = command(pb::CommandOperation::RunJob, workload);
    let (tx, rx) = mpsc::unbounded_channel();
    let result = runtime.execute(&command, tx).await;
    script.assert_done();
    assert_eq!(result, Ok(()));

    let events = drain(rx);
    assert_eq!(
        steps(&events),
        [
            ("run_job".to_owned(), pb::StepStatus::Started),
            ("run_job".to_owned(), pb::StepStatus::Succeeded),
        ]
    );
    let chunks: Vec<&pb::LogChunk> = events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Log(chunk) => Some(chunk),
            _ => None,
        })
        .collect();
    assert_eq!(chunks.len(), 1);
    let chunk = chunks[0];
    assert!(chunk.from_command);
    assert_eq!(chunk.instance, "migrate-00000c0001-abcde");
    assert_eq!(chunk.deployment_id, "deployment-1");
    assert_eq!(chunk.organization_id, "org-1");
    let texts: Vec<&str> = chunk.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["migrating 3 tables", "done"]);
    assert_eq!(chunk.lines[1].time.unwrap().nanos, 500_000_000);
}

#[tokio::test]
async fn running_pods_are_followed_until_the_workload_stops() {
    let script = Arc::new(Script::default());
    script.apply(&format!("/api/v1/namespaces/{NS}"), |_| {});
    script.apply(&deployments_path(), |body| {
        assert_eq!(body["spec"]["replicas"], 1)
    });
    script.expect(
        "DELETE",
        &format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/api"),
        |_, _| {},
        404,
        Reply::Json(not_found()),
    );
    script.get(&deployments_path(), deployment_status(1, 1));
    let mut running = pod(
        "api-7f9c-x2x4q",
        json!({"name": "api", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}),
    );
    running["status"]["startTime"] = json!("2026-11-26T14:59:59Z");
    script.pods(SELECTOR, json!([running]));
    // The log stays open (as a followed log does) until the follower lets go of it.
    let (log, lines) = mpsc::unbounded_channel();
    log.send(Bytes::from_static(
        b"2026-11-26T15:00:00.123456789Z starting\n2026-11-26T15:00:01Z",
    ))
    .unwrap();
    // A line cut across two reads is still one line.
    log.send(Bytes::from_static(b" ready\n")).unwrap();
    script.follow_log("api-7f9c-x2x4q", Reply::Stream(lines));

    let runtime = runtime(script.clone());
    let command = command(
        pb::CommandOperation::Apply,
        application(1, Vec::new(), Vec::new()),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    assert_eq!(runtime.execute(&command, tx).await, Ok(()));

    let chunk = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await.expect("events open") {
                RuntimeEvent::Log(chunk) => break chunk,
                _ => continue,
            }
        }
    })
    .await
    .expect("a log chunk of the followed pod");
    assert!(!chunk.from_command);
    assert_eq!(chunk.instance, "api-7f9c-x2x4q");
    assert_eq!(chunk.organization_id, "org-1");
    assert_eq!(chunk.project_id, "project-1");
    assert_eq!(chunk.environment_id, "env-1");
    assert_eq!(chunk.service_id, SERVICE_ID);
    assert_eq!(chunk.deployment_id, "deployment-1");
    assert_eq!(chunk.stream(), slipway_proto::logs::v1::LogStream::Stdout);
    let texts: Vec<&str> = chunk.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["starting", "ready"]);
    let times: Vec<(i64, i32)> = chunk
        .lines
        .iter()
        .map(|l| {
            let t = l.time.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    // 2026-11-26T15:00:00Z is 1795705200 seconds after the epoch.
    assert_eq!(times, [(1_795_705_200, 123_456_789), (1_795_705_201, 0)]);
    assert_eq!(runtime.followed_pods(NS, SERVICE_ID), 1);
    script.assert_done();

    // Stop: the follower ends once the instances are gone, and lets go of the stream.
    script.expect(
        "PATCH",
        &format!("{}/scale", deployments_path()),
        |_, body| assert_eq!(body, &json!({"spec": {"replicas": 0}})),
        200,
        Reply::Json(json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"replicas": 0}, "status": {"replicas": 0}
        })),
    );
    script.pods(SELECTOR, json!([]));
    let stop = self::command(pb::CommandOperation::Stop, bare(ServiceKind::Application));
    let (tx, _rx) = mpsc::unbounded_channel();
    assert_eq!(runtime.execute(&stop, tx).await, Ok(()));
    tokio::time::timeout(Duration::from_secs(5), log.closed())
        .await
        .expect("the follower dropped the log stream");
    assert_eq!(runtime.followed_pods(NS, SERVICE_ID), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // No further log request.
    script.assert_done();
}
