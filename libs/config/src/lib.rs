#![forbid(unsafe_code)]
//! Layered settings for every Slipway binary.
//!
//! Precedence, lowest first: the defaults compiled into each settings type, an optional
//! TOML file (`--config FILE`), then environment variables named
//! `SLIPWAY__<SECTION>__<KEY>` (for example `SLIPWAY__DATABASE__URL`). The merged result
//! is deserialized into a typed struct and validated, so a bad setting is reported by its
//! path (`database.max_connections`) before a service binds anything.

mod sections;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use sections::{
    AuthSettings, DatabaseSettings, LogFormat, NatsSettings, ServerSettings, ServiceSettings,
    TelemetrySettings,
};

/// The prefix of environment variables read as settings; `__` separates path segments.
pub const ENV_PREFIX: &str = "SLIPWAY";
const ENV_SEPARATOR: &str = "__";

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, an environment variable, or the merge of them could not be read or did not
    /// match the expected types. The message from the `config` crate names the key.
    #[error("cannot read settings: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is not acceptable.
    #[error("invalid setting `{path}`: {reason}")]
    Invalid { path: String, reason: String },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`] for the setting at `path`.
    pub fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Settings types check what serde cannot express (ranges, URL schemes, combinations).
pub trait Validate {
    /// Returns the first invalid setting, named by its dotted path.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` from its defaults, the optional TOML file, then `SLIPWAY__…` variables, and
/// validates it.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    load_from(file, std::env::vars())
}

/// Like [`load`], with the environment given explicitly, so tests do not touch the
/// process environment.
pub fn load_from<T, I>(file: Option<&Path>, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env_map: config::Map<String, String> = env
        .into_iter()
        .filter(|(key, _)| key.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .source(Some(env_map)),
    );
    let settings: T = builder.build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

#[cfg(test)]
mod tests;
