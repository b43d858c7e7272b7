//! Preview environments on real PostgreSQL and NATS JetStream: identity and catalog in one
//! in-process server, the orchestrator's `DeploymentService`, `PreviewService` and engine
//! beside them, the webhook endpoint on a real HTTP listener, a scripted agent answering
//! the commands and a scripted builder answering the build jobs.
//!
//! Webhook bodies are realistic GitHub `pull_request` and GitLab `Merge Request Hook`
//! payloads, signed (or tokened) with the test's secrets and POSTed over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{BoxError, ControlPlane, cluster_row, create_project, org, with_token};
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;
use slipway_events::{ConsumerSpec, EventBus, EventBusExt as _, StreamKind};
use slipway_kit::GrpcServer;
use slipway_orchestrator::api::{DeploymentsOptions, mount_deployments};
use slipway_orchestrator::engine::{EngineConfig, EngineHandle};
use slipway_orchestrator::previews::signature::github_signature;
use slipway_orchestrator::previews::{Previews, WebhookSecrets, mount_previews, router};
use slipway_proto::agent::v1 as agent;
use slipway_proto::build::v1 as build;
use slipway_proto::catalog::v1 as cpb;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::deployment_service_client::DeploymentServiceClient;
use slipway_proto::deploy::v1::preview_service_client::PreviewServiceClient;
use slipway_telemetry::metrics::Metrics;
use tonic::Code;
use tonic::transport::Channel;

const GITHUB_SECRET: &str = "gh-test-secret-0123456789";
const GITLAB_TOKEN: &str = "gl-test-token-0123456789";
const SHOP_REPO: &str = "https://github.com/acme/shop.git";
const OTHER_REPO: &str = "https://github.com/acme/assets.git";

fn fast() -> EngineConfig {
    EngineConfig {
        lease_ttl: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        command_timeout: Duration::from_secs(30),
        build_timeout: Duration::from_secs(30),
        ..EngineConfig::default()
    }
}

/// The scripted agent: answers every command of its cluster with success, and remembers
/// the commands.
#[derive(Clone, Default)]
struct FakeAgent {
    applied: Arc<Mutex<Vec<agent::Command>>>,
}

impl FakeAgent {
    fn start(&self, bus: Arc<dyn EventBus>, cluster: &str) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let cluster = cluster.to_owned();
        tokio::spawn(async move {
            let spec = ConsumerSpec::new(StreamKind::Agent, format!("fake-agent-{cluster}"))
                .filter(format!("slipway.agent.{cluster}.commands"))
                .ack_wait(Duration::from_secs(5));
            let mut consumer = bus.consumer(spec).await.unwrap();
            while let Some(Ok(delivery)) = consumer.next().await {
                let command = agent::Command::decode(delivery.payload().as_ref()).unwrap();
                me.applied.lock().unwrap().push(command.clone());
                let subject = format!("slipway.agent.{cluster}.reports");
                let mut steps: Vec<(String, &str)> = command
                    .workloads
                    .iter()
                    .map(|w| (w.service_id.clone(), "apply"))
                    .collect();
                steps.push((String::new(), "command"));
                for (index, (service_id, step)) in steps.into_iter().enumerate() {
                    let sequence = u32::try_from(index + 1).unwrap();
                    let report = agent::AgentReport {
                        report_id: uuid::Uuid::now_v7().to_string(),
                        cluster_id: cluster.clone(),
                        session_id: "fake".into(),
                        receive_time: None,
                        report: Some(agent::agent_report::Report::StepReport(agent::StepReport {
                            command_id: command.command_id.clone(),
                            deployment_id: command.deployment_id.clone(),
                            service_id,
                            step: step.into(),
                            status: agent::StepStatus::Succeeded as i32,
                            runtime_state: agent::RuntimeState::Running as i32,
                            sequence,
                            ..Default::default()
                        })),
                    };
                    bus.publish_proto(&subject, &report.report_id, &report)
                        .await
                        .unwrap();
                }
                delivery.ack().await.unwrap();
            }
        })
    }

    /// The commands of one deployment.
    fn commands_of(&self, deployment_id: &str) -> Vec<agent::Command> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.deployment_id == deployment_id)
            .cloned()
            .collect()
    }
}

/// The scripted builder: answers every build job with a pushed image, and remembers the
/// jobs (which branch each service was built from).
#[derive(Clone, Default)]
struct FakeBuilder {
    jobs: Arc<Mutex<Vec<build::BuildJob>>>,
}

impl FakeBuilder {
    fn start(&self, bus: Arc<dyn EventBus>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let spec = ConsumerSpec::new(StreamKind::Builds, "fake-builder")
                .filter("slipway.build.jobs")
                .ack_wait(Duration::from_secs(5));
            let mut consumer = bus.consumer(spec).await.unwrap();
            while let Some(Ok(delivery)) = consumer.next().await {
                let job = build::BuildJob::decode(delivery.payload().as_ref()).unwrap();
                me.jobs.lock().unwrap().push(job.clone());
                let source = job.source.clone().unwrap_or_default();
                let result = build::BuildResult {
                    job_id: job.job_id.clone(),
                    organization_id: job.organization_id.clone(),
                    environment_id: job.environment_id.clone(),
                    service_id: job.service_id.clone(),
                    deployment_id: job.deployment_id.clone(),
                    outcome: build::BuildOutcome::Succeeded as i32,
                    image_reference: format!(
                        "registry.test/{}:{}",
                        job.service_id,
                        source.r#ref.replace('/', "-")
                    ),
                    ..Default::default()
                };
                bus.publish_proto(
                    "slipway.build.results",
                    &format!("{}.result", job.job_id),
                    &result,
                )
                .await
                .unwrap();
                delivery.ack().await.unwrap();
            }
        })
    }

    /// (service id, ref) of the jobs of one deployment.
    fn refs_of(&self, deployment_id: &str) -> Vec<(String, String)> {
        let mut refs: Vec<_> = self
            .jobs
            .lock()
            .unwrap()
            .iter()
            .filter(|j| j.deployment_id == deployment_id)
            .map(|j| {
                (
                    j.service_id.clone(),
                    j.source.clone().unwrap_or_default().r#ref,
                )
            })
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }
}

struct Harness {
    channel: Channel,
    control: Channel,
    webhooks: String,
    previews: Previews,
    admin: String,
    other_admin: String,
    org: String,
    cluster: String,
    project: cpb::Project,
    agent: FakeAgent,
    builder: FakeBuilder,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
    _engine: EngineHandle,
    _control_plane: ControlPlane,
}

impl Harness {
    async fn start() -> Self {
        let mut control_plane = ControlPlane::start("preview-test").await;
        let (server, engine) = mount_deployments(
            GrpcServer::new(
                slipway_config::ServerSettings::default(),
                Metrics::new("preview-test-orch").unwrap(),
            ),
            &control_plane.platform,
            DeploymentsOptions {
                catalog: Some(control_plane.catalog.clone()),
                services: Some(control_plane.services.clone()),
                engine: fast(),
            },
        );
        let previews = Previews::new(
            engine.engine().clone(),
            control_plane.catalog.clone(),
            control_plane.platform.db.clone(),
        );
        let server = mount_previews(server, &control_plane.platform, previews.clone());
        control_plane
            .sandbox
            .start("orchestrator", move |listener, shutdown| async move {
                server.serve(listener, shutdown).await?;
                Ok::<(), BoxError>(())
            })
            .await
            .unwrap();
        let channel = control_plane.sandbox.channel("orchestrator").unwrap();

        // The webhook endpoint on its own listener, as `[previews] listen` serves it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let routes = router(
            previews.clone(),
            WebhookSecrets {
                github: Some(GITHUB_SECRET.into()),
                gitlab: Some(GITLAB_TOKEN.into()),
            },
            "/webhooks",
        );
        let webhook_task = tokio::spawn(async move {
            slipway_orchestrator::previews::serve_webhooks(
                listener,
                routes,
                std::future::pending(),
            )
            .await
            .unwrap();
        });

        let identity = control_plane.identity();
        let (org_a, admin) = org(&identity, "org-a").await;
        let (_, other_admin) = org(&identity, "org-b").await;
        let cluster = cluster_row(&control_plane.platform, &org_a, "c1").await;
        let control = control_plane.control.clone();
        let project = create_project(&control, &org_a, &admin, "shop").await;
        let agent = FakeAgent::default();
        let builder = FakeBuilder::default();
        let tasks = vec![
            agent.start(Arc::clone(&control_plane.bus), &cluster),
            builder.start(Arc::clone(&control_plane.bus)),
            webhook_task,
        ];
        Self {
            channel,
            control,
            webhooks: format!("http://{address}/webhooks"),
            previews,
            admin,
            other_admin,
            org: org_a,
            cluster,
            project,
            agent,
            builder,
            _tasks: tasks,
            _engine: engine,
            _control_plane: control_plane,
        }
    }

    fn deployments(&self) -> DeploymentServiceClient<Channel> {
        DeploymentServiceClient::new(self.channel.clone())
    }

    fn api(&self) -> PreviewServiceClient<Channel> {
        PreviewServiceClient::new(self.channel.clone())
    }

    /// A blueprint environment with an application built from the shop repository on
    /// `main`, one built from another repository, and a container. Returns its id and
    /// its services' ids by name.
    async fn blueprint(
        &self,
        name: &str,
        auto_preview: bool,
        mode: cpb::PreviewMode,
    ) -> (String, Vec<(String, String)>) {
        let env =
            cpb::environment_service_client::EnvironmentServiceClient::new(self.control.clone())
                .create_environment(with_token(
                    cpb::CreateEnvironmentRequest {
                        project_id: self.project.id.clone(),
                        environment: Some(cpb::Environment {
                            name: name.into(),
                            mode: EnvironmentMode::Staging.into(),
                            cluster_id: self.cluster.clone(),
                            blueprint: true,
                            preview_settings: Some(cpb::PreviewSettings {
                                auto_preview,
                                mode: mode.into(),
                            }),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    &self.admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .environment
                .unwrap();
        let runtime = cpb::RuntimeSettings {
            min_instances: 1,
            max_instances: 1,
            ..Default::default()
        };
        let application = |repository: &str| {
            cpb::service::Settings::Application(cpb::ApplicationSettings {
                source: Some(cpb::GitSource {
                    repository_url: repository.into(),
                    branch: "main".into(),
                    ..Default::default()
                }),
                runtime: Some(runtime.clone()),
            })
        };
        let specs = vec![
            ("web", ServiceKind::Application, application(SHOP_REPO)),
            ("assets", ServiceKind::Application, application(OTHER_REPO)),
            (
                "cache",
                ServiceKind::Container,
                cpb::service::Settings::Container(cpb::ContainerSettings {
                    source: Some(cpb::ImageSource {
                        image: "library/redis".into(),
                        tag: "7".into(),
                        ..Default::default()
                    }),
                    runtime: Some(runtime.clone()),
                }),
            ),
        ];
        let mut ids = Vec::new();
        for (service, kind, settings) in specs {
            let created =
                cpb::service_service_client::ServiceServiceClient::new(self.control.clone())
                    .create_service(with_token(
                        cpb::CreateServiceRequest {
                            environment_id: env.id.clone(),
                            service: Some(cpb::Service {
                                name: service.into(),
                                kind: kind.into(),
                                settings: Some(settings),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                        &self.admin,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .service
                    .unwrap();
            ids.push((service.to_owned(), created.id));
        }
        (env.id, ids)
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut request = http::Request::post(format!("{}{path}", self.webhooks))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = client
            .request(
                request
                    .body(Full::new(Bytes::from(body.to_owned())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    }

    /// POSTs a GitHub delivery signed with `secret` (`None`: unsigned).
    async fn github(&self, delivery: &str, body: &str, secret: Option<&str>) -> (u16, String) {
        let mut headers = vec![
            ("x-github-event", "pull_request".to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("user-agent", "GitHub-Hookshot/test".to_owned()),
        ];
        if let Some(secret) = secret {
            headers.push((
                "x-hub-signature-256",
                github_signature(secret, body.as_bytes()),
            ));
        }
        self.post(&format!("/github/{}", self.org), &headers, body)
            .await
    }

    /// POSTs a GitLab delivery with `token` (`None`: no token).
    async fn gitlab(&self, delivery: &str, body: &str, token: Option<&str>) -> (u16, String) {
        let mut headers = vec![
            ("x-gitlab-event", "Merge Request Hook".to_owned()),
            ("x-gitlab-event-uuid", delivery.to_owned()),
        ];
        if let Some(token) = token {
            headers.push(("x-gitlab-token", token.to_owned()));
        }
        self.post(&format!("/gitlab/{}", self.org), &headers, body)
            .await
    }

    async fn list(&self, blueprint: &str) -> Vec<pb::PreviewEnvironment> {
        self.api()
            .list_preview_environments(with_token(
                pb::ListPreviewEnvironmentsRequest {
                    project_id: self.project.id.clone(),
                    blueprint_environment_id: blueprint.into(),
                    ..Default::default()
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .preview_environments
    }

    async fn environment_deployments(&self, environment: &str) -> Vec<pb::Deployment> {
        self.deployments()
            .list_deployments(with_token(
                pb::ListDeploymentsRequest {
                    organization_id: self.org.clone(),
                    environment_id: environment.into(),
                    page_size: 100,
                    ..Default::default()
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployments
    }

    async fn wait_final(&self, id: &str) -> pb::Deployment {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let d = self
                .deployments()
                .get_deployment(with_token(
                    pb::GetDeploymentRequest { id: id.into() },
                    &self.admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .deployment
                .unwrap();
            if slipway_orchestrator::engine::status::is_final(d.status) {
                return d;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deployment {id} stuck in {:?}",
                d.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn catalog_environment(&self, id: &str) -> Result<cpb::Environment, tonic::Status> {
        cpb::environment_service_client::EnvironmentServiceClient::new(self.control.clone())
            .get_environment(with_token(
                cpb::GetEnvironmentRequest { id: id.into() },
                &self.admin,
            ))
            .await
            .map(|r| r.into_inner().environment.unwrap())
    }
}

fn github_body(action: &str, number: u64, branch: &str, sha: &str) -> String {
    serde_json::json!({
        "action": action,
        "number": number,
        "pull_request": {
            "url": format!("https://api.github.com/repos/acme/shop/pulls/{number}"),
            "id": 1_000_000 + number,
            "html_url": format!("https://github.com/acme/shop/pull/{number}"),
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "title": "Log in with passkeys",
            "user": {"login": "ada", "id": 1, "type": "User"},
            "merged": action == "closed",
            "head": {
                "label": format!("acme:{branch}"),
                "ref": branch,
                "sha": sha,
                "repo": {
                    "id": 42, "name": "shop", "full_name": "acme/shop", "private": true,
                    "html_url": "https://github.com/acme/shop",
                    "clone_url": "https://github.com/acme/shop.git",
                    "ssh_url": "git@github.com:acme/shop.git"
                }
            },
            "base": {
                "label": "acme:main",
                "ref": "main",
                "sha": "0123456789abcdef0123456789abcdef01234567",
                "repo": {
                    "id": 42, "name": "shop", "full_name": "acme/shop", "private": true,
                    "html_url": "https://github.com/acme/shop",
                    "clone_url": "https://github.com/acme/shop.git",
                    "ssh_url": "git@github.com:acme/shop.git"
                }
            }
        },
        "repository": {
            "id": 42, "name": "shop", "full_name": "acme/shop", "private": true,
            "owner": {"login": "acme", "id": 7, "type": "Organization"},
            "html_url": "https://github.com/acme/shop",
            "clone_url": "https://github.com/acme/shop.git",
            "ssh_url": "git@github.com:acme/shop.git",
            "default_branch": "main"
        },
        "sender": {"login": "ada", "id": 1, "type": "User"}
    })
    .to_string()
}

fn gitlab_body(action: &str, iid: u64, branch: &str, sha: &str) -> String {
    serde_json::json!({
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "name": "Ada", "username": "ada"},
        "project": {
            "id": 15,
            "name": "shop",
            "web_url": "https://github.com/acme/shop",
            "git_ssh_url": "git@github.com:acme/shop.git",
            "git_http_url": "https://github.com/acme/shop.git",
            "path_with_namespace": "acme/shop",
            "default_branch": "main"
        },
        "object_attributes": {
            "id": 99,
            "iid": iid,
            "title": "Faster checkout",
            "action": action,
            "state": match action { "merge" => "merged", "close" => "closed", _ => "opened" },
            "source_branch": branch,
            "target_branch": "main",
            "source_project_id": 15,
            "target_project_id": 15,
            "url": format!("https://github.com/acme/shop/-/merge_requests/{iid}"),
            "last_commit": {"id": sha, "message": "wip", "author": {"name": "Ada"}}
        },
        "labels": [],
        "changes": {},
        "repository": {
            "name": "shop",
            "url": "git@github.com:acme/shop.git",
            "homepage": "https://github.com/acme/shop"
        }
    })
    .to_string()
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

#[tokio::test]
async fn github_pull_request_opens_redeploys_and_closes_a_preview() {
    let h = Harness::start().await;
    let (blueprint, blueprint_services) =
        h.blueprint("staging", true, cpb::PreviewMode::Auto).await;

    // Opened: a preview cloned from the blueprint and deployed.
    let opened = github_body("opened", 7, "feature/passkeys", &sha('a'));
    let (status, text) = h.github("d-open", &opened, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200, "{text}");
    let previews = h.list(&blueprint).await;
    assert_eq!(previews.len(), 1);
    let preview = previews[0].clone();
    assert_eq!(preview.name, "staging-pr-7");
    assert_eq!(preview.blueprint_environment_id, blueprint);
    assert_eq!(preview.cluster_id, h.cluster);
    let pr = preview.pull_request.clone().unwrap();
    assert_eq!(pr.number, 7);
    assert_eq!(pr.source_branch, "feature/passkeys");
    assert_eq!(pr.target_branch, "main");
    assert_eq!(pr.repository_url, SHOP_REPO);
    assert_eq!(preview.deployed_git_commit_sha, sha('a'));
    let environment = h.catalog_environment(&preview.id).await.unwrap();
    assert_eq!(environment.mode, EnvironmentMode::Preview as i32);
    assert_eq!(environment.source_environment_id, blueprint);

    let first = h.environment_deployments(&preview.id).await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].trigger,
        pb::DeploymentTrigger::PreviewWebhook as i32
    );
    assert_eq!(first[0].triggered_by, "orchestrator");
    assert_eq!(preview.last_deployment_id, first[0].id);
    let deployed = h.wait_final(&first[0].id).await;
    assert_eq!(
        deployed.status,
        pb::DeploymentStatus::Deployed as i32,
        "{}",
        deployed.error_message
    );
    // The shop repository's application builds the pull request's branch; the other
    // repository's keeps the blueprint's.
    let names: std::collections::HashMap<String, String> = deployed
        .service_statuses
        .iter()
        .map(|s| (s.service_id.clone(), s.service_name.clone()))
        .collect();
    let mut built: Vec<(String, String)> = h
        .builder
        .refs_of(&deployed.id)
        .into_iter()
        .map(|(id, r)| (names.get(&id).cloned().unwrap_or(id), r))
        .collect();
    built.sort();
    assert_eq!(
        built,
        vec![
            ("assets".to_owned(), "main".to_owned()),
            ("web".to_owned(), "feature/passkeys".to_owned()),
        ]
    );
    // The preview's own services were deployed, not the blueprint's.
    let commands = h.agent.commands_of(&deployed.id);
    assert!(!commands.is_empty());
    for command in &commands {
        for workload in &command.workloads {
            assert!(
                !blueprint_services
                    .iter()
                    .any(|(_, id)| id == &workload.service_id),
                "a blueprint service was deployed"
            );
        }
    }

    // The same delivery again (GitHub's "Redeliver"): nothing new.
    let (status, text) = h.github("d-open", &opened, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("already handled"), "{text}");
    assert_eq!(h.list(&blueprint).await.len(), 1);
    assert_eq!(h.environment_deployments(&preview.id).await.len(), 1);

    // Bad or missing signatures are refused, and change nothing.
    let pushed = github_body("synchronize", 7, "feature/passkeys", &sha('b'));
    let (status, _) = h.github("d-forged", &pushed, Some("not-the-secret")).await;
    assert_eq!(status, 403);
    let (status, _) = h.github("d-unsigned", &pushed, None).await;
    assert_eq!(status, 401);
    let tampered = pushed.replace("feature/passkeys", "feature/evil");
    let mut headers = vec![
        ("x-github-event", "pull_request".to_owned()),
        ("x-github-delivery", "d-tampered".to_owned()),
        (
            "x-hub-signature-256",
            github_signature(GITHUB_SECRET, pushed.as_bytes()),
        ),
    ];
    let (status, _) = h
        .post(&format!("/github/{}", h.org), &headers, &tampered)
        .await;
    assert_eq!(status, 403);
    assert_eq!(h.environment_deployments(&preview.id).await.len(), 1);
    assert_eq!(h.list(&blueprint).await.len(), 1);

    // Synchronize: redeployed.
    let (status, text) = h.github("d-push", &pushed, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200, "{text}");
    let after_push = h.environment_deployments(&preview.id).await;
    assert_eq!(after_push.len(), 2);
    let redeploy = after_push
        .iter()
        .find(|d| d.id != first[0].id)
        .unwrap()
        .clone();
    assert_eq!(
        redeploy.trigger,
        pb::DeploymentTrigger::PreviewWebhook as i32
    );
    assert_eq!(
        h.wait_final(&redeploy.id).await.status,
        pb::DeploymentStatus::Deployed as i32
    );
    let current = h.list(&blueprint).await;
    assert_eq!(current[0].deployed_git_commit_sha, sha('b'));
    assert_eq!(current[0].last_deployment_id, redeploy.id);
    // The same push under another delivery id queues nothing more.
    let (status, _) = h.github("d-push-2", &pushed, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    assert_eq!(h.environment_deployments(&preview.id).await.len(), 2);

    // Closed (merged): the catalog environment goes, and a teardown removes what ran.
    headers.clear();
    let closed = github_body("closed", 7, "feature/passkeys", &sha('b'));
    let (status, text) = h.github("d-close", &closed, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        h.catalog_environment(&preview.id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(h.list(&blueprint).await.is_empty());
    let all = h.environment_deployments(&preview.id).await;
    let teardown = all
        .iter()
        .find(|d| d.action == pb::DeploymentAction::Delete as i32)
        .expect("a teardown deployment")
        .clone();
    assert_eq!(
        teardown.trigger,
        pb::DeploymentTrigger::CatalogDeletion as i32
    );
    let torn = h.wait_final(&teardown.id).await;
    assert_eq!(
        torn.status,
        pb::DeploymentStatus::Deleted as i32,
        "{}",
        torn.error_message
    );
    let deletes = h.agent.commands_of(&teardown.id);
    assert!(
        deletes
            .iter()
            .any(|c| c.operation == agent::CommandOperation::Delete as i32),
        "the agent was told to delete"
    );
    // The blueprint is untouched.
    assert!(h.catalog_environment(&blueprint).await.is_ok());
    // A redelivered close does nothing more.
    let (status, text) = h.github("d-close", &closed, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    assert!(text.contains("already handled"), "{text}");
    assert_eq!(
        h.environment_deployments(&preview.id).await.len(),
        all.len()
    );

    // Reopened: a new preview.
    let reopened = github_body("reopened", 7, "feature/passkeys", &sha('b'));
    let (status, _) = h.github("d-reopen", &reopened, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    let again = h.list(&blueprint).await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, preview.id);
}

#[tokio::test]
async fn gitlab_merge_request_opens_redeploys_and_merges() {
    let h = Harness::start().await;
    let (blueprint, _) = h.blueprint("qa", true, cpb::PreviewMode::Unspecified).await;

    // A wrong or missing token is refused before anything happens.
    let opened = gitlab_body("open", 3, "faster-checkout", &sha('c'));
    let (status, _) = h
        .gitlab("g-open", &opened, Some("wrong-token-0123456789"))
        .await;
    assert_eq!(status, 403);
    let (status, _) = h.gitlab("g-open", &opened, None).await;
    assert_eq!(status, 401);
    assert!(h.list(&blueprint).await.is_empty());

    // Open: created and deployed. The refused attempts above did not record the delivery.
    let (status, text) = h.gitlab("g-open", &opened, Some(GITLAB_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    let previews = h.list(&blueprint).await;
    assert_eq!(previews.len(), 1);
    let preview = previews[0].clone();
    assert_eq!(preview.name, "qa-pr-3");
    let first = h.environment_deployments(&preview.id).await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        h.wait_final(&first[0].id).await.status,
        pb::DeploymentStatus::Deployed as i32
    );

    // Replayed delivery: nothing new.
    let (status, _) = h.gitlab("g-open", &opened, Some(GITLAB_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(h.environment_deployments(&preview.id).await.len(), 1);

    // An update that is not a push (same head commit, e.g. a title change): no redeploy.
    let retitled = gitlab_body("update", 3, "faster-checkout", &sha('c'));
    let (status, _) = h.gitlab("g-title", &retitled, Some(GITLAB_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(h.environment_deployments(&preview.id).await.len(), 1);

    // An update with new commits: redeployed.
    let pushed = gitlab_body("update", 3, "faster-checkout", &sha('d'));
    let (status, _) = h.gitlab("g-push", &pushed, Some(GITLAB_TOKEN)).await;
    assert_eq!(status, 200);
    let deployments = h.environment_deployments(&preview.id).await;
    assert_eq!(deployments.len(), 2);
    for deployment in &deployments {
        assert_eq!(
            h.wait_final(&deployment.id).await.status,
            pb::DeploymentStatus::Deployed as i32
        );
    }
    assert_eq!(
        h.list(&blueprint).await[0].deployed_git_commit_sha,
        sha('d')
    );

    // Merge: deleted.
    let merged = gitlab_body("merge", 3, "faster-checkout", &sha('d'));
    let (status, _) = h.gitlab("g-merge", &merged, Some(GITLAB_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(h.list(&blueprint).await.is_empty());
    assert_eq!(
        h.catalog_environment(&preview.id).await.unwrap_err().code(),
        Code::NotFound
    );
    let teardown = h
        .environment_deployments(&preview.id)
        .await
        .into_iter()
        .find(|d| d.action == pb::DeploymentAction::Delete as i32)
        .unwrap();
    assert_eq!(
        h.wait_final(&teardown.id).await.status,
        pb::DeploymentStatus::Deleted as i32
    );
}

#[tokio::test]
async fn webhooks_leave_other_branches_forks_and_manual_blueprints_alone() {
    let h = Harness::start().await;
    let (manual, _) = h.blueprint("manual", false, cpb::PreviewMode::Auto).await;

    // auto_preview off: an opened pull request makes no preview.
    let opened = github_body("opened", 11, "topic", &sha('e'));
    let (status, text) = h.github("m-open", &opened, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200, "{text}");
    assert!(h.list(&manual).await.is_empty());

    // A pull request into a branch no application builds, and one from a fork.
    let (auto, _) = h.blueprint("auto", true, cpb::PreviewMode::Auto).await;
    let mut elsewhere: serde_json::Value =
        serde_json::from_str(&github_body("opened", 12, "topic", &sha('e'))).unwrap();
    elsewhere["pull_request"]["base"]["ref"] = "release-1".into();
    let elsewhere = elsewhere.to_string();
    let (status, _) = h.github("m-release", &elsewhere, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    let mut fork: serde_json::Value =
        serde_json::from_str(&github_body("opened", 13, "topic", &sha('e'))).unwrap();
    fork["pull_request"]["head"]["repo"]["full_name"] = "mallory/shop".into();
    fork["pull_request"]["head"]["label"] = "mallory:topic".into();
    let fork = fork.to_string();
    let (status, _) = h.github("m-fork", &fork, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    assert!(h.list(&auto).await.is_empty());

    // Events and actions previews do not follow are accepted and ignored.
    let labeled = github_body("labeled", 14, "topic", &sha('e'));
    let (status, _) = h.github("m-label", &labeled, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 202);
    let ping = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let headers = vec![
        ("x-github-event", "ping".to_owned()),
        ("x-github-delivery", "m-ping".to_owned()),
        (
            "x-hub-signature-256",
            github_signature(GITHUB_SECRET, ping.as_bytes()),
        ),
    ];
    let (status, _) = h.post(&format!("/github/{}", h.org), &headers, ping).await;
    assert_eq!(status, 200);
    assert!(h.list(&auto).await.is_empty());
}

#[tokio::test]
async fn previews_on_demand_through_the_api() {
    let h = Harness::start().await;
    let (blueprint, _) = h.blueprint("staging", false, cpb::PreviewMode::Auto).await;
    let request = |request_id: &str, number: u64| pb::CreatePreviewEnvironmentRequest {
        project_id: h.project.id.clone(),
        preview_environment: Some(pb::PreviewEnvironment {
            blueprint_environment_id: blueprint.clone(),
            pull_request: Some(pb::PullRequest {
                repository_url: SHOP_REPO.into(),
                number,
                source_branch: "feature/search".into(),
                target_branch: "main".into(),
                web_url: format!("https://github.com/acme/shop/pull/{number}"),
            }),
            ..Default::default()
        }),
        request_id: request_id.into(),
    };

    // Created and deployed at once (preview mode AUTO).
    let created = h
        .api()
        .create_preview_environment(with_token(request("req-1", 21), &h.admin))
        .await
        .unwrap()
        .into_inner();
    let preview = created.preview_environment.unwrap();
    let deployment = created.deployment.unwrap();
    assert_eq!(preview.name, "staging-pr-21");
    assert_eq!(deployment.environment_id, preview.id);
    assert_eq!(deployment.trigger, pb::DeploymentTrigger::Manual as i32);
    let done = h.wait_final(&deployment.id).await;
    assert_eq!(
        done.status,
        pb::DeploymentStatus::Deployed as i32,
        "{}",
        done.error_message
    );

    // The same request id returns the first result; another one for the same pull
    // request is refused.
    let repeat = h
        .api()
        .create_preview_environment(with_token(request("req-1", 21), &h.admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat.preview_environment.unwrap().id, preview.id);
    assert_eq!(repeat.deployment.unwrap().id, deployment.id);
    let taken = h
        .api()
        .create_preview_environment(with_token(request("req-2", 21), &h.admin))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    // Bad input, another organization, a non-blueprint.
    let mut bad = request("", 0);
    bad.preview_environment.as_mut().unwrap().name = "Not A Label".into();
    let invalid = h
        .api()
        .create_preview_environment(with_token(bad, &h.admin))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&invalid);
    let fields: Vec<String> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert!(
        fields.contains(&"preview_environment.name".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"preview_environment.pull_request.number".to_owned()),
        "{fields:?}"
    );
    let foreign = h
        .api()
        .create_preview_environment(with_token(request("", 22), &h.other_admin))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    let hidden = h
        .api()
        .get_preview_environment(with_token(
            pb::GetPreviewEnvironmentRequest {
                id: preview.id.clone(),
            },
            &h.other_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let mut not_blueprint = request("", 23);
    not_blueprint
        .preview_environment
        .as_mut()
        .unwrap()
        .blueprint_environment_id = preview.id.clone();
    let refused = h
        .api()
        .create_preview_environment(with_token(not_blueprint, &h.admin))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Get and list (filters included).
    let got = h
        .api()
        .get_preview_environment(with_token(
            pb::GetPreviewEnvironmentRequest {
                id: preview.id.clone(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .preview_environment
        .unwrap();
    assert_eq!(got.last_deployment_id, deployment.id);
    assert_eq!(
        got.last_deployment_status,
        pb::DeploymentStatus::Deployed as i32
    );
    let not_a_preview = h
        .api()
        .get_preview_environment(with_token(
            pb::GetPreviewEnvironmentRequest {
                id: blueprint.clone(),
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(not_a_preview.code(), Code::NotFound);
    let second = h
        .api()
        .create_preview_environment(with_token(request("", 24), &h.admin))
        .await
        .unwrap()
        .into_inner()
        .preview_environment
        .unwrap();
    let page = h
        .api()
        .list_preview_environments(with_token(
            pb::ListPreviewEnvironmentsRequest {
                project_id: h.project.id.clone(),
                page_size: 1,
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.preview_environments.len(), 1);
    assert_eq!(page.preview_environments[0].id, second.id, "newest first");
    let rest = h
        .api()
        .list_preview_environments(with_token(
            pb::ListPreviewEnvironmentsRequest {
                project_id: h.project.id.clone(),
                page_size: 1,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.preview_environments.len(), 1);
    assert_eq!(rest.preview_environments[0].id, preview.id);
    assert!(rest.next_page_token.is_empty());
    let by_number = h
        .api()
        .list_preview_environments(with_token(
            pb::ListPreviewEnvironmentsRequest {
                project_id: h.project.id.clone(),
                repository_url: "git@github.com:acme/shop.git".into(),
                pull_request_number: 24,
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .preview_environments;
    assert_eq!(
        by_number.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![second.id.clone()]
    );

    // Delete: a stale etag is refused; then the environment goes and a teardown runs.
    let stale = h
        .api()
        .delete_preview_environment(with_token(
            pb::DeletePreviewEnvironmentRequest {
                id: preview.id.clone(),
                etag: "stale".into(),
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    h.api()
        .delete_preview_environment(with_token(
            pb::DeletePreviewEnvironmentRequest {
                id: preview.id.clone(),
                etag: got.etag.clone(),
            },
            &h.admin,
        ))
        .await
        .unwrap();
    assert_eq!(
        h.catalog_environment(&preview.id).await.unwrap_err().code(),
        Code::NotFound
    );
    let teardown = h
        .environment_deployments(&preview.id)
        .await
        .into_iter()
        .find(|d| d.action == pb::DeploymentAction::Delete as i32)
        .unwrap();
    assert_eq!(
        teardown.trigger,
        pb::DeploymentTrigger::CatalogDeletion as i32
    );
    assert_eq!(
        h.wait_final(&teardown.id).await.status,
        pb::DeploymentStatus::Deleted as i32
    );
    let gone = h
        .api()
        .get_preview_environment(with_token(
            pb::GetPreviewEnvironmentRequest { id: preview.id },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn on_demand_mode_creates_without_deploying() {
    let h = Harness::start().await;
    let (blueprint, _) = h.blueprint("demo", true, cpb::PreviewMode::OnDemand).await;

    // The webhook makes the preview but deploys nothing, on open or on push.
    let opened = github_body("opened", 31, "idea", &sha('f'));
    let (status, _) = h.github("o-open", &opened, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    let previews = h.list(&blueprint).await;
    assert_eq!(previews.len(), 1);
    assert!(previews[0].last_deployment_id.is_empty());
    let pushed = github_body("synchronize", 31, "idea", &sha('9'));
    let (status, _) = h.github("o-push", &pushed, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    assert!(h.environment_deployments(&previews[0].id).await.is_empty());

    // Through the API too: no deployment in the answer.
    let created = h
        .api()
        .create_preview_environment(with_token(
            pb::CreatePreviewEnvironmentRequest {
                project_id: h.project.id.clone(),
                preview_environment: Some(pb::PreviewEnvironment {
                    name: "demo-manual".into(),
                    blueprint_environment_id: blueprint.clone(),
                    pull_request: Some(pb::PullRequest {
                        repository_url: SHOP_REPO.into(),
                        number: 32,
                        source_branch: "idea-2".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.deployment.is_none());
    assert_eq!(created.preview_environment.unwrap().name, "demo-manual");

    // Closing a never-deployed preview deletes it without a teardown deployment.
    let closed = github_body("closed", 31, "idea", &sha('9'));
    let (status, _) = h.github("o-close", &closed, Some(GITHUB_SECRET)).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.catalog_environment(&previews[0].id)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(h.environment_deployments(&previews[0].id).await.is_empty());
    assert_eq!(
        h.previews
            .store()
            .delivery_outcome("github", "o-close")
            .await
            .unwrap()
            .unwrap(),
        "previews created: 0, deployments queued: 0, previews deleted: 1"
    );
}

/// Not a preview: this file's harness is the one with a scripted builder. A build job
/// carries what the runner needs from catalog — the source's git credential, opened, and
/// the cluster's build registry with its credentials — and the agent gets the built image
/// with the registry's pull credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_job_carries_the_git_credential_and_the_clusters_build_registry() {
    let h = Harness::start().await;
    let registry = cpb::registry_service_client::RegistryServiceClient::new(h.control.clone())
        .create_registry(with_token(
            cpb::CreateRegistryRequest {
                organization_id: h.org.clone(),
                registry: Some(cpb::Registry {
                    name: "builds".into(),
                    kind: cpb::RegistryKind::Generic.into(),
                    url: "https://registry.example.com/acme".into(),
                    username: "builder".into(),
                    password: "registry-password".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .registry
        .unwrap();
    cpb::cluster_service_client::ClusterServiceClient::new(h.control.clone())
        .update_cluster(with_token(
            cpb::UpdateClusterRequest {
                cluster: Some(cpb::Cluster {
                    id: h.cluster.clone(),
                    build_registry_id: registry.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["build_registry_id".into()],
                }),
            },
            &h.admin,
        ))
        .await
        .unwrap();
    let credential =
        cpb::git_credential_service_client::GitCredentialServiceClient::new(h.control.clone())
            .create_git_credential(with_token(
                cpb::CreateGitCredentialRequest {
                    organization_id: h.org.clone(),
                    git_credential: Some(cpb::GitCredential {
                        name: "github".into(),
                        provider: cpb::GitProviderKind::Github.into(),
                        username: "ci-bot".into(),
                        token: "git-token-value".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &h.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .git_credential
            .unwrap();
    let (env, services) = h
        .blueprint("staging", false, cpb::PreviewMode::OnDemand)
        .await;
    let web = &services[0].1;
    cpb::service_service_client::ServiceServiceClient::new(h.control.clone())
        .update_service(with_token(
            cpb::UpdateServiceRequest {
                service: Some(cpb::Service {
                    id: web.clone(),
                    settings: Some(cpb::service::Settings::Application(
                        cpb::ApplicationSettings {
                            source: Some(cpb::GitSource {
                                repository_url: SHOP_REPO.into(),
                                branch: "main".into(),
                                git_credential_id: credential.id.clone(),
                                ..Default::default()
                            }),
                            runtime: Some(cpb::RuntimeSettings {
                                min_instances: 1,
                                max_instances: 1,
                                ..Default::default()
                            }),
                        },
                    )),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["application".into()],
                }),
            },
            &h.admin,
        ))
        .await
        .unwrap();

    let deployment = h
        .deployments()
        .deploy_environment(with_token(
            pb::DeployEnvironmentRequest {
                environment_id: env.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    let done = h.wait_final(&deployment.id).await;
    assert_eq!(
        done.status,
        pb::DeploymentStatus::Deployed as i32,
        "{}",
        done.error_message
    );

    let jobs: Vec<build::BuildJob> = h
        .builder
        .jobs
        .lock()
        .unwrap()
        .iter()
        .filter(|j| j.deployment_id == deployment.id)
        .cloned()
        .collect();
    let job = jobs.iter().find(|j| &j.service_id == web).unwrap();
    let Some(build::git_credentials::Method::Token(token)) =
        job.git_credentials.clone().and_then(|c| c.method)
    else {
        panic!("web's job carries its git token: {job:?}");
    };
    assert_eq!(
        (token.username.as_str(), token.token.as_str()),
        ("ci-bot", "git-token-value")
    );
    let target = job.registry.clone().unwrap();
    assert_eq!(target.url, "https://registry.example.com");
    assert_eq!(target.repository, "acme/shop/web");
    let push = target.credentials.unwrap();
    assert_eq!(
        (push.username.as_str(), push.password.as_str()),
        ("builder", "registry-password")
    );
    // The other application names no credential, and builds to the same registry.
    let assets = jobs.iter().find(|j| &j.service_id != web).unwrap();
    assert!(assets.git_credentials.is_none());
    assert_eq!(
        assets.registry.clone().unwrap().repository,
        "acme/shop/assets"
    );

    // The agent pulls what was built with the registry's credentials.
    let workloads: Vec<agent::WorkloadSpec> = h
        .agent
        .commands_of(&deployment.id)
        .into_iter()
        .flat_map(|c| c.workloads)
        .filter(|w| &w.service_id == web)
        .collect();
    let image = workloads
        .iter()
        .find_map(|w| match &w.settings {
            Some(agent::workload_spec::Settings::Application(app)) => {
                match app.program.as_ref().and_then(|p| p.artifact.clone()) {
                    Some(agent::program::Artifact::Image(image)) => Some(image),
                    _ => None,
                }
            }
            _ => None,
        })
        .unwrap();
    let pull = image.pull_credentials.unwrap();
    assert_eq!(pull.server, "registry.example.com/acme");
    assert_eq!(
        (pull.username.as_str(), pull.password.as_str()),
        ("builder", "registry-password")
    );
}
