//! The log-streaming settings: the sections every control-plane service reads, and
//! `[logs]`, the limits that protect the service from its own readers.

use std::ops::{Deref, DerefMut};

use serde::Deserialize;
use slipway_config::{
    AuthSettings, ConfigError, DatabaseSettings, NatsSettings, ServerSettings, ServiceSettings,
    TelemetrySettings, Validate,
};

use crate::LogOptions;

/// What `slipway-log-streaming` reads; dereferences to the shared [`ServiceSettings`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "SettingsFile")]
pub struct Settings {
    pub service: ServiceSettings,
    pub logs: LogSettings,
}

/// The settings as written: every section at the top level, unknown keys refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SettingsFile {
    server: ServerSettings,
    database: DatabaseSettings,
    nats: NatsSettings,
    telemetry: TelemetrySettings,
    auth: AuthSettings,
    logs: LogSettings,
}

impl From<SettingsFile> for Settings {
    fn from(file: SettingsFile) -> Self {
        Self {
            service: ServiceSettings {
                server: file.server,
                database: file.database,
                nats: file.nats,
                telemetry: file.telemetry,
                auth: file.auth,
            },
            logs: file.logs,
        }
    }
}

/// `[logs]`: limits per process. How long lines are kept is `[nats]`'s LOGS retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Live tails one organization may hold open at once in this process
    /// (`SLIPWAY__LOGS__MAX_TAILS_PER_ORGANIZATION`); one more answers RESOURCE_EXHAUSTED.
    pub max_tails_per_organization: usize,
    /// Unsent lines kept per tail before the oldest are dropped for that slow client, who
    /// gets a marker saying how many (`SLIPWAY__LOGS__TAIL_BUFFER`).
    pub tail_buffer: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        let options = LogOptions::default();
        Self {
            max_tails_per_organization: options.max_tails_per_organization,
            tail_buffer: options.tail_buffer,
        }
    }
}

impl LogSettings {
    pub fn options(&self) -> LogOptions {
        LogOptions {
            tail_buffer: self.tail_buffer,
            max_tails_per_organization: self.max_tails_per_organization,
        }
    }
}

impl Deref for Settings {
    type Target = ServiceSettings;

    fn deref(&self) -> &ServiceSettings {
        &self.service
    }
}

impl DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut ServiceSettings {
        &mut self.service
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.service.validate()?;
        if self.logs.max_tails_per_organization == 0 {
            return Err(ConfigError::invalid(
                "logs.max_tails_per_organization",
                "must be at least 1",
            ));
        }
        if !(100..=1_000_000).contains(&self.logs.tail_buffer) {
            return Err(ConfigError::invalid(
                "logs.tail_buffer",
                "must be 100 to 1000000",
            ));
        }
        Ok(())
    }
}

impl slipway_kit::binary::HasTelemetry for Settings {
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        slipway_config::load_from(None, env.collect::<Vec<_>>())
    }

    #[test]
    fn the_logs_section_sets_the_limits_and_is_checked() {
        let settings = load(&[
            ("SLIPWAY__LOGS__MAX_TAILS_PER_ORGANIZATION", "7"),
            ("SLIPWAY__LOGS__TAIL_BUFFER", "500"),
        ])
        .unwrap();
        assert_eq!(settings.logs.options().max_tails_per_organization, 7);
        assert_eq!(settings.logs.options().tail_buffer, 500);
        assert_eq!(load(&[]).unwrap().logs.max_tails_per_organization, 500);

        let zero = load(&[("SLIPWAY__LOGS__MAX_TAILS_PER_ORGANIZATION", "0")]).unwrap_err();
        assert!(
            zero.to_string().contains("logs.max_tails_per_organization"),
            "{zero}"
        );
        assert!(load(&[("SLIPWAY__LOGS__TAIL_BUFFER", "5")]).is_err());
        assert!(
            load(&[("SLIPWAY__LOGS__MAX_TAILS", "5")]).is_err(),
            "unknown keys are refused"
        );
    }
}
