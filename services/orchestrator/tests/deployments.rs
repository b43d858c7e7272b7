//! Deployments on real PostgreSQL and NATS JetStream: identity and catalog in one
//! in-process server, the orchestrator's `DeploymentService` and engine beside them, and a
//! fake agent that consumes `slipway.agent.<cluster>.commands` from the bus and answers
//! with `AgentReport`s, as the agent gateway relays them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BoxError, ControlPlane, cluster_row, create_project, org, with_token};
use prost::Message as _;
use slipway_events::{ConsumerSpec, EventBus, EventBusExt as _, StreamKind};
use slipway_kit::GrpcServer;
use slipway_orchestrator::api::{DeploymentsOptions, mount_deployments};
use slipway_orchestrator::engine::{Engine, EngineConfig, EngineHandle};
use slipway_orchestrator::store::Phase;
use slipway_proto::agent::v1 as agent;
use slipway_proto::catalog::v1 as cpb;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::deployment_service_client::DeploymentServiceClient;
use slipway_telemetry::metrics::Metrics;
use tonic::Code;
use tonic::transport::Channel;

fn fast() -> EngineConfig {
    EngineConfig {
        lease_ttl: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        command_timeout: Duration::from_secs(30),
        build_timeout: Duration::from_secs(2),
        ..EngineConfig::default()
    }
}

/// The fake agent: applies each command id once, remembers what it applied, and answers
/// with per-workload and command-level step reports.
#[derive(Clone, Default)]
struct FakeAgent {
    applied: Arc<Mutex<Vec<agent::Command>>>,
    deliveries: Arc<Mutex<HashMap<String, u32>>>,
    /// Service names whose workload fails.
    failing: Arc<Mutex<HashSet<String>>>,
    /// While true, commands are held (not answered).
    hold: Arc<Mutex<bool>>,
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
            while let Some(delivery) = consumer.next().await {
                // A failed pull (missed heartbeats on a loaded machine) is retried by the
                // consumer; its messages come back after their ack wait.
                let Ok(delivery) = delivery else { continue };
                let command = agent::Command::decode(delivery.payload().as_ref()).unwrap();
                let repeat = {
                    let mut seen = me.deliveries.lock().unwrap();
                    let n = seen.entry(command.command_id.clone()).or_default();
                    *n += 1;
                    *n > 1
                };
                while *me.hold.lock().unwrap() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = delivery.in_progress().await;
                }
                if !repeat {
                    me.applied.lock().unwrap().push(command.clone());
                }
                let failing = me.failing.lock().unwrap().clone();
                let mut failed = false;
                let mut seq = 0;
                let report = |step: agent::StepReport| agent::AgentReport {
                    report_id: uuid::Uuid::now_v7().to_string(),
                    cluster_id: cluster.clone(),
                    session_id: "fake".into(),
                    receive_time: None,
                    report: Some(agent::agent_report::Report::StepReport(step)),
                };
                let subject = format!("slipway.agent.{cluster}.reports");
                for workload in &command.workloads {
                    seq += 1;
                    let fail = failing.contains(&workload.name);
                    failed |= fail;
                    let r = report(agent::StepReport {
                        command_id: command.command_id.clone(),
                        deployment_id: command.deployment_id.clone(),
                        service_id: workload.service_id.clone(),
                        step: "apply".into(),
                        status: if fail {
                            agent::StepStatus::Failed
                        } else {
                            agent::StepStatus::Succeeded
                        } as i32,
                        message: if fail {
                            "crash loop".into()
                        } else {
                            String::new()
                        },
                        runtime_state: if fail {
                            agent::RuntimeState::Error
                        } else {
                            agent::RuntimeState::Running
                        } as i32,
                        sequence: seq,
                        ..Default::default()
                    });
                    bus.publish_proto(&subject, &r.report_id, &r).await.unwrap();
                }
                seq += 1;
                let r = report(agent::StepReport {
                    command_id: command.command_id.clone(),
                    deployment_id: command.deployment_id.clone(),
                    step: "command".into(),
                    status: if failed {
                        agent::StepStatus::Failed
                    } else {
                        agent::StepStatus::Succeeded
                    } as i32,
                    message: if failed {
                        "a workload failed".into()
                    } else {
                        String::new()
                    },
                    sequence: seq,
                    ..Default::default()
                });
                bus.publish_proto(&subject, &r.report_id, &r).await.unwrap();
                delivery.ack().await.unwrap();
            }
        })
    }

    fn applied(&self) -> Vec<agent::Command> {
        self.applied.lock().unwrap().clone()
    }
}

struct Harness {
    channel: Channel,
    admin: String,
    other_admin: String,
    org: String,
    other_org: String,
    cluster: String,
    other_cluster: String,
    project: cpb::Project,
    other_project: cpb::Project,
    agent: FakeAgent,
    _agent_tasks: Vec<tokio::task::JoinHandle<()>>,
    engine: Option<EngineHandle>,
    control_plane: ControlPlane,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(fast()).await
    }

    /// The harness with its (first) engine running `engine`.
    async fn start_with(engine: EngineConfig) -> Self {
        let mut control_plane = ControlPlane::start("deploy-test").await;
        let (engine_server, engine) = mount_deployments(
            GrpcServer::new(
                slipway_config::ServerSettings::default(),
                Metrics::new("deploy-test-orch").unwrap(),
            ),
            &control_plane.platform,
            DeploymentsOptions {
                catalog: Some(control_plane.catalog.clone()),
                services: Some(control_plane.services.clone()),
                engine,
            },
        );
        control_plane
            .sandbox
            .start("orchestrator", move |listener, shutdown| async move {
                engine_server.serve(listener, shutdown).await?;
                Ok::<(), BoxError>(())
            })
            .await
            .unwrap();
        let channel = control_plane.sandbox.channel("orchestrator").unwrap();
        let identity = control_plane.identity();
        let (org_a, admin) = org(&identity, "org-a").await;
        let (org_b, other_admin) = org(&identity, "org-b").await;
        let cluster = cluster_row(&control_plane.platform, &org_a, "c1").await;
        let other_cluster = cluster_row(&control_plane.platform, &org_b, "c2").await;
        let control = &control_plane.control;
        let project = create_project(control, &org_a, &admin, "shop").await;
        let other_project = create_project(control, &org_b, &other_admin, "other").await;
        let agent = FakeAgent::default();
        let tasks = vec![
            agent.start(Arc::clone(&control_plane.bus), &cluster),
            agent.start(Arc::clone(&control_plane.bus), &other_cluster),
        ];
        Self {
            channel,
            admin,
            other_admin,
            org: org_a,
            other_org: org_b,
            cluster,
            other_cluster,
            project,
            other_project,
            agent,
            _agent_tasks: tasks,
            engine: Some(engine),
            control_plane,
        }
    }

    fn client(&self) -> DeploymentServiceClient<Channel> {
        DeploymentServiceClient::new(self.channel.clone())
    }

    fn new_engine(&self) -> EngineHandle {
        self.new_engine_with(fast())
    }

    fn new_engine_with(&self, config: EngineConfig) -> EngineHandle {
        Engine::new(
            self.store(),
            Arc::clone(&self.control_plane.platform.bus),
            Some(self.control_plane.catalog.clone()),
            config,
        )
        .start()
    }

    fn store(&self) -> slipway_orchestrator::store::Store {
        slipway_orchestrator::store::Store::new(self.control_plane.platform.db.clone())
    }

    /// An environment of `project` with a database and two containers.
    async fn environment(&self, name: &str) -> (String, Vec<String>) {
        self.environment_in(&self.project, &self.admin, &self.cluster, name)
            .await
    }

    async fn environment_in(
        &self,
        project: &cpb::Project,
        token: &str,
        cluster: &str,
        name: &str,
    ) -> (String, Vec<String>) {
        let control = self.control_plane.control.clone();
        let env = cpb::environment_service_client::EnvironmentServiceClient::new(control.clone())
            .create_environment(with_token(
                cpb::CreateEnvironmentRequest {
                    project_id: project.id.clone(),
                    environment: Some(cpb::Environment {
                        name: name.into(),
                        mode: EnvironmentMode::Development.into(),
                        cluster_id: cluster.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .environment
            .unwrap();
        let mut ids = Vec::new();
        let runtime = cpb::RuntimeSettings {
            min_instances: 1,
            max_instances: 1,
            ..Default::default()
        };
        let specs = vec![
            (
                "db",
                ServiceKind::Database,
                cpb::service::Settings::Database(cpb::DatabaseSettings {
                    engine: cpb::DatabaseEngine::Postgresql.into(),
                    version: "16".into(),
                    mode: cpb::DatabaseMode::Container.into(),
                    storage_gib: 1,
                    runtime: Some(runtime.clone()),
                    ..Default::default()
                }),
            ),
            (
                "api",
                ServiceKind::Container,
                cpb::service::Settings::Container(cpb::ContainerSettings {
                    source: Some(cpb::ImageSource {
                        image: "example/api".into(),
                        tag: "1".into(),
                        ..Default::default()
                    }),
                    runtime: Some(runtime.clone()),
                }),
            ),
            (
                "web",
                ServiceKind::Container,
                cpb::service::Settings::Container(cpb::ContainerSettings {
                    source: Some(cpb::ImageSource {
                        image: "example/web".into(),
                        tag: "1".into(),
                        ..Default::default()
                    }),
                    runtime: Some(runtime.clone()),
                }),
            ),
        ];
        for (name, kind, settings) in specs {
            let service = cpb::service_service_client::ServiceServiceClient::new(control.clone())
                .create_service(with_token(
                    cpb::CreateServiceRequest {
                        environment_id: env.id.clone(),
                        service: Some(cpb::Service {
                            name: name.into(),
                            kind: kind.into(),
                            settings: Some(settings),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    token,
                ))
                .await
                .unwrap()
                .into_inner()
                .service
                .unwrap();
            ids.push(service.id);
        }
        (env.id, ids)
    }

    async fn wait_final(&self, id: &str) -> pb::Deployment {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.get(id).await;
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

    async fn get(&self, id: &str) -> pb::Deployment {
        self.client()
            .get_deployment(with_token(
                pb::GetDeploymentRequest { id: id.into() },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployment
            .unwrap()
    }

    async fn deploy(&self, env: &str) -> pb::Deployment {
        self.client()
            .deploy_environment(with_token(
                pb::DeployEnvironmentRequest {
                    environment_id: env.into(),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployment
            .unwrap()
    }
}

fn stage_kinds(d: &pb::Deployment) -> Vec<(i32, i32)> {
    d.stages.iter().map(|s| (s.kind, s.status)).collect()
}

#[tokio::test]
async fn deploy_stop_redeploy_rollback_delete() {
    let h = Harness::start().await;
    let (env, services) = h.environment("dev").await;
    let queued = h.deploy(&env).await;
    assert_eq!(queued.status, pb::DeploymentStatus::Queued as i32);
    let done = h.wait_final(&queued.id).await;
    assert_eq!(
        done.status,
        pb::DeploymentStatus::Deployed as i32,
        "{}",
        done.error_message
    );
    use pb::StageKind as K;
    use pb::StageStatus as St;
    assert_eq!(
        stage_kinds(&done),
        vec![
            (K::Databases as i32, St::Done as i32),
            (K::Jobs as i32, St::Skipped as i32),
            (K::Applications as i32, St::Done as i32),
            (K::Helm as i32, St::Skipped as i32),
        ]
    );
    assert_eq!(done.service_statuses.len(), 3);
    assert!(
        done.service_statuses
            .iter()
            .all(|s| s.status == pb::DeploymentStatus::Deployed as i32)
    );
    assert_eq!(done.cluster_id, h.cluster);
    let applied = h.agent.applied();
    assert_eq!(applied.len(), 2);
    assert_eq!(applied[0].stage, agent::CommandStage::Databases as i32);
    assert_eq!(applied[1].workloads.len(), 2);

    let status = h
        .client()
        .get_environment_status(with_token(
            pb::GetEnvironmentStatusRequest {
                environment_id: env.clone(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .environment_status
        .unwrap();
    assert_eq!(status.services.len(), 3);
    assert!(
        status
            .services
            .iter()
            .all(|s| s.deployment_state == pb::ServiceDeploymentState::UpToDate as i32)
    );
    assert_eq!(status.runtime_state, pb::RuntimeState::Running as i32);

    // Stop: reverse order.
    let stop = h
        .client()
        .stop_environment(with_token(
            pb::StopEnvironmentRequest {
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
    assert_eq!(stop.status, pb::DeploymentStatus::StopQueued as i32);
    let stopped = h.wait_final(&stop.id).await;
    assert_eq!(stopped.status, pb::DeploymentStatus::Stopped as i32);
    assert_eq!(stopped.stages.first().unwrap().kind, K::Helm as i32);
    assert_eq!(stopped.stages.last().unwrap().kind, K::Databases as i32);

    // Redeploy, with one service failing: DEPLOYMENT_ERROR, then rollback to the first.
    let again = h.deploy(&env).await;
    assert_eq!(
        h.wait_final(&again.id).await.status,
        pb::DeploymentStatus::Deployed as i32
    );
    h.agent.failing.lock().unwrap().insert("web".into());
    let broken = h.deploy(&env).await;
    let broken = h.wait_final(&broken.id).await;
    assert_eq!(broken.status, pb::DeploymentStatus::DeploymentError as i32);
    assert!(
        broken.error_message.contains("applications"),
        "{}",
        broken.error_message
    );
    let web = broken
        .service_statuses
        .iter()
        .find(|s| s.service_name == "web")
        .unwrap();
    assert_eq!(web.status, pb::DeploymentStatus::DeploymentError as i32);
    h.agent.failing.lock().unwrap().clear();

    // A failed target refuses a rollback.
    let refused = h
        .client()
        .rollback_deployment(with_token(
            pb::RollbackDeploymentRequest {
                id: broken.id.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let rollback = h
        .client()
        .rollback_deployment(with_token(
            pb::RollbackDeploymentRequest {
                id: queued.id.clone(),
                request_id: "rb-1".into(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(rollback.trigger, pb::DeploymentTrigger::Rollback as i32);
    assert_eq!(rollback.rolled_back_from_deployment_id, queued.id);
    assert_eq!(
        h.wait_final(&rollback.id).await.status,
        pb::DeploymentStatus::Deployed as i32
    );
    // The same request id returns the same deployment.
    let repeat = h
        .client()
        .rollback_deployment(with_token(
            pb::RollbackDeploymentRequest {
                id: queued.id.clone(),
                request_id: "rb-1".into(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(repeat.id, rollback.id);

    // Delete: the last command deletes the namespace.
    let delete = h
        .client()
        .delete_environment_resources(with_token(
            pb::DeleteEnvironmentResourcesRequest {
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
    assert_eq!(
        h.wait_final(&delete.id).await.status,
        pb::DeploymentStatus::Deleted as i32
    );
    let last = h.agent.applied().pop().unwrap();
    assert_eq!(last.operation, agent::CommandOperation::Delete as i32);
    assert!(last.delete_namespace);

    // Service deploy of one service, then the history filtered by it.
    let one = h
        .client()
        .deploy_service(with_token(
            pb::DeployServiceRequest {
                service_id: services[1].clone(),
                version: None,
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    let one = h.wait_final(&one.id).await;
    assert_eq!(
        one.status,
        pb::DeploymentStatus::Deployed as i32,
        "{}",
        one.error_message
    );
    assert_eq!(one.service_statuses.len(), 1);
    let listed = h
        .client()
        .list_deployments(with_token(
            pb::ListDeploymentsRequest {
                organization_id: h.org.clone(),
                environment_id: env.clone(),
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deployments.len(), 7);
    assert_eq!(listed.deployments[0].id, one.id, "newest first");
    let by_service = h
        .client()
        .list_deployments(with_token(
            pb::ListDeploymentsRequest {
                organization_id: h.org.clone(),
                service_id: services[1].clone(),
                statuses: vec![pb::DeploymentStatus::Deployed as i32],
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_service.deployments.len(), 4);
}

#[tokio::test]
async fn queue_and_cancel() {
    let h = Harness::start().await;
    let (env, _) = h.environment("dev").await;
    *h.agent.hold.lock().unwrap() = true;
    let first = h.deploy(&env).await;
    let second = h.deploy(&env).await;
    let third = h.deploy(&env).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queue = h
        .client()
        .list_queued_deployments(with_token(
            pb::ListQueuedDeploymentsRequest {
                environment_id: env.clone(),
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.running_deployment.unwrap().id, first.id);
    assert_eq!(
        queue
            .deployments
            .iter()
            .map(|d| d.queue_position)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Cancel a queued one: CANCELED at once.
    let canceled = h
        .client()
        .cancel_deployment(with_token(
            pb::CancelDeploymentRequest {
                id: third.id.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(canceled.status, pb::DeploymentStatus::Canceled as i32);
    assert!(canceled.start_time.is_none());
    // Cancel the running one: CANCELING, then CANCELED after its current stage.
    let canceling = h
        .client()
        .cancel_deployment(with_token(
            pb::CancelDeploymentRequest {
                id: first.id.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(canceling.status, pb::DeploymentStatus::Canceling as i32);
    *h.agent.hold.lock().unwrap() = false;
    let first = h.wait_final(&first.id).await;
    assert_eq!(first.status, pb::DeploymentStatus::Canceled as i32);
    assert!(
        first
            .stages
            .iter()
            .any(|s| s.status == pb::StageStatus::Canceled as i32)
    );
    // The second ran only after the first ended.
    let second = h.wait_final(&second.id).await;
    assert_eq!(second.status, pb::DeploymentStatus::Deployed as i32);
    assert!(second.start_time.unwrap().seconds >= first.end_time.unwrap().seconds);
    // Canceling a final one is refused.
    let refused = h
        .client()
        .cancel_deployment(with_token(
            pb::CancelDeploymentRequest {
                id: second.id.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

/// `EnvironmentService.DeleteEnvironment` says the orchestrator tears down what runs on the
/// cluster: it follows `catalog.environment.deleted` and deletes with the latest plan.
#[tokio::test]
async fn an_environment_deleted_from_the_catalog_is_torn_down_once() {
    let h = Harness::start().await;
    let (env, _) = h.environment("doomed").await;
    let (never, _) = h.environment("never-deployed").await;
    let deployed = h.wait_final(&h.deploy(&env).await.id).await;
    assert_eq!(deployed.status, pb::DeploymentStatus::Deployed as i32);
    let delete = |id: String| {
        let control = h.control_plane.control.clone();
        let admin = h.admin.clone();
        async move {
            cpb::environment_service_client::EnvironmentServiceClient::new(control)
                .delete_environment(with_token(
                    cpb::DeleteEnvironmentRequest {
                        id,
                        etag: String::new(),
                        force: true,
                    },
                    &admin,
                ))
                .await
                .unwrap();
        }
    };
    delete(env.clone()).await;
    delete(never.clone()).await;

    // The teardown is queued by the follower of catalog's event, then runs.
    let store = h.store();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let teardown = loop {
        let mut rows = Vec::new();
        for phase in [Phase::Queued, Phase::Running, Phase::Done] {
            rows.extend(store.in_environment(&env, phase).await.unwrap());
        }
        if let Some(row) = rows
            .into_iter()
            .find(|row| row.action == pb::DeploymentAction::Delete as i32)
        {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "no teardown queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        teardown.trigger,
        pb::DeploymentTrigger::CatalogDeletion as i32
    );
    let deployed_plan = store
        .in_environment(&env, Phase::Done)
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.id == deployed.id)
        .and_then(|row| row.plan);
    assert!(deployed_plan.is_some());
    assert_eq!(
        teardown.plan, deployed_plan,
        "the teardown deletes what was deployed"
    );
    let done = h.wait_final(&teardown.id).await;
    assert_eq!(
        done.status,
        pb::DeploymentStatus::Deleted as i32,
        "{}",
        done.error_message
    );
    let deletes: Vec<agent::Command> = h
        .agent
        .applied()
        .into_iter()
        .filter(|c| c.deployment_id == teardown.id)
        .collect();
    assert!(!deletes.is_empty());
    assert!(
        deletes
            .iter()
            .all(|c| c.operation == agent::CommandOperation::Delete as i32)
    );
    assert!(deletes.iter().any(|c| c.delete_namespace), "{deletes:?}");

    // Never deployed: nothing to tear down. Deleted once: nothing more, even when the
    // event comes again (a replay of the stream, another replica).
    let again = slipway_orchestrator::engine::teardown::teardown(
        h.engine.as_ref().unwrap().engine(),
        &h.org,
        &env,
    )
    .await
    .unwrap();
    assert!(again.is_none());
    let mut never_rows = Vec::new();
    for phase in [Phase::Queued, Phase::Running, Phase::Done] {
        never_rows.extend(store.in_environment(&never, phase).await.unwrap());
    }
    assert!(never_rows.is_empty(), "{never_rows:?}");
}

#[tokio::test]
async fn bad_input_queues_nothing() {
    let h = Harness::start().await;
    let (env, _) = h.environment("dev").await;
    let (_, other_services) = h
        .environment_in(&h.other_project, &h.other_admin, &h.other_cluster, "theirs")
        .await;
    let unknown = h
        .client()
        .deploy_environment(with_token(
            pb::DeployEnvironmentRequest {
                environment_id: uuid::Uuid::now_v7().to_string(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let foreign = h
        .client()
        .deploy_service(with_token(
            pb::DeployServiceRequest {
                service_id: other_services[0].clone(),
                version: None,
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    let missing = h
        .client()
        .deploy_environment(with_token(
            pb::DeployEnvironmentRequest::default(),
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    let never = h
        .client()
        .stop_environment(with_token(
            pb::StopEnvironmentRequest {
                environment_id: env.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(never.code(), Code::FailedPrecondition);
    for org in [&h.org, &h.other_org] {
        let token = if org == &h.org {
            &h.admin
        } else {
            &h.other_admin
        };
        let listed = h
            .client()
            .list_deployments(with_token(
                pb::ListDeploymentsRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.deployments.is_empty());
    }
    // Another organization's deployment is not found.
    let mine = h.deploy(&env).await;
    let hidden = h
        .client()
        .get_deployment(with_token(
            pb::GetDeploymentRequest {
                id: mine.id.clone(),
            },
            &h.other_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
}

#[tokio::test]
async fn a_fresh_engine_resumes_a_deployment_and_applies_each_command_once() {
    let mut h = Harness::start().await;
    let (env, _) = h.environment("dev").await;
    *h.agent.hold.lock().unwrap() = true;
    let d = h.deploy(&env).await;
    // Wait until the first command is out, then kill the engine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.agent.deliveries.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(h.engine.take());
    let _fresh = h.new_engine();
    *h.agent.hold.lock().unwrap() = false;
    let done = h.wait_final(&d.id).await;
    assert_eq!(
        done.status,
        pb::DeploymentStatus::Deployed as i32,
        "{}",
        done.error_message
    );
    let applied = h.agent.applied();
    let ids: HashSet<_> = applied.iter().map(|c| c.command_id.clone()).collect();
    assert_eq!(ids.len(), applied.len(), "a command was applied twice");
    assert_eq!(applied.len(), 2);
}

/// Issue 5, "Must show": two orchestrator replicas and one agent, 50 deployments across 10
/// environments: all complete, none runs twice, none is lost, every command is applied
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_run_fifty_deployments_across_ten_environments_once_each() {
    const ENVIRONMENTS: usize = 10;
    const ROUNDS: usize = 5;
    const STAGES: usize = 2; // databases, then containers
    // Each replica may run half the environments at once, so both must take part; the
    // lease outlives any stall of a loaded test machine, so a takeover here is a bug.
    let replica = |owner: &str| EngineConfig {
        owner: owner.into(),
        max_running: ENVIRONMENTS / 2,
        lease_ttl: Duration::from_secs(10),
        poll_interval: Duration::from_millis(50),
        ..fast()
    };
    let h = Harness::start_with(replica("replica-a")).await;
    let _second = h.new_engine_with(replica("replica-b"));
    let mut envs = Vec::new();
    for i in 0..ENVIRONMENTS {
        envs.push(h.environment(&format!("env{i}")).await.0);
    }
    // Watch, from the start, who holds each running deployment: one replica each, and both
    // take part.
    let store = h.store();
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (store, envs, stop) = (store.clone(), envs.clone(), stop.clone());
        tokio::spawn(async move {
            let mut owners: HashMap<String, HashSet<String>> = HashMap::new();
            while !stop.is_cancelled() {
                for env in &envs {
                    let running = store.in_environment(env, Phase::Running).await.unwrap();
                    for row in running {
                        if let Some(owner) = row.lease_owner {
                            owners.entry(row.id).or_default().insert(owner);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            owners
        })
    };
    // Every round queues one more deployment in every environment.
    let mut ids = Vec::new();
    for _ in 0..ROUNDS {
        for env in &envs {
            ids.push(h.deploy(env).await.id);
        }
    }
    assert_eq!(ids.len(), ENVIRONMENTS * ROUNDS);
    for id in &ids {
        h.wait_final(id).await;
    }
    stop.cancel();
    let owners = watcher.await.unwrap();
    for (id, held) in &owners {
        assert_eq!(
            held.len(),
            1,
            "deployment {id} ran on several replicas: {held:?}"
        );
    }
    let replicas: HashSet<&String> = owners.values().flatten().collect();
    assert_eq!(
        replicas.len(),
        2,
        "both replicas must take part: {replicas:?}"
    );

    // None lost: every one deployed.
    let mut per_environment: HashMap<String, Vec<pb::Deployment>> = HashMap::new();
    for id in &ids {
        let d = h.get(id).await;
        assert_eq!(
            d.status,
            pb::DeploymentStatus::Deployed as i32,
            "{id}: {}",
            d.error_message
        );
        per_environment
            .entry(d.environment_id.clone())
            .or_default()
            .push(d);
    }
    // One at a time per environment, in the order they were queued: none ran beside (or
    // again after) another.
    assert_eq!(per_environment.len(), ENVIRONMENTS);
    let time = |t: &Option<prost_types::Timestamp>| {
        let t = t.as_ref().expect("timestamp");
        (t.seconds, t.nanos)
    };
    for (env, deployments) in &per_environment {
        assert_eq!(deployments.len(), ROUNDS);
        for pair in deployments.windows(2) {
            assert!(
                time(&pair[0].end_time) <= time(&pair[1].start_time),
                "{env}: {} started before {} ended",
                pair[1].id,
                pair[0].id
            );
        }
    }

    // Each command was delivered once and applied once, and each deployment applied
    // exactly the commands its stored stages name, one per stage.
    let applied = h.agent.applied();
    assert_eq!(
        applied.len(),
        ids.len() * STAGES,
        "commands lost or repeated"
    );
    let deliveries = h.agent.deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), applied.len());
    for (command, n) in &deliveries {
        assert_eq!(*n, 1, "command {command} delivered {n} times");
    }
    let mut per_deployment: HashMap<String, Vec<String>> = HashMap::new();
    for command in &applied {
        per_deployment
            .entry(command.deployment_id.clone())
            .or_default()
            .push(command.command_id.clone());
    }
    assert_eq!(per_deployment.len(), ids.len());
    for id in &ids {
        let stored: Vec<String> = store
            .stages(id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|stage| stage.command_id)
            .collect();
        assert_eq!(stored.len(), STAGES, "{id}: {stored:?}");
        assert_eq!(
            per_deployment.get(id),
            Some(&stored),
            "{id}: applied commands differ from its stages"
        );
    }
    // Acknowledged commands (and folded-in reports) are gone from the AGENT work queue;
    // the last report's acknowledgement may trail its deployment's end a little.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let agent = h
            .control_plane
            .platform
            .bus
            .stream_info(StreamKind::Agent)
            .await
            .unwrap();
        assert!(agent.last_sequence > 0);
        if agent.messages == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} acknowledged commands or reports left in AGENT",
            agent.messages
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn environment_status(h: &Harness, env: &str) -> pb::EnvironmentStatus {
    h.client()
        .get_environment_status(with_token(
            pb::GetEnvironmentStatusRequest {
                environment_id: env.into(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .environment_status
        .unwrap()
}

#[tokio::test]
async fn environment_status_tells_whether_the_agent_is_connected() {
    let h = Harness::start().await;
    let (env, _) = h.environment("dev").await;
    let before = environment_status(&h, &env).await;
    assert_eq!(before.cluster_id, h.cluster);
    assert!(!before.agent_connected, "no agent ever reported");

    // As the agent gateway does when an agent's stream opens.
    h.control_plane
        .catalog
        .report_connection(cpb::ReportClusterConnectionRequest {
            cluster_id: h.cluster.clone(),
            connected: true,
            heartbeat_time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            agent_version: "1.0.0".into(),
        })
        .await
        .unwrap();
    let after = environment_status(&h, &env).await;
    assert!(
        after.agent_connected,
        "catalog records the agent as connected"
    );

    // And when it closes.
    h.control_plane
        .catalog
        .report_connection(cpb::ReportClusterConnectionRequest {
            cluster_id: h.cluster.clone(),
            connected: false,
            heartbeat_time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            agent_version: String::new(),
        })
        .await
        .unwrap();
    assert!(!environment_status(&h, &env).await.agent_connected);
}

#[tokio::test]
async fn a_service_no_command_touches_ends_with_the_deployment() {
    let h = Harness::start().await;
    let (env, services) = h.environment("dev").await;
    let control = h.control_plane.control.clone();
    let job = cpb::service_service_client::ServiceServiceClient::new(control)
        .create_service(with_token(
            cpb::CreateServiceRequest {
                environment_id: env.clone(),
                service: Some(cpb::Service {
                    name: "teardown".into(),
                    kind: ServiceKind::LifecycleJob.into(),
                    settings: Some(cpb::service::Settings::LifecycleJob(
                        cpb::LifecycleJobSettings {
                            events: vec![cpb::LifecycleJobEvent::Stop.into()],
                            source: Some(cpb::JobSource {
                                source: Some(cpb::job_source::Source::Image(cpb::ImageSource {
                                    image: "example/teardown".into(),
                                    tag: "1".into(),
                                    ..Default::default()
                                })),
                            }),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();

    let queued = h.deploy(&env).await;
    let done = h.wait_final(&queued.id).await;
    assert_eq!(
        done.status,
        pb::DeploymentStatus::Deployed as i32,
        "{}",
        done.error_message
    );
    // The job does not run on a deploy: no command carried it.
    assert!(
        h.agent
            .applied()
            .iter()
            .flat_map(|c| c.workloads.iter())
            .all(|w| w.service_id != job.id)
    );
    assert_eq!(done.service_statuses.len(), 4);
    let teardown = done
        .service_statuses
        .iter()
        .find(|s| s.service_id == job.id)
        .unwrap();
    assert_eq!(teardown.status, pb::DeploymentStatus::Deployed as i32);
    assert!(teardown.error_message.is_empty());
    assert!(
        done.service_statuses
            .iter()
            .all(|s| s.status == pb::DeploymentStatus::Deployed as i32)
    );

    let status = environment_status(&h, &env).await;
    assert!(status.running_deployment_id.is_empty());
    assert_eq!(status.last_deployment_id, done.id);
    let entry = status
        .services
        .iter()
        .find(|s| s.service_id == job.id)
        .unwrap();
    assert_ne!(
        entry.last_deployment_status,
        pb::DeploymentStatus::Deploying as i32
    );
    assert!(status.services.iter().all(|s| {
        s.last_deployment_status != pb::DeploymentStatus::Deploying as i32
            && s.runtime_state != pb::RuntimeState::Starting as i32
    }));
    for id in &services {
        let s = status
            .services
            .iter()
            .find(|s| &s.service_id == id)
            .unwrap();
        assert_eq!(
            s.last_deployment_status,
            pb::DeploymentStatus::Deployed as i32
        );
    }
}
