//! The `buildah` builder's environment: its own configuration and storage under
//! `[builds].buildah_dir`, so a runner needs nothing global (no `/etc/containers` edits,
//! no daemon) and two runners on one host do not share state.
//!
//! The runner writes a `containers.conf` and points `CONTAINERS_CONF` at it: `runc` (or the
//! configured runtime) with the `cgroupfs` cgroup manager, which works without systemd and
//! inside containers; `default_ulimits` low enough for hosts whose own limits are lower
//! than buildah's defaults; the host network for `RUN` steps (no CNI set-up needed). Storage
//! is `vfs` (works on every file system, no overlay module, no fuse) in `storage.conf`
//! (`CONTAINERS_STORAGE_CONF`); no short-name search registries (`FROM busybox` never
//! guesses a registry); and a signature policy that accepts the images the runner itself
//! builds and pushes.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::settings::BuildSettings;

/// The image storage and configuration files of one runner.
#[derive(Debug, Clone)]
pub struct Buildah {
    dir: PathBuf,
    runtime: String,
}

impl Buildah {
    /// The environment described by `settings` (files are written by [`Buildah::prepare`]).
    pub fn new(settings: &BuildSettings) -> Self {
        Self {
            dir: settings.buildah_dir.clone(),
            runtime: settings.buildah_runtime.clone(),
        }
    }

    /// Where `containers.conf` is.
    pub fn containers_conf(&self) -> PathBuf {
        self.dir.join("containers.conf")
    }

    fn storage_conf(&self) -> PathBuf {
        self.dir.join("storage.conf")
    }

    fn registries_conf(&self) -> PathBuf {
        self.dir.join("registries.conf")
    }

    /// The signature policy handed to `buildah bud` and `buildah push`.
    pub fn policy(&self) -> PathBuf {
        self.dir.join("policy.json")
    }

    /// Writes the configuration files (again: settings may have changed since last time).
    pub async fn prepare(&self) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let dir = std::fs::canonicalize(&self.dir)?;
        let containers = format!(
            "# Written by slipway-build-runner; rewritten at every build.\n\
             [containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             netns = \"host\"\n\
             \n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             runtime = {}\n",
            toml_string(&self.runtime)
        );
        let storage = format!(
            "# Written by slipway-build-runner; rewritten at every build.\n\
             [storage]\n\
             driver = \"vfs\"\n\
             graphroot = {}\n\
             runroot = {}\n",
            toml_string(&dir.join("storage").display().to_string()),
            toml_string(&dir.join("run").display().to_string()),
        );
        let registries = "# Written by slipway-build-runner: images are named in full.\n\
                          unqualified-search-registries = []\n";
        let policy = "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}\n";
        for (path, text) in [
            (self.containers_conf(), containers.as_str()),
            (self.storage_conf(), storage.as_str()),
            (self.registries_conf(), registries),
            (self.policy(), policy),
            (self.dir.join("auth.json"), "{\"auths\":{}}\n"),
        ] {
            write_if_changed(&path, text).await?;
        }
        Ok(())
    }

    /// A `buildah` command in this environment. Tests use it too, to put a base image into
    /// the runner's storage.
    pub fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .env("CONTAINERS_CONF", self.containers_conf())
            .env("CONTAINERS_STORAGE_CONF", self.storage_conf())
            .env("CONTAINERS_REGISTRIES_CONF", self.registries_conf())
            // No credentials but the ones a push is given: not the host's, not root's.
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .env_remove("BUILDAH_ISOLATION")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Whether the `buildah` program can be run here.
    pub async fn installed(&self) -> bool {
        Command::new("buildah")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `text` to `path` unless it holds it already, through a rename so a concurrent
/// build never reads half a file.
async fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if tokio::fs::read_to_string(path)
        .await
        .is_ok_and(|t| t == text)
    {
        return Ok(());
    }
    let staging = path.with_extension(format!("{}.tmp", uuid::Uuid::now_v7().simple()));
    tokio::fs::write(&staging, text).await?;
    tokio::fs::rename(&staging, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("runc"), "\"runc\"");
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
