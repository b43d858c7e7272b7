//! The orchestrator's settings: the sections every control-plane service reads, and
//! `[catalog]`, where the environments it deploys are described.

use std::ops::{Deref, DerefMut};

use serde::Deserialize;
use slipway_config::{
    AuthSettings, ConfigError, DatabaseSettings, NatsSettings, ServerSettings, ServiceSettings,
    TelemetrySettings, Validate,
};

/// What `slipway-orchestrator` reads; dereferences to the shared [`ServiceSettings`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "SettingsFile")]
pub struct Settings {
    pub service: ServiceSettings,
    pub catalog: CatalogSettings,
    pub notifications: NotificationSettings,
    pub schedule: ScheduleSettings,
    pub previews: crate::previews::PreviewsSettings,
}

/// The settings as written: every section at the top level, unknown keys refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsFile {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub catalog: CatalogSettings,
    pub notifications: NotificationSettings,
    pub schedule: ScheduleSettings,
    pub previews: crate::previews::PreviewsSettings,
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
            catalog: file.catalog,
            notifications: file.notifications,
            schedule: file.schedule,
            previews: file.previews,
        }
    }
}

/// `[catalog]`: the catalog the orchestrator reads environments' snapshots from and
/// authenticates agents with, as the control plane (`auth.service_credential`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSettings {
    /// Catalog's address, e.g. `http://catalog:7802` (`SLIPWAY__CATALOG__URL`). Required
    /// for a standalone orchestrator.
    pub url: Option<String>,
}

/// `[notifications]`: organization webhooks.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// Key material webhook secrets are sealed with at rest (`SLIPWAY__NOTIFICATIONS__SEALING_KEY`),
    /// at least 32 characters, the same on every replica. Unset: derived from
    /// `auth.service_credential`, so rotating that credential makes stored webhook secrets
    /// unreadable (set them again).
    pub sealing_key: Option<String>,
}

impl std::fmt::Debug for NotificationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationSettings")
            .field(
                "sealing_key",
                &self.sealing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `[schedule]`: the deployment-rule scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Seconds between two looks at the rules (`SLIPWAY__SCHEDULE__INTERVAL_SECONDS`),
    /// 1 to 300: a transition fires at most this late.
    pub interval_seconds: u64,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            interval_seconds: 20,
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
        if let Some(url) = &self.catalog.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "catalog.url",
                "must be an http:// or https:// URL",
            ));
        }
        if self
            .notifications
            .sealing_key
            .as_ref()
            .is_some_and(|key| key.len() < 32)
        {
            return Err(ConfigError::invalid(
                "notifications.sealing_key",
                "must be at least 32 characters",
            ));
        }
        self.previews.validate()?;
        if !(1..=300).contains(&self.schedule.interval_seconds) {
            return Err(ConfigError::invalid(
                "schedule.interval_seconds",
                "must be 1 to 300",
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
