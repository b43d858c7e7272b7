//! Notifications on real PostgreSQL and NATS JetStream: identity and catalog in one
//! in-process server, `NotificationService` and its notifier beside them, deploy events
//! published as the engine publishes them, and a local HTTP receiver that checks every
//! signature and can be told to fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use common::{BoxError, ControlPlane, api_token, create_project, org, with_token};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use slipway_identity::store::BuiltinRole;
use slipway_kit::GrpcServer;
use slipway_orchestrator::engine::status;
use slipway_orchestrator::notifications::{
    self, NotificationsConfig, NotificationsOptions, SecretBox, Tasks,
};
use slipway_orchestrator::store::{DeploymentRow, NewDeployment, Store};
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::notification_service_client::NotificationServiceClient;
use slipway_proto::deploy::v1::{DeploymentStatus as DS, WebhookDeliveryStatus, WebhookEventType};
use slipway_proto::events::v1 as ev;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::TestDatabase;
use tonic::transport::Channel;
use tonic::{Code, Request};

const SECRET: &str = "a-webhook-secret-of-some-length";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    event: String,
    delivery: String,
    body: serde_json::Value,
}

/// The local endpoint: checks each signature with [`SECRET`] (401 when wrong), fails
/// the next `fail` requests with 503, and records what it accepted or refused.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<StatusCode>>>,
    bad_signatures: Arc<Mutex<u32>>,
}

fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        if let Some(value) = part.strip_prefix("t=") {
            t = Some(value);
        } else if let Some(value) = part.strip_prefix("v1=") {
            v1 = Some(value);
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if !verify(SECRET.as_bytes(), &header("slipway-signature"), &body)
        || header("content-type") != "application/json"
    {
        *receiver.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    receiver.received.lock().unwrap().push(Received {
        path,
        event: header("slipway-event"),
        delivery: header("slipway-delivery"),
        body: serde_json::from_slice(&body).unwrap(),
    });
    receiver
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(StatusCode::OK)
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .route("/hooks/{path}", axum::routing::post(receive))
            .with_state(self.clone());
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        format!("http://{addr}/hooks")
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

struct Harness {
    channel: Channel,
    admin: String,
    viewer: String,
    other_admin: String,
    org: String,
    other_org: String,
    receiver: Receiver,
    url: String,
    control_plane: ControlPlane,
}

impl Harness {
    async fn start() -> Self {
        let mut control_plane = ControlPlane::start("notify-test").await;
        let options = NotificationsOptions {
            catalog: Some(control_plane.catalog.clone()),
            secrets: SecretBox::derive(b"a test sealing key of 32 characters!"),
            config: NotificationsConfig {
                retry_base: Duration::from_millis(200),
                max_attempts: 3,
                attempt_timeout: Duration::from_secs(5),
                poll_interval: Duration::from_millis(100),
            },
        };
        let server = notifications::mount_notifications(
            GrpcServer::new(
                slipway_config::ServerSettings::default(),
                Metrics::new("notify-test-orch").unwrap(),
            ),
            &control_plane.platform,
            options,
            Arc::new(Tasks::default()),
        );
        control_plane
            .sandbox
            .start("orchestrator", move |listener, shutdown| async move {
                server.serve(listener, shutdown).await?;
                Ok::<(), BoxError>(())
            })
            .await
            .unwrap();
        let channel = control_plane.sandbox.channel("orchestrator").unwrap();
        let identity = control_plane.identity();
        let (org_a, admin) = org(&identity, "org-a").await;
        let (org_b, other_admin) = org(&identity, "org-b").await;
        let viewer = api_token(&identity, &org_a, BuiltinRole::Viewer).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        Self {
            channel,
            admin,
            viewer,
            other_admin,
            org: org_a,
            other_org: org_b,
            receiver,
            url,
            control_plane,
        }
    }

    fn client(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }

    async fn project(&self, org: &str, token: &str, name: &str) -> String {
        create_project(&self.control_plane.control, org, token, name)
            .await
            .id
    }

    async fn create(
        &self,
        org: &str,
        token: &str,
        webhook: pb::Webhook,
    ) -> Result<pb::Webhook, tonic::Status> {
        self.client()
            .create_webhook(with_token(
                pb::CreateWebhookRequest {
                    organization_id: org.into(),
                    webhook: Some(webhook),
                    request_id: String::new(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().webhook.unwrap())
    }

    /// An enabled webhook posting to the receiver's `path`.
    fn webhook(&self, name: &str, path: &str) -> pb::Webhook {
        pb::Webhook {
            name: name.into(),
            url: format!("{}/{path}", self.url),
            secret: SECRET.into(),
            enabled: true,
            ..Default::default()
        }
    }

    async fn deliveries(&self, webhook: &str) -> Vec<pb::WebhookDelivery> {
        self.client()
            .list_webhook_deliveries(with_token(
                pb::ListWebhookDeliveriesRequest {
                    webhook_id: webhook.into(),
                    ..Default::default()
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .webhook_deliveries
    }

    /// A deployment row as `DeployEnvironment` would queue it.
    async fn deployment(&self, org: &str, project: &str, mode: EnvironmentMode) -> DeploymentRow {
        let store = Store::new(self.control_plane.platform.db.clone());
        let new = NewDeployment {
            id: slipway_orchestrator::store::new_id(),
            organization_id: org.into(),
            project_id: project.into(),
            environment_id: slipway_orchestrator::store::new_id(),
            environment_mode: mode as i32,
            action: pb::DeploymentAction::Deploy as i32,
            status: DS::Queued as i32,
            trigger: pb::DeploymentTrigger::Manual as i32,
            triggered_by: "someone".into(),
            ..NewDeployment::default()
        };
        store.insert_deployment(new, None).await.unwrap().0
    }

    /// Publishes what the engine publishes when `row` goes `from` → `to`.
    async fn transition(&self, row: &DeploymentRow, from: DS, to: DS) {
        status::changed(
            &self.control_plane.platform.bus,
            status::orchestrator_actor(),
            row,
            from as i32,
            to as i32,
            "",
        )
        .await;
    }
}

/// Waits (bounded) until `done` holds.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhooks_crud_validation_and_sealed_secret() {
    let h = Harness::start().await;
    let project = h.project(&h.org, &h.admin, "shop").await;
    let other_project = h.project(&h.other_org, &h.other_admin, "theirs").await;

    let mut bad = h.webhook("bad", "x");
    bad.secret = "short".into();
    bad.url = "ftp://example.com/hook".into();
    bad.event_types = vec![0];
    let status = h.create(&h.org, &h.admin, bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_details_bad_request(&status).unwrap();
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert!(fields.contains(&"webhook.secret"), "{fields:?}");
    assert!(fields.contains(&"webhook.url"), "{fields:?}");
    assert!(fields.contains(&"webhook.event_types[0]"), "{fields:?}");

    // Another organization's project is not a project of this one.
    let mut foreign = h.webhook("foreign", "x");
    foreign.project_ids = vec![other_project];
    let status = h.create(&h.org, &h.admin, foreign).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let mut w = h.webhook("deploys", "a");
    w.project_ids = vec![project.clone()];
    w.environment_modes = vec![EnvironmentMode::Staging as i32];
    w.event_types = vec![WebhookEventType::DeploymentFailed as i32];
    let created = h.create(&h.org, &h.admin, w.clone()).await.unwrap();
    assert!(created.secret.is_empty());
    assert!(created.has_secret);
    assert_eq!(created.project_ids, vec![project.clone()]);
    assert_eq!(created.organization_id, h.org);
    let status = h.create(&h.org, &h.admin, w.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    // The secret is sealed at rest: not in the row, and opened only with the key.
    let store = notifications::store::NotificationStore::new(h.control_plane.platform.db.clone());
    let row = store.webhook(&created.id).await.unwrap().unwrap();
    assert!(
        !row.secret_sealed
            .windows(SECRET.len())
            .any(|window| window == SECRET.as_bytes())
    );
    let key = SecretBox::derive(b"a test sealing key of 32 characters!");
    assert_eq!(
        key.open(&row.id, &row.secret_sealed).unwrap(),
        SECRET.as_bytes()
    );
    assert!(
        SecretBox::derive(b"another key")
            .open(&row.id, &row.secret_sealed)
            .is_err()
    );
    assert!(key.open("another-webhook", &row.secret_sealed).is_err());

    // A request id returns the first result.
    let request = |name: &str| pb::CreateWebhookRequest {
        organization_id: h.org.clone(),
        webhook: Some(h.webhook(name, "b")),
        request_id: "0190d4d8-0000-7000-8000-000000000001".into(),
    };
    let first = h
        .client()
        .create_webhook(with_token(request("second"), &h.admin))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    let again = h
        .client()
        .create_webhook(with_token(request("second-again"), &h.admin))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(again.name, "second");

    // Listing is by name, paged.
    let page = h
        .client()
        .list_webhooks(with_token(
            pb::ListWebhooksRequest {
                organization_id: h.org.clone(),
                page_size: 1,
                page_token: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.webhooks.len(), 1);
    assert_eq!(page.webhooks[0].name, "deploys");
    let next = h
        .client()
        .list_webhooks(with_token(
            pb::ListWebhooksRequest {
                organization_id: h.org.clone(),
                page_size: 1,
                page_token: page.next_page_token,
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.webhooks[0].name, "second");
    assert!(next.next_page_token.is_empty());

    // Update: the mask's paths only, etag checked.
    let mask = |paths: &[&str]| prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    };
    let update = |webhook: pb::Webhook, paths: &[&str]| pb::UpdateWebhookRequest {
        webhook: Some(webhook),
        update_mask: Some(mask(paths)),
    };
    let status = h
        .client()
        .update_webhook(with_token(
            update(created.clone(), &["organization_id"]),
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let changed = pb::Webhook {
        description: "for the team".into(),
        enabled: false,
        url: "https://example.com/should-not-change".into(),
        ..created.clone()
    };
    let updated = h
        .client()
        .update_webhook(with_token(
            update(changed.clone(), &["description", "enabled"]),
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    assert_eq!(updated.description, "for the team");
    assert!(!updated.enabled);
    assert_eq!(updated.url, created.url);
    assert_ne!(updated.etag, created.etag);
    let status = h
        .client()
        .update_webhook(with_token(update(changed, &["description"]), &h.admin))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "stale etag");

    // Permissions and tenants.
    let status = h
        .client()
        .list_webhooks(with_token(
            pb::ListWebhooksRequest {
                organization_id: h.org.clone(),
                ..Default::default()
            },
            &h.viewer,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = h
        .client()
        .get_webhook(with_token(
            pb::GetWebhookRequest {
                id: created.id.clone(),
            },
            &h.other_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = h
        .client()
        .delete_webhook(with_token(
            pb::DeleteWebhookRequest {
                id: created.id.clone(),
                etag: String::new(),
            },
            &h.other_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = h
        .client()
        .list_webhooks(with_token(
            pb::ListWebhooksRequest {
                organization_id: h.org.clone(),
                ..Default::default()
            },
            &h.other_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = h
        .client()
        .get_webhook(Request::new(pb::GetWebhookRequest {
            id: created.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Delete.
    h.client()
        .delete_webhook(with_token(
            pb::DeleteWebhookRequest {
                id: created.id.clone(),
                etag: updated.etag.clone(),
            },
            &h.admin,
        ))
        .await
        .unwrap();
    let status = h
        .client()
        .get_webhook(with_token(
            pb::GetWebhookRequest { id: created.id },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn deliveries_are_signed_retried_after_a_failure_logged_and_redelivered() {
    let h = Harness::start().await;
    let project = h.project(&h.org, &h.admin, "shop").await;
    let webhook = h
        .create(&h.org, &h.admin, h.webhook("all", "all"))
        .await
        .unwrap();
    // The first request fails: that delivery is retried after the backoff.
    h.receiver
        .answers
        .lock()
        .unwrap()
        .push_back(StatusCode::SERVICE_UNAVAILABLE);

    let row = h
        .deployment(&h.org, &project, EnvironmentMode::Development)
        .await;
    h.transition(&row, DS::Queued, DS::Deploying).await;
    h.transition(&row, DS::Deploying, DS::Deployed).await;

    eventually("both deliveries succeed", || async {
        let deliveries = h.deliveries(&webhook.id).await;
        deliveries.len() == 2
            && deliveries
                .iter()
                .all(|d| d.status == WebhookDeliveryStatus::Succeeded as i32)
    })
    .await;
    assert_eq!(*h.receiver.bad_signatures.lock().unwrap(), 0);
    let received = h.receiver.at("all");
    // Three requests: the failed one, its retry, and the other event.
    assert_eq!(received.len(), 3, "{received:?}");

    let deliveries = h.deliveries(&webhook.id).await;
    let retried: Vec<_> = deliveries.iter().filter(|d| d.attempt == 2).collect();
    assert_eq!(retried.len(), 1, "{deliveries:?}");
    let retried = retried[0];
    assert_eq!(retried.attempts.len(), 2);
    assert_eq!(retried.attempts[0].response_status_code, 503);
    assert_eq!(retried.attempts[0].error_message, "answered 503");
    assert_eq!(retried.attempts[1].response_status_code, 200);
    assert!(retried.attempts[1].error_message.is_empty());
    assert!(retried.next_retry_time.is_none());

    // The body is the payload of the event, its headers name it.
    let started = deliveries
        .iter()
        .find(|d| d.event_type == WebhookEventType::DeploymentStarted as i32)
        .unwrap();
    let succeeded = deliveries
        .iter()
        .find(|d| d.event_type == WebhookEventType::DeploymentSucceeded as i32)
        .unwrap();
    for (delivery, name, status) in [
        (started, "deployment.started", "DEPLOYMENT_STATUS_DEPLOYING"),
        (
            succeeded,
            "deployment.succeeded",
            "DEPLOYMENT_STATUS_DEPLOYED",
        ),
    ] {
        let sent: Vec<_> = received
            .iter()
            .filter(|r| r.delivery == delivery.id)
            .collect();
        assert!(!sent.is_empty());
        for r in sent {
            assert_eq!(r.event, name);
            assert_eq!(r.body["eventId"], delivery.event_id.as_str());
            assert_eq!(
                r.body["eventType"],
                WebhookEventType::try_from(delivery.event_type)
                    .unwrap()
                    .as_str_name()
            );
            assert_eq!(r.body["organizationId"], h.org.as_str());
            assert_eq!(r.body["environmentMode"], "ENVIRONMENT_MODE_DEVELOPMENT");
            assert_eq!(r.body["deployment"]["id"], row.id.as_str());
            assert_eq!(r.body["deployment"]["projectId"], project.as_str());
            assert_eq!(r.body["deployment"]["status"], status);
        }
        assert_eq!(delivery.deployment_id, row.id);
        assert_eq!(delivery.organization_id, h.org);
    }

    // Filters on the log.
    let only_failed = h
        .client()
        .list_webhook_deliveries(with_token(
            pb::ListWebhookDeliveriesRequest {
                webhook_id: webhook.id.clone(),
                statuses: vec![WebhookDeliveryStatus::Failed as i32],
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(only_failed.webhook_deliveries.is_empty());

    // Redelivery: the same event again, as a new delivery.
    let again = h
        .client()
        .redeliver_webhook_delivery(with_token(
            pb::RedeliverWebhookDeliveryRequest {
                id: succeeded.id.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .webhook_delivery
        .unwrap();
    assert_eq!(again.redelivered_from_delivery_id, succeeded.id);
    assert_eq!(again.event_id, succeeded.event_id);
    assert_ne!(again.id, succeeded.id);
    eventually("the redelivery arrives", || async {
        h.receiver.at("all").iter().any(|r| r.delivery == again.id)
    })
    .await;
    let redelivered = h
        .receiver
        .at("all")
        .into_iter()
        .find(|r| r.delivery == again.id)
        .unwrap();
    assert_eq!(redelivered.body["eventId"], succeeded.event_id.as_str());
    let status = h
        .client()
        .redeliver_webhook_delivery(with_token(
            pb::RedeliverWebhookDeliveryRequest {
                id: succeeded.id.clone(),
                request_id: String::new(),
            },
            &h.other_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The end of a deployment announced again (a redelivered or repeated event) records
    // no second delivery.
    let event = ev::Event {
        id: uuid::Uuid::now_v7().to_string(),
        time: Some(slipway_api::timestamp(chrono::Utc::now())),
        organization_id: h.org.clone(),
        actor: Some(status::orchestrator_actor()),
        r#type: "deploy.deployment.finished".into(),
        payload: Some(ev::event::Payload::DeploymentFinished(
            ev::DeploymentFinished {
                deployment_id: row.id.clone(),
                project_id: project.clone(),
                environment_id: row.environment_id.clone(),
                environment_mode: row.environment_mode,
                status: DS::Deployed as i32,
                ..Default::default()
            },
        )),
    };
    let recorder = notifications::events::Recorder {
        store: notifications::store::NotificationStore::new(h.control_plane.platform.db.clone()),
        deployments: Store::new(h.control_plane.platform.db.clone()),
        catalog: None,
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    assert_eq!(recorder.record(&event).await.unwrap(), 0);
    assert_eq!(h.deliveries(&webhook.id).await.len(), 3);
}

#[tokio::test]
async fn a_delivery_fails_after_its_last_attempt() {
    let h = Harness::start().await;
    let project = h.project(&h.org, &h.admin, "shop").await;
    let webhook = h
        .create(&h.org, &h.admin, h.webhook("down", "down"))
        .await
        .unwrap();
    // The harness allows 3 attempts; the endpoint fails them all.
    for _ in 0..3 {
        h.receiver
            .answers
            .lock()
            .unwrap()
            .push_back(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let row = h
        .deployment(&h.org, &project, EnvironmentMode::Development)
        .await;
    h.transition(&row, DS::Deploying, DS::DeploymentError).await;
    eventually("the delivery gives up", || async {
        h.deliveries(&webhook.id)
            .await
            .first()
            .is_some_and(|d| d.status == WebhookDeliveryStatus::Failed as i32)
    })
    .await;
    let delivery = h.deliveries(&webhook.id).await.remove(0);
    assert_eq!(
        delivery.event_type,
        WebhookEventType::DeploymentFailed as i32
    );
    assert_eq!(delivery.attempt, 3);
    assert_eq!(delivery.response_status_code, 500);
    assert_eq!(delivery.error_message, "answered 500");
    assert!(delivery.next_retry_time.is_none());
    let codes: Vec<i32> = delivery
        .attempts
        .iter()
        .map(|a| a.response_status_code)
        .collect();
    assert_eq!(codes, vec![500, 500, 500]);
    // Backoff doubles from the base: the attempts are at least 200 ms, then 400 ms apart.
    let times: Vec<i64> = delivery
        .attempts
        .iter()
        .map(|a| {
            let t = a.attempt_time.unwrap();
            t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
        })
        .collect();
    assert!(times[1] - times[0] >= 200, "{times:?}");
    assert!(times[2] - times[1] >= 400, "{times:?}");
    assert_eq!(h.receiver.at("down").len(), 3);
}

#[tokio::test]
async fn filters_and_tenants_decide_who_hears_an_event() {
    let h = Harness::start().await;
    let shop = h.project(&h.org, &h.admin, "shop").await;
    let blog = h.project(&h.org, &h.admin, "blog").await;
    let theirs = h.project(&h.other_org, &h.other_admin, "theirs").await;
    let all = h
        .create(&h.org, &h.admin, h.webhook("all", "all"))
        .await
        .unwrap();
    let failed_only = h
        .create(
            &h.org,
            &h.admin,
            pb::Webhook {
                event_types: vec![WebhookEventType::DeploymentFailed as i32],
                ..h.webhook("failed-only", "failed-only")
            },
        )
        .await
        .unwrap();
    let blog_only = h
        .create(
            &h.org,
            &h.admin,
            pb::Webhook {
                project_ids: vec![blog.clone()],
                ..h.webhook("blog-only", "blog-only")
            },
        )
        .await
        .unwrap();
    let production_only = h
        .create(
            &h.org,
            &h.admin,
            pb::Webhook {
                environment_modes: vec![EnvironmentMode::Production as i32],
                ..h.webhook("production-only", "production-only")
            },
        )
        .await
        .unwrap();
    let disabled = h
        .create(
            &h.org,
            &h.admin,
            pb::Webhook {
                enabled: false,
                ..h.webhook("disabled", "disabled")
            },
        )
        .await
        .unwrap();
    let other_org = h
        .create(&h.other_org, &h.other_admin, h.webhook("theirs", "theirs"))
        .await
        .unwrap();

    // A development deployment of `shop` starts and succeeds; then (the marker, handled
    // after it by the in-order consumer) one of `blog` fails and one of org B is canceled.
    let shop_row = h
        .deployment(&h.org, &shop, EnvironmentMode::Development)
        .await;
    h.transition(&shop_row, DS::Queued, DS::Building).await;
    h.transition(&shop_row, DS::Building, DS::Deploying).await;
    h.transition(&shop_row, DS::Deploying, DS::Deployed).await;
    let blog_row = h.deployment(&h.org, &blog, EnvironmentMode::Staging).await;
    h.transition(&blog_row, DS::Deploying, DS::DeploymentError)
        .await;
    let their_row = h
        .deployment(&h.other_org, &theirs, EnvironmentMode::Development)
        .await;
    h.transition(&their_row, DS::Queued, DS::Canceled).await;

    eventually("the marker events are delivered", || async {
        !h.receiver.at("theirs").is_empty()
            && h.deliveries(&all.id).await.len() == 3
            && h.receiver.at("all").len() == 3
            && !h.receiver.at("failed-only").is_empty()
            && !h.receiver.at("blog-only").is_empty()
    })
    .await;
    let types = |deliveries: Vec<pb::WebhookDelivery>| {
        let mut types: Vec<i32> = deliveries.iter().map(|d| d.event_type).collect();
        types.sort_unstable();
        types
    };
    // `all`: started once (BUILDING → DEPLOYING is no second start), succeeded, failed.
    assert_eq!(
        types(h.deliveries(&all.id).await),
        vec![
            WebhookEventType::DeploymentStarted as i32,
            WebhookEventType::DeploymentSucceeded as i32,
            WebhookEventType::DeploymentFailed as i32,
        ]
    );
    assert_eq!(
        types(h.deliveries(&failed_only.id).await),
        vec![WebhookEventType::DeploymentFailed as i32]
    );
    let blog_deliveries = h.deliveries(&blog_only.id).await;
    assert_eq!(blog_deliveries.len(), 1);
    assert_eq!(blog_deliveries[0].deployment_id, blog_row.id);
    assert!(h.deliveries(&production_only.id).await.is_empty());
    assert!(h.deliveries(&disabled.id).await.is_empty());
    assert!(h.receiver.at("production-only").is_empty());
    assert!(h.receiver.at("disabled").is_empty());
    // Org B heard its own cancellation only; org A's webhooks never saw it.
    let theirs_received = h.receiver.at("theirs");
    assert_eq!(theirs_received.len(), 1);
    assert_eq!(theirs_received[0].event, "deployment.canceled");
    assert_eq!(
        theirs_received[0].body["deployment"]["id"],
        their_row.id.as_str()
    );
    assert!(
        h.receiver
            .at("all")
            .iter()
            .all(|r| r.body["organizationId"] == h.org.as_str())
    );
    let status = h
        .client()
        .list_webhook_deliveries(with_token(
            pb::ListWebhookDeliveriesRequest {
                webhook_id: other_org.id.clone(),
                ..Default::default()
            },
            &h.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn one_sender_claims_a_due_delivery_on_sqlite_too() {
    let db = TestDatabase::sqlite().unwrap();
    let conn = slipway_db::connect(db.url(), 1, Duration::from_secs(15))
        .await
        .unwrap();
    slipway_db::migrate::<slipway_orchestrator::store::Migrator>(&conn)
        .await
        .unwrap();
    let store = notifications::store::NotificationStore::new(conn);
    let now = slipway_orchestrator::store::now();
    let pending = WebhookDeliveryStatus::Pending as i32;
    let delivery = notifications::store::DeliveryRow {
        id: slipway_orchestrator::store::new_id(),
        webhook_id: "w".into(),
        organization_id: "o".into(),
        dedup_key: "d:1".into(),
        event_id: "e".into(),
        event_type: WebhookEventType::DeploymentStarted as i32,
        deployment_id: "d".into(),
        status: pending,
        attempt: 0,
        response_status_code: 0,
        error_message: String::new(),
        attempt_time: None,
        next_retry_time: Some(now),
        attempts: Vec::new(),
        body: b"{}".to_vec(),
        redelivered_from: String::new(),
        create_time: now,
    };
    assert!(store.insert_delivery(&delivery).await.unwrap());
    let again = notifications::store::DeliveryRow {
        id: slipway_orchestrator::store::new_id(),
        ..delivery.clone()
    };
    assert!(
        !store.insert_delivery(&again).await.unwrap(),
        "same dedup key"
    );
    let due = store.due_deliveries(pending, now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let until = now + chrono::Duration::seconds(30);
    assert!(
        store
            .claim(&delivery.id, pending, now, until)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim(&delivery.id, pending, now, until)
            .await
            .unwrap()
    );
    assert!(
        store
            .due_deliveries(pending, now, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
