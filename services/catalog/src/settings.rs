//! Catalog's settings: the sections every control-plane service reads, `[secrets]`, the
//! master key that wraps each organization's data key, and `[clusters]`, what the agent
//! install manifests point at.

use std::ops::{Deref, DerefMut};

use serde::Deserialize;
use slipway_config::{
    AuthSettings, ConfigError, DatabaseSettings, NatsSettings, ServerSettings, ServiceSettings,
    TelemetrySettings, Validate,
};

use crate::api::clusters::DEFAULT_ORCHESTRATOR_URL;
use crate::manifest::url_problem;
use crate::secrets::MasterKey;

/// What `slipway-catalog` reads. Dereferences to the shared [`ServiceSettings`], as
/// identity's settings do; the file is read through [`SettingsFile`], which refuses
/// unknown keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "SettingsFile")]
pub struct Settings {
    pub service: ServiceSettings,
    pub secrets: SecretsSettings,
    pub clusters: ClustersSettings,
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
    pub secrets: SecretsSettings,
    pub clusters: ClustersSettings,
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
            secrets: file.secrets,
            clusters: file.clusters,
        }
    }
}

/// `[secrets]`: how secrets are sealed at rest.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    /// The 32-byte master key, hex or base64 (`SLIPWAY__SECRETS__MASTER_KEY`). Required:
    /// without it no secret could be stored or read. Losing it loses every secret.
    pub master_key: Option<String>,
}

impl std::fmt::Debug for SecretsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsSettings")
            .field("master_key", &self.master_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl SecretsSettings {
    /// The configured master key.
    pub fn master_key(&self) -> Result<MasterKey, ConfigError> {
        let Some(text) = &self.master_key else {
            return Err(ConfigError::invalid(
                "secrets.master_key",
                "is required: 32 random bytes, hex or base64 (e.g. `openssl rand -hex 32`)",
            ));
        };
        MasterKey::parse(text)
            .map_err(|error| ConfigError::invalid("secrets.master_key", error.to_string()))
    }
}

/// `[clusters]`: what the catalog tells the agents it installs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClustersSettings {
    /// The orchestrator address agents dial, written into every install manifest
    /// (`SLIPWAY__CLUSTERS__ORCHESTRATOR_URL`), e.g. `https://slipway.example.com:443`.
    /// Optional: unset means [`DEFAULT_ORCHESTRATOR_URL`], the address `slipway dev`
    /// serves on, which only an agent on the same machine can reach. A real installation
    /// sets its public address here.
    pub orchestrator_url: Option<String>,
}

impl ClustersSettings {
    /// The address manifests carry: the configured one, else the dev default.
    pub fn orchestrator_url(&self) -> &str {
        self.orchestrator_url
            .as_deref()
            .unwrap_or(DEFAULT_ORCHESTRATOR_URL)
    }

    /// Refuses an address the agent could not dial, at start-up rather than in the first
    /// manifest a user asks for.
    fn validate(&self) -> Result<(), ConfigError> {
        match self.orchestrator_url.as_deref().and_then(url_problem) {
            Some(reason) => Err(ConfigError::invalid("clusters.orchestrator_url", reason)),
            None => Ok(()),
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
        self.secrets.master_key()?;
        self.clusters.validate()
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

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("catalog-settings-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()));
        let loaded = slipway_config::load_from(Some(&path), env);
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    const KEY: &str = "[secrets]\nmaster_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n";

    #[test]
    fn orchestrator_url_is_optional_read_from_file_or_env_and_checked() {
        let defaults = load(KEY, &[]).unwrap();
        assert_eq!(defaults.clusters.orchestrator_url, None);
        assert_eq!(
            defaults.clusters.orchestrator_url(),
            DEFAULT_ORCHESTRATOR_URL
        );

        let file = format!("{KEY}[clusters]\norchestrator_url = \"https://slipway.example.com\"\n");
        let settings = load(&file, &[]).unwrap();
        assert_eq!(
            settings.clusters.orchestrator_url(),
            "https://slipway.example.com"
        );

        let settings = load(
            KEY,
            &[(
                "SLIPWAY__CLUSTERS__ORCHESTRATOR_URL",
                "http://orchestrator:50051",
            )],
        )
        .unwrap();
        assert_eq!(
            settings.clusters.orchestrator_url(),
            "http://orchestrator:50051"
        );

        let bad = format!("{KEY}[clusters]\norchestrator_url = \"slipway.example.com\"\n");
        let error = load(&bad, &[]).unwrap_err();
        assert!(
            error.to_string().contains("clusters.orchestrator_url"),
            "{error}"
        );

        let unknown = format!("{KEY}[clusters]\norchestrator = \"https://x\"\n");
        assert!(load(&unknown, &[]).is_err());
    }
}
