//! Sends pending deliveries: one signed POST per attempt, retried with exponential
//! backoff, every attempt written to the delivery log.
//!
//! Any replica may send any delivery. A sender first claims the delivery by moving its due
//! time forward with a conditional update, so two replicas never send one attempt twice;
//! a sender that dies mid-attempt leaves the claim to expire and the attempt is retried.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use slipway_proto::deploy::v1::{WebhookDeliveryAttempt, WebhookDeliveryStatus as S};

use super::NotificationsConfig;
use super::payload::header_name;
use super::seal::{SecretBox, signature};
use super::store::{DeliveryRow, NotificationStore};
use crate::store::now;

/// The HTTP side of deliveries.
#[derive(Clone)]
pub struct Sender {
    store: NotificationStore,
    secrets: SecretBox,
    config: NotificationsConfig,
    http: Client<HttpConnector, Full<Bytes>>,
    /// `None` when this host has no trusted certificates: `https://` attempts then fail
    /// with that reason, recorded like any other failure.
    https: Option<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
}

/// How one attempt ended.
struct Outcome {
    status_code: i32,
    error: String,
}

impl Sender {
    pub fn new(store: NotificationStore, secrets: SecretBox, config: NotificationsConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.attempt_timeout));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => Some(
                Client::builder(TokioExecutor::new())
                    .build(builder.https_only().enable_http1().build()),
            ),
            Err(error) => {
                tracing::warn!(%error, "no trusted certificates: https webhooks will fail");
                None
            }
        };
        Self {
            store,
            secrets,
            config,
            http,
            https,
        }
    }

    /// Sends every delivery due now; returns how many attempts this replica made.
    pub async fn send_due(&self) -> usize {
        let due = match self
            .store
            .due_deliveries(S::Pending as i32, now(), 32)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "cannot read due webhook deliveries");
                return 0;
            }
        };
        let mut attempts = tokio::task::JoinSet::new();
        for row in due {
            let Some(due_time) = row.next_retry_time else {
                continue;
            };
            // Long enough for the attempt and its bookkeeping; if this replica dies, the
            // delivery becomes due again once it passes.
            let until = now() + delta(self.config.attempt_timeout * 3);
            match self
                .store
                .claim(&row.id, S::Pending as i32, due_time, until)
                .await
            {
                Ok(true) => {
                    let sender = self.clone();
                    attempts.spawn(async move { sender.attempt(row).await });
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot claim a webhook delivery"),
            }
        }
        let mut sent = 0;
        while attempts.join_next().await.is_some() {
            sent += 1;
        }
        sent
    }

    /// One attempt of `row`, recorded.
    async fn attempt(&self, mut row: DeliveryRow) {
        let webhook = match self.store.webhook(&row.webhook_id).await {
            Ok(webhook) => webhook,
            Err(error) => {
                tracing::warn!(%error, "cannot read a webhook; the delivery is retried");
                return;
            }
        };
        let started = now();
        let clock = Instant::now();
        let outcome = match webhook {
            None => {
                // Deleted meanwhile (its deliveries go with it): nothing to record.
                return;
            }
            Some(webhook) if !webhook.enabled => {
                row.status = S::Failed as i32;
                row.error_message = "the webhook was disabled".to_owned();
                row.next_retry_time = None;
                if let Err(error) = self.store.record_attempt(&row).await {
                    tracing::warn!(%error, "cannot record a webhook delivery");
                }
                return;
            }
            Some(webhook) => match self.secrets.open(&webhook.id, &webhook.secret_sealed) {
                Ok(secret) => self.post(&webhook.url, &secret, &row, started).await,
                Err(error) => Outcome {
                    status_code: 0,
                    error: format!("cannot sign: {error}"),
                },
            },
        };
        let latency = clock.elapsed();
        row.attempt += 1;
        row.attempt_time = Some(started);
        row.response_status_code = outcome.status_code;
        row.error_message = outcome.error.clone();
        let succeeded = outcome.error.is_empty();
        let mut log = row.attempts.clone();
        let entry = WebhookDeliveryAttempt {
            attempt: row.attempt,
            attempt_time: Some(slipway_api::timestamp(started)),
            response_status_code: outcome.status_code,
            error_message: outcome.error,
            latency: prost_types::Duration::try_from(latency).ok(),
        };
        // Appending to a Vec cannot fail.
        let _ = entry.encode_length_delimited(&mut log);
        row.attempts = log;
        if succeeded {
            row.status = S::Succeeded as i32;
            row.next_retry_time = None;
        } else if u32::try_from(row.attempt).unwrap_or(u32::MAX) >= self.config.max_attempts {
            row.status = S::Failed as i32;
            row.next_retry_time = None;
        } else {
            row.next_retry_time = Some(now() + delta(self.backoff(row.attempt)));
        }
        if let Err(error) = self.store.record_attempt(&row).await {
            tracing::warn!(%error, "cannot record a webhook delivery attempt");
        }
    }

    /// The wait after the `attempt`-th failure: the base, doubled each time.
    fn backoff(&self, attempt: i32) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(16);
        self.config.retry_base.saturating_mul(1 << doublings)
    }

    async fn post(
        &self,
        url: &str,
        secret: &[u8],
        row: &DeliveryRow,
        at: DateTime<Utc>,
    ) -> Outcome {
        let failed = |error: String| Outcome {
            status_code: 0,
            error,
        };
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "slipway-webhooks/1")
            .header("slipway-event", header_name(row.event_type))
            .header("slipway-delivery", row.id.as_str())
            .header(
                "slipway-signature",
                signature(secret, at.timestamp(), &row.body),
            )
            .body(Full::new(Bytes::from(row.body.clone())));
        let request = match request {
            Ok(request) => request,
            Err(_) => return failed("the webhook url is not a valid http url".to_owned()),
        };
        let sent = if url.starts_with("https://") {
            match &self.https {
                Some(client) => client.request(request),
                None => return failed("no trusted certificates to check https".to_owned()),
            }
        } else {
            self.http.request(request)
        };
        let timeout = self.config.attempt_timeout;
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => failed(format!("timed out after {}s", timeout.as_secs())),
            Ok(Err(error)) => failed(if error.is_connect() {
                "cannot connect".to_owned()
            } else {
                "the connection failed".to_owned()
            }),
            Ok(Ok(response)) => {
                let code = response.status();
                let status_code = i32::from(code.as_u16());
                if code.is_success() {
                    Outcome {
                        status_code,
                        error: String::new(),
                    }
                } else {
                    Outcome {
                        status_code,
                        error: format!("answered {}", code.as_u16()),
                    }
                }
            }
        }
    }
}

fn delta(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::seconds(60))
}

/// Decodes a delivery's attempt log.
pub fn attempts(log: &[u8]) -> Vec<WebhookDeliveryAttempt> {
    let mut out = Vec::new();
    let mut rest = log;
    while !rest.is_empty() {
        match WebhookDeliveryAttempt::decode_length_delimited(&mut rest) {
            Ok(attempt) => out.push(attempt),
            Err(_) => break,
        }
    }
    out
}
