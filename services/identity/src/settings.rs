//! Identity's settings: the sections every control-plane service reads, and `[oidc]`, the
//! issuer whose JWTs authenticate users (absent: OIDC is disabled and JWTs are refused).

use std::ops::{Deref, DerefMut};

use serde::Deserialize;
use slipway_auth::OidcSettings;
use slipway_config::{
    ConfigError, DatabaseSettings, NatsSettings, ServerSettings, ServiceSettings,
    TelemetrySettings, Validate,
};

/// What `slipway-identity` reads: the sections every control-plane service reads, and
/// `[oidc]`.
///
/// The shared sections are held as one [`ServiceSettings`] that the settings dereference
/// to, so `settings.database.url` reads and writes as with the shared type and
/// `&settings` goes wherever `&ServiceSettings` is asked for (`Platform::connect`). The
/// file is read through [`SettingsFile`], which refuses unknown keys (serde cannot combine
/// `flatten` with `deny_unknown_fields`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "SettingsFile")]
pub struct Settings {
    /// `server`, `database`, `nats`, `telemetry`.
    pub service: ServiceSettings,
    /// The OIDC issuer of users; unset: users cannot authenticate with a JWT.
    pub oidc: Option<OidcConfig>,
}

/// The settings as written: every section at the top level, unknown keys refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsFile {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub telemetry: TelemetrySettings,
    pub oidc: Option<OidcConfig>,
}

impl From<SettingsFile> for Settings {
    fn from(file: SettingsFile) -> Self {
        Self {
            service: ServiceSettings {
                server: file.server,
                database: file.database,
                nats: file.nats,
                telemetry: file.telemetry,
            },
            oidc: file.oidc,
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
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        Ok(())
    }
}

impl slipway_kit::binary::HasTelemetry for Settings {
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// The `[oidc]` section: which issuer's JWTs are users' credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL, exactly as it appears in the tokens' `iss`.
    pub issuer: String,
    /// The audience this installation is registered as; `aud` must contain it.
    pub audience: String,
    /// The JWKS URL; unset: discovered from `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
}

impl OidcConfig {
    /// The verifier's settings: these, with the verifier's defaults for the rest.
    pub fn verifier_settings(&self) -> OidcSettings {
        let settings = OidcSettings::new(self.issuer.clone(), self.audience.clone());
        match &self.jwks_url {
            Some(url) => settings.with_jwks_url(url.clone()),
            None => settings,
        }
    }
}

impl Validate for OidcConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.issuer.trim().is_empty() {
            return Err(ConfigError::invalid("oidc.issuer", "must not be empty"));
        }
        if !is_http_url(&self.issuer) {
            return Err(ConfigError::invalid(
                "oidc.issuer",
                "must be an http:// or https:// URL",
            ));
        }
        if self.audience.trim().is_empty() {
            return Err(ConfigError::invalid("oidc.audience", "must not be empty"));
        }
        if let Some(url) = &self.jwks_url
            && !is_http_url(url)
        {
            return Err(ConfigError::invalid(
                "oidc.jwks_url",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("identity-settings-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("identity.toml");
        std::fs::write(&path, toml).unwrap();
        let loaded = slipway_config::load_from(Some(&path), Vec::new());
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    #[test]
    fn oidc_is_optional_and_read_when_present() {
        let defaults = load("").unwrap();
        assert_eq!(defaults.oidc, None);
        assert_eq!(
            defaults.database.max_connections,
            ServiceSettings::default().database.max_connections
        );
        let settings =
            load("[oidc]\nissuer = \"https://login.example.com\"\naudience = \"slipway\"\n")
                .unwrap();
        let oidc = settings.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://login.example.com");
        assert_eq!(oidc.jwks_url, None);
        assert_eq!(oidc.verifier_settings().audience, "slipway");

        let from_env: Settings = slipway_config::load_from(
            None,
            [
                ("SLIPWAY__OIDC__ISSUER", "http://127.0.0.1:9000"),
                ("SLIPWAY__OIDC__AUDIENCE", "slipway"),
                ("SLIPWAY__OIDC__JWKS_URL", "http://127.0.0.1:9000/keys"),
            ]
            .map(|(key, value)| (key.to_owned(), value.to_owned())),
        )
        .unwrap();
        let oidc = from_env.oidc.unwrap().verifier_settings();
        assert_eq!(oidc.jwks_url.as_deref(), Some("http://127.0.0.1:9000/keys"));
    }

    #[test]
    fn bad_oidc_settings_are_refused() {
        assert!(load("[oidc]\nissuer = \"https://x\"\n").is_err());
        assert!(load("[oidc]\nissuer = \"x\"\naudience = \"a\"\n").is_err());
        assert!(load("[oidc]\nissuer = \"https://x\"\naudience = \"\"\n").is_err());
        assert!(
            load("[oidc]\nissuer = \"https://x\"\naudience = \"a\"\njwks_url = \"ftp://k\"\n")
                .is_err()
        );
        assert!(load("[oidc]\nissuer = \"https://x\"\naudience = \"a\"\ntypo = 1\n").is_err());
        assert!(load("[unknown]\nkey = 1\n").is_err());
        assert!(load("[database]\ntypo = 1\n").is_err());
    }
}
