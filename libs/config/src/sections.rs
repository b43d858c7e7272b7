//! The sections every service shares. A service with settings of its own declares its own
//! top-level type holding these sections beside its own (serde cannot combine `flatten`
//! with `deny_unknown_fields`, and refusing unknown keys catches typos in files).

use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, Validate};

/// What every Slipway service binary reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSettings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
}

impl Validate for ServiceSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.nats.validate()?;
        self.telemetry.validate()?;
        self.auth.validate()
    }
}

/// The `slps_` prefix of control-plane service credentials (`slipway_auth::credential`).
const SERVICE_CREDENTIAL_PREFIX: &str = "slps_";

/// Characters of a service credential: the prefix, 43 random and 6 checksum characters.
const SERVICE_CREDENTIAL_LEN: usize = SERVICE_CREDENTIAL_PREFIX.len() + 43 + 6;

/// How a service authenticates its callers and itself (`[auth]`).
///
/// Every service other than identity resolves its callers' credentials by asking identity
/// at `identity_url` (cached), and reads custom roles' grants from identity under
/// `service_credential`. Identity accepts exactly the `service_credential` it is configured
/// with as the control plane's own credential, so the operator puts one credential
/// (`slipway-identity service-credential` prints a fresh one) in every service's settings.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// identity's gRPC address (`http://identity:7801`). Required by every service except
    /// identity itself, which resolves credentials from its own store.
    pub identity_url: Option<String>,
    /// The control plane's `slps_` credential. Secret: never printed by `Debug`. Only its
    /// shape is checked here (this crate knows no checksums); services parse it fully at
    /// start-up and refuse to start on a damaged one.
    pub service_credential: Option<String>,
}

/// Written by hand so that settings can be logged without leaking the credential.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("identity_url", &self.identity_url)
            .field(
                "service_credential",
                &self.service_credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Validate for AuthSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.identity_url {
            let rest = ["http://", "https://"]
                .iter()
                .find_map(|scheme| url.strip_prefix(scheme));
            if !rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')) {
                return Err(ConfigError::invalid(
                    "auth.identity_url",
                    "must be an http:// or https:// URL, for example http://identity:7801",
                ));
            }
        }
        if let Some(credential) = &self.service_credential {
            // The message never quotes the value: it is a secret, possibly with one typo.
            let well_formed = credential.len() == SERVICE_CREDENTIAL_LEN
                && credential
                    .strip_prefix(SERVICE_CREDENTIAL_PREFIX)
                    .is_some_and(|body| body.bytes().all(|b| b.is_ascii_alphanumeric()));
            if !well_formed {
                return Err(ConfigError::invalid(
                    "auth.service_credential",
                    format!(
                        "must be an slps_ credential of {SERVICE_CREDENTIAL_LEN} characters, as \
                         printed by `slipway-identity service-credential`"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// How the gRPC server treats requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Unary calls that take longer are answered `DEADLINE_EXCEEDED`, so a stuck dependency
    /// cannot hold a connection slot forever. Streams are exempt.
    #[serde(with = "duration_ms", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    /// Requests served at once; beyond it new requests are shed with `UNAVAILABLE` rather
    /// than queued, so clients retry elsewhere instead of piling latency up.
    pub concurrency_limit: usize,
    /// How long shutdown waits for in-flight requests after health turns NOT_SERVING.
    #[serde(with = "duration_ms", rename = "shutdown_grace_ms")]
    pub shutdown_grace: Duration,
    /// Where Prometheus `/metrics` is served (`host:port`); empty to disable.
    pub metrics_listen: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 1024,
            shutdown_grace: Duration::from_secs(20),
            metrics_listen: String::new(),
        }
    }
}

impl Validate for ServerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "server.request_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.concurrency_limit == 0 {
            return Err(ConfigError::invalid(
                "server.concurrency_limit",
                "must be greater than 0",
            ));
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::invalid(
                "server.metrics_listen",
                "must be host:port, for example 127.0.0.1:9090",
            ));
        }
        Ok(())
    }
}

/// The service's PostgreSQL (or, in the embedded mode, SQLite) database.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user@host:port/db` or `sqlite://path`.
    pub url: String,
    pub max_connections: u32,
    #[serde(with = "duration_ms", rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/slipway".to_owned(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Validate for DatabaseSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let known = ["postgres://", "postgresql://", "sqlite://", "sqlite:"];
        if !known.iter().any(|scheme| self.url.starts_with(scheme)) {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with postgres:// or sqlite://",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// The NATS server with JetStream that carries events, build jobs, agent traffic and logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    pub url: String,
    /// Prefix of stream names and subjects. Empty in a real install; tests set one so that
    /// parallel runs share a server without seeing each other.
    pub namespace: String,
    /// How long log lines are kept in the LOGS stream.
    #[serde(with = "duration_ms", rename = "logs_max_age_ms")]
    pub logs_max_age: Duration,
    /// How many bytes the LOGS stream keeps before dropping the oldest lines.
    pub logs_max_bytes: u64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            namespace: String::new(),
            logs_max_age: Duration::from_secs(7 * 24 * 3600),
            logs_max_bytes: 1 << 30,
        }
    }
}

impl Validate for NatsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("nats://") || self.url.starts_with("tls://")) {
            return Err(ConfigError::invalid(
                "nats.url",
                "must start with nats:// or tls://",
            ));
        }
        let mut chars = self.namespace.chars();
        let starts_well = chars.next().is_none_or(|c| c.is_ascii_lowercase());
        if !starts_well
            || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            || self.namespace.len() > 64
        {
            return Err(ConfigError::invalid(
                "nats.namespace",
                "must start with a lowercase letter and hold only lowercase letters, digits, '-' \
                 and '_' (64 at most)",
            ));
        }
        if self.logs_max_bytes == 0 {
            return Err(ConfigError::invalid(
                "nats.logs_max_bytes",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// Log output format on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `tracing` filter directives, for example `info,slipway_kit=debug`.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint (`http://host:4317`); empty disables trace export.
    pub otlp_endpoint: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_filter: "info".to_owned(),
            log_format: LogFormat::Text,
            otlp_endpoint: String::new(),
        }
    }
}

impl Validate for TelemetrySettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let endpoint = &self.otlp_endpoint;
        let is_http = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !endpoint.is_empty() && !is_http {
            return Err(ConfigError::invalid(
                "telemetry.otlp_endpoint",
                "must start with http:// or https://",
            ));
        }
        Ok(())
    }
}

/// Durations are written as whole milliseconds, the one unit that needs no parser and
/// survives environment variables unchanged.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
