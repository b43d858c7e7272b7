//! `BuildService` on real PostgreSQL and NATS JetStream: identity in-process for tokens,
//! the build-runner mounted as `slipway dev` mounts it (worker and API on one platform),
//! jobs published as the orchestrator publishes them, and the `Build` records the worker
//! keeps read, listed and canceled through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_build_runner::BuildSettings;
use slipway_events::{ConsumerSpec, EventBusExt, StreamKind, subject};
use slipway_identity::store::{
    self as id_store, BuiltinRole, NewApiToken, NewOrganization, RoleRef, SecretHash,
    Store as IdentityStore, UserClaims,
};
use slipway_kit::GrpcServer;
use slipway_proto::build::v1 as pb;
use slipway_proto::build::v1::build_service_client::BuildServiceClient;
use slipway_service::Platform;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tonic::transport::Channel;
use tonic::{Code, Request};

mod common;

use common::git;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn with_token<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    request
}

async fn token(identity: &IdentityStore, org: &str, role: BuiltinRole) -> String {
    let secret = NewCredential::generate(CredentialKind::ApiToken).unwrap();
    identity
        .create_api_token(&NewApiToken {
            organization_id: org.to_owned(),
            name: format!("t-{}", uuid::Uuid::now_v7().simple()),
            description: String::new(),
            role: RoleRef::Builtin(role),
            secret_hash: SecretHash::from_digest(*secret.hash().as_bytes()),
            secret_hint: secret.hint().to_owned(),
            expire_time: None,
            creator: id_store::PrincipalRef {
                kind: id_store::PrincipalKind::User,
                id: "test".into(),
                display_name: "test".into(),
            },
        })
        .await
        .unwrap();
    secret.into_secret()
}

async fn org(identity: &IdentityStore, name: &str) -> (String, String) {
    let user = identity
        .upsert_user(&UserClaims {
            issuer: "https://issuer.test".into(),
            subject: format!("owner-{name}"),
            email: format!("owner@{name}.example.com"),
            display_name: "owner".into(),
        })
        .await
        .unwrap();
    let (org, _) = identity
        .create_organization(
            &NewOrganization {
                name: name.into(),
                display_name: name.into(),
            },
            &user.id,
        )
        .await
        .unwrap();
    let admin = token(identity, &org.id, BuiltinRole::Admin).await;
    (org.id, admin)
}

struct Harness {
    client: BuildServiceClient<Channel>,
    platform: Platform,
    results: slipway_events::Consumer,
    org: String,
    admin: String,
    viewer: String,
    other_admin: String,
    url: String,
    _dir: tempfile::TempDir,
    _sandbox: Sandbox,
    _db: TestDatabase,
    _nats: TestNats,
}

impl Harness {
    async fn start() -> Self {
        Self::start_on(TestDatabase::postgres().await.unwrap()).await
    }

    async fn start_on(db: TestDatabase) -> Self {
        let nats = TestNats::start().await.unwrap();
        let nats_settings = slipway_config::NatsSettings {
            url: nats.url().to_owned(),
            namespace: nats.namespace().to_owned(),
            ..Default::default()
        };
        let conn = slipway_db::connect(db.url(), 16, Duration::from_secs(15))
            .await
            .unwrap();
        let bus = slipway_events::connect(&nats_settings).await.unwrap();
        slipway_db::migrate::<id_store::Migrator>(&conn)
            .await
            .unwrap();
        let identity = slipway_identity::Identity::new(
            conn.clone(),
            Arc::clone(&bus),
            slipway_identity::AuthOptions::default(),
        );
        let platform = Platform::shared::<slipway_build_runner::store::Migrator>(
            conn.clone(),
            Arc::clone(&bus),
            identity.auth(),
        )
        .await
        .unwrap();
        let results = bus
            .consumer(
                ConsumerSpec::new(StreamKind::Builds, "test-results")
                    .filter(subject::BUILD_RESULTS)
                    .prefetch(32),
            )
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = BuildSettings::under(dir.path().join("runner"));
        let serving = platform.clone();
        let mut sandbox = Sandbox::new();
        sandbox
            .start("builds", move |listener, shutdown| async move {
                let server = GrpcServer::new(
                    slipway_config::ServerSettings::default(),
                    Metrics::new("build-api-test")?,
                );
                let server = identity.mount(server);
                let (server, worker) = slipway_build_runner::mount_with(server, &serving, settings);
                server.serve(listener, shutdown).await?;
                drop(worker);
                Ok::<(), BoxError>(())
            })
            .await
            .unwrap();
        let client = BuildServiceClient::new(sandbox.channel("builds").unwrap());
        let identity_store = IdentityStore::new(conn);
        let (org_a, admin) = org(&identity_store, "org-a").await;
        let (_, other_admin) = org(&identity_store, "org-b").await;
        let viewer = token(&identity_store, &org_a, BuiltinRole::Viewer).await;

        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("main.sh"), "echo hello\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "first"]);
        Self {
            client,
            platform,
            results,
            org: org_a,
            admin,
            viewer,
            other_admin,
            url: format!("file://{}", repo.display()),
            _dir: dir,
            _sandbox: sandbox,
            _db: db,
            _nats: nats,
        }
    }

    fn job(&self, environment: &str, command: &str) -> pb::BuildJob {
        pb::BuildJob {
            job_id: uuid::Uuid::now_v7().to_string(),
            organization_id: self.org.clone(),
            project_id: "proj1".into(),
            environment_id: environment.into(),
            service_id: "svc1".into(),
            deployment_id: "dep1".into(),
            source: Some(pb::GitSource {
                repository_url: self.url.clone(),
                r#ref: "main".into(),
                ..Default::default()
            }),
            local_build_command: vec![command.into()],
            create_time: Some(std::time::SystemTime::now().into()),
            ..Default::default()
        }
    }

    async fn publish(&self, job: &pb::BuildJob) {
        self.platform
            .bus
            .publish_proto(subject::BUILD_JOBS, &job.job_id, job)
            .await
            .unwrap();
    }

    async fn result(&mut self) -> pb::BuildResult {
        let delivery = tokio::time::timeout(Duration::from_secs(50), self.results.next())
            .await
            .expect("a build result")
            .unwrap()
            .unwrap();
        let result: pb::BuildResult = delivery.decode().unwrap();
        delivery.ack().await.unwrap();
        result
    }

    async fn get(&self, id: &str, token: &str) -> Result<pb::Build, tonic::Status> {
        self.client
            .clone()
            .get_build(with_token(pb::GetBuildRequest { id: id.into() }, token))
            .await
            .map(|r| r.into_inner().build.unwrap())
    }

    async fn list(
        &self,
        request: pb::ListBuildsRequest,
        token: &str,
    ) -> Result<pb::ListBuildsResponse, tonic::Status> {
        self.client
            .clone()
            .list_builds(with_token(request, token))
            .await
            .map(|r| r.into_inner())
    }

    async fn cancel(&self, id: &str, token: &str) -> Result<pb::Build, tonic::Status> {
        self.client
            .clone()
            .cancel_build(with_token(
                pb::CancelBuildRequest {
                    id: id.into(),
                    request_id: String::new(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().build.unwrap())
    }
}

#[tokio::test]
async fn builds_are_recorded_read_listed_and_isolated_by_organization() {
    let mut h = Harness::start().await;
    let ok = h.job("env1", "echo built");
    h.publish(&ok).await;
    let first = h.result().await;
    assert_eq!(first.outcome, pb::BuildOutcome::Succeeded as i32);
    let failing = h.job("env1", "exit 4");
    h.publish(&failing).await;
    assert_eq!(h.result().await.outcome, pb::BuildOutcome::Failed as i32);
    let elsewhere = h.job("env2", "true");
    h.publish(&elsewhere).await;
    h.result().await;

    let build = h.get(&ok.job_id, &h.viewer).await.unwrap();
    assert_eq!(build.id, ok.job_id);
    assert_eq!(build.organization_id, h.org);
    assert_eq!(build.status, pb::BuildStatus::Succeeded as i32);
    assert_eq!(build.builder, pb::BuilderKind::Local as i32);
    assert_eq!(build.local_artifact_path, first.local_artifact_path);
    assert_eq!(build.cache_key, first.cache_key);
    assert_eq!(build.source.as_ref().unwrap().repository_url, h.url);
    assert!(build.start_time.is_some() && build.end_time.is_some());
    assert!(build.timings.is_some());
    assert!(!build.etag.is_empty());
    let failed = h.get(&failing.job_id, &h.admin).await.unwrap();
    assert_eq!(failed.status, pb::BuildStatus::Failed as i32);
    let failure = failed.failure.unwrap();
    assert_eq!(failure.reason, pb::BuildFailureReason::StepFailed as i32);
    assert!(
        failure.message.contains("exited with code 4"),
        "{failure:?}"
    );

    // Another organization sees nothing; no token is refused.
    let status = h.get(&ok.job_id, &h.other_admin).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = h
        .client
        .clone()
        .get_build(pb::GetBuildRequest {
            id: ok.job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = h.get("", &h.admin).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = h
        .list(
            pb::ListBuildsRequest {
                environment_id: "env1".into(),
                ..Default::default()
            },
            &h.other_admin,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Newest first, one per page.
    let page = h
        .list(
            pb::ListBuildsRequest {
                environment_id: "env1".into(),
                page_size: 1,
                ..Default::default()
            },
            &h.viewer,
        )
        .await
        .unwrap();
    assert_eq!(page.builds.len(), 1);
    assert_eq!(page.builds[0].id, failing.job_id);
    assert!(!page.next_page_token.is_empty());
    let last = h
        .list(
            pb::ListBuildsRequest {
                environment_id: "env1".into(),
                page_size: 1,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
            &h.viewer,
        )
        .await
        .unwrap();
    assert_eq!(last.builds.len(), 1);
    assert_eq!(last.builds[0].id, ok.job_id);
    assert!(last.next_page_token.is_empty());
    // Filters.
    let failed_only = h
        .list(
            pb::ListBuildsRequest {
                environment_id: "env1".into(),
                statuses: vec![pb::BuildStatus::Failed as i32],
                ..Default::default()
            },
            &h.viewer,
        )
        .await
        .unwrap();
    assert_eq!(
        failed_only
            .builds
            .iter()
            .map(|b| b.id.clone())
            .collect::<Vec<_>>(),
        vec![failing.job_id.clone()]
    );
    let other_env = h
        .list(
            pb::ListBuildsRequest {
                environment_id: "env2".into(),
                deployment_id: "dep1".into(),
                ..Default::default()
            },
            &h.viewer,
        )
        .await
        .unwrap();
    assert_eq!(other_env.builds.len(), 1);
    assert_eq!(other_env.builds[0].id, elsewhere.job_id);
    // A token of another query, an oversized page: refused with the field named.
    for request in [
        pb::ListBuildsRequest {
            environment_id: "env2".into(),
            page_token: page.next_page_token.clone(),
            ..Default::default()
        },
        pb::ListBuildsRequest {
            environment_id: "env1".into(),
            page_size: 501,
            ..Default::default()
        },
        pb::ListBuildsRequest::default(),
    ] {
        let status = h.list(request, &h.viewer).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn cancel_build_stops_a_running_build_and_refuses_ended_ones() {
    let mut h = Harness::start().await;
    let done = h.job("env1", "true");
    h.publish(&done).await;
    h.result().await;
    let status = h.cancel(&done.job_id, &h.admin).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    let slow = h.job("env1", "echo waiting; sleep 30");
    h.publish(&slow).await;
    // Wait until the worker has recorded it as building.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(build) = h.get(&slow.job_id, &h.admin).await
            && build.status == pb::BuildStatus::Building as i32
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the build never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A viewer may not cancel; another organization does not see the build.
    let status = h.cancel(&slow.job_id, &h.viewer).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = h.cancel(&slow.job_id, &h.other_admin).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let answered = h.cancel(&slow.job_id, &h.admin).await.unwrap();
    assert_eq!(answered.id, slow.job_id);
    let result = h.result().await;
    assert_eq!(result.job_id, slow.job_id);
    assert_eq!(result.outcome, pb::BuildOutcome::Canceled as i32);
    let build = h.get(&slow.job_id, &h.viewer).await.unwrap();
    assert_eq!(build.status, pb::BuildStatus::Canceled as i32);
    let failure = build.failure.unwrap();
    assert_eq!(failure.reason, pb::BuildFailureReason::Canceled as i32);
    assert!(
        failure.message.contains("canceled through the api"),
        "{failure:?}"
    );
    // Canceling it again returns it unchanged.
    let again = h.cancel(&slow.job_id, &h.admin).await.unwrap();
    assert_eq!(again.status, pb::BuildStatus::Canceled as i32);
}

#[tokio::test]
async fn builds_are_recorded_on_sqlite_as_slipway_dev_keeps_them() {
    let mut h = Harness::start_on(TestDatabase::sqlite().unwrap()).await;
    let ok = h.job("env1", "echo built");
    h.publish(&ok).await;
    assert_eq!(h.result().await.outcome, pb::BuildOutcome::Succeeded as i32);
    let build = h.get(&ok.job_id, &h.viewer).await.unwrap();
    assert_eq!(build.status, pb::BuildStatus::Succeeded as i32);
    let listed = h
        .list(
            pb::ListBuildsRequest {
                environment_id: "env1".into(),
                statuses: vec![
                    pb::BuildStatus::Succeeded as i32,
                    pb::BuildStatus::Failed as i32,
                ],
                ..Default::default()
            },
            &h.viewer,
        )
        .await
        .unwrap();
    assert_eq!(listed.builds.len(), 1);
    assert_eq!(listed.builds[0].id, ok.job_id);
}
