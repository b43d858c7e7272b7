use serde::Deserialize;
use slipway_config::{
    ConfigError, DatabaseSettings, NatsSettings, ServerSettings, TelemetrySettings, Validate,
};

/// Everything `slipway-orchestrator` reads from its file and `SLIPWAY__…` variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub telemetry: TelemetrySettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.nats.validate()?;
        self.telemetry.validate()
    }
}

impl slipway_kit::binary::HasTelemetry for Settings {
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}
