//! The webhook endpoint: plain HTTP (axum) on its own listener (`[previews] listen`),
//! beside the gRPC port.
//!
//! A second listener rather than a route on the gRPC port: the kit's `GrpcServer` builds
//! its router inside `serve` and offers no way in for a non-gRPC route, and the gRPC
//! layers (deadlines, gRPC status metrics) mean nothing to a git provider. TLS is left
//! to the ingress or proxy in front, as for the gRPC port.
//!
//! Routes, under `[previews] path` (default `/webhooks`):
//! `POST <path>/github/<organization_id>` and `POST <path>/gitlab/<organization_id>`:
//! the organization whose blueprints the provider's repository feeds. Answers: 200 with
//! what was done (also for a redelivery, which does nothing), 202 for events and actions
//! previews ignore, 400 for a body that is not the event it claims, 401 for a missing or
//! malformed signature, 403 for a wrong one, 404 when that provider has no secret
//! configured, 5xx when handling failed (the delivery is forgotten, so redelivering it
//! retries).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;
use slipway_config::ConfigError;
use slipway_service::ServiceError;
use tokio::net::TcpListener;

use super::Previews;
use super::signature::{self, SignatureError};
use super::webhook::{self, Provider, PullRequestEvent};

/// The shared secrets the providers' webhooks are configured with: one per installation
/// (`[previews] github_secret`, `[previews] gitlab_token`). `None` refuses that provider.
#[derive(Clone, Debug, Default)]
pub struct WebhookSecrets {
    pub github: Option<String>,
    pub gitlab: Option<String>,
}

/// `[previews]`: where the git providers' pull-request webhooks are received.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreviewsSettings {
    /// Address of the webhook HTTP listener, e.g. `0.0.0.0:7809`
    /// (`SLIPWAY__PREVIEWS__LISTEN`). Empty (the default): no webhooks are received, and
    /// previews are made on demand only. Plain HTTP: terminate TLS in front.
    pub listen: String,
    /// Path prefix of the routes (`SLIPWAY__PREVIEWS__PATH`), default `/webhooks`.
    pub path: String,
    /// The secret GitHub webhooks are configured with (`SLIPWAY__PREVIEWS__GITHUB_SECRET`);
    /// unset refuses GitHub deliveries.
    pub github_secret: Option<String>,
    /// The secret token GitLab webhooks are configured with
    /// (`SLIPWAY__PREVIEWS__GITLAB_TOKEN`); unset refuses GitLab deliveries.
    pub gitlab_token: Option<String>,
}

impl Default for PreviewsSettings {
    fn default() -> Self {
        Self {
            listen: String::new(),
            path: "/webhooks".to_owned(),
            github_secret: None,
            gitlab_token: None,
        }
    }
}

impl std::fmt::Debug for PreviewsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("PreviewsSettings")
            .field("listen", &self.listen)
            .field("path", &self.path)
            .field("github_secret", &redacted(&self.github_secret))
            .field("gitlab_token", &redacted(&self.gitlab_token))
            .finish()
    }
}

/// A secret that is set and not empty: an empty value (a compose file's `${VAR:-}` with
/// nothing in it) is no secret, and refuses that provider like an unset one.
fn configured(secret: &Option<String>) -> Option<&str> {
    secret.as_deref().filter(|secret| !secret.is_empty())
}

impl PreviewsSettings {
    /// Refuses what would only fail later: a path axum cannot route, a short secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') || self.path.contains(['{', '}', '*']) {
            return Err(ConfigError::invalid(
                "previews.path",
                "must start with '/' and hold no '{', '}' or '*'",
            ));
        }
        for (key, secret) in [
            ("previews.github_secret", &self.github_secret),
            ("previews.gitlab_token", &self.gitlab_token),
        ] {
            if configured(secret).is_some_and(|s| s.len() < 16) {
                return Err(ConfigError::invalid(key, "must be at least 16 characters"));
            }
        }
        Ok(())
    }
}

/// The webhook listener of a standalone orchestrator, bound before anything is served so
/// a bad address stops the start.
pub struct WebhookEndpoint {
    listener: TcpListener,
    secrets: WebhookSecrets,
    path: String,
}

impl WebhookEndpoint {
    /// Binds `settings.listen`; `None` when it is empty, or when no provider's secret is
    /// set (nothing could be checked, so nothing is received: said once at start).
    pub async fn bind(settings: &PreviewsSettings) -> Result<Option<Self>, ServiceError> {
        if settings.listen.is_empty() {
            return Ok(None);
        }
        if configured(&settings.github_secret).is_none()
            && configured(&settings.gitlab_token).is_none()
        {
            tracing::warn!(
                listen = %settings.listen,
                "previews.listen is set but neither previews.github_secret nor previews.gitlab_token: no webhooks are received"
            );
            return Ok(None);
        }
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(|error| ServiceError::Server(slipway_kit::KitError::Listener(error)))?;
        Ok(Some(Self {
            listener,
            secrets: WebhookSecrets {
                github: configured(&settings.github_secret).map(str::to_owned),
                gitlab: configured(&settings.gitlab_token).map(str::to_owned),
            },
            path: settings.path.clone(),
        }))
    }

    /// Serves the webhooks in the background until `stop` completes.
    pub fn spawn(
        self,
        previews: Previews,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let address = self.listener.local_addr().ok();
        let router = router(previews, self.secrets, &self.path);
        tokio::spawn(async move {
            tracing::info!(?address, "serving git provider webhooks");
            if let Err(error) = serve_webhooks(self.listener, router, stop).await {
                tracing::warn!(%error, "the webhook listener stopped");
            }
        })
    }
}

struct Hooks {
    previews: Previews,
    secrets: WebhookSecrets,
}

type Answer = (StatusCode, String);

/// The webhook routes under `path` (e.g. `/webhooks`).
pub fn router(previews: Previews, secrets: WebhookSecrets, path: &str) -> Router {
    let base = path.trim_end_matches('/');
    Router::new()
        .route(&format!("{base}/github/{{organization_id}}"), post(github))
        .route(&format!("{base}/gitlab/{{organization_id}}"), post(gitlab))
        .with_state(Arc::new(Hooks { previews, secrets }))
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve_webhooks(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// Organization ids are UUIDs; anything else cannot name one.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn refused(
    provider: Provider,
    organization_id: &str,
    delivery: Option<&str>,
    error: SignatureError,
) -> Answer {
    tracing::warn!(
        provider = provider.as_str(),
        organization = organization_id,
        delivery = delivery.unwrap_or(""),
        %error,
        "webhook refused"
    );
    let status = match error {
        SignatureError::Missing | SignatureError::Malformed => StatusCode::UNAUTHORIZED,
        SignatureError::Mismatch => StatusCode::FORBIDDEN,
    };
    (status, format!("{error}\n"))
}

fn not_configured(provider: Provider) -> Answer {
    tracing::warn!(
        provider = provider.as_str(),
        "webhook received but no secret is configured for this provider"
    );
    (
        StatusCode::NOT_FOUND,
        format!(
            "{} webhooks are not configured on this installation\n",
            provider.as_str()
        ),
    )
}

async fn github(
    State(hooks): State<Arc<Hooks>>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let provider = Provider::GitHub;
    let Some(secret) = hooks.secrets.github.as_deref() else {
        return not_configured(provider);
    };
    let delivery = header(&headers, "x-github-delivery");
    if let Err(error) =
        signature::verify_github(secret, &body, header(&headers, "x-hub-signature-256"))
    {
        return refused(provider, &organization_id, delivery, error);
    }
    match header(&headers, "x-github-event") {
        Some("ping") => return (StatusCode::OK, "pong\n".to_owned()),
        Some("pull_request") => {}
        _ => return ignored("not a pull_request event"),
    }
    let event = match webhook::github(&body) {
        Ok(Some(event)) => event,
        Ok(None) => return ignored("a pull request action previews do not follow"),
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    hooks
        .process(provider, &organization_id, delivery, event)
        .await
}

async fn gitlab(
    State(hooks): State<Arc<Hooks>>,
    Path(organization_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let provider = Provider::GitLab;
    let Some(token) = hooks.secrets.gitlab.as_deref() else {
        return not_configured(provider);
    };
    // `Idempotency-Key` stays the same across GitLab's retries; older GitLab versions
    // only send the event's UUID.
    let delivery = header(&headers, "idempotency-key").or(header(&headers, "x-gitlab-event-uuid"));
    if let Err(error) = signature::verify_gitlab(token, header(&headers, "x-gitlab-token")) {
        return refused(provider, &organization_id, delivery, error);
    }
    if header(&headers, "x-gitlab-event") != Some("Merge Request Hook") {
        return ignored("not a Merge Request Hook");
    }
    let event = match webhook::gitlab(&body) {
        Ok(Some(event)) => event,
        Ok(None) => return ignored("a merge request action previews do not follow"),
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    hooks
        .process(provider, &organization_id, delivery, event)
        .await
}

fn ignored(why: &str) -> Answer {
    (StatusCode::ACCEPTED, format!("ignored: {why}\n"))
}

impl Hooks {
    /// Handles a verified event once per delivery id.
    async fn process(
        &self,
        provider: Provider,
        organization_id: &str,
        delivery: Option<&str>,
        event: PullRequestEvent,
    ) -> Answer {
        if !plausible_id(organization_id) {
            return (StatusCode::NOT_FOUND, "no such organization\n".to_owned());
        }
        let Some(delivery) = delivery else {
            return (
                StatusCode::BAD_REQUEST,
                "the delivery id header is missing\n".to_owned(),
            );
        };
        let store = self.previews.store();
        match store
            .record_delivery(provider.as_str(), delivery, organization_id)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    provider = provider.as_str(),
                    delivery,
                    "webhook redelivered: nothing to do"
                );
                return (StatusCode::OK, "delivery already handled\n".to_owned());
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record a webhook delivery");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; redeliver later\n".to_owned(),
                );
            }
        }
        match self.previews.handle(organization_id, &event).await {
            Ok(handled) => {
                let outcome = handled.to_string();
                if let Err(error) = store
                    .finish_delivery(provider.as_str(), delivery, &outcome)
                    .await
                {
                    tracing::warn!(%error, "cannot record a webhook delivery's outcome");
                }
                tracing::info!(
                    provider = provider.as_str(),
                    organization = organization_id,
                    delivery,
                    number = event.number,
                    %outcome,
                    "webhook handled"
                );
                (StatusCode::OK, format!("{outcome}\n"))
            }
            Err(error) => {
                tracing::warn!(
                    provider = provider.as_str(),
                    organization = organization_id,
                    delivery,
                    %error,
                    "webhook could not be handled"
                );
                if let Err(error) = store.forget_delivery(provider.as_str(), delivery).await {
                    tracing::warn!(%error, "cannot forget a failed webhook delivery");
                }
                let status = if error.is_transient() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                (
                    status,
                    "the event could not be handled; redeliver it later\n".to_owned(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let mut settings = PreviewsSettings::default();
        assert!(settings.validate().is_ok(), "no listener needs no secret");
        settings.listen = "127.0.0.1:0".into();
        settings.github_secret = Some(String::new());
        assert!(
            settings.validate().is_ok(),
            "an empty secret is no secret (an empty compose variable), not a short one"
        );
        settings.github_secret = Some("short".into());
        assert!(settings.validate().is_err());
        settings.github_secret = Some("a-long-enough-secret".into());
        assert!(settings.validate().is_ok());
        settings.path = "webhooks".into();
        assert!(settings.validate().is_err());
        settings.path = "/hooks/{x}".into();
        assert!(settings.validate().is_err());
        assert!(!format!("{settings:?}").contains("a-long-enough-secret"));
    }

    #[tokio::test]
    async fn a_listener_without_any_secret_receives_nothing() {
        let mut settings = PreviewsSettings {
            listen: "127.0.0.1:0".into(),
            github_secret: Some(String::new()),
            ..PreviewsSettings::default()
        };
        assert!(WebhookEndpoint::bind(&settings).await.unwrap().is_none());
        settings.gitlab_token = Some("a-long-enough-token".into());
        let bound = WebhookEndpoint::bind(&settings).await.unwrap().unwrap();
        assert!(
            bound.secrets.github.is_none(),
            "the empty GitHub secret refuses GitHub"
        );
        assert_eq!(bound.secrets.gitlab.as_deref(), Some("a-long-enough-token"));
    }

    #[test]
    fn organization_ids() {
        assert!(plausible_id("0195f0a4-7c1e-7b3a-9e1d-2f4c5a6b7c8d"));
        assert!(!plausible_id(""));
        assert!(!plausible_id("../etc"));
        assert!(!plausible_id(&"a".repeat(65)));
    }
}
