//! Identity's settings: the sections every control-plane service reads, and `[oidc]`, the
//! issuer whose JWTs authenticate users (absent: OIDC is disabled and JWTs are refused).

use std::ops::{Deref, DerefMut};

use serde::Deserialize;
use slipway_auth::OidcSettings;
use slipway_config::{
    AuthSettings, ConfigError, DatabaseSettings, NatsSettings, ServerSettings, ServiceSettings,
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
    /// `server`, `database`, `nats`, `telemetry`, `auth` (identity reads only
    /// `auth.service_credential`, the credential it accepts from the other services; it
    /// needs no `identity_url`).
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
    pub auth: AuthSettings,
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
                auth: file.auth,
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
    /// A PEM file of CA certificates trusted for the issuer besides the system's: for an
    /// issuer whose certificate an installation's own CA signed.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl OidcConfig {
    /// The verifier's settings: these, with the verifier's defaults for the rest. Reads
    /// `ca_file`; an unreadable one, or one without a certificate, is a settings error.
    pub fn verifier_settings(&self) -> Result<OidcSettings, ConfigError> {
        let mut settings = OidcSettings::new(self.issuer.clone(), self.audience.clone());
        if let Some(url) = &self.jwks_url {
            settings = settings.with_jwks_url(url.clone());
        }
        if let Some(path) = &self.ca_file {
            settings.extra_roots = read_certificates(path)?;
        }
        Ok(settings)
    }
}

/// Every certificate of a PEM file.
fn read_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls_pki_types::pem::PemObject as _;
    let invalid = |why: String| ConfigError::invalid("oidc.ca_file", why);
    let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(invalid(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certificates)
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
        self.verifier_settings().map(|_| ())
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
        assert_eq!(oidc.verifier_settings().unwrap().audience, "slipway");

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
        let oidc = from_env.oidc.unwrap().verifier_settings().unwrap();
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
        // A CA file must exist and hold a certificate.
        let oidc = "[oidc]\nissuer = \"https://x\"\naudience = \"a\"\n";
        let missing = load(&format!("{oidc}ca_file = \"/nonexistent/ca.pem\"\n")).unwrap_err();
        assert!(missing.to_string().contains("oidc.ca_file"), "{missing}");
        let empty = std::env::temp_dir().join(format!("slipway-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let refused = load(&format!("{oidc}ca_file = \"{}\"\n", empty.display()));
        let _ = std::fs::remove_file(&empty);
        assert!(refused.is_err());
    }
}
