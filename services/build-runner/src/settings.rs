//! The build-runner's settings: the sections every control-plane service reads, and
//! `[builds]`, where and how this runner builds.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use slipway_config::{
    AuthSettings, ConfigError, DatabaseSettings, NatsSettings, ServerSettings, ServiceSettings,
    TelemetrySettings, Validate,
};

/// What `slipway-build-runner` reads; dereferences to the shared [`ServiceSettings`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "SettingsFile")]
pub struct Settings {
    pub service: ServiceSettings,
    pub builds: BuildSettings,
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
    pub builds: BuildSettings,
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
            builds: file.builds,
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
        self.builds.validate()
    }
}

impl slipway_kit::binary::HasTelemetry for Settings {
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// The builder a runner uses when a job does not name one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuilderChoice {
    /// Runs the service's build command in the checkout; the directory is the artifact.
    #[default]
    Local,
    /// Daemonless image builds with `buildah`, pushed to the job's registry.
    Buildah,
    /// Image builds through a `buildkitd` at `[builds].buildkit_addr`, with `buildctl`.
    Buildkit,
}

impl BuilderChoice {
    /// The name used in settings and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Buildah => "buildah",
            Self::Buildkit => "buildkit",
        }
    }
}

/// `[builds]`: where this runner checks out and keeps artifacts, and how much it runs at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildSettings {
    /// Scratch space for checkouts in progress (`SLIPWAY__BUILDS__WORK_DIR`); one
    /// sub-directory per job, removed when the job ends.
    pub work_dir: PathBuf,
    /// Where finished local artifacts live, one directory per cache key
    /// (`SLIPWAY__BUILDS__ARTIFACTS_DIR`). The process runtime runs programs from here, so
    /// it must be readable by the agent; keep it on the same file system as `work_dir` so a
    /// finished checkout is moved, not copied.
    pub artifacts_dir: PathBuf,
    /// How many jobs this runner builds at once; further jobs stay in the queue for other
    /// runners (or for this one once a slot frees).
    pub concurrency: usize,
    /// Longest a job may run when it does not say, in seconds (the contract's default is
    /// 30 minutes).
    pub timeout_secs: u64,
    /// Longest any job may run, in seconds: a job asking for more is lowered to this.
    pub max_timeout_secs: u64,
    /// The builder for jobs that do not name one.
    pub builder: BuilderChoice,
    /// Buildah's own state: its storage (vfs), the `containers.conf` the runner writes and
    /// points `CONTAINERS_CONF` at, and the registries configuration — nothing global.
    pub buildah_dir: PathBuf,
    /// The OCI runtime buildah runs `RUN` steps with.
    pub buildah_runtime: String,
    /// The `buildctl` program (a name on `PATH` or a path).
    pub buildctl: String,
    /// The `buildkitd` address handed to `buildctl --addr` (`unix:///run/buildkit/buildkitd.sock`,
    /// `tcp://buildkitd:1234`); empty means buildctl's own default.
    pub buildkit_addr: String,
}

impl Default for BuildSettings {
    fn default() -> Self {
        let base = std::env::temp_dir().join("slipway-build-runner");
        Self {
            work_dir: base.join("work"),
            artifacts_dir: base.join("artifacts"),
            concurrency: 2,
            timeout_secs: 30 * 60,
            max_timeout_secs: 2 * 60 * 60,
            builder: BuilderChoice::Local,
            buildah_dir: base.join("buildah"),
            buildah_runtime: "runc".to_owned(),
            buildctl: "buildctl".to_owned(),
            buildkit_addr: String::new(),
        }
    }
}

impl BuildSettings {
    /// Everything under one directory (`<dir>/work`, `<dir>/artifacts`, `<dir>/buildah`),
    /// other values at their defaults: what `slipway dev` and tests use.
    pub fn under(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            work_dir: dir.join("work"),
            artifacts_dir: dir.join("artifacts"),
            buildah_dir: dir.join("buildah"),
            ..Self::default()
        }
    }

    /// The default timeout of a job.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The cap on any job's timeout.
    pub fn max_timeout(&self) -> Duration {
        Duration::from_secs(self.max_timeout_secs)
    }
}

impl Validate for BuildSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.work_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("builds.work_dir", "must be set"));
        }
        if self.artifacts_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("builds.artifacts_dir", "must be set"));
        }
        if self.buildah_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("builds.buildah_dir", "must be set"));
        }
        if self.buildah_runtime.trim().is_empty() {
            return Err(ConfigError::invalid(
                "builds.buildah_runtime",
                "must be set",
            ));
        }
        if self.buildctl.trim().is_empty() {
            return Err(ConfigError::invalid("builds.buildctl", "must be set"));
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err(ConfigError::invalid(
                "builds.concurrency",
                "must be between 1 and 256",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "builds.timeout_secs",
                "must be positive",
            ));
        }
        if self.max_timeout_secs < self.timeout_secs {
            return Err(ConfigError::invalid(
                "builds.max_timeout_secs",
                "must be at least builds.timeout_secs",
            ));
        }
        Ok(())
    }
}
