//! The `local` builder: runs the service's build command in the checkout and keeps the
//! directory as the artifact, for the process runtime. Also the cache key every builder
//! shares.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use slipway_proto::build::v1 as build;
use slipway_proto::logs::v1 as logs;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Command;

use crate::logs::{LogWriter, Source};

/// The hex SHA-256 cache key of a job at `commit`, as `CacheKeyInputs` defines it:
/// repository, commit, root path, Dockerfile path, build arguments (values hashed), the
/// builder family, platform, local build command and the extra inputs. Each input is
/// length-prefixed, so no two different inputs hash the same bytes.
pub fn cache_key(job: &build::BuildJob, commit: &str, family: &str) -> String {
    let source = job.source.clone().unwrap_or_default();
    let mut hasher = Sha256::new();
    let mut put = |label: &str, value: &[u8]| {
        for part in [label.as_bytes(), value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    };
    put("repository_url", source.repository_url.as_bytes());
    put("commit_sha", commit.to_ascii_lowercase().as_bytes());
    put("root_path", source.root_path.as_bytes());
    put("dockerfile_path", job.dockerfile_path.as_bytes());
    let mut args: Vec<(&String, &String)> = job.build_args.iter().collect();
    args.sort();
    for (key, value) in args {
        put("build_arg", key.as_bytes());
        put("build_arg_value", &Sha256::digest(value.as_bytes()));
    }
    put("builder", family.as_bytes());
    let platform = if job.platform.is_empty() {
        "linux/amd64"
    } else {
        job.platform.as_str()
    };
    put("platform", platform.as_bytes());
    for arg in &job.local_build_command {
        put("local_build_command", arg.as_bytes());
    }
    if let Some(cache) = &job.cache {
        let mut extra: Vec<(&String, &String)> = cache.extra.iter().collect();
        extra.sort();
        for (key, value) in extra {
            put("extra", key.as_bytes());
            put("extra_value", value.as_bytes());
        }
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the build command ended when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The program is not installed (not on `PATH`).
    #[error("{command} is not installed on this build runner")]
    NotInstalled { command: String },
    /// The command could not be started (not executable, no resources).
    #[error("build command {command} could not start: {detail}")]
    Spawn { command: String, detail: String },
    /// The command exited with a non-zero code.
    #[error("build command {command} exited with code {code}")]
    Exit { command: String, code: i32 },
    /// The command was killed by a signal.
    #[error("build command {command} was killed by a signal")]
    Signal { command: String },
}

/// The argv actually run. The contract's `local_build_command` is an argv; the
/// orchestrator fills it with catalog's `build_command`, a *shell* command, as its only
/// element — so a single element runs through `sh -c`, and several run as they are.
pub fn argv(command: &[String]) -> Vec<String> {
    match command {
        [single] => vec!["sh".to_owned(), "-c".to_owned(), single.clone()],
        many => many.to_vec(),
    }
}

/// Kills the whole process group of a build command when dropped, so a timeout or a
/// cancel (which drop the build's future) also stops the command's children — which would
/// otherwise keep running and hold the output pipes open.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // The `kill` utility: this crate forbids `unsafe`, so no libc::kill.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Sees every output line of a step (stdout and stderr), for builders that follow their
/// tool's progress (which Dockerfile step runs).
pub type Watch = Arc<dyn Fn(&str) + Send + Sync>;

/// Runs `command` in `dir` with `env`, streaming its output line by line to `log`.
pub async fn run_command(
    command: &[String],
    dir: &Path,
    env: &std::collections::HashMap<String, String>,
    log: &LogWriter,
) -> Result<(), StepError> {
    let shown = format!("{:?}", command.join(" "));
    let argv = argv(command);
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut process = Command::new(program);
    process.args(args).current_dir(dir).envs(env);
    run_process(process, shown, log, None).await
}

/// Runs `process` (its program, arguments, directory and environment set), streaming its
/// output line by line to `log` and to `watch`; `shown` names it in errors.
pub async fn run_process(
    mut process: Command,
    shown: String,
    log: &LogWriter,
    watch: Option<Watch>,
) -> Result<(), StepError> {
    let mut child = process
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StepError::NotInstalled {
                    command: shown.clone(),
                }
            } else {
                StepError::Spawn {
                    command: shown.clone(),
                    detail: e.to_string().to_lowercase(),
                }
            }
        })?;
    let mut guard = GroupGuard(child.id());
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(forward(out, log.clone(), Source::Stdout, watch.clone())));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(forward(err, log.clone(), Source::Stderr, watch.clone())));
    let status = child.wait().await.map_err(|e| StepError::Spawn {
        command: shown.clone(),
        detail: e.to_string().to_lowercase(),
    })?;
    // The command is done; children it left behind must not outlive the build.
    drop(std::mem::replace(&mut guard, GroupGuard(None)));
    for reader in [stdout, stderr].into_iter().flatten() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(StepError::Exit {
            command: shown,
            code,
        }),
        None => Err(StepError::Signal { command: shown }),
    }
}

/// Copies lines of `reader` to `log` until it ends; bytes that are not UTF-8 become U+FFFD.
async fn forward(
    reader: impl AsyncRead + Unpin,
    log: LogWriter,
    source: Source,
    watch: Option<Watch>,
) {
    let mut reader = BufReader::new(reader);
    let mut buffer = Vec::new();
    // Build tools write progress to stderr too: the stream alone tells no severity.
    let severity = logs::LogSeverity::Unspecified;
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                if let Some(watch) = &watch {
                    watch(line.trim_end());
                }
                log.line(source, severity, &line);
            }
        }
    }
}

/// Moves the finished checkout `from` to `to` (the artifact directory of its cache key).
/// Returns false when `to` already exists — another job built the same key first — and
/// leaves `from` to be cleaned up.
pub async fn promote(from: &Path, to: &Path) -> std::io::Result<bool> {
    if tokio::fs::try_exists(to).await? {
        return Ok(false);
    }
    match tokio::fs::rename(from, to).await {
        Ok(()) => Ok(true),
        Err(_) if tokio::fs::try_exists(to).await.unwrap_or(false) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            copy_across(from, to).await.map(|()| true)
        }
        Err(e) => Err(e),
    }
}

/// The work and artifact directories are on different file systems: copy into a
/// temporary sibling of `to`, then rename it into place (still atomic for readers).
async fn copy_across(from: &Path, to: &Path) -> std::io::Result<()> {
    let staging = staging_path(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(&staging)
        .status()
        .await?;
    if !status.success() {
        let _ = tokio::fs::remove_dir_all(&staging).await;
        return Err(std::io::Error::other("copying the checkout failed"));
    }
    match tokio::fs::rename(&staging, to).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            if tokio::fs::try_exists(to).await.unwrap_or(false) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

fn staging_path(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    to.with_file_name(format!(".{name}.{}", uuid::Uuid::now_v7().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_changes_with_every_input() {
        let job = build::BuildJob {
            source: Some(build::GitSource {
                repository_url: "file:///r".into(),
                ..Default::default()
            }),
            local_build_command: vec!["make".into()],
            ..Default::default()
        };
        let base = cache_key(&job, &"a".repeat(40), "local");
        assert_eq!(base.len(), 64);
        assert_eq!(base, cache_key(&job, &"a".repeat(40), "local"));
        assert_ne!(base, cache_key(&job, &"b".repeat(40), "local"));
        assert_ne!(base, cache_key(&job, &"a".repeat(40), "image"));
        let mut other = job.clone();
        other.local_build_command = vec!["make".into(), "all".into()];
        assert_ne!(base, cache_key(&other, &"a".repeat(40), "local"));
        let mut other = job.clone();
        other.build_args.insert("A".into(), "1".into());
        assert_ne!(base, cache_key(&other, &"a".repeat(40), "local"));
    }

    #[test]
    fn one_element_runs_through_the_shell() {
        assert_eq!(argv(&["make all".into()]), ["sh", "-c", "make all"]);
        assert_eq!(argv(&["make".into(), "all".into()]), ["make", "all"]);
    }
}
